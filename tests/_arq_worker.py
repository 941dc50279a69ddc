"""An arq worker that uses one AsyncOptimizely through arq's own startup and shutdown hooks.

arq calls ``on_startup`` in the worker's main task and ``on_shutdown`` from ``Worker.close()``, a different
task (after the main task ended, or was cancelled by SIGTERM): the pattern ``start()`` / ``close()`` serves.
Run by tests/test_frameworks_arq.py as ``python -m arq tests._arq_worker.WorkerSettings`` with the redis
port, the events sink URL and the datafile path in the environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

from arq.connections import RedisSettings

from optimizely_async import AsyncOptimizely


async def startup(ctx: dict[str, Any]) -> None:
    with open(os.environ["OPTIMIZELY_DATAFILE"]) as file:
        datafile = json.load(file)
    client = AsyncOptimizely(datafile=datafile, event_endpoint=os.environ["SINK_URL"], flush_interval=60)
    await client.start()
    ctx["optimizely"] = client


async def shutdown(ctx: dict[str, Any]) -> None:
    report = await ctx["optimizely"].close()
    print(f"close report: delivered={report.delivered} undelivered={report.undelivered}", flush=True)


async def purchase(ctx: dict[str, Any], user_id: str) -> bool:
    client: AsyncOptimizely = ctx["optimizely"]
    await client.track("buy", user_id)
    return await client.is_feature_enabled("flag", user_id)


class WorkerSettings:
    functions = [purchase]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings(host="127.0.0.1", port=int(os.environ.get("REDIS_PORT", "6379")))
