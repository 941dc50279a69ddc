"""Client-level event delivery, end to end: AsyncOptimizely with its real HttpDispatcher against a real HTTP
server on 127.0.0.1 (tests/_sink_server.py), on asyncio and trio.

Every scenario closes with the books balanced: each event the client took (``submitted``) is delivered,
dropped with a reason, or undelivered; nothing is pending and nothing vanishes, and what the sink accepted
matches what the client counts as delivered. No test asserts a wall-clock duration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import httpx
import pytest

from _sink_server import Reply, SinkServer, serve_sink
from _support.datafiles import EVENT_KEY
from _support.datafiles import feature_test_datafile as datafile
from optimizely_async import AsyncOptimizely, NotificationType, QueueStats
from optimizely_async.events import queue as queue_module
from optimizely_async.events.dispatcher import retry_delay
from optimizely_async.events.models import ConversionEvent, ImpressionEvent, UserEvent

pytestmark = pytest.mark.anyio


def client_for(sink: SinkServer, **options: Any) -> AsyncOptimizely:
    return AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, **options)


def assert_accounted(stats: QueueStats, sent: int, sink: SinkServer | None = None) -> None:
    """Nothing vanished: every event sent is delivered, dropped or undelivered, and nothing is pending. With
    ``sink`` (only where the client saw every answer): the events the server answered 2xx are exactly the
    events the client counts as delivered, each once."""
    assert stats.submitted == sent, stats
    assert (stats.queued, stats.in_flight) == (0, 0), stats
    settled = stats.delivered + sum(stats.dropped.values()) + stats.undelivered + stats.in_flight_at_close
    assert settled == sent, stats
    if sink is not None:
        delivered_uuids = [
            v["snapshots"][0]["events"][0]["uuid"]
            for r in sink.received
            if 200 <= r.reply.status < 300
            for v in r.payload["visitors"]
        ]
        assert len(set(delivered_uuids)) == len(delivered_uuids), "an event was delivered twice"
        assert len(delivered_uuids) == stats.delivered, (len(delivered_uuids), stats)


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition``; the timeout only guards against a hung test."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def track_many(client: AsyncOptimizely, n: int, prefix: str = "user") -> None:
    for i in range(n):
        await client.track(EVENT_KEY, f"{prefix}-{i}", {"browser": "chrome"}, {"revenue": i})


class DelayLog:
    """Stands in for the queue's ``retry_delay``: records its arguments, waits a fixed short time."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, float | None]] = []

    def __call__(self, attempt: int, retry_after: float | None = None, **_: Any) -> float:
        self.calls.append((attempt, retry_after))
        return self.seconds


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> DelayLog:
    log = DelayLog()
    monkeypatch.setattr(queue_module, "retry_delay", log)
    return log


class DropLog:
    def __init__(self) -> None:
        self.calls: list[tuple[list[UserEvent], str]] = []

    def __call__(self, events: Sequence[UserEvent], reason: str) -> None:
        self.calls.append((list(events), reason))


def visitor_ids(sink: SinkServer, *, ok_only: bool = True) -> list[str]:
    return [
        v["visitor_id"]
        for r in sink.received
        if not ok_only or 200 <= r.reply.status < 300
        for v in r.payload["visitors"]
    ]


# -- delivery ---------------------------------------------------------------------------------------------


async def test_events_reach_the_server_and_leaving_the_client_drains() -> None:
    async with serve_sink() as sink:
        async with client_for(sink) as client:
            await track_many(client, 12)  # a full batch of 10 goes at once, 2 wait for the exit
            assert await client.activate("exp", "act-user", {"browser": "firefox"}) == "on"
            assert await client.is_feature_enabled("flag", "fe-user") is True
        report = await client.close()  # idempotent: the report of the close done on exit
    assert not report.timed_out
    assert_accounted(report, 14, sink)
    assert report.delivered == 14
    received = sink.received
    assert all(r.method == "POST" and r.path == "/v1/events" for r in received)
    assert all(r.headers["content-type"] == "application/json" for r in received)
    payloads = [r.payload for r in received]
    assert {p["client_name"] for p in payloads} == {"optimizely-async"}
    assert sorted(visitor_ids(sink)) == sorted([f"user-{i}" for i in range(12)] + ["act-user", "fe-user"])
    decisions = [
        v["snapshots"][0]["decisions"][0]["metadata"]
        for p in payloads
        for v in p["visitors"]
        if "decisions" in v["snapshots"][0]
    ]
    assert [(d["rule_type"], d["flag_key"]) for d in decisions] == [("experiment", ""), ("feature-test", "flag")]


