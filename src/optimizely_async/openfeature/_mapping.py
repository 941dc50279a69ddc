"""How a decision becomes an OpenFeature resolution: the value, reason, variant and metadata (pure functions).

Reasons and error codes are OpenFeature's names as plain strings, so that this module does not import
``openfeature``; the provider turns an :class:`Outcome` into the SDK's ``FlagResolutionDetails``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..config.project_config import FlagInfo, ProjectConfig
    from ..decide import OptimizelyDecision

__all__ = ["PICKERS", "Outcome", "RuleReasons", "error", "metadata_of", "user_of"]

#: The context attribute that names the variable a string/integer/float/object evaluation reads.
VARIABLE_KEY_ATTRIBUTE: Final = "variableKey"
#: The variable read when the context names none.
DEFAULT_VARIABLE: Final = "value"

SPLIT: Final = "SPLIT"
TARGETING_MATCH: Final = "TARGETING_MATCH"
DEFAULT: Final = "DEFAULT"
DISABLED: Final = "DISABLED"
ERROR: Final = "ERROR"

Metadata = dict[str, bool | int | float | str]
_MISSING: Any = object()


@dataclass(slots=True)
class Outcome:
    """One evaluation's result; ``error`` is an OpenFeature error code name (the value is then the default)."""

    value: Any
    reason: str
    variant: str | None = None
    metadata: Metadata | None = None
    error: str | None = None
    message: str | None = None


def error(default: Any, code: str, message: str) -> Outcome:
    return Outcome(default, ERROR, error=code, message=message)


def user_of(
    targeting_key: object, attributes: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any], str | None] | None:
    """(user id, user attributes, variable key) from an evaluation context's parts; None without a user id."""
    if not isinstance(targeting_key, str) or not targeting_key:
        return None
    user_attributes = dict(attributes) if attributes else {}
    variable = user_attributes.pop(VARIABLE_KEY_ATTRIBUTE, None)
    return targeting_key, user_attributes, variable if isinstance(variable, str) else None


class RuleReasons:
    """The reason of a decision: SPLIT, TARGETING_MATCH or DEFAULT from the kind of rule that decided,
    DISABLED for a variation with the feature off, DEFAULT when no rule gave a variation.

    The rule kinds of a flag are worked out once per config. Only the config's id and revision are kept, not
    the config: holding it would delay the client's clean-up of a replaced config.
    """

    def __init__(self) -> None:
        self._state: tuple[int, str | None, dict[str, dict[str, str]]] = (0, None, {})

    def reason(self, config: ProjectConfig, flag: FlagInfo, decision: OptimizelyDecision) -> str:
        if decision.variation_key is None:
            return DEFAULT
        if not decision.enabled:
            return DISABLED
        rule_key = decision.rule_key
        if rule_key is None:
            return TARGETING_MATCH  # a forced decision for the flag
        config_id, revision, by_flag = self._state
        if config_id != id(config) or revision != config.revision:
            by_flag = {}
            self._state = (id(config), config.revision, by_flag)
        rules = by_flag.get(flag.key)
        if rules is None:
            rules = by_flag[flag.key] = _rule_reasons(config, flag)
        return rules.get(rule_key, SPLIT)


def _rule_reasons(config: ProjectConfig, flag: FlagInfo) -> dict[str, str]:
    """Each rule key of the flag with its reason: experiments SPLIT, targeted deliveries TARGETING_MATCH, the
    last rollout rule ("Everyone Else") DEFAULT. Keys not listed (holdouts) are SPLIT."""
    reasons: dict[str, str] = {}
    rollout = flag.rollout_rules
    for i, rule in enumerate(rollout):
        reasons[rule.key] = DEFAULT if i == len(rollout) - 1 else TARGETING_MATCH
    for experiment_id in flag.experiment_ids:
        experiment = config.experiments_by_id.get(experiment_id)
        if experiment is not None:
            reasons[experiment.key] = SPLIT
    return reasons


# ---------------------------------------------------------------------------- one picker per evaluation type

Picker = Callable[["OptimizelyDecision", Any, "str | None", str, Metadata], Outcome]


def _boolean(decision: OptimizelyDecision, default: Any, variable: str | None, reason: str, meta: Metadata) -> Outcome:
    return Outcome(bool(decision.enabled), reason, decision.variation_key, meta)


def _variable(
    decision: OptimizelyDecision,
    default: Any,
    variable: str | None,
    reason: str,
    meta: Metadata,
    accept: Callable[[Any], Any],
    kind: str,
) -> Outcome:
    name = variable or DEFAULT_VARIABLE
    meta["variableKey"] = name
    variant = decision.variation_key
    if not decision.enabled:
        return Outcome(default, reason, variant, meta)
    value = decision.variables.get(name, _MISSING)
    if value is _MISSING:
        message = f'Flag "{decision.flag_key}" has no variable "{name}".'
        return Outcome(default, ERROR, variant, meta, "FLAG_NOT_FOUND", message)
    converted = accept(value)
    if converted is _MISSING:
        message = f'Variable "{name}" of flag "{decision.flag_key}" is a {type(value).__name__}, not {kind}.'
        return Outcome(default, ERROR, variant, meta, "TYPE_MISMATCH", message)
    return Outcome(converted, reason, variant, meta)


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else _MISSING


def _as_int(value: Any) -> Any:
    return value if type(value) is int else _MISSING


def _as_float(value: Any) -> Any:
    return float(value) if type(value) in (float, int) else _MISSING


def _as_json(value: Any) -> Any:
    return value if isinstance(value, (dict, list)) else _MISSING


def _string(decision: OptimizelyDecision, default: Any, variable: str | None, reason: str, meta: Metadata) -> Outcome:
    return _variable(decision, default, variable, reason, meta, _as_str, "a string")


def _integer(decision: OptimizelyDecision, default: Any, variable: str | None, reason: str, meta: Metadata) -> Outcome:
    return _variable(decision, default, variable, reason, meta, _as_int, "an integer")


def _float(decision: OptimizelyDecision, default: Any, variable: str | None, reason: str, meta: Metadata) -> Outcome:
    return _variable(decision, default, variable, reason, meta, _as_float, "a number")


def _object(decision: OptimizelyDecision, default: Any, variable: str | None, reason: str, meta: Metadata) -> Outcome:
    if variable is not None:
        return _variable(decision, default, variable, reason, meta, _as_json, "JSON")
    if not decision.enabled:
        return Outcome(default, reason, decision.variation_key, meta)
    return Outcome(dict(decision.variables), reason, decision.variation_key, meta)


#: The picker of each evaluation type.
PICKERS: Final[Mapping[str, Picker]] = {
    "boolean": _boolean,
    "string": _string,
    "integer": _integer,
    "float": _float,
    "object": _object,
}


def metadata_of(flag_key: str, decision: OptimizelyDecision) -> Metadata:
    meta: Metadata = {"flagKey": flag_key}
    if decision.rule_key:
        meta["ruleKey"] = decision.rule_key
    return meta
