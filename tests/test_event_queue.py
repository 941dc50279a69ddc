"""EventQueue: batching, triggers, concurrency, retries, shutdown and exact accounting.

Fault scenarios run against a real HTTP server on 127.0.0.1 (tests/_sink_server.py). Each one checks the
ledger: every event sent is delivered, dropped with a reason, or undelivered; none vanish.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import pytest

from _sink_server import Reply, SinkServer, serve_sink
from optimizely_async.errors import ConfigurationError
from optimizely_async.events.dispatcher import DispatchResult, EventRequest, HttpDispatcher
from optimizely_async.events.models import ConversionEvent, EventContext, PendingEvent, UserEvent
from optimizely_async.events.queue import EventQueue, QueueStats

pytestmark = pytest.mark.anyio

FAST_RETRY = {"retry_backoff_base": 0.001, "retry_backoff_max": 0.01}


def make_events(n: int, url: str = "http://127.0.0.1:9/v1/events", *, revision: str = "1") -> list[UserEvent]:
    context = EventContext(account_id="a", project_id="p", revision=revision, endpoint=url)
    return [
        ConversionEvent(context=context, user_id=f"user-{i}", event_id="e", event_key="k", timestamp=i)
        for i in range(n)
    ]


def assert_accounted(stats: QueueStats, sent: int) -> None:
    """Nothing vanished: every event sent is delivered, dropped, undelivered or in flight at close, and nothing
    is pending."""
    assert stats.submitted == sent
    assert (stats.queued, stats.in_flight) == (0, 0)
    settled = stats.delivered + sum(stats.dropped.values()) + stats.undelivered + stats.in_flight_at_close
    assert settled == sent


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition``; the timeout only guards against a hung test."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


class GateDispatcher:
    """Holds every request until ``gate`` is set; records the most requests seen in flight at once."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.requests: list[EventRequest] = []
        self.active = 0
        self.max_active = 0

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        self.requests.append(request)
        return DispatchResult(delivered=True, status=200)


class Recorder:
    """An on_drop / on_dispatch hook that records its calls (sync, or async with ``is_async``)."""

    def __init__(self, *, is_async: bool = False, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.is_async, self.fail = is_async, fail

    def __call__(self, *args: Any) -> Awaitable[None] | None:
        if self.is_async:
            return self._async(*args)
        self._record(*args)
        return None

    async def _async(self, *args: Any) -> None:
        await anyio.sleep(0)
        self._record(*args)

    def _record(self, *args: Any) -> None:
        self.calls.append(args)
        if self.fail:
            raise RuntimeError("hook failure")

    def dropped(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for events, reason in self.calls:
            counts[reason] = counts.get(reason, 0) + len(events)
        return counts


async def run_queue(
    sink: SinkServer | None,
    events: Sequence[UserEvent],
    *,
    timeout: float | None = None,
    **options: Any,
) -> tuple[EventQueue, QueueStats]:
    """Queue ``events`` on a fresh queue over HttpDispatcher, flush, close; return the final stats."""
    async with HttpDispatcher(timeout=timeout) as dispatcher, anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, **options)
        await tg.start(queue.run)
        for event in events:
            assert await queue.put(event)
        await queue.flush()
        report = await queue.close()
    return queue, report


# -- delivery and triggers --------------------------------------------------------------------------------


async def test_delivers_in_batches_of_batch_size() -> None:
    async with serve_sink() as sink:
        events = make_events(25, sink.url)
        _, stats = await run_queue(sink, events, batch_size=10)
    assert_accounted(stats, 25)
    assert stats.delivered == 25 and stats.dropped == {}
    assert sorted(r.visitor_count for r in sink.received) == [5, 10, 10]
    delivered_ids = [v["visitor_id"] for r in sink.received for v in r.payload["visitors"]]
    assert sorted(delivered_ids) == sorted(e.user_id for e in events)
    assert len(set(sink.visitor_uuids())) == 25


async def test_full_batch_is_sent_without_flush() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=5, flush_interval=3600)
        await tg.start(queue.run)
        for event in make_events(5, sink.url):
            await queue.put(event)
        await wait_until(lambda: queue.stats().delivered == 5)
        report = await queue.close()
    assert_accounted(report, 5)
    assert [r.visitor_count for r in sink.received] == [5]


