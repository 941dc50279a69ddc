"""The wire payload, differential against the official SDK's EventFactory (key order included)."""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from optimizely import entities
from optimizely.event import event_factory as official_factory
from optimizely.event import payload as official_payload
from optimizely.event import user_event as official_user_event

from optimizely_async import defaults
from optimizely_async._version import __version__
from optimizely_async.events.models import (
    ConversionEvent,
    DecisionMetadata,
    EventContext,
    ImpressionEvent,
    UserEvent,
    VisitorAttribute,
)
from optimizely_async.events.payload import RequestBuilder, build_payload, build_request, encode_payload
from optimizely_async.events.tags import parse_revenue, parse_value

_LOG = logging.getLogger("tests.official_payload")
ATTRIBUTES = [("111094", "test_attribute", "test_value"), ("$opt_bot_filtering", "$opt_bot_filtering", True)]


def our_context(*, project: str = "111001", revision: str = "42", anonymize_ip: bool = False) -> EventContext:
    return EventContext(
        account_id="12001",
        project_id=project,
        revision=revision,
        anonymize_ip=anonymize_ip,
        endpoint=defaults.EVENT_ENDPOINTS["US"],
    )


def their_context(*, anonymize_ip: bool = False) -> official_user_event.EventContext:
    return official_user_event.EventContext("12001", "111001", "42", anonymize_ip, "US")


def pair_impression(
    *,
    layer_id: str = "111182",
    experiment_id: str = "111127",
    variation: tuple[str, str] | None = ("111128", "control"),
    flag_key: str = "flag",
    rule_key: str = "test_experiment",
    rule_type: str = "experiment",
    enabled: bool = True,
    cmab_uuid: str | None = None,
    attributes: list[tuple[str, str, Any]] = ATTRIBUTES,
    anonymize_ip: bool = False,
) -> tuple[ImpressionEvent, official_user_event.ImpressionEvent]:
    """The same impression, built for us and for the official SDK (same uuid and timestamp)."""
    event_uuid, timestamp = str(uuid.uuid4()), 1_700_000_000_123
    experiment = entities.Experiment(
        id=experiment_id,
        key=rule_key,
        status="Running",
        audienceIds=[],
        variations=[],
        forcedVariations={},
        trafficAllocation=[],
        layerId=layer_id,
    )
    their_variation = entities.Variation(id=variation[0], key=variation[1]) if variation else None
    theirs = official_user_event.ImpressionEvent(
        their_context(anonymize_ip=anonymize_ip),
        "user_1",
        experiment,
        [official_payload.VisitorAttribute(i, k, "custom", v) for i, k, v in attributes],
        their_variation,
        flag_key,
        rule_key,
        rule_type,
        enabled,
        None,
        cmab_uuid,
    )
    theirs.uuid, theirs.timestamp = event_uuid, timestamp
    ours = ImpressionEvent(
        context=our_context(anonymize_ip=anonymize_ip),
        user_id="user_1",
        attributes=tuple(VisitorAttribute(entity_id=i, key=k, value=v) for i, k, v in attributes),
        campaign_id=layer_id,
        experiment_id=experiment_id,
        variation_id=variation[0] if variation else None,
        metadata=DecisionMetadata(
            flag_key=flag_key,
            rule_key=rule_key,
            rule_type=rule_type,
            variation_key=variation[1] if variation else "",
            enabled=enabled,
            cmab_uuid=cmab_uuid,
        ),
        timestamp=timestamp,
        uuid=event_uuid,
    )
    return ours, theirs


def pair_conversion(
    tags: dict[Any, Any] | None, *, attributes: list[tuple[str, str, Any]] = ATTRIBUTES
) -> tuple[ConversionEvent, official_user_event.ConversionEvent]:
    event_uuid, timestamp = str(uuid.uuid4()), 1_700_000_000_456
    theirs = official_user_event.ConversionEvent(
        their_context(),
        entities.Event(id="111095", key="purchase", experimentIds=[]),
        "user_2",
        [official_payload.VisitorAttribute(i, k, "custom", v) for i, k, v in attributes],
        tags,  # type: ignore[arg-type]
    )
    theirs.uuid, theirs.timestamp = event_uuid, timestamp
    # model_construct: the official SDK accepts non-str tag keys, which our model's validation would refuse.
    ours = ConversionEvent.model_construct(
        context=our_context(),
        user_id="user_2",
        attributes=tuple(VisitorAttribute(entity_id=i, key=k, value=v) for i, k, v in attributes),
        event_id="111095",
        event_key="purchase",
        revenue=parse_revenue(tags),
        value=parse_value(tags),
        tags=tags,
        timestamp=timestamp,
        uuid=event_uuid,
    )
    return ours, theirs


