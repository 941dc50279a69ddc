"""ODP events: ``send_odp_event`` side by side with the official SDK, and the queue's guarantees.

Both SDKs send to their own stand-in events endpoint; after both have closed (the official close joins its
queue thread, ours drains), the requests are compared: path, headers, and the JSON array of events without
what differs by design (``idempotence_id``, ``data_source``, ``data_source_version``). Then our queue alone:
retries and drops with their counters in ``client.stats().odp``, batching, the destination switch on a new
datafile, the bound of 1,000 events and the drain on close.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from _cmab_odp_server import Reply, StandIn, dead_url, serve_stand_in
from _cmab_support import Official, ours, small_datafile
from optimizely_async import AsyncOptimizely
from optimizely_async.config.project_config import parse_config

pytestmark = pytest.mark.anyio

VOLATILE = ("idempotence_id", "data_source", "data_source_version")


@pytest.fixture
def servers() -> Iterator[tuple[StandIn, StandIn]]:
    with serve_stand_in() as official, serve_stand_in() as mine:
        yield official, mine


def events_view(server: StandIn) -> list[Any]:
    out = []
    for received in server.requests("/v3/events"):
        batch = received.json
        for event in batch:
            for key in VOLATILE:
                assert key in event["data"]
                event["data"].pop(key)
        out.append((received.headers.get("content-type"), received.headers.get("x-api-key"), batch))
    return out


def stats_balance(client: AsyncOptimizely) -> None:
    odp = client.stats().odp
    assert odp.submitted == odp.queued + odp.in_flight + odp.delivered + sum(odp.dropped.values())


CALLS: list[tuple[Any, ...]] = [
    (
        "purchase",
        {"fs-user-id": "user_1", "email": "a@example.com"},
        "fullstack",
        {"price": 1.5, "ok": True, "n": None},
    ),
    ("login", {"FS_USER_ID": "user_2"}),
    ("login", {"email": "b@example.com", "FS-User-Id": "user_3", "fs_user_id": "user_4"}),
    ("login", {"fs_user_id": "user_5", "FS-USER-ID": "user_6"}),
    ("view", {"vuid": "v1"}, "", {"data_source_type": "mine", "idempotence_id": "fixed"}),
    ("view", {"vuid": "v2"}, None),
    ("view", {"vuid": "v3"}, "custom", {"page": "home", "count": 3}),
    (None, {"vuid": "v1"}),
    ("", {"vuid": "v1"}),
    ("x", {}),
    ("x", None),
    ("x", ["fs_user_id"]),
    ("x", {"vuid": "v1"}, "fullstack", {"bad": [1, 2]}),
    ("x", {"vuid": "v1"}, "fullstack", {"bad": {"a": 1}}),
]


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))


async def test_send_odp_event_like_the_official_sdk(servers: tuple[StandIn, StandIn]) -> None:
    official_errors, our_errors = Errors(), Errors()
    official_logger = logging.getLogger("official-odp-events")
    official_logger.addHandler(official_errors)
    official = Official(small_datafile(host=servers[0].url), dead_url() + "/{}", logger=official_logger)
    client, _, _ = ours(small_datafile(host=servers[1].url), dead_url() + "/{}")
    logging.getLogger("optimizely_async").addHandler(our_errors)
    try:
        async with client:
            for call in CALLS:
                official_errors.lines.clear()
                our_errors.lines.clear()
                mine = copy.deepcopy(call)
                official.client.send_odp_event(*copy.deepcopy(call))
                assert await client.send_odp_event(*mine) is None
                assert our_errors.lines == official_errors.lines, call
                assert mine == call  # the caller's identifiers are not renamed (the official SDK renames them)
    finally:
        logging.getLogger("optimizely_async").removeHandler(our_errors)
        official.close()
    expected = events_view(servers[0])
    assert len(expected) == 7
    assert events_view(servers[1]) == expected
    stats = client.stats().odp
    assert (stats.submitted, stats.delivered, stats.dropped) == (7, 7, {})


@pytest.mark.parametrize(
    ("answers", "requests", "dropped"),
    [
        ([Reply(500)], 4, {"retries_exhausted": 1}),
        ([Reply(503), Reply(200)], 2, {}),
        ([Reply(400, b"bad request body")], 1, {"http_400": 1}),
        ([Reply(close=True)], 4, {"retries_exhausted": 1}),
    ],
)
async def test_retries_like_the_official_sdk(
    servers: tuple[StandIn, StandIn], answers: list[Reply], requests: int, dropped: dict[str, int]
) -> None:
    for server in servers:
        server.events = lambda body, attempt: answers[min(attempt, len(answers)) - 1]
    official = Official(small_datafile(host=servers[0].url), dead_url() + "/{}")
    client, _, _ = ours(small_datafile(host=servers[1].url), dead_url() + "/{}")
    async with client:
        official.client.send_odp_event("purchase", {"fs_user_id": "user_1"})
        await client.send_odp_event("purchase", {"fs_user_id": "user_1"})
        await client.flush()
        stats = client.stats().odp
    official.close()
    assert len(servers[0].requests("/v3/events")) == requests
    assert len(servers[1].requests("/v3/events")) == requests
    assert stats.dropped == dropped and stats.requests == requests and stats.retries == requests - 1
    assert stats.delivered == (0 if dropped else 1)
    stats_balance(client)


async def test_endpoint_down_is_retried_then_counted() -> None:
    client, _, _ = ours(small_datafile(host=dead_url()), dead_url() + "/{}")
    async with client:
        await client.send_odp_event("purchase", {"fs_user_id": "user_1"})
        await client.flush()
    odp = client.stats().odp
    assert (odp.requests, odp.retries, odp.dropped) == (4, 3, {"retries_exhausted": 1})
    stats_balance(client)


async def _requests_seen(server: StandIn, count: int, within: float = 5.0) -> list[Any]:
    with anyio.move_on_after(within):
        while len(server.requests("/v3/events")) < count:
            await anyio.sleep(0.01)
    return server.requests("/v3/events")


async def test_full_batches_go_at_once_and_the_rest_waits(servers: tuple[StandIn, StandIn]) -> None:
    client = AsyncOptimizely(datafile=small_datafile(host=servers[1].url), odp_event_flush_interval=30)
    async with client:
        for i in range(23):
            await client.send_odp_event("a", {"fs_user_id": f"user_{i}"})
        assert [len(r.json) for r in await _requests_seen(servers[1], 2)] == [10, 10]
        await anyio.sleep(0.2)
        assert len(servers[1].requests("/v3/events")) == 2  # the last 3 wait for the interval (or a flush)
        await client.flush()
        assert [len(r.json) for r in servers[1].requests("/v3/events")] == [10, 10, 3]
        stats_balance(client)


async def test_a_partial_batch_goes_one_interval_after_its_first_event(servers: tuple[StandIn, StandIn]) -> None:
    client = AsyncOptimizely(datafile=small_datafile(host=servers[1].url), odp_event_flush_interval=0.3)
    async with client:
        started = anyio.current_time()
        await client.send_odp_event("a", {"fs_user_id": "user_1"})
        await client.send_odp_event("a", {"fs_user_id": "user_2"})
        (request,) = await _requests_seen(servers[1], 1)
        assert anyio.current_time() - started >= 0.3
        assert len(request.json) == 2


async def test_a_new_integration_sends_the_queued_events_to_the_old_one_first() -> None:
    with serve_stand_in() as old, serve_stand_in() as new:
        client = AsyncOptimizely(datafile=small_datafile(host=old.url), odp_event_flush_interval=5)
        async with client:
            await client.send_odp_event("a", {"fs_user_id": "user_1"})
            await client.send_odp_event("a", {"fs_user_id": "user_2"})
            moved = small_datafile(host=new.url)
            moved["revision"] = "8"
            client._set_config(parse_config(moved))
            await client.send_odp_event("a", {"fs_user_id": "user_3"})
            await client.flush()
        assert [len(r.json) for r in old.requests("/v3/events")] == [2]
        assert [r.json[0]["identifiers"] for r in new.requests("/v3/events")] == [{"fs_user_id": "user_3"}]


async def test_the_queue_holds_1000_events_and_close_delivers_them(servers: tuple[StandIn, StandIn]) -> None:
    client = AsyncOptimizely(datafile=small_datafile(host=servers[1].url), odp_event_flush_interval=1)
    # not entered yet: nothing sends, so the queue fills up
    for i in range(1001):
        await client.send_odp_event("a", {"fs_user_id": f"user_{i}"})
    odp = client.stats().odp
    assert (odp.queued, odp.dropped) == (1000, {"queue_full": 1})
    await client.close()
    odp = client.stats().odp
    assert (odp.delivered, odp.queued) == (1000, 0)
    assert sum(len(r.json) for r in servers[1].requests("/v3/events")) == 1000
    await client.send_odp_event("a", {"fs_user_id": "late"})
    assert client.stats().odp.dropped == {"queue_full": 1, "closed": 1}
    stats_balance(client)


async def test_close_is_bounded_and_counts_what_it_could_not_send(servers: tuple[StandIn, StandIn]) -> None:
    servers[1].events = lambda body, attempt: Reply(200, b"{}", delay=1.0)
    client = AsyncOptimizely(
        datafile=small_datafile(host=servers[1].url), odp_event_flush_interval=0, close_timeout=0.3
    )
    async with client:
        for i in range(3):
            await client.send_odp_event("a", {"fs_user_id": f"user_{i}"})
    odp = client.stats().odp
    assert odp.dropped.get("close_timeout", 0) >= 2 and odp.queued == odp.in_flight == 0
    stats_balance(client)


async def test_disabled_or_not_integrated_sends_nothing(
    servers: tuple[StandIn, StandIn], caplog: pytest.LogCaptureFixture
) -> None:
    datafile = small_datafile(host=servers[1].url)
    plain = copy.deepcopy(datafile)
    plain["integrations"] = []
    with caplog.at_level(logging.ERROR, logger="optimizely_async"):
        async with AsyncOptimizely(datafile=datafile, odp_disabled=True) as client:
            await client.send_odp_event("a", {"fs_user_id": "u"})
        async with AsyncOptimizely(datafile=plain) as client:
            await client.send_odp_event("a", {"fs_user_id": "u"})
        await AsyncOptimizely(sdk_key="no-datafile-yet").send_odp_event("a", {"fs_user_id": "u"})
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "ODP is not enabled.",
        "ODP is not integrated.",
        'Invalid config. Optimizely instance is not valid. Failing "send_odp_event".',
    ]
    assert not servers[1].received


async def test_cmab_and_odp_use_the_application_http_client(servers: tuple[StandIn, StandIn]) -> None:
    import httpx

    seen: list[str] = []

    async def note(request: httpx.Request) -> None:
        assert request.url.host == "127.0.0.1"
        seen.append(request.url.path)

    servers[1].predict = lambda rule, body, attempt: Reply.json({"predictions": [{"variation_id": "4001"}]})
    shared = httpx.AsyncClient(event_hooks={"request": [note]})
    async with shared:
        client = AsyncOptimizely(
            datafile=small_datafile(host=servers[1].url),
            http_client=shared,
            cmab_prediction_endpoint=servers[1].url + "/predict/{}",
            event_endpoint=servers[1].url + "/v1/events",  # impressions stay on 127.0.0.1 too (answered 404)
        )
        async with client:
            user = client.create_user_context("user_1", {"age": 3})
            assert user is not None
            assert (await user.decide("cmab_flag")).variation_key == "treatment_a"
            assert await user.fetch_qualified_segments()
            await client.send_odp_event("a", {"fs_user_id": "user_1"})
        assert not shared.is_closed  # the application's client is the application's to close
    assert {"/predict/3001", "/v3/graphql", "/v3/events"} <= set(seen)


async def test_odp_disabled_starts_no_task() -> None:
    client = AsyncOptimizely(datafile=small_datafile(), odp_disabled=True)
    async with client:
        assert not client._odp.events._running
    enabled = AsyncOptimizely(datafile=small_datafile())
    async with enabled:
        assert enabled._odp.events._running
    assert not enabled._odp.events._running  # drained and stopped on close


async def test_an_event_json_cannot_encode_is_refused_alone(servers: tuple[StandIn, StandIn]) -> None:
    client = AsyncOptimizely(datafile=small_datafile(host=servers[1].url), odp_event_flush_interval=5)
    async with client:
        await client.send_odp_event("a", {"fs_user_id": "user_1"})
        await client.send_odp_event("a", {"fs_user_id": {1, 2}})  # type: ignore[dict-item]
        await client.send_odp_event("a", {"fs_user_id": "user_2"})
        await client.flush()
    (request,) = servers[1].requests("/v3/events")
    assert [event["identifiers"]["fs_user_id"] for event in request.json] == ["user_1", "user_2"]
    assert client.stats().odp.delivered == 2
