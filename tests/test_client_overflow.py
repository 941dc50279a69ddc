"""A full queue while the events endpoint is down, through the public ``track()``: with delivery stalled the
event is dropped as ``queue_full`` at once (no wait); while delivery makes progress a call waits for room at
most ``enqueue_timeout``; every drop is counted in ``stats()`` and
the close report, logged, and passed to ``on_drop``. A real socket on 127.0.0.1 with nothing listening stands
for the endpoint that is down. Runs on asyncio and trio; no test asserts a wall-clock duration.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import pytest

from _support.drops import DropLog
from optimizely_async import AsyncOptimizely
from optimizely_async.events import queue as queue_module

pytestmark = pytest.mark.anyio

EVENT_KEY = "purchase"


def datafile() -> dict[str, Any]:
    return {
        "version": "4",
        "accountId": "1001",
        "projectId": "1002",
        "revision": "7",
        "attributes": [],
        "audiences": [],
        "experiments": [],
        "groups": [],
        "events": [{"id": "5001", "key": EVENT_KEY, "experimentIds": []}],
        "featureFlags": [],
        "rollouts": [],
    }


def down_endpoint() -> str:
    """A URL on 127.0.0.1 whose port refuses connections (bound once to find a free port, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/events"


async def wait_until(condition: Any, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):  # guards against a hung test only
        while not condition():
            await anyio.sleep(0.005)


async def test_full_queue_with_the_endpoint_down_waits_bounded_then_drops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The first failed request waits long before its retry, so it stays in flight and the queue stays full.
    monkeypatch.setattr(queue_module, "retry_delay", lambda attempt, retry_after=None, **_: 60.0)
    caplog.set_level(logging.DEBUG, logger="optimizely_async")
    drops = DropLog()
    client = AsyncOptimizely(
        datafile=datafile(),
        event_endpoint=down_endpoint(),
        batch_size=2,
        max_queue_size=4,
        max_concurrent_requests=1,
        enqueue_timeout=0.05,
        close_timeout=0.2,
        on_drop=drops,
    )
    async with client:
        for i in range(2):
            await client.track(EVENT_KEY, f"in-flight-{i}")
        await wait_until(lambda: client.stats().in_flight == 2 and client.stats().retries == 1)
        for i in range(4):
            await client.track(EVENT_KEY, f"queued-{i}")
        assert (client.stats().queued, client.stats().dropped) == (4, {})

        # Delivery is stalled (the only request slot holds a failing batch): the calls do not wait at all.
        for i in range(3):
            with anyio.fail_after(10):  # bounded: the call returns (only a hang would trip this)
                result = await client.track(EVENT_KEY, f"overflow-{i}")
            assert result is None

        stats = client.stats()
        assert stats.dropped == {"queue_full": 3}
        assert (stats.queued, stats.in_flight) == (4, 2)
        assert stats.submitted == 9
    report = await client.close()

    assert report.dropped == {"queue_full": 3}
    assert report.undelivered == 6 and report.delivered == 0
    assert report.submitted == report.delivered + sum(report.dropped.values()) + report.undelivered == 9
    assert drops.counts() == {"queue_full": 3, "close_timeout": 6}
    overflow_ids = sorted(e.user_id for events, reason in drops.calls if reason == "queue_full" for e in events)
    assert overflow_ids == ["overflow-0", "overflow-1", "overflow-2"]
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("optimizely_async")]
    assert any("queue_full" in m for m in messages)
    assert sum("delivery is stalled" in m for m in messages) == 1


async def test_a_longer_enqueue_timeout_lets_the_wait_succeed_when_room_appears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait is for room, not a fixed delay: when a batch leaves the queue, the waiting call is accepted."""
    monkeypatch.setattr(queue_module, "retry_delay", lambda attempt, retry_after=None, **_: 60.0)
    client = AsyncOptimizely(
        datafile=datafile(),
        event_endpoint=down_endpoint(),
        batch_size=2,
        max_queue_size=2,
        max_concurrent_requests=2,
        enqueue_timeout=30,
        close_timeout=0.2,
    )
    async with client:
        for i in range(2):
            await client.track(EVENT_KEY, f"first-{i}")
        await wait_until(lambda: client.stats().in_flight == 2)
        for i in range(2):
            await client.track(EVENT_KEY, f"second-{i}")
        # The queue is full; a second request slot is free, so the next batch leaves and makes room.
        with anyio.fail_after(10):
            await client.track(EVENT_KEY, "waits-then-fits")
        assert client.stats().dropped == {}
    report = await client.close()
    assert report.submitted == 5 and report.dropped == {} and report.undelivered == 5
