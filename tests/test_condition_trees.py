"""depth.bounded_tree: the one-pass depth check and tuple conversion of the datafile's condition trees.

It must refuse exactly what :func:`~optimizely_async.config.depth.too_deep` refuses and give exactly the tree the
decisions read (lists made tuples at every level, dicts kept as they are), for any JSON value and any limit.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from optimizely_async.config.depth import MAX_CONDITION_DEPTH, TOO_DEEP, bounded_tree, too_deep

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=40,
)


def lists_as_tuples(value: Any) -> Any:
    """What the decisions read: the lists of the tree made tuples, nested ones too; a dict and what it holds kept."""
    if type(value) is list:
        return tuple(lists_as_tuples(item) for item in value)
    return value


def outcome(check: Any) -> Any:
    try:
        return ("kept", check())
    except ValueError as exc:
        return ("refused", str(exc))


def expected(value: Any, limit: int) -> Any:
    if too_deep(value, limit):
        return ("refused", TOO_DEEP)
    return ("kept", lists_as_tuples(value))


@settings(max_examples=500)
@given(json_values, st.integers(min_value=0, max_value=8))
def test_it_refuses_and_converts_as_too_deep_and_the_tuples_would(value: Any, limit: int) -> None:
    result = outcome(lambda: bounded_tree(value, limit))
    assert result == expected(value, limit)
    if result[0] == "kept":  # and the types match too: tuples where the datafile had lists, dicts as they were
        assert repr(result[1]) == repr(expected(value, limit)[1])


def under_operators(lists: int, leaf: Any) -> Any:
    tree = leaf
    for _ in range(lists):
        tree = ["and", tree]
    return tree


def test_at_the_datafile_limit_a_tree_loads_and_one_level_more_is_refused() -> None:
    condition = {"type": "custom_attribute", "name": "n", "match": "exact", "value": [[1]]}
    for leaf, levels in (("x", 0), ([], 1), ({}, 1), (condition, 3)):  # the leaf's own levels of nesting
        deepest = under_operators(MAX_CONDITION_DEPTH - levels, leaf)
        assert not too_deep(deepest)
        assert bounded_tree(deepest) == lists_as_tuples(deepest)
        assert outcome(lambda deepest=deepest: bounded_tree(["or", deepest])) == ("refused", TOO_DEEP)
