"""How deep a datafile's condition trees may nest: checked when the datafile is loaded, relied on when deciding."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_CONDITION_DEPTH", "TOO_DEEP", "bounded_tree", "too_deep"]

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


def bounded_tree(value: Any, limit: int = MAX_CONDITION_DEPTH) -> Any:
    """A condition tree with its lists made tuples, the nested ones too (a dict, a leaf, is kept as it is), or
    ``ValueError(TOO_DEEP)`` when it nests more than ``limit`` levels as :func:`too_deep` counts them.

    The check and the conversion in one pass: a datafile has hundreds of small trees (every rule's
    ``audienceConditions``, every typed audience). It recurses once per nested list, which the check bounds.
    """
    if type(value) is list:
        return _tuple_tree(value, 0, limit)
    if too_deep(value, limit):
        raise ValueError(TOO_DEEP)
    return value


def _tuple_tree(node: list[Any], depth: int, limit: int) -> tuple[Any, ...]:
    if depth >= limit:
        raise ValueError(TOO_DEEP)
    for child in node:
        if isinstance(child, _CONTAINERS):
            break
    else:
        return tuple(node)  # the common case: audience ids under one operator
    items = []
    for child in node:
        if type(child) is list:
            child = _tuple_tree(child, depth + 1, limit)
        elif type(child) is dict:  # a condition: its values are scalars, unless the datafile is odd
            if depth + 1 >= limit:
                raise ValueError(TOO_DEEP)
            for item in child.values():
                if isinstance(item, _CONTAINERS) and too_deep(item, limit - depth - 2):
                    raise ValueError(TOO_DEEP)
        elif isinstance(child, _CONTAINERS) and too_deep(child, limit - depth - 1):
            raise ValueError(TOO_DEEP)
        items.append(child)
    return tuple(items)
