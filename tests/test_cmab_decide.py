"""CMAB decisions against the official SDK, side by side, on a real stand-in prediction endpoint.

Each test runs one scenario on both SDKs (each with its own stand-in server, answering the same way) and
compares the decisions (every field, reasons included), the DECISION notifications, the impressions
(``cmab_uuid`` present or absent alike) and the prediction requests (bodies without the UUID, counts). The
failure cases (endpoint down, 500, malformed and wrong-shape bodies, timeouts, dropped connections) use short
timeouts on both sides.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from _cmab_odp_server import Reply, StandIn, dead_url, serve_stand_in
from _cmab_support import EXPERIMENT, EXPERIMENT_ID, FLAG, Official, ours, scrub_impression, small_datafile
from differential import same, short

pytestmark = pytest.mark.anyio

Predict = Callable[[str, Any, int], Reply]


def predicts(variation_id: Any) -> Predict:
    return lambda rule_id, body, attempt: Reply.json({"predictions": [{"variation_id": variation_id}]})


def by_visitor(rule_id: str, body: Any, attempt: int) -> Reply:
    """treatment_a or treatment_b by the visitor id's length: deterministic, and both variations occur."""
    visitor = body["instances"][0]["visitorId"]
    return Reply.json({"predictions": [{"variation_id": "4001" if len(visitor) % 2 else 4002}]})