async def test_partial_batch_is_sent_on_flush_interval() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=100, flush_interval=0.05)
        await tg.start(queue.run)
        for event in make_events(3, sink.url):
            await queue.put(event)
        await wait_until(lambda: queue.stats().delivered == 3)
        report = await queue.close()
    assert_accounted(report, 3)


async def test_batches_split_on_revision_change() -> None:
    async with serve_sink() as sink:
        events = make_events(3, sink.url, revision="1") + make_events(2, sink.url, revision="2")
        _, stats = await run_queue(sink, events, batch_size=10)
    assert_accounted(stats, 5)
    assert sorted((r.payload["revision"], r.visitor_count) for r in sink.received) == [("1", 3), ("2", 2)]


async def test_batches_split_on_project_change_but_not_on_account_or_endpoint() -> None:
    async with serve_sink() as sink:
        base = make_events(1, sink.url)[0]

        def variant(i: int, **changes: str) -> UserEvent:
            return base.model_copy(update={"user_id": f"u{i}", "context": base.context.model_copy(update=changes)})

        events = [
            variant(0),
            variant(1, account_id="other"),  # same project and revision: same request
            variant(2, project_id="q"),
            variant(3, project_id="q"),
            variant(4),
        ]
        _, stats = await run_queue(sink, events, batch_size=10)
    assert_accounted(stats, 5)
    batches = sorted([v["visitor_id"] for v in r.payload["visitors"]] for r in sink.received)
    assert batches == [["u0", "u1"], ["u2", "u3"], ["u4"]]


async def test_large_batches_are_built_in_steps_and_delivered() -> None:
    async with serve_sink() as sink:
        _, stats = await run_queue(sink, make_events(300, sink.url), batch_size=150)
    assert_accounted(stats, 300)
    assert [r.visitor_count for r in sink.received] == [150, 150]


async def test_deferred_events_are_built_in_steps_that_let_other_tasks_run() -> None:
    """A batch of deferred events is built a few at a time: other tasks run between the steps."""
    context = EventContext(account_id="a", project_id="p", revision="1", endpoint="http://127.0.0.1:9/v1/events")
    timeline: list[str] = []

    def build(i: int) -> UserEvent:
        timeline.append("build")
        return ConversionEvent(context=context, user_id=f"user-{i}", event_id="e", event_key="k", timestamp=i)

    dispatcher = GateDispatcher()
    dispatcher.gate.set()
    done = anyio.Event()

    async def neighbour() -> None:
        while not done.is_set():
            timeline.append("other")
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=200, flush_interval=3600)
        await tg.start(queue.run)
        for i in range(200):
            assert queue.put_nowait(PendingEvent(context, functools.partial(build, i)))
        tg.start_soon(neighbour)
        await queue.flush()
        done.set()
        report = await queue.close()
    assert_accounted(report, 200)
    assert [r.event_count for r in dispatcher.requests] == [200]
    builds = "".join("b" if step == "build" else "." for step in timeline).strip(".")
    runs = [len(run) for run in builds.split(".") if run]
    assert sum(runs) == 200
    # Other tasks ran many times while the batch was built. (trio picks the order of ready tasks at random, so
    # two steps can follow each other before the neighbour runs.)
    assert len(runs) >= 6 and max(runs) <= 32


async def test_flush_waits_for_events_queued_before_it() -> None:
    dispatcher = GateDispatcher()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, flush_interval=3600)
        await tg.start(queue.run)
        for event in make_events(3):
            queue.put_nowait(event)
        flushed = anyio.Event()

        async def flush() -> None:
            await queue.flush()
            flushed.set()

        tg.start_soon(flush)
        await wait_until(lambda: dispatcher.active == 1)
        await anyio.wait_all_tasks_blocked()
        assert not flushed.is_set()  # the request is still held at the gate
        dispatcher.gate.set()
        await flushed.wait()
        assert queue.stats().delivered == 3
        await queue.flush()  # nothing pending: returns at once
        report = await queue.close()
    assert_accounted(report, 3)


