"""The docs pages cannot drift from the code: their snippets compile, docs/configuration.md lists exactly the
constructor options of both clients with their real defaults, and the API reference shows values, not names.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import optimizely_async
from optimizely_async import AsyncOptimizely, SyncOptimizely

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = ["workers.md", "aiohttp.md", "configuration.md", "migrating.md"]

#: Options documented in docs/configuration.md that other branches add (the lead merges them). While one is
#: missing from a signature its row is not checked against it; once it is there, it is checked like the
#: rest. Empty this set once they have all landed.
LANDING: set[str] = set()  # options documented before they land on main (none now)

_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ROW = re.compile(r"^\| `([a-z_]+)` \| `([^`]*)` \| (.*) \| ([^|]*) \|$", re.MULTILINE)
_MARKUP = re.compile(r":(?:meth|class|data|func|attr|exc|mod|obj|const):`")


def python_blocks(page: str) -> list[str]:
    return _FENCE.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES)
def test_python_snippets_compile(page: str) -> None:
    blocks = python_blocks(page)
    if page != "configuration.md":
        assert blocks, f"{page} has no python snippet"
    for number, block in enumerate(blocks, 1):
        compile(block, f"{page}#snippet{number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("page", PAGES)
def test_new_pages_are_in_the_nav(page: str) -> None:
    assert f": {page}\n" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def documented_options() -> dict[str, tuple[Any, bool]]:
    """Option name -> (default, accepted by SyncOptimizely) from the table of docs/configuration.md."""
    rows = _ROW.findall((DOCS / "configuration.md").read_text(encoding="utf-8"))
    options: dict[str, tuple[Any, bool]] = {}
    for name, default, _when, sync in rows:
        assert name not in options, f"{name} is documented twice"
        sync = sync.strip()
        assert sync == "same" or sync.startswith(("same (", "no:")), f"{name}: the sync column says {sync!r}"
        options[name] = (ast.literal_eval(default), not sync.startswith("no:"))
    return options


def constructor_options(cls: type) -> dict[str, Any]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self"
    }


@pytest.mark.parametrize("cls", [AsyncOptimizely, SyncOptimizely], ids=lambda cls: cls.__name__)
def test_configuration_page_matches_the_signature(cls: type) -> None:
    documented = documented_options()
    assert len(documented) >= 15, "the options table was not parsed"
    actual = constructor_options(cls)
    expected = {name: default for name, (default, sync) in documented.items() if sync or cls is AsyncOptimizely}

    undocumented = set(actual) - set(expected)
    assert not undocumented, f"{cls.__name__} options missing from docs/configuration.md: {sorted(undocumented)}"
    missing = set(expected) - set(actual) - LANDING
    assert not missing, f"docs/configuration.md documents options {cls.__name__} lacks: {sorted(missing)}"
    for name, default in expected.items():
        if name in actual:
            assert actual[name] == default, f"{cls.__name__}({name}=...) defaults to {actual[name]!r}, not {default!r}"
            assert type(actual[name]) is type(default), f"{name}: write the default as {actual[name]!r}"


def test_sync_only_lacks_the_options_marked_no() -> None:
    not_sync = {name for name, (_, sync) in documented_options().items() if not sync}
    assert not_sync == set(constructor_options(AsyncOptimizely)) - set(constructor_options(SyncOptimizely))


def public_objects() -> list[tuple[str, Any]]:
    import optimizely_async.testing as testing

    found: list[tuple[str, Any]] = []
    for module in (optimizely_async, testing):
        for name in module.__all__:
            obj = getattr(module, name)
            found.append((f"{module.__name__}.{name}", obj))
            if inspect.isclass(obj):
                for member_name, member in vars(obj).items():
                    if not member_name.startswith("_") or member_name == "__init__":
                        found.append((f"{module.__name__}.{name}.{member_name}", member))
                for base in obj.__mro__[1:]:
                    if base.__module__.startswith("optimizely_async"):
                        for member_name, member in vars(base).items():
                            if not member_name.startswith("_"):
                                found.append((f"{base.__name__}.{member_name}", member))
    return found


def test_public_docstrings_have_no_sphinx_roles() -> None:
    """mkdocstrings renders ``:meth:`x``` literally; the public docstrings use plain backticks."""
    offenders = []
    for name, obj in public_objects():
        target = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
        doc = getattr(target, "__doc__", None)
        if isinstance(doc, str) and _MARKUP.search(doc):
            offenders.append(name)
    assert not offenders, f"Sphinx roles in rendered docstrings: {sorted(set(offenders))}"


def test_typed_getters_are_documented() -> None:
    for cls in (AsyncOptimizely, SyncOptimizely):
        for kind in ("boolean", "double", "integer", "string", "json"):
            method = getattr(cls, f"get_feature_variable_{kind}")
            assert method.__doc__ and f"``{kind}``" in method.__doc__, f"{cls.__name__}.{method.__name__}"


def _extension() -> Any:
    path = ROOT / "scripts" / "griffe_literal_defaults.py"
    spec = importlib.util.spec_from_file_location("griffe_literal_defaults", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_defaults_are_values() -> None:
    """The griffe extension that mkdocs.yml enables turns every ``defaults.NAME`` default of the public
    signatures into its value, as the API reference renders it."""
    griffe = pytest.importorskip("griffe")
    extension = _extension()
    assert extension.literal("defaults.READY_TIMEOUT") == "10.0"
    assert extension.literal("defaults.MAX_QUEUE_SIZE") == "10_000"
    assert extension.literal("defaults.NO_SUCH_NAME") is None
    assert extension.literal("other.READY_TIMEOUT") is None

    package = griffe.load(
        "optimizely_async",
        search_paths=[str(ROOT / "src"), *sys.path],
        extensions=griffe.load_extensions(extension.LiteralDefaults),
    )
    checked = 0
    for path in ("client.AsyncOptimizely", "sync.SyncOptimizely"):
        cls = package[path]
        for member in cls.all_members.values():
            if isinstance(member, griffe.Function) or getattr(member, "is_function", False):
                for parameter in member.parameters:
                    checked += 1
                    assert "defaults." not in str(parameter.default), f"{path}.{member.name}({parameter.name})"
    assert checked > 50
    init = package["client.AsyncOptimizely"].members["__init__"]
    assert str(init.parameters["update_interval"].default) == "300.0"
