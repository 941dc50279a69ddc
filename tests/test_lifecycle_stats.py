"""``client.stats()``: the polling state next to the event counters, as one frozen public value."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import anyio
import pytest

from _datafile_server import DatafileServer, Status
from _lifecycle_kit import Recorder, datafile
from optimizely_async import AsyncOptimizely, ClientStats, PollingStats, QueueStats

pytestmark = pytest.mark.anyio

SDK_KEY = "SdkKeyStatsSecret12345"


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_stats_show_the_polling_state_failures_then_recovery() -> None:
    with DatafileServer() as server:
        server.set_datafile(datafile("1"))
        server.enqueue(Status(500), Status(500), Status(500))
        client = AsyncOptimizely(
            sdk_key=SDK_KEY,
            datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
            update_interval=0.05,
            event_dispatcher=Recorder(),
        )
        assert client.stats().state == "unopened"
        async with client:
            await wait_until(lambda: (p := client.stats().polling) is not None and p.consecutive_failures >= 2)
            failing = client.stats()
            assert failing.polling is not None
            assert failing.revision is None and failing.polling.last_success is None
            assert failing.polling.last_error is not None and "HTTP 500" in failing.polling.last_error
            assert SDK_KEY not in failing.polling.last_error and SDK_KEY not in repr(failing)

            before = time.time()
            await wait_until(lambda: client.stats().revision == "1")
            await wait_until(lambda: (p := client.stats().polling) is not None and p.consecutive_failures == 0)
            healthy = client.stats()
            assert healthy.state == "open"
            assert healthy.polling is not None
            assert healthy.polling.revision == "1"
            assert healthy.polling.last_success is not None and healthy.polling.last_success >= before - 1
            assert healthy.polling.failures >= 3 and healthy.polling.last_error is not None  # kept for the record

            await client.track("buy", "u1")
            await client.flush()
            assert client.stats().delivered == 1
    assert client.stats().state == "closed"


async def test_stats_are_a_frozen_snapshot_with_the_event_counters() -> None:
    async with AsyncOptimizely(datafile=datafile("7"), event_dispatcher=Recorder(), flush_interval=60) as client:
        first = client.stats()
        await client.track("buy", "u1")
        second = client.stats()
        assert isinstance(second, ClientStats) and isinstance(second, QueueStats)
        assert (first.submitted, second.submitted) == (0, 1)  # the first one did not change
        assert second.polling is None and second.revision == "7"
        assert second.events == QueueStats(1, 1, 0, 0, {}, 0, 0, 0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            second.state = "x"  # type: ignore[misc]


def test_polling_stats_is_public_and_frozen() -> None:
    stats = PollingStats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.revision = "2"  # type: ignore[misc]
    assert stats.last_success is None