async def test_concurrent_requests_are_bounded() -> None:
    dispatcher = GateDispatcher()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=1, max_concurrent_requests=4)
        await tg.start(queue.run)
        for event in make_events(40):
            queue.put_nowait(event)
        await wait_until(lambda: dispatcher.active == 4)
        await anyio.wait_all_tasks_blocked()
        assert queue.stats().in_flight == 4 and queue.stats().queued == 36
        dispatcher.gate.set()
        await queue.flush()
        report = await queue.close()
    assert dispatcher.max_active == 4
    assert_accounted(report, 40)
    assert report.delivered == 40


# -- faults against the real server -----------------------------------------------------------------------


async def test_500s_then_recovery() -> None:
    async with serve_sink() as sink:
        sink.script(Reply(500), Reply(503), Reply(500))
        _, stats = await run_queue(sink, make_events(10, sink.url), max_retries=5, **FAST_RETRY)
    assert_accounted(stats, 10)
    assert (stats.delivered, stats.retries, stats.requests) == (10, 3, 4)
    assert sink.delivered_visitors() == 10


async def test_persistent_500s_exhaust_retries() -> None:
    drops = Recorder()
    async with serve_sink() as sink:
        sink.default = Reply(500)
        _, stats = await run_queue(sink, make_events(7, sink.url), max_retries=2, on_drop=drops, **FAST_RETRY)
    assert_accounted(stats, 7)
    assert stats.dropped == {"retries_exhausted": 7}
    assert (stats.retries, len(sink.received)) == (2, 3)
    assert drops.dropped() == {"retries_exhausted": 7}


async def test_429_with_retry_after_is_retried() -> None:
    async with serve_sink() as sink:
        sink.script(Reply(429, headers={"Retry-After": "1"}))
        _, stats = await run_queue(sink, make_events(4, sink.url), **FAST_RETRY)
    assert_accounted(stats, 4)
    assert (stats.delivered, stats.retries) == (4, 1)
    assert [r.reply.status for r in sink.received] == [429, 200]


async def test_400_for_one_event_is_dropped_without_retry() -> None:
    drops = Recorder(is_async=True)
    async with serve_sink() as sink:
        sink.script(Reply(400))
        _, stats = await run_queue(
            sink, make_events(3, sink.url), batch_size=1, on_drop=drops, max_concurrent_requests=1, **FAST_RETRY
        )
    assert_accounted(stats, 3)
    assert stats.dropped == {"http_400": 1}
    assert (stats.delivered, stats.retries) == (2, 0)
    assert drops.dropped() == {"http_400": 1}


async def test_connection_refused_until_the_server_comes_up() -> None:
    async with serve_sink(start=False) as sink, HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, max_retries=50, retry_backoff_base=0.01, retry_backoff_max=0.05)
        await tg.start(queue.run)
        for event in make_events(15, sink.url):
            await queue.put(event)
        tg.start_soon(queue.flush)
        await wait_until(lambda: queue.stats().retries >= 2)
        assert queue.stats().delivered == 0
        await sink.start()
        await queue.flush()
        report = await queue.close()
    assert_accounted(report, 15)
    assert report.delivered == 15 and report.dropped == {}
    assert sink.delivered_visitors() == 15


async def test_slow_response_beyond_timeout_is_retried() -> None:
    async with serve_sink() as sink:
        sink.script(Reply(200, delay=30))
        _, stats = await run_queue(sink, make_events(5, sink.url), timeout=0.5, **FAST_RETRY)
    assert_accounted(stats, 5)
    assert stats.delivered == 5 and stats.retries >= 1
    assert sink.delivered_visitors() == 5


async def test_close_with_requests_in_flight_drains_when_time_allows() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
        sink.default = Reply(200, delay=0.2)
        queue = EventQueue(dispatcher, batch_size=5)
        await tg.start(queue.run)
        for event in make_events(20, sink.url):
            await queue.put(event)
        await wait_until(lambda: queue.stats().in_flight > 0)
        report = await queue.close(timeout=30)
    assert not report.timed_out
    assert_accounted(report, 20)
    assert report.delivered == 20


