"""OptimizelyProvider.initialize through the real openfeature-sdk: it waits for the first datafile where waiting
is harmless (a plain thread), wakes as soon as the datafile arrives, and never holds an event loop -- neither
the client's own (covered in test_openfeature_status) nor another loop that runs in the calling thread, with a
``SyncOptimizely`` behind the provider."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.event import ProviderEvent
from openfeature.exception import ProviderNotReadyError
from openfeature.provider import ProviderStatus

from _datafile_server import DatafileServer
from _of_datafile import datafile
from optimizely_async import AsyncOptimizely, SyncOptimizely
from optimizely_async.openfeature import OptimizelyProvider

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[DatafileServer]:
    with DatafileServer() as srv:  # answers an empty body (no datafile) until set_datafile()
        yield srv


def polling(server: DatafileServer) -> dict[str, object]:
    return {
        "sdk_key": "init-key",
        "datafile_url_template": f"{server.url}/datafiles/{{sdk_key}}.json",
        "update_interval": 0.1,
    }


async def test_on_an_event_loop_initialize_does_not_hold_it(server: DatafileServer) -> None:
    """set_provider_and_wait from async code, a SyncOptimizely behind the provider, no datafile yet: the call
    returns at once (ProviderNotReadyError, status ERROR) instead of stalling this loop for ready_timeout; READY
    follows when the datafile arrives."""
    client = SyncOptimizely(**polling(server))  # type: ignore[arg-type]
    domain = f"init-loop-{uuid.uuid4().hex}"
    ready = threading.Event()
    try:
        provider = OptimizelyProvider(client, ready_timeout=5)
        started = time.monotonic()
        with pytest.raises(ProviderNotReadyError):
            api.set_provider_and_wait(provider, domain)
        held = time.monotonic() - started
        assert held < 2.5, f"the event loop was held {held:.2f} s"
        of = api.get_client(domain)
        assert of.get_provider_status() is ProviderStatus.ERROR
        of.add_handler(ProviderEvent.PROVIDER_READY, lambda details: ready.set())
        server.set_datafile(datafile("1"))
        with anyio.fail_after(10):
            while not ready.is_set():
                await anyio.sleep(0.01)
        assert of.get_provider_status() is ProviderStatus.READY
        assert of.get_boolean_value("of_flag", False) in (True, False)
    finally:
        api.clear_providers()
        client.close()


def _arrives_later(server: DatafileServer, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, server.set_datafile, args=(datafile("1"),))
    timer.start()
    return timer


def test_in_a_plain_thread_initialize_waits_for_the_datafile_of_a_sync_client(server: DatafileServer) -> None:
    client = SyncOptimizely(**polling(server))  # type: ignore[arg-type]
    domain = f"init-sync-{uuid.uuid4().hex}"
    timer = _arrives_later(server, 0.3)
    try:
        api.set_provider_and_wait(OptimizelyProvider(client, ready_timeout=20), domain)  # no error: it came
        assert api.get_client(domain).get_provider_status() is ProviderStatus.READY
        assert client.config is not None and client.config.revision == "1"
    finally:
        timer.cancel()
        api.clear_providers()
        client.close()


async def test_in_a_worker_thread_initialize_waits_for_the_datafile_of_an_async_client(
    server: DatafileServer,
) -> None:
    domain = f"init-async-{uuid.uuid4().hex}"
    async with AsyncOptimizely(**polling(server)) as client:  # type: ignore[arg-type]
        provider = OptimizelyProvider(client, ready_timeout=20)
        timer = _arrives_later(server, 0.3)
        try:
            with anyio.fail_after(15):  # (a wait that missed the datafile would take ready_timeout, 20 s)
                await anyio.to_thread.run_sync(api.set_provider_and_wait, provider, domain)
            assert api.get_client(domain).get_provider_status() is ProviderStatus.READY
            assert client.config is not None
        finally:
            timer.cancel()
            api.clear_providers()
