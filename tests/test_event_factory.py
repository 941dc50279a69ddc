"""Unit tests of events/factory.py, differential against the official SDK's event factories.

The official side is ``EventFactory.build_attribute_list`` / ``UserEventFactory`` on the official
``ProjectConfig`` for the same datafile; the payloads are compared as the JSON sent (key order included),
uuid and timestamp fixed, client name and version left out.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optimizely import project_config as official_config
from optimizely.error_handler import NoOpErrorHandler
from optimizely.event.event_factory import EventFactory
from optimizely.event.user_event_factory import UserEventFactory

from _logcapture import at_our_levels, capture
from optimizely_async.client import event_context
from optimizely_async.config.project_config import ProjectConfig, parse_config
from optimizely_async.events.factory import build_attributes, build_conversion, build_impression, now_ms
from optimizely_async.events.payload import build_payload
from optimizely_async.events.tags import parse_revenue, parse_value

OUR_LOG = logging.getLogger("optimizely_async")
THEIR_LOG = logging.getLogger("tests.official_factory")
UUID, TS = "8f0e1c2a-0000-4000-8000-000000000001", 1_700_000_000_123


ATTRIBUTES = [{"id": "111094", "key": "plan"}, {"id": "111095", "key": "age"}, {"id": "111096", "key": "$opt_x"}]
FLAG = {"id": "6001", "key": "flag", "experimentIds": ["2001"], "rolloutId": "5001", "variables": []}
HOLDOUT_VARIATION = {"id": "7002", "key": "ho_off", "featureEnabled": False, "variables": []}
HOLDOUT = {"id": "7001", "key": "ho", "status": "Running", "variations": [HOLDOUT_VARIATION], "audienceIds": [],
           "trafficAllocation": [{"entityId": "7002", "endOfRange": 10000}]}  # fmt: skip


def make_datafile(bot_filtering: Any = True, attributes: list[dict[str, str]] = ATTRIBUTES) -> dict[str, Any]:
    """Two experiments (one in a layer, one with an opaque variation id), a flag with a rollout, a holdout."""
    datafile: dict[str, Any] = {
        "version": "4", "accountId": "12001", "projectId": "111001", "revision": "42", "anonymizeIP": True,
        "attributes": attributes, "audiences": [], "groups": [], "holdouts": [HOLDOUT],
        "events": [{"id": "111097", "key": "purchase", "experimentIds": []}],
        "experiments": [
            _experiment("2001", "exp_layer", "3001", [("4001", "control"), ("4002", "treatment")]),
            _experiment("2002", "exp_nolayer", "", [("4003", "a"), ("var-opaque", "opaque")]),
        ],
        "rollouts": [{"id": "5001", "experiments": [
            _experiment("2003", "rule_1", "3003", [("4004", "on")]),
            _experiment("2004", "everyone_else", "2004", [("4005", "off")]),
        ]}],
        "featureFlags": [FLAG],
    }  # fmt: skip
    if bot_filtering is not None:
        datafile["botFiltering"] = bot_filtering
    return datafile


def _experiment(exp_id: str, key: str, layer: str, variations: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": exp_id, "key": key, "layerId": layer, "status": "Running", "audienceIds": [], "forcedVariations": {},
        "variations": [{"id": i, "key": k, "featureEnabled": True, "variables": []} for i, k in variations],
        "trafficAllocation": [{"entityId": variations[0][0], "endOfRange": 10000}],
    }  # fmt: skip


def configs(datafile: dict[str, Any]) -> tuple[ProjectConfig, official_config.ProjectConfig]:
    return parse_config(datafile), official_config.ProjectConfig(json.dumps(datafile), THEIR_LOG, NoOpErrorHandler)


OURS, THEIRS = configs(make_datafile())
OUR_CONTEXT = event_context(OURS)


def ours_list(config: ProjectConfig, attributes: Any) -> list[tuple[Any, ...]]:
    return [(a.entity_id, a.key, a.type, type(a.value), a.value) for a in build_attributes(config, attributes)]


def theirs_list(config: official_config.ProjectConfig, attributes: Any) -> list[tuple[Any, ...]]:
    return [
        (a.entity_id, a.key, a.type, type(a.value), a.value)
        for a in EventFactory.build_attribute_list(attributes, config)
    ]


def signed(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Make -0.0 and 0.0 compare different."""
    return [(*i, math.copysign(1, i[4]) if type(i[4]) is float else None) for i in items]


