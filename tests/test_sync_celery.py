"""Celery with its prefork pool (2 processes): the SyncOptimizely created in the worker's main process before
the pool forks works in both pool processes, and every event reaches the sink on 127.0.0.1 exactly once, the
pool processes' when they exit at the worker's warm shutdown (SIGTERM).

A real prefork pool, not the solo or eager pool: only prefork forks, which is what this tests. The broker is
Kombu's in-memory transport in the main process (which also sends the tasks); no broker server is needed
because the main process is the one that hands tasks to the pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _sync_support import EVENT_KEY, assert_each_once, sink_in_thread

pytest.importorskip("celery")

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
TASKS = 30


def test_celery_prefork_every_event_once(tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    done.touch()
    with sink_in_thread() as sink:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
            "SYNC_TEST_SINK": sink.url,
            "SYNC_TEST_DONE": str(done),
            "SYNC_TEST_TASKS": str(TASKS),
        }
        command = [sys.executable, "-m", "celery", "-A", "_sync_celery_app", "worker", "--pool=prefork"]
        command += ["--concurrency=2", "-O", "fair", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        process = subprocess.Popen(
            [*command, "--loglevel=WARNING"], cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 60
            while len(done.read_text().splitlines()) < TASKS:
                assert process.poll() is None, process.communicate()[1].decode()[-3000:]
                assert time.monotonic() < deadline, "the tasks did not all run"
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)  # warm shutdown: the pool processes exit, then the main one
            _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-3000:]
        lines = [line.split() for line in done.read_text().splitlines()]
        assert len({pid for pid, _ in lines}) == 2, "both pool processes should have run tasks"
        users = [user for _, user in lines]
        expected = {("celery-main", EVENT_KEY)}
        expected |= {(user, EVENT_KEY) for user in users} | {(user, "campaign_activated") for user in users}
        assert len(expected) == 2 * TASKS + 1
        assert_each_once(sink.wait_for(len(expected), timeout=10), expected)
