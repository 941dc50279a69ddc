"""Decide API types: options, the decision object and the official decision messages."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ._logging import sdk_logger

if TYPE_CHECKING:
    from .user_context import OptimizelyUserContext

__all__ = ["DecideOption", "DecisionMessage", "OptimizelyDecision", "coerce_options"]

_log = sdk_logger()


class DecideOption(str, enum.Enum):
    """Options for ``decide``; each value is the official option string, so plain strings work too."""

    DISABLE_DECISION_EVENT = "DISABLE_DECISION_EVENT"
    ENABLED_FLAGS_ONLY = "ENABLED_FLAGS_ONLY"
    IGNORE_USER_PROFILE_SERVICE = "IGNORE_USER_PROFILE_SERVICE"
    INCLUDE_REASONS = "INCLUDE_REASONS"
    EXCLUDE_VARIABLES = "EXCLUDE_VARIABLES"
    #: CMAB: fetch a fresh prediction without reading or writing the cache (the other two are then ignored).
    IGNORE_CMAB_CACHE = "IGNORE_CMAB_CACHE"
    #: CMAB: empty the whole prediction cache (every user) before the lookup.
    RESET_CMAB_CACHE = "RESET_CMAB_CACHE"
    #: CMAB: remove this user's cached prediction for the rule before the lookup.
    INVALIDATE_USER_CMAB_CACHE = "INVALIDATE_USER_CMAB_CACHE"

    def __str__(self) -> str:
        return self.value


_BY_VALUE: Final = {o.value: o for o in DecideOption}


class DecisionMessage:
    SDK_NOT_READY: Final = "Optimizely SDK not configured properly yet."
    FLAG_KEY_INVALID: Final = 'No flag was found for key "{}".'
    VARIABLE_VALUE_INVALID: Final = 'Variable value for key "{}" is invalid or wrong type.'


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def coerce_options(options: Iterable[DecideOption | str] | None) -> tuple[DecideOption, ...]:
    """Known options as enum members, in order; unknown strings are ignored (as the official SDK does)."""
    if not options:
        return ()
    out: list[DecideOption] = []
    for option in options:
        if type(option) is DecideOption:
            member: DecideOption | None = option
        else:  # a str subclass is read as its plain characters: its own __hash__ never runs
            member = _BY_VALUE.get(str.__str__(option)) if issubclass(type(option), str) else None
        if member is None:
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("Ignoring unknown decide option %s.", _safe_repr(option))
        elif member not in out:
            out.append(member)
    return tuple(out)


@dataclass(slots=True)
class OptimizelyDecision:
    """The result of ``decide`` for one flag."""

    variation_key: str | None = None
    enabled: bool = False
    variables: dict[str, Any] = field(default_factory=dict)
    rule_key: str | None = None
    flag_key: str | None = None
    user_context: OptimizelyUserContext | None = None
    reasons: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The official ``OptimizelyDecision.as_json()`` dict: the seven fields in this order, with
        ``user_context`` as the context's own ``as_json()`` (None without a context)."""
        return {
            "variation_key": self.variation_key,
            "enabled": self.enabled,
            "variables": self.variables,
            "rule_key": self.rule_key,
            "flag_key": self.flag_key,
            "user_context": self.user_context.as_json() if self.user_context is not None else None,
            "reasons": self.reasons,
        }

    @classmethod
    def new_error_decision(
        cls, key: str | None, user: OptimizelyUserContext | None, reasons: list[str]
    ) -> OptimizelyDecision:
        """A decision for a flag that could not be decided: no variation, disabled, no variables."""
        return cls(flag_key=key, user_context=user, reasons=list(reasons))