# ----------------------------------------------------------------------------------------- attributes

KEPT = ["text", "", True, False, 0, 2**53, -(2**53), 1.5, -0.0, float(2**53)]
DROPPED = [2**53 + 1, -(2**53) - 1, 10**30, float(2**54), 1e300, math.nan, math.inf, -math.inf, None, ["a"], {"a": 1}]
KEEP_DROP = [(v, True) for v in KEPT] + [(v, False) for v in [*DROPPED, ("a",), b"bytes"]]


@pytest.mark.parametrize(("value", "kept"), KEEP_DROP, ids=[repr(v) for v, _ in KEEP_DROP])
def test_value_keep_rules_match_official(value: Any, kept: bool) -> None:
    ours, theirs = configs(make_datafile())  # a fresh config, so no cached list is reused
    attributes = {"plan": value}
    got = ours_list(ours, attributes)
    assert signed(got) == signed(theirs_list(theirs, attributes))
    assert (len(got) == 2) is kept  # the bot-filtering entry is always last
    assert got[-1] == ("$opt_bot_filtering", "$opt_bot_filtering", "custom", bool, True)


def test_non_string_keys_dropped_silently() -> None:
    attributes: dict[Any, Any] = {1: "x", None: "y", (1, 2): "z", 1.5: True, "plan": "p"}
    with capture(OUR_LOG) as logs:
        got = ours_list(parse_config(make_datafile(bot_filtering=None)), attributes)
    assert got == [("111094", "plan", "custom", str, "p")]
    assert logs == []


def test_ids_unknown_and_reserved_keys_with_official_logs() -> None:
    attributes = {"age": 30, "unknown": "u", "$opt_user_agent": "bot", "$opt_x": 1.0, "plan": "gold"}
    ours, theirs = configs(make_datafile())
    with capture(OUR_LOG) as our_logs:
        got = ours_list(ours, attributes)
    with capture(THEIR_LOG) as their_logs:
        expected = theirs_list(theirs, attributes)
    assert got == expected
    assert [a[:2] for a in got] == [
        ("111095", "age"),
        ("$opt_user_agent", "$opt_user_agent"),  # reserved and not in the datafile: its key is its id
        ("111096", "$opt_x"),  # reserved but in the datafile: its id
        ("111094", "plan"),
        ("$opt_bot_filtering", "$opt_bot_filtering"),
    ]
    assert our_logs == at_our_levels(their_logs)
    assert our_logs == [
        (logging.DEBUG, 'Attribute "unknown" is not in datafile.'),  # official: ERROR, with every event
        (
            logging.WARNING,
            "Attribute $opt_x unexpectedly has reserved prefix $opt_; using attribute ID instead of reserved "
            "attribute name.",
        ),
    ]


@pytest.mark.parametrize("bot_filtering", [True, False, None, "true", 1])
def test_bot_filtering_entry_only_for_a_bool(bot_filtering: Any) -> None:
    ours, theirs = configs(make_datafile(bot_filtering=bot_filtering))
    for attributes in (None, {}, {"plan": "p"}):
        got = ours_list(ours, attributes)
        assert got == theirs_list(theirs, attributes)
        has_entry = any(a[0] == "$opt_bot_filtering" for a in got)
        assert has_entry is isinstance(bot_filtering, bool)
        if has_entry:
            assert got[-1] == ("$opt_bot_filtering", "$opt_bot_filtering", "custom", bool, bot_filtering)


def test_true_one_and_float_one_stay_distinct_across_calls() -> None:
    ours = parse_config(make_datafile(bot_filtering=None))
    sequence = [True, 1, 1.0, True, 1.0, 1, 0, False, 0.0, -0.0, 0.0, -0.0, False]
    for value in sequence * 2:
        (attribute,) = build_attributes(ours, {"plan": value})
        assert type(attribute.value) is type(value)
        assert attribute.value == value
        if type(value) is float:
            assert math.copysign(1, attribute.value) == math.copysign(1, value)


