"""The datafile's encodings: stable ids, variable types and values, traffic ranges, and the shapes the builder
keeps before it writes JSON."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ConfigurationError

MATCH_TYPES: Final = frozenset(
    {"exact", "exists", "substring", "gt", "ge", "lt", "le"} | {f"semver_{op}" for op in ("eq", "lt", "le", "gt", "ge")}
)
DUMMY_CONDITIONS: Final = json.dumps(
    ["or", {"match": "exact", "name": "$opt_dummy_attribute", "type": "custom_attribute", "value": "$opt_dummy_value"}]
)
DUMMY_AUDIENCE: Final = {
    "id": "$opt_dummy_audience",
    "name": "Optimizely-Generated Audience for Backwards Compatibility",
    "conditions": DUMMY_CONDITIONS,
}
TREE_OPERATORS: Final = ("and", "or", "not")

AudienceRef = str | Sequence[Any] | None


def stable_id(*parts: str) -> str:
    """A stable 11-digit id for an entity, from its kind and keys (the CDN's ids are digit strings too)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return str(10_000_000_000 + int.from_bytes(digest[:8], "big") % 90_000_000_000)


def variable_type(name: str, value: Any) -> tuple[str, str | None]:
    """The datafile type (and subType) of a variable, from its Python default value."""
    if isinstance(value, bool):
        return "boolean", None
    if isinstance(value, int):
        return "integer", None
    if isinstance(value, float):
        return "double", None
    if isinstance(value, str):
        return "string", None
    if isinstance(value, Mapping):
        return "string", "json"
    raise ConfigurationError(
        f"variable {name!r}: a default of type {type(value).__name__} has no datafile type; use str, int, "
        "float, bool or dict (json)"
    )


def encode(name: str, kind: str, value: Any) -> str:
    """A variable value as the datafile writes it (always a string), checked against the variable's type."""
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind == "double" and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ConfigurationError(f"variable {name!r}: {value!r} is not a finite number")
        return repr(number)
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "json" and isinstance(value, Mapping):
        try:
            return json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"variable {name!r}: not JSON-serialisable ({exc})") from None
    raise ConfigurationError(f"variable {name!r} is a {kind} variable; {value!r} is not a {kind}")


def percent(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigurationError(f"{name} must be a percentage from 0 to 100, got {value!r}")
    return float(value)


def allocation(entries: Sequence[tuple[str, float]], traffic: float) -> list[dict[str, Any]]:
    """``trafficAllocation`` for variation weights, scaled to ``traffic`` percent of the 10,000 buckets."""
    total = sum(weight for _, weight in entries)
    if total <= 0:
        raise ConfigurationError("a traffic split needs at least one variation with a positive weight")
    allocation = []
    running = 0.0
    for variation_id, weight in entries:
        running += weight
        allocation.append({"entityId": variation_id, "endOfRange": round(traffic * 100 * running / total)})
    return allocation


@dataclass
class VariableSpec:
    id: str
    key: str
    kind: str  # boolean, integer, double, string, json
    default: str


@dataclass
class VariationSpec:
    id: str
    key: str
    enabled: bool
    values: dict[str, str]  # variable key -> encoded value, only those that differ from the default


@dataclass
class RuleSpec:
    id: str
    key: str
    layer_id: str
    audience: AudienceRef
    allocation: list[tuple[str, float]]  # variation key, weight
    traffic: float
    allowlist: dict[str, str] = field(default_factory=dict)
    status: str = "Running"
    metrics: tuple[str, ...] = ()


@dataclass
class FlagSpec:
    id: str
    key: str
    variables: dict[str, VariableSpec]
    variations: dict[str, VariationSpec]
    experiments: list[RuleSpec] = field(default_factory=list)
    deliveries: list[RuleSpec] = field(default_factory=list)
    everyone_else: str = "off"
