"""Leaf matchers: hand-derived cases, properties, and differential runs against the official SDK.

The differential tests feed the same condition and attributes to our ``evaluate_leaf`` and to the official
``CustomAttributeConditionEvaluator`` (optimizely-sdk 5.7.0) and require the same answer and the same log
records (level and text). The one deliberate difference: where the official semver comparison raises
``ValueError`` (target ``1.2.3-beta`` against user ``1.2.3-4``, i.e. ``int('beta')``; also digit strings
that ``str.isdigit`` accepts but ``int`` rejects, such as ``'²'``), we answer None (UNKNOWN).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from optimizely.helpers.condition import CustomAttributeConditionEvaluator
from optimizely.optimizely_user_context import OptimizelyUserContext

from _logcapture import capture
from optimizely_async.decision import conditions
from optimizely_async.decision.conditions import evaluate_leaf

OURS = logging.getLogger("optimizely_async")
OFFICIAL = logging.getLogger("tests.official_sdk_under_test")
DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING

SEMVER_MATCHES = ["semver_eq", "semver_gt", "semver_ge", "semver_lt", "semver_le"]
ALL_MATCHES = ["exact", "exists", "substring", "gt", "ge", "lt", "le", *SEMVER_MATCHES, "qualified"]


# --------------------------------------------------------------------------------------------- helpers


def ours(leaf: Mapping[str, Any], attributes: dict[str, Any]) -> tuple[bool | None, list[tuple[int, str]]]:
    with capture(OURS) as records:
        result = evaluate_leaf(leaf, attributes)
    return result, records


def official(
    leaf: Mapping[str, Any], attributes: dict[str, Any]
) -> tuple[bool | Exception | None, list[tuple[int, str]]]:
    """Run the official leaf evaluator on the same condition, built as its datafile decoder builds it."""
    condition = [leaf.get("name"), leaf.get("value"), leaf.get("type"), leaf.get("match")]
    user = OptimizelyUserContext(None, OFFICIAL, "user", attributes, identify=False)  # type: ignore[arg-type]
    with capture(OFFICIAL) as records:
        try:
            result: bool | Exception | None = CustomAttributeConditionEvaluator(
                [condition],  # type: ignore[list-item]
                user,
                OFFICIAL,
            ).evaluate(0)
        except Exception as error:
            result = error
    return result, records


def assert_same_as_official(leaf: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    expected, expected_logs = official(leaf, attributes)
    result, logs = ours(leaf, attributes)
    if isinstance(expected, Exception):
        # The official semver bug: int() of a part that is not a plain decimal number. We say UNKNOWN.
        assert isinstance(expected, ValueError), expected
        assert leaf.get("match") in SEMVER_MATCHES
        assert result is None
    else:
        assert result == expected
        assert type(result) is type(expected)
    assert logs == expected_logs


def leaf(value: Any, match: str | None = "exact", name: Any = "a", kind: Any = "custom_attribute") -> dict[str, Any]:
    return {"name": name, "value": value, "type": kind, "match": match}


def run(value: Any, user_value: Any, match: str | None = "exact") -> bool | None:
    return evaluate_leaf(leaf(value, match), {"a": user_value})


# --------------------------------------------------------------------------------------------- hand-derived
BIG = 2**53


@pytest.mark.parametrize(
    ("value", "user_value", "expected"),
    [
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("abc", "", False),
        (1, 1, True),
        (1, 1.0, True),  # int and float are the same type
        (1.5, 1, False),
        (True, True, True),
        (False, True, False),
        (True, 1, None),  # bool matches only bool
        (1, True, None),
        (0, False, None),
        ("1", 1, None),
        (1, "1", None),
        (BIG, BIG, True),
        (-BIG, float(-BIG), True),
        (BIG + 1, BIG + 1, None),  # condition value beyond 2^53
        (1, BIG + 1, None),  # user value beyond 2^53
        (1, float("nan"), None),
        (1, float("inf"), None),
        (float("inf"), 1, None),
        (float("nan"), 1, None),
        ([1], [1], None),
        ({"x": 1}, {"x": 1}, None),
        (None, "x", None),
        ("x", ["x"], None),
        ("x", Decimal("1"), None),
        (1, Decimal("1"), None),
        (1, Fraction(1, 1), None),
    ],
)
def test_exact(value: Any, user_value: Any, expected: bool | None) -> None:
    assert run(value, user_value) is expected
    assert run(value, user_value, match=None) is expected  # no match type means exact


def test_missing_match_key_means_exact() -> None:
    assert evaluate_leaf({"name": "a", "value": "x", "type": "custom_attribute"}, {"a": "x"}) is True


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, False),
        ({"a": None}, False),
        ({"a": 0}, True),
        ({"a": False}, True),
        ({"a": ""}, True),
        ({"a": []}, True),
    ],
)
def test_exists(attributes: dict[str, Any], expected: bool) -> None:
    for value in ("anything", None, 12, [1]):
        assert evaluate_leaf(leaf(value, "exists"), attributes) is expected


@pytest.mark.parametrize(
    ("value", "user_value", "expected"),
    [
        ("ell", "hello", True),
        ("", "hello", True),
        ("hello", "ell", False),
        ("x", "hello", False),
        (1, "1", None),
        ("1", 1, None),
        (None, "x", None),
    ],
)
def test_substring(value: Any, user_value: Any, expected: bool | None) -> None:
    assert run(value, user_value, "substring") is expected


@pytest.mark.parametrize(
    ("match", "value", "user_value", "expected"),
    [
        ("gt", 3, 5, True),
        ("gt", 3, 3, False),
        ("gt", 3, 3.5, True),
        ("gt", 3.5, 3, False),
        ("ge", 3, 3, True),
        ("ge", 3, 2.999, False),
        ("lt", 3, 2, True),
        ("lt", 3, 3, False),
        ("le", 3, 3.0, True),
        ("le", 3, 4, False),
        ("ge", -BIG, -BIG, True),
        ("le", BIG, float(BIG), True),
        ("gt", 0, True, None),  # bool is not a number
        ("gt", True, 5, None),
        ("gt", "3", 5, None),
        ("gt", 3, "5", None),
        ("gt", float("inf"), 5, None),
        ("lt", float("nan"), 5, None),
        ("lt", BIG + 1, 5, None),
        ("gt", 3, BIG + 1, None),
        ("gt", 3, float("-inf"), None),
        ("gt", 3, Decimal(5), None),
        ("gt", None, 5, None),
        ("gt", [3], 5, None),
    ],
)
def test_numeric(match: str, value: Any, user_value: Any, expected: bool | None) -> None:
    assert run(value, user_value, match) is expected


@pytest.mark.parametrize(
    ("target", "user_value", "match", "expected"),
    [
        ("1.2.3", "1.2.3", "semver_eq", True),
        ("1.2", "1.2.3", "semver_eq", True),  # a partial target matches any patch
        ("1", "1.9.9", "semver_eq", True),
        ("1.2.3", "1.2", "semver_eq", False),
        ("1.2.3", "1.2", "semver_lt", True),
        ("1.10", "1.9", "semver_gt", False),  # numeric, not lexicographic
        ("1.9", "1.10", "semver_gt", True),
        ("2.0.0", "1.9.9", "semver_lt", True),
        ("01.2.3", "1.2.3", "semver_eq", True),  # leading zeros are fine
        ("1.2.3-beta", "1.2.3", "semver_gt", True),  # a release is above its pre-release
        ("1.2.3", "1.2.3-alpha", "semver_lt", True),
        ("1.2.3-alpha", "1.2.3-beta", "semver_gt", True),
        ("1.2.3-beta", "1.2.3-alpha", "semver_lt", True),
        ("1.2.3-beta", "1.2.3-beta", "semver_eq", True),
        ("1.2.3+build", "1.2.3", "semver_eq", False),
        ("1.2.3+build", "1.2.3", "semver_gt", True),
        ("1.2.3", "1.2.3+build", "semver_gt", False),  # user build metadata is ignored
        ("1.2.3", "1.2.3+build", "semver_eq", True),
        ("1.2.3", "1.2.4", "semver_ge", True),
        ("1.2.3", "1.2.2", "semver_le", True),
        ("1.2.3", "1.2.3.4", "semver_eq", None),  # too many dots
        ("1.2.3", "1..2", "semver_eq", None),
        ("1.2.3", "a.b", "semver_eq", None),
        ("1.2.3", "-1.2.3", "semver_eq", None),
        ("1.2.3", "", "semver_eq", None),
        ("1.2.3", " 1.2.3", "semver_eq", None),
        ("1.2.3 ", "1.2.3", "semver_eq", None),
        ("x", "1.2.3", "semver_eq", None),
        (1, "1.2.3", "semver_eq", None),
        ("1.2.3", 1, "semver_eq", None),
        ("1.2.3", 1.2, "semver_ge", None),
        # The official raises ValueError here (int('beta')); we answer UNKNOWN.
        ("1.2.3-beta", "1.2.3-4", "semver_eq", None),
        ("1.2.3-beta", "1.2.3-4", "semver_gt", None),
    ],
)
def test_semver(target: Any, user_value: Any, match: str, expected: bool | None) -> None:
    assert run(target, user_value, match) is expected


def test_semver_where_official_raises_we_answer_unknown() -> None:
    """Documented difference: the official semver comparison crashes on these; we return None."""
    for target, user_value in [("1.2.3-beta", "1.2.3-4"), ("1.²", "1.2"), ("1.2", "1.²")]:
        for match in SEMVER_MATCHES:
            condition = leaf(target, match)
            expected, _ = official(condition, {"a": user_value})
            assert isinstance(expected, ValueError)
            assert evaluate_leaf(condition, {"a": user_value}) is None


@pytest.mark.parametrize(("value", "expected"), [("segment", False), ("", False), (1, None), (None, None)])
def test_qualified_without_segments(value: Any, expected: bool | None) -> None:
    assert evaluate_leaf(leaf(value, "qualified"), {}) is expected  # needs no attribute
    assert evaluate_leaf(leaf(value, "qualified"), {"a": "segment"}) is expected


def test_third_party_dimension_is_a_known_type() -> None:
    assert evaluate_leaf(leaf("x", kind="third_party_dimension"), {"a": "x"}) is True


@pytest.mark.parametrize("kind", ["foo", None, "", 1, ["custom_attribute"]])
def test_unknown_condition_type(kind: Any) -> None:
    condition = leaf("x", kind=kind)
    with capture(OURS) as records:
        assert evaluate_leaf(condition, {"a": "x"}) is None
    (level, message), *rest = records
    assert not rest and level == WARNING
    assert message.endswith(
        '" uses an unknown condition type. You may need to upgrade to a newer release of the Optimizely SDK.'
    )


@pytest.mark.parametrize("match", ["regex", "EXACT", "", 1, ["exact"]])
def test_unknown_match_type(match: Any) -> None:
    with capture(OURS) as records:
        assert evaluate_leaf(leaf("x", match), {"a": "x"}) is None
    assert [level for level, _ in records] == [WARNING]
    assert "uses an unknown match type" in records[0][1]


def test_message_texts() -> None:
    """Exact texts, written out by hand from the official SDK's message templates."""
    shown = '{"name": "a", "value": "x", "type": "custom_attribute", "match": "exact"}'
    upgrade = "You may need to upgrade to a newer release of the Optimizely SDK."
    with capture(OURS) as records:
        evaluate_leaf(leaf("x"), {})
        evaluate_leaf(leaf("x"), {"a": None})
        evaluate_leaf(leaf("x"), {"a": 1})
        evaluate_leaf(leaf(1), {"a": 2**60})
        evaluate_leaf(leaf([1]), {"a": 1})
        evaluate_leaf(leaf("x", kind="zzz"), {"a": "x"})
        evaluate_leaf(leaf("x", "zzz"), {"a": "x"})
        evaluate_leaf(leaf("1.2.3", "semver_eq"), {"a": "1.2.x"})
    unknown = "evaluated to UNKNOWN because"
    assert records == [
        (DEBUG, f'Audience condition {shown} {unknown} no value was passed for user attribute "a".'),
        (DEBUG, f'Audience condition "{shown}" {unknown} a null value was passed for user attribute "a".'),
        (
            WARNING,
            f'Audience condition "{shown}" {unknown} a value of type "<class \'int\'>" was passed '
            'for user attribute "a".',
        ),
        (
            WARNING,
            'Audience condition "{"name": "a", "value": 1, "type": "custom_attribute", "match": "exact"}" '
            f'{unknown} the number value for user attribute "a" is not in the range [-2^53, +2^53].',
        ),
        (
            WARNING,
            'Audience condition "{"name": "a", "value": [1], "type": "custom_attribute", "match": "exact"}" '
            f"has an unsupported condition value. {upgrade}",
        ),
        (
            WARNING,
            'Audience condition "{"name": "a", "value": "x", "type": "zzz", "match": "exact"}" '
            f"uses an unknown condition type. {upgrade}",
        ),
        (
            WARNING,
            'Audience condition "{"name": "a", "value": "x", "type": "custom_attribute", "match": "zzz"}" '
            f"uses an unknown match type. {upgrade}",
        ),
        (WARNING, "Attributes provided are in an invalid format."),
    ]


