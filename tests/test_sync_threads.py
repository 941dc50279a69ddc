"""SyncOptimizely under many threads at once, delivering to a real sink on 127.0.0.1: every event arrives once,
and the books balance even when threads keep producing events while the client closes."""

from __future__ import annotations

import threading
import time
from typing import Any

from _sync_support import EVENT_KEY, assert_each_once, datafile, sink_in_thread
from optimizely_async import SyncOptimizely

THREADS = 16
CALLS = 40


def test_many_threads_every_event_arrives_once() -> None:
    errors: list[BaseException] = []
    with sink_in_thread() as sink:
        client = SyncOptimizely(datafile(), event_endpoint=sink.url, batch_size=7, flush_interval=0.05)
        shared = client.create_user_context("shared", {"browser": "firefox"})  # one context, many threads
        assert shared is not None
        start = threading.Barrier(THREADS)

        def work(t: int) -> None:
            try:
                start.wait()
                for i in range(CALLS):
                    assert client.activate("exp", f"{t}-{i}-a") == "on"
                    client.track(EVENT_KEY, f"{t}-{i}-t", {"browser": "x"}, {"revenue": i})
                    user = client.create_user_context(f"{t}-{i}-d")
                    assert user is not None and user.decide("flag").enabled
                    assert shared.decide("rolled").enabled  # one impression each, all for "shared"
                    assert client.get_feature_variable_integer("flag", "size", f"{t}-{i}-a") == 42
                    if i % 10 == 0:
                        client.flush()
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        report = client.close()
        assert not errors, errors[:3]
        expected = {(f"{t}-{i}-a", "campaign_activated") for t in range(THREADS) for i in range(CALLS)}
        expected |= {(f"{t}-{i}-t", EVENT_KEY) for t in range(THREADS) for i in range(CALLS)}
        expected |= {(f"{t}-{i}-d", "campaign_activated") for t in range(THREADS) for i in range(CALLS)}
        events = sink.events()
        shared_events = [e for e in events if e[0] == "shared"]
        assert len(shared_events) == THREADS * CALLS  # one impression per shared.decide call
        assert_each_once([e for e in events if e[0] != "shared"], expected)
        assert len({uuid for _, _, uuid in events}) == len(events)
        assert report.submitted == report.delivered == len(events) == 4 * THREADS * CALLS
        assert not report.dropped and not report.undelivered


def test_events_racing_close_are_delivered_or_counted() -> None:
    with sink_in_thread() as sink:
        client = SyncOptimizely(datafile(), event_endpoint=sink.url, batch_size=5, flush_interval=0.01)
        stop = threading.Event()
        made: list[int] = [0] * 8

        def work(t: int) -> None:
            i = 0
            while not stop.is_set() or i < 50:
                client.track(EVENT_KEY, f"{t}-{i}")
                i += 1
                time.sleep(0.0002)  # a request handler's pace, not a busy loop that starves every other thread
            made[t] = i

        workers = [threading.Thread(target=work, args=(t,)) for t in range(len(made))]
        for worker in workers:
            worker.start()
        sink.wait_for(200)
        report = client.close()
        stop.set()
        for worker in workers:
            worker.join()
        stats: Any = client.stats()
        total = sum(made)
        events = sink.events()
        assert len({uuid for _, _, uuid in events}) == len(events)
        assert not report.timed_out and report.delivered == len(events) and not report.undelivered
        # Everything made after close() began is counted as dropped (closed); nothing vanished.
        assert stats.submitted == total
        assert stats.delivered + stats.dropped.get("closed", 0) == total, (stats, total)
        assert stats.dropped.get("closed", 0) > 0
