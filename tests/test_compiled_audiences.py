"""The compiled audience matcher (fast path) must answer exactly as the message-writing tree walk. A matcher
answers the tree's three-valued result (True, False or None for UNKNOWN); only True lets the user in."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import datagen
from optimizely_async.config.project_config import parse_config
from optimizely_async.decision.audiences import audience_check
from optimizely_async.decision.compiled import compile_audience_check
from optimizely_async.decision.engine import matcher_for

LEAF_A1 = {"name": "a", "type": "custom_attribute", "value": 1}
AUDIENCES: dict[str, Any] = {"1": ["and", LEAF_A1], "2": [], "3": ["or"], "4": ["not", LEAF_A1], "5": LEAF_A1}
ODD_TREES: list[Any] = [
    [],
    ["and"],
    ["or"],
    ["not"],
    ["and", []],
    ["or", ["not"]],
    "1",
    ["x", "1"],
    [["or", "1", "2"]],
    ["not", "1", "2"],
    ["and", {"a": 1}],
    [1],
    ["and", "1", "404"],
    ["or", "4", "5"],
    ["not", ["and", "1", "3"]],
    None,
    ("or", "1"),
]


@pytest.mark.parametrize("tree", ODD_TREES, ids=repr)
@pytest.mark.parametrize("attributes", [{}, {"a": 1}, {"a": 2}, {"a": "1"}, {"a": None}])
def test_odd_trees(tree: Any, attributes: dict[str, Any]) -> None:
    expected = audience_check(tree, AUDIENCES, attributes, "x", None)
    answer = compile_audience_check(tree, AUDIENCES)(attributes)
    assert answer is True or answer is False or answer is None
    assert (answer is True) is expected


def test_missing_audience_is_logged_on_both_paths(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="optimizely_async"):
        assert compile_audience_check(["or", "404"], AUDIENCES)({}) is None  # UNKNOWN: not in the audience
    assert 'Audience ID "404" is not in datafile.' in caplog.text


def test_generated_datafiles() -> None:
    compared = 0
    for seed in range(60):
        df = datagen.generate_datafile(seed)
        config = parse_config(df)
        users = datagen.generate_users(seed, df, 12)
        for experiment in config.experiments_by_id.values():
            for user in users:
                attributes = user.attributes or {}
                expected = audience_check(experiment.audience_tree, config.audiences, attributes, "x", None)
                answer = matcher_for(config, experiment)(attributes)
                assert answer is True or answer is False or answer is None
                assert (answer is True) is expected, (
                    seed,
                    experiment.key,
                    user,
                )
                compared += 1
    assert compared > 1000