async def test_close_timeout_abandons_requests_in_flight() -> None:
    drops = Recorder()
    async with serve_sink() as sink, HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
        sink.default = Reply(200, delay=60)
        queue = EventQueue(dispatcher, batch_size=5, max_concurrent_requests=2, on_drop=drops)
        await tg.start(queue.run)
        for event in make_events(23, sink.url):
            await queue.put(event)
        await wait_until(lambda: queue.stats().in_flight == 10)
        report = await queue.close(timeout=0.3)
        assert not await queue.put(make_events(1, sink.url)[0])  # closed
    assert report.timed_out
    assert (await queue.close()).timed_out  # idempotent: the same verdict
    assert_accounted(report, 23)
    # Two requests of 5 were out (the server may have them): reported apart from the 13 never sent.
    assert (report.delivered, report.undelivered, report.in_flight_at_close) == (0, 13, 10)
    assert drops.dropped() == {"close_timeout": 13, "in_flight_at_close": 10, "closed": 1}
    assert_accounted(queue.stats(), 24)


# -- producers: full queue, cancellation, closed ----------------------------------------------------------


async def test_put_nowait_drops_when_full() -> None:
    dispatcher = GateDispatcher()
    drops = Recorder()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=2, max_queue_size=4, max_concurrent_requests=1, on_drop=drops)
        await tg.start(queue.run)
        events = make_events(10)
        accepted = [queue.put_nowait(event) for event in events]
        assert accepted == [True] * 4 + [False] * 6
        assert queue.stats().dropped == {"queue_full": 6}
        dispatcher.gate.set()
        await queue.flush()
        report = await queue.close()
    assert_accounted(report, 10)
    assert report.delivered == 4
    assert drops.dropped() == {"queue_full": 6}


async def test_put_waits_for_room_then_drops_after_enqueue_timeout() -> None:
    dispatcher = GateDispatcher()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=1, max_queue_size=1, max_concurrent_requests=1, enqueue_timeout=0.05)
        await tg.start(queue.run)
        first, second, third = make_events(3)
        assert await queue.put(first)
        await wait_until(lambda: dispatcher.active == 1)
        assert await queue.put(second)  # fills the buffer
        assert not await queue.put(third)  # no room within enqueue_timeout
        dispatcher.gate.set()
        report = await queue.close()
    assert_accounted(report, 3)
    assert (report.delivered, report.dropped) == (2, {"queue_full": 1})


async def test_put_gets_room_when_a_batch_leaves() -> None:
    dispatcher = GateDispatcher()
    dispatcher.gate.set()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=2, max_queue_size=2, enqueue_timeout=30)
        await tg.start(queue.run)
        for event in make_events(50):
            assert await queue.put(event)
        report = await queue.close()
    assert_accounted(report, 50)
    assert report.delivered == 50


async def test_cancelling_a_waiting_put_counts_the_event() -> None:
    dispatcher = GateDispatcher()
    drops = Recorder()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(
            dispatcher, batch_size=1, max_queue_size=1, max_concurrent_requests=1, enqueue_timeout=60, on_drop=drops
        )
        await tg.start(queue.run)
        first, second, third = make_events(3)
        await queue.put(first)
        await wait_until(lambda: dispatcher.active == 1)
        await queue.put(second)
        results: list[bool] = []
        scope = anyio.CancelScope()  # entered by the putting task
        tg.start_soon(_put_into, queue, third, results, scope)
        await anyio.wait_all_tasks_blocked()  # the third put() is waiting for room
        assert queue.stats().submitted == 2
        scope.cancel()
        await wait_until(lambda: queue.stats().dropped.get("cancelled") == 1)
        dispatcher.gate.set()
        report = await queue.close()
    assert results == []  # the put never returned
    assert_accounted(report, 3)
    assert (report.delivered, report.dropped) == (2, {"cancelled": 1})
    assert drops.dropped() == {"cancelled": 1}


