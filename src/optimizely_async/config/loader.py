"""Datafile text to pydantic models, at once or in small steps, and the driver that runs the steps on the loop.

Two ways to the same :class:`Datafile`:

* :func:`validate_at_once`: one JSON parse and one validation call. The fastest, and right wherever
  nothing else waits: a static datafile at construction.
* :func:`validate_in_steps`: a generator that decodes and validates the elements of the big top-level arrays
  (experiments, flags, rollouts, audiences ...) one at a time and yields after each. :func:`run_in_steps`
  drives such a generator on the event loop, a budget of about half a millisecond at a time with a checkpoint
  between, so that applying a polled update never holds the loop for long. Nothing here touches a
  process-wide setting, starts a thread or relies on interpreter internals.

Both report a bad field by its path (``experiments[3].key: Field required``), and both apply every validator
of the models in :mod:`.datafile`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from ..errors import InvalidDatafileError
from . import datafile as df

if TYPE_CHECKING:
    import pydantic
    import pydantic_core
else:
    from .._lazy_import import LazyModule

    # Imported when the first datafile is read (about 20 ms), not with the SDK.
    pydantic = LazyModule("pydantic")
    pydantic_core = LazyModule("pydantic_core")

__all__ = ["Steps", "prepare", "run_at_once", "run_in_steps", "validate_at_once", "validate_in_steps"]

T = TypeVar("T")
#: A computation that yields (None) wherever it may be interrupted, and returns its result.
Steps = Generator[None, None, T]

#: Loop time one stretch of steps may take before :func:`run_in_steps` lets other tasks run.
STEP_BUDGET: Final = 0.0005

#: Top-level arrays whose elements are decoded and validated one at a time.
_SECTIONS: Final[Mapping[str, Any]] = {
    "attributes": df.Attribute,
    "audiences": df.Audience,
    "typedAudiences": df.TypedAudience,
    "events": df.Event,
    "experiments": df.Rule,
    "groups": df.Group,
    "featureFlags": df.FeatureFlag,
    "rollouts": df.Rollout,
    "integrations": df.Integration,
    "holdouts": df.Holdout,
    "localHoldouts": df.Holdout,
}
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace
_DECODER: Final = json.JSONDecoder()


def prepare() -> None:
    """Build the validators of the datafile models now (they are deferred at import, to keep import fast).

    The first validation builds them anyway; a client that will only build configs in steps on the loop calls
    this at construction, so that no step of its first build spends tens of milliseconds on it.
    """
    for shape in {*_SECTIONS.values(), df.Datafile}:
        _adapter(shape)
    _datafile_from_json()


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _adapter(shape: Any) -> pydantic.TypeAdapter[Any]:
    """The validator of one datafile shape, built on first use (building them all at import costs start-up)."""
    adapter = _ADAPTERS.get(shape)
    if adapter is None:
        adapter = _ADAPTERS[shape] = pydantic.TypeAdapter(shape)
    return adapter


_FROM_JSON: list[pydantic_core.SchemaValidator] = []


def _datafile_from_json() -> pydantic_core.SchemaValidator:
    """The validator of a whole datafile's text. It does not route the strings it reads through pydantic-core's
    process-wide string cache: the cached strings would stay scattered among the freed dicts and keep their
    memory from being reused, which costs several megabytes of resident memory per megabyte of datafile."""
    if not _FROM_JSON:
        schema = _adapter(df.Datafile).core_schema
        _FROM_JSON.append(pydantic_core.SchemaValidator(schema, pydantic_core.CoreConfig(cache_strings=False)))
    return _FROM_JSON[0]


def sections() -> tuple[str, ...]:
    """The names of the top-level arrays handled element by element."""
    return tuple(_SECTIONS)


def run_at_once(steps: Steps[T]) -> T:
    """Run ``steps`` to the end without interruption and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            result: T = stop.value
            return result


async def run_in_steps(steps: Steps[T], budget: float = STEP_BUDGET) -> T:
    """Run ``steps`` on the event loop: after ``budget`` seconds of it, a checkpoint lets the other tasks run.

    An exception from ``steps`` is raised here as it is; a cancellation closes the generator.
    """
    from anyio.lowlevel import checkpoint  # the async shell's only import: config/ stays importable without it

    clock = time.perf_counter
    try:
        deadline = clock() + budget
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if clock() >= deadline:
                await checkpoint()
                deadline = clock() + budget
    finally:
        steps.close()


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDatafileError(f"datafile is not valid UTF-8: {exc}") from None


def _problems(exc: pydantic.ValidationError, prefix: str = "") -> list[str]:
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{(prefix + loc).lstrip('.') or '<root>'}: {err['msg']}")
    return parts


def _raise(problems: list[str]) -> None:
    shown = problems[:5]
    if len(problems) > len(shown):
        shown.append(f"and {len(problems) - len(shown)} more")
    raise InvalidDatafileError("invalid datafile: " + "; ".join(shown))


