"""Helpers for the SyncOptimizely tests: a small datafile, and the events sink (tests/_sink_server.py) run on
its own event-loop thread so that plain threads and other processes can send to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from _sink_server import Received, SinkServer, serve_sink

EVENT_KEY = "purchase"


def datafile(revision: str = "7") -> dict[str, Any]:
    """An experiment "exp" (everyone in "on") that is the feature test of flag "flag" (variables "size" and
    "label"), a rollout flag "rolled" (everyone on), one attribute and one event."""
    on = {
        "id": "2001",
        "key": "on",
        "featureEnabled": True,
        "variables": [{"id": "7001", "value": "42"}, {"id": "7002", "value": "big"}],
    }
    rolled_on = {"id": "2101", "key": "rolled_on", "featureEnabled": True, "variables": []}
    return {
        "version": "4",
        "accountId": "1001",
        "projectId": "1002",
        "revision": revision,
        "anonymizeIP": False,
        "botFiltering": False,
        "sendFlagDecisions": True,
        "attributes": [{"id": "3001", "key": "browser"}],
        "audiences": [],
        "typedAudiences": [],
        "experiments": [
            {
                "id": "4001",
                "key": "exp",
                "layerId": "4002",
                "status": "Running",
                "variations": [on],
                "trafficAllocation": [{"entityId": "2001", "endOfRange": 10000}],
                "audienceIds": [],
                "forcedVariations": {},
            }
        ],
        "groups": [],
        "events": [{"id": "5001", "key": EVENT_KEY, "experimentIds": ["4001"]}],
        "featureFlags": [
            {
                "id": "6001",
                "key": "flag",
                "experimentIds": ["4001"],
                "rolloutId": "",
                "variables": [
                    {"id": "7001", "key": "size", "type": "integer", "defaultValue": "1"},
                    {"id": "7002", "key": "label", "type": "string", "defaultValue": "small"},
                ],
            },
            {"id": "6002", "key": "rolled", "experimentIds": [], "rolloutId": "8001", "variables": []},
        ],
        "rollouts": [
            {
                "id": "8001",
                "experiments": [
                    {
                        "id": "8101",
                        "key": "everyone",
                        "layerId": "8001",
                        "status": "Running",
                        "variations": [rolled_on],
                        "trafficAllocation": [{"entityId": "2101", "endOfRange": 10000}],
                        "audienceIds": [],
                        "forcedVariations": {},
                    }
                ],
            }
        ],
    }


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
