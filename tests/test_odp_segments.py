"""ODP segments: ``fetch_qualified_segments`` and the ``qualified`` condition, side by side with the official SDK.

Both SDKs fetch from their own stand-in GraphQL server (same answers); we compare the return values, the
segments kept on the context, the GraphQL requests (headers and body; the segment list as a set, since the
official order is set order), the ``Audience segments fetch failed (...)`` log lines and the decisions that
use the segments. The cache, its options and the failure cases (down, 4xx/5xx, not JSON, GraphQL errors,
wrong shape, timeouts) are covered on both anyio backends.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from _cmab_odp_server import Reply, StandIn, dead_url, serve_stand_in
from _cmab_support import Official, ours, small_datafile
from optimizely_async import AsyncOptimizely, ConfigurationError
from optimizely_async.odp import OptimizelySegmentOption

pytestmark = pytest.mark.anyio


def edges(*pairs: tuple[str, str]) -> Reply:
    return Reply.json(
        {"data": {"customer": {"audiences": {"edges": [{"node": {"name": n, "state": s}} for n, s in pairs]}}}}
    )


GOLD = edges(("seg_gold", "qualified"), ("seg_other", "not_qualified"))

ANSWERS: dict[str, Reply] = {
    "qualified": GOLD,
    "none qualified": edges(("seg_gold", "not_qualified")),
    "empty": edges(),
    "invalid identifier": Reply.json(
        {
            "errors": [
                {
                    "message": "x",
                    "extensions": {"classification": "DataFetchingException", "code": "INVALID_IDENTIFIER_EXCEPTION"},
                }
            ]
        }
    ),
    "other error": Reply.json({"errors": [{"message": "x", "extensions": {"classification": "InvalidSyntax"}}]}),
    "error without extensions": Reply.json({"errors": [{"message": "x"}]}),
    "not json": Reply(200, b"not json"),
    "data null": Reply.json({"data": None}),
    "missing customer": Reply.json({"data": {}}),
    "status 500": Reply(500, b"oops"),
    "status 400": Reply(400, b"bad"),
    "timeout": Reply(200, b"{}", delay=0.9),
    "connection dropped": Reply(close=True),
}


@pytest.fixture
def servers() -> Iterator[tuple[StandIn, StandIn]]:
    with serve_stand_in() as official, serve_stand_in() as mine:
        yield official, mine


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", record.getMessage())
        if "segments" in message.lower() or "ODP" in message:
            self.lines.append((record.levelname, message))


def graphql_view(server: StandIn) -> list[Any]:
    out = []
    for received in server.requests("/v3/graphql"):
        body = received.json
        body["variables"]["audiences"] = sorted(body["variables"]["audiences"])
        out.append((received.headers.get("content-type"), received.headers.get("x-api-key"), body))
    return out


class Pair:
    def __init__(self, servers: tuple[StandIn, StandIn], **ours_options: Any) -> None:
        self.servers = servers
        self.official_log, self.our_log = LogLines(), LogLines()
        official_logger = logging.getLogger("official-odp-test")
        official_logger.setLevel(logging.DEBUG)
        official_logger.addHandler(self.official_log)
        self.official = Official(small_datafile(host=servers[0].url), dead_url() + "/{}", logger=official_logger)
        self.ours, self.recorder, _ = ours(small_datafile(host=servers[1].url), dead_url() + "/{}", **ours_options)
        logging.getLogger("optimizely_async").addHandler(self.our_log)

    def answer(self, reply: Reply) -> None:
        for server in self.servers:
            server.graphql = lambda body, reply=reply: reply  # type: ignore[misc]

    async def fetch(self, user_id: str, options: list[str] | None = None) -> tuple[Any, Any]:
        """fetch_qualified_segments on both; returns the two contexts after comparing everything."""
        self.official_log.lines.clear()
        self.our_log.lines.clear()
        official_user = self.official.client.create_user_context(user_id)
        our_user = self.ours.create_user_context(user_id)
        assert official_user is not None and our_user is not None
        expected = official_user.fetch_qualified_segments(options=copy.deepcopy(options))
        got = await our_user.fetch_qualified_segments(copy.deepcopy(options))
        assert got is expected
        assert our_user.get_qualified_segments() == official_user.get_qualified_segments()
        assert graphql_view(self.servers[1]) == graphql_view(self.servers[0])
        failed = [line for line in self.official_log.lines if "fetch failed" in line[1]]
        assert [line for line in self.our_log.lines if "fetch failed" in line[1]] == failed
        for server in self.servers:
            server.clear()
        return official_user, our_user

    def close(self) -> None:
        logging.getLogger("optimizely_async").removeHandler(self.our_log)
        self.official.close()


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_fetch_answers(servers: tuple[StandIn, StandIn], answer: str) -> None:
    pair = Pair(servers)
    pair.answer(ANSWERS[answer])
    async with pair.ours:
        official_user, our_user = await pair.fetch("user_1")
        # again: from the cache when a non-empty list came back, else another request
        await pair.fetch("user_1")
        # the qualified condition uses the fetched segments
        assert (await our_user.decide("odp_flag")).enabled is official_user.decide("odp_flag").enabled
        assert our_user.is_qualified_for("seg_gold") is official_user.is_qualified_for("seg_gold")
    pair.close()


async def test_a_failed_fetch_erases_the_segments_fetched_before(servers: tuple[StandIn, StandIn]) -> None:
    pair = Pair(servers)
    async with pair.ours:
        pair.answer(GOLD)
        official_user, our_user = await pair.fetch("user_1")
        assert our_user.get_qualified_segments() == ["seg_gold"]
        assert (await our_user.decide("odp_flag")).variation_key == "odp_on"
        pair.answer(ANSWERS["status 500"])
        assert official_user.fetch_qualified_segments(options=["IGNORE_CACHE"]) is False
        assert await our_user.fetch_qualified_segments([OptimizelySegmentOption.IGNORE_CACHE]) is False
        assert our_user.get_qualified_segments() is official_user.get_qualified_segments() is None
        assert (await our_user.decide("odp_flag")).enabled is official_user.decide("odp_flag").enabled is False
    pair.close()


async def test_cache_options(servers: tuple[StandIn, StandIn]) -> None:
    pair = Pair(servers)
    pair.answer(GOLD)
    async with pair.ours:
        await pair.fetch("user_1")
        await pair.fetch("user_2")
        await pair.fetch("user_1", ["IGNORE_CACHE"])  # a request, no save
        await pair.fetch("user_1")  # still the old entry
        await pair.fetch("user_1", ["RESET_CACHE"])  # clears every user, fetches, saves
        await pair.fetch("user_2")  # a request: the reset emptied the cache
        await pair.fetch("user_1")  # cached
        await pair.fetch("user_3", ["RESET_CACHE", "IGNORE_CACHE"])
        await pair.fetch("user_3")
    assert len(pair.ours._odp.segments.cache) == 1  # user_2 only: the reset dropped user_1, user_3 was ignored
    pair.close()


async def test_set_and_read_segments_without_a_fetch() -> None:
    client, _, _ = ours(small_datafile(), dead_url() + "/{}")
    async with client:
        user = client.create_user_context("user_1", {"age": 3})
        assert user is not None
        assert user.get_qualified_segments() is None and not user.is_qualified_for("seg_gold")
        assert (await user.decide("odp_flag")).enabled is False
        segments = ["seg_gold"]
        user.set_qualified_segments(segments)
        segments.append("changed later")  # a copy was kept
        assert user.get_qualified_segments() == ["seg_gold"] and user.is_qualified_for("seg_gold")
        returned = user.get_qualified_segments()
        assert returned is not None
        returned.append("x")  # a copy is returned
        assert user.get_qualified_segments() == ["seg_gold"]
        assert (await user.decide("odp_flag")).variation_key == "odp_on"
        assert (await user.decide_all(["ENABLED_FLAGS_ONLY"]))["odp_flag"].enabled
        user.set_qualified_segments(None)
        assert (await user.decide("odp_flag")).enabled is False


async def test_odp_disabled_not_integrated_and_no_segments(
    servers: tuple[StandIn, StandIn], caplog: pytest.LogCaptureFixture
) -> None:
    servers[1].graphql = lambda body: GOLD
    datafile = small_datafile(host=servers[1].url)
    disabled = AsyncOptimizely(datafile=datafile, odp_disabled=True)
    async with disabled:
        user = disabled.create_user_context("user_1")
        assert user is not None
        with caplog.at_level(logging.ERROR, logger="optimizely_async"):
            assert await user.fetch_qualified_segments() is False
        assert "ODP is not enabled." in caplog.text
    no_integration = copy.deepcopy(datafile)
    no_integration["integrations"] = [{"key": "odp", "host": servers[1].url}]  # no public key
    caplog.clear()
    async with AsyncOptimizely(datafile=no_integration) as client:
        user = client.create_user_context("user_1")
        assert user is not None
        with caplog.at_level(logging.ERROR, logger="optimizely_async"):
            assert await user.fetch_qualified_segments() is False
        assert "Audience segments fetch failed (api_key/api_host not defined)." in caplog.text
    no_segments = copy.deepcopy(datafile)
    no_segments["typedAudiences"] = []
    async with AsyncOptimizely(datafile=no_segments) as client:
        user = client.create_user_context("user_1")
        assert user is not None
        assert await user.fetch_qualified_segments() is True
        assert user.get_qualified_segments() == []
    assert not servers[1].received  # none of these made a request


async def test_a_new_revision_with_other_segments_resets_the_cache(servers: tuple[StandIn, StandIn]) -> None:
    servers[1].graphql = lambda body: GOLD
    datafile = small_datafile(host=servers[1].url)
    client = AsyncOptimizely(datafile=datafile)
    async with client:
        user = client.create_user_context("user_1")
        assert user is not None
        assert await user.fetch_qualified_segments()
        assert await user.fetch_qualified_segments()
        assert len(servers[1].requests("/v3/graphql")) == 1
        same_settings = copy.deepcopy(datafile)
        same_settings["revision"] = "8"
        client._set_config(
            __import__("optimizely_async.config.project_config", fromlist=["x"]).parse_config(same_settings)
        )
        assert await user.fetch_qualified_segments()
        assert len(servers[1].requests("/v3/graphql")) == 1  # same integration and segments: the cache stays
        other = copy.deepcopy(same_settings)
        other["revision"] = "9"
        other["typedAudiences"][0]["conditions"][1].append(
            {"type": "third_party_dimension", "name": "odp.audiences", "match": "qualified", "value": "seg_new"}
        )
        client._set_config(__import__("optimizely_async.config.project_config", fromlist=["x"]).parse_config(other))
        assert await user.fetch_qualified_segments()
        requests = servers[1].requests("/v3/graphql")
        assert len(requests) == 2
        assert sorted(requests[1].json["variables"]["audiences"]) == ["seg_gold", "seg_new"]


async def test_segment_options_are_validated() -> None:
    for bad in (
        {"odp_disabled": "yes"},
        {"segments_cache_size": -1},
        {"segments_cache_timeout": -1},
        {"odp_segment_request_timeout": 0},
        {"odp_event_request_timeout": -2},
        {"odp_event_flush_interval": -1},
    ):
        with pytest.raises(ConfigurationError):
            AsyncOptimizely(datafile=small_datafile(), **bad)
