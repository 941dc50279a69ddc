"""Unit tests of events/ledger.py: the queue's counters, batches, flush waiters and on_drop hooks."""

from __future__ import annotations

import gc
import logging
import random
import types
import warnings
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from _logcapture import capture
from optimizely_async.events import ledger as ledger_module
from optimizely_async.events.ledger import Batch, DeliveryReport, Ledger, QueueStats, call_hook, run_hook
from optimizely_async.events.models import PendingEvent

pytestmark = pytest.mark.anyio

LOG = logging.getLogger("optimizely_async")


class Ev:
    """A stand-in queued event: the ledger only counts and forwards events."""

    def __init__(self, seq: int) -> None:
        self.seq = seq


def evs(n: int, start: int = 0) -> list[Any]:
    return [Ev(start + i) for i in range(n)]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], str]] = []

    def __call__(self, events: Sequence[Any], reason: str) -> None:
        self.calls.append((list(events), reason))


def check_invariant(stats: QueueStats) -> None:
    total = stats.queued + stats.in_flight + stats.delivered + sum(stats.dropped.values()) + stats.undelivered
    assert stats.submitted == total, stats


# ------------------------------------------------------------------------------- random sequences


async def test_random_sequences_keep_the_books() -> None:
    for seed in range(150):
        await _run_sequence(random.Random(seed))


async def _run_sequence(rng: random.Random) -> None:
    seen = Recorder()
    ledger = Ledger(seen)
    buffer: list[Any] = []
    batches: list[tuple[Batch, list[Any]]] = []  # every batch taken, with the events it started with
    settled: set[int] = set()  # sequences whose batch is settled (or that were abandoned)
    waiters: list[tuple[int, anyio.Event]] = []
    next_seq = 0
    expect: dict[str, Any] = {"delivered": 0, "dropped": {}, "undelivered": 0, "rejected": 0}
    given_up: list[Any] = []  # every event that on_drop must have been told about

    def drop(events: list[Any], reason: str) -> None:
        expect["dropped"][reason] = expect["dropped"].get(reason, 0) + len(events)
        given_up.extend(events)

    for _ in range(rng.randint(1, 60)):
        op = rng.choices(["put", "reject", "take", "settle", "resettle", "drop", "flush", "abandon"],
                         weights=[30, 4, 15, 15, 4, 5, 8, 1])[0]  # fmt: skip
        in_flight = [(b, e) for b, e in batches if not b.settled]
        if op == "put":
            buffer.append(Ev(-1))
        elif op == "reject":
            reason = rng.choice(["queue_full", "closed"])
            event = Ev(-2)
            assert ledger.reject(event, reason) is None
            expect["rejected"] += 1
            drop([event], reason)
        elif op == "take" and buffer:
            k = rng.randint(1, len(buffer))
            taken, buffer[:] = buffer[:k], buffer[k:]
            for event in taken:
                event.seq, next_seq = next_seq, next_seq + 1
            batch = ledger.take(taken)
            assert (batch.start, batch.settled) == (taken[0].seq, False)
            batches.append((batch, list(taken)))
        elif op == "settle" and in_flight:
            batch, original = rng.choice(in_flight)
            reason = rng.choice([None, "http_400", "retries_exhausted"])
            remaining = list(batch.events)
            ledger.settle(batch, reason)
            if reason is None:
                expect["delivered"] += len(remaining)
            elif remaining:
                drop(remaining, reason)
            settled.update(e.seq for e in original)
        elif op == "resettle" and len(batches) > len(in_flight):  # a second outcome is ignored
            batch = rng.choice([b for b, _ in batches if b.settled])
            before = ledger.stats(len(buffer))
            ledger.settle(batch, rng.choice([None, "http_400"]))
            assert ledger.stats(len(buffer)) == before
        elif op == "drop" and in_flight:  # as _build_request does with events it cannot build
            batch, _ = rng.choice(in_flight)
            k = rng.randint(0, len(batch.events))
            part, batch.events = batch.events[:k], batch.events[k:]
            if part:
                ledger.drop(part, "invalid_event")
                drop(part, "invalid_event")
        elif op == "flush":
            target = rng.randint(0, ledger.taken + len(buffer))
            waiters.append((target, ledger.flush_waiter(target)))
        elif op == "abandon":
            reason = rng.choice(["close_timeout", "shutdown_cancelled"])
            queued, buffer[:] = list(buffer), []
            for event in queued:
                event.seq, next_seq = next_seq, next_seq + 1
            for batch, original in in_flight:
                expect["undelivered"] += len(batch.events)
                given_up.extend(batch.events)
                settled.update(e.seq for e in original)
            expect["undelivered"] += len(queued)
            given_up.extend(queued)
            settled.update(e.seq for e in queued)
            ledger.abandon(queued, reason)
            assert all(b.settled for b, _ in batches)

        stats = ledger.stats(len(buffer))
        check_invariant(stats)
        assert stats.queued == len(buffer)
        assert stats.in_flight == sum(len(b.events) for b, _ in batches if not b.settled)
        assert (stats.delivered, stats.dropped, stats.undelivered) == (
            expect["delivered"], expect["dropped"], expect["undelivered"],
        )  # fmt: skip
        assert stats.submitted == next_seq + len(buffer) + expect["rejected"]
        assert ledger.settled_below() == min(
            (b.start for b, _ in batches if not b.settled), default=ledger.taken
        )  # fmt: skip
        for target, waiter in waiters:
            assert waiter.is_set() is all(seq in settled for seq in range(target)), (target, sorted(settled))
    # Every event given up on reached on_drop exactly once (abandon walks the in-flight set in no order).
    assert sorted(id(e) for events, _ in seen.calls for e in events) == sorted(map(id, given_up))


