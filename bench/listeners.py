"""Async notification listeners: what a slow ``async def`` DECISION listener costs the caller.

Run: ``python bench/listeners.py`` (a few seconds). Per ``is_feature_enabled`` call, median of 200 calls:

* ours without a listener;
* ours with an ``async def`` DECISION listener that awaits 50 ms, the client started: the listener runs in
  the client's background work, so the call does not wait for it;
* the same listener awaited inline (what every call paid before: here, a client not started yet);
* the official SDK with a plain DECISION listener that does nothing (it has no async listeners), for scale.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio
from _common import example_datafile, official_client

from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest, NotificationType

CALLS = 200
FLAG = "new_checkout"


class Sink:
    async def dispatch(self, request: EventRequest) -> DispatchResult:
        return DispatchResult(delivered=True, status=204)


async def slow_listener(*_: Any) -> None:
    await anyio.sleep(0.05)


async def per_call(client: AsyncOptimizely) -> float:
    times = []
    for i in range(CALLS):
        start = time.perf_counter()
        await client.is_feature_enabled(FLAG, f"user-{i}")
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def official_per_call() -> float:
    client = official_client(example_datafile())
    client.notification_center.add_notification_listener(NotificationType.DECISION.value, lambda *a: None)
    times = []
    for i in range(CALLS):
        start = time.perf_counter()
        client.is_feature_enabled(FLAG, f"user-{i}")
        times.append(time.perf_counter() - start)
    client.close()
    return statistics.median(times) * 1000


async def main() -> None:
    datafile = example_datafile()
    rows = []
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=Sink(), close_timeout=1) as client:
        rows.append(("ours, no listener", await per_call(client)))
    client = AsyncOptimizely(datafile=datafile, event_dispatcher=Sink(), close_timeout=1)
    client.notification_center.add_notification_listener(NotificationType.DECISION, slow_listener)
    async with client:
        rows.append(("ours, async listener awaiting 50 ms (background)", await per_call(client)))
        await client.flush()
    inline = AsyncOptimizely(datafile=datafile, event_dispatcher=Sink())
    inline.notification_center.add_notification_listener(NotificationType.DECISION, slow_listener)
    rows.append(("ours, same listener awaited inline (client not started)", await per_call(inline)))
    await inline.close()
    rows.append(("official, plain no-op listener", official_per_call()))
    print(f"{'is_feature_enabled, median per call':60} ms")
    for name, ms in rows:
        print(f"{name:60} {ms:8.3f}")


if __name__ == "__main__":
    anyio.run(main)
