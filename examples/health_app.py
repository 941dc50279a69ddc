"""A ``/health`` endpoint that reads ``client.stats()``: is the client running, is the datafile fresh, are
events getting out?

Run it from the repository root::

    OPTIMIZELY_SDK_KEY=... uvicorn examples.health_app:app
    curl -i localhost:8000/health

It answers 200 with the figures while the client is healthy, 503 (same body) when it is not: the client is
not running, no datafile is loaded, the poller has failed ``MAX_POLL_FAILURES`` times in a row, or events
were dropped since the last check. ``stats()`` is a frozen snapshot and cheap (no I/O), so a load balancer
may poll it often.

Configuration: ``OPTIMIZELY_SDK_KEY`` and/or ``OPTIMIZELY_DATAFILE`` (a path), and
``OPTIMIZELY_EVENT_ENDPOINT``, as in the other examples.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from optimizely_async import AsyncOptimizely, ClientStats

#: Consecutive failed datafile fetches after which the app reports itself unhealthy.
MAX_POLL_FAILURES = 3


def client_from_env() -> AsyncOptimizely:
    path = os.environ.get("OPTIMIZELY_DATAFILE")
    return AsyncOptimizely(
        Path(path).read_text(encoding="utf-8") if path else None,
        os.environ.get("OPTIMIZELY_SDK_KEY") or None,
        event_endpoint=os.environ.get("OPTIMIZELY_EVENT_ENDPOINT") or None,
    )


def health(stats: ClientStats, dropped_before: int) -> tuple[bool, dict[str, Any]]:
    """Judge one stats snapshot; returns (healthy, the JSON body)."""
    polling = stats.polling
    dropped = sum(stats.dropped.values()) + stats.undelivered
    problems = []
    if stats.state != "open":
        problems.append(f"client is {stats.state}")
    if stats.revision is None:
        problems.append("no datafile loaded")
    if polling is not None and polling.consecutive_failures >= MAX_POLL_FAILURES:
        problems.append(f"datafile polling failed {polling.consecutive_failures} times in a row")
    if dropped > dropped_before:
        problems.append(f"{dropped - dropped_before} events dropped since the last check")
    body: dict[str, Any] = {
        "healthy": not problems,
        "problems": problems,
        "state": stats.state,
        "revision": stats.revision,
        "events": {
            "queued": stats.queued,
            "in_flight": stats.in_flight,
            "delivered": stats.delivered,
            "dropped": dict(stats.dropped),
            "undelivered": stats.undelivered,
        },
        "listeners": {"queued": stats.listeners.queued, "overflowed": stats.listeners.overflowed},
    }
    if polling is not None:
        body["polling"] = {
            "revision": polling.revision,
            "consecutive_failures": polling.consecutive_failures,
            "last_error": polling.last_error,  # secrets are redacted by the SDK
            "seconds_since_last_success": (
                None if polling.last_success is None else round(time.time() - polling.last_success, 1)
            ),
        }
    return not problems, body


def create_app(client_factory: Callable[[], AsyncOptimizely] = client_from_env) -> Starlette:
    async def health_endpoint(request: Request) -> JSONResponse:
        client: AsyncOptimizely = request.app.state.optimizely
        stats = client.stats()
        healthy, body = health(stats, request.app.state.dropped_seen)
        request.app.state.dropped_seen = sum(stats.dropped.values()) + stats.undelivered
        return JSONResponse(body, status_code=200 if healthy else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client_factory() as client:
            app.state.optimizely = client
            app.state.dropped_seen = 0
            yield

    return Starlette(routes=[Route("/health", health_endpoint)], lifespan=lifespan)


app = create_app()