async def test_500s_then_recovery(delays: DelayLog) -> None:
    async with serve_sink() as sink:
        sink.script(Reply(500), Reply(503))
        async with client_for(sink) as client:
            await track_many(client, 5)
            await client.flush()
            stats = client.stats()
            assert (stats.delivered, stats.retries, stats.requests, dict(stats.dropped)) == (5, 2, 3, {})
        report = await client.close()
    assert_accounted(report, 5, sink)
    assert [r.reply.status for r in sink.received] == [500, 503, 200]
    # the retries re-send the very same payload: same uuids, same bytes
    assert sink.received[0].body == sink.received[1].body == sink.received[2].body
    assert [attempt for attempt, _ in delays.calls] == [0, 1]


async def test_429_with_retry_after_is_honoured(delays: DelayLog) -> None:
    async with serve_sink() as sink:
        sink.script(Reply(429, headers={"Retry-After": "7"}))
        async with client_for(sink) as client:
            await track_many(client, 3)
            await client.flush()
        report = await client.close()
    assert_accounted(report, 3, sink)
    assert (report.delivered, report.retries) == (3, 1)
    assert delays.calls == [(0, 7.0)]  # the server's Retry-After reached the backoff ...
    assert retry_delay(0, 7.0, rand=lambda: 0.0) == 7.0  # ... which treats it as a floor


async def test_persistent_500s_are_dropped_after_the_retries(delays: DelayLog) -> None:
    drops = DropLog()
    async with serve_sink() as sink:
        sink.default = Reply(500)
        client = client_for(sink, on_drop=drops)
        client._queue._retry_timeout = 0.3  # the default budget (600 s) outlasts the test
        async with client:
            await track_many(client, 4)
            await client.flush()
        report = await client.close()
    assert_accounted(report, 4, sink)
    assert report.dropped == {"retries_exhausted": 4}
    assert len(sink.received) == report.requests == report.retries + 1
    assert [(len(events), reason) for events, reason in drops.calls] == [(4, "retries_exhausted")]


async def test_connection_refused_until_the_server_comes_up(monkeypatch: pytest.MonkeyPatch) -> None:
    delays = DelayLog(seconds=0.1)  # five retries leave the test ample time to start the server
    monkeypatch.setattr(queue_module, "retry_delay", delays)
    async with serve_sink(start=False) as sink:
        async with client_for(sink) as client, anyio.create_task_group() as tg:
            await track_many(client, 3)
            tg.start_soon(client.flush)
            await wait_until(lambda: client.stats().retries >= 1)
            assert sink.received == []  # nothing listening yet
            await sink.start()
        report = await client.close()
    assert_accounted(report, 3, sink)
    assert report.delivered == 3
    assert report.requests == report.retries + 1
    assert len(sink.received) == 1


async def test_400_is_dropped_with_its_reason_and_on_drop_is_told(caplog: pytest.LogCaptureFixture) -> None:
    drops = DropLog()
    async with serve_sink() as sink:
        # The receiver refuses every request that carries a "rejected" visitor (a split finds each one).
        sink.responder = lambda body: Reply(400) if b'"rejected-' in body else None
        async with client_for(sink, on_drop=drops) as client:
            with caplog.at_level(logging.WARNING, logger="optimizely_async"):
                await track_many(client, 2, prefix="rejected")
                await client.flush()
            await track_many(client, 1, prefix="accepted")
            await client.flush()
        report = await client.close()
    assert_accounted(report, 3, sink)
    assert (report.delivered, report.dropped, report.retries) == (1, {"http_400": 2}, 0)
    assert [reason for _, reason in drops.calls] == ["http_400", "http_400"]
    dropped = [(type(e), e.user_id) for events, _ in drops.calls for e in events]
    assert dropped == [(ConversionEvent, "rejected-0"), (ConversionEvent, "rejected-1")]
    assert any("400" in r.getMessage() for r in caplog.records)


# -- flush, close and cancellation -------------------------------------------------------------------------


async def test_flush_returns_only_when_everything_queued_before_is_settled(delays: DelayLog) -> None:
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=0.05)
        sink.script(Reply(500), Reply(422))
        async with client_for(sink, batch_size=3, max_concurrent_requests=2) as client:
            await track_many(client, 10)
            await client.activate("exp", "act-user")
            await client.flush()
            stats = client.stats()
            assert (stats.queued, stats.in_flight) == (0, 0)
            assert stats.delivered + sum(stats.dropped.values()) == 11
            answered = {v for r in sink.received for v in (x["visitor_id"] for x in r.payload["visitors"])}
            assert answered == {*(f"user-{i}" for i in range(10)), "act-user"}
            # a flush with nothing queued returns at once; so does a second one
            await client.flush()
        report = await client.close()
    assert_accounted(report, 11)
    assert report.dropped == {"http_422": 3}
    assert report.delivered == 8