async def test_cancelling_a_waiting_put_against_the_real_server() -> None:
    async with serve_sink() as sink, HttpDispatcher(timeout=0.5) as dispatcher, anyio.create_task_group() as tg:
        sink.script(Reply(200, delay=60))  # the first attempt times out, its retry succeeds
        queue = EventQueue(
            dispatcher,
            batch_size=1,
            max_queue_size=1,
            max_concurrent_requests=1,
            enqueue_timeout=60,
            retry_backoff_base=0.001,
            retry_backoff_max=0.01,
        )
        await tg.start(queue.run)
        first, second, third = make_events(3, sink.url)
        await queue.put(first)
        await wait_until(lambda: queue.stats().in_flight == 1)
        await queue.put(second)
        results: list[bool] = []
        scope = anyio.CancelScope()
        tg.start_soon(_put_into, queue, third, results, scope)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await queue.flush()
        report = await queue.close()
    assert results == []
    assert_accounted(report, 3)
    assert (report.delivered, report.dropped) == (2, {"cancelled": 1})
    assert report.retries >= 1
    assert sink.delivered_visitors() == 2


async def _put_into(queue: EventQueue, event: UserEvent, results: list[bool], scope: anyio.CancelScope) -> None:
    with scope:
        results.append(await queue.put(event))


async def test_waiting_put_sees_close() -> None:
    dispatcher = GateDispatcher()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, batch_size=1, max_queue_size=1, max_concurrent_requests=1, enqueue_timeout=60)
        await tg.start(queue.run)
        events = make_events(3)
        await queue.put(events[0])
        await wait_until(lambda: dispatcher.active == 1)
        await queue.put(events[1])
        results: list[bool] = []

        async def put_third() -> None:
            results.append(await queue.put(events[2]))

        tg.start_soon(put_third)
        await anyio.wait_all_tasks_blocked()
        dispatcher.gate.set()
        report = await queue.close()
        await wait_until(lambda: results != [])
    assert results == [False]
    stats = queue.stats()
    assert_accounted(stats, 3)
    assert report.delivered == 2 and stats.dropped == {"closed": 1}


async def test_puts_after_close_are_counted() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher)
        await tg.start(queue.run)
        await queue.put(make_events(1, sink.url)[0])
        await queue.close()
        assert not await queue.put(make_events(1, sink.url)[0])
        assert not queue.put_nowait(make_events(1, sink.url)[0])
    stats = queue.stats()
    assert_accounted(stats, 3)
    assert (stats.delivered, stats.dropped) == (1, {"closed": 2})


# -- hooks, odd dispatchers, lifecycle --------------------------------------------------------------------


def len_visitors(payload: Mapping[str, Any]) -> int:
    return len(payload["visitors"])


@pytest.mark.parametrize("is_async", [False, True])
async def test_on_dispatch_sees_each_payload_once(is_async: bool) -> None:
    seen = Recorder(is_async=is_async)
    async with serve_sink() as sink:
        sink.script(Reply(500))
        _, stats = await run_queue(sink, make_events(15, sink.url), on_dispatch=seen, **FAST_RETRY)
    assert_accounted(stats, 15)
    assert stats.retries == 1
    payloads: list[Mapping[str, Any]] = [call[0] for call in seen.calls]
    assert {call[1] for call in seen.calls} == {sink.url}
    assert sorted(len(p["visitors"]) for p in payloads) == [5, 10]
    delivered = [r.payload for r in sink.received if r.reply.status == 200]
    assert sorted(delivered, key=len_visitors) == sorted(payloads, key=len_visitors)


@pytest.mark.parametrize("is_async", [False, True])
async def test_failing_hooks_never_break_delivery(is_async: bool) -> None:
    hook = Recorder(is_async=is_async, fail=True)
    async with serve_sink() as sink:
        sink.script(Reply(422))
        _, stats = await run_queue(sink, make_events(20, sink.url), on_dispatch=hook, on_drop=hook)
    assert_accounted(stats, 20)
    assert (stats.delivered, stats.dropped) == (10, {"http_422": 10})
    assert len(hook.calls) == 3  # two payloads and one drop