# ------------------------------------------------------------------------------------ settle, flush


def test_settle_is_once_only() -> None:
    seen = Recorder()
    ledger = Ledger(seen)
    batch = ledger.take(evs(3))
    ledger.settle(batch, None)
    ledger.settle(batch, "http_400")
    ledger.settle(batch, None)
    stats = ledger.stats(0)
    assert (stats.delivered, stats.dropped, stats.in_flight, stats.submitted) == (3, {}, 0, 3)
    assert seen.calls == []

    dropped = ledger.take(evs(2, 3))
    ledger.settle(dropped, "http_400")
    ledger.settle(dropped, "http_400")
    ledger.settle(dropped, None)
    stats = ledger.stats(0)
    assert (stats.delivered, stats.dropped) == (3, {"http_400": 2})
    assert [(len(e), r) for e, r in seen.calls] == [(2, "http_400")]


async def test_flush_waiters_released_when_every_earlier_event_is_settled() -> None:
    ledger = Ledger(None)
    first, second, third = ledger.take(evs(3)), ledger.take(evs(2, 3)), ledger.take(evs(4, 5))
    zero, at3, at5, at9, at11 = (ledger.flush_waiter(t) for t in (0, 3, 5, 9, 11))
    assert zero.is_set() and not at3.is_set()
    ledger.settle(third, None)
    ledger.settle(second, "http_400")
    assert not any(w.is_set() for w in (at3, at5, at9))  # the first batch still holds everything back
    ledger.settle(first, None)
    assert at3.is_set() and at5.is_set() and at9.is_set()
    assert not at11.is_set()  # two events still in the buffer
    fourth = ledger.take(evs(2, 9))
    assert not at11.is_set()
    ledger.settle(fourth, None)
    assert at11.is_set()
    with anyio.fail_after(1):
        await at11.wait()


async def test_waiter_for_settled_events_is_set_at_once() -> None:
    ledger = Ledger(None)
    ledger.settle(ledger.take(evs(2)), None)
    late = ledger.take(evs(1, 2))
    assert ledger.flush_waiter(2).is_set()
    assert not ledger.flush_waiter(3).is_set()
    ledger.settle(late, "http_500")
    assert ledger.settled_below() == 3


async def test_abandon_counts_undelivered_and_releases_waiters() -> None:
    seen = Recorder()
    ledger = Ledger(seen)
    done, out1, out2 = ledger.take(evs(1)), ledger.take(evs(2, 1)), ledger.take(evs(3, 3))
    ledger.settle(done, None)
    waiter = ledger.flush_waiter(8)
    ledger.abandon(evs(2, 6), "close_timeout")
    stats = ledger.stats(0)
    check_invariant(stats)
    assert (stats.delivered, stats.dropped, stats.undelivered, stats.in_flight, stats.submitted) == (1, {}, 7, 0, 8)
    assert out1.settled and out2.settled and waiter.is_set()
    assert sorted(len(events) for events, _ in seen.calls) == [2, 2, 3]
    assert {reason for _, reason in seen.calls} == {"close_timeout"}
    ledger.settle(out1, None)  # the request came back after all: already counted
    assert ledger.stats(0) == stats


def test_reject_counts_a_refused_put() -> None:
    seen = Recorder()
    ledger = Ledger(seen)
    event = Ev(0)
    assert ledger.reject(event, "queue_full") is None
    stats = ledger.stats(4)
    check_invariant(stats)
    assert (stats.submitted, stats.queued, stats.dropped, ledger.taken) == (5, 4, {"queue_full": 1}, 0)
    assert seen.calls == [([event], "queue_full")]


def test_on_drop_sees_built_models_for_pending_events() -> None:
    seen = Recorder()
    ledger = Ledger(seen)
    context: Any = types.SimpleNamespace(project_id="p", revision="1")
    plain = Ev(0)
    ledger.drop([PendingEvent(context, lambda: "built"), plain], "cancelled")
    assert seen.calls == [(["built", plain], "cancelled")]


def test_delivery_report_is_queue_stats_with_timed_out() -> None:
    stats = Ledger(None).stats(0)
    report = DeliveryReport(**vars(stats))
    assert isinstance(report, QueueStats) and report.timed_out is False
    with pytest.raises(AttributeError):
        report.timed_out = True  # type: ignore[misc]


