"""How deep a datafile's condition trees may nest: checked when the datafile is loaded, relied on when deciding."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_CONDITION_DEPTH", "TOO_DEEP", "too_deep"]

#: The deepest nesting of lists and objects accepted in a condition tree (an audience's conditions, an
#: experiment's audienceConditions). Real datafiles nest 3 or 4 deep; the official SDK fails from about 490.
MAX_CONDITION_DEPTH: Final = 100
#: What a datafile error says of a value nested deeper than that.
TOO_DEEP: Final = f"nested deeper than {MAX_CONDITION_DEPTH} levels, which this SDK does not support"
_CONTAINERS: Final = (list, tuple, dict)


def too_deep(value: Any, limit: int = MAX_CONDITION_DEPTH) -> bool:
    """Whether lists, tuples and dicts nest more than ``limit`` levels in ``value`` (a scalar is level 0).
    Iterative, so it is safe on any input."""
    if not isinstance(value, _CONTAINERS):
        return False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, tuple)):
            children: Any = node
        elif isinstance(node, dict):
            children = node.values()
        else:
            continue
        if depth >= limit:
            return True
        for child in children:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False
