"""Helpers for the SyncOptimizely tests: a small datafile (``_support.datafiles.feature_test_datafile``), and the
events sink (tests/_sink_server.py) run on its own event-loop thread so that plain threads and other processes
can send to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from anyio.from_thread import BlockingPortal, start_blocking_portal

from _sink_server import Received, SinkServer, serve_sink
from _support.datafiles import EVENT_KEY
from _support.datafiles import feature_test_datafile as datafile

__all__ = ["EVENT_KEY", "ThreadSink", "assert_each_once", "datafile", "events_of", "sink_in_thread"]


def events_of(received: list[Received]) -> list[tuple[str, str, str]]:
    """``(visitor_id, event key or "impression", uuid)`` of every event the sink received."""
    out = []
    for request in received:
        for visitor in request.payload["visitors"]:
            for snapshot in visitor["snapshots"]:
                for event in snapshot["events"]:
                    out.append((visitor["visitor_id"], event.get("key", "impression"), event["uuid"]))
    return out


class ThreadSink:
    """The sink, seen from plain threads."""

    def __init__(self, sink: SinkServer, portal: BlockingPortal) -> None:
        self._sink = sink
        self._portal = portal
        self.url = sink.url

    def received(self) -> list[Received]:
        return self._portal.call(lambda: list(self._sink.received))

    def events(self) -> list[tuple[str, str, str]]:
        return events_of(self.received())

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, str, str]]:
        """The events once at least ``count`` have arrived (or whatever arrived when ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.02)


@contextmanager
def sink_in_thread() -> Iterator[ThreadSink]:
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(serve_sink()) as sink:
        yield ThreadSink(sink, portal)


def assert_each_once(events: list[tuple[str, str, str]], expected: set[tuple[str, str]]) -> None:
    """Every expected (visitor, key) arrived exactly once, nothing else arrived, and no uuid repeats."""
    uuids = [uuid for _, _, uuid in events]
    assert len(uuids) == len(set(uuids)), "an event arrived twice"
    got = [(visitor, key) for visitor, key, _ in events]
    missing = expected - set(got)
    extra = [pair for pair in got if pair not in expected]
    assert not missing and not extra and len(got) == len(expected), (sorted(missing)[:10], extra[:10])