async def test_close_with_requests_in_flight_drains_when_time_allows() -> None:
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=0.1)
        client = client_for(sink, batch_size=4)
        async with client:
            await track_many(client, 10)
            await wait_until(lambda: client.stats().in_flight > 0)
        report = await client.close()
    assert not report.timed_out
    assert_accounted(report, 10)
    assert report.delivered == 10
    assert sorted(visitor_ids(sink)) == sorted(f"user-{i}" for i in range(10))


async def test_close_timeout_accounts_for_requests_in_flight() -> None:
    drops = DropLog()
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=60)  # never answered while the client waits
        client = client_for(sink, batch_size=2, max_concurrent_requests=2, close_timeout=0.2, on_drop=drops)
        async with client:
            await track_many(client, 7)
            await wait_until(lambda: len(sink.received) == 2)  # two requests are at the server
        report = await client.close()
    assert report.timed_out
    assert_accounted(report, 7)
    # The two requests at the server are reported apart: the server may have them (issue 12 item 7).
    assert (report.delivered, report.undelivered, report.in_flight_at_close) == (0, 3, 4)
    reasons: dict[str, int] = {}
    for events, reason in drops.calls:
        reasons[reason] = reasons.get(reason, 0) + len(events)
    assert reasons == {"close_timeout": 3, "in_flight_at_close": 4}
    assert sum(r.visitor_count for r in sink.received) == report.in_flight_at_close


async def test_an_async_track_listener_that_never_returns_does_not_hold_the_caller() -> None:
    """Async listeners run in the background: track() returns although its listener sleeps forever, the
    event is delivered, and close() abandons the listener within close_timeout (counted)."""
    async with serve_sink() as sink:
        client = client_for(sink, close_timeout=0.5)
        async with client:
            entered = anyio.Event()

            async def slow_listener(*_: Any) -> None:
                entered.set()
                await anyio.sleep_forever()

            client.notification_center.add_notification_listener(NotificationType.TRACK, slow_listener)
            with anyio.fail_after(5):
                await client.track(EVENT_KEY, "first-caller")
                await entered.wait()
                await client.track(EVENT_KEY, "next-caller")
        report = await client.close()
    assert_accounted(report, 2, sink)
    assert visitor_ids(sink) == ["first-caller", "next-caller"]
    assert client.stats().listeners.abandoned == 2


async def test_cancelling_a_track_that_waits_for_room() -> None:
    """The queue is full and track() waits for room; cancelling it drops the event as ``cancelled``."""
    drops = DropLog()
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=60)  # holds the first request, so the queue stays full
        client = client_for(
            sink,
            batch_size=1,
            max_queue_size=1,
            max_concurrent_requests=1,
            enqueue_timeout=60,
            close_timeout=0.2,
            on_drop=drops,
        )
        async with client, anyio.create_task_group() as tg:
            await client.track(EVENT_KEY, "in-flight")
            await wait_until(lambda: client.stats().in_flight == 1)
            await client.track(EVENT_KEY, "queued")
            scope = anyio.CancelScope()
            returned: list[str] = []

            async def caller() -> None:
                with scope:
                    await client.track(EVENT_KEY, "waiting")
                    returned.append("returned")

            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
        report = await client.close()
    assert returned == []
    assert_accounted(report, 3)
    assert (report.dropped, report.undelivered, report.in_flight_at_close) == ({"cancelled": 1}, 1, 1)
    assert {reason for _, reason in drops.calls} == {"cancelled", "close_timeout", "in_flight_at_close"}


# -- notifications and counters ----------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True])
async def test_log_event_fires_once_per_payload_with_its_url(delays: DelayLog, is_async: bool) -> None:
    seen: list[dict[str, Any]] = []

    def on_log(event: dict[str, Any]) -> None:
        seen.append(event)

    async def on_log_async(event: dict[str, Any]) -> None:
        await anyio.sleep(0)
        seen.append(event)

    async with serve_sink() as sink:
        sink.script(Reply(500), Reply(422))  # the first payload is retried once, the second dropped
        async with client_for(sink, batch_size=2, max_concurrent_requests=1) as client:
            client.notification_center.add_notification_listener(
                NotificationType.LOG_EVENT, on_log_async if is_async else on_log
            )
            await track_many(client, 5)
            await client.flush()
        report = await client.close()
    assert_accounted(report, 5, sink)
    bodies = list(dict.fromkeys(r.body for r in sink.received))  # each distinct payload once, in order
    assert len(bodies) == 3 and len(sink.received) == 4
    assert len(seen) == 3
    for event, body in zip(seen, bodies, strict=True):
        assert set(event) == {"url", "params", "http_verb", "headers"}
        assert event["url"] == sink.url
        assert event["http_verb"] == "POST"
        assert event["headers"] == {"Content-Type": "application/json"}
        assert event["params"] == json.loads(body)


