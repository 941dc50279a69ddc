"""Development tasks: ``nox`` runs tests, lint, typecheck and docs; ``nox -s demo`` and ``nox -s bench`` too.

Every session runs on the interpreter nox itself runs under (no pinned versions), each in its own virtualenv
under ``.nox/``. Arguments after ``--`` reach the tool: ``nox -s tests -- -k queue -x``.
"""

from __future__ import annotations

from pathlib import Path

import nox

# Understands the "uv|virtualenv" backend list below (Debian 12's packaged nox 2022.11.21 does not).
nox.needs_version = ">=2024.4.15"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"  # uv when it is installed, virtualenv otherwise

ROOT = Path(__file__).parent
LINT_PATHS = [p for p in ("src", "tests", "bench", "examples", "scripts", "noxfile.py") if (ROOT / p).exists()]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (both anyio backends, the differential tests against the official SDK)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src (with the pydantic plugin configured in pyproject.toml)."""
    session.install("-e", ".[openfeature,otel]", "mypy>=1.10", "trio>=0.25")
    session.run("mypy", "--strict", "src", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the mkdocs site into site/ with --strict: any warning (a broken link, a bad docstring) fails."""
    session.install("-e", ".[docs]", "ruff")  # mkdocstrings formats signatures with ruff
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """``python -m optimizely_async``: thousands of simulated users, events into an in-process sink."""
    session.install(".")
    session.run("python", "-m", "optimizely_async", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every bench/*.py script (each compares against the official SDK in the same run)."""
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        session.skip("no benchmarks in bench/ yet")
    session.install(".[test]")
    for script in scripts:
        session.run("python", script, *session.posargs)
