"""OptimizelyConfig projection: differential against the official SDK, plus caching and immutability.

Both projections become the same plain structure (objects -> class name + attributes sorted by name, maps ->
ordered (key, value) pairs so that iteration order is compared too, tuples/lists -> lists) and are compared as
JSON text, so ``True`` and ``1`` or ``None`` and ``""`` never pass for each other.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import pickle
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optimizely import optimizely as official_sdk
from optimizely.error_handler import NoOpErrorHandler
from optimizely.logger import NoOpLogger
from optimizely.optimizely_config import OptimizelyConfigService
from optimizely.project_config import ProjectConfig as OfficialProjectConfig

import datagen
from optimizely_async.config import optimizely_config as oc
from optimizely_async.config.optimizely_config import OptimizelyConfig, optimizely_config_for
from optimizely_async.config.project_config import parse_config

# ----------------------------------------------------------------------------------------------- helpers


def plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        attrs = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return {"__class__": type(obj).__name__, **{k: plain(attrs[k]) for k in sorted(attrs)}}
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("optimizely."):
        attrs = vars(obj)
        return {"__class__": type(obj).__name__, **{k: plain(attrs[k]) for k in sorted(attrs)}}
    if isinstance(obj, dict):
        return {"__map__": [[k, plain(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [plain(x) for x in obj]
    assert obj is None or isinstance(obj, (str, int, float, bool)), type(obj)
    return obj


def official_projection(datafile: str) -> Any:
    config = OfficialProjectConfig(datafile, NoOpLogger(), NoOpErrorHandler())
    return OptimizelyConfigService(config, NoOpLogger()).get_config()


def assert_same(datafile: dict[str, Any] | str) -> OptimizelyConfig:
    text = datafile if isinstance(datafile, str) else json.dumps(datafile)
    theirs = plain(official_projection(text))
    ours_obj = optimizely_config_for(parse_config(text))
    ours = plain(ours_obj)
    if ours != theirs:  # structural diff first: pytest shows where
        assert ours == theirs
    assert json.dumps(ours) == json.dumps(theirs)
    assert ours_obj.get_datafile() == text
    return ours_obj


def base(**extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "version": "4",
        "projectId": "p1",
        "accountId": "a1",
        "revision": "7",
        "attributes": [],
        "audiences": [],
        "typedAudiences": [],
        "experiments": [],
        "groups": [],
        "events": [],
        "featureFlags": [],
        "rollouts": [],
    }
    d.update(extra)
    return d


def variation(vid: str, key: str, enabled: Any = True, variables: Any = None) -> dict[str, Any]:
    v: dict[str, Any] = {"id": vid, "key": key}
    if enabled is not ...:
        v["featureEnabled"] = enabled
    if variables is not None:
        v["variables"] = [{"id": i, "value": val} for i, val in variables]
    return v


def experiment(eid: str, key: str, variations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": eid,
        "key": key,
        "status": "Running",
        "layerId": "L" + eid,
        "variations": variations,
        "trafficAllocation": [{"entityId": v["id"], "endOfRange": 10000} for v in variations[:1]],
        "audienceIds": [],
        "forcedVariations": {},
    }
    e.update(extra)
    return e


VARIABLES = [
    {"id": "v_b", "key": "on", "type": "boolean", "defaultValue": "false"},
    {"id": "v_i", "key": "count", "type": "integer", "defaultValue": "1"},
    {"id": "v_d", "key": "ratio", "type": "double", "defaultValue": "0.5"},
    {"id": "v_s", "key": "label", "type": "string", "defaultValue": "plain"},
    {"id": "v_j", "key": "blob", "type": "string", "subType": "json", "defaultValue": '{"a": 1}'},
]
AUDIENCES = {"a1": "us", "a2": "female", "a3": "adult", "a4": "mobile"}


def rich_datafile() -> dict[str, Any]:
    """Typed audiences, groups, rollouts, json variables, an "fr" experiment, duplicate keys."""
    legacy_cond = json.dumps(["and", ["or", ["or", {"name": "c", "type": "custom_attribute", "value": "us"}]]])
    typed_cond = ["and", ["or", {"name": "age", "type": "custom_attribute", "match": "gt", "value": 18}]]
    return base(
        sdkKey="sdk-123",
        environmentKey="production",
        attributes=[{"id": "at1", "key": "country"}, {"id": "at2", "key": "age"}],
        audiences=[
            {"id": "a1", "name": "us", "conditions": legacy_cond},
            {"id": "a2", "name": "female", "conditions": legacy_cond},
            {"id": "a3", "name": "placeholder", "conditions": datagen.DUMMY_LEGACY_CONDITIONS},
            {"id": "$opt_dummy_audience", "name": "dummy", "conditions": datagen.DUMMY_LEGACY_CONDITIONS},
            {"id": "a5", "name": "", "conditions": legacy_cond},
        ],
        typedAudiences=[
            {"id": "a3", "name": "adult", "conditions": typed_cond},
            {
                "id": "a4",
                "name": "mobile \u00fc\u65e5",
                "conditions": ["or", {"name": "d", "value": "\u00fc"}],
            },
            {"id": "a6", "name": "", "conditions": typed_cond},
        ],
        experiments=[
            experiment("e1", "ab_test", [variation("v1", "a", ...), variation("v2", "b", None)]),
            experiment(
                "e2",
                "feature_test",
                [
                    variation("v3", "on", True, [("v_i", "5"), ("v_j", '{"b": 2}'), ("unknown", "x")]),
                    variation("v4", "off", False, [("v_i", "9"), ("v_s", "never shown")]),
                    variation("v5", "bare", True),
                ],
                audienceConditions=["or", "a1", ["and", "a2", "a3"], ["not", "a4"]],
            ),
            experiment("e3", "rollout_test", [variation("v6", "treat", True, [("v_s", "fr!")])], type="fr"),
            experiment("e4", "dup", [variation("v7", "x")], audienceConditions=["a1", "a2", "zz"]),
        ],
        groups=[
            {
                "id": "g1",
                "policy": "random",
                "trafficAllocation": [{"entityId": "e5", "endOfRange": 5000}],
                "experiments": [
                    experiment("e5", "group_exp", [variation("v8", "g", True, [("v_b", "true")])]),
                    experiment("e6", "dup", [variation("v9", "y")], audienceConditions=["not", "a5"]),
                ],
            }
        ],
        featureFlags=[
            {
                "id": "f1",
                "key": "flag",
                "experimentIds": ["e2", "e5"],
                "rolloutId": "r1",
                "variables": VARIABLES,
            },
            {
                "id": "f2",
                "key": "fr_flag",
                "experimentIds": ["e3"],
                "rolloutId": "r2",
                "variables": VARIABLES,
            },
            {"id": "f3", "key": "no_rollout", "experimentIds": [], "rolloutId": "", "variables": []},
        ],
        rollouts=[
            {
                "id": "r1",
                "experiments": [
                    experiment(
                        "r1a",
                        "targeted",
                        [variation("rv1", "on", True, [("v_s", "rule")])],
                        audienceConditions=["or", "a3"],
                    ),
                    experiment("r1b", "everyone", [variation("rv2", "off", False)]),
                ],
            },
            {
                "id": "r2",
                "experiments": [
                    experiment("r2a", "everyone_else", [variation("rv3", "ee", True, [("v_i", "42")])]),
                ],
            },
            {"id": "r3", "experiments": []},
        ],
        events=[
            {"id": "ev1", "key": "purchase", "experimentIds": ["e1", "e2"]},
            {"id": "ev2", "key": "signup", "experimentIds": []},
        ],
    )


# -------------------------------------------------------------------------------------- differential


@pytest.mark.parametrize("seed", range(150))
def test_generated_datafiles_match_official(seed: int) -> None:
    assert_same(datagen.generate_datafile(seed))


@pytest.mark.parametrize("version", ["2", "3", "4"])
def test_each_datafile_version_matches_official(version: str) -> None:
    for seed in range(10):
        assert_same(datagen.generate_datafile(1000 + seed, version=version))


def test_rich_datafile_matches_official() -> None:
    ours = assert_same(rich_datafile())
    # Spot checks of the rules the comparison covers, so a shared mistake cannot hide.
    assert list(ours.experiments_map) == ["ab_test", "feature_test", "rollout_test", "dup", "group_exp"]
    assert ours.experiments_map["dup"].id == "e6"  # the later duplicate wins
    assert (
        ours.experiments_map["feature_test"].audiences
        == '"us" OR ("female" AND "adult") OR (NOT "mobile \u00fc\u65e5")'
    )
    assert ours.experiments_map["dup"].audiences == 'NOT ""'  # a5's name is empty
    assert [a.id for a in ours.audiences] == ["a3", "a4", "a6", "a1", "a2", "a5"]
    assert ours.audiences[1].conditions == json.dumps(["or", {"name": "d", "value": "\u00fc"}])
    assert ours.audiences[2].name == ""
    ft = ours.experiments_map["feature_test"].variations_map
    assert ft["on"].variables_map["count"].value == "5"
    assert ft["on"].variables_map["blob"].type == "json"
    assert ft["off"].variables_map["count"].value == "1"  # featureEnabled false: defaults
    assert ours.experiments_map["ab_test"].variations_map["a"].feature_enabled is None
    assert ours.experiments_map["ab_test"].variations_map["a"].variables_map == {}
    fr = ours.experiments_map["rollout_test"].variations_map
    assert list(fr) == ["treat", "ee"] and fr["ee"].variables_map["count"].value == "42"
    flag = ours.features_map["flag"]
    assert [r.key for r in flag.delivery_rules] == ["targeted", "everyone"]
    assert flag.delivery_rules[0].variations_map["on"].variables_map["label"].value == "plain"
    assert [r.key for r in flag.experiment_rules] == ["feature_test", "group_exp"]
    assert flag.experiments_map["group_exp"] is ours.experiments_map["group_exp"]
    assert ours.features_map["no_rollout"].delivery_rules == ()
    assert ours.sdk_key == "sdk-123" and ours.environment_key == "production"


def test_rich_datafile_through_the_official_client() -> None:
    text = json.dumps(rich_datafile())
    client = official_sdk.Optimizely(datafile=text, logger=NoOpLogger())
    assert plain(optimizely_config_for(parse_config(text))) == plain(client.get_optimizely_config())


AUDIENCE_CONDITION_CASES: list[Any] = [
    None,
    [],
    ["a1"],
    ["zz"],
    ["or"],
    ["and", "a1"],
    ["or", "a1"],
    ["not", "a1"],
    ["a1", "a2"],
    ["a1", "a2", "a3", "a4"],
    ["and", "a1", "a2"],
    ["or", "a1", "a2", "a3"],
    ["not", ["or", "a1", "a2"]],
    ["and", ["or", "a1", "a2"], "a3"],
    ["or", ["and", "a1", "a2"], ["and", "a3", "a4"]],
    ["and", "a1", ["or", "a2", ["not", "a3"]], "a4"],
    ["and", "a1", "or", "a2", "a3"],
    ["or", [], "a1"],
    ["and", "a1", []],
    [["not", "a1"], "a2"],
    "a1",
    "a12",
    {"or": "a1"},
]


@pytest.mark.parametrize("conditions", AUDIENCE_CONDITION_CASES, ids=repr)
def test_audience_strings_match_official(conditions: Any) -> None:
    d = base(audiences=[{"id": k, "name": v, "conditions": "[]"} for k, v in AUDIENCES.items()])
    exp = experiment("e1", "exp", [variation("v1", "on")])
    if conditions is not None:
        exp["audienceConditions"] = conditions
    d["experiments"] = [exp]
    if isinstance(conditions, dict):  # the official SDK raises (KeyError); we render nothing
        assert optimizely_config_for(parse_config(d)).experiments_map["exp"].audiences == ""
    else:
        assert_same(d)


def test_explicit_null_audience_conditions_and_missing_fields() -> None:
    d = base(
        audiences=[{"id": "a1", "name": "us", "conditions": "[]"}],
        experiments=[experiment("e1", "exp", [variation("v1", "on", ...)], audienceConditions=None)],
        featureFlags=[{"id": "f1", "key": "flag", "experimentIds": ["e1"], "rolloutId": "", "variables": []}],
    )
    ours = assert_same(d)
    assert ours.sdk_key == "" and ours.environment_key == ""


def test_duplicate_flag_keys_and_shared_experiments_match_official() -> None:
    d = rich_datafile()
    d["featureFlags"].append(
        {"id": "f4", "key": "flag", "experimentIds": ["e3"], "rolloutId": "r2", "variables": VARIABLES[:2]}
    )
    d["featureFlags"].append(
        {"id": "f5", "key": "fr_flag_2", "experimentIds": ["e3"], "rolloutId": "r1", "variables": VARIABLES}
    )
    assert_same(d)


def test_feature_rollout_everyone_else_without_variables() -> None:
    d = rich_datafile()
    d["rollouts"][1]["experiments"][0]["variations"] = [{"id": "rv3", "key": "ee", "featureEnabled": False}]
    assert_same(d)
    d["rollouts"][1]["experiments"] = []  # no everyone-else rule: nothing is added
    ours = assert_same(d)
    assert list(ours.experiments_map["rollout_test"].variations_map) == ["treat"]


def test_get_datafile_returns_the_text_given() -> None:
    d = rich_datafile()
    text = json.dumps(d, indent=2, ensure_ascii=False)
    assert optimizely_config_for(parse_config(text)).get_datafile() == text
    assert optimizely_config_for(parse_config(text.encode())).get_datafile() == text
    assert optimizely_config_for(parse_config(d)).get_datafile() == json.dumps(d)


# ----------------------------------------------------------------------------- audiences string property

_IDS = st.sampled_from(["a1", "a2", "a3", "a4", "zz", "", "AND"])
_OPS = st.sampled_from(["and", "or", "not"])


def _official_crashes(tree: list[Any]) -> bool:
    """A (sub)list whose only element is a list makes the official SDK raise TypeError."""
    if len(tree) == 1 and isinstance(tree[0], list):
        return True
    return any(isinstance(x, list) and _official_crashes(x) for x in tree)


_TREES = st.recursive(
    st.lists(st.one_of(_IDS, _OPS), max_size=5),
    lambda children: st.lists(st.one_of(_IDS, _OPS, children), max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(tree=_TREES)
def test_audience_string_property(tree: list[Any]) -> None:
    names = dict(AUDIENCES)
    service = OptimizelyConfigService.__new__(OptimizelyConfigService)
    if _official_crashes(tree):
        assert isinstance(oc._audiences_string(tree, names), str)
        return
    assert oc._audiences_string(tree, names) == service.replace_ids_with_names(tree, names)


def test_single_nested_list_is_rendered_where_the_official_sdk_raises() -> None:
    assert oc._audiences_string([["or", "a1", "a2"]], AUDIENCES) == '"us" OR "female"'
    assert oc._audiences_string(["and", [["a1"]], "a3"], AUDIENCES) == '("us") AND "adult"'


# ----------------------------------------------------------------------------------- caching and shape


def test_built_once_per_config() -> None:
    config = parse_config(rich_datafile())
    first = optimizely_config_for(config)
    assert optimizely_config_for(config) is first
    other = parse_config(rich_datafile())  # same revision, another config object: its own projection
    assert optimizely_config_for(other) is not first
    assert optimizely_config_for(config) is first


def test_client_returns_the_same_projection_until_the_config_changes() -> None:
    from optimizely_async import AsyncOptimizely

    client = AsyncOptimizely(datafile=rich_datafile())
    first = client.get_optimizely_config()
    assert first is not None and first.revision == "7"
    assert client.get_optimizely_config() is first


def test_concurrent_first_use_builds_one_projection() -> None:
    config = parse_config(rich_datafile())
    results: list[OptimizelyConfig] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(optimizely_config_for(config))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_strong_fallback_cache_is_bounded() -> None:
    configs = [parse_config(base(revision=str(i))) for i in range(oc._STRONG_MAX + 5)]
    for c in configs:
        optimizely_config_for(c)
    assert len(oc._strong_keys) <= oc._STRONG_MAX
    assert sum(1 for k in oc._strong_keys if k in oc._cache) <= oc._STRONG_MAX


def test_weakly_referenceable_configs_are_forgotten_when_collected() -> None:
    config = parse_config(rich_datafile())
    key = id(config)
    first = optimizely_config_for(config)
    assert optimizely_config_for(config) is first
    assert key in oc._cache and key not in oc._strong_keys
    del config
    gc.collect()
    assert key not in oc._cache


def test_projection_is_frozen() -> None:
    ours = optimizely_config_for(parse_config(rich_datafile()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.revision = "8"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.features_map["flag"].key = "x"  # type: ignore[misc]
    assert isinstance(ours.events, tuple) and isinstance(ours.events[0].experiment_ids, tuple)
    copy.deepcopy(ours)  # copyable (e.g. by user code that wants a mutable snapshot)
    assert dataclasses.asdict(ours)["features_map"]["flag"]["key"] == "flag"


def test_built_objects_are_the_public_frozen_classes() -> None:
    """The variables, variations and experiments the build makes are exactly the public classes: frozen,
    comparing as the constructor's objects do (variables by value, variations and experiments by identity),
    and copying, pickling and replacing alike."""
    ours = optimizely_config_for(parse_config(rich_datafile()))
    feature = ours.features_map["flag"]
    experiments = [*ours.experiments_map.values(), *feature.delivery_rules]
    variations = [v for e in experiments for v in e.variations_map.values()]
    variables = [x for v in variations for x in v.variables_map.values()]
    assert experiments and variations and variables
    for objects, cls in (
        (experiments, oc.OptimizelyExperiment),
        (variations, oc.OptimizelyVariation),
        (variables, oc.OptimizelyVariable),
    ):
        for obj in objects:
            assert type(obj) is cls
            with pytest.raises(dataclasses.FrozenInstanceError):
                obj.id = "changed"  # type: ignore[misc]
            with pytest.raises(dataclasses.FrozenInstanceError):
                del obj.key  # type: ignore[misc]
            values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}
            made = cls(**values)
            assert (obj == made) is (cls is oc.OptimizelyVariable)  # the others compare by identity
            assert dataclasses.replace(obj) == made or cls is not oc.OptimizelyVariable
            assert repr(pickle.loads(pickle.dumps(obj))) == repr(obj) == repr(made)
            assert repr(copy.copy(obj)) == repr(obj)
    variable = variables[0]
    same = oc.OptimizelyVariable(variable.id, variable.key, variable.type, variable.value)
    assert hash(variable) == hash(same) and {variable: 1}[same] == 1
