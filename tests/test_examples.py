"""The example apps end to end: a real server on 127.0.0.1, real HTTP requests, events in a real sink.

Each app runs on an ephemeral port (uvicorn for FastAPI, aiohttp's AppRunner + TCPSite), its client sends to
the local sink from ``_sink_server``, and the test checks, after the app has shut down, that every impression
and conversion the requests caused reached the sink exactly once, with the right keys, users and revenue.
The queue is set up so that some events can only leave at shutdown: the lifespan / cleanup_ctx exit must
drain them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from aiohttp import web

from _sink_server import SinkServer, serve_sink
from optimizely_async import AsyncOptimizely

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: uvicorn and aiohttp run on asyncio, not on trio (the SDK itself is tested on both)."""
    return "asyncio"


def _load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (``examples`` is not an installed package)."""
    module_name = f"_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic / FastAPI resolve the module's annotations through it
    spec.loader.exec_module(module)
    return module


fastapi_app = _load_example("fastapi_app")
aiohttp_app = _load_example("aiohttp_app")

# ------------------------------------------------------------------------------------------ the datafile

ACCOUNT_ID, PROJECT_ID, REVISION = "1001", "2001", "7"
PLAN_ATTRIBUTE_ID = "7001"
PURCHASE_EVENT_ID = "8001"
EXPERIMENT_KEY, EXPERIMENT_ID = "checkout_test", "9001"
VARIATION_IDS = {"control": "9101", "treatment": "9102"}
FLAG_KEY, ROLLOUT_RULE_KEY, ROLLOUT_RULE_ID, ROLLOUT_VARIATION_ID = "new_checkout", "everyone_else", "5101", "5201"


def _rule(rule_id: str, key: str, layer_id: str, variations: list[dict[str, Any]]) -> dict[str, Any]:
    step = 10_000 // len(variations)
    return {
        "id": rule_id,
        "key": key,
        "status": "Running",
        "layerId": layer_id,
        "audienceIds": [],
        "forcedVariations": {},
        "variations": variations,
        "trafficAllocation": [
            {"entityId": v["id"], "endOfRange": 10_000 if i == len(variations) - 1 else step * (i + 1)}
            for i, v in enumerate(variations)
        ],
    }


DATAFILE: dict[str, Any] = {
    "version": "4",
    "accountId": ACCOUNT_ID,
    "projectId": PROJECT_ID,
    "revision": REVISION,
    "anonymizeIP": True,
    "botFiltering": False,
    "sendFlagDecisions": True,  # flag decisions (here: a rollout) send impressions too
    "attributes": [{"id": PLAN_ATTRIBUTE_ID, "key": "plan"}],
    "audiences": [],
    "typedAudiences": [],
    "groups": [],
    "events": [{"id": PURCHASE_EVENT_ID, "key": "purchase", "experimentIds": [EXPERIMENT_ID]}],
    "experiments": [
        _rule(
            EXPERIMENT_ID,
            EXPERIMENT_KEY,
            "9201",
            [{"id": vid, "key": key, "variables": []} for key, vid in VARIATION_IDS.items()],
        )
    ],
    "featureFlags": [
        {
            "id": "6001",
            "key": FLAG_KEY,
            "rolloutId": "5001",
            "experimentIds": [],
            "variables": [{"id": "6101", "key": "button_text", "type": "string", "defaultValue": "Checkout"}],
        }
    ],
    "rollouts": [
        {
            "id": "5001",
            "experiments": [
                _rule(
                    ROLLOUT_RULE_ID,
                    ROLLOUT_RULE_KEY,
                    "5001",
                    [
                        {
                            "id": ROLLOUT_VARIATION_ID,
                            "key": "on",
                            "featureEnabled": True,
                            "variables": [{"id": "6101", "value": "Buy now"}],
                        }
                    ],
                )
            ],
        }
    ],
}

PLAN = {"entity_id": PLAN_ATTRIBUTE_ID, "key": "plan", "type": "custom", "value": "pro"}  # a visitor attribute

USERS = [f"user-{i}" for i in range(7)]
REVENUE = {user: 1000 + 111 * i for i, user in enumerate(USERS)}  # cents
BATCH_SIZE = 4
EXPECTED_EVENTS = 3 * len(USERS)  # per user: an experiment impression, a flag impression, a conversion
assert EXPECTED_EVENTS % BATCH_SIZE, "some events must be left for the shutdown drain"


class ClientFactory:
    """Builds the app's client against the sink, batching so that only shutdown sends the last events."""

    def __init__(self, sink: SinkServer) -> None:
        self.sink = sink
        self.clients: list[AsyncOptimizely] = []

    def __call__(self) -> AsyncOptimizely:
        client = AsyncOptimizely(
            DATAFILE,
            event_endpoint=self.sink.url,
            batch_size=BATCH_SIZE,
            flush_interval=600.0,  # never reached: full batches go at once, the rest at shutdown
            close_timeout=5.0,
        )
        self.clients.append(client)
        return client


