from __future__ import annotations

from typing import Any

import anyio
import pytest

from _support.datafiles import empty_datafile
from optimizely_async import (
    AsyncOptimizely,
    ClientStateError,
    ConfigurationError,
    InvalidDatafileError,
    OptimizelyError,
)
from optimizely_async.testing import RecordingDispatcher

pytestmark = pytest.mark.anyio


def datafile() -> dict[str, Any]:
    return empty_datafile("3", events=[{"id": "9", "key": "buy", "experimentIds": []}])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"datafile": 42},
        {"datafile": datafile(), "sdk_key": ""},
        {"datafile": datafile(), "batch_size": 0},
        {"datafile": datafile(), "flush_interval": -1},
        {"datafile": datafile(), "max_queue_size": "big"},
        {"datafile": datafile(), "event_endpoint": "logx"},
        {"datafile": datafile(), "http_client": object()},
        {"datafile": datafile(), "event_dispatcher": object()},
        {"datafile": datafile(), "user_profile_service": object()},
        {"datafile": datafile(), "close_timeout": float("nan")},
        {"datafile": datafile(), "datafile_access_token": "t"},
        {"sdk_key": "k", "update_interval": 0},
        {"datafile": datafile(), "default_decide_options": 5},
        {"datafile": datafile(), "default_decide_options": "INCLUDE_REASONS"},
    ],
)
async def test_unusable_options_raise_one_clear_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        AsyncOptimizely(**kwargs)
    assert isinstance(info.value, OptimizelyError)
    assert str(info.value)


async def test_invalid_static_datafile_raises() -> None:
    with pytest.raises(InvalidDatafileError):
        AsyncOptimizely(datafile="{}")


async def test_close_inside_the_block_does_not_cancel_the_body() -> None:
    sink = RecordingDispatcher()
    reached = False
    async with AsyncOptimizely(datafile=datafile(), event_dispatcher=sink) as client:
        await client.track("buy", "u1")
        report = await client.close()
        await anyio.sleep(0)  # a checkpoint after close() must not be cancelled
        reached = True
    assert reached
    assert report.delivered == 1
    assert len(sink.requests) == 1


async def test_client_cannot_be_entered_twice_or_reopened() -> None:
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=RecordingDispatcher())
    async with client:
        with pytest.raises(ClientStateError):
            await client.__aenter__()
    with pytest.raises(ClientStateError):
        async with client:
            pass


async def test_close_is_idempotent_and_reports() -> None:
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=RecordingDispatcher())
    async with client:
        for i in range(25):
            await client.track("buy", f"u{i}")
    first = await client.close()
    second = await client.close()
    assert first is second
    assert first.delivered == 25 and first.submitted == 25


async def test_static_datafile_is_ready_at_once() -> None:
    async with AsyncOptimizely(datafile=datafile(), event_dispatcher=RecordingDispatcher()) as client:
        assert client.is_ready
        assert await client.wait_until_ready(0)


async def test_large_static_datafile_is_parsed_at_construction() -> None:
    big = datafile()
    big["attributes"] = [{"id": str(i), "key": f"attribute_{i}_" + "x" * 40} for i in range(6000)]
    client = AsyncOptimizely(datafile=__import__("json").dumps(big), event_dispatcher=RecordingDispatcher())
    assert client.is_ready  # at once: nothing else waits on a client being constructed
    async with client:
        assert client.is_ready
        assert client.config is not None and len(client.config.attribute_ids) == 6000


async def test_track_snapshots_its_input_before_the_event_is_built() -> None:
    sink = RecordingDispatcher()
    df = datafile()
    df["attributes"] = [{"id": "100", "key": "plan"}]
    attributes: dict[str, Any] = {"plan": "gold"}
    tags: dict[str, Any] = {"revenue": 100, "note": "first"}
    async with AsyncOptimizely(datafile=df, event_dispatcher=sink) as client:
        await client.track("buy", "u1", attributes, tags)
        attributes["plan"] = "silver"  # the queued event must not see changes made after track() returned
        tags["revenue"] = 999
        tags["note"] = "changed"
    assert len(sink.requests) == 1
    visitor = sink.requests[0].payload["visitors"][0]
    assert visitor["attributes"] == [{"entity_id": "100", "key": "plan", "type": "custom", "value": "gold"}]
    event = visitor["snapshots"][0]["events"][0]
    assert event["revenue"] == 100
    assert event["tags"] == {"revenue": 100, "note": "first"}


async def test_deferred_events_carry_the_time_of_the_call() -> None:
    import time

    sink = RecordingDispatcher()
    df = datafile()
    df["sendFlagDecisions"] = True
    df["featureFlags"] = [{"id": "F", "key": "flag", "experimentIds": [], "rolloutId": "", "variables": []}]
    async with AsyncOptimizely(datafile=df, event_dispatcher=sink, flush_interval=60) as client:
        before = round(time.time() * 1000)
        await client.track("buy", "u1")
        await client.is_feature_enabled("flag", "u1")  # a "null" rollout impression: sendFlagDecisions
        after = round(time.time() * 1000)
        await anyio.sleep(0.05)  # the events are built later, by the queue's task
    stamps = [v["snapshots"][0]["events"][0]["timestamp"] for r in sink.requests for v in r.payload["visitors"]]
    assert len(stamps) == 2
    assert all(before <= stamp <= after for stamp in stamps)
