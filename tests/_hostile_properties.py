"""The hostile-input property suite (issue 10, "How it is checked"): every public method of the client and of
the user context, called with hostile values, never raises, never crashes and never kills the client; afterwards
the client still decides and delivers to a real sink on 127.0.0.1.

Run by tests/test_hostile_inputs.py in a child pytest process, so that a crash (a C extension fed a value it
cannot take) fails that one test instead of ending the run. Not collected by the main run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _sink_server import SinkServer, serve_sink
from _support.hostile import (
    DictLies,
    FloatLies,
    IntLies,
    MappingLies,
    RaisingDunders,
    StrEq,
    StrEqRaises,
    StrHashRaises,
    deep_dict,
    deep_list,
    make_cycle,
    raiser,
)
from optimizely_async import AsyncOptimizely, NotificationType
from optimizely_async.decide import OptimizelyDecision
from optimizely_async.user_context import OptimizelyDecisionContext, OptimizelyForcedDecision, OptimizelyUserContext

DATAFILE = json.loads(
    (Path(__file__).parent.parent / "src" / "optimizely_async" / "example_datafile.json").read_text("utf-8")
)
FLAGS = [f["key"] for f in DATAFILE["featureFlags"]]
EXPERIMENTS = [e["key"] for e in DATAFILE["experiments"]]
EVENTS = [e["key"] for e in DATAFILE["events"]]
ATTRIBUTES = [a["key"] for a in DATAFILE["attributes"]] + ["$opt_bucketing_id"]
VARIABLES = sorted({v["key"] for f in DATAFILE["featureFlags"] for v in f["variables"]})
VARIATIONS = sorted({v["key"] for e in DATAFILE["experiments"] for v in e["variations"]})
KNOWN = FLAGS + EXPERIMENTS + EVENTS + ATTRIBUTES + VARIABLES + VARIATIONS
KNOWN += [t.value for t in NotificationType] + ["INCLUDE_REASONS", "EXCLUDE_VARIABLES", "ENABLED_FLAGS_ONLY"]


surrogates = st.text(alphabet=st.characters(categories=["Cs", "Lu", "Nd", "Zs", "Cc"]), max_size=8)
known = st.sampled_from(KNOWN)
lying_str = st.builds(lambda cls, text: cls(text), st.sampled_from([StrEq, StrEqRaises, StrHashRaises]), known)
scalars = st.one_of(
    st.none(),
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.just(10**4000),  # hypothesis cannot print an int of more than 4,300 digits
    st.just(2**53 + 1),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.just("x" * 100_000),
    st.just(b"bytes"),
    surrogates,
    known,
)
hostile_objects = st.one_of(
    st.builds(RaisingDunders),
    lying_str,
    st.builds(FloatLies, st.floats(allow_nan=True)),
    st.builds(IntLies, st.integers(-5, 5)),
    st.builds(lambda d: deep_list(d), st.sampled_from([50, 500, 1500])),
    st.builds(lambda d: deep_dict(d), st.sampled_from([50, 500, 1500])),
    st.builds(make_cycle),
    st.builds(MappingLies),
    st.builds(lambda: DictLies(country="US")),
    st.just(raiser),
    st.just(object()),
)
hostile = st.one_of(scalars, hostile_objects, st.lists(st.one_of(scalars, hostile_objects), max_size=3))
keys = st.one_of(known, known, hostile)
#: Keys a dict can hold (hashable, and never raising when two of them are compared).
dict_keys = st.one_of(known, st.sampled_from(ATTRIBUTES), surrogates, st.builds(StrEq, known))
attribute_maps = st.dictionaries(dict_keys, st.one_of(scalars, hostile_objects), max_size=4)
tag_maps = st.dictionaries(dict_keys, hostile, max_size=3)
attributes = st.one_of(st.none(), attribute_maps, hostile)
contexts = st.one_of(
    st.builds(OptimizelyDecisionContext, keys, st.one_of(st.none(), keys)),
    hostile,
)
forced = st.one_of(st.builds(OptimizelyForcedDecision, st.one_of(st.none(), keys)), hostile)
options = st.one_of(st.none(), st.lists(st.one_of(known, hostile), max_size=3), hostile)


# ------------------------------------------------------------------ the calls

Call = Callable[[AsyncOptimizely, OptimizelyUserContext, st.DataObject], Awaitable[None]]


def expect(result: Any, *types: type) -> None:
    assert isinstance(result, types), (type(result), result)


async def call_decisions(client: AsyncOptimizely, user: OptimizelyUserContext, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["activate", "get_variation", "is_feature_enabled", "all_vars", "enabled"]))
    key, user_id, attrs = data.draw(keys), data.draw(keys), data.draw(attributes)
    if method == "activate":
        expect(await client.activate(key, user_id, attrs), str, type(None))
    elif method == "get_variation":
        expect(await client.get_variation(key, user_id, attrs), str, type(None))
    elif method == "is_feature_enabled":
        expect(await client.is_feature_enabled(key, user_id, attrs), bool)
    elif method == "all_vars":
        expect(await client.get_all_feature_variables(key, user_id, attrs), dict, type(None))
    else:
        expect(await client.get_enabled_features(user_id, attrs), list)


async def call_variables(client: AsyncOptimizely, user: OptimizelyUserContext, data: st.DataObject) -> None:
    getter = getattr(
        client,
        data.draw(
            st.sampled_from(
                [
                    "get_feature_variable",
                    "get_feature_variable_boolean",
                    "get_feature_variable_double",
                    "get_feature_variable_integer",
                    "get_feature_variable_string",
                    "get_feature_variable_json",
                ]
            )
        ),
    )
    await getter(data.draw(keys), data.draw(keys), data.draw(keys), data.draw(attributes))


async def call_track(client: AsyncOptimizely, user: OptimizelyUserContext, data: st.DataObject) -> None:
    tags = data.draw(st.one_of(st.none(), tag_maps, hostile))
    expect(await client.track(data.draw(keys), data.draw(keys), data.draw(attributes), tags), type(None))


async def call_forced_variation(client: AsyncOptimizely, user: OptimizelyUserContext, data: st.DataObject) -> None:
    expect(client.set_forced_variation(data.draw(keys), data.draw(keys), data.draw(keys)), bool)
    expect(client.get_forced_variation(data.draw(keys), data.draw(keys)), str, type(None))


async def call_misc(client: AsyncOptimizely, user: OptimizelyUserContext, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["create", "config", "ready", "stats", "listeners", "flush"]))
    if method == "create":
        expect(client.create_user_context(data.draw(keys), data.draw(attributes)), OptimizelyUserContext, type(None))
    elif method == "config":
        client.get_optimizely_config()
    elif method == "ready":
        expect(await client.wait_until_ready(data.draw(st.one_of(st.just(0.01), hostile))), bool)
    elif method == "stats":
        client.stats()
    elif method == "flush":
        with anyio.fail_after(30):
            await client.flush()
    else:
        center = client.notification_center
        listener = data.draw(st.one_of(st.just(raiser), hostile))
        expect(center.add_notification_listener(data.draw(keys), listener), int)
        expect(center.remove_notification_listener(data.draw(st.one_of(st.integers(-1, 5), hostile))), bool)
        center.clear_notification_listeners(data.draw(st.one_of(known, hostile)))


async def call_user(client: AsyncOptimizely, user: OptimizelyUserContext, data: st.DataObject) -> None:
    method = data.draw(
        st.sampled_from(["decide", "decide_for_keys", "decide_all", "track_event", "attribute", "forced", "json"])
    )
    if method == "decide":
        expect(await user.decide(data.draw(keys), data.draw(options)), OptimizelyDecision)
    elif method == "decide_for_keys":
        key_list = data.draw(st.one_of(st.lists(keys, max_size=3), hostile))
        expect(await user.decide_for_keys(key_list, data.draw(options)), dict)
    elif method == "decide_all":
        expect(await user.decide_all(data.draw(options)), dict)
    elif method == "track_event":
        tags = data.draw(st.one_of(st.none(), tag_maps, hostile))
        expect(await user.track_event(data.draw(keys), tags), type(None))
    elif method == "attribute":
        user.set_attribute(data.draw(keys), data.draw(hostile))
        expect(user.get_user_attributes(), dict)
    elif method == "json":
        expect(user.as_json(), dict)
    else:
        context = data.draw(contexts)
        expect(user.set_forced_decision(context, data.draw(forced)), bool)
        user.get_forced_decision(data.draw(contexts))
        expect(user.remove_forced_decision(data.draw(contexts)), bool)
        if data.draw(st.booleans()):
            expect(user.remove_all_forced_decisions(), bool)


CALLS: list[Call] = [call_decisions, call_variables, call_track, call_forced_variation, call_misc, call_user]


async def still_healthy(client: AsyncOptimizely, sink: SinkServer) -> None:
    """The client still decides, and an impression and a conversion reach the sink."""
    before = len(sink.received)
    assert await client.activate("checkout_button_color", "healthy-user") in {"control", "green", "orange"}
    await client.track("purchase", "healthy-user", {"country": "US"}, {"revenue": 5})
    user = client.create_user_context("healthy-user", {"country": "US", "age": 30})
    assert user is not None
    assert (await user.decide("new_checkout")).flag_key == "new_checkout"
    with anyio.fail_after(30):
        await client.flush()
    visitors = [v["visitor_id"] for r in sink.received[before:] for v in r.payload["visitors"]]
    assert visitors.count("healthy-user") >= 2, (visitors, client.stats())


async def run_calls(data: st.DataObject) -> None:
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url, batch_size=5, enqueue_timeout=0.5)
        async with client:
            user = client.create_user_context("hostile-user", {"country": "US"})
            assert user is not None
            for _ in range(data.draw(st.integers(1, 8))):
                call = data.draw(st.sampled_from(CALLS))
                await call(client, user, data)
            client.notification_center.clear_all_notification_listeners()
            await still_healthy(client, sink)
            report = await client.close(timeout=data.draw(st.one_of(st.none(), st.just(10.0), hostile)))
        assert report.queued == 0 and report.in_flight == 0, report


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "80")), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(data=st.data())
def test_every_public_method_survives_hostile_values(backend: str, data: st.DataObject) -> None:
    anyio.run(run_calls, data, backend=backend)
