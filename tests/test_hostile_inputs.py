"""Hostile input (issue 10, items 1, 12, 13 and 14): public methods never raise and never crash, construction
raises only the documented errors, and the answer of a decision does not depend on the log level.

Cases that could crash the interpreter run in a child pytest process (tests/_crash_prone.py and
tests/_hostile_properties.py), so that a segfault fails one test here instead of ending the run.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _sink_server import SinkServer, serve_sink
from _support.hostile import FloatLies, MappingLies, RaisingDunders, StrEq, StrEqRaises, StrHashRaises
from differential import make_official
from optimizely_async import AsyncOptimizely, NotificationType
from optimizely_async.decision.compiled import MAX_CONDITION_DEPTH
from optimizely_async.errors import InvalidDatafileError, OptimizelyError
from optimizely_async.testing import RecordingDispatcher
from optimizely_async.user_context import OptimizelyDecisionContext, OptimizelyForcedDecision

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def run_child(module: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(TESTS / module), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_child_passed(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        signal = f" (killed by signal {-result.returncode})" if result.returncode < 0 else ""
        output = result.stdout[-6000:] + result.stderr[-3000:]
        pytest.fail(f"child pytest exited with {result.returncode}{signal}:\n{output}")


def test_lone_surrogates_never_crash_and_decide_as_documented() -> None:
    """Item 1, in a child process: a lone surrogate in a user id or ``$opt_bucketing_id`` crashed mmh3 5.x."""
    assert_child_passed(run_child("_crash_prone.py"))


def test_every_public_method_survives_hostile_values_in_a_child_process() -> None:
    """The property suite of tests/_hostile_properties.py (HOSTILE_EXAMPLES sets its examples per backend):
    hostile values through every public method of the client and the user context; no raise, no crash, no dead
    client, and the client still decides and delivers to a real sink afterwards."""
    assert_child_passed(run_child("_hostile_properties.py", "-p", "no:logging", timeout=900))


# ------------------------------------------------------------ item 12: construction raises only the documented error

DATAFILE: dict[str, Any] = json.loads((SRC / "optimizely_async" / "example_datafile.json").read_text("utf-8"))


def nesting(value: Any) -> int:
    """Levels of lists and dicts in ``value`` (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def deepen(tree: Any, depth: int) -> Any:
    """``tree`` wrapped in alternating one-operand "and" / "or" lists (which change no answer) until it nests
    ``depth`` levels deep."""
    levels = nesting(tree)
    for i in range(depth - levels):
        tree = ["and" if i % 2 else "or", tree]
    assert nesting(tree) == depth
    return tree


def deep_text(tree: Any, depth: int) -> str:
    """JSON text of :func:`deepen` built without json.dumps, which cannot encode a thousand levels."""
    levels = depth - nesting(tree)
    return "".join('["and", ' if i % 2 else '["or", ' for i in range(levels)) + json.dumps(tree) + "]" * levels


def with_deep_conditions(depth: int, where: str) -> str:
    """The example datafile's text with one condition tree nested ``depth`` levels deep."""
    datafile = copy.deepcopy(DATAFILE)
    if where == "audience":
        audience = datafile["audiences"][0]
        audience["conditions"] = "PLACEHOLDER"
        inner = json.dumps(deep_text(json.loads(DATAFILE["audiences"][0]["conditions"]), depth))
    elif where == "typed":
        datafile["typedAudiences"][0]["conditions"] = "PLACEHOLDER"
        inner = deep_text(DATAFILE["typedAudiences"][0]["conditions"], depth)
    else:
        experiment = next(e for e in datafile["experiments"] if e["key"] == "onboarding_flow")
        inner = deep_text(experiment["audienceConditions"], depth)
        experiment["audienceConditions"] = "PLACEHOLDER"
    return json.dumps(datafile).replace('"PLACEHOLDER"', inner)


def raises_invalid_datafile(datafile: Any) -> str:
    with pytest.raises(OptimizelyError) as caught:
        AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher())
    assert type(caught.value) is InvalidDatafileError, caught.value
    return str(caught.value)


@pytest.mark.parametrize("as_text", [False, True])
def test_a_list_as_version_is_an_invalid_datafile(as_text: bool) -> None:
    datafile = {**DATAFILE, "version": []}
    message = raises_invalid_datafile(json.dumps(datafile) if as_text else datafile)
    assert "version" in message