def test_cached_list_is_per_config() -> None:
    first = parse_config(make_datafile(attributes=[{"id": "1", "key": "plan"}]))
    second = parse_config(make_datafile(attributes=[{"id": "2", "key": "plan"}], bot_filtering=False))
    attributes = {"plan": "p"}
    assert [a.entity_id for a in build_attributes(first, attributes)] == ["1", "$opt_bot_filtering"]
    assert [(a.entity_id, a.value) for a in build_attributes(second, attributes)] == [
        ("2", "p"),
        ("$opt_bot_filtering", False),
    ]
    attributes["plan"] = "q"  # mutated in place: not the list built before
    assert [a.value for a in build_attributes(second, attributes)] == ["q", False]


def test_repeat_build_logs_like_the_official() -> None:
    ours, _ = configs(make_datafile())
    attributes = {"unknown": "u", "plan": "p"}
    with capture(OUR_LOG) as logs:
        build_attributes(ours, attributes)
        build_attributes(ours, attributes)
    assert logs == [(logging.DEBUG, 'Attribute "unknown" is not in datafile.')] * 2


def test_attribute_with_empty_id_is_dropped_like_the_official() -> None:
    ours, theirs = configs(make_datafile(attributes=[{"id": "", "key": "plan"}]))
    assert ours_list(ours, {"plan": "p"}) == theirs_list(theirs, {"plan": "p"})


KEYS = st.sampled_from(["plan", "age", "$opt_x", "$opt_new", "unknown", "", 7, None])
VALUES = st.one_of(
    st.sampled_from([True, False, 1, 0, 1.0, 0.0, -0.0, 2**53, 2**53 + 1, math.nan, math.inf, None, [1], {}]),
    st.text(max_size=3),
    st.integers(),
    st.floats(),
)


#: Values equal to each other but sent differently, so consecutive dicts often differ only in a value's type.
TWINS = st.sampled_from([True, 1, 1.0, False, 0, 0.0, -0.0])
SEQUENCES = st.one_of(
    st.lists(st.dictionaries(KEYS, VALUES, max_size=5), min_size=1, max_size=6),
    st.lists(st.dictionaries(st.sampled_from(["plan", "$opt_new"]), TWINS, min_size=1, max_size=2), max_size=8),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEQUENCES)
def test_any_sequence_of_attribute_dicts_matches_official(sequence: list[dict[Any, Any]]) -> None:
    for attributes in sequence:  # consecutive builds on one config, so the last-built cache is exercised
        with capture(OUR_LOG, logging.CRITICAL), capture(THEIR_LOG, logging.CRITICAL):
            assert signed(ours_list(OURS, attributes)) == signed(theirs_list(THEIRS, attributes))


# ---------------------------------------------------------------------------------------- impressions


def official_params(user_event: Any) -> dict[str, Any]:
    user_event.uuid, user_event.timestamp = UUID, TS
    params: dict[str, Any] = EventFactory.create_log_event(user_event, THEIR_LOG).params
    return params


def our_params(event: Any) -> dict[str, Any]:
    return build_payload([event])


def comparable(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in params.items() if k not in ("client_name", "client_version")})


def _lookup(experiment_id: str | None, variation_id: str | None) -> tuple[Any, Any, Any]:
    if experiment_id is None:
        return None, None, None
    holdouts = {h.id: h for h in OURS.global_holdouts}
    if experiment_id in holdouts:
        ours: Any = holdouts[experiment_id]
        theirs: Any = THEIRS.get_holdout(experiment_id)
    else:
        ours, theirs = OURS.experiments_by_id[experiment_id], THEIRS.get_experiment_from_id(experiment_id)
    variation = ours.variations_by_id.get(variation_id) if variation_id is not None else None
    return ours, variation, theirs


IMPRESSIONS = {
    "feature test in a layer": ("2001", "4002", "flag", "exp_layer", "feature-test", True, None),
    "rollout rule": ("2003", "4004", "flag", "rule_1", "rollout", True, None),
    "legacy, empty layer id": ("2002", "4003", "", "exp_nolayer", "experiment", True, None),
    "opaque variation id": ("2002", "var-opaque", "", "exp_nolayer", "experiment", True, None),
    "no rule matched": (None, None, "flag", "", "rollout", False, None),
    "holdout": ("7001", "7002", "flag", "ho", "holdout", False, None),
    "variation not in the flag": ("2002", "4003", "flag", "exp_nolayer", "feature-test", True, None),
    "cmab uuid": ("2001", "4001", "flag", "exp_layer", "feature-test", True, "cmab-123"),
}


