"""``validate FILE``: can the SDK use this datafile, and what in it looks wrong although the SDK accepts it.

Errors are what the client itself refuses (:class:`~optimizely_async.InvalidDatafileError`, whose message
names the field at fault). Warnings are references the SDK tolerates but that cannot be what was meant: a
rule naming an audience that is not defined (it evaluates to UNKNOWN, so nobody matches), a traffic range
pointing at no variation (users bucketed there get none), an allowlist naming an unknown variation, a
variable value that does not parse as its type (the SDK returns None for it), an event listing an unknown
experiment, a flag or experiment key used twice.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..config.project_config import ProjectConfig, parse_config
from ..errors import InvalidDatafileError

__all__ = ["Validation", "validate"]


@dataclass
class Validation:
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.error is None


def validate(data: bytes) -> Validation:
    try:
        config = parse_config(data)
    except InvalidDatafileError as exc:
        return Validation(error=str(exc))
    raw = json.loads(data)
    return Validation(warnings=list(_warnings(raw)), summary=_summary(config, raw))


def _summary(config: ProjectConfig, raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": raw.get("version"),
        "revision": config.revision,
        "flags": len(config.flags_by_key),
        "experiments": len(raw.get("experiments", [])) + sum(len(g.get("experiments", [])) for g in raw["groups"]),
        "rollouts": len(raw.get("rollouts", [])),
        "audiences": len(config.audiences),
        "events": len(config.events_by_key),
        "attributes": len(config.attribute_ids),
    }


def _experiments(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, e in enumerate(raw.get("experiments", [])):
        yield f"experiments[{i}]", e
    for g, group in enumerate(raw.get("groups", [])):
        for i, e in enumerate(group.get("experiments", [])):
            yield f"groups[{g}].experiments[{i}]", e
    for r, rollout in enumerate(raw.get("rollouts", [])):
        for i, e in enumerate(rollout.get("experiments", [])):
            yield f"rollouts[{r}].experiments[{i}]", e


def _audience_ids(tree: Any) -> Iterator[str]:
    if isinstance(tree, list):
        for node in tree:
            if node not in ("and", "or", "not"):
                yield from _audience_ids(node)
    elif isinstance(tree, str):
        yield tree


def _parses(value: str, kind: str) -> bool:
    try:
        if kind == "boolean":
            return value in ("true", "false")
        if kind == "integer":
            int(value)
        elif kind == "double":
            return math.isfinite(float(value))
        elif kind == "json":
            json.loads(value)
    except ValueError:
        return False
    return True


def _warnings(raw: dict[str, Any]) -> Iterator[str]:
    audiences = {a["id"] for a in [*raw.get("audiences", []), *raw.get("typedAudiences", [])]}
    variable_types: dict[str, tuple[str, str]] = {}
    for f, flag in enumerate(raw.get("featureFlags", [])):
        for v, variable in enumerate(flag.get("variables", [])):
            kind = "json" if variable["type"] == "string" and variable.get("subType") == "json" else variable["type"]
            where = f"featureFlags[{f}].variables[{v}]"
            variable_types[variable["id"]] = (kind, where)
            if kind not in ("boolean", "integer", "double", "string", "json"):
                yield f"{where}.type: unknown variable type {variable['type']!r}"
            elif not _parses(variable["defaultValue"], kind):
                yield f"{where}.defaultValue: {variable['defaultValue']!r} is not a {kind}"
    experiment_ids = set()
    keys: Counter[str] = Counter()
    for where, e in _experiments(raw):
        experiment_ids.add(e["id"])
        if not where.startswith("rollouts"):
            keys[e["key"]] += 1
        tree = e.get("audienceConditions") if e.get("audienceConditions") is not None else e.get("audienceIds")
        for audience_id in _audience_ids(tree):
            if audience_id not in audiences:
                yield f"{where}.audienceConditions: audience {audience_id!r} is not defined (nobody matches it)"
        variations = {v["id"]: v["key"] for v in e["variations"]}
        for t, entry in enumerate(e["trafficAllocation"]):
            if entry["entityId"] and entry["entityId"] not in variations and e.get("type") != "fr":
                yield f"{where}.trafficAllocation[{t}].entityId: {entry['entityId']!r} is not a variation of it"
        for user, key in e.get("forcedVariations", {}).items():
            if key not in variations.values():
                yield f"{where}.forcedVariations: {user!r} is sent to {key!r}, which is not a variation of it"
        for v, variation in enumerate(e["variations"]):
            for u, usage in enumerate(variation.get("variables") or []):
                kind, declared = variable_types.get(usage["id"], ("", ""))
                if not kind:
                    yield f"{where}.variations[{v}].variables[{u}].id: variable {usage['id']!r} is not defined"
                elif kind in ("boolean", "integer", "double", "json") and not _parses(usage["value"], kind):
                    at = f"{where}.variations[{v}].variables[{u}].value"
                    yield f"{at}: {usage['value']!r} is not a {kind} ({declared})"
    for key, count in keys.items():
        if count > 1:
            yield f"experiments: the key {key!r} is used by {count} experiments (get_variation sees one of them)"
    for key, count in Counter(f["key"] for f in raw.get("featureFlags", [])).items():
        if count > 1:
            yield f"featureFlags: the key {key!r} is used by {count} flags"
    for i, event in enumerate(raw.get("events", [])):
        for experiment_id in event.get("experimentIds", []):
            if experiment_id not in experiment_ids:
                yield f"events[{i}].experimentIds: experiment {experiment_id!r} is not defined"
