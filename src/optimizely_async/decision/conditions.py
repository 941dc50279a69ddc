"""Leaf matchers for audience conditions.

A leaf is one typed condition from an audience's condition tree, a mapping with the keys ``name``,
``value``, ``type`` and ``match``. :func:`evaluate_leaf` compares it with the user's attributes and answers
with three-valued logic: ``True`` (matches), ``False`` (does not match) or ``None`` (UNKNOWN: the condition or
the attribute cannot be evaluated).

The rules follow the official SDK exactly:

* only the condition types ``custom_attribute`` and ``third_party_dimension`` are understood;
* a missing ``match`` means ``exact``;
* numbers must be finite and within ``[-2^53, 2^53]``; ``bool`` is never a number; ``int`` and ``float``
  count as the same type;
* apart from ``exists`` and ``qualified``, a missing or null attribute is UNKNOWN;
* ``qualified`` (ODP segments) is true when the segment is among the user's qualified segments, which the
  async shell hands over on the attributes mapping (``qualified_segments``; see ``odp/user.py``): a plain
  mapping qualifies for nothing.

One deliberate difference: where the official semantic-version comparison raises ``ValueError`` (for
example target ``1.2.3-beta`` against user ``1.2.3-4``), this module answers ``None`` instead.

Messages go to the ``optimizely_async`` logger and are formatted only when that level is enabled.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final, NamedTuple

from .._logging import sdk_logger

logger: Final = sdk_logger()

__all__ = ["evaluate_leaf"]

_DEBUG: Final = logging.DEBUG
_WARNING: Final = logging.WARNING

# Message texts, worded exactly as the official SDK words them.
_UNKNOWN_TYPE: Final = (
    'Audience condition "{}" uses an unknown condition type. '
    "You may need to upgrade to a newer release of the Optimizely SDK."
)
_UNKNOWN_MATCH: Final = (
    'Audience condition "{}" uses an unknown match type. '
    "You may need to upgrade to a newer release of the Optimizely SDK."
)
_UNKNOWN_VALUE: Final = (
    'Audience condition "{}" has an unsupported condition value. '
    "You may need to upgrade to a newer release of the Optimizely SDK."
)
_UNEXPECTED_TYPE: Final = (
    'Audience condition "{}" evaluated to UNKNOWN because a value of type "{}" was passed for user attribute "{}".'
)
_OUT_OF_RANGE: Final = (
    'Audience condition "{}" evaluated to UNKNOWN because the number value '
    'for user attribute "{}" is not in the range [-2^53, +2^53].'
)
# (sic) the official text quotes the condition in the null message but not in the missing one.
_MISSING_VALUE: Final = (
    'Audience condition {} evaluated to UNKNOWN because no value was passed for user attribute "{}".'
)
_NULL_VALUE: Final = (
    'Audience condition "{}" evaluated to UNKNOWN because a null value was passed for user attribute "{}".'
)
_BAD_VERSION: Final = "Attributes provided are in an invalid format."

_CONDITION_TYPES: Final = ("custom_attribute", "third_party_dimension")
_LIMIT: Final = 2**53
_MISSING: Final[Any] = object()

Matcher = Callable[[Mapping[str, Any], Any], "bool | None"]


# --------------------------------------------------------------------------------------------- helpers
def _describe(leaf: Mapping[str, Any]) -> str:
    """The condition as JSON, keys in the order the official log messages use."""
    shown = {
        "name": leaf.get("name"),
        "value": leaf.get("value"),
        "type": leaf.get("type"),
        "match": leaf.get("match"),
    }
    return json.dumps(shown, default=repr)


def _warn(template: str, leaf: Mapping[str, Any], *extra: Any) -> None:
    if logger.isEnabledFor(_WARNING):
        logger.warning(template.format(_describe(leaf), *extra))


def _is_number(value: Any) -> bool:
    """int or float (or another integral type), but not bool."""
    kind = type(value)
    if kind is int or kind is float:
        return True
    if kind is bool or kind is str or value is None:  # fast answers before the slow ABC check
        return False
    return isinstance(value, (int, float, numbers.Integral))


def _is_finite(value: Any) -> bool:
    """A number that is neither NaN nor infinite and lies within [-2^53, 2^53]; bool is not a number."""
    kind = type(value)
    if kind is int:
        return bool(-_LIMIT <= value <= _LIMIT)
    if kind is float:
        return math.isfinite(value) and bool(-_LIMIT <= value <= _LIMIT)
    if kind is bool or kind is str or value is None:
        return False
    if isinstance(value, float):
        return math.isfinite(value) and bool(abs(value) <= _LIMIT)
    if isinstance(value, int):
        return bool(abs(value) <= _LIMIT)
    # Other integral types (e.g. numpy integers) get no range check, as in the official SDK.
    return isinstance(value, numbers.Integral)


def _is_exact_comparable(value: Any) -> bool:
    """str, bool or number: the kinds of value an exact match accepts."""
    return isinstance(value, (str, int, float, numbers.Integral))


def _same_kind(first: Any, second: Any) -> bool:
    """Both strings, both bools, or both numbers (int and float mix freely)."""
    if isinstance(first, str):
        return isinstance(second, str)
    if isinstance(first, bool) or isinstance(second, bool):
        return type(first) is type(second)
    return _is_number(first) and _is_number(second)


# --------------------------------------------------------------------------------------------- matchers
def _exact(leaf: Mapping[str, Any], user_value: Any) -> bool | None:
    expected = leaf.get("value")
    kind = type(expected)
    if (kind is str or kind is bool) and type(user_value) is kind:  # the common case, needing no checks
        return bool(expected == user_value)
    if not _is_exact_comparable(expected) or (_is_number(expected) and not _is_finite(expected)):
        _warn(_UNKNOWN_VALUE, leaf)
        return None
    if not _is_exact_comparable(user_value) or not _same_kind(expected, user_value):
        _warn(_UNEXPECTED_TYPE, leaf, type(user_value), leaf.get("name"))
        return None
    if _is_number(user_value) and not _is_finite(user_value):
        _warn(_OUT_OF_RANGE, leaf, leaf.get("name"))
        return None
    return bool(expected == user_value)


def _exists(leaf: Mapping[str, Any], user_value: Any) -> bool | None:
    return user_value is not None and user_value is not _MISSING


def _numeric(compare: Callable[[Any, Any], Any]) -> Matcher:
    """A gt/ge/lt/le matcher: both sides finite numbers within 2^53, then ``compare(user, condition)``."""

    def match(leaf: Mapping[str, Any], user_value: Any) -> bool | None:
        expected = leaf.get("value")
        if not _is_finite(expected):
            _warn(_UNKNOWN_VALUE, leaf)
            return None
        if not _is_number(user_value):
            _warn(_UNEXPECTED_TYPE, leaf, type(user_value), leaf.get("name"))
            return None
        if not _is_finite(user_value):
            _warn(_OUT_OF_RANGE, leaf, leaf.get("name"))
            return None
        return bool(compare(user_value, expected))

    return match


def _substring(leaf: Mapping[str, Any], user_value: Any) -> bool | None:
    expected = leaf.get("value")
    if not isinstance(expected, str):
        _warn(_UNKNOWN_VALUE, leaf)
        return None
    if not isinstance(user_value, str):
        _warn(_UNEXPECTED_TYPE, leaf, type(user_value), leaf.get("name"))
        return None
    return expected in user_value


def _qualified(leaf: Mapping[str, Any], segments: Any) -> bool | None:
    # ``segments``: the user's qualified ODP segments (None before any fetch: qualified for nothing).
    value = leaf.get("value")
    if not isinstance(value, str):
        _warn(_UNKNOWN_VALUE, leaf)
        return None
    return segments is not None and value in segments


# --------------------------------------------------------------------------------------------- semver
class _Version(NamedTuple):
    """A version split the official way: up to three numeric parts, then the whole suffix as one part."""

    parts: tuple[str, ...]
    digits: tuple[bool, ...]  # str.isdigit() of each part
    ints: tuple[int | None, ...]  # int() of each part, None where int() would raise
    pre_release: bool
    build: bool


def _as_int(part: str) -> int | None:
    try:
        return int(part)
    except ValueError:
        return None


def _parse_version(text: str) -> _Version | None:
    """Split a version string; None when the official SDK deems it invalid."""
    if " " in text:
        return None
    dash = text.find("-")
    plus = text.find("+")
    pre_release = dash >= 0 and (plus < 0 or dash < plus)
    build = plus >= 0 and (dash < 0 or plus < dash)
    suffix: tuple[str, ...] = ()
    head = text
    if pre_release or build:
        head, _, tail = text.partition("-" if pre_release else "+")
        suffix = (tail,)
    numeric = head.split(".")
    if len(numeric) > 3 or not all(piece.isdigit() for piece in numeric):
        return None
    parts = (*numeric, *suffix)
    return _Version(
        parts=parts,
        digits=tuple(part.isdigit() for part in parts),
        ints=tuple(_as_int(part) for part in parts),
        pre_release=pre_release,
        build=build,
    )


def _compare_versions(target: _Version, user: _Version) -> int | None:
    """-1, 0 or 1 as the user version is below, equal to or above the target; None if not comparable.

    Walks the target's parts. A missing user part makes the user greater only against a pre-release or
    build target; a non-numeric user part compares as a string, with pre-release tie-breaking; numeric
    parts compare as integers. None stands for the cases where the official SDK raises ``ValueError``.
    """
    user_count = len(user.parts)
    for index, target_part in enumerate(target.parts):
        if index >= user_count:
            return 1 if target.pre_release or target.build else -1
        if not user.digits[index]:
            user_part = user.parts[index]
            if user_part < target_part:
                return 1 if target.pre_release and not user.pre_release else -1
            if user_part > target_part:
                return -1 if user.pre_release and not target.pre_release else 1
            continue
        user_number = user.ints[index]
        target_number = target.ints[index]
        if user_number is None or target_number is None:
            return None
        if user_number != target_number:
            return 1 if user_number > target_number else -1
    return -1 if user.pre_release and not target.pre_release else 0


_MALFORMED: Final = 2  # a _version_order result: one of the two versions is malformed


@lru_cache(maxsize=4096)
def _version_order(target_text: str, user_text: str) -> int | None:
    """-1, 0, 1 or None as in :func:`_compare_versions`, or ``_MALFORMED``. Pure, hence cached."""
    target = _parse_version(target_text)
    if target is None:
        return _MALFORMED
    user = _parse_version(user_text)
    if user is None:
        return _MALFORMED
    return _compare_versions(target, user)


def _semver(accept: Callable[[int], bool]) -> Matcher:
    def match(leaf: Mapping[str, Any], user_value: Any) -> bool | None:
        target_text = leaf.get("value")
        if not isinstance(target_text, str):
            _warn(_UNKNOWN_VALUE, leaf)
            return None
        if not isinstance(user_value, str):
            _warn(_UNEXPECTED_TYPE, leaf, type(user_value), leaf.get("name"))
            return None
        order = _version_order(target_text, user_value)
        if order == _MALFORMED:
            logger.warning(_BAD_VERSION)
            return None
        return None if order is None else accept(order)

    return match


# match type -> (matcher, whether the attribute must be present and non-null)
_MATCHERS: Final[dict[str, tuple[Matcher, bool]]] = {
    "exact": (_exact, True),
    "exists": (_exists, False),
    "substring": (_substring, True),
    "gt": (_numeric(operator.gt), True),
    "ge": (_numeric(operator.ge), True),
    "lt": (_numeric(operator.lt), True),
    "le": (_numeric(operator.le), True),
    "semver_eq": (_semver(lambda order: order == 0), True),
    "semver_gt": (_semver(lambda order: order > 0), True),
    "semver_ge": (_semver(lambda order: order >= 0), True),
    "semver_lt": (_semver(lambda order: order < 0), True),
    "semver_le": (_semver(lambda order: order <= 0), True),
    "qualified": (_qualified, False),
}


def evaluate_leaf(leaf: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool | None:
    """Evaluate one typed audience condition against the user's attributes.

    Args:
        leaf: ``{"name", "value", "type", "match"}``; a missing key reads as None, a missing or null
            ``match`` as ``"exact"``.
        attributes: the user's attributes.

    Returns:
        True or False, or None (UNKNOWN) when the condition type or match type is unknown, the condition
        value is unsupported, or the attribute is missing, null, of the wrong type or out of range. Each
        UNKNOWN is explained in a warning (a debug message for a missing or null attribute).
    """
    if leaf.get("type") not in _CONDITION_TYPES:
        _warn(_UNKNOWN_TYPE, leaf)
        return None
    match = leaf.get("match")
    if match is None:
        match = "exact"
    entry = _MATCHERS.get(match) if isinstance(match, str) else None
    if entry is None:
        _warn(_UNKNOWN_MATCH, leaf)
        return None
    matcher, needs_value = entry
    if matcher is _qualified:
        return _qualified(leaf, getattr(attributes, "qualified_segments", None))
    name: Any = leaf.get("name")
    try:
        user_value = attributes.get(name, _MISSING)
    except TypeError:  # an unhashable name cannot be an attribute key
        user_value = _MISSING
    if needs_value and (user_value is None or user_value is _MISSING):
        if logger.isEnabledFor(_DEBUG):
            template = _MISSING_VALUE if user_value is _MISSING else _NULL_VALUE
            logger.debug(template.format(_describe(leaf), name))
        return None
    return matcher(leaf, user_value)
