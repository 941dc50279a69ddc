"""The compiled audience leaves (``leaves.compile_leaf``) against ``evaluate_leaf``: same result, same messages
(quiet leaves: at every level above DEBUG, where they run)."""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from _logcapture import capture
from optimizely_async.decision.conditions import evaluate_leaf
from optimizely_async.decision.leaves import compile_leaf


class Text(str):
    """A str subclass: the compiled leaves leave it to the general path."""


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**54), max_value=2**54),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "a", "b", "10", "1.0", "1.2.3", "1.2.3-beta", "2", "1.2.3.4", "a b"]),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.dictionaries(st.just("k"), st.integers(), max_size=1),
    st.builds(Text, st.sampled_from(["a", "b"])),
)
LEAVES = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b"]),
        "type": st.sampled_from(["custom_attribute", "third_party_dimension", "other"]),
        "match": st.sampled_from(
            [
                "exact",
                "exists",
                "gt",
                "ge",
                "lt",
                "le",
                "substring",
                "semver_eq",
                "semver_ge",
                "qualified",
                "x",
                3,
                None,
            ]
        ),
        "value": VALUES,
    }
)
LOG = logging.getLogger("optimizely_async")
LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.CRITICAL]
ATTRIBUTES = st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3)


@settings(max_examples=600, deadline=None)
@given(leaf=LEAVES, attributes=ATTRIBUTES, level=st.sampled_from(LEVELS))
def test_compiled_leaf_equals_evaluate_leaf(leaf: dict[str, Any], attributes: dict[str, Any], level: int) -> None:
    compiled = compile_leaf(leaf)
    with capture(LOG, level) as ours:
        got = compiled(attributes)
    with capture(LOG, level) as reference:
        expected = evaluate_leaf(leaf, attributes)
    assert got is expected
    assert ours == reference


@settings(max_examples=600, deadline=None)
@given(leaf=LEAVES, attributes=ATTRIBUTES, level=st.sampled_from(LEVELS[1:]))
def test_quiet_leaf_equals_evaluate_leaf_above_debug(
    leaf: dict[str, Any], attributes: dict[str, Any], level: int
) -> None:
    compiled = compile_leaf(leaf, quiet=True)
    with capture(LOG, level) as ours:
        got = compiled(attributes)
    with capture(LOG, level) as reference:
        expected = evaluate_leaf(leaf, attributes)
    assert got is expected
    assert ours == reference


def test_a_quiet_leaf_does_not_write_the_debug_line_of_a_missing_attribute() -> None:
    leaf = {"name": "a", "type": "custom_attribute", "match": "substring", "value": "x"}
    with capture(LOG, logging.DEBUG) as quiet:
        assert compile_leaf(leaf, quiet=True)({}) is None
    with capture(LOG, logging.DEBUG) as verbose:
        assert compile_leaf(leaf)({}) is None
    assert quiet == [] and len(verbose) == 1


def test_common_leaves_answer_without_the_general_path() -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any], bool | None]] = [
        ({"name": "a", "type": "custom_attribute", "match": "exact", "value": "x"}, {"a": "x"}, True),
        ({"name": "a", "type": "custom_attribute", "match": "exact", "value": "x"}, {"a": "y"}, False),
        ({"name": "a", "type": "custom_attribute", "match": None, "value": True}, {"a": True}, True),
        ({"name": "a", "type": "custom_attribute", "match": "exists"}, {"a": 0}, True),
        ({"name": "a", "type": "custom_attribute", "match": "exists"}, {}, False),
        ({"name": "a", "type": "custom_attribute", "match": "gt", "value": 3}, {"a": 3.5}, True),
        ({"name": "a", "type": "custom_attribute", "match": "le", "value": 3.0}, {"a": 4}, False),
        ({"name": "a", "type": "custom_attribute", "match": "lt", "value": 3}, {"a": "2"}, None),
        ({"name": "a", "type": "custom_attribute", "match": "exact", "value": "x"}, {"a": 1}, None),
    ]
    for leaf, attributes, expected in cases:
        assert compile_leaf(leaf)(attributes) is expected, (leaf, attributes)
