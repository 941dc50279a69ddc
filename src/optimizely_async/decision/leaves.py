"""Audience leaves compiled once per config: each typed condition becomes a function of the user's attributes.

:func:`compile_leaf` gives a function ``attributes -> True | False | None`` that answers as
:func:`~.conditions.evaluate_leaf` does, with the same messages. The common conditions (an exact match on a
string or a bool, ``exists``, a numeric comparison with a finite number) answer straight away when the user's
value has the expected kind; every other known match type goes straight to its matcher; anything else (an
unknown condition or match type, ``qualified``) goes through ``evaluate_leaf``.

``quiet=True`` compiles a leaf for callers that run it only while the logger does not want DEBUG (the
audience matchers of :mod:`.compiled`): a missing or null attribute, whose one message is a DEBUG line, then
answers UNKNOWN without asking the logger.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from .conditions import (
    _CONDITION_TYPES,
    _DEBUG,
    _LIMIT,
    _MATCHERS,
    _MISSING,
    _WARNING,
    _is_finite,
    _qualified,
    evaluate_leaf,
    logger,
)

__all__ = ["Leaf", "compile_leaf"]

Leaf = Callable[[Mapping[str, Any]], "bool | None"]

_NUMERIC: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
#: Kinds of user value an exact match answers UNKNOWN for when the condition's value is of another of them.
_PLAIN: Final = frozenset({str, bool, int, float, list, dict, tuple})
#: Kinds of user value a numeric comparison answers UNKNOWN for.
_NOT_NUMBERS: Final = frozenset({str, bool, list, dict, tuple})


def compile_leaf(leaf: Mapping[str, Any], *, quiet: bool = False) -> Leaf:
    """A function ``attributes -> True | False | None`` equal to ``evaluate_leaf(leaf, attributes)``, messages
    included (with ``quiet``, while the logger does not want DEBUG)."""

    def general(attributes: Mapping[str, Any]) -> bool | None:
        return evaluate_leaf(leaf, attributes)

    name = leaf.get("name")
    match = leaf.get("match")
    if match is None:
        match = "exact"
    entry = _MATCHERS.get(match) if type(match) is str else None
    if leaf.get("type") not in _CONDITION_TYPES or type(name) is not str or entry is None or entry[0] is _qualified:
        return general
    expected = leaf.get("value")
    kind = type(expected)

    def unknown(attributes: Mapping[str, Any], user_value: Any, unknown_kinds: frozenset[type]) -> bool | None:
        """The answer for a user value the leaf's own check does not take. A missing or null one, and one of
        ``unknown_kinds``, are UNKNOWN: only their message is left to write, if it is wanted."""
        if user_value is None or user_value is _MISSING:
            if quiet or not logger.isEnabledFor(_DEBUG):
                return None
        elif type(user_value) in unknown_kinds and not logger.isEnabledFor(_WARNING):
            return None
        return general(attributes)

    if match == "exact" and (kind is str or kind is bool):

        def exact(attributes: Mapping[str, Any]) -> bool | None:
            try:
                user_value = attributes.get(name, _MISSING)
            except TypeError:  # a key of the user's whose __eq__ raises it
                return general(attributes)
            if type(user_value) is kind:
                return expected == user_value  # type: ignore[no-any-return]
            return unknown(attributes, user_value, _PLAIN)

        return exact
    if match == "exists":

        def exists(attributes: Mapping[str, Any]) -> bool | None:
            try:
                user_value = attributes.get(name, _MISSING)
            except TypeError:  # a key of the user's whose __eq__ raises it
                return general(attributes)
            return user_value is not None and user_value is not _MISSING

        return exists
    compare = _NUMERIC.get(match)
    if compare is not None and (kind is int or kind is float) and _is_finite(expected):

        def numeric(attributes: Mapping[str, Any]) -> bool | None:
            try:
                user_value = attributes.get(name, _MISSING)
            except TypeError:  # a key of the user's whose __eq__ raises it
                return general(attributes)
            user_kind = type(user_value)
            # A NaN fails the range check, as an infinity does: what _is_finite says of an int or a float.
            if (user_kind is int or user_kind is float) and -_LIMIT <= user_value <= _LIMIT:
                return compare(user_value, expected)
            return unknown(attributes, user_value, _NOT_NUMBERS)

        return numeric
    matcher, needs_value = entry

    def matched(attributes: Mapping[str, Any]) -> bool | None:
        try:
            user_value = attributes.get(name, _MISSING)
        except TypeError:
            return general(attributes)
        if needs_value and (user_value is None or user_value is _MISSING):
            return unknown(attributes, user_value, frozenset())
        return matcher(leaf, user_value)

    return matched
