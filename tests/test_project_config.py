from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import datagen
import optimizely_async
from _support.datafiles import empty_datafile
from optimizely_async.config.loader import prepare, run_at_once
from optimizely_async.config.project_config import config_steps, parse_config
from optimizely_async.errors import InvalidDatafileError, OptimizelyError


def minimal(**extra: Any) -> dict[str, Any]:
    return empty_datafile("42", **{"accountId": "12001", "projectId": "111001", **extra})


def experiment(eid: str, key: str, variations: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    exp: dict[str, Any] = {
        "id": eid,
        "key": key,
        "status": "Running",
        "layerId": "L" + eid,
        "variations": [{"id": vid, "key": vkey, "featureEnabled": True, "variables": []} for vid, vkey in variations],
        "trafficAllocation": [
            {"entityId": vid, "endOfRange": 10000 * (i + 1) // len(variations)} for i, (vid, _) in enumerate(variations)
        ],
        "audienceIds": [],
        "forcedVariations": {},
    }
    exp.update(extra)
    return exp


def test_accepts_str_bytes_and_dict() -> None:
    df = minimal()
    for data in (df, json.dumps(df), json.dumps(df).encode()):
        config = parse_config(data)
        assert config.revision == "42"
        assert config.account_id == "12001"
        assert config.event_endpoint == "https://logx.optimizely.com/v1/events"


def test_invalid_json_is_reported() -> None:
    with pytest.raises(InvalidDatafileError, match="not valid JSON"):
        parse_config("{not json")


def test_unsupported_version_is_named() -> None:
    with pytest.raises(InvalidDatafileError, match="unsupported datafile version '5'"):
        parse_config(minimal(version="5"))


def test_wrong_shape_names_the_path() -> None:
    df = minimal(experiments=[experiment("1", "e", [("10", "a")])])
    df["experiments"][0]["trafficAllocation"][0]["endOfRange"] = "lots"
    with pytest.raises(InvalidDatafileError) as info:
        parse_config(df)
    assert "experiments[0].trafficAllocation[0].endOfRange" in str(info.value)
    assert isinstance(info.value, OptimizelyError)


def test_missing_required_key() -> None:
    df = minimal()
    del df["revision"]
    with pytest.raises(InvalidDatafileError, match="revision"):
        parse_config(df)


def test_not_an_object() -> None:
    with pytest.raises(InvalidDatafileError, match="JSON object"):
        parse_config("[1, 2]")


def test_unknown_keys_are_ignored_and_eu_region() -> None:
    config = parse_config(minimal(somethingNew={"x": 1}, region="eu"))
    assert config.event_endpoint == "https://eu.logx.optimizely.com/v1/events"


def test_typed_audiences_replace_legacy_ones() -> None:
    legacy = {
        "id": "7",
        "name": "a",
        "conditions": json.dumps(["or", {"name": "x", "type": "custom_attribute", "value": 1}]),
    }
    typed = {
        "id": "7",
        "name": "a",
        "conditions": ["and", {"name": "y", "type": "custom_attribute", "value": 2}],
    }
    config = parse_config(minimal(audiences=[legacy], typedAudiences=[typed]))
    assert config.audiences["7"] == tuple(typed["conditions"])  # trees are kept as tuples


@pytest.mark.parametrize("conditions", ["{not json", "[" * 5000, ["or", 1], None])
def test_a_replaced_legacy_audience_is_not_read(conditions: Any) -> None:
    """As in the official SDK: the conditions of a legacy audience that a typed one replaces are never read, so
    bad JSON (or no text at all) there does not make the datafile invalid."""
    from optimizely import optimizely

    typed = {"id": "7", "name": "a", "conditions": ["or", {"name": "y", "type": "custom_attribute", "value": 2}]}
    data = json.dumps(minimal(audiences=[{"id": "7", "name": "a", "conditions": conditions}], typedAudiences=[typed]))
    official = optimizely.Optimizely(datafile=data)
    assert official.is_valid
    official.close()
    assert parse_config(data).audiences["7"] == tuple(typed["conditions"])
    assert run_at_once(config_steps(data)).audiences["7"] == tuple(typed["conditions"])


def test_legacy_audience_conditions_must_be_a_json_string() -> None:
    bad = {"id": "7", "name": "a", "conditions": "[oops"}
    with pytest.raises(InvalidDatafileError, match=r"audiences\[0\]\.conditions"):
        parse_config(minimal(audiences=[bad]))


def test_indexes_groups_rollouts_and_flags() -> None:
    grouped = experiment("21", "g1", [("210", "a")])
    df = minimal(
        experiments=[experiment("1", "exp", [("10", "a"), ("11", "b")])],
        groups=[
            {
                "id": "G",
                "policy": "random",
                "experiments": [grouped],
                "trafficAllocation": [{"entityId": "21", "endOfRange": 10000}],
            }
        ],
        rollouts=[
            {
                "id": "R",
                "experiments": [
                    experiment("31", "rule1", [("310", "on")]),
                    experiment("32", "everyone", [("320", "off")]),
                ],
            }
        ],
        featureFlags=[
            {
                "id": "F",
                "key": "flag",
                "experimentIds": ["1"],
                "rolloutId": "R",
                "variables": [{"id": "v1", "key": "conf", "type": "string", "subType": "json", "defaultValue": "{}"}],
            }
        ],
        attributes=[{"id": "100", "key": "plan"}],
        events=[{"id": "500", "key": "buy", "experimentIds": ["1"]}],
    )
    config = parse_config(df)
    assert set(config.experiments_by_key) == {"exp", "g1", "rule1", "everyone"}
    assert config.experiments_by_key["g1"].group is not None
    assert config.experiments_by_key["g1"].group.policy == "random"
    flag = config.flags_by_key["flag"]
    assert [r.key for r in flag.rollout_rules] == ["rule1", "everyone"]
    assert list(flag.variations_by_id) == ["10", "11", "310", "320"]
    assert flag.variables["conf"].type == "json"
    assert config.is_feature_experiment("1") and not config.is_feature_experiment("21")
    assert config.attribute_ids == {"plan": "100"}
    assert config.events_by_key["buy"].id == "500"
    assert config.experiments_by_key["exp"].campaign_id == "L1"


def test_unknown_flag_references_are_invalid() -> None:
    df = minimal(featureFlags=[{"id": "F", "key": "flag", "experimentIds": ["404"], "rolloutId": "", "variables": []}])
    with pytest.raises(InvalidDatafileError, match="404"):
        parse_config(df)
    df = minimal(featureFlags=[{"id": "F", "key": "flag", "experimentIds": [], "rolloutId": "R404", "variables": []}])
    with pytest.raises(InvalidDatafileError, match="R404"):
        parse_config(df)


def test_feature_rollout_experiment_gets_everyone_else_variation() -> None:
    fr = experiment("1", "fr_exp", [("10", "on")], type="fr")
    fr["trafficAllocation"] = [{"entityId": "10", "endOfRange": 5000}]
    df = minimal(
        experiments=[fr],
        rollouts=[{"id": "R", "experiments": [experiment("32", "everyone", [("320", "off")])]}],
        featureFlags=[{"id": "F", "key": "flag", "experimentIds": ["1"], "rolloutId": "R", "variables": []}],
    )
    exp = parse_config(df).experiments_by_key["fr_exp"]
    assert [v.key for v in exp.variations] == ["on", "off"]
    assert exp.allocation[-1] == ("320", 10000)


def test_config_is_immutable() -> None:
    config = parse_config(minimal())
    with pytest.raises(AttributeError):
        config.revision = "43"  # type: ignore[misc]


def test_only_running_holdouts_are_indexed() -> None:
    holdout = {
        "id": "H1",
        "key": "h",
        "status": "Running",
        "variations": [{"id": "900", "key": "off"}],
        "trafficAllocation": [{"entityId": "900", "endOfRange": 500}],
        "audienceIds": [],
    }
    draft = dict(holdout, id="H2", key="h2", status="Draft")
    local = dict(holdout, id="H3", key="h3", includedRules=["1"])
    config = parse_config(minimal(holdouts=[holdout, draft], localHoldouts=[local]))
    assert [h.key for h in config.global_holdouts] == ["h"]
    assert [h.key for h in config.rule_holdouts["1"]] == ["h3"]


def _large_datafile() -> bytes:
    """Several generated datafiles merged into one: thousands of objects, so a build without the collector
    paused would trigger collections."""
    merged = datagen.generate_datafile(7)
    for seed in range(8, 20):
        extra = datagen.generate_datafile(seed)
        for key in ("experiments", "featureFlags", "rollouts", "audiences", "events", "groups"):
            known = {item["id"] for item in merged.get(key, [])}
            merged.setdefault(key, []).extend(item for item in extra.get(key, []) if item["id"] not in known)
    return json.dumps(merged).encode()


def test_the_build_pauses_between_small_steps() -> None:
    # How long the build runs between two pauses (and so holds the GIL in a worker thread), counted in lines
    # of Python run, not in seconds: a pass over every experiment without a pause grows with the datafile.
    d = json.loads((Path(optimizely_async.__file__).parent / "example_datafile.json").read_text())
    template = d["experiments"][0]
    for c in range(300):
        e = copy.deepcopy(template)
        e.update(id=f"9{c:05d}", key=f"copy_{c}", layerId=f"8{c:05d}", forcedVariations={})
        for i, v in enumerate(e["variations"]):
            v["id"] = f"7{c:05d}{i}"
            v["variables"] = [{"id": f"5000{k}", "value": "1"} for k in range(1, 4)]
        ids = [v["id"] for v in e["variations"]]
        e["trafficAllocation"] = [{"entityId": ids[0], "endOfRange": 3334}, {"entityId": ids[1], "endOfRange": 6667}]
        e["trafficAllocation"].append({"entityId": ids[2], "endOfRange": 10000})
        d["experiments"].append(e)
    body = json.dumps(d).encode()
    prepare()  # the models' validators, deferred at import, are built once before any step
    lines = [0]
    stretches: list[int] = []

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            lines[0] += 1
        return tracer

    def counted() -> Any:
        gen = config_steps(body)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
            stretches.append(lines[0])
            lines[0] = 0

    sys.settrace(tracer)
    try:
        config = counted()
    finally:
        sys.settrace(None)
    stretches.append(lines[0])
    assert len(config.experiments_by_id) > 300
    # Each step is one element or so (the longest here: ~600 lines); before the pass over the experiments'
    # variable usages paused, one step ran ~6,600.
    assert max(stretches) < 1500, sorted(stretches)[-5:]


def test_has_cmab_is_known_per_flag() -> None:
    """A flag without a CMAB feature test decides on the synchronous path even in a datafile with CMAB rules."""
    from _cmab_support import FLAG, small_datafile

    config = parse_config(small_datafile())
    assert config.has_cmab
    assert config.flags_by_key[FLAG].has_cmab
    assert not config.flags_by_key["odp_flag"].has_cmab
