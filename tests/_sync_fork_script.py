"""Fork scenarios for tests/test_sync_fork.py, each run in its own process (``python _sync_fork_script.py
SCENARIO SINK_URL [DATAFILE_URL]``). Prints one JSON line per fact the test checks; exits 0 when every process
of the scenario did."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from _sync_support import EVENT_KEY, datafile
from optimizely_async import SyncOptimizely


def say(**fact: Any) -> None:
    print(json.dumps(fact), flush=True)


def wait_child(pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    return -9


def basic(sink_url: str) -> None:
    """Events queued in the parent at fork time are sent once (by the parent); each child sends its own."""
    client = SyncOptimizely(datafile(), event_endpoint=sink_url, flush_interval=60.0)
    seen: list[str] = []
    client.notification_center.add_notification_listener(
        "TRACK:event_key, user_id, attributes, event_tags, event", lambda *a: seen.append(a[1])
    )
    client.set_forced_variation("exp", "forced-user", "on")
    client.track(EVENT_KEY, "parent-before")  # waiting in the parent's queue when it forks
    children = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:
            if n < 2:
                started = time.monotonic()
                client.track(EVENT_KEY, f"child{n}")
                assert client.activate("exp", f"child{n}-a") == "on"
                assert client.get_forced_variation("exp", "forced-user") == "on"
                client.flush()  # returns once delivered (does not hang on the parent's loop)
                say(child=n, flushed_in=time.monotonic() - started, stats=client.stats().delivered)
                client.track(EVENT_KEY, f"child{n}-exit")  # sent when the process exits
                assert seen[-1] == f"child{n}-exit"  # listeners came along
            sys.exit(0)  # the third child never used the client
        children.append(pid)
    codes = [wait_child(pid) for pid in children]
    client.track(EVENT_KEY, "parent-after")
    report = client.close()
    say(parent=True, codes=codes, delivered=report.delivered, submitted=report.submitted)


def closed_before_fork(sink_url: str) -> None:
    client = SyncOptimizely(datafile(), event_endpoint=sink_url)
    client.track(EVENT_KEY, "parent")
    client.close()
    pid = os.fork()
    if pid == 0:
        assert client.activate("exp", "child") == "on"  # decisions still work
        client.track(EVENT_KEY, "child")
        stats = client.stats()
        say(child=True, closed=stats.dropped.get("closed", 0), report_delivered=client.close().delivered)
        sys.exit(0)
    say(parent=True, codes=[wait_child(pid)])


def polling(sink_url: str, datafile_url: str) -> None:
    """A child resumes polling: it sees a revision published after the fork."""
    client = SyncOptimizely(
        sdk_key="fork-key", datafile_url_template=datafile_url, update_interval=0.1, event_endpoint=sink_url
    )
    assert client.wait_until_ready(20)
    assert client.config is not None and client.config.revision == "7"
    pid = os.fork()
    if pid == 0:
        say(child="ready")
        deadline = time.monotonic() + 20
        while client.config is None or client.config.revision != "8":
            assert time.monotonic() < deadline, "the child never saw revision 8"
            time.sleep(0.02)
        client.track(EVENT_KEY, "child-rev8")
        say(child="done", delivered=client.close().delivered)
        sys.exit(0)
    code = wait_child(pid)
    report = client.close()
    say(parent=True, codes=[code], delivered=report.delivered)


def busy(sink_url: str) -> None:
    """Forks while other threads keep producing events: no child deadlocks, nothing is sent twice."""
    client = SyncOptimizely(datafile(), event_endpoint=sink_url, batch_size=3, flush_interval=0.01)
    stop = threading.Event()
    made = [0, 0, 0, 0]

    def work(t: int) -> None:
        while not stop.is_set():
            client.track(EVENT_KEY, f"busy{t}-{made[t]}")
            made[t] += 1
            time.sleep(0.0003)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(len(made))]
    for worker in workers:
        worker.start()
    codes = []
    for n in range(6):
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            client.track(EVENT_KEY, f"forked{n}")
            client.close()
            os._exit(0)
        codes.append(wait_child(pid, timeout=20))
    stop.set()
    for worker in workers:
        worker.join()
    report = client.close(timeout=120)  # thousands of small batches: a loaded machine needs more than the default
    say(parent=True, codes=codes, made=sum(made), delivered=report.delivered, submitted=report.submitted)


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    globals()[scenario](*args)