# -------------------------------------------------------------------------------------------- hooks


async def test_async_on_drop_runs_in_the_hooks_task_group() -> None:
    ran: list[tuple[int, str]] = []

    async def on_drop(events: Sequence[Any], reason: str) -> None:
        await anyio.sleep(0)
        ran.append((len(events), reason))

    ledger = Ledger(on_drop)
    async with anyio.create_task_group() as hooks:
        ledger.hooks = hooks
        assert ledger.drop(evs(2), "http_400") is None
        assert ledger.reject(Ev(9), "queue_full", await_inline=True) is None  # the task group wins
        assert ran == []  # not awaited inline
    assert sorted(ran) == [(1, "queue_full"), (2, "http_400")]


async def test_async_on_drop_without_hooks_is_returned_only_when_asked() -> None:
    ran: list[str] = []

    async def on_drop(events: Sequence[Any], reason: str) -> None:
        ran.append(reason)

    ledger = Ledger(on_drop)
    pending = ledger.reject(Ev(0), "cancelled", await_inline=True)
    assert pending is not None and ran == []
    await run_hook(pending, "on_drop")
    assert ran == ["cancelled"]

    with capture(LOG, logging.WARNING) as logs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ledger.drop(evs(1), "closed") is None
        gc.collect()
    assert ran == ["cancelled"]
    assert (logging.WARNING, "The async on_drop callback could not run: the event queue is not running.") in logs
    assert not [w for w in caught if "never awaited" in str(w.message)]  # the coroutine was closed
    assert ledger.stats(0).dropped == {"cancelled": 1, "closed": 1}


async def test_raising_on_drop_is_isolated() -> None:
    def sync_hook(events: Sequence[Any], reason: str) -> None:
        raise ValueError("sync boom")

    async def async_hook(events: Sequence[Any], reason: str) -> None:
        raise ValueError("async boom")

    with capture(LOG, logging.ERROR) as logs:
        ledger = Ledger(sync_hook)
        ledger.settle(ledger.take(evs(2)), "http_400")
        ledger = Ledger(async_hook)
        async with anyio.create_task_group() as hooks:
            ledger.hooks = hooks
            ledger.settle(ledger.take(evs(3)), "http_400")
        ledger.hooks = None
        await run_hook(ledger.drop(evs(1), "cancelled", await_inline=True), "on_drop")
    assert ledger.stats(0).dropped == {"http_400": 3, "cancelled": 1}
    assert logs == [(logging.ERROR, "The on_drop callback raised; ignored.")] * 3


async def test_call_hook_and_run_hook() -> None:
    calls: list[tuple[Any, ...]] = []

    def sync(*args: Any) -> int:
        calls.append(args)
        return 5  # not awaitable: nothing to await

    async def coro(*args: Any) -> None:
        calls.append(("async", *args))

    class Awaitable:
        def __await__(self) -> Any:
            calls.append(("awaited",))
            return iter(())

    assert call_hook(sync, "x", 1, 2) is None and calls == [(1, 2)]
    pending = call_hook(coro, "x", 3)
    assert pending is not None and len(calls) == 1
    await run_hook(pending, "x")
    custom = Awaitable()
    assert call_hook(lambda: custom, "x") is custom
    await run_hook(custom, "x")
    await run_hook(None, "x")
    assert calls == [(1, 2), ("async", 3), ("awaited",)]
    with capture(LOG) as logs:
        assert call_hook(lambda: 1 / 0, "on_dispatch") is None
    assert logs == [(logging.ERROR, "The on_dispatch callback raised; ignored.")]


def test_drop_warnings_are_rate_limited_per_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(ledger_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    ledger = Ledger(None)
    W, D = logging.WARNING, logging.DEBUG
    steps = [  # (time, events, reason, level logged)
        (1000.0, 2, "http_400", W), (1005.0, 1, "http_400", D), (1005.0, 3, "queue_full", W),
        (1009.99, 1, "http_400", D), (1010.0, 4, "http_400", W), (1014.0, 1, "queue_full", D),
        (1015.0, 1, "queue_full", W), (1019.9, 1, "http_400", D),
    ]  # fmt: skip
    expected = []
    totals: dict[str, int] = {}
    with capture(LOG) as logs:
        for at, count, reason, level in steps:
            now[0] = at
            ledger.drop(evs(count), reason)
            totals[reason] = totals.get(reason, 0) + count
            if level == W:  # the warning gives the totals so far, not only this drop
                all_dropped = sum(totals.values())
                text = f"({totals[reason]} so far for this reason; {all_dropped} dropped in all, 0 delivered)."
                expected.append((W, f"Dropped {count} event(s): {reason} {text}"))
            else:
                expected.append((D, f"Dropped {count} event(s): {reason} ({totals[reason]} so far for this reason)."))
    assert logs == expected
    assert ledger.dropped == {"http_400": 9, "queue_full": 5}
