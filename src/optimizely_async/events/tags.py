"""The reserved event tags ``revenue`` and ``value``, and the JSON check on tag values.

``track()`` sends the caller's tags dict unchanged as ``tags``; two keys are also promoted to the event itself
when they are valid, exactly as the official SDK does:

* ``revenue``: an integral number (``numbers.Integral``) that is not a bool, sent as an integer (cents).
* ``value``: an int, float or str that ``float()`` parses to a finite number, and not a bool; sent as a float.

The official SDK builds its payload at flush time and a tag value that JSON cannot encode (a ``datetime``, a
``set``) breaks its flush loop for good. :func:`snapshot_tags` instead takes, at ``track()`` time, a deep
copy of the tags in the shape JSON gives back (what the official payload carries), or says why it cannot:
whatever the caller's tags contain or later become, only that one event is refused.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections.abc import Mapping
from typing import Any

from .._logging import logger

__all__ = [
    "MAX_TAG_DEPTH",
    "MAX_TAG_ITEMS",
    "REVENUE_TAG",
    "VALUE_TAG",
    "EventTags",
    "check_json_encodable",
    "parse_revenue",
    "parse_value",
    "snapshot_tags",
]

EventTags = Mapping[str, Any]
"""What ``track()`` accepts as event tags: string keys, JSON-encodable values."""

_PLAIN = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})
_FLOAT_MAX = int(sys.float_info.max)

#: Deepest nesting of containers in event tags (the tags dict itself is level 1); deeper tags are refused.
MAX_TAG_DEPTH = 100
#: Most values (at every level) in one event's tags.
MAX_TAG_ITEMS = 100_000

REVENUE_TAG = "revenue"
VALUE_TAG = "value"


def parse_revenue(tags: Mapping[Any, Any] | None) -> int | None:
    """Return the ``revenue`` tag when it is an integral number and not a bool, else None (silently).

    Floats (``10.5``), numeric strings and bools are not revenue; the official SDK logs nothing for them.
    """
    if not isinstance(tags, Mapping):
        return None
    raw = tags.get(REVENUE_TAG)
    if type(raw) is int:
        return raw
    if raw is None or isinstance(raw, bool) or not isinstance(raw, numbers.Integral):
        return None
    return int(raw)


def parse_value(tags: Mapping[Any, Any] | None) -> float | None:
    """Return the ``value`` tag as a finite float, or None; logs like the official SDK.

    A missing ``value`` key logs nothing. A rejected value logs a debug message naming the cause, then the
    official warning; an accepted one logs the official info message.
    """
    if not isinstance(tags, Mapping) or VALUE_TAG not in tags:
        return None
    raw = tags[VALUE_TAG]
    result: float | None = None
    problem: str | None = None
    if isinstance(raw, bool):
        problem = "Provided numeric value is a boolean, which is an invalid format."
    elif isinstance(raw, (numbers.Integral, float, str)):
        try:
            number = float(raw)
        except ValueError:
            problem = "Value error while casting numeric metric value to a float."
        except OverflowError:
            # float() of an int beyond the float range; the official SDK crashes here, we reject it.
            problem = f"Provided numeric value {raw} is in an invalid format."
        else:
            if math.isfinite(number):
                result = number
            else:
                problem = f"Provided numeric value {raw} is in an invalid format."
    else:
        problem = "Numeric metric value is not in integer, float, or string form."

    if problem is not None:
        logger.debug(problem)
    if result is None:
        logger.warning(
            "The provided numeric metric value None is in an invalid format and will not be sent to results."
        )
    else:
        logger.debug("The numeric metric value %s will be sent to results.", result)
    return result


def check_json_encodable(tags: Mapping[Any, Any] | None) -> str | None:
    """Return why ``tags`` cannot be sent as JSON, or None when they can.

    Accepted: str, int, float (NaN and infinities too, which Python's ``json`` writes as the official SDK
    does), bool, None, lists, tuples and dicts of those, with str/int/float/bool/None keys. Anything else
    (``datetime``, ``set``, arbitrary objects, circular structures) yields a message for the caller to log.
    """
    if tags is None:
        return None
    plain_dict = type(tags) is dict
    value = tags.get(VALUE_TAG) if plain_dict or isinstance(tags, Mapping) else None
    if type(value) is int and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
        # JSON could carry it, but as a 300-digit number in a payload the events API would reject whole.
        return f"Event tag 'value' (an integer of {len(str(abs(value)))} digits) is beyond the range of a double."
    if (plain_dict or isinstance(tags, dict)) and (
        _STR.issuperset(map(type, tags)) and _PLAIN.issuperset(map(type, tags.values()))
    ):
        return None  # the common case: flat tags of plain values, no need to encode
    try:
        json.dumps(tags)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"Event tags cannot be encoded as JSON: {exc}."
    return None


class _Refused(Exception):
    """Why a tags value cannot be sent (internal)."""


def snapshot_tags(tags: Mapping[Any, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """A deep copy of ``tags`` as JSON would give it back, or why the tags cannot be sent.

    Returns ``(copy, None)`` or ``(None, problem)``. The copy shares nothing mutable with the caller's
    tags, so what the caller does with them after ``track()`` returns cannot change (or break) the event.
    It is what ``json.loads(json.dumps(tags))`` gives: tuples become lists, str/int/float/bool/None keys
    become strings, subclasses of str, int and float become the plain value (their own methods are never
    called). The walk is iterative and bounded: tags nested deeper than :data:`MAX_TAG_DEPTH` or holding
    more than :data:`MAX_TAG_ITEMS` values, cycles, and values JSON cannot carry are refused. Flat tags of
    plain values (the common case) are copied in one step.
    """
    if tags is None:
        return None, None
    if not isinstance(tags, dict):
        return None, f"Event tags must be a dict, not {type(tags).__name__}."
    value = dict.get(tags, VALUE_TAG)
    if type(value) is int and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
        # JSON could carry it, but as a 300-digit number in a payload the events API would reject whole.
        return None, "Event tag 'value' (a very long integer) is beyond the range of a double."
    if type(tags) is dict and _STR.issuperset(map(type, tags)) and _PLAIN.issuperset(map(type, tags.values())):
        return dict(tags), None  # flat tags of plain (immutable) values: a shallow copy is a full one
    try:
        return _walk(tags), None
    except _Refused as exc:
        return None, f"Event tags cannot be sent: {exc}"
    except Exception as exc:  # anything a hostile object does while it is read
        return None, f"Event tags cannot be sent: reading them raised {type(exc).__name__}."


def _walk(tags: dict[Any, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    # (source container, its copy, depth of the source); each copy is filled completely when popped.
    stack: list[tuple[Any, Any, int]] = [(tags, root, 1)]
    items = 0
    while stack:
        source, target, depth = stack.pop()
        if depth > MAX_TAG_DEPTH:
            raise _Refused(f"nested deeper than {MAX_TAG_DEPTH} levels (or circular).")
        if type(target) is dict:
            pairs = list(dict.items(source))
            items += len(pairs)
            if items > MAX_TAG_ITEMS:
                raise _Refused(f"more than {MAX_TAG_ITEMS} values.")
            for key, item in pairs:
                target[_key(key)] = _copy(item, stack, depth)
        else:
            elements = list.__iter__(source) if isinstance(source, list) else tuple.__iter__(source)
            members = list(elements)
            items += len(members)
            if items > MAX_TAG_ITEMS:
                raise _Refused(f"more than {MAX_TAG_ITEMS} values.")
            for item in members:
                target.append(_copy(item, stack, depth))
    return root


def _copy(value: Any, stack: list[tuple[Any, Any, int]], depth: int) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, bool):  # pragma: no cover - bool cannot be subclassed
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        copy: Any = {}
    elif isinstance(value, (list, tuple)):
        copy = []
    else:
        raise _Refused(f"a value of type {kind.__name__} cannot be sent as JSON.")
    stack.append((value, copy, depth + 1))
    return copy


def _key(key: Any) -> str:
    """A dict key as ``json.dumps`` writes it."""
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        number = float.__float__(key)
        if number != number:
            return "NaN"
        if number in (math.inf, -math.inf):
            return "Infinity" if number > 0 else "-Infinity"
        return float.__repr__(number)
    raise _Refused(f"a key of type {type(key).__name__} cannot be sent as JSON.")
