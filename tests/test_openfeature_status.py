"""OptimizelyProvider's status and events follow the client, against a real datafile server on 127.0.0.1:
ERROR while there is no datafile, READY on the first, CONFIGURATION_CHANGED on each new revision, STALE
while polling keeps failing, READY again when it works."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.provider import ProviderStatus

from _datafile_server import DatafileServer, Status
from _of_datafile import datafile
from _sink_server import SinkServer, serve_sink
from optimizely_async import AsyncOptimizely
from optimizely_async.openfeature import OptimizelyProvider

pytestmark = pytest.mark.anyio

PLAN = EvaluationContext("u-plan", {"plan": "gold"})


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.01)


@pytest.fixture
def server() -> Iterator[DatafileServer]:
    with DatafileServer() as srv:
        yield srv


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    async with serve_sink() as srv:
        yield srv


def polling_client(server: DatafileServer, sink: SinkServer) -> AsyncOptimizely:
    return AsyncOptimizely(
        sdk_key="status-key",
        datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
        update_interval=0.2,
        event_endpoint=sink.url,
    )


class Recorder:
    """Provider events a client's handlers saw, in order (handlers may run on any thread)."""

    def __init__(self) -> None:
        self.events: list[tuple[ProviderEvent, EventDetails]] = []
        self._lock = threading.Lock()

    def handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def record(details: EventDetails) -> None:
            with self._lock:
                self.events.append((event, details))

        return record

    def kinds(self) -> list[ProviderEvent]:
        with self._lock:
            return [kind for kind, _ in self.events]


async def test_status_and_events_follow_the_datafile_and_the_poller(server: DatafileServer, sink: SinkServer) -> None:
    async with polling_client(server, sink) as client:
        provider = OptimizelyProvider(client, ready_timeout=0.3, stale_after_failures=2, health_check_interval=0.02)
        domain = f"status-{uuid.uuid4().hex}"
        of = api.get_client(domain)
        recorder = Recorder()
        try:
            # No datafile (the server answers an empty body): initialize gives up after ready_timeout.
            api.set_provider(provider, domain)
            for kind in ProviderEvent:  # (added before, READY would run at once for the no-op provider)
                of.add_handler(kind, recorder.handler(kind))
            await wait_until(lambda: ProviderEvent.PROVIDER_ERROR in recorder.kinds())
            assert of.get_provider_status() is ProviderStatus.ERROR
            details = await of.get_boolean_details_async("of_flag", True, PLAN)
            assert (details.value, details.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)

            server.set_datafile(datafile("1"))
            await wait_until(lambda: ProviderEvent.PROVIDER_READY in recorder.kinds())
            assert of.get_provider_status() is ProviderStatus.READY
            assert await of.get_string_value_async("of_flag", "d", PLAN) == "treat-v"

            server.set_datafile(datafile("2", value="second"))
            await wait_until(lambda: ProviderEvent.PROVIDER_CONFIGURATION_CHANGED in recorder.kinds())
            assert await of.get_string_value_async("of_flag", "d", PLAN) == "second"
            changed = [d for k, d in recorder.events if k is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
            assert len(changed) == 1 and "2" in (changed[0].message or "")

            server.enqueue(*[Status(500)] * 4)
            await wait_until(lambda: ProviderEvent.PROVIDER_STALE in recorder.kinds())
            assert of.get_provider_status() is ProviderStatus.STALE
            # Still deciding with the last good datafile.
            assert await of.get_string_value_async("of_flag", "d", PLAN) == "second"

            await wait_until(lambda: recorder.kinds().count(ProviderEvent.PROVIDER_READY) == 2)
            assert of.get_provider_status() is ProviderStatus.READY
            assert recorder.kinds() == [
                ProviderEvent.PROVIDER_ERROR,
                ProviderEvent.PROVIDER_READY,
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                ProviderEvent.PROVIDER_STALE,
                ProviderEvent.PROVIDER_READY,
            ]
        finally:
            api.clear_providers()


async def test_ready_at_once_when_the_datafile_came_before_the_provider(
    server: DatafileServer, sink: SinkServer
) -> None:
    server.set_datafile(datafile("5"))
    async with polling_client(server, sink) as client:
        assert await client.wait_until_ready(5)
        provider = OptimizelyProvider(client)
        domain = f"ready-{uuid.uuid4().hex}"
        api.set_provider_and_wait(provider, domain)  # on the loop thread: no wait needed, none made
        try:
            of = api.get_client(domain)
            assert of.get_provider_status() is ProviderStatus.READY
            assert await of.get_boolean_value_async("of_flag", False, PLAN) is True
        finally:
            api.clear_providers()


async def test_initialize_on_the_loop_thread_before_the_datafile_does_not_deadlock(
    server: DatafileServer, sink: SinkServer
) -> None:
    async with polling_client(server, sink) as client:
        provider = OptimizelyProvider(client, ready_timeout=30)
        domain = f"loop-{uuid.uuid4().hex}"
        try:
            with anyio.fail_after(5), pytest.raises(ProviderNotReadyError):
                api.set_provider_and_wait(provider, domain)
            of = api.get_client(domain)
            assert of.get_provider_status() is ProviderStatus.ERROR
            server.set_datafile(datafile("1"))
            await wait_until(lambda: of.get_provider_status() is ProviderStatus.READY)
        finally:
            api.clear_providers()


async def test_a_provider_made_off_the_loop_learns_it_from_the_client(sink: SinkServer) -> None:
    async with AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url) as client:
        provider: OptimizelyProvider = await anyio.to_thread.run_sync(OptimizelyProvider, client)
        first = await anyio.to_thread.run_sync(provider.resolve_boolean_details, "of_flag", False, PLAN)
        assert (first.value, first.error_code) == (True, None)
        assert (await provider.resolve_boolean_details_async("of_flag", False, PLAN)).value is True
        provider.shutdown()


