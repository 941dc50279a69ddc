"""Hostile input (issue 10, items 1, 12, 13 and 14): public methods never raise and never crash, construction
raises only the documented errors, and the answer of a decision does not depend on the log level.

Cases that could crash the interpreter run in a child pytest process (tests/_crash_prone.py and
tests/_hostile_properties.py), so that a segfault fails one test here instead of ending the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def run_child(module: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(TESTS / module), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_child_passed(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        signal = f" (killed by signal {-result.returncode})" if result.returncode < 0 else ""
        pytest.fail(f"child pytest exited with {result.returncode}{signal}:\n{result.stdout[-6000:]}{result.stderr[-3000:]}")


def test_lone_surrogates_never_crash_and_decide_as_documented() -> None:
    """Item 1, in a child process: a lone surrogate in a user id or ``$opt_bucketing_id`` crashed mmh3 5.x."""
    assert_child_passed(run_child("_crash_prone.py"))