def test_missing_match_shows_as_null_in_messages() -> None:
    with capture(OURS) as records:
        evaluate_leaf({"name": "a", "value": "x", "type": "custom_attribute"}, {})
    assert '"match": null' in records[0][1]


def test_unhashable_name_reads_as_a_missing_attribute() -> None:
    # The official raises TypeError (unhashable key); a datafile cannot produce this, we stay total.
    assert evaluate_leaf(leaf("x", name=["a"]), {"a": "x"}) is None
    assert evaluate_leaf(leaf("x", "exists", name=["a"]), {"a": "x"}) is False


def test_mapping_that_is_not_a_dict() -> None:
    class Frozen(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert evaluate_leaf(Frozen(leaf("x")), Frozen({"a": "x"})) is True
    assert evaluate_leaf(Frozen(leaf("x")), Frozen({"b": "x"})) is None


def test_no_message_is_formatted_when_logging_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_: Any) -> str:
        raise AssertionError("formatted a message nobody will see")

    monkeypatch.setattr(conditions, "_describe", boom)
    with capture(OURS, level=logging.ERROR) as records:
        assert evaluate_leaf(leaf("x", kind="nope"), {"a": "x"}) is None
        assert evaluate_leaf(leaf("x", "nope"), {"a": "x"}) is None
        assert evaluate_leaf(leaf("x"), {}) is None
        assert evaluate_leaf(leaf("x"), {"a": 3}) is None
        assert evaluate_leaf(leaf(1, "gt"), {"a": float("nan")}) is None
    assert records == []


