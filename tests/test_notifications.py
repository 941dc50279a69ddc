from __future__ import annotations

import logging
from typing import Any

import pytest

from optimizely_async import NotificationCenter, NotificationType

pytestmark = pytest.mark.anyio


async def test_ids_start_at_one_and_are_shared_across_types() -> None:
    center = NotificationCenter()
    assert center.add_notification_listener(NotificationType.DECISION, lambda *a: None) == 1
    assert center.add_notification_listener(NotificationType.TRACK, lambda *a: None) == 2
    # the official type strings work too
    assert center.add_notification_listener("LOG_EVENT:log_event", lambda *a: None) == 3


async def test_duplicate_and_unknown_types_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    center = NotificationCenter()

    def cb(*args: Any) -> None:
        pass

    assert center.add_notification_listener(NotificationType.DECISION, cb) == 1
    assert center.add_notification_listener(NotificationType.DECISION, cb) == -1
    assert center.add_notification_listener("NOPE", cb) == -1
    assert "Listener has already been added" in caplog.text
    assert "Invalid notification_type: NOPE" in caplog.text


async def test_sync_and_async_listeners_run_in_order_and_errors_are_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    center = NotificationCenter()
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def first(*args: Any) -> None:
        calls.append(("first", args))

    async def second(*args: Any) -> None:
        calls.append(("second", args))

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    async def third(*args: Any) -> None:
        calls.append(("third", args))

    for cb in (first, second, broken, third):
        center.add_notification_listener(NotificationType.TRACK, cb)
    with caplog.at_level(logging.ERROR, logger="optimizely_async"):
        await center.send_notifications(NotificationType.TRACK, "buy", "u1", None, None, {})
    assert [name for name, _ in calls] == ["first", "second", "third"]
    assert calls[0][1] == ("buy", "u1", None, None, {})
    assert "Unknown problem when sending" in caplog.text


async def test_remove_and_clear() -> None:
    center = NotificationCenter()
    seen: list[str] = []
    a = center.add_notification_listener(NotificationType.DECISION, lambda *args: seen.append("a"))
    center.add_notification_listener(NotificationType.DECISION, lambda *args: seen.append("b"))
    assert center.remove_notification_listener(a) is True
    assert center.remove_notification_listener(a) is False
    await center.send_notifications(NotificationType.DECISION, "ab-test", "u", {}, {})
    assert seen == ["b"]
    center.clear_notification_listeners(NotificationType.DECISION)
    assert not center.has_listeners(NotificationType.DECISION)
    center.add_notification_listener(NotificationType.TRACK, lambda *args: None)
    center.clear_all_notification_listeners()
    assert not center.has_listeners(NotificationType.TRACK)
