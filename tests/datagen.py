"""Seeded random generator of valid Optimizely datafiles and of users that exercise them.

Used by the differential tests, which run the official SDK and ours side by side on the same inputs.

* :func:`generate_datafile` builds a datafile ``dict`` (version "4" mostly, sometimes "3" or "2") that the
  official SDK's JSON-schema validation and ``ProjectConfig`` accept. It covers: attributes; legacy
  ``audiences`` with string conditions and ``typedAudiences`` (some replacing a legacy audience with the same
  id); condition trees with and/or/not, implicit-or lists, nesting and every match type; experiments with
  ``audienceIds`` and/or ``audienceConditions`` (``[]``, unknown ids), every status, traffic allocations
  with gaps, empty ``entityId``, unknown variation ids, ``endOfRange`` < 10000 and out-of-order ranges;
  whitelisting; mutual-exclusion ("random") and "overlapping" groups; feature flags with feature tests,
  rollouts (several rules, an "Everyone Else" last rule), variables of every type with variation-level
  values; events; ``sendFlagDecisions``, ``botFiltering``, ``anonymizeIP``, ``region``.
* :func:`generate_users` builds users whose attribute values sit near the condition values of the datafile,
  so audiences match often and every matcher branch (True, False, None) is taken.
* ``safe=True`` (the default) avoids the inputs on which the official SDK itself crashes; those are listed in
  :data:`OFFICIAL_CRASHES` and built on purpose by :func:`hazard_cases`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import mmh3

Json = Any

MATCH_TYPES: tuple[str, ...] = (
    "exact",
    "exists",
    "substring",
    "gt",
    "ge",
    "lt",
    "le",
    "semver_eq",
    "semver_gt",
    "semver_ge",
    "semver_lt",
    "semver_le",
)
SEMVER_MATCHES: tuple[str, ...] = ("semver_eq", "semver_gt", "semver_ge", "semver_lt", "semver_le")
NUMERIC_MATCHES: tuple[str, ...] = ("gt", "ge", "lt", "le")
VARIABLE_TYPES: tuple[str, ...] = ("boolean", "integer", "double", "string", "json")
DUMMY_LEGACY_CONDITIONS = (
    '["or", {"match": "exact", "name": "$opt_dummy_attribute", "type": "custom_attribute", '
    '"value": "$opt_dummy_value"}]'
)

#: Inputs on which the official SDK 5.7.0 raises out of a public decision method (verified by
#: ``tests/test_datagen.py::test_official_sdk_crashes_on_hazards``). The generator avoids them when
#: ``safe=True``; :func:`hazard_cases` builds each of them on purpose.
OFFICIAL_CRASHES: dict[str, str] = {
    "semver_prerelease_vs_numeric": (
        "semver target with a non-numeric part where the user version has a numeric one "
        '(target "1.2.3-beta", user "1.2.3-4"; target "1.2-beta", user "1.2.3"): ValueError from '
        'int("beta") in compare_user_version_with_target_version'
    ),
    "semver_empty_suffix": 'semver target "1.2.3-" against user "1.2.3-4": ValueError from int("")',
    "semver_unicode_digit": (
        'semver version with a character that str.isdigit() accepts but int() rejects (user "1.\u00b2"): ValueError'
    ),
    "empty_nested_audience_conditions": (
        'an empty list nested in an experiment\'s audienceConditions (["or", [], "id"]): IndexError in '
        "condition_tree_evaluator.evaluate (only the top-level [] is guarded)"
    ),
    "empty_audience_condition_list": (
        'an audience whose conditions are "[]" or contain a nested [] (["and", []]): IndexError'
    ),
    "string_leaf_in_audience_conditions": (
        'a bare string leaf inside an audience condition tree (["and", "x"]): TypeError, the string is used '
        "as a list index"
    ),
    "single_list_in_audience_conditions": (
        "an experiment audienceConditions (sub)list whose only element is a list "
        '([["or", "a", "b"]]): TypeError (unhashable list) while the constructor builds the '
        "OptimizelyConfig projection; Optimizely() raises"
    ),
    "ups_bucket_entry_not_a_dict": (
        'a user profile whose experiment_bucket_map maps an experiment id to a non-dict ("v1"), or whose '
        "experiment_bucket_map is a truthy non-dict (a list or a string): AttributeError in "
        "UserProfile.get_variation_for_experiment"
    ),
}

_WORDS = (
    "chrome",
    "firefox",
    "safari",
    "mobile",
    "desktop",
    "gold",
    "silver",
    "premium",
    "us",
    "de",
    "fr",
    "beta_tester",
    "Ünïcödé",
    "日本",
    "",
    " ",
    "a",
)
_ATTRIBUTE_NAMES = (
    ("browser", "string"),
    ("device", "string"),
    ("country", "string"),
    ("plan", "string"),
    ("age", "number"),
    ("score", "number"),
    ("price", "number"),
    ("visits", "number"),
    ("is_vip", "bool"),
    ("logged_in", "bool"),
    ("app_version", "semver"),
    ("sdk_version", "semver"),
)
_SAFE_TARGET_VERSIONS = (
    "1",
    "2",
    "1.2",
    "1.2.3",
    "2.0.0",
    "0.9.12",
    "10.0.1",
    "1.02.3",
    "1.2.3-beta",
    "1.2.3-beta.1",
    "1.2.3-rc.1+build.5",
    "1.2.3+build",
    "1.2.3+build-7",
    "3.0.0-alpha",
    # invalid targets evaluate to None before the user version is looked at
    "1.2.3.4",
    "1..2",
    "a.b",
    "",
    "1.2 .3",
    "-1.2.3",
)
_HAZARD_TARGET_VERSIONS = ("1.2-beta", "1-rc", "1.2.3-", "1.\u00b2")
#: Users whose bucket sits exactly on a range boundary of some traffic allocations (see _edge_ranges).
EDGE_USERS: tuple[str, ...] = ("edge_user_0", "edge_user_1", "edge_user_2")


def _finite_number(rng: random.Random) -> int | float:
    choice = rng.random()
    if choice < 0.55:
        return rng.randint(-5, 100)
    if choice < 0.85:
        return rng.randint(-10, 200) / 2
    return rng.choice([0, -1, 0.0, 2**53, -(2**53), 1e-9, 123456789.25])


class _Ids:
    """Unique numeric string ids, as the Optimizely app emits them."""

    def __init__(self, rng: random.Random) -> None:
        self._next = rng.randint(10_000, 900_000) * 100

    def __call__(self) -> str:
        self._next += 1 + (self._next % 7)
        return str(self._next)


@dataclass
class _Leaf:
    name: str
    match: str | None
    value: Json
    has_value: bool = True

    def as_json(self, rng: random.Random) -> dict[str, Json]:
        out: dict[str, Json] = {"name": self.name, "type": "custom_attribute"}
        roll = rng.random()
        if roll < 0.04:
            out["type"] = "third_party_dimension"
        elif roll < 0.05:
            out["type"] = "an_unknown_condition_type"
        if self.match is not None:
            out["match"] = self.match
        if self.has_value:
            out["value"] = self.value
        return out


@dataclass
class _State:
    rng: random.Random
    version: str
    safe: bool
    ids: _Ids
    attribute_kinds: dict[str, str] = field(default_factory=dict)
    audience_ids: list[str] = field(default_factory=list)
    key_counter: int = 0

    @property
    def v4(self) -> bool:
        return self.version == "4"

    def key(self, prefix: str) -> str:
        self.key_counter += 1
        return f"{prefix}_{self.key_counter}"


# --------------------------------------------------------------------------------------------- conditions


def _semver_target(st: _State) -> str:
    if not st.safe and st.rng.random() < 0.2:
        return st.rng.choice(_HAZARD_TARGET_VERSIONS)
    return st.rng.choice(_SAFE_TARGET_VERSIONS)


def _leaf(st: _State, legacy: bool) -> _Leaf:
    rng = st.rng
    if rng.random() < 0.06:
        name, kind = "unlisted_attr", rng.choice(["string", "number", "bool", "semver"])
    else:
        name = rng.choice(list(st.attribute_kinds))
        kind = st.attribute_kinds[name]
    roll = rng.random()
    if roll < 0.07:
        return _Leaf(name, "exists", None, has_value=rng.random() < 0.5)
    if roll < 0.09:
        return _Leaf(name, "an_unknown_match", "x")
    if roll < 0.13:  # cross-kind or unsupported condition values: the matcher answers None
        odd_value: Json = rng.choice(["10", [1, 2], True, None, 2**60, 1e300, "1.2.3", 7])
        return _Leaf(name, rng.choice(MATCH_TYPES[2:]), odd_value)
    # a missing "match" means "exact"; legacy audiences usually have none
    no_match = rng.random() < (0.5 if legacy else 0.1)
    if kind == "string":
        match = rng.choice(["exact", "exact", "substring"])
        value: Json = rng.choice(_WORDS)
        if match == "substring" and value in ("", " ") and rng.random() < 0.7:
            value = "ro"
    elif kind == "number":
        match = rng.choice(["exact", "gt", "ge", "lt", "le"])
        value = _finite_number(rng)
        if rng.random() < 0.05:
            value = rng.choice([2**60, -(2**60), 1e300, 2**53 + 1])
    elif kind == "bool":
        match = "exact"
        value = rng.random() < 0.5
    else:
        match = rng.choice([*SEMVER_MATCHES, "exact"])
        value = _semver_target(st)
    if match == "exact" and no_match:
        return _Leaf(name, None, value)
    return _Leaf(name, match, value)


def _condition_tree(st: _State, depth: int, legacy: bool) -> Json:
    """An audience condition tree: nested lists of and/or/not (or implicit or) with dict leaves."""
    rng = st.rng
    if depth >= 3 or (depth > 0 and rng.random() < 0.45):
        return _leaf(st, legacy).as_json(rng)
    roll = rng.random()
    if roll < 0.03:  # operator with no operand: and -> True, or -> False, not -> None
        return [rng.choice(["and", "or", "not"])]
    n = rng.choice([1, 1, 2, 2, 3])
    children = [_condition_tree(st, depth + 1, legacy) for _ in range(n)]
    if roll < 0.33:
        return ["and", *children]
    if roll < 0.6:
        return ["or", *children]
    if roll < 0.75:
        return ["not", *children]  # only the first operand counts
    return children  # implicit "or"


def _audience_conditions(st: _State, legacy: bool) -> Json:
    rng = st.rng
    if legacy:
        # the shape the Optimizely app emits for legacy audiences, or any tree
        if rng.random() < 0.5:
            return ["and", ["or", ["or", *[_leaf(st, True).as_json(rng) for _ in range(rng.randint(1, 3))]]]]
        tree = _condition_tree(st, 0, True)
        return tree if isinstance(tree, list) else ["or", tree]
    if rng.random() < 0.07:
        return _leaf(st, False).as_json(rng)  # a single leaf, not a list
    return _condition_tree(st, 0, False)


def _experiment_audience_conditions(st: _State) -> Json:
    """An experiment-level tree over audience ids (an implicit-or list, and/or/not, nesting)."""
    rng = st.rng

    def pick_id() -> str:
        if rng.random() < 0.06 or not st.audience_ids:
            return st.ids()  # unknown audience id: that leaf is None
        return rng.choice(st.audience_ids)

    def tree(depth: int) -> Json:
        if depth >= 2 or (depth > 0 and rng.random() < 0.5):
            return pick_id()
        n = rng.choice([1, 2, 2, 3])
        children = [tree(depth + 1) for _ in range(n)]
        roll = rng.random()
        if roll < 0.3:
            return ["and", *children]
        if roll < 0.65:
            return ["or", *children]
        if roll < 0.8:
            return ["not", *children]
        if st.safe and len(children) == 1 and isinstance(children[0], list):
            return ["or", *children]  # [[...]] breaks the official OptimizelyConfig projection
        return children

    if rng.random() < 0.15:
        return []
    out = tree(0)
    return out if isinstance(out, list) else [out]


# --------------------------------------------------------------------------------------------- entities


def _traffic_allocation(st: _State, entity_ids: list[str]) -> list[dict[str, Json]]:
    rng = st.rng
    if not entity_ids or rng.random() < 0.04:
        return []
    mode = rng.choices(["full", "partial", "gaps", "unknown", "shuffled", "single"], weights=[40, 15, 15, 8, 7, 15])[0]
    if mode == "single":
        end = 10000 if rng.random() < 0.7 else rng.randint(1000, 9999)
        return [{"entityId": rng.choice(entity_ids), "endOfRange": end}]
    ids = list(entity_ids)
    rng.shuffle(ids)
    top = 10000 if mode in ("full", "unknown", "shuffled") else rng.randint(500, 9999)
    cuts = sorted(rng.sample(range(1, top), k=min(len(ids) - 1, top - 1))) if len(ids) > 1 else []
    ends = [*cuts, top]
    out: list[dict[str, Json]] = []
    for entity_id, end in zip(ids, ends, strict=True):
        if mode == "gaps" and rng.random() < 0.4:
            out.append({"entityId": "", "endOfRange": max(0, end - rng.randint(1, 2000))})
        out.append({"entityId": entity_id, "endOfRange": end})
    if mode == "unknown":
        out.insert(rng.randrange(len(out) + 1), {"entityId": st.ids(), "endOfRange": rng.randint(0, 10000)})
    if mode == "shuffled":
        rng.shuffle(out)
    return out


def _bucket(bucketing_key: str) -> int:
    """The 0..9999 bucket, computed here only to place range boundaries; the SDKs under test do their own."""
    return (mmh3.hash(bucketing_key, 1, signed=False) * 10000) >> 32


def _edge_ranges(st: _State, parent_id: str, allocation: list[dict[str, Json]]) -> None:
    """Move one ``endOfRange`` onto (or just past) an edge user's bucket, so ``bucket < endOfRange`` is
    tested at the boundary itself."""
    rng = st.rng
    if not allocation or rng.random() > 0.35:
        return
    bucket = _bucket(rng.choice(EDGE_USERS) + parent_id)
    rng.choice(allocation)["endOfRange"] = bucket + rng.choice([0, 0, 1])


def _variable_value(rng: random.Random, var_type: str, exotic: bool) -> str:
    if var_type == "boolean":
        pool = ["true", "false"] + (["True", "", "1"] if exotic else [])
    elif var_type == "integer":
        pool = ["0", "42", "-7", "1000000"] + (["1.5", "abc", " 12 ", "+5", "9007199254740993"] if exotic else [])
    elif var_type == "double":
        pool = ["3.14", "-0.5", "0", "10", "1e3"] + (["abc", "nan", "inf", "-0.0", " 2.5"] if exotic else [])
    elif var_type == "string":
        pool = ["hello", "", "Ünïcödé", 'with "quotes"', "42", '{"not": "json type"}']
    else:
        pool = [
            '{"a": 1}',
            '{"nested": {"k": [1, 2.5, "x", null, true]}}',
            "[1, 2]",
            '"str"',
            "1",
            "null",
        ] + (["{bad", "", "NaN"] if exotic else [])
    return rng.choice(pool)


def _variables(st: _State) -> list[dict[str, Json]]:
    rng = st.rng
    out: list[dict[str, Json]] = []
    for _ in range(rng.choice([0, 1, 2, 3, 4, 5])):
        var_type = rng.choice(VARIABLE_TYPES)
        declared: dict[str, Json] = {"id": st.ids(), "key": st.key("var"), "type": var_type}
        if var_type == "json" and (not st.v4 or rng.random() < 0.5):
            declared["type"] = "string"
            declared["subType"] = "json"
        declared["defaultValue"] = _variable_value(rng, var_type, exotic=rng.random() < 0.15)
        out.append(declared)
    return out


def _real_type(variable: dict[str, Json]) -> str:
    if variable["type"] == "string" and variable.get("subType") == "json":
        return "json"
    return str(variable["type"])


def _variations(st: _State, count: int, flag_variables: list[dict[str, Json]] | None) -> list[dict[str, Json]]:
    rng = st.rng
    out: list[dict[str, Json]] = []
    for _ in range(count):
        variation: dict[str, Json] = {"id": st.ids(), "key": st.key("variation")}
        if st.version != "2":
            if rng.random() < 0.93:
                variation["featureEnabled"] = rng.random() < 0.65
            if flag_variables is not None:
                variation["variables"] = [
                    {
                        "id": var["id"],
                        "value": _variable_value(rng, _real_type(var), exotic=rng.random() < 0.1),
                    }
                    for var in flag_variables
                    if rng.random() < 0.75
                ]
            elif rng.random() < 0.5:
                variation["variables"] = []
        out.append(variation)
    return out


def _experiment(
    st: _State,
    *,
    prefix: str = "exp",
    flag_variables: list[dict[str, Json]] | None = None,
    layer_id: str | None = None,
    rollout_rule: bool = False,
    everyone_else: bool = False,
) -> dict[str, Json]:
    rng = st.rng
    if rollout_rule:
        status = "Running" if rng.random() < 0.85 else rng.choice(["Paused", "Not started", "Archived"])
        n_variations = 1 if rng.random() < 0.85 else 2
    else:
        status = rng.choices(["Running", "Paused", "Not started", "Archived", "Launched"], weights=[74, 7, 7, 7, 5])[0]
        n_variations = rng.choices([0, 1, 2, 3, 4], weights=[3, 22, 35, 28, 12])[0]
    variations = _variations(st, n_variations, flag_variables)
    experiment_id = st.ids()
    experiment: dict[str, Json] = {
        "id": experiment_id,
        "key": st.key(prefix),
        "layerId": layer_id if layer_id is not None else st.ids(),
        "status": status,
        "variations": variations,
        "trafficAllocation": _traffic_allocation(st, [v["id"] for v in variations]),
        "audienceIds": [],
        "forcedVariations": {},
    }
    if everyone_else:
        if rng.random() < 0.85:
            experiment["trafficAllocation"] = (
                [{"entityId": variations[0]["id"], "endOfRange": 10000}] if variations else []
            )
        if rng.random() < 0.15 and st.audience_ids:
            experiment["audienceIds"] = [rng.choice(st.audience_ids)]
    else:
        n_aud = rng.choices([0, 1, 2, 3], weights=[25, 40, 25, 10])[0]
        ids = rng.sample(st.audience_ids, k=min(n_aud, len(st.audience_ids)))
        if rng.random() < 0.05:
            ids.append(st.ids())  # an audience id that is not in the datafile
        experiment["audienceIds"] = ids
        if st.v4 and rng.random() < 0.55:
            experiment["audienceConditions"] = _experiment_audience_conditions(st)
    _edge_ranges(st, experiment_id, experiment["trafficAllocation"])
    if variations and rng.random() < 0.3:
        for _ in range(rng.randint(1, 2)):
            user = f"whitelisted_{rng.randint(1, 6)}"
            key = rng.choice(variations)["key"] if rng.random() < 0.85 else "no_such_variation"
            experiment["forcedVariations"][user] = key
    return experiment


def _group(st: _State, policy: str, flag_pool: list[dict[str, Json]]) -> dict[str, Json]:
    rng = st.rng
    experiments = [_experiment(st, prefix="group_exp") for _ in range(rng.randint(2, 3) if policy == "random" else 2)]
    flag_pool.extend(experiments)
    group: dict[str, Json] = {"id": st.ids(), "policy": policy, "experiments": experiments}
    if policy == "random":
        group["trafficAllocation"] = _traffic_allocation(st, [e["id"] for e in experiments])
        _edge_ranges(st, group["id"], group["trafficAllocation"])
    else:
        group["trafficAllocation"] = []
    return group


def _rollout(st: _State, flag_variables: list[dict[str, Json]]) -> dict[str, Json]:
    rng = st.rng
    rollout_id = st.ids()
    n_rules = rng.choices([0, 1, 2, 3, 4], weights=[3, 25, 30, 27, 15])[0]
    rules = [
        _experiment(
            st,
            prefix="rule",
            flag_variables=flag_variables,
            layer_id=rollout_id,
            rollout_rule=True,
            everyone_else=(i == n_rules - 1),
        )
        for i in range(n_rules)
    ]
    return {"id": rollout_id, "experiments": rules}


def _attributes(st: _State) -> list[dict[str, Json]]:
    rng = st.rng
    chosen = rng.sample(_ATTRIBUTE_NAMES, k=rng.randint(4, len(_ATTRIBUTE_NAMES)))
    # every kind present, so that each match type is reachable in every datafile
    for kind in ("string", "number", "bool", "semver"):
        if not any(k == kind for _, k in chosen):
            chosen.append(next(pair for pair in _ATTRIBUTE_NAMES if pair[1] == kind))
    st.attribute_kinds = dict(chosen)
    out = [{"id": st.ids(), "key": name} for name, _ in chosen]
    if rng.random() < 0.1:
        out.append({"id": st.ids(), "key": "$opt_reserved_looking"})
    return out


def _audiences(st: _State) -> tuple[list[dict[str, Json]], list[dict[str, Json]]]:
    rng = st.rng
    legacy: list[dict[str, Json]] = []
    typed: list[dict[str, Json]] = []
    for _ in range(rng.randint(3, 9)):
        audience_id = st.ids()
        st.audience_ids.append(audience_id)
        name = st.key("audience")
        if st.v4 and rng.random() < 0.6:
            typed.append({"id": audience_id, "name": name, "conditions": _audience_conditions(st, legacy=False)})
            roll = rng.random()
            if roll < 0.6:  # the app's placeholder twin; the typed audience replaces it
                legacy.append({"id": audience_id, "name": name, "conditions": DUMMY_LEGACY_CONDITIONS})
            elif roll < 0.75:  # a real but different legacy twin: still replaced
                legacy.append(
                    {
                        "id": audience_id,
                        "name": name,
                        "conditions": json.dumps(_audience_conditions(st, True)),
                    }
                )
        else:
            legacy.append({"id": audience_id, "name": name, "conditions": json.dumps(_audience_conditions(st, True))})
    rng.shuffle(legacy)
    return legacy, typed


# --------------------------------------------------------------------------------------------- datafile


def generate_datafile(
    seed: int | random.Random,
    *,
    version: str | None = None,
    safe: bool = True,
    holdouts: bool = False,
    rule_types: bool = False,
) -> dict[str, Json]:
    """A valid datafile as a dict, reproducible from ``seed``.

    ``safe=True`` leaves out every input listed in :data:`OFFICIAL_CRASHES`. The opt-in features are added
    after the base datafile is built (so a seed gives the same base datafile with or without them):
    ``holdouts=True`` adds global ``holdouts`` and ``localHoldouts`` (:func:`add_holdouts`),
    ``rule_types=True`` types feature-test experiments "ab", "fr" or "td" (:func:`add_rule_types`).
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    datafile = _generate_datafile(rng, version=version, safe=safe)
    if rule_types:
        add_rule_types(datafile, random.Random(rng.random()))
    if holdouts:
        add_holdouts(datafile, random.Random(rng.random()))
    return datafile


