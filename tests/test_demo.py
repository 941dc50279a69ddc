"""The README's demo runs end to end: decisions for simulated users, every event delivered to the local sink."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimizely_async", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_delivers_every_event(backend: str) -> None:
    result = run_demo("--users", "300", "--seed", "5", "--backend", backend)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    submitted = int(re.search(r"events submitted\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    delivered = int(re.search(r"events delivered\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert submitted > 300 and delivered == submitted
    assert re.search(r"dropped\s+0\b", out) and re.search(r"undelivered\s+0\b", out)


def test_demo_rejects_a_bad_datafile(tmp_path: Path) -> None:
    bad = tmp_path / "datafile.json"
    bad.write_text('{"version": "4"}')
    result = run_demo("--users", "10", "--datafile", str(bad))
    assert result.returncode == 1
    assert "datafile" in (result.stderr + result.stdout).lower()
