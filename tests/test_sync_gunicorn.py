"""gunicorn --preload with 2 sync workers: the SyncOptimizely created in the master before the fork works in
both workers, and every event (each request's, and the one the master queued before forking) reaches the
sink on 127.0.0.1 exactly once, the last ones when the processes exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from _sync_support import EVENT_KEY, assert_each_once, sink_in_thread

pytest.importorskip("gunicorn")

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
REQUESTS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()[-3000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("gunicorn did not start listening")


def get(port: int, user: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{user}", timeout=30) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def test_gunicorn_preload_two_workers_every_event_once() -> None:
    port = free_port()
    with sink_in_thread() as sink:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]), "SYNC_TEST_SINK": sink.url}
        command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
        process = subprocess.Popen(
            [*command, "--graceful-timeout", "20", "_sync_wsgi_app:app"],
            cwd=TESTS,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_listening(port, process)
            users = [f"user-{i}" for i in range(REQUESTS)]
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda user: get(port, user), users))
            assert all(answer["enabled"] is True for answer in answers)
            assert len({answer["pid"] for answer in answers}) == 2, "both workers should have served requests"
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-3000:]
        expected = {("master-preload", EVENT_KEY)}
        expected |= {(user, EVENT_KEY) for user in users} | {(user, "campaign_activated") for user in users}
        assert_each_once(sink.wait_for(len(expected), timeout=10), expected)
