"""Run a piece of Python in a fresh interpreter, with the SDK's src (and, on request, tests/) on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
SRC = str(TESTS.parent / "src")


def run_python(
    code: str, *args: str, timeout: float = 120, with_tests: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -c code *args``, its output captured as text; it is killed (TimeoutExpired) after ``timeout``."""
    path = [SRC, str(TESTS)] if with_tests else [SRC]
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json(process: subprocess.CompletedProcess[str]) -> Any:
    """The JSON of the last line a child that exited with status 0 printed (else the assertion shows its stderr)."""
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout.strip().splitlines()[-1])
