"""``OptimizelyDecision.as_json()`` and ``OptimizelyUserContext.as_json()`` against the official SDK's.

The official ``as_json`` of a decision is its seven fields in a fixed order, ``user_context`` being the user
context's own ``as_json()`` ({"user_id", "attributes"}). Both sides decide the same flags for the same users of
generated datafiles (holdouts and typed rules included, flag-level forced decisions on some users, attributes
added with ``set_attribute``, one of them under a non-string key) and the two dicts must be equal: same values
and types (``differential.same``), same key order at every level, and the same JSON text. With
INCLUDE_REASONS the official reasons are compared with their duplication undone, as in
tests/test_differential_decide.py. Every async test runs on asyncio and trio (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
import logging
import random
from typing import Any

import pytest
from optimizely.decision.optimizely_decision import OptimizelyDecision as OfficialDecision
from optimizely.optimizely_user_context import OptimizelyUserContext as OfficialUserContext

import datagen
from differential import make_official, make_ours, same, short
from optimizely_async import OptimizelyDecision, OptimizelyUserContext
from test_differential_decide import DuplicationProbe, undo_official_duplication

SEEDS = range(6)
USERS = 4
INCLUDE_REASONS = "INCLUDE_REASONS"
DISABLE_DECISION_EVENT = "DISABLE_DECISION_EVENT"
OPTION_SETS: tuple[list[str], ...] = (
    [DISABLE_DECISION_EVENT],
    [DISABLE_DECISION_EVENT, "EXCLUDE_VARIABLES"],
    [DISABLE_DECISION_EVENT, INCLUDE_REASONS],
)
DECISION_KEYS = ["variation_key", "enabled", "variables", "rule_key", "flag_key", "user_context", "reasons"]


def assert_same_json(expected: dict[str, Any], got: dict[str, Any], label: str) -> None:
    """Equal values and types, the same key order at every dict level, the same ``json.dumps`` text."""
    assert same(expected, got), f"{label}: official {short(expected, 1500)} != ours {short(got, 1500)}"

    def orders(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict):
            assert list(a) == list(b), f"{label}: key order at {path or 'the top'}: {list(a)} / {list(b)}"
            for key in a:
                orders(a[key], b[key], f"{path}/{key!r}")
        elif isinstance(a, list):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                orders(x, y, f"{path}/{i}")

    orders(expected, got, "")
    try:
        text = json.dumps(expected)
    except TypeError:  # a non-string attribute key json cannot encode: then ours must fail the same way
        with pytest.raises(TypeError):
            json.dumps(got)
    else:
        assert json.dumps(got) == text, label


def flag_variation_keys(datafile: dict[str, Any], flag: dict[str, Any]) -> list[str]:
    by_id = {e["id"]: e for e in datagen.all_experiments(datafile)}
    rollouts = {r["id"]: r for r in datafile.get("rollouts", [])}
    rules = [by_id[i] for i in flag["experimentIds"]]
    if flag["rolloutId"] in rollouts:
        rules += rollouts[flag["rolloutId"]]["experiments"]
    return sorted({v["key"] for rule in rules for v in rule["variations"]})


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.anyio
async def test_decision_as_json_matches_official(seed: int) -> None:
    rng = random.Random(seed)
    datafile = datagen.generate_datafile(seed, version="4", holdouts=True, rule_types=True)
    users = datagen.generate_users(seed, datafile, USERS)
    official, _, _ = make_official(datafile, logger=logging.getLogger("official_sdk_quiet"))
    probe = DuplicationProbe(official.decision_service)
    ours, _, _ = make_ours(copy.deepcopy(datafile))
    flags = datafile["featureFlags"]
    compared = 0
    try:
        async with ours:
            for user in users:
                official_user = official.create_user_context(user.user_id, copy.deepcopy(user.attributes))
                our_user = ours.create_user_context(user.user_id, copy.deepcopy(user.attributes))
                assert (official_user is None) == (our_user is None), user
                if official_user is None:
                    continue
                odd_key = rng.random() < 0.5
                for context in (official_user, our_user):
                    context.set_attribute("added_later", [1, {"a": None}])
                    if odd_key:
                        context.set_attribute(7, "a non-string key: kept, ignored by decisions")
                assert_same_json(official_user.as_json(), our_user.as_json(), f"seed {seed}: user as_json")
                if flags and rng.random() < 0.5:
                    flag = rng.choice(flags)
                    choices = flag_variation_keys(datafile, flag) or ["none"]
                    variation_key = rng.choice([*choices, "no_such_variation"])
                    for context in (official_user, our_user):
                        context.set_forced_decision(
                            type(context).OptimizelyDecisionContext(flag["key"], None),
                            type(context).OptimizelyForcedDecision(variation_key),
                        )
                for options in OPTION_SETS:
                    for key in [*(f["key"] for f in flags), "no_such_flag", "", 42]:
                        label = f"seed {seed}, user {user.user_id!r}, decide({key!r}, {options})"
                        probe.take()
                        expected = official_user.decide(key, list(options)).as_json()
                        records = probe.take()
                        got = (await our_user.decide(key, list(options))).as_json()
                        assert list(got) == DECISION_KEYS, label
                        if INCLUDE_REASONS in options and isinstance(key, str):
                            expected["reasons"], _ = undo_official_duplication(expected["reasons"], records.get(key))
                        assert_same_json(expected, got, label)
                        compared += 1
                    probe.take()
                    expected_all = {k: d.as_json() for k, d in official_user.decide_all(list(options)).items()}
                    records = probe.take()
                    got_all = {k: d.as_json() for k, d in (await our_user.decide_all(list(options))).items()}
                    assert list(expected_all) == list(got_all), f"seed {seed}: decide_all keys"
                    for key, expected in expected_all.items():
                        if INCLUDE_REASONS in options:
                            expected["reasons"], _ = undo_official_duplication(expected["reasons"], records.get(key))
                        assert_same_json(expected, got_all[key], f"seed {seed}, decide_all {options}: {key}")
                        compared += 1
    finally:
        official.close()
    assert compared > 0


def test_decision_as_json_without_a_context_matches_official() -> None:
    for official, ours in (
        (OfficialDecision(), OptimizelyDecision()),
        (
            OfficialDecision("v", True, {"x": 1.5, "j": {"a": [1]}}, "rule", "flag", None, ["why"]),
            OptimizelyDecision("v", True, {"x": 1.5, "j": {"a": [1]}}, "rule", "flag", None, ["why"]),
        ),
        (
            OfficialDecision.new_error_decision("flag", None, ["r1", "r2"]),  # type: ignore[arg-type]
            OptimizelyDecision.new_error_decision("flag", None, ["r1", "r2"]),
        ),
    ):
        assert_same_json(official.as_json(), ours.as_json(), repr(ours))


@pytest.mark.parametrize(
    "attributes",
    [None, {}, {"age": 30, "plan": None, "tags": ["a", "b"], "nested": {"k": 1.5}}, {1: "int key"}, "not a dict"],
)
def test_user_context_as_json_matches_official(attributes: Any) -> None:
    official = OfficialUserContext(None, logging.getLogger("official_sdk_quiet"), "u1", copy.deepcopy(attributes))  # type: ignore[arg-type]
    ours = OptimizelyUserContext(None, "u1", copy.deepcopy(attributes))
    assert_same_json(official.as_json(), ours.as_json(), repr(attributes))
    for key, value in (("age", 5), ("new", {"deep": [1]}), (None, "none key"), ((1, 2), "tuple key")):
        official.set_attribute(key, value)  # type: ignore[arg-type]
        ours.set_attribute(key, value)  # type: ignore[arg-type]
        assert_same_json(official.as_json(), ours.as_json(), f"{attributes!r} after set_attribute({key!r})")
    for bad_key in ([], {"a": 1}, {1}):
        with pytest.raises(TypeError):
            official.set_attribute(bad_key, 1)  # type: ignore[arg-type]
        ours.set_attribute(bad_key, 1)  # type: ignore[arg-type]  # logged and ignored, never raised
        assert_same_json(official.as_json(), ours.as_json(), f"{attributes!r} after set_attribute({bad_key!r})")
    # as_json hands out copies: changing one changes neither context
    for context in (official, ours):
        context.as_json()["attributes"]["age"] = "changed"
    assert ours.as_json()["attributes"]["age"] == official.as_json()["attributes"]["age"] == 5
