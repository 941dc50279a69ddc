"""Reserved tags (revenue, value) and the JSON check, differential against the official SDK."""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from optimizely import entities
from optimizely.event import event_factory as official_factory
from optimizely.event import user_event as official_user_event
from optimizely.helpers import event_tag_utils as official_tags

from _logcapture import Collector, at_our_levels
from optimizely_async.events.tags import check_json_encodable, parse_revenue, parse_value


@pytest.fixture(scope="module")
def logs() -> Iterator[tuple[Collector, Collector, logging.Logger]]:
    """(ours, official's, the logger handed to the official helper)."""
    ours, theirs = Collector(), Collector()
    our_logger = logging.getLogger("optimizely_async")
    their_logger = logging.getLogger("tests.official_tags")
    saved = our_logger.level
    our_logger.setLevel(logging.DEBUG)
    their_logger.setLevel(logging.DEBUG)
    our_logger.addHandler(ours)
    their_logger.addHandler(theirs)
    their_logger.propagate = False
    yield ours, theirs, their_logger
    our_logger.removeHandler(ours)
    their_logger.removeHandler(theirs)
    our_logger.setLevel(saved)


tag_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1.5", " 2 ", "1e3", "1,234", "nan", "inf", "-Infinity", "0x10", "1_000", "", "abc"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(value=tag_values)
def test_revenue_matches_official(value: Any) -> None:
    tags = {"revenue": value}
    assert parse_revenue(tags) == official_tags.get_revenue_value(tags)  # type: ignore[arg-type]


@given(value=tag_values)
def test_value_matches_official_including_logs(value: Any, logs: tuple[Collector, Collector, logging.Logger]) -> None:
    ours, theirs, their_logger = logs
    ours.records.clear()
    theirs.records.clear()
    tags = {"value": value}
    expected = official_tags.get_numeric_value(tags, their_logger)  # type: ignore[arg-type]
    got = parse_value(tags)
    if expected is None:
        assert got is None
    else:
        assert got == expected and type(got) is float
    assert ours.records == at_our_levels(theirs.records)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (None, None),
        ({}, None),
        ({"revenue": 4200}, 4200),
        ({"revenue": 0}, 0),
        ({"revenue": -5}, -5),
        ({"revenue": True}, None),
        ({"revenue": 10.5}, None),
        ({"revenue": "10"}, None),
        ({"revenue": None}, None),
    ],
)
def test_revenue_rules(tags: dict[str, Any] | None, expected: int | None) -> None:
    result = parse_revenue(tags)
    assert result == expected
    assert result is None or type(result) is int


def test_value_absent_logs_nothing(logs: tuple[Collector, Collector, logging.Logger]) -> None:
    ours = logs[0]
    ours.records.clear()
    assert parse_value(None) is None
    assert parse_value({"revenue": 1}) is None
    assert ours.records == []


@pytest.mark.parametrize(
    ("value", "expected", "debug"),
    [
        ("1.5", 1.5, None),
        (4, 4.0, None),
        (True, None, "Provided numeric value is a boolean, which is an invalid format."),
        (float("nan"), None, "Provided numeric value nan is in an invalid format."),
        ("1,234", None, "Value error while casting numeric metric value to a float."),
        ([1], None, "Numeric metric value is not in integer, float, or string form."),
        (Fraction(1, 2), None, "Numeric metric value is not in integer, float, or string form."),
        # The official SDK lets OverflowError escape here (and its flush loop dies); we reject the value.
        (10**400, None, f"Provided numeric value {10**400} is in an invalid format."),
    ],
)
def test_value_rules_and_messages(
    value: Any, expected: float | None, debug: str | None, logs: tuple[Collector, Collector, logging.Logger]
) -> None:
    ours = logs[0]
    ours.records.clear()
    assert parse_value({"value": value}) == expected
    if expected is None:
        assert ours.records == [
            (logging.DEBUG, debug),
            (
                logging.WARNING,
                "The provided numeric metric value None is in an invalid format and will not be sent to results.",
            ),
        ]
    else:
        assert ours.records == [(logging.DEBUG, f"The numeric metric value {expected} will be sent to results.")]


class _Plain:
    pass


def _circular() -> dict[str, Any]:
    tags: dict[str, Any] = {}
    tags["self"] = tags
    return tags


@pytest.mark.parametrize(
    "tags",
    [
        None,
        {},
        {"a": 1, "b": "x", "c": 1.5, "d": True, "e": None},
        {"nan": float("nan"), "inf": float("inf")},  # the official SDK sends NaN / Infinity tokens
        {"nested": {"list": [1, (2, 3)], "none": None}},
        {1: "int key", None: "none key", 2.5: "float key"},
    ],
)
def test_json_encodable_tags_pass(tags: dict[Any, Any] | None) -> None:
    assert check_json_encodable(tags) is None


@pytest.mark.parametrize(
    ("tags", "mentions"),
    [
        ({"when": datetime.datetime(2024, 1, 1)}, "datetime"),
        ({"s": {1, 2}}, "set"),
        ({"o": object()}, "object"),
        ({"o": _Plain()}, "_Plain"),
        ({(1, 2): "tuple key"}, "tuple"),
        ({"b": b"bytes"}, "bytes"),
        (_circular(), "Circular"),
    ],
)
def test_unencodable_tags_are_reported(tags: dict[Any, Any], mentions: str) -> None:
    message = check_json_encodable(tags)
    assert message is not None and mentions in message


@pytest.mark.parametrize(
    "tags",
    [
        {"when": datetime.datetime(2024, 1, 1)},
        {"s": {1, 2}},
        {"o": object()},
        {(1, 2): "tuple key"},
        {"ok": [1, {"x": None}], "nan": math.nan, 3: True},
    ],
)
def test_check_agrees_with_what_breaks_the_official_payload(tags: dict[Any, Any]) -> None:
    """Where the official SDK cannot build its payload, check_json_encodable objects, and vice versa."""
    context = official_user_event.EventContext("1", "2", "3", False, "US")
    event = entities.Event(id="9", key="k", experimentIds=[])
    conversion = official_user_event.ConversionEvent(context, event, "u", [], tags)  # type: ignore[arg-type]
    try:
        official_factory.EventFactory.create_log_event(conversion, logging.getLogger("tests.official"))
        official_ok = True
    except (TypeError, ValueError, AttributeError):
        official_ok = False
    assert (check_json_encodable(tags) is None) == official_ok
