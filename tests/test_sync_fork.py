"""A SyncOptimizely created before ``os.fork()`` works in every child and in the parent: each child gets its own
loop thread and an empty queue (nothing is sent twice), polling resumes there, and a fork while other threads
produce events deadlocks nothing. Each scenario runs in its own process (tests/_sync_fork_script.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _datafile_server import DatafileServer
from _sync_support import EVENT_KEY, assert_each_once, datafile, sink_in_thread

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def run_scenario(*args: str, on_line: Any = None, timeout: float = 90.0) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "_sync_fork_script.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    facts = []
    assert process.stdout is not None
    for line in process.stdout:
        fact = json.loads(line)
        facts.append(fact)
        if on_line is not None:
            on_line(fact)
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return facts


def test_every_child_sends_its_own_events_once() -> None:
    with sink_in_thread() as sink:
        facts = run_scenario("basic", sink.url)
        parent = facts[-1]
        assert parent["codes"] == [0, 0, 0]
        children = [f for f in facts if "child" in f]
        assert sorted(f["child"] for f in children) == [0, 1]
        assert all(f["stats"] == 2 for f in children), facts  # a child's counters start from zero
        expected = {("parent-before", EVENT_KEY), ("parent-after", EVENT_KEY)}
        for n in range(2):
            expected |= {(f"child{n}", EVENT_KEY), (f"child{n}-a", "campaign_activated"), (f"child{n}-exit", EVENT_KEY)}
        assert_each_once(sink.wait_for(len(expected)), expected)
        assert parent["delivered"] == parent["submitted"] == 2


def test_a_client_closed_before_fork_stays_closed_in_the_child() -> None:
    with sink_in_thread() as sink:
        facts = run_scenario("closed_before_fork", sink.url)
        child = next(f for f in facts if "child" in f)
        # The child's activate() and track() are counted as dropped; close() gives the parent's report.
        assert child == {"child": True, "closed": 2, "report_delivered": 1}
        assert facts[-1]["codes"] == [0]
        assert_each_once(sink.events(), {("parent", EVENT_KEY)})


def test_polling_resumes_in_the_child() -> None:
    with sink_in_thread() as sink, DatafileServer() as server:
        server.set_datafile(datafile("7"))

        def on_line(fact: dict[str, Any]) -> None:
            if fact.get("child") == "ready":
                server.set_datafile(datafile("8"))  # published after the fork

        facts = run_scenario("polling", sink.url, f"{server.url}/datafiles/{{sdk_key}}.json", on_line=on_line)
        assert facts[-1]["codes"] == [0]
        assert any(f.get("child") == "done" and f["delivered"] == 1 for f in facts)
        assert_each_once(sink.events(), {("child-rev8", EVENT_KEY)})


def test_forks_while_threads_produce_events() -> None:
    with sink_in_thread() as sink:
        facts = run_scenario("busy", sink.url)
        parent = facts[-1]
        assert parent["codes"] == [0] * 6
        assert parent["delivered"] == parent["submitted"] == parent["made"]
        events = sink.wait_for(parent["made"] + 6)
        expected = {(f"forked{n}", EVENT_KEY) for n in range(6)}
        expected |= {(visitor, key) for visitor, key, _ in events if visitor.startswith("busy")}
        assert_each_once(events, expected)
        assert len(events) == parent["made"] + 6
