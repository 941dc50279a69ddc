"""optimizely-async in an aiohttp app: one client per process, opened and closed by a ``cleanup_ctx``.

Run it::

    python examples/aiohttp_app.py            # listens on 127.0.0.1:8080 (PORT to change)

    curl localhost:8080/variation/alice?country=US
    curl localhost:8080/flags/alice
    curl -X POST localhost:8080/purchase -H 'content-type: application/json' \\
         -d '{"user_id": "alice", "revenue": 1999}'
    curl localhost:8080/stats

Configuration (environment variables):

* ``OPTIMIZELY_SDK_KEY``: poll this SDK key's datafile from the Optimizely CDN.
* ``OPTIMIZELY_DATAFILE``: the path of a datafile JSON to use (with an SDK key too: served until the first poll).
* ``OPTIMIZELY_EVENT_ENDPOINT``: where events go (default: Optimizely's events API for the datafile's region).
* ``OPTIMIZELY_EXPERIMENT_KEY``: the experiment ``/variation`` activates (default ``checkout_button_color``).

With neither an SDK key nor a datafile, the app uses the SDK's bundled example datafile and, unless an event
endpoint is set, logs its events instead of sending them to Optimizely.

aiohttp runs a ``cleanup_ctx`` generator up to its ``yield`` at startup and resumes it at cleanup, both in the
same task, so the client's ``async with`` block (and the task group it owns) spans the app's whole life.
Leaving it stops taking events and delivers everything still queued before the process exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest

log = logging.getLogger("examples.aiohttp_app")

DEFAULT_EXPERIMENT_KEY = "checkout_button_color"
PURCHASE_EVENT_KEY = "purchase"
#: How long startup waits for the first datafile when polling an SDK key.
READY_TIMEOUT = 10.0

CLIENT_KEY = web.AppKey("optimizely", AsyncOptimizely)
EXPERIMENT_KEY = web.AppKey("experiment_key", str)


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

routes = web.RouteTableDef()


def query_attributes(request: web.Request) -> dict[str, Any]:
    """Query parameters become (string) user attributes: ``/flags/alice?country=US``."""
    return dict(request.query)


@routes.get("/variation/{user_id}")
async def variation(request: web.Request) -> web.Response:
    """Activate the experiment for the user (sends an impression) and return the variation, or null."""
    client = request.app[CLIENT_KEY]
    experiment_key = request.app[EXPERIMENT_KEY]
    user_id = request.match_info["user_id"]
    variation_key = await client.activate(experiment_key, user_id, query_attributes(request))
    return web.json_response({"user_id": user_id, "experiment": experiment_key, "variation": variation_key})


@routes.get("/flags/{user_id}")
async def flags(request: web.Request) -> web.Response:
    """Decide every flag for the user (flag decisions send impressions as the datafile asks)."""
    user_id = request.match_info["user_id"]
    user = request.app[CLIENT_KEY].create_user_context(user_id, query_attributes(request))
    if user is None:  # an invalid user id or attributes (already logged)
        return web.json_response({"user_id": user_id, "flags": {}})
    decisions = await user.decide_all()
    return web.json_response(
        {
            "user_id": user_id,
            "flags": {
                key: {"enabled": d.enabled, "variation_key": d.variation_key, "variables": d.variables}
                for key, d in decisions.items()
            },
        }
    )


def _purchase_error(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("user_id"), str) or not body["user_id"]:
        return "user_id must be a non-empty string"
    revenue = body.get("revenue")
    if not isinstance(revenue, int) or isinstance(revenue, bool) or revenue < 0:
        return "revenue must be a whole number of cents >= 0"
    if not isinstance(body.get("attributes", {}), dict):
        return "attributes must be an object"
    return None


@routes.post("/purchase")
async def purchase(request: web.Request) -> web.Response:
    """Track a purchase conversion; it is queued and sent in the background (never blocks on the network)."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    error = _purchase_error(body)
    if error is not None:
        return web.json_response({"error": error}, status=400)
    await request.app[CLIENT_KEY].track(
        PURCHASE_EVENT_KEY, body["user_id"], body.get("attributes") or {}, {"revenue": body["revenue"]}
    )
    return web.json_response({"queued": True}, status=202)


@routes.get("/stats")
async def stats(request: web.Request) -> web.Response:
    """The event queue's counters: submitted, queued, in flight, delivered, dropped by reason ..."""
    return web.json_response(dataclasses.asdict(request.app[CLIENT_KEY].stats()))


# ---------------------------------------------------------------------------------------------- the app


def make_app(
    client_factory: Callable[[], AsyncOptimizely] = client_from_env,
    *,
    experiment_key: str | None = None,
) -> web.Application:
    """The app; ``client_factory`` is called at startup (tests pass one with their own options)."""

    async def optimizely_ctx(app: web.Application) -> AsyncIterator[None]:
        async with client_factory() as client:
            if not await client.wait_until_ready(timeout=READY_TIMEOUT):
                log.warning("No datafile yet: decisions return defaults until one arrives.")
            app[CLIENT_KEY] = client
            yield
            # Shutdown: stop taking events and deliver everything queued (bounded by close_timeout). Leaving the
            # block would do this too; calling close() here gets the report. Leaving then stops the task group.
            report = await client.close()
            log.info("Optimizely client closed: %d event(s) delivered, dropped: %s", report.delivered, report.dropped)

    app = web.Application()
    app[EXPERIMENT_KEY] = experiment_key or os.environ.get("OPTIMIZELY_EXPERIMENT_KEY") or DEFAULT_EXPERIMENT_KEY
    app.cleanup_ctx.append(optimizely_ctx)
    app.add_routes(routes)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(make_app(), host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8080")))


if __name__ == "__main__":
    main()
