"""The issue's burst: 100,000 track() calls in a tight loop, default settings, a healthy local endpoint (a real
HTTP server on 127.0.0.1): every event is delivered."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from _sink_server import serve_sink
from _support.datafiles import empty_datafile
from optimizely_async import AsyncOptimizely

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOTAL = 100_000


def datafile() -> dict[str, Any]:
    return empty_datafile(
        "3", events=[{"id": "9", "key": "purchase", "experimentIds": []}], attributes=[{"id": "100", "key": "plan"}]
    )


async def test_100k_track_calls_in_a_tight_loop_are_all_delivered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="optimizely_async")
    async with serve_sink() as sink:
        async with AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url) as client:
            for i in range(TOTAL):
                await client.track("purchase", f"user-{i}", {"plan": "gold"}, {"revenue": i})
        report = await client.close()
    assert report.submitted == TOTAL
    assert report.delivered == TOTAL
    assert report.dropped == {} and report.undelivered == 0
    assert sink.delivered_visitors() == TOTAL
    revenues = sorted(
        visitor["snapshots"][0]["events"][0]["revenue"]
        for request in sink.received
        if request.reply.status == 200
        for visitor in request.payload["visitors"]
    )
    assert revenues == list(range(TOTAL))  # each call arrived once
