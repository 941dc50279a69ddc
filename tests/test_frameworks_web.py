"""The client's lifecycle in real web frameworks on real servers (127.0.0.1, ephemeral ports):

* aiohttp ``on_startup`` / ``on_cleanup`` (``start()`` / ``close()``), with the cleanup in another task;
* Starlette's lifespan, with ``async with client`` and with ``start()`` / ``close()``;
* FastAPI's ``on_startup`` / ``on_shutdown`` (Starlette 1.x removed these parameters; FastAPI keeps them);
* the ``/health`` example reading ``client.stats()``.

uvicorn and aiohttp run on asyncio only.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from _datafile_server import DatafileServer, Status
from _lifecycle_kit import datafile, visitors
from _sink_server import SinkServer, serve_sink
from optimizely_async import AsyncOptimizely

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_client(sink: SinkServer) -> AsyncOptimizely:
    return AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)


async def buy(request: Request) -> JSONResponse:
    client: AsyncOptimizely = request.app.state.optimizely
    await client.track("buy", request.path_params["user"])
    return JSONResponse({"ok": True})


@asynccontextmanager
async def serve_uvicorn(app: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning"))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                with anyio.fail_after(10):
                    while not server.started:
                        await anyio.sleep(0.01)
                yield f"http://127.0.0.1:{port}", server
            finally:
                server.should_exit = True
    finally:
        sock.close()


async def hit(base: str, users: list[str]) -> None:
    async with httpx.AsyncClient() as http:
        for user in users:
            response = await http.post(f"{base}/buy/{user}")
            assert response.status_code == 200


# ---------------------------------------------------------------------------------------------- aiohttp


async def test_aiohttp_on_startup_and_on_cleanup_in_different_tasks() -> None:
    async with serve_sink() as sink:
        client = new_client(sink)
        reports: list[Any] = []

        async def on_startup(app: web.Application) -> None:
            await client.start()

        async def on_cleanup(app: web.Application) -> None:
            reports.append(await client.close())

        async def handle(request: web.Request) -> web.Response:
            await client.track("buy", request.match_info["user"])
            return web.json_response({"ok": True})

        app = web.Application()
        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
        app.router.add_post("/buy/{user}", handle)
        runner = web.AppRunner(app)

        async with anyio.create_task_group() as tg:  # setup in one task ...
            tg.start_soon(runner.setup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await hit(f"http://127.0.0.1:{port}", [f"u{i}" for i in range(5)])
        assert visitors(sink) == []  # queued (flush_interval=60)
        async with anyio.create_task_group() as tg:  # ... cleanup in another
            tg.start_soon(runner.cleanup)
        assert reports[0].delivered == 5
        assert visitors(sink) == [f"u{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------------- Starlette


@pytest.mark.parametrize("style", ["async_with", "start_close"])
async def test_starlette_lifespan(style: str) -> None:
    async with serve_sink() as sink:
        client = new_client(sink)

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            app.state.optimizely = client
            if style == "async_with":
                async with client:
                    yield
            else:
                await client.start()
                try:
                    yield
                finally:
                    await client.close()

        app = Starlette(routes=[Route("/buy/{user}", buy, methods=["POST"])], lifespan=lifespan)
        async with serve_uvicorn(app) as (base, _):
            await hit(base, ["a", "b", "c"])
            assert client.stats().state == "open"
        assert client.stats().state == "closed"
        assert visitors(sink) == ["a", "b", "c"]


async def test_fastapi_on_startup_and_on_shutdown() -> None:
    async with serve_sink() as sink:
        client = new_client(sink)
        app = FastAPI(on_startup=[client.start], on_shutdown=[client.close])

        @app.post("/buy/{user}")
        async def buy_endpoint(user: str) -> dict[str, bool]:
            await client.track("buy", user)
            return {"ok": True}

        async with serve_uvicorn(app) as (base, _):
            await hit(base, ["x", "y"])
        assert client.stats().state == "closed"
        assert visitors(sink) == ["x", "y"]


# ---------------------------------------------------------------------------------------------- /health


def load_health_example() -> Any:
    spec = importlib.util.spec_from_file_location("_example_health_app", EXAMPLES / "health_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_health_example_reads_stats() -> None:
    health_app = load_health_example()
    with DatafileServer() as server:
        server.set_datafile(datafile("5"))
        factory: Callable[[], AsyncOptimizely] = lambda: AsyncOptimizely(  # noqa: E731
            sdk_key="SdkKeyHealth0001",
            datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
            update_interval=0.05,
            event_dispatcher=None,
        )
        async with serve_uvicorn(health_app.create_app(factory)) as (base, _), httpx.AsyncClient() as http:
            with anyio.fail_after(10):
                while (response := await http.get(f"{base}/health")).status_code != 200:
                    await anyio.sleep(0.02)
            body = response.json()
            assert body["healthy"] and body["revision"] == "5" and body["state"] == "open"
            assert body["polling"]["consecutive_failures"] == 0
            assert body["polling"]["seconds_since_last_success"] is not None

            server.enqueue(*[Status(500)] * 50)  # the datafile endpoint breaks
            with anyio.fail_after(10):
                while (response := await http.get(f"{base}/health")).status_code != 503:
                    await anyio.sleep(0.02)
            body = response.json()
            assert body["polling"]["consecutive_failures"] >= health_app.MAX_POLL_FAILURES
            assert "HTTP 500" in body["polling"]["last_error"]
            assert "SdkKeyHealth0001" not in response.text
            assert body["revision"] == "5"  # the last good datafile is still in use