async def test_stats_counters_follow_the_events() -> None:
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=0.05)
        async with client_for(sink, batch_size=5, max_concurrent_requests=1) as client:
            assert client.stats().events == QueueStats(0, 0, 0, 0, {}, 0, 0, 0)
            await track_many(client, 12)
            stats = client.stats()
            assert stats.submitted == 12
            assert stats.queued + stats.in_flight + stats.delivered == 12
            await client.flush()
            stats = client.stats()
            assert (stats.submitted, stats.queued, stats.in_flight, stats.delivered) == (12, 0, 0, 12)
            assert (stats.requests, stats.retries, dict(stats.dropped), stats.undelivered) == (3, 0, {}, 0)
        report = await client.close()
    assert_accounted(report, 12, sink)


async def test_track_before_entering_warns_and_is_sent_once_entered(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_sink() as sink:
        client = client_for(sink)
        with caplog.at_level(logging.WARNING, logger="optimizely_async"):
            await client.track(EVENT_KEY, "early-bird")
            await client.track(EVENT_KEY, "early-bird-2")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "async with" in r.getMessage()]
        assert len(warnings) == 1, "one warning, not one per event"
        assert (client.stats().queued, sink.received) == (2, [])
        async with client:
            await client.flush()
        report = await client.close()
    assert_accounted(report, 2, sink)
    assert visitor_ids(sink) == ["early-bird", "early-bird-2"]


async def test_events_after_close_are_counted_as_dropped() -> None:
    drops = DropLog()
    async with serve_sink() as sink:
        async with client_for(sink, on_drop=drops) as client:
            await track_many(client, 2)
        report = await client.close()
        assert report.delivered == 2
        await client.track(EVENT_KEY, "too-late")
        assert await client.activate("exp", "too-late-too") == "on"
        assert await client.is_feature_enabled("flag", "too-late-three") is True
        stats = client.stats()
    assert_accounted(stats, 5, sink)
    assert (stats.delivered, stats.dropped) == (2, {"closed": 3})
    assert [r for r in visitor_ids(sink, ok_only=False) if r.startswith("too-late")] == []
    assert [(type(events[0]), reason) for events, reason in drops.calls] == [
        (ConversionEvent, "closed"),
        (ImpressionEvent, "closed"),
        (ImpressionEvent, "closed"),
    ]
    assert await client.close() is report  # the close report is final


class AttrDict(dict):  # type: ignore[type-arg]
    pass


BAD_TRACK_CALLS: list[tuple[Any, ...]] = [
    ("", "u"),
    (None, "u"),
    (42, "u"),
    (["purchase"], "u"),
    ("no_such_event", "u"),
    (EVENT_KEY, None),
    (EVENT_KEY, 42),
    (EVENT_KEY, b"u"),
    (EVENT_KEY, "u", ["browser"]),
    (EVENT_KEY, "u", "browser=chrome"),
    (EVENT_KEY, "u", AttrDict(browser="chrome")),
    (EVENT_KEY, "u", None, ["revenue", 1]),
    (EVENT_KEY, "u", None, "revenue=1"),
    (EVENT_KEY, "u", None, AttrDict(revenue=1)),
    (EVENT_KEY, "u", None, {"when": object()}),
    (EVENT_KEY, "u", None, {"ids": {1, 2}}),
]


async def test_bad_track_inputs_send_nothing_and_raise_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_sink() as sink:
        async with client_for(sink) as client:
            with caplog.at_level(logging.ERROR, logger="optimizely_async"):
                for args in BAD_TRACK_CALLS:
                    await client.track(*args)  # must not raise
            await client.flush()
            # Tags that cannot be sent cost their own event, counted (the other calls make no event at all).
            assert (client.stats().submitted, client.stats().dropped) == (2, {"invalid_payload": 2})
            assert sink.received == []
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) >= len(BAD_TRACK_CALLS), "every refused call is logged"
            await client.track(EVENT_KEY, "good-user")  # the client is unharmed
        report = await client.close()
    assert_accounted(report, 3, sink)
    assert visitor_ids(sink) == ["good-user"]


async def test_shared_http_client_is_used_and_left_open() -> None:
    async with serve_sink() as sink, httpx.AsyncClient(headers={"X-Shared": "yes"}) as http_client:
        async with client_for(sink, http_client=http_client) as client:
            await track_many(client, 3)
        report = await client.close()
        assert not http_client.is_closed
        assert_accounted(report, 3, sink)
        assert all(r.headers.get("x-shared") == "yes" for r in sink.received)
