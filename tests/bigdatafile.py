"""A large, valid, generated datafile (about 1 MB at the default size), for the datafile benchmarks and the
soak tests."""

from __future__ import annotations

import json
import random
from typing import Any

Json = Any

# ---------------------------------------------------------------------------------------------- the datafile

COUNTRIES = ("US", "GB", "DE", "FR", "JP", "BR", "IN", "CA", "AU", "ES")
PLANS = ("free", "basic", "pro", "enterprise")
DEVICES = ("iphone", "android", "desktop", "tablet")
VARIABLE_TYPES = ("boolean", "integer", "double", "string", "json")


class _Ids:
    """Numeric string ids, as real datafiles have."""

    def __init__(self) -> None:
        self._next = 10_000_000

    def __call__(self) -> str:
        self._next += 1
        return str(self._next)


def _leaf(rng: random.Random, attributes: list[str]) -> dict[str, Json]:
    kind = rng.randrange(8)
    if kind == 0:
        return {"type": "custom_attribute", "name": "country", "match": "exact", "value": rng.choice(COUNTRIES)}
    if kind == 1:
        return {"type": "custom_attribute", "name": "plan", "match": "exact", "value": rng.choice(PLANS)}
    if kind == 2:
        return {
            "type": "custom_attribute",
            "name": "age",
            "match": rng.choice(("gt", "ge", "lt", "le")),
            "value": rng.randrange(13, 70),
        }
    if kind == 3:
        return {
            "type": "custom_attribute",
            "name": "app_version",
            "match": rng.choice(("semver_ge", "semver_lt")),
            "value": f"{rng.randrange(1, 6)}.{rng.randrange(0, 10)}.{rng.randrange(0, 20)}",
        }
    if kind == 4:
        return {
            "type": "custom_attribute",
            "name": "email",
            "match": "substring",
            "value": rng.choice(("@example.com", "@corp.example", ".edu")),
        }
    if kind == 5:
        return {"type": "custom_attribute", "name": "beta_tester", "match": "exact", "value": rng.random() < 0.5}
    if kind == 6:
        return {"type": "custom_attribute", "name": rng.choice(attributes), "match": "exists"}
    return {"type": "custom_attribute", "name": "lifetime_value", "match": "gt", "value": round(rng.uniform(0, 500), 2)}


def _tree(rng: random.Random, attributes: list[str], depth: int) -> list[Json]:
    op = rng.choice(("and", "or", "or", "not"))
    count = 1 if op == "not" else rng.randrange(1, 4)
    children: list[Json] = [
        _tree(rng, attributes, depth - 1) if depth > 0 and rng.random() < 0.3 else _leaf(rng, attributes)
        for _ in range(count)
    ]
    return [op, *children]


def _variable_value(rng: random.Random, var_type: str) -> str:
    if var_type == "boolean":
        return rng.choice(("true", "false"))
    if var_type == "integer":
        return str(rng.randrange(-1000, 100_000))
    if var_type == "double":
        return repr(round(rng.uniform(-100, 100), 4))
    if var_type == "json":
        return json.dumps(
            {
                "title": f"Title {rng.randrange(1000)}",
                "items": [rng.randrange(100) for _ in range(4)],
                "style": {"color": rng.choice(("red", "blue", "green")), "size": rng.randrange(8, 32)},
            }
        )
    return f"text-{rng.randrange(1_000_000)}"


def _allocation(rng: random.Random, ids: list[str], total: int = 10_000) -> list[dict[str, Json]]:
    cuts = sorted(rng.sample(range(1, total), len(ids) - 1)) if len(ids) > 1 else []
    return [{"entityId": entity, "endOfRange": end} for entity, end in zip(ids, [*cuts, total], strict=True)]


