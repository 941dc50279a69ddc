"""The datafile/user generator: official-SDK acceptance, determinism, coverage, and the official crash list.

Coverage is measured on the official SDK (its DECISION notifications, its log messages and its leaf
evaluator), so these tests say nothing about our SDK: they show that the differential tests built on the
generator reach every decision path.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
from typing import Any

import pytest
from optimizely.helpers import condition as official_condition
from optimizely.helpers import validator as official_validator

import datagen
from differential import make_official

COVERAGE_SEEDS = int(os.environ.get("DATAGEN_COVERAGE_SEEDS", "120"))
COVERAGE_USERS = 12

#: Decision paths, recognised by the official SDK's log messages.
PATHS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "group: in this experiment": r"^User \".*\" is in experiment .* of group ",
        "group: in another experiment": r"^User \".*\" is not in experiment \".*\" of group ",
        "group: in no experiment": r"^User \".*\" is in no experiment\.$",
        "experiment not running": r"^Experiment \".*\" is not running\.$",
        "whitelisted": r"^User \".*\" is forced in variation \".*\"\.$",
        "whitelist key not in datafile": r"^Variation key \".*\" is not in datafile\.$",
        "audience mismatch": r"^User \".*\" does not meet conditions to be in experiment",
        "audiences collectively TRUE": r"^Audiences for experiment \".*\" collectively evaluated to TRUE\.$",
        "empty traffic range": r"^Bucketed into an empty traffic range\. Returning nil\.$",
        "traffic entity not a variation": r"^Variation with id \".*\" not defined in the datafile for",
        "rollout rule audience mismatch": r"^User \".*\" does not meet audience conditions for targeting",
        "rollout: skip to Everyone Else": r"Checking \"Everyone Else\" rule now\.$",
        "rollout: bucketed into a rule": r"^User \".*\" bucketed into a targeting rule",
        "rollout with no rules": r"^Rollout .* has no experiments\.$",
        "unknown audience id": r"^Audience ID \".*\" is not in datafile\.$",
        "bucketing id not a string": r"^Bucketing ID attribute is not a string",
        "unknown match type": r"uses an unknown match type",
        "unknown condition type": r"uses an unknown condition type",
        "unsupported condition value": r"has an unsupported condition value",
        "wrong attribute type": r"evaluated to UNKNOWN because a value of type",
        "number out of range": r"is not in the range \[-2\^53, \+2\^53\]",
        "missing attribute": r"because no value was passed for user attribute",
        "null attribute": r"because a null value was passed for user attribute",
        "invalid semver": r"^Attributes provided are in an invalid format\.$",
        "variable cast failure": r"^Unable to cast value\. Returning None\.$",
        "variable from variation": r"^Got variable value ",
        "variable default (feature disabled)": r"is not enabled for user .*Returning the default variable",
        "variable default (no variation)": r"is not in any variation or rollout rule\. Returning default",
    }.items()
}


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for name, pattern in PATHS.items():
            if pattern.search(message):
                self.counts[name] += 1


def test_official_sdk_accepts_every_generated_datafile() -> None:
    versions: collections.Counter[str] = collections.Counter()
    for seed in range(400):
        datafile = datagen.generate_datafile(seed)
        versions[datafile["version"]] += 1
        text = json.dumps(datafile, allow_nan=False)  # plain JSON: no NaN or Infinity in a datafile
        assert official_validator.is_datafile_valid(text), f"seed {seed}: rejected by the JSON schema"
        client, _, _ = make_official(datafile)
        try:
            assert client.config_manager.get_config() is not None, f"seed {seed}: ProjectConfig failed"
            assert client.get_optimizely_config() is not None, f"seed {seed}: OptimizelyConfig failed"
        finally:
            client.close()
    assert set(versions) == {"2", "3", "4"}, versions
    assert versions["4"] > versions["3"] + versions["2"], versions


def test_generator_is_deterministic() -> None:
    for seed in (0, 1, 17, 999):
        first = datagen.generate_datafile(seed)
        assert json.dumps(first) == json.dumps(datagen.generate_datafile(seed))
        users_a = datagen.generate_users(seed, first, 20)
        users_b = datagen.generate_users(seed, first, 20)
        assert repr(users_a) == repr(users_b)
    assert json.dumps(datagen.generate_datafile(1)) != json.dumps(datagen.generate_datafile(2))


def test_generator_keeps_keys_and_ids_unique() -> None:
    for seed in range(100):
        datafile = datagen.generate_datafile(seed)
        experiments = datagen.all_experiments(datafile)
        ids = [e["id"] for e in experiments]
        assert len(ids) == len(set(ids)), seed
        keys = datagen.experiment_keys(datafile)
        assert len(keys) == len(set(keys)), seed
        flags = [f["key"] for f in datafile.get("featureFlags", [])]
        assert len(flags) == len(set(flags)), seed


def _measure_coverage(monkeypatch: pytest.MonkeyPatch) -> dict[str, collections.Counter[Any]]:
    leaf_results: collections.Counter[tuple[str, bool | None]] = collections.Counter()
    original_evaluate = official_condition.CustomAttributeConditionEvaluator.evaluate

    def recording_evaluate(self: Any, index: int) -> bool | None:
        result = original_evaluate(self, index)
        leaf_results[(self.condition_data[index][3] or "exact", result)] += 1
        return result

    monkeypatch.setattr(official_condition.CustomAttributeConditionEvaluator, "evaluate", recording_evaluate)

    handler = _ListHandler()
    logger = logging.getLogger("tests.datagen.coverage")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    sources: collections.Counter[str] = collections.Counter()
    variable_types: collections.Counter[str] = collections.Counter()
    for seed in range(COVERAGE_SEEDS):
        datafile = datagen.generate_datafile(seed)
        feature_tests = {
            datafile_exp_key
            for flag in datafile.get("featureFlags", [])
            for datafile_exp_key in _keys_of(datafile, flag["experimentIds"])
        }
        client: Any
        client, notes, _ = make_official(datafile, logger=logger)
        try:
            for user in datagen.generate_users(seed, datafile, COVERAGE_USERS):
                for key in datagen.experiment_keys(datafile):
                    client.get_variation(key, user.user_id, user.attributes)
                for flag_key, variable_key, _ in datagen.flag_variables(datafile):
                    client.get_feature_variable(flag_key, variable_key, user.user_id, user.attributes)
                context = client.create_user_context(user.user_id, user.attributes)
                if context is not None:
                    context.decide_all()
            for kind, _, _, info in notes:
                if kind == "flag":
                    if info["variation_key"] is None:
                        sources["none"] += 1
                    elif info["rule_key"] in feature_tests:
                        sources["feature-test"] += 1
                    else:
                        sources["rollout"] += 1
                elif kind == "feature-variable" and info["feature_enabled"]:
                    variable_types[info["variable_type"]] += 1
        finally:
            client.close()
    leaves = collections.Counter({f"{match} -> {result}": n for (match, result), n in leaf_results.items()})
    return {"leaves": leaves, "paths": handler.counts, "sources": sources, "variable_types": variable_types}


def _keys_of(datafile: dict[str, Any], ids: list[str]) -> list[str]:
    by_id = {e["id"]: e["key"] for e in datagen.all_experiments(datafile)}
    return [by_id[i] for i in ids]


def test_generated_inputs_cover_every_decision_path(monkeypatch: pytest.MonkeyPatch) -> None:
    coverage = _measure_coverage(monkeypatch)
    print("\ndatagen coverage over", COVERAGE_SEEDS, "datafiles x", COVERAGE_USERS, "users:")
    for name, counter in coverage.items():
        print(f"  {name}: {dict(sorted(counter.items()))}")

    leaves = coverage["leaves"]
    for match in datagen.MATCH_TYPES:
        assert leaves[f"{match} -> True"] > 0, f"{match} never evaluated to True"
        assert leaves[f"{match} -> False"] > 0, f"{match} never evaluated to False"
        if match != "exists":  # exists is never UNKNOWN
            assert leaves[f"{match} -> None"] > 0, f"{match} never evaluated to None"
    assert leaves["an_unknown_match -> None"] > 0
    for path in PATHS:
        assert coverage["paths"][path] > 0, f"decision path never taken: {path}"
    for source in ("feature-test", "rollout", "none"):
        assert coverage["sources"][source] > 0, f"decision source never seen: {source}"
    for variable_type in datagen.VARIABLE_TYPES:
        assert coverage["variable_types"][variable_type] > 0, f"no enabled {variable_type} variable"


@pytest.mark.parametrize("case", datagen.hazard_cases(), ids=lambda c: c.name)
def test_official_sdk_crashes_on_hazards(case: datagen.HazardCase) -> None:
    """Keeps datagen.OFFICIAL_CRASHES honest: each listed input still makes the official SDK raise."""
    assert case.name in datagen.OFFICIAL_CRASHES

    class StoredProfile:
        def lookup(self, user_id: str) -> Any:
            return case.stored_profile

        def save(self, profile: Any) -> None:
            pass

    ups = StoredProfile() if case.stored_profile is not None else None
    if case.crashes_at == "construct":
        with pytest.raises(Exception):  # noqa: B017 - any exception is the finding
            make_official(case.datafile, user_profile_service=ups)
        return
    client, _, _ = make_official(case.datafile, user_profile_service=ups)
    try:
        with pytest.raises((ValueError, IndexError, TypeError, AttributeError)):
            client.get_variation(case.experiment_key or "", case.user.user_id, case.user.attributes)
    finally:
        client.close()
