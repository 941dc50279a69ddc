"""Work a client holds when the process forks (track() calls waiting for the first datafile, ODP events, queued
events) is the parent's: the parent sends it once, a child never sends it again, and a child's counters
start from zero. Each scenario runs in its own process (tests/_fork_held_script.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def run_scenario(name: str, backend: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(TESTS / "_fork_held_script.py"), name, backend],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def sent(facts: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(client, visitor) of every event sent, counted."""
    return Counter((f["sent"], f["visitor"]) for f in facts if "sent" in f)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_child_never_sends_what_an_unstarted_client_held_before_the_fork(backend: str) -> None:
    facts = run_scenario("async_before_start", backend)
    assert facts[0] == {"parent_held": 1, "parent_queued": 1, "odp": 1}
    assert facts[-1] == {"code": 0}
    parent = next(f["pid"] for f in facts if f.get("visitor") == "parent-held")
    assert all(f["pid"] == parent for f in facts if "sent" in f and f["visitor"].startswith("before-"))
    expected = {
        ("held", "before-held"),
        ("held", "parent-held"),
        ("held", "child-held"),
        ("static", "before-queued"),
        ("static", "parent-queued"),
        ("static", "child-queued"),
    }
    assert sent(facts) == Counter(expected)
    assert Counter(f["odp"] for f in facts if "odp" in f and len(f) == 1) == Counter(
        ["before-odp", "parent-odp", "child-odp"]
    )
    child = next(f for f in facts if f.get("who") == "child")
    assert child == {"who": "child", "held": 1, "static": 1, "odp": 1, "odp_delivered": 1}  # its own only
    parent_stats = next(f for f in facts if f.get("who") == "parent")
    assert parent_stats == {"who": "parent", "held": 2, "static": 2, "odp": 2, "odp_delivered": 2}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_copy_of_a_started_client_refuses_held_tracks_and_odp_events(backend: str) -> None:
    facts = run_scenario("async_started", backend)
    assert {"who": "child", "held": {"forked": 1}, "odp": {"forked": 1}} in facts
    assert {"child_odp_submitted": 1, "child_held_queued": 0} in facts
    assert {"code": 0, "held": 1, "odp": 1} in facts
    assert sent(facts) == Counter({("held", "before-held"): 1})
    assert [f["odp"] for f in facts if "odp" in f and len(f) == 1] == ["before-odp"]


def test_a_sync_client_holding_a_track_for_its_datafile_sends_it_once() -> None:
    facts = run_scenario("sync_before_ready", "asyncio")
    assert facts[0] == {"parent_held": 1}
    assert facts[-1] == {"code": 0}
    assert sent(facts) == Counter([("sync", "before-held"), ("sync", "parent-held-2"), ("sync", "child-held")])
    assert {"who": "child", "sync": 1, "delivered": 1} in facts
    assert {"who": "parent", "sync": 2, "delivered": 2} in facts
