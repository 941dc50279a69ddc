"""SyncOptimizely.create_user_context and ODP's identify step, from many threads.

``create_user_context`` runs in the calling thread. Its identify step sends nothing (as the official SDK 5.7.0,
whose queue wants two identifiers and is given one; see docs/cmab-odp.md): it only logs, at DEBUG, why. It
must not touch what the loop thread owns either: the ODP segments cache is not thread-safe and lives on the
loop thread. Before, with DEBUG logging on, the first context created after a datafile with new ODP settings
reset that cache from the calling thread, while the loop thread could be using it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _cmab_odp_server import Reply, StandIn, serve_stand_in
from _cmab_support import small_datafile
from _datafile_server import DatafileServer
from optimizely_async import SyncOptimizely
from optimizely_async._ttl_cache import TtlLruCache

QUALIFIED = {"node": {"name": "seg_gold", "state": "qualified"}}
GOLD = Reply.json({"data": {"customer": {"audiences": {"edges": [QUALIFIED]}}}})


class ThreadNotingCache(TtlLruCache[Any, Any]):
    """The SDK's own cache, noting which thread uses it."""

    __slots__ = ("threads",)

    def __init__(self, capacity: int, ttl: float) -> None:
        super().__init__(capacity, ttl)
        self.threads: set[int] = set()

    def lookup(self, key: Any) -> Any:
        self.threads.add(threading.get_ident())
        return super().lookup(key)

    def save(self, key: Any, value: Any) -> None:
        self.threads.add(threading.get_ident())
        super().save(key, value)

    def reset(self) -> None:
        self.threads.add(threading.get_ident())
        super().reset()


@pytest.fixture
def debug_logs() -> Iterator[None]:
    logger = logging.getLogger("optimizely_async")
    level = logger.level
    logger.setLevel(logging.DEBUG)  # the identify step runs only when its debug line would be logged
    try:
        yield
    finally:
        logger.setLevel(level)


@pytest.fixture
def odp() -> Iterator[StandIn]:
    with serve_stand_in() as server:
        server.graphql = lambda body: GOLD
        yield server


def odp_datafile(host: str, key: str, revision: str) -> dict[str, Any]:
    datafile = small_datafile(host=host)
    datafile["integrations"] = [{"key": "odp", "host": host, "publicKey": key}]
    datafile["revision"] = revision
    return datafile


def wait_for_revision(client: SyncOptimizely, revision: str) -> None:
    deadline = time.monotonic() + 10
    while (client.config is None or client.config.revision != revision) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.config is not None and client.config.revision == revision


@pytest.mark.usefixtures("debug_logs")
def test_only_the_loop_thread_touches_the_segments_cache(odp: StandIn) -> None:
    with DatafileServer() as server:
        server.set_datafile(odp_datafile(odp.url, "key-1", "1"))
        client = SyncOptimizely(
            sdk_key="identify", datafile_url_template=f"{server.url}/{{sdk_key}}.json", update_interval=0.05
        )
        try:
            assert client.wait_until_ready(10)
            inner = client._client  # this process's async client (its loop thread owns the cache)
            segments = inner._odp.segments
            cache = segments.cache = ThreadNotingCache(segments.cache.capacity, segments.cache.ttl)
            user = client.create_user_context("user_1")
            assert user is not None and user.fetch_qualified_segments()  # on the loop thread: cached there
            server.set_datafile(odp_datafile(odp.url, "key-2", "2"))  # new ODP settings: the cache is reset
            wait_for_revision(client, "2")
            for i in range(5):
                assert client.create_user_context(f"user_{i}") is not None
            user = client.create_user_context("user_1")
            assert user is not None and user.fetch_qualified_segments()
            assert user.get_qualified_segments() == ["seg_gold"]
            assert cache.threads == {inner.loop_thread}
        finally:
            client.close()


@pytest.mark.usefixtures("debug_logs")
def test_contexts_from_many_threads_while_the_client_closes() -> None:
    """No call raises or waits, the identify step sends nothing (nothing to lose), and the books balance."""
    client = SyncOptimizely(datafile=json.dumps(odp_datafile("http://127.0.0.1:9", "key-1", "1")))
    made: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(9)

    def create(worker: int) -> None:
        start.wait()
        try:
            for i in range(300):
                if client.create_user_context(f"user_{worker}_{i}") is not None:
                    made.append(1)
        except BaseException as exc:  # any failure is what this test looks for
            failures.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    start.wait()
    report = client.close(timeout=5)
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures
    assert len(made) == 8 * 300
    assert report.submitted == report.delivered + sum(report.dropped.values()) + report.undelivered
    odp_stats = client.stats().odp
    assert odp_stats.submitted == 0 and not odp_stats.dropped