async def test_unencodable_events_are_dropped_alone() -> None:
    async with serve_sink() as sink:
        events = make_events(4, sink.url)
        bad = events[1].model_copy(update={"tags": {"when": datetime.datetime(2024, 1, 1)}})
        _, stats = await run_queue(sink, [events[0], bad, events[2], events[3]])
    assert_accounted(stats, 4)
    assert (stats.delivered, stats.dropped) == (3, {"invalid_payload": 1})
    assert sink.delivered_visitors() == 3


async def test_a_raising_dispatcher_drops_the_batch() -> None:
    class Broken:
        async def dispatch(self, request: EventRequest) -> DispatchResult:
            raise RuntimeError("bug in a custom dispatcher")

    async with anyio.create_task_group() as tg:
        queue = EventQueue(Broken())
        await tg.start(queue.run)
        for event in make_events(3):
            await queue.put(event)
        await queue.flush()
        report = await queue.close()
    assert_accounted(report, 3)
    assert report.dropped == {"dispatch_error": 3}


async def test_cancelling_the_owner_accounts_for_everything() -> None:
    dispatcher = GateDispatcher()
    drops = Recorder()
    queue = EventQueue(dispatcher, batch_size=2, max_concurrent_requests=1, on_drop=drops)
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        for event in make_events(7):
            queue.put_nowait(event)
        await wait_until(lambda: dispatcher.active == 1)
        tg.cancel_scope.cancel()
    stats = queue.stats()
    assert_accounted(stats, 7)
    assert stats.undelivered == 7
    assert drops.dropped() == {"shutdown_cancelled": 7}
    assert not queue.put_nowait(make_events(1)[0])


@pytest.mark.parametrize("timeout", ["x", None, float("nan"), True])
async def test_close_with_a_bad_timeout_logs_and_still_drains(timeout: Any, caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = GateDispatcher()
    dispatcher.gate.set()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher, flush_interval=3600)
        await tg.start(queue.run)
        for event in make_events(3):
            queue.put_nowait(event)
        report = await queue.close(timeout)
    assert_accounted(report, 3)
    assert report.delivered == 3 and not report.timed_out
    assert any("the timeout must be a number of seconds" in r.getMessage() for r in caplog.records)


async def test_close_before_run_reports_undelivered() -> None:
    queue = EventQueue(GateDispatcher())
    for event in make_events(3):
        assert queue.put_nowait(event)
    report = await queue.close(timeout=1)
    assert report.timed_out
    assert_accounted(report, 3)
    assert report.undelivered == 3


async def test_run_only_once_and_close_is_idempotent() -> None:
    dispatcher = GateDispatcher()
    dispatcher.gate.set()
    async with anyio.create_task_group() as tg:
        queue = EventQueue(dispatcher)
        await tg.start(queue.run)
        with pytest.raises(RuntimeError):
            await queue.run()
        first = await queue.close()
        second = await queue.close()
    assert first == second
    await queue.flush()  # closed and empty: returns at once


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("max_queue_size", 0),
        ("max_concurrent_requests", 0),
        ("max_retries", -1),
        ("flush_interval", 0),
        ("flush_interval", float("inf")),
        ("enqueue_timeout", -1),
        ("retry_backoff_base", float("nan")),
    ],
)
def test_bad_options_are_configuration_errors(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        EventQueue(GateDispatcher.__new__(GateDispatcher), **{option: value})


def test_batch_size_cannot_exceed_queue_size() -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        EventQueue(GateDispatcher.__new__(GateDispatcher), batch_size=20, max_queue_size=10)


# -- burst ------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_burst_of_100k_puts_with_defaults_delivers_all() -> None:
    total = 100_000
    async with serve_sink() as sink:
        events = make_events(total, sink.url)
        async with HttpDispatcher() as dispatcher, anyio.create_task_group() as tg:
            queue = EventQueue(dispatcher)
            await tg.start(queue.run)
            accepted = 0
            for event in events:
                accepted += await queue.put(event)
            await queue.flush()
            report = await queue.close()
    assert accepted == total
    assert_accounted(report, total)
    assert report.delivered == total and report.dropped == {}
    assert sink.delivered_visitors() == total
