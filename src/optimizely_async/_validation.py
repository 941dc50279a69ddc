"""Input checks shared by the public methods, with the official SDK's messages."""

from __future__ import annotations

import math
from typing import Any, Final

from ._logging import sdk_logger

__all__ = [
    "INVALID_INPUT",
    "NOT_READY",
    "attributes_ok",
    "event_tags_ok",
    "is_non_empty_str",
    "number",
    "plain",
    "plain_attributes",
    "seconds",
]

_log = sdk_logger()

INVALID_INPUT: Final = 'Provided "{}" is in an invalid format.'
NOT_READY: Final = 'Optimizely SDK is not ready: no valid datafile has been loaded yet. Failing "{}".'


def plain(value: Any) -> Any:
    """A ``str`` subclass instance as a plain ``str`` with the same characters; anything else as it is.

    A subclass can lie: its ``__eq__`` or ``__hash__`` may raise or claim equality with other strings, which
    would break every later dict look-up that meets it (a forced variation stored under it, say). The copy is
    made without running any method of the subclass.
    """
    kind = type(value)
    if kind is str or not issubclass(kind, str):
        return value
    return str.__str__(value)


def _plain_value(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if issubclass(kind, str):
        return str.__str__(value)
    if issubclass(kind, bool):  # pragma: no cover - bool cannot be subclassed
        return bool(value)
    if issubclass(kind, int):
        return int.__int__(value)
    if issubclass(kind, float):
        return float.__float__(value)
    return value


def plain_attributes(attributes: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of a user's attributes in which keys and values that are subclasses of ``str``, ``int`` or
    ``float`` are plain ones (the same value, none of the subclass's methods). Other values are kept: the
    audiences and the events skip what they cannot use."""
    copy: dict[Any, Any] = {}
    for key, value in dict.items(attributes):
        try:
            copy[_plain_value(key)] = _plain_value(value)
        except Exception:  # a key whose own __hash__ or __eq__ raises: no condition could ever match it
            _log.debug("Ignoring an attribute whose key cannot be used.")
    return copy


def seconds(name: str, value: Any, default: float) -> float:
    """A timeout argument as a plain float: ``None`` means ``default``; anything that is not a finite,
    non-negative number is logged and replaced by ``default`` (never raised)."""
    if value is None:
        return default
    kind = type(value)
    number_value: float | None = None
    if kind is not bool and issubclass(kind, (int, float)):
        try:
            number_value = float(int.__int__(value)) if issubclass(kind, int) else float.__float__(value)
        except OverflowError:  # an int beyond the range of a float
            number_value = None
    if number_value is None or not math.isfinite(number_value) or number_value < 0:
        _log.error('Provided "%s" is in an invalid format: expected a non-negative number of seconds.', name)
        return default
    return number_value


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