def _generate_datafile(rng: random.Random, *, version: str | None, safe: bool) -> dict[str, Json]:
    if version is None:
        version = rng.choices(["4", "3", "2"], weights=[82, 10, 8])[0]
    st = _State(rng=rng, version=version, safe=safe, ids=_Ids(rng))
    attributes = _attributes(st)
    legacy_audiences, typed_audiences = _audiences(st)

    experiments = [_experiment(st) for _ in range(rng.randint(2, 7))]
    flag_pool: list[dict[str, Json]] = list(experiments)
    groups: list[dict[str, Json]] = []
    if rng.random() < 0.7:
        groups.append(_group(st, "random", flag_pool))
    if rng.random() < 0.3:
        groups.append(_group(st, "random", flag_pool))
    if rng.random() < 0.35:
        groups.append(_group(st, "overlapping", flag_pool))

    feature_flags: list[dict[str, Json]] = []
    rollouts: list[dict[str, Json]] = []
    if version != "2":
        rng.shuffle(flag_pool)
        for _ in range(rng.randint(1, 6)):
            variables = _variables(st)
            flag: dict[str, Json] = {
                "id": st.ids(),
                "key": st.key("flag"),
                "experimentIds": [],
                "rolloutId": "",
                "variables": variables,
            }
            # feature tests: new experiments of this flag, or existing (possibly grouped) ones
            for _ in range(rng.choices([0, 1, 2, 3], weights=[35, 35, 20, 10])[0]):
                if flag_pool and rng.random() < 0.35:
                    exp = flag_pool.pop()
                    _attach_variables(st, exp, variables)
                else:
                    exp = _experiment(st, prefix="feature_test", flag_variables=variables)
                    experiments.append(exp)
                flag["experimentIds"].append(exp["id"])
            if rng.random() < 0.82:
                rollout = _rollout(st, variables)
                rollouts.append(rollout)
                flag["rolloutId"] = rollout["id"]
            feature_flags.append(flag)
        if rng.random() < 0.15:
            rollouts.append(_rollout(st, []))  # a rollout no flag uses
        rng.shuffle(rollouts)

    all_experiment_ids = [e["id"] for e in experiments] + [e["id"] for g in groups for e in g["experiments"]]
    events = [
        {
            "id": st.ids(),
            "key": st.key("event"),
            "experimentIds": rng.sample(all_experiment_ids, k=rng.randint(0, min(3, len(all_experiment_ids)))),
        }
        for _ in range(rng.randint(0, 4))
    ]
    rng.shuffle(experiments)

    datafile: dict[str, Json] = {
        "version": version,
        "projectId": st.ids(),
        "accountId": st.ids(),
        "revision": str(rng.randint(1, 500)),
        "anonymizeIP": rng.random() < 0.5,
        "attributes": attributes,
        "audiences": legacy_audiences,
        "experiments": experiments,
        "groups": groups,
        "events": events,
    }
    if version != "2":
        datafile["featureFlags"] = feature_flags
        datafile["rollouts"] = rollouts
    if st.v4:
        datafile["typedAudiences"] = typed_audiences
        if rng.random() < 0.85:
            datafile["botFiltering"] = rng.random() < 0.5
        if rng.random() < 0.9:
            datafile["sendFlagDecisions"] = rng.random() < 0.6
        if rng.random() < 0.5:
            datafile["region"] = rng.choice(["US", "EU"])
        datafile["sdkKey"] = f"sdk-key-{rng.randint(1, 10**6)}"
        datafile["environmentKey"] = rng.choice(["production", "development"])
        datafile["integrations"] = []
    return datafile


