"""The reserved event tags ``revenue`` and ``value``, and the JSON check on tag values.

``track()`` sends the caller's tags dict unchanged as ``tags``; two keys are also promoted to the event itself
when they are valid, exactly as the official SDK does:

* ``revenue``: an integral number (``numbers.Integral``) that is not a bool, sent as an integer (cents).
* ``value``: an int, float or str that ``float()`` parses to a finite number, and not a bool; sent as a float.

The official SDK builds its payload at flush time and a tag value that JSON cannot encode (a ``datetime``, a
``set``) breaks its flush loop for good. :func:`check_json_encodable` lets ``track()`` reject such tags up
front instead.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections.abc import Mapping
from typing import Any

from .._logging import logger

__all__ = ["REVENUE_TAG", "VALUE_TAG", "EventTags", "check_json_encodable", "parse_revenue", "parse_value"]

EventTags = Mapping[str, Any]
"""What ``track()`` accepts as event tags: string keys, JSON-encodable values."""

_PLAIN = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})
_FLOAT_MAX = int(sys.float_info.max)

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
