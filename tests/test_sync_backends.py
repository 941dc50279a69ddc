"""SyncOptimizely does not care what runs in its caller's thread: nothing, an asyncio task, a trio task (run
by trio itself or through anyio, which also sets sniffio's context variable).

Its own loop thread runs asyncio whatever the caller runs. Before the fix, a client built inside a trio task
made its poller's lock a trio lock (the poller then failed with "must be called from async context"), and
every blocking call made from a trio task under anyio ran on the loop thread in a copy of the caller's
context, where anyio took the asyncio loop for trio.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import sniffio
import trio

from _datafile_server import DatafileServer
from _sync_support import EVENT_KEY, ThreadSink, assert_each_once, datafile, sink_in_thread
from optimizely_async import SyncOptimizely

_caller_mark: contextvars.ContextVar[str] = contextvars.ContextVar("caller_mark", default="unset")


@pytest.fixture
def sink() -> Iterator[ThreadSink]:
    with sink_in_thread() as running:
        yield running


@pytest.fixture
def server() -> Iterator[DatafileServer]:
    with DatafileServer() as running:
        running.set_datafile(datafile())
        yield running


def _build(server: DatafileServer, sink: ThreadSink) -> SyncOptimizely:
    return SyncOptimizely(
        sdk_key="k",
        datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
        update_interval=0.1,
        event_endpoint=sink.url,
        batch_size=1,
    )


def _eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def _loop_side_library(client: SyncOptimizely) -> tuple[str, str]:
    """(sniffio's answer, the caller's context variable) as seen by a coroutine the client runs on its loop."""

    async def probe() -> tuple[str, str]:
        await anyio.sleep(0)  # anyio itself must work there
        return sniffio.current_async_library(), _caller_mark.get()

    return client._runner.call(probe, 10.0)


def _exercise(client: SyncOptimizely, server: DatafileServer, sink: ThreadSink, user: str) -> None:
    """Decide, poll an updated datafile, track, flush, close: everything works and every event arrives once."""
    _caller_mark.set("caller")
    try:
        assert client.wait_until_ready(20)
        assert client.activate("exp", user) == "on"
        assert _loop_side_library(client) == ("asyncio", "unset")
        server.set_datafile(datafile(revision="8"))
        _eventually(lambda: client.config is not None and client.config.revision == "8")
        polling = client._live()._source
        assert polling is not None and polling.stats.failures == 0, polling.stats
        context = client.create_user_context(user)
        assert context is not None and context.decide("flag").variation_key == "on"
        client.track(EVENT_KEY, user)
        client.flush(20)
    finally:
        report = client.close()
    assert report.delivered == 3 and report.undelivered == 0 and not report.dropped, report
    events = sink.events()
    assert len({uuid for _, _, uuid in events}) == len(events), "an event arrived twice"
    mine = sorted(key for visitor, key, _ in events if visitor == user)
    assert mine == sorted(["campaign_activated"] * 2 + [EVENT_KEY])


def test_built_and_used_in_a_trio_task(server: DatafileServer, sink: ThreadSink) -> None:
    async def main() -> None:
        _exercise(_build(server, sink), server, sink, "trio-user")

    trio.run(main)


def test_built_and_used_in_a_trio_task_under_anyio(server: DatafileServer, sink: ThreadSink) -> None:
    async def main() -> None:
        assert sniffio.current_async_library_cvar.get() == "trio"  # what anyio.run sets, and what leaked
        _exercise(_build(server, sink), server, sink, "anyio-trio-user")

    anyio.run(main, backend="trio")


def test_built_and_used_in_an_asyncio_task(server: DatafileServer, sink: ThreadSink) -> None:
    async def main() -> None:
        _exercise(_build(server, sink), server, sink, "asyncio-user")

    asyncio.run(main())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_built_outside_then_used_in_a_task(server: DatafileServer, sink: ThreadSink, backend: str) -> None:
    client = _build(server, sink)

    async def main() -> None:
        _exercise(client, server, sink, f"outside-{backend}")

    anyio.run(main, backend=backend)


def test_calls_from_an_asyncio_loop_in_another_thread(server: DatafileServer, sink: ThreadSink) -> None:
    """Blocking calls made from a thread that runs its own asyncio loop (and a trio loop in a third thread)."""
    client = _build(server, sink)
    seen: dict[str, Any] = {}

    def in_thread(name: str, backend: str) -> None:
        async def main() -> None:
            _caller_mark.set(name)
            seen[name] = _loop_side_library(client)
            assert client.wait_until_ready(20)
            client.track(EVENT_KEY, name)
            client.flush(20)

        try:
            anyio.run(main, backend=backend)
        except BaseException as exc:  # reported below
            seen[name] = exc

    threads = [threading.Thread(target=in_thread, args=(f"t-{b}", b)) for b in ("asyncio", "trio")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    report = client.close()
    assert seen == {"t-asyncio": ("asyncio", "unset"), "t-trio": ("asyncio", "unset")}
    assert report.delivered == 2, report
    assert_each_once(sink.events(), {("t-asyncio", EVENT_KEY), ("t-trio", EVENT_KEY)})
