"""Condition trees and the rule-level audience check.

Hand-derived truth tables, then differential runs against the official SDK (optimizely-sdk 5.7.0):
``condition_tree_evaluator.evaluate`` for trees (same result, same leaves visited in the same order) and
``audience.does_user_meet_audience_conditions`` over a real official ``ProjectConfig`` for the whole check
(same result, same decision reasons, same log records).

Deliberate difference: an empty list inside a tree makes the official raise ``IndexError``
(``conditions[0]``); we treat it as UNKNOWN. The official also crashes on an audience whose conditions are
``[]`` and on an unhashable leaf in an experiment's audience tree; we answer UNKNOWN there too.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from optimizely import error_handler
from optimizely.helpers import audience as official_audience
from optimizely.helpers import condition_tree_evaluator
from optimizely.helpers.enums import ExperimentAudienceEvaluationLogs, RolloutRuleAudienceEvaluationLogs
from optimizely.optimizely_user_context import OptimizelyUserContext
from optimizely.project_config import ProjectConfig

from _logcapture import at_our_levels, capture
from optimizely_async.decision import audiences as audiences_module
from optimizely_async.decision.audiences import audience_check, evaluate_tree

OURS = logging.getLogger("optimizely_async")
OFFICIAL = logging.getLogger("tests.official_sdk_under_test")
DEBUG, ERROR = logging.DEBUG, logging.ERROR

T, F, U = "T", "F", "U"
EMPTY = "E"  # stands in for an empty list when the official evaluator is run
VALUES: dict[str, bool | None] = {T: True, F: False, U: None, EMPTY: None}


# --------------------------------------------------------------------------------------------- helpers


class Recorder:
    """A leaf evaluator over the tokens T/F/U that remembers which leaves it was asked about."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, token: Any) -> bool | None:
        self.seen.append(token)
        return VALUES[token]


def run_tree(tree: Any) -> tuple[bool | None, list[Any]]:
    leaf = Recorder()
    return evaluate_tree(tree, leaf), leaf.seen


# --------------------------------------------------------------------------------------------- trees, by hand
def kleene_and(values: list[bool | None]) -> bool | None:
    if False in values:
        return False
    return None if None in values else True


def kleene_or(values: list[bool | None]) -> bool | None:
    if True in values:
        return True
    return None if None in values else False


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_and_or_truth_tables(size: int) -> None:
    for tokens in itertools.product([T, F, U], repeat=size):
        values = [VALUES[token] for token in tokens]
        assert run_tree(["and", *tokens])[0] is kleene_and(values)
        assert run_tree(["or", *tokens])[0] is kleene_or(values)
        if size:
            assert run_tree(list(tokens))[0] is kleene_or(values)  # no operator: implicit OR


@pytest.mark.parametrize(("token", "expected"), [(T, False), (F, True), (U, None)])
def test_not(token: str, expected: bool | None) -> None:
    assert run_tree(["not", token])[0] is expected
    assert run_tree(["not", token, T, F, U]) == (expected, [token])  # only the first operand counts
    assert run_tree(["not", ["not", token]])[0] is (None if expected is None else not expected)


def test_not_without_operand_is_unknown() -> None:
    assert run_tree(["not"]) == (None, [])


def test_short_circuit_order() -> None:
    assert run_tree(["and", T, U, F, T]) == (False, [T, U, F])
    assert run_tree(["or", F, U, T, F]) == (True, [F, U, T])
    assert run_tree([F, ["and", T, F], T, U]) == (True, [F, T, F, T])


