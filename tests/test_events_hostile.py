"""Hostile event content and hostile dispatchers cost at most their own event (or batch), never the client.

Issue 10 items 2 and 3. Each scenario runs the real client (or queue) against a real HTTP server on
127.0.0.1 and ends with the books balanced: every event delivered, or dropped with a reason that ``on_drop``
was told about; the ``async with`` body is never cancelled and nothing leaves it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from _sink_server import serve_sink
from _support.datafiles import EVENT_KEY
from _support.datafiles import feature_test_datafile as datafile
from _support.drops import DropLog
from optimizely_async import AsyncOptimizely, NotificationType, QueueStats
from optimizely_async.events.dispatcher import DispatchResult, EventRequest
from optimizely_async.events.models import ConversionEvent, EventContext, UserEvent, VisitorAttribute
from optimizely_async.events.queue import EventQueue

pytestmark = pytest.mark.anyio

TOTAL = 100
BAD_AT = 50


class RaisingStr(str):
    """A str subclass whose ``__str__`` raises (hashes and compares as its value)."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        raise RuntimeError("__str__ of a hostile key")


def nested_list(depth: int) -> Any:
    if depth < 900:
        return json.loads("[" * depth + "]" * depth)  # the reproducer
    node: list[Any] = []
    for _ in range(depth - 1):
        node = [node]
    return node


def nested_dict(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"a": node}
    return node


def balanced(stats: QueueStats, sent: int) -> None:
    assert stats.submitted == sent, stats
    assert (stats.queued, stats.in_flight) == (0, 0), stats
    assert stats.delivered + sum(stats.dropped.values()) + stats.undelivered == sent, stats


HOSTILE_TAGS: dict[str, Callable[[], tuple[dict[Any, Any], Callable[[], None]]]] = {
    "list_800_deep": lambda: ({"k": nested_list(800)}, lambda: None),
    "dict_600_deep": lambda: ({"k": nested_dict(600)}, lambda: None),
    "key_whose_str_raises": lambda: ({RaisingStr("k"): 1}, lambda: None),
}


def _cycle_after_track() -> tuple[dict[Any, Any], Callable[[], None]]:
    inner: dict[str, Any] = {"x": []}
    return {"k": inner}, lambda: inner["x"].append(inner)


HOSTILE_TAGS["cycle_made_after_track"] = _cycle_after_track


@pytest.mark.parametrize("via", ["track", "track_event", "track_with_listener"])
@pytest.mark.parametrize("case", sorted(HOSTILE_TAGS))
async def test_one_hostile_track_costs_only_its_own_event(case: str, via: str) -> None:
    drops = DropLog()
    heard: list[Any] = []
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, on_drop=drops, flush_interval=3600)
        if via == "track_with_listener":
            client.notification_center.add_notification_listener(NotificationType.TRACK, lambda *a: heard.append(a))
        body_finished = False
        async with client:
            for i in range(TOTAL):
                tags: dict[Any, Any] = {"n": i}
                after: Callable[[], None] = lambda: None  # noqa: E731
                if i == BAD_AT:
                    tags, after = HOSTILE_TAGS[case]()
                if via == "track_event":
                    user = client.create_user_context(f"user-{i}")
                    assert user is not None
                    await user.track_event(EVENT_KEY, tags)
                else:
                    await client.track(EVENT_KEY, f"user-{i}", None, tags)
                after()  # mutate what was passed, after track() returned
            await client.flush()
            body_finished = True
        report = await client.close()
    assert body_finished
    balanced(report, TOTAL)
    ids = [v["visitor_id"] for r in sink.received if r.reply.status == 200 for v in r.payload["visitors"]]
    # Every well-formed event arrived, once; the hostile one is either delivered or dropped with a reason.
    assert set(ids) >= {f"user-{i}" for i in range(TOTAL) if i != BAD_AT}
    assert len(ids) == len(set(ids)) == report.delivered
    if f"user-{BAD_AT}" not in ids:
        assert sum(report.dropped.values()) == 1
        assert drops.counts() == report.dropped
    if via == "track_with_listener":
        assert len(heard) == report.delivered  # listeners saw a built payload for every event sent


async def test_a_track_listener_sees_the_payload_snapshot_not_later_mutations() -> None:
    heard: list[Any] = []
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
        client.notification_center.add_notification_listener(NotificationType.TRACK, lambda *a: heard.append(a))
        tags: dict[str, Any] = {"nested": {"list": [1, 2]}}
        async with client:
            await client.track(EVENT_KEY, "user", None, tags)
            tags["nested"]["list"].append(3)
            await client.flush()
    sent = sink.received[0].payload["visitors"][0]["snapshots"][0]["events"][0]["tags"]
    assert sent == {"nested": {"list": [1, 2]}}
    assert heard[0][4]["params"]["visitors"][0]["snapshots"][0]["events"][0]["tags"] == sent


# -- the queue, fed directly (events built by other code, e.g. a custom producer) ---------------------------


def _events(url: str, n: int) -> list[UserEvent]:
    context = EventContext(account_id="a", project_id="p", revision="1", endpoint=url)
    return [
        ConversionEvent(context=context, user_id=f"u{i}", event_id="e", event_key="k", timestamp=i) for i in range(n)
    ]