def check_version(version: object) -> None:
    if not isinstance(version, str) or version not in df.SUPPORTED_VERSIONS:
        raise InvalidDatafileError(
            f'unsupported datafile version {version!r}: this SDK reads versions "2", "3" and "4"'
        )


def validate_at_once(data: str | bytes) -> df.Datafile:
    """The whole datafile in one C call: pydantic-core parses the text and validates it into plain dicts and
    lists as it goes (the fast path where nothing else waits).

    A datafile that fails is read again, more slowly, to say exactly what is wrong (see :func:`_explain`).
    """
    try:
        result = cast(df.Datafile, _datafile_from_json().validate_json(data))
    except pydantic.ValidationError:
        return _explain(data)
    check_version(result["version"])
    return result


def _explain(data: str | bytes) -> df.Datafile:
    """Why ``data`` fails: a JSON parse, the object and version checks, then a validation that names the field."""
    try:
        top = pydantic_core.from_json(data, cache_strings=False)
    except ValueError:
        # The stepped path decodes one top-level field (or array element) at a time with the standard library's
        # parser: its error names the field at fault (the one-call parse only knows the position), and it reads
        # what only that parser accepts (an escaped lone surrogate, as json.dumps writes it).
        return run_at_once(validate_in_steps(data))
    if not isinstance(top, dict):
        raise InvalidDatafileError(f"datafile must be a JSON object, not {type(top).__name__}")
    if "version" in top:
        check_version(top["version"])
    try:
        result = cast(df.Datafile, _adapter(df.Datafile).validate_python(top))
    except pydantic.ValidationError as exc:
        _raise(_problems(exc))
        raise  # not reached
    check_version(result["version"])
    return result


# ------------------------------------------------------------------------------------------ the stepped path


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match is not None else index


def _decode(text: str, index: int, where: str = "") -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, index)
    except (ValueError, RecursionError) as exc:  # also a number of more than 4,300 digits, or nesting too deep
        at = f" in {where}" if where else ""
        raise InvalidDatafileError(f"datafile is not valid JSON{at}: {exc}") from None


def _expect(text: str, index: int, char: str) -> int:
    if text[index : index + 1] != char:
        found = text[index : index + 1] or "end of data"
        raise InvalidDatafileError(f"datafile is not valid JSON: expected '{char}' but found {found!r} at char {index}")
    return index + 1


def _scan(text: str, problems: list[str]) -> Steps[dict[str, Any]]:
    """The top-level object, with the elements of the big arrays decoded and validated one per step (so only
    one element is ever held as decoded JSON). Validation problems are added to ``problems``."""
    index = _skip(text, 0)
    if text[index : index + 1] != "{":
        value, _ = _decode(text, index)
        raise InvalidDatafileError(f"datafile must be a JSON object, not {type(value).__name__}")
    index = _skip(text, index + 1)
    result: dict[str, Any] = {}
    if text[index : index + 1] == "}":
        return result
    while True:
        key, index = _decode(text, index)
        if not isinstance(key, str):
            raise InvalidDatafileError(f"datafile is not valid JSON: object key expected at char {index}")
        index = _skip(text, _expect(text, _skip(text, index), ":"))
        shape = _SECTIONS.get(key)
        if shape is not None and text[index : index + 1] == "[":
            items: list[Any] = []
            index = _skip(text, index + 1)
            if text[index : index + 1] == "]":
                index += 1
            else:
                while True:
                    item, index = _decode(text, index, f"{key}[{len(items)}]")
                    try:
                        items.append(_adapter(shape).validate_python(item))
                    except pydantic.ValidationError as exc:
                        problems.extend(_problems(exc, f"{key}[{len(items)}]"))
                        items.append(None)
                    yield
                    index = _skip(text, index)
                    if text[index : index + 1] == ",":
                        index = _skip(text, index + 1)
                        continue
                    index = _expect(text, index, "]")
                    break
            result[key] = items
        else:
            result[key], index = _decode(text, index, key)
        index = _skip(text, index)
        if text[index : index + 1] == ",":
            index = _skip(text, index + 1)
            continue
        index = _expect(text, index, "}")
        if _skip(text, index) != len(text):
            raise InvalidDatafileError(f"datafile is not valid JSON: extra data at char {_skip(text, index)}")
        return result


def validate_in_steps(data: str | bytes) -> Steps[df.Datafile]:
    """The same datafile as :func:`validate_at_once`, one array element per step."""
    problems: list[str] = []
    top = yield from _scan(_text(data), problems)
    if "version" in top:
        check_version(top["version"])
    # The top level is validated with the arrays already validated element by element set aside (validating
    # them again would be one long step); an array missing, or not an array, is still reported here.
    done = {k: v for k, v in top.items() if k in _SECTIONS and isinstance(v, list)}
    try:
        result = cast(df.Datafile, _adapter(df.Datafile).validate_python({**top, **dict.fromkeys(done, ())}))
    except pydantic.ValidationError as exc:
        problems.extend(_problems(exc))
    if problems:
        _raise(problems)
    for key, items in done.items():
        result[key] = items  # type: ignore[literal-required]
    check_version(result["version"])
    return result