@pytest.mark.parametrize("case", list(IMPRESSIONS))
def test_impression_payload_matches_official(case: str) -> None:
    exp_id, var_id, flag_key, rule_key, rule_type, enabled, cmab_uuid = IMPRESSIONS[case]
    ours_exp, ours_var, their_exp = _lookup(exp_id, var_id)
    attributes = {"plan": "gold", "age": 41, "nope": 1}
    with capture(OUR_LOG, logging.CRITICAL), capture(THEIR_LOG, logging.CRITICAL):
        theirs = UserEventFactory.create_impression_event(
            THEIRS, their_exp, var_id, flag_key, rule_key, rule_type, enabled, "user_1", attributes, cmab_uuid
        )
        event = build_impression(
            OURS, OUR_CONTEXT, ours_exp, ours_var, flag_key, rule_key, rule_type, enabled, "user_1",
            attributes, cmab_uuid, event_uuid=UUID, timestamp=TS,
        )  # fmt: skip
    assert comparable(our_params(event)) == comparable(official_params(theirs))


def impression(exp_id: str | None, var_id: str | None, *args: Any, **kwargs: Any) -> Any:
    exp, variation, _ = _lookup(exp_id, var_id)
    return build_impression(OURS, OUR_CONTEXT, exp, variation, *args, **kwargs)


def test_impression_ids_and_metadata() -> None:
    event = impression("2001", "4002", "flag", "exp_layer", "feature-test", True, "u", None, "")
    assert (event.campaign_id, event.experiment_id, event.variation_id) == ("3001", "2001", "4002")
    meta = event.metadata
    assert (meta.flag_key, meta.rule_key, meta.rule_type, meta.variation_key, meta.enabled) == (
        "flag", "exp_layer", "feature-test", "treatment", True,
    )  # fmt: skip
    assert meta.cmab_uuid is None  # an empty cmab uuid is not sent
    event = impression("2002", "var-opaque", "", "exp_nolayer", "experiment", False, "u", None)
    assert (event.campaign_id, event.variation_id, event.metadata.variation_key) == ("2002", None, "opaque")
    event = impression(None, None, "flag", "", "rollout", False, "u", None)
    assert (event.campaign_id, event.experiment_id, event.variation_id) == ("", "", None)
    assert event.metadata.variation_key == ""


def test_timestamps_default_to_now_ms() -> None:
    before = round(time.time() * 1000)
    stamp = now_ms()
    event = impression(None, None, "flag", "", "rollout", False, "u", None)
    after = round(time.time() * 1000)
    assert isinstance(stamp, int)
    assert before <= stamp <= event.timestamp <= after
    assert impression(None, None, "f", "", "rollout", False, "u", None, timestamp=5).timestamp == 5


# ---------------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    "tags",
    [None, {"revenue": 4200, "value": 1.5, "category": "shoes"}, {"revenue": 10.5, "value": "2", "n": None}],
)
def test_conversion_payload_matches_official(tags: dict[str, Any] | None) -> None:
    attributes = {"plan": "gold", "$opt_x": False, "unknown": 1, "age": math.nan}
    with capture(OUR_LOG, logging.CRITICAL), capture(THEIR_LOG, logging.CRITICAL):
        theirs = UserEventFactory.create_conversion_event(THEIRS, "purchase", "user_1", attributes, tags)
        event = build_conversion(
            OURS, OUR_CONTEXT, "111097", "purchase", "user_1", attributes, tags,
            parse_revenue(tags), parse_value(tags), event_uuid=UUID, timestamp=TS,
        )  # fmt: skip
    assert comparable(our_params(event)) == comparable(official_params(theirs))
    assert (event.event_id, event.event_key, event.user_id, event.uuid, event.timestamp) == (
        "111097", "purchase", "user_1", UUID, TS,
    )  # fmt: skip
