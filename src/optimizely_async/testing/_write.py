"""Writing the builder's specs as datafile JSON: experiments and rules, variables, exclusion groups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ._audiences import resolve_audiences
from ._values import RuleSpec, VariableSpec, VariationSpec, allocation, stable_id

__all__ = ["experiment_json", "groups_json", "variables_json"]


def experiment_json(
    rule: RuleSpec,
    variations: Mapping[str, VariationSpec],
    variables: Mapping[str, VariableSpec],
    layer_id: str,
    audiences: Mapping[str, str],
) -> dict[str, Any]:
    """One experiment, rollout rule or group member as the datafile writes it."""
    used = [variations[key] for key, _ in rule.allocation]
    audience_ids, conditions = resolve_audiences(rule.key, rule.audience, audiences)
    return {
        "id": rule.id,
        "key": rule.key,
        "status": rule.status,
        "layerId": layer_id,
        "variations": [
            {
                "id": variation.id,
                "key": variation.key,
                "featureEnabled": variation.enabled,
                "variables": [
                    {"id": variable.id, "value": variation.values.get(variable.key, variable.default)}
                    for variable in variables.values()
                ],
            }
            for variation in used
        ],
        "trafficAllocation": allocation(
            [(variations[key].id, weight) for key, weight in rule.allocation], rule.traffic
        ),
        "audienceIds": audience_ids,
        "audienceConditions": conditions,
        "forcedVariations": dict(rule.allowlist),
    }


def variables_json(variables: Mapping[str, VariableSpec]) -> list[dict[str, Any]]:
    """A flag's variables; json ones are written as the CDN writes them, ``string`` with ``subType`` json."""
    written = []
    for variable in variables.values():
        entry: dict[str, Any] = {"id": variable.id, "key": variable.key, "defaultValue": variable.default}
        entry["type"] = "string" if variable.kind == "json" else variable.kind
        if variable.kind == "json":
            entry["subType"] = "json"
        written.append(entry)
    return written


def groups_json(
    groups: list[tuple[str, list[tuple[str, float]]]], experiments: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], set[str]]:
    """The exclusion groups, each holding its experiments (which leave the top-level list)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for experiment in experiments:
        by_key.setdefault(experiment["key"], []).append(experiment)
    written: list[dict[str, Any]] = []
    grouped: set[str] = set()
    for key, members in groups:
        found = []
        for name, _ in members:
            candidates = by_key.get(name, [])
            if len(candidates) != 1:
                problem = "is not defined" if not candidates else "names several experiments"
                raise ConfigurationError(f"exclusion group {key!r}: experiment {name!r} {problem}")
            if candidates[0]["id"] in grouped:
                raise ConfigurationError(f"exclusion group {key!r}: experiment {name!r} is in another group")
            grouped.add(candidates[0]["id"])
            found.append(candidates[0])
        ids = [(experiment["id"], weight) for experiment, (_, weight) in zip(found, members, strict=True)]
        written.append(
            {
                "id": stable_id("group", key),
                "policy": "random",
                "trafficAllocation": allocation(ids, 100.0),
                "experiments": found,
            }
        )
    return written, grouped
