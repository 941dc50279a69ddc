"""Testing your own code against Optimizely flags, offline: run it with ``pytest examples/test_with_the_kit.py``.

The code under test (``checkout_page``) decides a flag; the tests build the datafile they need with
``DatafileBuilder``, record the events with ``RecordingDispatcher`` instead of sending them, and turn the flag
on for one test with ``update_datafile``. Every test runs on asyncio and on trio (anyio's pytest plugin).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from optimizely_async import AsyncOptimizely
from optimizely_async.testing import DatafileBuilder, RecordingDispatcher, update_datafile

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------------- the application code


async def checkout_page(client: AsyncOptimizely, user_id: str, plan: str) -> str:
    """What the checkout page shows: the new checkout's headline when the flag is on for the user."""
    user = client.create_user_context(user_id, {"plan": plan})
    if user is None:
        return "Checkout"
    decision = await user.decide("new_checkout")
    return str(decision.variables["headline"]) if decision.enabled else "Checkout"


# ---------------------------------------------------------------------------------------- the tests


def flags() -> DatafileBuilder:
    """The flags as production has them: new_checkout exists and is off for everyone."""
    return DatafileBuilder().audience("pro", plan="pro").flag("new_checkout", variables={"headline": "Fast checkout"})


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def events() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
async def client(events: RecordingDispatcher) -> AsyncIterator[AsyncOptimizely]:
    async with AsyncOptimizely(datafile=flags().build(), event_dispatcher=events) as client:
        yield client


async def test_the_classic_checkout_by_default(client: AsyncOptimizely) -> None:
    assert await checkout_page(client, "alice", "free") == "Checkout"


async def test_the_new_checkout_when_the_flag_is_on(client: AsyncOptimizely, events: RecordingDispatcher) -> None:
    await update_datafile(client, flags().rollout(enabled=True).build())  # on for everyone, in this test only

    assert await checkout_page(client, "alice", "free") == "Fast checkout"
    await client.flush()
    assert [(e.user_id, e.flag_key, e.enabled) for e in events.impressions] == [("alice", "new_checkout", True)]


async def test_the_new_checkout_for_pro_users_only(events: RecordingDispatcher) -> None:
    datafile = flags().rollout(audience="pro", variables={"headline": "Pro checkout"}).build()
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=events) as client:
        assert await checkout_page(client, "bob", "pro") == "Pro checkout"
        assert await checkout_page(client, "carol", "free") == "Checkout"