@pytest.mark.parametrize("field", ["version", "revision", "anonymizeIP"])
def test_a_5000_digit_integer_is_an_invalid_datafile(field: str) -> None:
    text = json.dumps({**DATAFILE, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', "9" * 5000)
    assert field in raises_invalid_datafile(text)
    assert field in raises_invalid_datafile(text.encode())


@pytest.mark.parametrize("depth", [101, 486, 700, 975, 1000, 3000])
@pytest.mark.parametrize("where", ["audience", "typed", "experiment"])
def test_conditions_nested_too_deep_are_refused_at_load(depth: int, where: str) -> None:
    """Items 12 and 13: ~1,000 deep raised RecursionError; 486-975 deep loaded and then decided differently at
    WARNING and at INFO."""
    field = {"audience": "audiences[0].conditions", "typed": "typedAudiences", "experiment": "experiments"}[where]
    text = with_deep_conditions(depth, where)
    assert field in raises_invalid_datafile(text)
    assert field in raises_invalid_datafile(text.encode())
    if depth < 700:  # json cannot turn deeper text into a dict, nor serialise one
        assert field in raises_invalid_datafile(json.loads(text))


def test_other_free_form_values_nested_too_deep_are_refused() -> None:
    deep = deepen("x", 150)
    assert "anonymizeIP" in raises_invalid_datafile({**DATAFILE, "anonymizeIP": deep})
    experiments = copy.deepcopy(DATAFILE["experiments"])
    experiments[0]["cmab"] = {"attributeIds": deep, "trafficAllocation": 5000}
    assert "experiments[0].cmab" in raises_invalid_datafile({**DATAFILE, "experiments": experiments})


def test_a_datafile_with_a_lone_surrogate_in_its_text_is_an_invalid_datafile() -> None:
    text = json.dumps(DATAFILE).replace('"revision": "', '"revision": "\ud800')
    raises_invalid_datafile(text)
    # As a dict it is JSON-encodable (escaped), so it loads; the revision is sent escaped.
    AsyncOptimizely(datafile={**DATAFILE, "revision": "\ud800"}, event_dispatcher=RecordingDispatcher())


HOSTILE_VALUES: list[Any] = [
    None,
    [],
    {},
    "",
    "\ud800",
    "x" * 100_000,
    10**50,
    -1,
    1e308,
    float("nan"),
    float("inf"),
    True,
    deepen("x", 120),
    [[[]]],
    {"": {"": None}},
    [None, 1, "a"],
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:3]):
            out += paths(child, (*prefix, index))
    return out


ALL_PATHS = paths(DATAFILE)


def replaced_at(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    datafile = copy.deepcopy(DATAFILE)
    node: Any = datafile
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return datafile


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), st.sampled_from(HOSTILE_VALUES), st.booleans())
def test_any_unusable_datafile_raises_invalid_datafile_error_only(
    path: tuple[Any, ...], value: Any, as_text: bool
) -> None:
    """Item 12: a hostile value anywhere in the datafile either loads or raises InvalidDatafileError; a client
    that loads still decides without raising."""
    datafile = replaced_at(path, value)
    try:
        client = AsyncOptimizely(
            datafile=json.dumps(datafile) if as_text else datafile, event_dispatcher=RecordingDispatcher()
        )
    except InvalidDatafileError as exc:
        # It names the field: one on the path of the bad value, or (a broken reference) the one referring to it.
        assert any(str(key) in str(exc) for key in [*path, *DATAFILE] if isinstance(key, str)), str(exc)
        return

    async def decide_some() -> None:
        for flag in ("new_checkout", "dark_mode", "recommendations", "legacy_search"):
            assert await client.is_feature_enabled(flag, "user-1", {"country": "US", "age": 30}) in (True, False)
            user = client.create_user_context("user-2", {"device": "iphone"})
            assert user is not None
            await user.decide(flag, ["INCLUDE_REASONS"])
        for key in ("onboarding_flow", "pricing_page_layout"):
            await client.get_variation(key, "user-3", {"age": 20, "app_version": "2.1"})
        client.get_optimizely_config()

    anyio.run(decide_some)


# ------------------------------------------------------------------ item 13: the same answer at every log level