# --------------------------------------------------------------------------------------------- properties
plain_version = st.tuples(*[st.integers(0, 30)] * 3)


@given(plain_version, plain_version)
def test_semver_orders_plain_versions_like_tuples(target: tuple[int, ...], user: tuple[int, ...]) -> None:
    attributes = {"a": ".".join(map(str, user))}
    text = ".".join(map(str, target))
    checks = {
        "semver_eq": user == target,
        "semver_gt": user > target,
        "semver_ge": user >= target,
        "semver_lt": user < target,
        "semver_le": user <= target,
    }
    for match, expected in checks.items():
        assert evaluate_leaf(leaf(text, match), attributes) is expected


@given(st.text(max_size=10), st.text(max_size=10))
def test_exact_and_substring_on_strings(value: str, user_value: str) -> None:
    assert run(value, user_value) is (value == user_value)
    assert run(value, user_value, "substring") is (value in user_value)


in_range = st.integers(-BIG, BIG) | st.floats(-float(BIG), float(BIG), allow_nan=False)


@given(in_range, in_range)
def test_numeric_comparisons_in_range(value: float, user_value: float) -> None:
    assert run(value, user_value, "gt") is (user_value > value)
    assert run(value, user_value, "ge") is (user_value >= value)
    assert run(value, user_value, "lt") is (user_value < value)
    assert run(value, user_value, "le") is (user_value <= value)
    assert run(value, user_value) is (user_value == value)