class Unknowing:
    """A leaf evaluator that accepts anything, answers UNKNOWN and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, node: Any) -> bool | None:
        self.seen.append(node)
        return None


def test_non_list_tree_is_a_leaf() -> None:
    assert run_tree(T) == (True, [T])
    leaf = Unknowing()
    for node in ({"name": "x"}, 3, None, "and"):
        assert evaluate_tree(node, leaf) is None
    assert leaf.seen == [{"name": "x"}, 3, None, "and"]


def test_operator_words_only_count_in_head_position() -> None:
    leaf = Unknowing()
    assert evaluate_tree([False, "and", "not"], leaf) is None
    assert leaf.seen == [False, "and", "not"]


def test_tuples_are_lists() -> None:
    assert run_tree(("and", T, (F,))) == (False, [T, F])
    assert run_tree(("not", (U, T))) == (False, [U, T])


def test_empty_lists_are_unknown_not_errors() -> None:
    # The official raises IndexError for each of these; see docs/compatibility.md.
    assert run_tree([]) == (None, [])
    assert run_tree(["and", []]) == (None, [])
    assert run_tree(["or", [], T]) == (True, [T])
    assert run_tree(["and", [], F]) == (False, [F])
    assert run_tree(["not", []]) == (None, [])
    with pytest.raises(IndexError):
        condition_tree_evaluator.evaluate(["and", []], Recorder())


# ------------------------------------------------------------------------------------- trees, differential
def _with_head(head: str, operands: list[Any]) -> list[Any]:
    return [head, *operands]


def trees(allow_empty: bool) -> st.SearchStrategy[Any]:
    tokens = st.sampled_from([T, F, U])

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(children, min_size=0 if allow_empty else 1, max_size=4) | st.builds(
            _with_head, st.sampled_from(["and", "or", "not"]), st.lists(children, max_size=4)
        )

    return st.recursive(tokens, extend, max_leaves=14)


def empties_to_unknown(tree: Any) -> Any:
    if isinstance(tree, list):
        return [empties_to_unknown(node) for node in tree] if tree else EMPTY
    return tree


@settings(max_examples=1000)
@given(trees(allow_empty=False))
@example(["and"])
@example(["or"])
@example(["not"])
@example([["not"]])
def test_tree_matches_official(tree: Any) -> None:
    theirs = Recorder()
    expected = condition_tree_evaluator.evaluate(tree, theirs)
    assert run_tree(tree) == (expected, theirs.seen)


@settings(max_examples=500)
@given(trees(allow_empty=True))
def test_tree_with_empty_lists_is_the_official_with_unknowns(tree: Any) -> None:
    theirs = Recorder()
    expected = condition_tree_evaluator.evaluate(empties_to_unknown(tree), theirs)
    assert run_tree(tree) == (expected, [token for token in theirs.seen if token != EMPTY])


# ------------------------------------------------------------------------------------ audience_check, by hand
DEVICE = {"name": "device", "type": "custom_attribute", "value": "iPhone", "match": "exact"}
AGE = {"name": "age", "type": "custom_attribute", "value": 18, "match": "gt"}
AUDIENCES: dict[str, Any] = {
    "1": ["and", ["or", ["or", DEVICE]]],
    "2": ["and", ["or", ["or", AGE]]],
    "3": DEVICE,  # a single leaf, not wrapped in a list
}


def test_no_audiences_lets_everyone_in() -> None:
    tree: list[Any] | None
    for tree in (None, []):
        reasons: list[str] = []
        with capture(OURS) as records:
            assert audience_check(tree, AUDIENCES, {}, 'experiment "exp"', reasons) is True
        shown = "null" if tree is None else "[]"
        assert reasons == [
            f'Evaluating audiences for experiment "exp": {shown}.',
            'Audiences for experiment "exp" collectively evaluated to TRUE.',
        ]
        assert records == [(DEBUG, reasons[0]), (DEBUG, reasons[1])]  # official: the result at INFO


def test_rule_labels_and_reasons() -> None:
    reasons: list[str] = []
    assert audience_check(["1", "2"], AUDIENCES, {"age": 12}, "rule 1", reasons) is False
    assert reasons == [
        'Evaluating audiences for rule 1: ["1", "2"].',
        "Audiences for rule 1 collectively evaluated to FALSE.",
    ]
    reasons = []
    assert audience_check(["or", "3"], AUDIENCES, {"device": "iPhone"}, "rule Everyone Else", reasons) is True
    assert reasons == [
        'Evaluating audiences for rule Everyone Else: ["or", "3"].',
        "Audiences for rule Everyone Else collectively evaluated to TRUE.",
    ]


@pytest.mark.parametrize(
    ("tree", "attributes", "expected"),
    [
        (["1"], {"device": "iPhone"}, True),
        (["1"], {"device": "Android"}, False),
        (["1"], {}, False),  # UNKNOWN counts as False
        (["not", "1"], {}, False),  # not UNKNOWN is UNKNOWN
        (["not", "1"], {"device": "Android"}, True),
        (["and", "1", "2"], {"device": "iPhone", "age": 30}, True),
        (["and", "1", "2"], {"device": "iPhone", "age": 3}, False),
        (["or", "1", "2"], {"device": "Android", "age": 30}, True),
        (["or", "1", "missing"], {"device": "iPhone"}, True),
        (["or", "missing", "1"], {"device": "iPhone"}, True),
        (["and", "1", "missing"], {"device": "iPhone"}, False),
        ("1", {"device": "iPhone"}, True),  # a bare id is a leaf
        (["or", ["and", "1", ["not", "2"]]], {"device": "iPhone", "age": 10}, True),
    ],
)
def test_audience_results(tree: Any, attributes: dict[str, Any], expected: bool) -> None:
    assert audience_check(tree, AUDIENCES, attributes, 'experiment "e"', None) is expected
    assert audience_check(tree, AUDIENCES, attributes, 'experiment "e"', []) is expected


def test_per_audience_messages() -> None:
    with capture(OURS) as records:
        audience_check(["or", "missing", "1", "2"], AUDIENCES, {"device": "iPhone"}, 'experiment "e"', None)
    conditions = json.dumps(AUDIENCES["1"])
    assert records == [
        (DEBUG, 'Evaluating audiences for experiment "e": ["or", "missing", "1", "2"].'),
        (ERROR, 'Audience ID "missing" is not in datafile.'),
        (DEBUG, f'Starting to evaluate audience "1" with conditions: {conditions}.'),
        (DEBUG, 'Audience "1" evaluated to TRUE.'),
        (DEBUG, 'Audiences for experiment "e" collectively evaluated to TRUE.'),
    ]
    with capture(OURS) as records:
        audience_check(["and", "2"], AUDIENCES, {}, 'experiment "e"', None)
    assert (DEBUG, 'Audience "2" evaluated to UNKNOWN.') in records
    assert (DEBUG, 'Audiences for experiment "e" collectively evaluated to FALSE.') in records


def test_unknown_audience_is_logged_even_when_quiet() -> None:
    with capture(OURS, level=ERROR) as records:
        assert audience_check(["42"], AUDIENCES, {}, 'experiment "e"', None) is False
    assert records == [(ERROR, 'Audience ID "42" is not in datafile.')]


def test_malformed_trees_are_unknown_not_errors() -> None:
    audiences = {**AUDIENCES, "empty": [], "text": ["or", "not a condition"], "nested": ["and", [], DEVICE]}
    attributes = {"device": "iPhone"}
    for audience_id in ("empty", "text", "nested"):
        assert audience_check([audience_id], audiences, attributes, "rule 1", None) is False
    assert audience_check(["or", "empty", "1"], audiences, attributes, "rule 1", None) is True
    assert audience_check(["or", {"id": "1"}, "1"], audiences, attributes, "rule 1", None) is True
    assert audience_check(["or", ["1"], []], audiences, attributes, "rule 1", None) is True


def test_nothing_is_formatted_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_: Any) -> str:
        raise AssertionError("formatted a message nobody will see")

    monkeypatch.setattr(audiences_module, "_dumps", boom)
    with capture(OURS, level=logging.WARNING) as records:
        assert audience_check(["or", "1", "2"], AUDIENCES, {"age": 40}, 'experiment "e"', None) is True
        assert audience_check(None, AUDIENCES, {}, 'experiment "e"', None) is True
    assert records == []
    with pytest.raises(AssertionError, match="formatted"):  # and reasons do need it
        audience_check(["1"], AUDIENCES, {}, 'experiment "e"', [])


# ------------------------------------------------------------------------------- audience_check, differential
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.sampled_from(["iPhone", "1.2.3", "1.2", "1.2.3-beta", "1.2.3-4", "abc", "", 2**53, 0.5])
)
MATCHES = ["exact", "exists", "substring", "gt", "ge", "lt", "semver_eq", "semver_ge", "qualified", "x"]
condition_leaves = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["device", "age", "version"]),
        "value": scalars | st.lists(scalars, max_size=2),
        "type": st.sampled_from(["custom_attribute", "custom_attribute", "third_party_dimension", "other"]),
    },
    optional={"match": st.sampled_from(MATCHES)},
).filter(
    # The official ProjectConfig itself crashes loading a "qualified" condition with a list value.
    lambda leaf: not (leaf.get("match") == "qualified" and isinstance(leaf["value"], list))
)


def condition_trees() -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(children, min_size=1, max_size=3) | st.builds(
            _with_head, st.sampled_from(["and", "or", "not"]), st.lists(children, min_size=1, max_size=3)
        )

    return st.recursive(condition_leaves, extend, max_leaves=5)


def audience_trees() -> st.SearchStrategy[Any]:
    ids = st.sampled_from(["10", "11", "12", "13", "99"])  # "99" is not in the datafile

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(children, min_size=1, max_size=3) | st.builds(
            _with_head, st.sampled_from(["and", "or", "not"]), st.lists(children, max_size=3)
        )

    return st.recursive(ids, extend, max_leaves=6)


audience_definitions = st.lists(st.tuples(condition_trees(), st.booleans()), min_size=4, max_size=4)
user_attributes = st.dictionaries(
    st.sampled_from(["device", "age", "version"]), scalars | st.sampled_from(["1.2.3-beta.1", "iPhone X"])
)


def official_config(definitions: list[tuple[Any, bool]]) -> tuple[ProjectConfig, dict[str, Any]]:
    """An official ProjectConfig with audiences 10..13 (typed or not), and our id -> tree map for it."""
    legacy: list[dict[str, Any]] = []
    typed: list[dict[str, Any]] = []
    ours: dict[str, Any] = {}
    for number, (tree, is_typed) in enumerate(definitions, start=10):
        audience_id = str(number)
        if is_typed:
            typed.append({"id": audience_id, "name": f"a{number}", "conditions": tree})
        else:
            legacy.append({"id": audience_id, "name": f"a{number}", "conditions": json.dumps(tree)})
        ours[audience_id] = tree
    # A typed audience replaces a legacy one with the same id.
    legacy.append({"id": "13", "name": "shadowed", "conditions": json.dumps(["or", {"name": "zz"}])})
    datafile = {
        "version": "4",
        "projectId": "1",
        "accountId": "1",
        "revision": "1",
        "anonymizeIP": False,
        "experiments": [],
        "groups": [],
        "attributes": [],
        "events": [],
        "featureFlags": [],
        "rollouts": [],
        "audiences": legacy,
        "typedAudiences": typed,
    }
    if not definitions[3][1]:  # "13" is legacy: the shadowing entry must not win
        legacy.pop()
    config = ProjectConfig(json.dumps(datafile), OFFICIAL, error_handler.NoOpErrorHandler())
    return config, ours


SIMPLE_DEFINITIONS = [(["or", {"name": "age", "type": "custom_attribute", "value": 3}], False)] * 4


@settings(max_examples=400, deadline=None)
@given(audience_trees(), audience_definitions, user_attributes, st.booleans())
@example(None, SIMPLE_DEFINITIONS, {}, False)
@example([], SIMPLE_DEFINITIONS, {}, True)
@example(["or", "99", "10"], SIMPLE_DEFINITIONS, {"age": 3}, True)
@example(["and", "10", "99"], SIMPLE_DEFINITIONS, {"age": 3}, False)
def test_audience_check_matches_official(
    tree: Any, definitions: list[tuple[Any, bool]], attributes: dict[str, Any], is_rule: bool
) -> None:
    config, audiences = official_config(definitions)
    user = OptimizelyUserContext(None, OFFICIAL, "user", attributes, identify=False)  # type: ignore[arg-type]
    logs: Any = RolloutRuleAudienceEvaluationLogs if is_rule else ExperimentAudienceEvaluationLogs
    key = "Everyone Else" if is_rule else "my_exp"
    with capture(OFFICIAL) as their_records:
        expected, their_reasons = official_audience.does_user_meet_audience_conditions(
            config,
            tree,
            logs,
            key,
            user,
            OFFICIAL,
        )
    reasons: list[str] = []
    label = f"rule {key}" if is_rule else f'experiment "{key}"'
    with capture(OURS) as records:
        result = audience_check(tree, audiences, attributes, label, reasons)
    assert result is expected
    assert reasons == their_reasons
    assert records == at_our_levels(their_records)