USERS: list[tuple[str, dict[str, Any]]] = [
    (f"user-{i}", attributes)
    for i in range(40)
    for attributes in (
        {"country": "US", "age": 30, "app_version": "2.4.0", "device": "iphone"},
        {"country": "DE", "age": 19, "app_version": "1.9", "device": "android"},
        {"age": 70},
    )
]


async def decisions_at(level: int, datafile: dict[str, Any]) -> list[Any]:
    logger = logging.getLogger("optimizely_async")
    old_level = logger.level
    logger.setLevel(level)
    try:
        client = AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher())
        out: list[Any] = []
        for user_id, attributes in USERS:
            out.append(await client.get_variation("onboarding_flow", user_id, attributes))
            out.append(await client.get_variation("pricing_page_layout", user_id, attributes))
            out.append(await client.is_feature_enabled("recommendations", user_id, attributes))
            user = client.create_user_context(user_id, attributes)
            assert user is not None
            decision = await user.decide("new_checkout")
            explained = await user.decide("new_checkout", ["INCLUDE_REASONS"])
            assert explained.variation_key == decision.variation_key
            out.append(decision.variation_key)
        return out
    finally:
        logger.setLevel(old_level)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["audience", "typed", "experiment"])
async def test_the_deepest_supported_conditions_decide_alike_at_every_log_level(where: str) -> None:
    datafile = json.loads(with_deep_conditions(MAX_CONDITION_DEPTH, where))
    answers = {level: await decisions_at(level, datafile) for level in (logging.WARNING, logging.INFO, logging.DEBUG)}
    assert answers[logging.WARNING] == answers[logging.INFO] == answers[logging.DEBUG]
    # ... and alike the official SDK's, which decides up to about 490 levels.
    official, _, _ = make_official(datafile)
    try:
        expected: list[Any] = []
        for user_id, attributes in USERS:
            expected.append(official.get_variation("onboarding_flow", user_id, attributes))
            expected.append(official.get_variation("pricing_page_layout", user_id, attributes))
            expected.append(official.is_feature_enabled("recommendations", user_id, attributes))
            expected.append(official.create_user_context(user_id, attributes).decide("new_checkout").variation_key)
    finally:
        official.close()
    assert answers[logging.WARNING] == expected


# ------------------------------------------------------------------ item 14: the never-raise promise


async def healthy(client: AsyncOptimizely, sink: SinkServer, user_id: str = "after") -> None:
    """The client still decides and delivers: an impression and a conversion reach the sink."""
    before = len(visitors(sink))
    assert await client.activate("checkout_button_color", user_id) in {"control", "green", "orange"}
    await client.track("purchase", user_id, {"country": "US"}, {"revenue": 100})
    user = client.create_user_context(user_id, {"country": "US"})
    assert user is not None
    decision = await user.decide("new_checkout")
    assert decision.flag_key == "new_checkout"
    await client.flush()
    assert visitors(sink)[before:].count(user_id) >= 2, visitors(sink)


def visitors(sink: SinkServer) -> list[str]:
    return [v["visitor_id"] for r in sink.received for v in r.payload["visitors"]]


@pytest.mark.anyio
async def test_decision_contexts_and_forced_decisions_whose_dunders_raise() -> None:
    async with serve_sink() as sink, AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url) as client:
        user = client.create_user_context("u")
        assert user is not None
        good_context = OptimizelyDecisionContext("new_checkout")
        for context in (RaisingDunders(), OptimizelyDecisionContext(RaisingDunders()), good_context):  # type: ignore[arg-type]
            for decision in (RaisingDunders(), OptimizelyForcedDecision(RaisingDunders())):  # type: ignore[arg-type]
                assert user.set_forced_decision(context, decision) is False  # type: ignore[arg-type]
            assert user.get_forced_decision(context) is None
            assert user.remove_forced_decision(context) is False
        assert user.remove_all_forced_decisions() is True
        # A context whose keys are lying str subclasses is stored under the plain strings they hold.
        lying = OptimizelyDecisionContext(StrEq("new_checkout"), StrEqRaises("rule"))
        assert user.set_forced_decision(lying, OptimizelyForcedDecision(StrEqRaises("on"))) is True
        assert user.get_forced_decision(OptimizelyDecisionContext("new_checkout", "rule")) == OptimizelyForcedDecision(
            "on"
        )
        assert user.get_forced_decision(good_context) is None  # StrEq would have matched any flag key
        assert (await user.decide("new_checkout")).flag_key == "new_checkout"
        await healthy(client, sink)