@given(
    st.integers(BIG + 1, 2**80) | st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x))
)
def test_out_of_range_numbers_are_unknown(number: float) -> None:
    for sign in (1, -1):
        for match in ("exact", "gt", "ge", "lt", "le"):
            assert run(1, sign * number, match) is None
            assert run(sign * number, 1, match) is None


# --------------------------------------------------------------------------------------------- differential
edge_numbers = st.sampled_from(
    [0, 1, -1, BIG, -BIG, BIG + 1, -BIG - 1, float(BIG), 9007199254740993.0, 1e300, -0.0, 0.5, float("nan")]
)
numbers = st.integers(-(2**64), 2**64) | st.floats() | edge_numbers
version_part = st.from_regex(r"[0-9]{1,3}", fullmatch=True)
structured_version = st.builds(
    lambda parts, separator, suffix: ".".join(parts) + (separator + suffix if separator else ""),
    st.lists(version_part, min_size=1, max_size=4),
    st.sampled_from(["", "-", "+"]),
    st.from_regex(r"[0-9A-Za-z.+\-]{0,6}", fullmatch=True),
)
noisy_version = st.text(alphabet="0123456789.-+ab \t²٣_", max_size=9)
versions = structured_version | noisy_version | st.sampled_from(["1.2.3-beta", "1.2.3-4", "1.2", "1.2.3+b"])
scalars = st.none() | st.booleans() | numbers | st.text(max_size=6) | versions
json_values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3), scalars, max_size=2)
user_values = json_values | st.sampled_from([Decimal("1"), Fraction(1, 2), b"x", object(), 1 + 2j])
names = st.sampled_from(["a", "b", "", None])
leaves = st.fixed_dictionaries(
    {
        "name": names,
        "value": json_values,
        "type": st.sampled_from(["custom_attribute", "custom_attribute", "third_party_dimension", "custom", None]),
    },
    optional={"match": st.sampled_from([*ALL_MATCHES, None, "regex", "EXACT"])},
)
attribute_sets = st.dictionaries(st.sampled_from(["a", "b", "c"]), user_values, max_size=3)


