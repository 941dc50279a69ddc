"""``--attr key=value``: user attributes from the command line, typed by one rule.

The value is read as JSON when it is a JSON number, ``true``, ``false``, ``null`` or a JSON string in double
quotes; anything else is the text as written. So ``age=34`` is the integer 34, ``ltv=812.5`` a float,
``beta=true`` a boolean, ``plan=premium`` the string "premium", and ``zip='"02134"'`` the string "02134"
(quoted so that it stays a string). ``NaN`` and ``Infinity`` stay strings; numbers beyond the float range
too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["BadAttribute", "parse_attributes", "parse_value"]


class BadAttribute(ValueError):
    """A malformed ``--attr``."""


def _constant(text: str) -> Any:
    raise ValueError(text)  # NaN, Infinity, -Infinity: not JSON, so not typed


def parse_value(text: str) -> Any:
    """A value typed by the rule in the module docstring."""
    try:
        value = json.loads(text, parse_constant=_constant)
    except ValueError:
        return text
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return text  # a list, an object, or a number that overflowed: the text as written


def parse_attributes(items: Iterable[str]) -> dict[str, Any]:
    """``["age=34", "plan=premium"]`` -> ``{"age": 34, "plan": "premium"}``; a later key wins."""
    attributes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BadAttribute(f"--attr {item!r}: expected key=value")
        attributes[key] = parse_value(raw)
    return attributes