@pytest.mark.anyio
async def test_notification_listeners_with_hostile_types_and_callbacks() -> None:
    async with serve_sink() as sink, AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url) as client:
        center = client.notification_center
        seen: list[Any] = []

        def on_decision(*args: Any) -> None:
            seen.append(args)

        decision_type = "DECISION:type, user_id, attributes, decision_info"
        listener_id = center.add_notification_listener(StrHashRaises(decision_type), on_decision)
        assert listener_id > 0
        assert center.add_notification_listener(StrHashRaises(decision_type), on_decision) == -1  # a duplicate
        assert center.add_notification_listener(NotificationType.TRACK, MappingLies()) == -1  # not callable
        assert center.add_notification_listener(MappingLies(), seen.append) == -1  # type: ignore[arg-type]
        assert center.add_notification_listener(RaisingDunders(), seen.append) == -1  # type: ignore[arg-type]
        assert center.add_notification_listener(NotificationType.TRACK, RaisingDunders()) == -1  # type: ignore[arg-type]
        assert center.remove_notification_listener(RaisingDunders()) is False  # type: ignore[arg-type]
        center.clear_notification_listeners(StrHashRaises("nope"))
        center.clear_notification_listeners(RaisingDunders())  # type: ignore[arg-type]
        await healthy(client, sink)
        assert seen, "the listener registered with a str subclass type still runs"
        assert center.remove_notification_listener(listener_id) is True


@pytest.mark.anyio
async def test_close_with_a_timeout_whose_arithmetic_raises_still_drains() -> None:
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url)
        async with client:
            await client.track("purchase", "u", None, None)
            assert await client.wait_until_ready(timeout=FloatLies(1.0)) is True
            report = await client.close(timeout=FloatLies(5.0))
        assert report.delivered == 1, report
        assert visitors(sink) == ["u"]


@pytest.mark.anyio
async def test_a_lying_user_id_in_set_forced_variation_does_not_break_that_user() -> None:
    """``set_forced_variation(exp, StrEq("x"), v)`` made every later call for user "x" fail."""
    async with serve_sink() as sink, AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url) as client:
        for user_id in (StrEq("x"), StrEqRaises("x"), StrHashRaises("x")):
            assert client.set_forced_variation("checkout_button_color", user_id, "green") is True
            assert client.get_forced_variation("checkout_button_color", "x") == "green"
            assert client.get_forced_variation("checkout_button_color", "y") is None  # StrEq matched everyone
            assert await client.get_variation("checkout_button_color", "x") == "green"
            assert await client.activate(StrEqRaises("checkout_button_color"), "x") == "green"
            assert client.set_forced_variation("checkout_button_color", "x", None) is True
        assert client.set_forced_variation(StrEqRaises("checkout_button_color"), "x", StrEq("orange")) is True
        assert await client.get_variation("checkout_button_color", StrHashRaises("x")) == "orange"
        await healthy(client, sink, "x")


@pytest.mark.anyio
async def test_lying_attributes_and_options_cost_nothing_beyond_their_call() -> None:
    async with serve_sink() as sink, AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url) as client:
        lying = {StrEqRaises("country"): StrEqRaises("US"), StrEq("age"): FloatLies(30.0)}
        user = client.create_user_context(StrEqRaises("u"), lying)
        assert user is not None
        assert user.get_user_attributes() == {"country": "US", "age": 30.0}
        assert all(type(k) is str for k in user.get_user_attributes())
        user.set_attribute(StrEqRaises("plan"), StrEqRaises("gold"))
        options: list[Any] = [StrEqRaises("INCLUDE_REASONS"), RaisingDunders(), StrHashRaises("EXCLUDE_VARIABLES")]
        decision = await user.decide(StrEqRaises("new_checkout"), options)
        assert decision.flag_key == "new_checkout" and decision.reasons and decision.variables == {}
        # The options cache was not poisoned: plain options still work for everyone.
        plain = await user.decide("new_checkout", ["INCLUDE_REASONS"])
        assert plain.reasons and plain.variables
        assert set(await user.decide_for_keys([StrEqRaises("new_checkout"), RaisingDunders()])) >= {"new_checkout"}
        await healthy(client, sink)