def _attach_variables(st: _State, experiment: dict[str, Json], variables: list[dict[str, Json]]) -> None:
    """Give an existing experiment (now a feature test) variation-level values for the flag's variables."""
    rng = st.rng
    if st.version == "2":
        return
    for variation in experiment["variations"]:
        variation.setdefault("featureEnabled", rng.random() < 0.65)
        variation["variables"] = [
            {"id": var["id"], "value": _variable_value(rng, _real_type(var), exotic=rng.random() < 0.1)}
            for var in variables
            if rng.random() < 0.75
        ]


# --------------------------------------------------------------------------------------------- opt-in features


_ID_KEYS = frozenset({"id", "entityId", "projectId", "accountId", "layerId"})


def _fresh_ids(datafile: dict[str, Json]) -> _Ids:
    """An id source above every numeric id already in the datafile, so new ids never collide."""
    top = 0

    def walk(node: Json) -> None:
        nonlocal top
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str) and value.isdigit():
                    top = max(top, int(value))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(datafile)
    ids = _Ids(random.Random(0))
    ids._next = top + 1000
    return ids


def flag_rules(datafile: dict[str, Json]) -> list[dict[str, Json]]:
    """The rules flags use: their feature-test experiments (in ``experimentIds`` order), then their rollout
    rules, each once."""
    by_id = {e["id"]: e for e in all_experiments(datafile)}
    rollouts = {r["id"]: r for r in datafile.get("rollouts", [])}
    out: dict[str, dict[str, Json]] = {}
    for flag in datafile.get("featureFlags", []):
        for experiment_id in flag["experimentIds"]:
            out.setdefault(experiment_id, by_id[experiment_id])
        rollout = rollouts.get(flag["rolloutId"]) if flag["rolloutId"] else None
        for rule in rollout["experiments"] if rollout else []:
            out.setdefault(rule["id"], rule)
    return list(out.values())


