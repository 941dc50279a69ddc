"""Audiences for the builder: condition trees from keyword arguments, and rules' audience references from names
to ids."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError
from ._values import MATCH_TYPES, TREE_OPERATORS, AudienceRef

__all__ = ["audience_conditions", "resolve_audiences"]


def audience_conditions(
    name: str, conditions: Mapping[str, Any] | Sequence[Any] | None, attributes: Mapping[str, Any]
) -> tuple[list[Any], list[str]]:
    """The typed condition tree of an audience (as the CDN nests it) and the attribute keys it uses."""
    if not isinstance(name, str) or not name or name in TREE_OPERATORS:
        raise ConfigurationError(f"an audience needs a non-empty name other than and/or/not, got {name!r}")
    if isinstance(conditions, (str, bytes)):
        raise ConfigurationError(f"audience {name!r}: conditions must be a mapping or a list, not a string")
    if conditions is not None and not isinstance(conditions, Mapping):
        if attributes:
            raise ConfigurationError(f"audience {name!r}: give a raw condition list or attributes, not both")
        tree = copy.deepcopy(list(conditions))
        return tree, _attribute_names(tree)
    specs = {**(conditions or {}), **attributes}
    if not specs:
        raise ConfigurationError(f"audience {name!r} has no conditions")
    tree = ["and", *(["or", ["or", _leaf(name, attr, spec)]] for attr, spec in specs.items())]
    return tree, list(specs)


def _leaf(audience: str, attribute: str, spec: Any) -> dict[str, Any]:
    where = f"audience {audience!r}, attribute {attribute!r}"
    if isinstance(spec, tuple):
        if not spec or spec[0] not in MATCH_TYPES:
            raise ConfigurationError(f"{where}: {spec!r} must start with one of {sorted(MATCH_TYPES)}")
        match = spec[0]
        if match == "exists":
            value = None
        elif len(spec) == 2:
            value = spec[1]
        else:
            raise ConfigurationError(f"{where}: use ({match!r}, value)")
    else:
        match, value = "exact", spec
    if match != "exists" and not isinstance(value, (str, int, float, bool)):
        raise ConfigurationError(f"{where}: {value!r} is not a string, number or boolean")
    return {"match": match, "name": attribute, "type": "custom_attribute", "value": value}


def _attribute_names(tree: Any) -> list[str]:
    if isinstance(tree, Mapping):
        name = tree.get("name")
        return [name] if isinstance(name, str) and tree.get("type") == "custom_attribute" else []
    if isinstance(tree, list):
        return [name for node in tree for name in _attribute_names(node)]
    return []


def resolve_audiences(rule_key: str, ref: AudienceRef, audience_ids: Mapping[str, str]) -> tuple[list[str], list[Any]]:
    """``audienceIds`` and ``audienceConditions`` of a rule: a name, a list of names (any of them) or a tree
    of names, each replaced by its audience's id."""
    if ref is None:
        return [], []
    ids: list[str] = []

    def resolve(node: Any) -> Any:
        if isinstance(node, str):
            if node in TREE_OPERATORS:
                return node
            if node not in audience_ids:
                raise ConfigurationError(f"rule {rule_key!r} names audience {node!r}, which is not defined")
            if audience_ids[node] not in ids:
                ids.append(audience_ids[node])
            return audience_ids[node]
        if isinstance(node, Sequence):
            return [resolve(child) for child in node]
        raise ConfigurationError(f"rule {rule_key!r}: {node!r} is not an audience name or a list of them")

    if isinstance(ref, str):
        return [resolve(ref)], ["or", ids[0]]
    tree = resolve(list(ref))
    if not tree or tree[0] not in TREE_OPERATORS:
        tree = ["or", *tree]
    return ids, tree
