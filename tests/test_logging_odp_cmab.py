"""``logger=`` also receives what the ODP and CMAB parts log: the ODP event queue's background task, the
segments fetch and the CMAB prediction fetch, on asyncio and trio, however the client was started.

Before the fix these modules logged through ``logging.getLogger("optimizely_async")`` directly, so their
lines went to the library logger whatever ``logger=`` said (on both backends).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import pytest

from _cmab_odp_server import Reply, StandIn, serve_stand_in
from _cmab_support import FLAG, TIMEOUT, small_datafile
from _logcapture import Records
from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest

pytestmark = pytest.mark.anyio


class Accept:
    async def dispatch(self, request: EventRequest) -> DispatchResult:
        return DispatchResult(delivered=True, status=200)


@pytest.fixture
def logs() -> Iterator[tuple[logging.Logger, Records, Records]]:
    """(the client's logger, its records, the library logger's records)."""
    mine = logging.getLogger("app.odp_cmab")
    library = logging.getLogger("optimizely_async")
    own, lib = Records(), Records()
    saved = [(target, target.level, target.propagate) for target in (mine, library)]
    for target, handler in ((mine, own), (library, lib)):
        target.addHandler(handler)
        target.setLevel(logging.DEBUG)
        target.propagate = False
    yield mine, own, lib
    for (target, level, propagate), handler in zip(saved, (own, lib), strict=True):
        target.removeHandler(handler)
        target.setLevel(level)
        target.propagate = propagate


@pytest.fixture
def failing() -> Iterator[StandIn]:
    """ODP events answered 400, segments 500, predictions 500."""
    with serve_stand_in() as server:
        server.events = lambda body, attempt: Reply(400, b"refused by the stand-in")
        server.graphql = lambda body: Reply(500)
        server.predict = lambda rule_id, body, attempt: Reply(500)
        yield server


def client_for(server: StandIn, logger: logging.Logger | None) -> AsyncOptimizely:
    return AsyncOptimizely(
        datafile=small_datafile(host=server.url),
        event_dispatcher=Accept(),
        cmab_prediction_endpoint=server.url + "/predict/{}",
        cmab_request_timeout=TIMEOUT,
        odp_segment_request_timeout=TIMEOUT,
        odp_event_flush_interval=0,
        logger=logger,
    )


@asynccontextmanager
async def running(client: AsyncOptimizely, how: str) -> AsyncIterator[None]:
    if how == "async with":
        async with client:
            yield
    else:
        async with anyio.create_task_group() as group:
            await client.start(group)
            try:
                yield
            finally:
                await client.close()


async def use(client: AsyncOptimizely, user: str) -> None:
    await client.send_odp_event("bought", {"fs_user_id": user})  # sent by the ODP queue's background task
    context = client.create_user_context(user, {"age": 30, "plan": "pro"})
    assert context is not None
    assert not await context.fetch_qualified_segments()
    await context.decide(FLAG)  # the prediction fails: the flag falls back, logged
    await client.flush()


@pytest.mark.parametrize("how", ["async with", "start(task_group)"])
async def test_odp_and_cmab_lines_reach_the_clients_logger(
    logs: tuple[logging.Logger, Records, Records], failing: StandIn, how: str
) -> None:
    mine, own, library = logs
    routed = client_for(failing, mine)
    plain = client_for(failing, None)
    async with running(routed, how), running(plain, how):
        await use(routed, "routed-user")
        await use(plain, "plain-user")
    for records in (own, library):  # each client's lines where they belong, and only there
        errors = records.messages(logging.ERROR)
        assert any(line.startswith("ODP event send failed") for line in errors), errors
        assert any("segments" in line.lower() for line in errors), errors
        assert any("CMAB" in line for line in errors), errors
    assert len(own.messages(logging.ERROR)) == len(library.messages(logging.ERROR))
    assert not any("plain-user" in line for line in own.messages())
    assert not any("routed-user" in line for line in library.messages())
    assert any("routed-user" in line for line in own.messages())  # the ODP batch given up on, at DEBUG
