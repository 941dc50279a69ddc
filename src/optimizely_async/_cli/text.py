"""Words for the command line: audience expressions, conditions and decision reasons as people read them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["audience_words", "condition_words", "reason_lines", "value_words"]

_COMPARISONS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_SEMVER = {"semver_eq": "=", "semver_gt": ">", "semver_ge": ">=", "semver_lt": "<", "semver_le": "<="}


def audience_words(tree: Any, names: Mapping[str, str]) -> str:
    """An audience expression (a tree of audience ids) in words, e.g. ``Adults and (App 2.x or Mobile)``;
    ``everyone`` when it is empty."""

    def words(node: Any, top: bool = False) -> str:
        if not isinstance(node, (list, tuple)):
            return names.get(node, str(node)) if isinstance(node, str) else json.dumps(node)
        if not node:
            return "?"
        op, *rest = node if node[0] in ("and", "or", "not") else ["or", *node]
        if op == "not":
            return "not " + words(rest[0]) if rest else "?"
        text = f" {op} ".join(words(child) for child in rest)
        return text if top or len(rest) < 2 else f"({text})"

    return words(tree, top=True) if tree else "everyone"


def value_words(value: Any) -> str:
    return json.dumps(value, default=repr)


def condition_words(leaf: Any) -> str:
    """One audience condition in words: ``age > 17``, ``plan = "premium"``, ``email contains "@acme"`` ..."""
    if not isinstance(leaf, Mapping):
        return value_words(leaf)
    name, value, match = leaf.get("name"), leaf.get("value"), leaf.get("match") or "exact"
    if match == "exists":
        return f"{name} exists"
    if match == "exact":
        return f"{name} = {value_words(value)}"
    if match == "substring":
        return f"{name} contains {value_words(value)}"
    if match in _COMPARISONS:
        return f"{name} {_COMPARISONS[match]} {value_words(value)}"
    if match in _SEMVER:
        return f"{name} {_SEMVER[match]} {value} (as a version)"
    if match == "qualified":
        return f"qualified for segment {value_words(value)}"
    return value_words(dict(leaf))


def reason_lines(reasons: Sequence[str], indent: int = 8) -> list[str]:
    """The reasons, indented, without those the next one restates: "Evaluating audiences for ..." (the ids
    about to be evaluated) and "Audiences for ... collectively evaluated to ..." when a "User ... meet(s)
    ... conditions" line follows."""
    kept = [reason for reason in reasons if not reason.startswith("Evaluating audiences for ")]
    return [
        f"{'':{indent}}{reason}"
        for reason, after in zip(kept, [*kept[1:], ""], strict=True)
        if not (reason.startswith("Audiences for ") and " meet" in after and "conditions" in after)
    ]
