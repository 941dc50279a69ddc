"""Async notification listeners run in the client's background work, off the caller's path."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from _lifecycle_kit import Recorder, datafile
from _logcapture import capture
from optimizely_async import AsyncOptimizely, NotificationType
from optimizely_async._listener_queue import AsyncListenerQueue

pytestmark = pytest.mark.anyio


def make_client(**kwargs: Any) -> AsyncOptimizely:
    return AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder(), **kwargs)


async def test_a_blocked_async_listener_does_not_hold_the_caller() -> None:
    gate = anyio.Event()
    seen: list[str] = []

    async def on_decision(kind: str, user_id: str, *_: Any) -> None:
        await gate.wait()
        seen.append(user_id)

    async with make_client() as client:
        client.notification_center.add_notification_listener(NotificationType.DECISION, on_decision)
        with anyio.fail_after(5):  # would wait forever if the listener ran on the caller's path
            assert await client.is_feature_enabled("flag", "u1") is False
            assert await client.is_feature_enabled("flag", "u2") is False
        assert seen == []
        assert client.stats().listeners.queued == 2
        gate.set()
        await client.flush()  # waits for the listeners
        assert seen == ["u1", "u2"]
        assert client.stats().listeners.completed == 2


async def test_async_listeners_run_in_notification_order_and_sync_ones_inline() -> None:
    order: list[tuple[str, str]] = []

    async def slow_first(kind: str, user_id: str, *_: Any) -> None:
        if user_id == "u0":
            await anyio.sleep(0.05)  # a slow first call must not let later ones overtake it
        order.append(("async", user_id))

    def inline(kind: str, user_id: str, *_: Any) -> None:
        order.append(("sync", user_id))

    async with make_client() as client:
        center = client.notification_center
        center.add_notification_listener(NotificationType.DECISION, slow_first)
        center.add_notification_listener(NotificationType.DECISION, inline)
        for i in range(20):
            await client.is_feature_enabled("flag", f"u{i}")
            assert order[-1] == ("sync", f"u{i}")  # the sync listener ran before the call returned
        await client.flush()
    assert [user for kind, user in order if kind == "async"] == [f"u{i}" for i in range(20)]


async def test_close_waits_for_async_listeners_within_close_timeout() -> None:
    done: list[str] = []

    async def on_track(event_key: str, user_id: str, *_: Any) -> None:
        await anyio.sleep(0.02)
        done.append(user_id)

    client = make_client(close_timeout=5)
    async with client:
        client.notification_center.add_notification_listener(NotificationType.TRACK, on_track)
        for i in range(10):
            await client.track("buy", f"u{i}")
    assert done == [f"u{i}" for i in range(10)]
    assert client.stats().listeners.abandoned == 0


async def test_a_failing_async_listener_is_logged_and_counted() -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    with capture(logging.getLogger("optimizely_async")) as records:
        async with make_client() as client:
            client.notification_center.add_notification_listener(NotificationType.DECISION, broken)
            for i in range(3):
                assert await client.is_feature_enabled("flag", f"u{i}") is False
            await client.flush()
            assert client.stats().listeners.failed == 3
    assert sum("DECISION" in message for _, message in records) == 3


async def test_the_backlog_is_bounded_and_overflow_is_counted_and_logged_once() -> None:
    gate = anyio.Event()

    async def stuck(*_: Any) -> None:
        await gate.wait()

    client = make_client()
    client.notification_center.background = AsyncListenerQueue(limit=5)
    with capture(logging.getLogger("optimizely_async")) as records:
        async with client:
            client.notification_center.add_notification_listener(NotificationType.DECISION, stuck)
            for i in range(25):
                await client.is_feature_enabled("flag", f"u{i}")
            stats = client.stats().listeners
            assert (stats.queued, stats.overflowed) == (5, 20)
            gate.set()
            await client.flush()
            assert client.stats().listeners.completed == 5
    overflow_lines = [m for level, m in records if level == logging.WARNING and "async notification listener" in m]
    assert len(overflow_lines) == 1


async def test_before_start_async_listeners_are_awaited_inline() -> None:
    seen: list[str] = []

    async def on_decision(kind: str, user_id: str, *_: Any) -> None:
        await anyio.sleep(0)
        seen.append(user_id)

    client = make_client()
    client.notification_center.add_notification_listener(NotificationType.DECISION, on_decision)
    await client.is_feature_enabled("flag", "early")
    assert seen == ["early"]  # nothing runs in the background yet, so the call awaited it
    await client.close()


async def test_an_async_listener_may_flush_and_close_the_client() -> None:
    """A listener awaiting flush() or close() must not wait for itself."""
    calls: list[str] = []
    client = make_client(close_timeout=2)

    async def flushes(*_: Any) -> None:
        await client.flush()
        calls.append("flushed")
        await client.close()
        calls.append("closed")

    with anyio.fail_after(10):
        async with client:
            client.notification_center.add_notification_listener(NotificationType.TRACK, flushes)
            await client.track("buy", "u1")
            await client.flush()
    assert calls[:1] == ["flushed"]
    assert client.stats().state == "closed"