@pytest.fixture
def servers() -> Iterator[tuple[StandIn, StandIn]]:
    """One stand-in for the official SDK, one for ours (same answers, separate records)."""
    with serve_stand_in() as official, serve_stand_in() as mine:
        yield official, mine


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def no_uuids(value: Any) -> Any:
    """``value`` with every UUID in its strings replaced by ``<uuid>`` (each SDK makes its own)."""
    if isinstance(value, str):
        return _UUID.sub("<uuid>", value)
    if isinstance(value, dict):
        return {k: no_uuids(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(no_uuids(v) for v in value)
    return value


def view(decision: Any) -> dict[str, Any]:
    return {
        "variation_key": decision.variation_key,
        "enabled": decision.enabled,
        "variables": decision.variables,
        "rule_key": decision.rule_key,
        "flag_key": decision.flag_key,
        "user_context": decision.user_context.as_json() if decision.user_context is not None else None,
        "reasons": no_uuids(list(decision.reasons)),
    }


def request_view(server: StandIn) -> list[Any]:
    """The prediction requests: path and body, the UUID replaced by whether it is one."""
    out = []
    for received in server.requests("/predict/"):
        body = received.json
        for instance in body["instances"]:
            instance["cmabUUID"] = "<uuid>" if len(str(instance.get("cmabUUID", ""))) == 36 else "<missing>"
        out.append((received.path, received.headers.get("content-type"), body))
    return out


class Side:
    """Both SDKs on one datafile; every call goes to both and everything observable is compared."""

    def __init__(self, servers: tuple[StandIn, StandIn], datafile: dict[str, Any], **ours_options: Any) -> None:
        self.servers = servers
        defaults = ours_options.pop("default_decide_options", None)
        ups = ours_options.pop("user_profile_services", (None, None))
        self.official = Official(
            datafile, servers[0].url + "/predict/{}", default_decide_options=defaults, user_profile_service=ups[0]
        )
        self.ours, self.recorder, self.notes = ours(
            datafile,
            servers[1].url + "/predict/{}",
            default_decide_options=defaults or (),
            user_profile_service=ups[1],
            **ours_options,
        )
        self.mismatches: list[str] = []

    def predict(self, predictor: Predict) -> None:
        for server in self.servers:
            server.predict = predictor

    def check(self, label: str, expected: Any, got: Any) -> None:
        if not same(expected, got):
            self.mismatches.append(f"{label}: official {short(expected, 900)} != ours {short(got, 900)}")

    async def decide(self, method: str, user_id: str, attributes: dict[str, Any] | None, *args: Any) -> Any:
        official_user = self.official.client.create_user_context(user_id, copy.deepcopy(attributes))
        our_user = self.ours.create_user_context(user_id, copy.deepcopy(attributes))
        assert official_user is not None and our_user is not None
        return await self.call_users(official_user, our_user, method, *args)

    async def call_users(self, official_user: Any, our_user: Any, method: str, *args: Any) -> Any:
        label = f"{method}{short(args)} for {official_user.user_id!r}"
        before = len(self.official.dispatcher.events), len(self.recorder.payloads)
        expected = getattr(official_user, method)(*copy.deepcopy(args))
        got = await getattr(our_user, method)(*copy.deepcopy(args))
        await self.ours.flush()
        if isinstance(expected, dict):
            self.check(label + " keys", list(expected), list(got))
            for key in expected:
                if key in got:
                    self.check(f"{label}[{key}]", view(expected[key]), view(got[key]))
        else:
            self.check(label, view(expected), view(got))
        self.compare_side_effects(label, before)
        return got

    async def legacy(self, method: str, *args: Any) -> Any:
        label = f"{method}{short(args)}"
        before = len(self.official.dispatcher.events), len(self.recorder.payloads)
        expected = getattr(self.official.client, method)(*copy.deepcopy(args))
        got = await getattr(self.ours, method)(*copy.deepcopy(args))
        await self.ours.flush()
        self.check(label, expected, got)
        self.compare_side_effects(label, before)
        return got

    def compare_side_effects(self, label: str, before: tuple[int, int]) -> None:
        official_events = [scrub_impression(e) for e in self.official.impressions()[before[0] :]]
        our_events = [scrub_impression(e) for e in self.recorder.payloads[before[1] :]]
        self.check(label + " impressions", official_events, our_events)
        self.check(label + " DECISION notifications", no_uuids(self.official.notes), no_uuids(self.notes))
        self.official.notes.clear()
        self.notes.clear()
        self.check(label + " prediction requests", request_view(self.servers[0]), request_view(self.servers[1]))
        for server in self.servers:
            server.clear()

    def raise_if_any(self) -> None:
        self.official.close()
        if self.mismatches:
            raise AssertionError(f"{len(self.mismatches)} difference(s):\n" + "\n".join(self.mismatches))


ATTRS = {"age": 30, "plan": "gold", "country": "de"}


# ------------------------------------------------------------------------------------------ the defect


async def test_endpoint_down_gives_the_error_decision_not_the_rollout(servers: tuple[StandIn, StandIn]) -> None:
    down = dead_url() + "/predict/{}"
    datafile = small_datafile()
    official = Official(datafile, down)
    client, recorder, notes = ours(datafile, down)
    async with client:
        for options in ([], ["INCLUDE_REASONS"], ["ENABLED_FLAGS_ONLY"]):
            user = client.create_user_context("user_1", ATTRS)
            assert user is not None
            got = await user.decide(FLAG, options)
            expected = official.client.create_user_context("user_1", ATTRS).decide(FLAG, options)
            assert view(got) == view(expected)
            assert (got.variation_key, got.enabled, got.variables, got.rule_key) == (None, False, {}, None)
            # the reasons come even without INCLUDE_REASONS, and end with the failure
            assert got.reasons[-1] == f"Failed to fetch CMAB data for experiment {EXPERIMENT}."
            assert 'Audiences for experiment "cmab_exp" collectively evaluated to TRUE.' in got.reasons
            all_flags = await user.decide_all(["ENABLED_FLAGS_ONLY"])
            assert FLAG in all_flags and next(iter(all_flags)) == FLAG  # kept, and first
            official_all = official.client.create_user_context("user_1", ATTRS).decide_all(["ENABLED_FLAGS_ONLY"])
            assert {k: view(v) for k, v in official_all.items()} == {k: view(v) for k, v in all_flags.items()}
        await client.flush()
    # no impression and no DECISION notification for the CMAB flag (decide_all sent the other flag's)
    assert all(
        p["visitors"][0]["snapshots"][0]["decisions"][0]["metadata"]["flag_key"] != FLAG for p in recorder.payloads
    )
    assert all(note[3]["flag_key"] != FLAG for note in notes)
    assert len(official.dispatcher.events) == len(recorder.payloads) and len(official.notes) == len(notes)
    official.close()


async def test_outside_the_cmab_traffic_the_reasons_end_with_no_variation(servers: tuple[StandIn, StandIn]) -> None:
    side = Side(servers, small_datafile(traffic=0))
    async with side.ours:
        got = await side.decide("decide", "user_1", ATTRS, FLAG, ["INCLUDE_REASONS"])
        assert 'User "user_1" not in CMAB experiment "cmab_exp" due to traffic allocation.' in got.reasons
        index = got.reasons.index('User "user_1" not in CMAB experiment "cmab_exp" due to traffic allocation.')
        assert got.reasons[index + 1] == 'User "user_1" is in no variation.'
        assert got.variation_key == "rollout_on"
        await side.decide("decide", "user_1", ATTRS, FLAG)
    assert not servers[1].received
    side.raise_if_any()


# ------------------------------------------------------------------------------------------ predictions


async def test_prediction_request_impression_and_cache(servers: tuple[StandIn, StandIn]) -> None:
    side = Side(servers, small_datafile())
    side.predict(by_visitor)
    async with side.ours:
        for user_id in ("user_1", "user_22"):
            got = await side.decide("decide", user_id, ATTRS, FLAG, ["INCLUDE_REASONS"])
            assert got.rule_key == EXPERIMENT
        # the impression carries the uuid the request was made with
        servers[1].clear()
        side.recorder.payloads.clear()
        user = side.ours.create_user_context("user_333", {**ATTRS, "$opt_bucketing_id": "b"})
        assert user is not None
        await user.decide(FLAG)
        await side.ours.flush()
        (request,) = servers[1].requests("/predict/")
        instance = request.json["instances"][0]
        assert instance["visitorId"] == "user_333" and instance["experimentId"] == EXPERIMENT_ID
        assert instance["attributes"] == [
            {"id": "501", "value": 30, "type": "custom_attribute"},
            {"id": "502", "value": "gold", "type": "custom_attribute"},
        ]
        metadata = side.recorder.payloads[0]["visitors"][0]["snapshots"][0]["decisions"][0]["metadata"]
        assert metadata["cmab_uuid"] == instance["cmabUUID"]
        servers[1].clear()
        # a cache hit: no request, the same uuid
        await user.decide(FLAG)
        await side.ours.flush()
        assert not servers[1].requests("/predict/")
        again = side.recorder.payloads[1]["visitors"][0]["snapshots"][0]["decisions"][0]["metadata"]
        assert again["cmab_uuid"] == instance["cmabUUID"]
        servers[1].clear()
        for server in servers:
            server.clear()
        side.official.notes.clear()
        side.notes.clear()
        # both: an attribute outside attributeIds does not matter, one inside does (30 vs 30.0 too)
        for attributes in (
            ATTRS,
            {**ATTRS, "country": "fr"},
            {**ATTRS, "age": 30.0},
            {**ATTRS, "age": 31},
            {"age": 31},
        ):
            await side.decide("decide", "user_1", attributes, FLAG, ["INCLUDE_REASONS"])
    side.raise_if_any()


@pytest.mark.parametrize(
    "options",
    [
        ["IGNORE_CMAB_CACHE"],
        ["RESET_CMAB_CACHE"],
        ["INVALIDATE_USER_CMAB_CACHE"],
        ["IGNORE_CMAB_CACHE", "RESET_CMAB_CACHE", "INVALIDATE_USER_CMAB_CACHE"],
        ["RESET_CMAB_CACHE", "INVALIDATE_USER_CMAB_CACHE"],
    ],
)
async def test_cache_options(servers: tuple[StandIn, StandIn], options: list[str]) -> None:
    side = Side(servers, small_datafile())
    side.predict(by_visitor)
    async with side.ours:
        for user_id in ("user_1", "user_22"):  # warm the cache for two users
            await side.decide("decide", user_id, ATTRS, FLAG, ["INCLUDE_REASONS"])
        await side.decide("decide", "user_1", ATTRS, FLAG, [*options, "INCLUDE_REASONS"])
        for user_id in ("user_1", "user_22"):  # what is left in the cache
            await side.decide("decide", user_id, ATTRS, FLAG, ["INCLUDE_REASONS"])
        await side.decide("decide_all", "user_1", ATTRS, [*options, "INCLUDE_REASONS"])
    side.raise_if_any()


async def test_cache_options_as_default_decide_options(servers: tuple[StandIn, StandIn]) -> None:
    side = Side(servers, small_datafile(), default_decide_options=["IGNORE_CMAB_CACHE"])
    side.predict(by_visitor)
    async with side.ours:
        for _ in range(2):
            await side.decide("decide", "user_1", ATTRS, FLAG, ["INCLUDE_REASONS"])
    side.raise_if_any()


FAILURES: dict[str, Predict] = {
    "status 500": lambda rule, body, attempt: Reply(500, b"oops"),
    "not json": lambda rule, body, attempt: Reply(200, b"<html>"),
    "empty predictions": lambda rule, body, attempt: Reply.json({"predictions": []}),
    "no variation_id": lambda rule, body, attempt: Reply.json({"predictions": [{"variation": "4001"}]}),
    "a list": lambda rule, body, attempt: Reply.json([{"variation_id": "4001"}]),
    "timeout": lambda rule, body, attempt: Reply(200, b"{}", delay=0.9),
    "connection dropped": lambda rule, body, attempt: Reply(close=True),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_failures_give_the_error_decision(servers: tuple[StandIn, StandIn], failure: str) -> None:
    side = Side(servers, small_datafile())
    side.predict(FAILURES[failure])
    async with side.ours:
        got = await side.decide("decide", "user_1", ATTRS, FLAG)
        assert got.reasons[-1] == f"Failed to fetch CMAB data for experiment {EXPERIMENT}."
        assert len(servers[1].received) == 0  # compared and cleared: two attempts each, as the official
        await side.decide("decide", "user_1", ATTRS, FLAG, ["INCLUDE_REASONS"])
        if failure != "timeout":  # (each timed-out call waits two timeouts on each side)
            await side.decide("decide_for_keys", "user_1", ATTRS, [FLAG, "odp_flag", "nope"], ["ENABLED_FLAGS_ONLY"])
            await side.decide("decide_all", "user_1", ATTRS, ["INCLUDE_REASONS"])
    side.raise_if_any()


async def test_a_failed_first_attempt_is_retried_with_the_same_body(servers: tuple[StandIn, StandIn]) -> None:
    side = Side(servers, small_datafile())
    side.predict(lambda rule, body, attempt: Reply(503) if attempt == 1 else by_visitor(rule, body, attempt))
    async with side.ours:
        servers[1].clear()
        user = side.ours.create_user_context("user_1", ATTRS)
        assert user is not None
        decision = await user.decide(FLAG)
        first, second = servers[1].requests("/predict/")
        assert first.body == second.body and decision.variation_key == "treatment_b"
        await side.ours.flush()
        for server in servers:
            server.clear()
        side.recorder.payloads.clear()
        side.notes.clear()
        await side.decide("decide", "user_22", ATTRS, FLAG, ["INCLUDE_REASONS"])
    side.raise_if_any()


async def test_an_unknown_predicted_variation_goes_on_to_the_rollout_and_is_cached(
    servers: tuple[StandIn, StandIn], caplog: pytest.LogCaptureFixture
) -> None:
    side = Side(servers, small_datafile())
    side.predict(predicts(99999))
    async with side.ours:
        with caplog.at_level(logging.ERROR, logger="optimizely_async"):
            got = await side.decide("decide", "user_1", ATTRS, FLAG, ["INCLUDE_REASONS"])
        assert got.variation_key == "rollout_on"
        assert 'Variation ID "99999" is not in datafile.' in caplog.text
        await side.decide("decide", "user_1", ATTRS, FLAG, ["INCLUDE_REASONS"])  # cached: no request either side
    side.raise_if_any()


async def test_forced_whitelisted_and_stored_variations_need_no_prediction(servers: tuple[StandIn, StandIn]) -> None:
    class Profiles:
        def __init__(self) -> None:
            self.saved: list[Any] = []

        def lookup(self, user_id: str) -> Any:
            if user_id == "stored":
                return {"user_id": "stored", "experiment_bucket_map": {EXPERIMENT_ID: {"variation_id": "4002"}}}
            return None

        def save(self, profile: Any) -> None:
            self.saved.append(copy.deepcopy(profile))

    official_profiles, our_profiles = Profiles(), Profiles()
    side = Side(servers, small_datafile(), user_profile_services=(official_profiles, our_profiles))
    side.predict(by_visitor)
    async with side.ours:
        for user_id in ("whitelisted", "stored", "user_1"):
            await side.decide("decide", user_id, ATTRS, FLAG, ["INCLUDE_REASONS"])
            await side.decide("decide", user_id, ATTRS, FLAG, ["IGNORE_USER_PROFILE_SERVICE", "INCLUDE_REASONS"])
        side.official.client.set_forced_variation(EXPERIMENT, "forced", "treatment_b")
        side.ours.set_forced_variation(EXPERIMENT, "forced", "treatment_b")
        await side.decide("decide", "forced", ATTRS, FLAG, ["INCLUDE_REASONS"])
        await side.legacy("activate", EXPERIMENT, "user_1", ATTRS)
        await side.legacy("is_feature_enabled", FLAG, "user_1", ATTRS)
    # CMAB results are never written to the profile service
    side.check("profile saves", official_profiles.saved, our_profiles.saved)
    assert all(EXPERIMENT_ID not in p["experiment_bucket_map"] for p in our_profiles.saved if p["user_id"] == "user_1")
    side.raise_if_any()


# ------------------------------------------------------------------------------------------ legacy API


@pytest.mark.parametrize("outcome", ["ok", "fails", "outside"])
async def test_legacy_methods(servers: tuple[StandIn, StandIn], outcome: str) -> None:
    datafile = small_datafile(traffic=0 if outcome == "outside" else 10000)
    side = Side(servers, datafile)
    side.predict(by_visitor if outcome != "fails" else FAILURES["status 500"])
    async with side.ours:
        for user_id in ("user_1", "user_22"):
            await side.legacy("get_variation", EXPERIMENT, user_id, ATTRS)
            await side.legacy("activate", EXPERIMENT, user_id, ATTRS)
            await side.legacy("is_feature_enabled", FLAG, user_id, ATTRS)
            await side.legacy("get_feature_variable_string", FLAG, "color", user_id, ATTRS)
            await side.legacy("get_feature_variable", FLAG, "color", user_id, ATTRS)
            await side.legacy("get_all_feature_variables", FLAG, user_id, ATTRS)
            await side.legacy("get_enabled_features", user_id, ATTRS)
    side.raise_if_any()


# ------------------------------------------------------------------------------------------ concurrency


async def test_concurrent_decides_for_one_user_make_one_request() -> None:
    with serve_stand_in() as server:
        server.predict = lambda rule, body, attempt: Reply(
            200, json.dumps({"predictions": [{"variation_id": "4001"}]}).encode(), delay=0.2
        )
        client, _, _ = ours(small_datafile(), server.url + "/predict/{}", cmab_request_timeout=5.0)
        results: list[Any] = []
        async with client:

            async def one(user_id: str) -> None:
                user = client.create_user_context(user_id, ATTRS)
                assert user is not None
                results.append(await user.decide(FLAG, ["INCLUDE_REASONS"]))

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(one, "same_user")
                for i in range(3):
                    tg.start_soon(one, f"other_{i}")
        assert len(server.requests("/predict/")) == 4  # one for "same_user", one per other user
        assert {r.variation_key for r in results} == {"treatment_a"}
        hits = [r for r in results if "CMAB cache hit for user 'same_user' and rule '3001'" in r.reasons]
        assert len(hits) == 19


async def test_cmab_options_are_validated() -> None:
    from optimizely_async import ConfigurationError

    datafile = small_datafile()
    for bad in (
        {"cmab_prediction_endpoint": "ftp://x/{}"},
        {"cmab_prediction_endpoint": "http://x/predict"},
        {"cmab_prediction_endpoint": "http://x/{}/{}"},
        {"cmab_cache_size": -1},
        {"cmab_cache_size": 1.5},
        {"cmab_cache_ttl": 0},
        {"cmab_request_timeout": -1},
    ):
        with pytest.raises(ConfigurationError):
            from optimizely_async import AsyncOptimizely

            AsyncOptimizely(datafile=datafile, **bad)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = _UUID.sub("<uuid>", record.getMessage())
        if "CMAB" in message:
            self.lines.append((record.levelname, message))


@pytest.mark.parametrize("failure", ["status 500", "not json", "empty predictions", None])
async def test_cmab_log_lines_are_the_official_ones(servers: tuple[StandIn, StandIn], failure: str | None) -> None:
    official_lines, our_lines = Lines(), Lines()
    official_logger = logging.getLogger("official-cmab-logs")
    official_logger.setLevel(logging.DEBUG)
    official_logger.addHandler(official_lines)
    ours_logger = logging.getLogger("optimizely_async")
    level = ours_logger.level
    ours_logger.setLevel(logging.DEBUG)
    ours_logger.addHandler(our_lines)
    try:
        official = Official(small_datafile(), servers[0].url + "/predict/{}", logger=official_logger)
        client, _, _ = ours(small_datafile(), servers[1].url + "/predict/{}")
        for server in servers:
            server.predict = FAILURES[failure] if failure else by_visitor
        async with client:
            for _ in range(2):
                official.client.create_user_context("user_1", ATTRS).decide(FLAG)
                user = client.create_user_context("user_1", ATTRS)
                assert user is not None
                await user.decide(FLAG)
        official.close()
    finally:
        ours_logger.removeHandler(our_lines)
        ours_logger.setLevel(level)
        official_logger.removeHandler(official_lines)
    assert official_lines.lines  # the official SDK did log through the logger it was given
    assert our_lines.lines == official_lines.lines, (our_lines.lines, official_lines.lines)