# ------------------------------------------------------------------------------------------ servers


@asynccontextmanager
async def serve_fastapi(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn (lifespan on) on an ephemeral port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning"))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                with anyio.fail_after(5):
                    while not server.started:
                        await anyio.sleep(0.01)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True  # uvicorn stops serving, then runs the lifespan exit
    finally:
        sock.close()


@asynccontextmanager
async def serve_aiohttp(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` with AppRunner + TCPSite on an ephemeral port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup_ctx up to its yield: the client is open
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()  # resumes the cleanup_ctx: the client drains and closes


# ------------------------------------------------------------------------------------------ the scenario

FRAMEWORKS: dict[str, tuple[Callable[..., Any], Callable[[Any], Any], int]] = {
    # name: (app factory, server, status of an invalid purchase body)
    "fastapi": (fastapi_app.create_app, serve_fastapi, 422),
    "aiohttp": (aiohttp_app.make_app, serve_aiohttp, 400),
}


async def _visit(http: httpx.AsyncClient, user: str, variations: dict[str, str]) -> None:
    """One user's journey: see the experiment, read the flags, buy something."""
    response = await http.get(f"/variation/{user}", params={"plan": "pro"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user
    assert body["experiment"] == EXPERIMENT_KEY
    assert body["variation"] in VARIATION_IDS
    variations[user] = body["variation"]

    response = await http.get(f"/flags/{user}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user_id": user,
        "flags": {FLAG_KEY: {"enabled": True, "variation_key": "on", "variables": {"button_text": "Buy now"}}},
    }

    response = await http.post(
        "/purchase", json={"user_id": user, "revenue": REVENUE[user], "attributes": {"plan": "pro"}}
    )
    assert response.status_code == 202, response.text


def _visitors(sink: SinkServer) -> list[dict[str, Any]]:
    return [visitor for r in sink.received for visitor in r.payload["visitors"]]


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
async def test_app_delivers_every_event_by_shutdown(framework: str, caplog: pytest.LogCaptureFixture) -> None:
    make_app, serve, invalid_status = FRAMEWORKS[framework]
    caplog.set_level(logging.INFO, logger="examples")
    variations: dict[str, str] = {}
    with anyio.fail_after(10):
        async with serve_sink() as sink:
            factory = ClientFactory(sink)
            app = make_app(factory, experiment_key=EXPERIMENT_KEY)
            async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
                async with anyio.create_task_group() as tg:  # users in parallel, one shared SDK client
                    for user in USERS:
                        tg.start_soon(_visit, http, user, variations)

                # A bad request tracks nothing.
                response = await http.post("/purchase", json={"user_id": "", "revenue": 5})
                assert response.status_code == invalid_status, response.text

                stats = (await http.get("/stats")).json()
                assert stats["submitted"] == EXPECTED_EVENTS
                assert stats["dropped"] == {}
                # The partial batch can only leave at shutdown (flush_interval is far away).
                assert stats["delivered"] < EXPECTED_EVENTS
                assert len(_visitors(sink)) < EXPECTED_EVENTS
            # The server is down: its lifespan / cleanup_ctx closed the client, which drained the queue.

    (client,) = factory.clients
    report = await client.close()  # idempotent: the report of the shutdown's close
    assert report.delivered == EXPECTED_EVENTS
    assert report.dropped == {}
    assert report.undelivered == 0
    assert not report.timed_out
    closed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Optimizely client closed")]
    assert closed == [f"Optimizely client closed: {EXPECTED_EVENTS} event(s) delivered, dropped: {{}}"]

    assert sink.received, "no event request reached the sink"
    for request in sink.received:
        assert (request.method, request.path) == ("POST", "/v1/events")
        assert request.reply.status == 200
        payload = request.payload
        assert (payload["account_id"], payload["project_id"], payload["revision"]) == (ACCOUNT_ID, PROJECT_ID, REVISION)
        assert len(payload["visitors"]) <= BATCH_SIZE

    visitors = _visitors(sink)
    assert len(visitors) == EXPECTED_EVENTS
    assert len(set(sink.visitor_uuids())) == EXPECTED_EVENTS  # nothing sent twice

    experiment_impressions: dict[str, str] = {}
    flag_impressions: Counter[str] = Counter()
    conversions: dict[str, dict[str, Any]] = {}
    for visitor in visitors:
        user = visitor["visitor_id"]
        (snapshot,) = visitor["snapshots"]
        (event,) = snapshot["events"]
        if event["key"] == "campaign_activated":
            (decision,) = snapshot["decisions"]
            metadata = decision["metadata"]
            if metadata["rule_type"] == "experiment":
                assert user not in experiment_impressions
                assert decision["experiment_id"] == EXPERIMENT_ID
                assert metadata["rule_key"] == EXPERIMENT_KEY
                assert decision["variation_id"] == VARIATION_IDS[metadata["variation_key"]]
                assert PLAN in visitor["attributes"]  # ?plan=pro reached the impression
                experiment_impressions[user] = metadata["variation_key"]
            else:
                assert metadata == {
                    "flag_key": FLAG_KEY,
                    "rule_key": ROLLOUT_RULE_KEY,
                    "rule_type": "rollout",
                    "variation_key": "on",
                    "enabled": True,
                }
                assert decision["variation_id"] == ROLLOUT_VARIATION_ID
                flag_impressions[user] += 1
        else:
            assert user not in conversions
            conversions[user] = {**event, "attributes": visitor["attributes"]}

    assert experiment_impressions == variations  # the variation each response showed is the one reported
    assert flag_impressions == Counter(USERS)
    assert set(conversions) == set(USERS)
    for user, event in conversions.items():
        assert event["key"] == "purchase"
        assert event["entity_id"] == PURCHASE_EVENT_ID
        assert event["revenue"] == REVENUE[user]
        assert event["tags"] == {"revenue": REVENUE[user]}
        assert PLAN in event["attributes"]


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("module", [fastapi_app, aiohttp_app], ids=["fastapi", "aiohttp"])
async def test_client_from_env_uses_datafile_and_endpoint(
    module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datafile = tmp_path / "datafile.json"
    datafile.write_text(json.dumps(DATAFILE), encoding="utf-8")
    with anyio.fail_after(10):
        async with serve_sink() as sink:
            monkeypatch.delenv("OPTIMIZELY_SDK_KEY", raising=False)
            monkeypatch.setenv("OPTIMIZELY_DATAFILE", str(datafile))
            monkeypatch.setenv("OPTIMIZELY_EVENT_ENDPOINT", sink.url)
            client = module.client_from_env()
            async with client:
                assert client.config is not None and client.config.revision == REVISION
                await client.track("purchase", "env-user", None, {"revenue": 42})
    (request,) = sink.received
    (visitor,) = request.payload["visitors"]
    assert visitor["visitor_id"] == "env-user"
    assert visitor["snapshots"][0]["events"][0]["revenue"] == 42


@pytest.mark.parametrize("module", [fastapi_app, aiohttp_app], ids=["fastapi", "aiohttp"])
async def test_client_from_env_without_config_logs_demo_events(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("OPTIMIZELY_SDK_KEY", "OPTIMIZELY_DATAFILE", "OPTIMIZELY_EVENT_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.INFO, logger=module.log.name)
    with anyio.fail_after(10):
        client = module.client_from_env()
        async with client:
            assert client.config is not None  # the bundled example datafile
            assert client.config.events_by_key.get("purchase") is not None
            await client.track("purchase", "demo-user", None, {"revenue": 1})
    report = await client.close()
    assert report.delivered == 1  # to the logging dispatcher: nothing went to Optimizely's endpoint
    assert any(r.getMessage().startswith("Would send 1 event(s)") for r in caplog.records)
