"""``decide`` reaches DECISION and ACTIVATE listeners however they were added or removed.

The decide fast path skips the notifications while the notification center says no such listener is
registered (``decisions_unheard``, kept current by every change to the listeners): these tests change the
listeners in each way between decides on a real client and check which listeners are called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from _support.datafiles import feature_test_datafile
from optimizely_async import AsyncOptimizely, NotificationCenter, NotificationType
from optimizely_async.testing import RecordingDispatcher

pytestmark = pytest.mark.anyio

_REMOVALS: dict[str, Callable[[NotificationCenter, NotificationType, int], Any]] = {
    "by id": lambda center, kind, listener_id: center.remove_notification_listener(listener_id),
    "by type": lambda center, kind, listener_id: center.clear_notification_listeners(kind),
    "all": lambda center, kind, listener_id: center.clear_all_notification_listeners(),
}


@pytest.mark.parametrize("kind", [NotificationType.DECISION, NotificationType.ACTIVATE])
@pytest.mark.parametrize("removal", sorted(_REMOVALS))
async def test_a_listener_hears_the_decides_made_while_it_is_registered(kind: NotificationType, removal: str) -> None:
    heard: list[tuple[Any, ...]] = []
    async with AsyncOptimizely(datafile=feature_test_datafile(), event_dispatcher=RecordingDispatcher()) as client:
        center = client.notification_center
        user = client.create_user_context("u1")
        assert user is not None
        await user.decide("flag")
        assert heard == []
        listener_id = center.add_notification_listener(kind, lambda *args: heard.append(args))
        decision = await user.decide("flag")
        assert decision.variation_key == "on"
        assert len(heard) == 1
        _REMOVALS[removal](center, kind, listener_id)
        await user.decide("flag")
        assert len(heard) == 1


async def test_a_listener_of_another_type_leaves_decide_quiet_and_one_of_each_is_heard() -> None:
    heard: list[NotificationType] = []
    async with AsyncOptimizely(datafile=feature_test_datafile(), event_dispatcher=RecordingDispatcher()) as client:
        center = client.notification_center
        center.add_notification_listener(NotificationType.TRACK, lambda *args: heard.append(NotificationType.TRACK))
        decision_id = center.add_notification_listener(
            NotificationType.DECISION, lambda *args: heard.append(NotificationType.DECISION)
        )
        center.add_notification_listener(
            NotificationType.ACTIVATE, lambda *args: heard.append(NotificationType.ACTIVATE)
        )
        user = client.create_user_context("u1")
        assert user is not None
        await user.decide("flag")
        assert sorted(heard) == sorted([NotificationType.DECISION, NotificationType.ACTIVATE])
        # Removing one of the two leaves the other heard.
        center.remove_notification_listener(decision_id)
        heard.clear()
        await user.decide("flag")
        assert heard == [NotificationType.ACTIVATE]