def official_payload_of(events: list[Any]) -> dict[str, Any]:
    log_event = official_factory.EventFactory.create_log_event(events, _LOG)
    assert log_event is not None
    params: dict[str, Any] = log_event.params
    return params


def assert_same_payload(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["client_name"] == defaults.CLIENT_NAME
    assert ours["client_version"] == __version__
    ours = {**ours, "client_name": "-", "client_version": "-"}
    theirs = {**theirs, "client_name": "-", "client_version": "-"}
    assert ours == theirs
    # json.dumps keeps insertion order, so equal strings mean equal key order at every level.
    assert json.dumps(ours) == json.dumps(theirs)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"cmab_uuid": "cmab-123"},
        {"anonymize_ip": True, "enabled": False},
        {"rule_type": "feature-test", "flag_key": "f", "rule_key": "r"},
        {"rule_type": "rollout", "layer_id": "", "experiment_id": "default-rollout-1"},
        {"variation": None, "rule_key": "", "layer_id": "", "experiment_id": "", "enabled": False},  # null decision
        {"variation": ("not-numeric", "v"), "layer_id": "opaque-layer"},
        {"variation": ("007", "v")},
        {"attributes": []},
        {"attributes": [("1", "a", None)]},  # a None value loses its "value" key, as in the official
    ],
)
def test_impression_matches_official(options: dict[str, Any]) -> None:
    ours, theirs = pair_impression(**options)
    assert_same_payload(build_payload([ours]), official_payload_of([theirs]))


@pytest.mark.parametrize(
    "tags",
    [
        None,
        {},
        {"revenue": 4200, "value": 1.5, "category": "shoes"},
        {"revenue": 10.5, "value": None},  # sent as tags {"revenue": 10.5} only
        {"value": "2.5", "revenue": "3"},
        {"value": True, "revenue": True},
        {"tags": None, "decisions": None, "events": None, "x": {"value": None, "revenue": 1}},
        {"deep": [{"revenue": None, "k": [{"tags": None}]}, (1, 2)]},
        {1: "int", 2.5: "float", None: "none", False: "bool"},
        {"nan": float("nan"), "inf": float("-inf")},
        {"unicode": "äöü €", "empty": ""},
    ],
)
def test_conversion_matches_official(tags: dict[Any, Any] | None) -> None:
    ours, theirs = pair_conversion(tags)
    ours_payload, theirs_payload = build_payload([ours]), official_payload_of([theirs])
    client = {"client_name": ours_payload["client_name"], "client_version": ours_payload["client_version"]}
    # Compared as JSON text: equal key order at every level, and NaN tags compare equal.
    assert json.dumps(ours_payload) == json.dumps({**theirs_payload, **client})
    assert "decisions" not in ours_payload["visitors"][0]["snapshots"][0]


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
tag_keys = st.one_of(st.sampled_from(["revenue", "value", "tags", "decisions", "events", "k"]), st.text(max_size=4))
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(tag_keys, children, max_size=3),
    max_leaves=12,
)


@given(tags=st.one_of(st.none(), st.dictionaries(tag_keys, json_values, max_size=5)))
def test_conversion_tags_property(tags: dict[str, Any] | None) -> None:
    ours, theirs = pair_conversion(tags)
    assert_same_payload(build_payload([ours]), official_payload_of([theirs]))


def test_batch_of_several_events_matches_official() -> None:
    pairs: list[tuple[UserEvent, Any]] = [
        pair_conversion({"revenue": 1}),
        pair_impression(),
        pair_conversion(None),
        pair_impression(enabled=False),
    ]
    ours = build_payload([p[0] for p in pairs])
    theirs = official_payload_of([p[1] for p in pairs])
    assert_same_payload(ours, theirs)
    assert [v["visitor_id"] for v in ours["visitors"]] == ["user_2", "user_1", "user_2", "user_1"]