def build_datafile(revision: str, *, flags: int = 170, seed: int = 20240101) -> dict[str, Json]:
    """A large, valid datafile. The same ``seed`` gives the same structure; ``revision`` also reshuffles the
    traffic splits, so two revisions decide differently."""
    rng = random.Random(seed)
    traffic = random.Random(f"{seed}-{revision}")
    new_id = _Ids()

    attribute_keys = ["country", "plan", "age", "app_version", "email", "beta_tester", "lifetime_value", "device"]
    attribute_keys += [f"custom_attr_{i}" for i in range(24)]
    attributes = [{"id": new_id(), "key": key} for key in attribute_keys]

    typed_audiences: list[dict[str, Json]] = []
    audiences: list[dict[str, Json]] = []
    dummy = json.dumps(
        [
            "or",
            {"match": "exact", "name": "$opt_dummy_attribute", "type": "custom_attribute", "value": "$opt_dummy_value"},
        ]
    )
    for i in range(120):
        audience_id = new_id()
        name = f"Audience {i}"
        conditions = ["and", ["or", _tree(rng, attribute_keys, 2)]]
        typed_audiences.append({"id": audience_id, "name": name, "conditions": conditions})
        audiences.append({"id": audience_id, "name": name, "conditions": dummy})
    for i in range(30):  # legacy audiences with string conditions
        leaf = {"name": "device", "type": "custom_attribute", "value": rng.choice(DEVICES)}
        audiences.append(
            {"id": new_id(), "name": f"Legacy {i}", "conditions": json.dumps(["and", ["or", ["or", leaf]]])}
        )
    audience_ids = [a["id"] for a in typed_audiences]

    def audience_conditions() -> list[Json]:
        picked = rng.sample(audience_ids, rng.randrange(1, 4))
        return [rng.choice(("or", "and")), *picked] if len(picked) > 1 else ["or", *picked]

    experiments: list[dict[str, Json]] = []
    grouped: list[dict[str, Json]] = []
    feature_flags: list[dict[str, Json]] = []
    rollouts: list[dict[str, Json]] = []
    for f in range(flags):
        variables = []
        for t, var_type in enumerate(VARIABLE_TYPES * (1 + f % 2)):
            variable: dict[str, Json] = {
                "id": new_id(),
                "key": f"var_{t}_{var_type}",
                "type": "string" if var_type == "json" else var_type,
                "defaultValue": _variable_value(rng, var_type),
            }
            if var_type == "json":
                variable["subType"] = "json"
            variables.append(variable)

        def variations(count: int, prefix: str, flag_vars: list[dict[str, Json]] = variables) -> list[dict[str, Json]]:
            out: list[dict[str, Json]] = []
            for v in range(count):
                out.append(
                    {
                        "id": new_id(),
                        "key": f"{prefix}_{v}",
                        "featureEnabled": v > 0 or rng.random() < 0.3,
                        "variables": [
                            {"id": var["id"], "value": _variable_value(rng, str(var.get("subType") or var["type"]))}
                            for var in flag_vars
                            if rng.random() < 0.8
                        ],
                    }
                )
            return out

        experiment_ids: list[str] = []
        layer = new_id()
        exp_variations = variations(rng.randrange(2, 5), f"flag{f}_var")
        experiment: dict[str, Json] = {
            "id": new_id(),
            "key": f"flag_{f}_test",
            "status": "Running" if rng.random() < 0.9 else "Paused",
            "layerId": layer,
            "audienceIds": [],
            "audienceConditions": audience_conditions(),
            "variations": exp_variations,
            "trafficAllocation": _allocation(
                traffic, [v["id"] for v in exp_variations], traffic.randrange(2000, 10_001)
            ),
            "forcedVariations": {f"qa_user_{f}": exp_variations[0]["key"]},
        }
        experiment_ids.append(experiment["id"])
        (grouped if f % 8 == 0 else experiments).append(experiment)

        rules = []
        rollout_id = new_id()
        for r in range(4):
            rule_variations = variations(1, f"flag{f}_rule{r}")
            everyone_else = r == 3
            rules.append(
                {
                    "id": new_id(),
                    "key": "everyone_else" if everyone_else else f"flag_{f}_rule_{r}",
                    "status": "Running",
                    "layerId": rollout_id,
                    "audienceIds": [] if everyone_else else [rng.choice(audience_ids)],
                    **({} if everyone_else else {"audienceConditions": audience_conditions()}),
                    "variations": rule_variations,
                    "trafficAllocation": [
                        {"entityId": rule_variations[0]["id"], "endOfRange": traffic.randrange(1000, 10_001)}
                    ],
                    "forcedVariations": {},
                }
            )
        rollouts.append({"id": rollout_id, "experiments": rules})
        feature_flags.append(
            {
                "id": new_id(),
                "key": f"flag_{f}",
                "rolloutId": rollout_id,
                "experimentIds": experiment_ids,
                "variables": variables,
            }
        )

    groups = []
    for g in range(0, len(grouped), 5):
        members = grouped[g : g + 5]
        groups.append(
            {
                "id": new_id(),
                "policy": "random",
                "trafficAllocation": _allocation(traffic, [e["id"] for e in members]),
                "experiments": members,
            }
        )

    all_experiment_ids = [e["id"] for e in experiments] + [e["id"] for e in grouped]
    events = [
        {"id": new_id(), "key": f"event_{i}", "experimentIds": rng.sample(all_experiment_ids, rng.randrange(0, 6))}
        for i in range(150)
    ]
    return {
        "version": "4",
        "accountId": "12133785640",
        "projectId": "6460519658291200",
        "revision": revision,
        "sdkKey": "BenchSdkKey",
        "environmentKey": "production",
        "anonymizeIP": True,
        "botFiltering": False,
        "sendFlagDecisions": True,
        "attributes": attributes,
        "audiences": audiences,
        "typedAudiences": typed_audiences,
        "experiments": experiments,
        "groups": groups,
        "featureFlags": feature_flags,
        "rollouts": rollouts,
        "events": events,
        "integrations": [],
    }


def describe(datafile: dict[str, Json], size: int) -> str:
    rules = sum(len(r["experiments"]) for r in datafile["rollouts"])
    grouped = sum(len(g["experiments"]) for g in datafile["groups"])
    variables = sum(len(f["variables"]) for f in datafile["featureFlags"])
    return (
        f"{size / 1e6:.2f} MB: {len(datafile['featureFlags'])} flags, {len(datafile['experiments']) + grouped} "
        f"experiments ({grouped} in {len(datafile['groups'])} groups), {rules} rollout rules, {variables} variables, "
        f"{len(datafile['typedAudiences'])} typed + {len(datafile['audiences'])} legacy audiences, "
        f"{len(datafile['events'])} events"
    )
