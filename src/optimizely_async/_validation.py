"""Input checks shared by the public methods, with the official SDK's messages."""

from __future__ import annotations

import logging
import math
from typing import Any, Final

__all__ = [
    "INVALID_INPUT",
    "NOT_READY",
    "attributes_ok",
    "event_tags_ok",
    "is_non_empty_str",
    "number",
]

_log = logging.getLogger("optimizely_async")

INVALID_INPUT: Final = 'Provided "{}" is in an invalid format.'
NOT_READY: Final = 'Optimizely SDK is not ready: no valid datafile has been loaded yet. Failing "{}".'


def is_non_empty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def invalid_input(name: str) -> None:
    _log.error(INVALID_INPUT.format(name))


def attributes_ok(attributes: object) -> bool:
    """Attributes must be a plain dict (or falsy), exactly as the official SDK checks them."""
    if attributes and type(attributes) is not dict:
        _log.error("Provided attributes are in an invalid format.")
        return False
    return True


def event_tags_ok(event_tags: object) -> bool:
    if event_tags and type(event_tags) is not dict:
        _log.error("Provided event tags are in an invalid format.")
        return False
    return True


def number(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False, allow_equal: bool = False) -> Any:
    """Validate a numeric tuning knob; raises ConfigurationError with a message that says what to change."""
    from .errors import ConfigurationError

    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigurationError(f"{name} must be {kind}, got {value!r}.")
    if not math.isfinite(value) or (value < minimum if allow_equal else value <= minimum):
        bound = f">= {minimum:g}" if allow_equal else f"> {minimum:g}"
        raise ConfigurationError(f"{name} must be {bound}, got {value!r}.")
    return value