def test_a_provider_made_at_import_time_works_from_worker_threads_only() -> None:
    """Created before any event loop exists (as a module-level provider is), with a static datafile (no
    datafile update ever tells it the loop): once the app enters the client, sync calls from worker threads
    decide and track, and their events reach the sink."""
    with anyio.from_thread.start_blocking_portal() as portal, portal.wrap_async_context_manager(serve_sink()) as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)
        provider = OptimizelyProvider(client)  # no event loop anywhere in this thread
        before = provider.resolve_boolean_details("of_flag", False, PLAN)
        assert (before.value, before.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)
        results: list[Any] = []

        def worker(index: int) -> None:
            context = EvaluationContext(f"w-{index}", {"country": "DE"})
            results.append(provider.resolve_string_details("of_flag", "d", context))
            provider.track("purchase", context)

        async def app() -> None:
            async with client:
                async with anyio.create_task_group() as tg:
                    for index in range(4):
                        tg.start_soon(anyio.to_thread.run_sync, worker, index)
                await client.flush()

        anyio.run(app)
        assert [(r.value, r.error_code) for r in results] == [("de", None)] * 4
        visitors = [v for r in sink.received for v in r.payload["visitors"]]
        kinds = sorted(
            ("event" if v["snapshots"][0]["events"][0].get("key") == "purchase" else "impression") for v in visitors
        )
        assert kinds == ["event"] * 4 + ["impression"] * 4
        assert {v["visitor_id"] for v in visitors} == {f"w-{i}" for i in range(4)}


def test_owned_polling_client_reports_ready_through_set_provider(server: DatafileServer) -> None:
    """No event loop in the test at all: the provider runs its client on its own loop thread."""
    server.set_datafile(datafile("3"))
    provider = OptimizelyProvider(
        sdk_key="owned-key",
        datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
        event_endpoint="http://127.0.0.1:9/v1/events",  # refused: close() gives up after close_timeout
        close_timeout=0.5,
        ready_timeout=5,
    )
    domain = f"owned-{uuid.uuid4().hex}"
    ready = threading.Event()
    of = api.get_client(domain)
    try:
        api.set_provider(provider, domain)
        of.add_handler(ProviderEvent.PROVIDER_READY, lambda details: ready.set())  # at once if READY already
        assert ready.wait(10)
        details: Any = of.get_object_details("of_flag", {}, PLAN)
        assert details.value["value"] == "treat-v" and details.variant == "treat"
    finally:
        api.clear_providers()  # shuts the provider down: closes its client and stops its loop
    provider.client.track("purchase", "after-shutdown")  # the owned client is closed: counted, not sent
    assert provider.client.stats().dropped.get("closed") == 1


def test_sync_calls_after_the_clients_loop_ended_say_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    made: list[OptimizelyProvider] = []

    async def app() -> None:
        async with AsyncOptimizely(datafile=datafile(), event_endpoint="http://127.0.0.1:9/v1/events") as client:
            made.append(OptimizelyProvider(client))

    anyio.run(app)  # the loop is gone once this returns
    details = made[0].resolve_boolean_details("of_flag", False, PLAN)
    assert (details.value, details.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)
    assert "ended" in (details.error_message or "")
    assert not [r for r in caplog.records if r.levelno >= 40]


async def test_a_new_revision_ending_a_stale_spell_is_ready_then_changed(
    server: DatafileServer, sink: SinkServer
) -> None:
    server.set_datafile(datafile("1"))
    async with polling_client(server, sink) as client:
        assert await client.wait_until_ready(5)
        provider = OptimizelyProvider(client, stale_after_failures=2, health_check_interval=0.02)
        domain = f"stale-{uuid.uuid4().hex}"
        api.set_provider_and_wait(provider, domain)
        of = api.get_client(domain)
        recorder = Recorder()
        for kind in (ProviderEvent.PROVIDER_STALE, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED):
            of.add_handler(kind, recorder.handler(kind))
        try:
            server.enqueue(*[Status(503)] * 3)
            await wait_until(lambda: ProviderEvent.PROVIDER_STALE in recorder.kinds())
            of.add_handler(ProviderEvent.PROVIDER_READY, recorder.handler(ProviderEvent.PROVIDER_READY))
            recorder.events.clear()  # (the READY handler ran at once only if the status was READY)
            server.set_datafile(datafile("2", value="fresh"))
            await wait_until(lambda: ProviderEvent.PROVIDER_CONFIGURATION_CHANGED in recorder.kinds())
            await anyio.sleep(0.1)
            assert recorder.kinds() == [ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
            assert of.get_provider_status() is ProviderStatus.READY
            assert await of.get_string_value_async("of_flag", "d", PLAN) == "fresh"
        finally:
            api.clear_providers()