@pytest.mark.parametrize(
    ("poison", "sendable"),
    [
        ({"tags": {"k": nested_list(2000)}}, False),
        ({"tags": {RaisingStr("k"): 1}}, True),  # sent as its plain value; its __str__ is never called
        ({"tags": {"k": object()}}, False),
        ({"attributes": (VisitorAttribute(entity_id="1", key="k", value=nested_dict(3000)),)}, False),
    ],
    ids=["deep_list", "raising_key", "object_value", "deep_attribute"],
)
async def test_a_poisoned_event_model_costs_only_itself_in_the_queue(poison: dict[str, Any], sendable: bool) -> None:
    drops = DropLog()
    async with serve_sink() as sink:
        events = _events(sink.url, 10)
        events[4] = events[4].model_copy(update=poison)
        async with anyio.create_task_group() as tg:
            queue = EventQueue(_HttpLike(sink.url), on_drop=drops)
            await tg.start(queue.run)
            for event in events:
                assert await queue.put(event)
            await queue.flush()
            report = await queue.close()
    balanced(report, 10)
    if sendable:
        assert report.delivered == 10 and report.dropped == {}
    else:
        assert report.delivered == 9 and report.dropped == {"invalid_payload": 1}
        assert drops.counts() == {"invalid_payload": 1}
    assert sink.delivered_visitors() == report.delivered


class _HttpLike:
    """The real HttpDispatcher, created on first use (the queue test owns no client)."""

    def __init__(self, url: str) -> None:
        from optimizely_async.events.dispatcher import HttpDispatcher

        self.inner = HttpDispatcher()
        self.url = url

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        return await self.inner.dispatch(request)


# -- hostile dispatchers ------------------------------------------------------------------------------------


class ReturnsNone:
    async def dispatch(self, request: EventRequest) -> Any:
        return None


class ReturnsWrongType:
    async def dispatch(self, request: EventRequest) -> Any:
        return {"delivered": True}


class Raises:
    async def dispatch(self, request: EventRequest) -> DispatchResult:
        raise RuntimeError("bug in a custom dispatcher")


class Hangs:
    async def dispatch(self, request: EventRequest) -> DispatchResult:
        await anyio.sleep_forever()
        raise AssertionError


class SyncResult:
    def dispatch(self, request: EventRequest) -> DispatchResult:
        return DispatchResult(delivered=True, status=200)


@pytest.mark.parametrize(
    ("dispatcher", "reason"),
    [
        (ReturnsNone, "invalid_dispatch_result"),
        (ReturnsWrongType, "invalid_dispatch_result"),
        (Raises, "dispatch_error"),
        (Hangs, "dispatch_timeout"),
    ],
)
async def test_a_broken_custom_dispatcher_costs_only_batches_and_is_logged_once(
    dispatcher: type[Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optimizely_async")
    drops = DropLog()
    client = AsyncOptimizely(
        datafile=datafile(),
        event_dispatcher=dispatcher(),
        batch_size=5,
        on_drop=drops,
        close_timeout=30,
    )
    client._queue._attempt_timeout = 0.05  # a hung attempt is given up quickly in this test
    client._queue._backoff_base, client._queue._backoff_max = 0.001, 0.002
    body_finished = False
    async with client:
        for i in range(20):
            await client.track(EVENT_KEY, f"user-{i}")
        await client.flush()
        assert await client.is_feature_enabled("flag", "still-works")
        body_finished = True
    report = await client.close()
    assert body_finished
    balanced(report, 21)
    assert report.dropped == {reason: 21}
    assert drops.counts() == {reason: 21}
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "dispatch" in r.getMessage()]
    assert len(loud) == 1, [r.getMessage() for r in loud]


async def test_a_sync_dispatcher_returning_a_result_works() -> None:
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=SyncResult())  # type: ignore[arg-type]
    async with client:
        for i in range(3):
            await client.track(EVENT_KEY, f"user-{i}")
    report = await client.close()
    balanced(report, 3)
    assert report.delivered == 3


class RaisingFloat(float):
    """A float subclass whose ``__abs__`` raises (the attribute filter takes abs() of numbers)."""

    def __abs__(self) -> float:
        raise RuntimeError("__abs__ of a hostile attribute value")


@pytest.mark.parametrize("with_listener", [False, True])
async def test_one_hostile_impression_costs_only_its_own_event(with_listener: bool) -> None:
    drops = DropLog()
    heard: list[Any] = []
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, on_drop=drops, flush_interval=3600)
        if with_listener:
            client.notification_center.add_notification_listener(NotificationType.ACTIVATE, lambda *a: heard.append(a))
        body_finished = False
        async with client:
            for i in range(20):
                value: Any = RaisingFloat(1.5) if i == 7 else "chrome"
                await client.activate("exp", f"user-{i}", {"browser": value})
            await client.flush()
            body_finished = True
        report = await client.close()
    assert body_finished
    balanced(report, report.submitted)
    ids = [v["visitor_id"] for r in sink.received if r.reply.status == 200 for v in r.payload["visitors"]]
    assert set(ids) >= {f"user-{i}" for i in range(20) if i != 7}
    assert len(ids) == len(set(ids)) == report.delivered
    if "user-7" not in ids:  # dropped with a reason (unless the input was made plain before it got here)
        assert sum(report.dropped.values()) == 1 and drops.counts() == report.dropped