def test_top_level_key_order() -> None:
    payload = build_payload([pair_impression()[0]])
    assert list(payload) == [
        "account_id",
        "project_id",
        "revision",
        "client_name",
        "client_version",
        "anonymize_ip",
        "enrich_decisions",
        "visitors",
    ]
    assert list(payload["visitors"][0]) == ["snapshots", "attributes", "visitor_id"]
    assert list(payload["visitors"][0]["snapshots"][0]) == ["events", "decisions"]
    assert payload["enrich_decisions"] is True


def test_context_comes_from_the_first_event() -> None:
    first = pair_conversion(None)[0].model_copy(update={"context": our_context(project="p1", revision="7")})
    second = pair_conversion(None)[0].model_copy(update={"context": our_context(project="p2", revision="8")})
    payload = build_payload([first, second])
    assert (payload["project_id"], payload["revision"]) == ("p1", "7")
    assert len(payload["visitors"]) == 2


def test_missing_uuids_are_generated_per_event() -> None:
    events = [pair_conversion(None)[0].model_copy(update={"uuid": None}) for _ in range(3)]
    uuids = [v["snapshots"][0]["events"][0]["uuid"] for v in build_payload(events)["visitors"]]
    assert len(set(uuids)) == 3
    assert all(uuid.UUID(u).version == 4 for u in uuids)
    kept = pair_conversion(None)[0]
    assert build_payload([kept])["visitors"][0]["snapshots"][0]["events"][0]["uuid"] == kept.uuid


def test_build_payload_needs_events() -> None:
    with pytest.raises(ValueError):
        build_payload([])


def test_encode_payload_round_trips() -> None:
    payload = build_payload([pair_conversion({"nan": float("nan"), "text": "äö"})[0], pair_impression()[0]])
    body = encode_payload(payload)
    assert isinstance(body, bytes)
    body.decode("ascii")  # non-ASCII is escaped, so lone surrogates cannot break the encoding
    assert b"NaN" in body
    decoded = json.loads(body)
    assert json.dumps(decoded) == json.dumps(payload)


def test_build_request_uses_first_endpoint_and_counts_events() -> None:
    eu = our_context().model_copy(update={"endpoint": defaults.EVENT_ENDPOINTS["EU"]})
    first = pair_conversion(None)[0].model_copy(update={"context": eu})
    request, bad = build_request([first, pair_impression()[0]])
    assert bad == [] and request is not None
    assert request.url == defaults.EVENT_ENDPOINTS["EU"]
    assert request.event_count == 2
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == request.payload


def test_build_request_sets_aside_unencodable_events() -> None:
    good: list[UserEvent] = [pair_conversion({"ok": 1})[0], pair_impression()[0]]
    bad = pair_conversion(None)[0].model_copy(update={"tags": {"when": datetime.datetime(2024, 1, 1)}})
    request, rejected = build_request([good[0], bad, good[1]])
    assert rejected == [bad]
    assert request is not None and request.event_count == 2
    assert [v["visitor_id"] for v in request.payload["visitors"]] == ["user_2", "user_1"]
    nothing, all_bad = build_request([bad])
    assert nothing is None and all_bad == [bad]


def test_request_built_in_steps_is_byte_for_byte_the_whole_payload() -> None:
    events: list[UserEvent] = [
        pair_conversion({"n": i, "nan": float("nan"), "text": "äö"})[0] if i % 2 else pair_impression()[0]
        for i in range(7)
    ]
    one_shot, _ = build_request(events)
    builder = RequestBuilder()
    for start in range(0, len(events), 3):
        builder.add(events[start : start + 3])
    builder.add([])
    stepwise = builder.finish()
    assert one_shot is not None and stepwise is not None
    assert stepwise.body == one_shot.body == encode_payload(one_shot.payload)
    assert stepwise.payload == one_shot.payload and stepwise.event_count == 7
    assert RequestBuilder().finish() is None


def test_request_builder_sets_aside_bad_events_within_a_step() -> None:
    good = [pair_conversion({"ok": i})[0] for i in range(3)]
    bad = pair_conversion(None)[0].model_copy(update={"tags": {"when": datetime.datetime(2024, 1, 1)}})
    builder = RequestBuilder()
    builder.add([good[0], bad, good[1]])
    builder.add([good[2]])
    request = builder.finish()
    assert builder.bad == [bad] and builder.events == good
    assert request is not None and request.event_count == 3
    assert json.loads(request.body) == request.payload
    assert [v["snapshots"][0]["events"][0]["tags"]["ok"] for v in request.payload["visitors"]] == [0, 1, 2]