@settings(max_examples=1500)
@given(leaves, attribute_sets)
@example({"name": "a", "value": True, "type": "custom_attribute", "match": "exact"}, {"a": 1})
@example({"name": "a", "value": 1, "type": "custom_attribute", "match": "exact"}, {"a": 1.0})
@example({"name": "a", "value": 1, "type": "custom_attribute", "match": "gt"}, {"a": BIG + 1})
@example({"name": "a", "value": "1.2.3-beta", "type": "custom_attribute", "match": "semver_eq"}, {"a": "1.2.3-4"})
def test_leaf_matches_official(condition: dict[str, Any], attributes: dict[str, Any]) -> None:
    assert_same_as_official(condition, attributes)


@settings(max_examples=1500)
@given(versions, versions | user_values, st.sampled_from(SEMVER_MATCHES))
@example("1.2.3-beta", "1.2.3-4", "semver_eq")  # official: ValueError; ours: None
@example("1.2", "1.2.3", "semver_eq")
@example("1.2.3+build", "1.2.3", "semver_eq")
@example("1.2.3", "1.2.3+build", "semver_gt")
def test_semver_matches_official(target: str, user_value: Any, match: str) -> None:
    assert_same_as_official(leaf(target, match), {"a": user_value})


@settings(max_examples=500)
@given(
    st.sampled_from(["exact", "gt", "ge", "lt", "le"]),
    numbers | st.booleans() | st.none(),
    numbers | st.booleans() | st.sampled_from([Decimal("2"), Fraction(1, 3), "1"]),
)
def test_numbers_match_official(match: str, value: Any, user_value: Any) -> None:
    assert_same_as_official(leaf(value, match), {"a": user_value})