def add_rule_types(datafile: dict[str, Json], rng: random.Random) -> None:
    """Give feature-test experiments an experiment ``type``: "ab", "fr" (feature rollout: the SDKs append the
    flag's "everyone else" variation, so a partial allocation is left for it) or "td" (targeted delivery: still
    evaluated when a global holdout that ``excludeTargetedDeliveries`` matched)."""
    by_id = {e["id"]: e for e in all_experiments(datafile)}
    for flag in datafile.get("featureFlags", []):
        for experiment_id in flag["experimentIds"]:
            experiment = by_id[experiment_id]
            roll = rng.random()
            if roll < 0.4:
                continue
            kind = "ab" if roll < 0.55 else ("fr" if roll < 0.8 else "td")
            experiment["type"] = kind
            if kind == "fr" and experiment["variations"] and rng.random() < 0.7:
                experiment["trafficAllocation"] = [
                    {"entityId": experiment["variations"][0]["id"], "endOfRange": rng.choice([0, 2500, 5000, 9000])}
                ]


def _holdout_entity(
    rng: random.Random, ids: _Ids, key: str, audience_ids: list[str], *, exclude_td: bool
) -> dict[str, Json]:
    variations = [
        {
            "id": ids(),
            "key": f"{key}_{'off' if j == 0 else 'v2'}",
            "featureEnabled": rng.random() < 0.1,
            "variables": [],
        }
        for j in range(rng.choices([0, 1, 2], weights=[5, 80, 15])[0])
    ]
    allocation: list[dict[str, Json]] = []
    if variations and rng.random() < 0.95:
        top = rng.choice([0, 1500, 3000, 5000, 5000, 8000, 10000])
        if len(variations) == 2:
            allocation = [
                {"entityId": variations[0]["id"], "endOfRange": top // 2},
                {"entityId": variations[1]["id"], "endOfRange": top},
            ]
        else:
            allocation = [{"entityId": variations[0]["id"], "endOfRange": top}]
    holdout: dict[str, Json] = {
        "id": ids(),
        "key": key,
        "status": rng.choices(["Running", "Draft", "Concluded", "Archived"], weights=[82, 6, 6, 6])[0],
        "variations": variations,
        "trafficAllocation": allocation,
        "audienceIds": rng.sample(audience_ids, k=min(len(audience_ids), rng.choice([0, 0, 1, 2]))),
    }
    if holdout["audienceIds"] and rng.random() < 0.3:
        holdout["audienceConditions"] = ["or", *holdout["audienceIds"]]
    if exclude_td:
        holdout["excludeTargetedDeliveries"] = True
    elif rng.random() < 0.2:
        holdout["excludeTargetedDeliveries"] = False
    return holdout


def add_holdouts(datafile: dict[str, Json], rng: random.Random) -> None:
    """Add global ``holdouts`` (some with ``excludeTargetedDeliveries``, a few with an ``includedRules`` the
    SDKs ignore) and ``localHoldouts`` whose ``includedRules`` name real rule ids (plus an unknown id now and
    then; a few have no ``includedRules`` and are dropped by both SDKs). Every status; keys and ids unique."""
    ids = _fresh_ids(datafile)
    audience_ids = [a["id"] for a in datafile.get("audiences", [])] + [
        a["id"] for a in datafile.get("typedAudiences", [])
    ]
    audience_ids = list(dict.fromkeys(audience_ids))
    rules = [r["id"] for r in flag_rules(datafile)]
    global_holdouts = []
    for i in range(rng.choices([0, 1, 2, 3], weights=[20, 40, 25, 15])[0]):
        holdout = _holdout_entity(rng, ids, f"global_holdout_{i + 1}", audience_ids, exclude_td=rng.random() < 0.4)
        if rules and rng.random() < 0.1:
            holdout["includedRules"] = [rng.choice(rules)]
        global_holdouts.append(holdout)
    local_holdouts = []
    for i in range(rng.choices([0, 1, 2, 3], weights=[20, 35, 30, 15])[0] if rules else 0):
        holdout = _holdout_entity(rng, ids, f"local_holdout_{i + 1}", audience_ids, exclude_td=False)
        roll = rng.random()
        if roll < 0.06:
            pass  # no includedRules: invalid, excluded from evaluation
        elif roll < 0.1:
            holdout["includedRules"] = []
        else:
            included = rng.sample(rules, k=min(len(rules), rng.randint(1, 3)))
            if rng.random() < 0.1:
                included.append(ids())  # a rule that is not in the datafile
            holdout["includedRules"] = included
        local_holdouts.append(holdout)
    datafile["holdouts"] = global_holdouts
    datafile["localHoldouts"] = local_holdouts


# --------------------------------------------------------------------------------------------- walking


def experiment_keys(datafile: dict[str, Json]) -> list[str]:
    """Keys of every experiment the SDK indexes: top level, grouped and rollout rules."""
    keys = [e["key"] for e in datafile.get("experiments", [])]
    keys += [e["key"] for g in datafile.get("groups", []) for e in g["experiments"]]
    keys += [e["key"] for r in datafile.get("rollouts", []) for e in r["experiments"]]
    return keys


def all_experiments(datafile: dict[str, Json]) -> list[dict[str, Json]]:
    out = list(datafile.get("experiments", []))
    out += [e for g in datafile.get("groups", []) for e in g["experiments"]]
    out += [e for r in datafile.get("rollouts", []) for e in r["experiments"]]
    return out


def flag_variables(datafile: dict[str, Json]) -> Iterator[tuple[str, str, str]]:
    """(flag key, variable key, effective type) for every variable of every flag."""
    for flag in datafile.get("featureFlags", []):
        for var in flag["variables"]:
            yield flag["key"], var["key"], _real_type(var)


def _walk_leaves(tree: Json) -> Iterator[dict[str, Json]]:
    if isinstance(tree, dict):
        yield tree
    elif isinstance(tree, list):
        for item in tree:
            yield from _walk_leaves(item)


def condition_leaves(datafile: dict[str, Json]) -> list[dict[str, Json]]:
    """Every leaf condition of every audience (legacy and typed)."""
    out: list[dict[str, Json]] = []
    for audience in datafile.get("audiences", []):
        try:
            out.extend(_walk_leaves(json.loads(audience["conditions"])))
        except (TypeError, ValueError):
            continue
    for audience in datafile.get("typedAudiences", []):
        out.extend(_walk_leaves(audience["conditions"]))
    return out


# --------------------------------------------------------------------------------------------- users


@dataclass
class User:
    """One user to decide for. ``attributes`` may be None; values may be anything."""

    user_id: str
    attributes: Any


def _versions_near(rng: random.Random, target: Json, safe: bool) -> list[str]:
    out = ["1.2.3", "1.2", "2", "1.2.3-beta", "1.2.3+build", "1.2.3-alpha.1", "0.0.1", "10.10.10"]
    if isinstance(target, str) and target:
        prefix = target.split("-", 1)[0].split("+", 1)[0]
        parts = prefix.split(".")
        out.append(target)
        if all(p.isdigit() for p in parts):
            for i in range(len(parts)):
                for delta in (-1, 1):
                    bumped = list(parts)
                    bumped[i] = str(max(0, int(parts[i]) + delta))
                    out.append(".".join(bumped))
            out.append(prefix)
            out.append(".".join(parts[:-1]) or prefix)
            out.append(prefix + ".0" if len(parts) < 3 else prefix)
            out.append(prefix + rng.choice(["-alpha", "-beta", "-beta.2", "-rc.1+build", "+build.9", "-zeta"]))
    out += ["1.2.3.4", "a.b.c", "", "1. 2", "v1.2.3", "1.\u0663"]  # invalid, then an Arabic-Indic digit
    if not safe:
        out += ["1.2.3-4", "1.\u00b2", "1.2.3-0"]
    return out


def _values_for_leaf(rng: random.Random, leaf: dict[str, Json], safe: bool) -> list[Json]:
    match = leaf.get("match") or "exact"
    value = leaf.get("value")
    if match in SEMVER_MATCHES or (isinstance(value, str) and value[:1].isdigit()):
        return _versions_near(rng, value, safe)
    if match == "substring" and isinstance(value, str):
        return [f"pre{value}post", value, value[:-1], "zzz", value.upper(), 5]
    if isinstance(value, bool):
        return [value, value, not value, 1, "true"]
    if isinstance(value, (int, float)):
        out: list[Json] = [value, value, float(value), value + 1, value - 1, value + 0.5, value - 0.5]
        out += [2**53, -(2**53), 2**53 + 1, 2**60, math.nan, math.inf, -math.inf, True, str(value)]
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            out.append(int(value))
        return out
    if isinstance(value, str):
        return [value, value, value + "x", value.upper(), "", 1, True]
    return ["anything", 0, None, [1]]


def generate_users(seed: int | random.Random, datafile: dict[str, Json], n: int, *, safe: bool = True) -> list[User]:
    """``n`` users whose attribute values sit near the datafile's condition values."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    leaves_by_name: dict[str, list[dict[str, Json]]] = {}
    for leaf in condition_leaves(datafile):
        name = leaf.get("name")
        if isinstance(name, str):
            leaves_by_name.setdefault(name, []).append(leaf)
    whitelisted = sorted({user for e in all_experiments(datafile) for user in e["forcedVariations"]})
    users: list[User] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.12 and whitelisted:
            user_id = rng.choice(whitelisted)
        elif roll < 0.16:
            user_id = rng.choice(EDGE_USERS)
        elif roll < 0.2 and users:
            user_id = rng.choice(users).user_id  # the same user again, maybe with other attributes
        elif roll < 0.23:
            user_id = ""
        elif roll < 0.27:
            user_id = rng.choice(["ユーザー", "üser é", "user with spaces", "x" * 300, "0", "None"])
        else:
            user_id = f"user_{rng.randint(0, 10**9)}"
        users.append(User(user_id, _attributes_for(rng, leaves_by_name, safe, i)))
    return users


def _attributes_for(
    rng: random.Random, leaves_by_name: dict[str, list[dict[str, Json]]], safe: bool, index: int
) -> dict[str, Json] | None:
    roll = rng.random()
    if roll < 0.06:
        return None
    if roll < 0.09:
        return {}
    attributes: dict[str, Json] = {}
    for name, leaves in leaves_by_name.items():
        if rng.random() < 0.2:
            continue  # missing key
        pick = rng.random()
        if pick < 0.06:
            attributes[name] = None
        elif pick < 0.1:
            attributes[name] = rng.choice([[1, 2], {"a": 1}, "some string", 3, False, 2.5])
        else:
            attributes[name] = rng.choice(_values_for_leaf(rng, rng.choice(leaves), safe))
    if rng.random() < 0.15:
        attributes["$opt_bucketing_id"] = rng.choice(
            [f"bucket_{rng.randint(0, 10**6)}", f"bucket_{index}", "", 12345, None]
        )
    if rng.random() < 0.2:
        attributes["not_in_datafile"] = rng.choice(["v", 1, None])
    return attributes


# --------------------------------------------------------------------------------------------- hazards


@dataclass
class HazardCase:
    """A datafile plus a user on which the official SDK raises (see :data:`OFFICIAL_CRASHES`)."""

    name: str
    datafile: dict[str, Json]
    user: User
    experiment_key: str | None = None
    flag_key: str | None = None
    stored_profile: dict[str, Json] | None = None
    #: "construct": ``Optimizely(datafile=...)`` raises; "decide": the decision methods raise.
    crashes_at: str = "decide"


def _hazard_base(seed: int, leaf: dict[str, Json] | None = None, audience_conditions: Json = None) -> dict[str, Json]:
    """A minimal valid v4 datafile: one running experiment (also a feature test) with one audience."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    audience_id = ids()
    variation = {"id": ids(), "key": "on", "featureEnabled": True, "variables": []}
    experiment_id = ids()
    conditions = audience_conditions if audience_conditions is not None else ["and", ["or", leaf]]
    return {
        "version": "4",
        "projectId": ids(),
        "accountId": ids(),
        "revision": "1",
        "attributes": [{"id": ids(), "key": "app_version"}],
        "audiences": [],
        "typedAudiences": [{"id": audience_id, "name": "hazard", "conditions": conditions}],
        "experiments": [
            {
                "id": experiment_id,
                "key": "hazard_exp",
                "layerId": ids(),
                "status": "Running",
                "variations": [variation],
                "trafficAllocation": [{"entityId": variation["id"], "endOfRange": 10000}],
                "audienceIds": [audience_id],
                "forcedVariations": {},
            }
        ],
        "groups": [],
        "events": [],
        "featureFlags": [
            {
                "id": ids(),
                "key": "hazard_flag",
                "experimentIds": [experiment_id],
                "rolloutId": "",
                "variables": [],
            }
        ],
        "rollouts": [],
    }


def hazard_cases() -> list[HazardCase]:
    """One case per entry of :data:`OFFICIAL_CRASHES` (some entries have several)."""
    cases: list[HazardCase] = []

    def semver(name: str, target: str, user_version: str, match: str = "semver_eq") -> None:
        leaf = {"name": "app_version", "type": "custom_attribute", "match": match, "value": target}
        df = _hazard_base(len(cases), leaf)
        cases.append(HazardCase(name, df, User("u1", {"app_version": user_version}), "hazard_exp", "hazard_flag"))

    semver("semver_prerelease_vs_numeric", "1.2.3-beta", "1.2.3-4")
    semver("semver_prerelease_vs_numeric", "1.2-beta", "1.2.3", "semver_gt")
    semver("semver_empty_suffix", "1.2.3-", "1.2.3-4", "semver_ge")
    semver("semver_unicode_digit", "1.2", "1.\u00b2", "semver_lt")
    semver("semver_unicode_digit", "1.\u00b2", "1.2")

    leaf = {"name": "app_version", "type": "custom_attribute", "match": "exists"}
    df = _hazard_base(100, leaf)
    audience_id = df["typedAudiences"][0]["id"]
    df["experiments"][0]["audienceConditions"] = ["or", [], audience_id]
    cases.append(HazardCase("empty_nested_audience_conditions", df, User("u1", {}), "hazard_exp", "hazard_flag"))
    df = _hazard_base(101, leaf)
    df["experiments"][0]["audienceConditions"] = ["and", audience_id, ["not", []]]
    cases.append(
        HazardCase(
            "empty_nested_audience_conditions",
            df,
            User("u1", {"app_version": "1"}),
            "hazard_exp",
            "hazard_flag",
        )
    )
    df = _hazard_base(102, audience_conditions=["and", []])
    cases.append(
        HazardCase("empty_audience_condition_list", df, User("u1", {"app_version": "1"}), "hazard_exp", "hazard_flag")
    )
    df = _hazard_base(103, leaf)
    df["audiences"] = [{"id": df["typedAudiences"][0]["id"], "name": "legacy", "conditions": "[]"}]
    df["typedAudiences"] = []
    cases.append(HazardCase("empty_audience_condition_list", df, User("u1", None), "hazard_exp", "hazard_flag"))
    df = _hazard_base(104, audience_conditions=["and", "x"])
    cases.append(HazardCase("string_leaf_in_audience_conditions", df, User("u1", {}), "hazard_exp", "hazard_flag"))

    df = _hazard_base(105, leaf)
    df["experiments"][0]["audienceConditions"] = [["or", audience_id, audience_id]]
    cases.append(
        HazardCase(
            "single_list_in_audience_conditions",
            df,
            User("u1", {"app_version": "1"}),
            "hazard_exp",
            "hazard_flag",
            crashes_at="construct",
        )
    )

    for seed, bucket_map in ((106, {"EXP": "v1"}), (107, ["x"]), (108, "not a map")):
        df = _hazard_base(seed, leaf)
        exp_id = df["experiments"][0]["id"]
        stored = {exp_id: "v1"} if isinstance(bucket_map, dict) else bucket_map
        cases.append(
            HazardCase(
                "ups_bucket_entry_not_a_dict",
                df,
                User("u1", {"app_version": "1"}),
                "hazard_exp",
                "hazard_flag",
                stored_profile={"user_id": "u1", "experiment_bucket_map": stored},
            )
        )
    return cases


# --------------------------------------------------------------------------------------------- CMAB and ODP

#: Segment names the ``qualified`` conditions of :func:`add_qualified_audiences` use.
SEGMENTS: tuple[str, ...] = ("seg_gold", "seg_churn_risk", "seg_ünïcödé", "seg_new")


def add_cmab(datafile: dict[str, Json], rng: random.Random, share: float = 0.5) -> list[str]:
    """Make about ``share`` of the flags' feature-test experiments CMAB experiments (version 4 only): a ``cmab``
    entry with some of the datafile's attribute ids (now and then an id the datafile lacks, or none) and a
    ``cmab.trafficAllocation`` of 0, part or all of the traffic. Grouped experiments may become CMAB too.
    Returns the ids of the CMAB experiments."""
    if datafile.get("version") != "4":
        return []
    by_id = {e["id"]: e for e in all_experiments(datafile)}
    attribute_ids = [a["id"] for a in datafile.get("attributes", [])]
    chosen: list[str] = []
    for flag in datafile.get("featureFlags", []):
        for experiment_id in flag["experimentIds"]:
            experiment = by_id[experiment_id]
            if "cmab" in experiment or rng.random() >= share:
                continue
            ids = rng.sample(attribute_ids, k=min(len(attribute_ids), rng.choice([0, 1, 2, 3, 4])))
            if rng.random() < 0.1:
                ids.append("999999")  # an attribute id the datafile does not have: skipped
            experiment["cmab"] = {
                "attributeIds": ids,
                "trafficAllocation": rng.choice([0, 2500, 5000, 9000, 10000, 10000, 10000]),
            }
            if rng.random() < 0.3:
                experiment["type"] = "cmab"
            chosen.append(experiment_id)
    return chosen


def add_qualified_audiences(datafile: dict[str, Json], rng: random.Random) -> list[str]:
    """Add typed audiences with ``qualified`` conditions (ODP segments from :data:`SEGMENTS`, mixed with an
    ordinary condition now and then) and target some experiments and rollout rules at them; add an ODP
    ``integrations`` entry (host and key placeholders the tests replace). Version 4 only. Returns the ids of
    the new audiences."""
    if datafile.get("version") != "4":
        return []
    ids = _fresh_ids(datafile)
    added: list[str] = []
    for i in range(rng.randint(1, 3)):
        leaves: list[Json] = [
            {"type": "third_party_dimension", "name": "odp.audiences", "match": "qualified", "value": segment}
            for segment in rng.sample(SEGMENTS, k=rng.randint(1, 2))
        ]
        if rng.random() < 0.3:
            leaves.append({"type": "custom_attribute", "name": "odp_plan", "match": "exact", "value": "gold"})
        operator = rng.choice(["or", "and"])
        audience_id = ids()
        datafile.setdefault("typedAudiences", []).append(
            {"id": audience_id, "name": f"odp_audience_{i + 1}", "conditions": ["and", [operator, *leaves]]}
        )
        datafile["audiences"].append(
            {"id": audience_id, "name": f"odp_audience_{i + 1}", "conditions": DUMMY_LEGACY_CONDITIONS}
        )
        added.append(audience_id)
    for rule in flag_rules(datafile):
        if rng.random() < 0.35:
            rule["audienceIds"] = [rng.choice(added)]
            rule.pop("audienceConditions", None)
    datafile["integrations"] = [{"key": "odp", "host": "https://odp.invalid", "publicKey": "odp-public-key"}]
    return added
