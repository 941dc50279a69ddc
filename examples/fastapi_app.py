"""optimizely-async in a FastAPI app: one client per process, opened and closed by the app's lifespan.

Run it from the repository root::

    uvicorn examples.fastapi_app:app

    curl localhost:8000/variation/alice?country=US
    curl localhost:8000/flags/alice
    curl -X POST localhost:8000/purchase -H 'content-type: application/json' \\
         -d '{"user_id": "alice", "revenue": 1999}'
    curl localhost:8000/stats

Configuration (environment variables):

* ``OPTIMIZELY_SDK_KEY``: poll this SDK key's datafile from the Optimizely CDN.
* ``OPTIMIZELY_DATAFILE``: the path of a datafile JSON to use (with an SDK key too: served until the first poll).
* ``OPTIMIZELY_EVENT_ENDPOINT``: where events go (default: Optimizely's events API for the datafile's region).
* ``OPTIMIZELY_EXPERIMENT_KEY``: the experiment ``/variation`` activates (default ``checkout_button_color``).

With neither an SDK key nor a datafile, the app uses the SDK's bundled example datafile and, unless an event
endpoint is set, logs its events instead of sending them to Optimizely.

Entering the client in the lifespan starts its background event queue; leaving it (at shutdown) stops taking
events and delivers everything still queued before the process exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, status
from pydantic import BaseModel, Field

from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest

log = logging.getLogger("examples.fastapi_app")

DEFAULT_EXPERIMENT_KEY = "checkout_button_color"
PURCHASE_EVENT_KEY = "purchase"
#: How long startup waits for the first datafile when polling an SDK key.
READY_TIMEOUT = 10.0


class LogDispatcher:
    """Logs each event batch instead of sending it (for the bundled demo datafile: its account is not real)."""

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        log.info("Would send %d event(s) to %s", request.event_count, request.url)
        return DispatchResult(delivered=True, status=204)


def client_from_env() -> AsyncOptimizely:
    """Build the client from the ``OPTIMIZELY_*`` environment variables (see the module docstring)."""
    sdk_key = os.environ.get("OPTIMIZELY_SDK_KEY") or None
    datafile_path = os.environ.get("OPTIMIZELY_DATAFILE") or None
    event_endpoint = os.environ.get("OPTIMIZELY_EVENT_ENDPOINT") or None
    if datafile_path is not None:
        datafile: str | None = Path(datafile_path).read_text(encoding="utf-8")
    elif sdk_key is None:
        datafile = resources.files("optimizely_async").joinpath("example_datafile.json").read_text("utf-8")
        if event_endpoint is None:
            log.warning("No OPTIMIZELY_SDK_KEY or OPTIMIZELY_DATAFILE: demo datafile, events are only logged.")
            return AsyncOptimizely(datafile, event_dispatcher=LogDispatcher())
    else:
        datafile = None
    return AsyncOptimizely(datafile, sdk_key, event_endpoint=event_endpoint)


# ---------------------------------------------------------------------------------------------- handlers


def get_client(request: Request) -> AsyncOptimizely:
    client: AsyncOptimizely = request.app.state.optimizely
    return client


Client = Annotated[AsyncOptimizely, Depends(get_client)]


def query_attributes(request: Request) -> dict[str, Any]:
    """Query parameters become (string) user attributes: ``/flags/alice?country=US``."""
    return dict(request.query_params)


Attributes = Annotated[dict[str, Any], Depends(query_attributes)]


class Purchase(BaseModel):
    user_id: str = Field(min_length=1)
    revenue: int = Field(ge=0, description="in cents")
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)


router = APIRouter()


@router.get("/variation/{user_id}")
async def variation(user_id: str, request: Request, client: Client, attributes: Attributes) -> dict[str, Any]:
    """Activate the experiment for the user (sends an impression) and return the variation, or null."""
    experiment_key: str = request.app.state.experiment_key
    variation_key = await client.activate(experiment_key, user_id, attributes)
    return {"user_id": user_id, "experiment": experiment_key, "variation": variation_key}


@router.get("/flags/{user_id}")
async def flags(user_id: str, client: Client, attributes: Attributes) -> dict[str, Any]:
    """Decide every flag for the user (flag decisions send impressions as the datafile asks)."""
    user = client.create_user_context(user_id, attributes)
    if user is None:  # an invalid user id or attributes (already logged)
        return {"user_id": user_id, "flags": {}}
    decisions = await user.decide_all()
    return {
        "user_id": user_id,
        "flags": {
            key: {"enabled": d.enabled, "variation_key": d.variation_key, "variables": d.variables}
            for key, d in decisions.items()
        },
    }


@router.post("/purchase", status_code=status.HTTP_202_ACCEPTED)
async def purchase(body: Purchase, client: Client) -> dict[str, Any]:
    """Track a purchase conversion; it is queued and sent in the background (never blocks on the network)."""
    await client.track(PURCHASE_EVENT_KEY, body.user_id, dict(body.attributes), {"revenue": body.revenue})
    return {"queued": True}


@router.get("/stats")
async def stats(client: Client) -> dict[str, Any]:
    """The event queue's counters: submitted, queued, in flight, delivered, dropped by reason ..."""
    return dataclasses.asdict(client.stats())


# ---------------------------------------------------------------------------------------------- the app


def create_app(
    client_factory: Callable[[], AsyncOptimizely] = client_from_env,
    *,
    experiment_key: str | None = None,
) -> FastAPI:
    """The app; ``client_factory`` is called at startup (tests pass one with their own options)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with client_factory() as client:
            if not await client.wait_until_ready(timeout=READY_TIMEOUT):
                log.warning("No datafile yet: decisions return defaults until one arrives.")
            app.state.optimizely = client
            yield
            # Shutdown: stop taking events and deliver everything queued (bounded by close_timeout). Leaving the
            # block would do this too; calling close() here gets the report. Leaving then stops the task group.
            report = await client.close()
            log.info("Optimizely client closed: %d event(s) delivered, dropped: %s", report.delivered, report.dropped)

    app = FastAPI(title="optimizely-async FastAPI example", lifespan=lifespan)
    app.state.experiment_key = experiment_key or os.environ.get("OPTIMIZELY_EXPERIMENT_KEY") or DEFAULT_EXPERIMENT_KEY
    app.include_router(router)
    return app


app = create_app()
