"""The decision engine: pure, synchronous functions over an immutable ProjectConfig.

Order, rules and reason texts follow the official SDK (see docs/compatibility.md for where we differ on
purpose). Reasons are only formatted when a caller passes a ``reasons`` list or the logger wants the level, so
the fast path formats nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from .._logging import sdk_logger
from ..config.project_config import ExperimentInfo, FlagInfo, HoldoutInfo, ProjectConfig, VariationInfo
from .audiences import audience_check
from .bucketing import find_bucket
from .compiled import matcher_for
from .outcome import (
    BUCKETING_ID_ATTRIBUTE,
    CMAB_FAILED,
    EXPERIMENT,
    FEATURE_TEST,
    HOLDOUT,
    NO_ROLLOUT_DECISION,
    PENDING,
    ROLLOUT,
    CmabPending,
    CmabState,
    Decision,
    ForcedDecisions,
    ForcedVariations,
)
from .quiet import decide_flag_quietly, rollout_quietly
from .user_profile import UserProfileTracker

__all__ = [
    "CMAB_FAILED",
    "EXPERIMENT",
    "FEATURE_TEST",
    "HOLDOUT",
    "ROLLOUT",
    "CmabPending",
    "CmabState",
    "Decision",
    "ForcedDecisions",
    "ForcedVariations",
    "bucket",
    "decide_experiment",
    "decide_flag",
    "experiment_decision",
    "finish_cmab",
    "forced_decision_variation",
    "matcher_for",
]

_log = sdk_logger()
_EMPTY_RANGE: Final = "Bucketed into an empty traffic range. Returning nil."
_DEBUG: Final = logging.DEBUG
#: The official SDK's INFO decision messages (with user ids): logged at DEBUG here; decide reasons keep them.
_INFO: Final = logging.DEBUG
_WARNING: Final = logging.WARNING
_ERROR: Final = logging.ERROR


def _wants(reasons: list[str] | None, level: int) -> bool:
    return reasons is not None or _log.isEnabledFor(level)


def _emit(reasons: list[str] | None, level: int, message: str) -> None:
    if _log.isEnabledFor(level):
        _log.log(level, message)
    if reasons is not None:
        reasons.append(message)


def _audience_ok(
    entity: ExperimentInfo | HoldoutInfo,
    config: ProjectConfig,
    attributes: Mapping[str, Any],
    label: str,
    reasons: list[str] | None,
) -> bool:
    """The compiled matcher; with the official messages around it when reasons or logs want them."""
    matcher = config.matchers.get(entity) or matcher_for(config, entity)
    if reasons is None and not _log.isEnabledFor(_INFO):
        return matcher(attributes) is True
    return audience_check(
        entity.audience_tree, config.audiences, attributes, label, reasons, matcher, config.compiled_audiences
    )


def bucketing_id_for(user_id: str, attributes: Mapping[str, Any], reasons: list[str] | None) -> str:
    """``$opt_bucketing_id`` when it is a string, else the user id."""
    value = attributes.get(BUCKETING_ID_ATTRIBUTE)
    if value is None:
        return user_id
    if isinstance(value, str):
        return value
    _emit(reasons, _WARNING, "Bucketing ID attribute is not a string. Defaulted to user_id.")
    return user_id


def bucket(
    entity: ExperimentInfo | HoldoutInfo, user_id: str, bucketing_id: str, reasons: list[str] | None
) -> VariationInfo | None:
    """Bucket a user into a variation of an experiment, rollout rule or holdout (group step included)."""
    if not entity.key or not entity.key.strip():
        _log.debug("Invalid entity key provided for bucketing. Returning nil.")
        return None
    if isinstance(entity, ExperimentInfo):
        group = entity.group
        if group is not None and group.policy == "random":
            _, chosen = find_bucket(bucketing_id, group.id, group.allocation)
            if not chosen:
                if _wants(reasons, _INFO):
                    _emit(reasons, _INFO, f'User "{user_id}" is in no experiment.')
                _emit(reasons, _INFO, _EMPTY_RANGE)
                return None
            if chosen != entity.id:
                if _wants(reasons, _INFO):
                    _emit(
                        reasons,
                        _INFO,
                        f'User "{user_id}" is not in experiment "{entity.key}" of group {group.id}.',
                    )
                _emit(reasons, _INFO, _EMPTY_RANGE)
                return None
            if _wants(reasons, _INFO):
                _emit(reasons, _INFO, f'User "{user_id}" is in experiment {entity.key} of group {group.id}.')
    value, variation_id = find_bucket(bucketing_id, entity.id, entity.allocation)
    if _log.isEnabledFor(_DEBUG):
        _log.debug('Assigned bucket %s to user with bucketing ID "%s".', value, bucketing_id)
    if variation_id:
        variation = entity.variations_by_id.get(variation_id)
        if variation is None:
            _log.error(
                'Variation with id "%s" not defined in the datafile for experiment "%s".',
                variation_id,
                entity.id,
            )
        return variation
    _emit(reasons, _INFO, _EMPTY_RANGE)
    return None


def _forced_variation(
    experiment: ExperimentInfo, user_id: str, forced: ForcedVariations, reasons: list[str] | None
) -> VariationInfo | None:
    by_experiment = forced.get(user_id)
    if not by_experiment:
        return None
    variation_id = by_experiment.get(experiment.id)
    if variation_id is None:
        return None
    variation = experiment.variations_by_id.get(variation_id)
    if variation is None:
        _log.error('Variation ID "%s" is not in datafile.', variation_id)
        return None
    if _wants(reasons, _DEBUG):
        _emit(
            reasons,
            _DEBUG,
            f'Variation "{variation.key}" is mapped to experiment "{experiment.key}" and '
            f'user "{user_id}" in the forced variation map',
        )
    return variation


def _whitelisted_variation(experiment: ExperimentInfo, user_id: str, reasons: list[str] | None) -> VariationInfo | None:
    forced = experiment.forced_variations
    if not forced or user_id not in forced:
        return None
    key = forced[user_id]
    variation = experiment.variations_by_key.get(key)
    if variation is None:
        _log.error('Variation key "%s" is not in datafile.', key)
        return None
    if _wants(reasons, _INFO):
        _emit(reasons, _INFO, f'User "{user_id}" is forced in variation "{key}".')
    return variation


def decide_experiment(
    config: ProjectConfig,
    experiment: ExperimentInfo,
    user_id: str,
    attributes: Mapping[str, Any],
    forced: ForcedVariations,
    tracker: UserProfileTracker | None,
    reasons: list[str] | None = None,
) -> VariationInfo | None:
    """:func:`experiment_decision` for callers that cannot fetch a CMAB prediction: a user inside a CMAB
    experiment's traffic gets None here."""
    variation = experiment_decision(config, experiment, user_id, attributes, forced, tracker, reasons)
    return None if isinstance(variation, CmabPending) else variation


def experiment_decision(
    config: ProjectConfig,
    experiment: ExperimentInfo,
    user_id: str,
    attributes: Mapping[str, Any],
    forced: ForcedVariations,
    tracker: UserProfileTracker | None,
    reasons: list[str] | None = None,
) -> VariationInfo | CmabPending | None:
    """The official experiment order: running, forced variation, whitelist, stored profile, audiences,
    bucketing. A fresh bucketing is recorded in ``tracker``.

    For a CMAB experiment the bucketing only says whether the user is in its traffic; when they are, the answer
    is :class:`CmabPending` and the caller finishes with :func:`finish_cmab` once it has the prediction.
    """
    if experiment.status != "Running":
        if _wants(reasons, _INFO):
            _emit(reasons, _INFO, f'Experiment "{experiment.key}" is not running.')
        return None
    if forced:
        variation = _forced_variation(experiment, user_id, forced, reasons)
        if variation is not None:
            return variation
    if experiment.forced_variations:
        variation = _whitelisted_variation(experiment, user_id, reasons)
        if variation is not None:
            return variation
    if tracker is not None:
        stored_id = tracker.stored_variation_id(experiment.id)
        if stored_id:
            variation = experiment.variations_by_id.get(stored_id)
            if variation is not None:
                if _wants(reasons, _INFO):
                    _log.debug(
                        'Found a stored decision. User "%s" is in variation "%s" of experiment "%s".',
                        tracker.user_id,
                        variation.key,
                        experiment.key,
                    )
                    _emit(
                        reasons,
                        _INFO,
                        f'Returning previously activated variation ID "{variation.key}" of experiment '
                        f'"{experiment.key}" for user "{user_id}" from user profile.',
                    )
                return variation
            _log.error('Variation ID "%s" is not in datafile.', stored_id)
        _log.debug("User profile has invalid format.")
    if not _audience_ok(experiment, config, attributes, experiment.audience_label, reasons):
        if _wants(reasons, _INFO):
            _emit(
                reasons,
                _INFO,
                f'User "{user_id}" does not meet conditions to be in experiment "{experiment.key}".',
            )
        return None
    bucketing_id = bucketing_id_for(user_id, attributes, reasons)
    if experiment.cmab:
        if _in_cmab_traffic(experiment, user_id, bucketing_id, reasons):
            return CmabPending(experiment)
        if _wants(reasons, _INFO):
            _emit(reasons, _INFO, f'User "{user_id}" is in no variation.')
        return None
    variation = bucket(experiment, user_id, bucketing_id, reasons)
    if variation is not None:
        if _wants(reasons, _INFO):
            _emit(
                reasons,
                _INFO,
                f'User "{user_id}" is in variation "{variation.key}" of experiment {experiment.key}.',
            )
        if tracker is not None:
            tracker.record(experiment.id, variation.id)
        return variation
    if _wants(reasons, _INFO):
        _emit(reasons, _INFO, f'User "{user_id}" is in no variation.')
    return None


def _in_cmab_traffic(experiment: ExperimentInfo, user_id: str, bucketing_id: str, reasons: list[str] | None) -> bool:
    """The official CMAB allocation: the group first, then one range up to ``cmab.trafficAllocation`` (the
    experiment's own ``trafficAllocation`` plays no part). Unlike :func:`bucket`, a group miss adds no
    "empty traffic range" line, as in the official SDK; every miss ends with the CMAB traffic line."""
    if _cmab_bucket(experiment, user_id, bucketing_id, reasons):
        return True
    if _wants(reasons, _INFO):
        _emit(
            reasons,
            _INFO,
            f'User "{user_id}" not in CMAB experiment "{experiment.key}" due to traffic allocation.',
        )
    return False


def _cmab_bucket(experiment: ExperimentInfo, user_id: str, bucketing_id: str, reasons: list[str] | None) -> bool:
    group = experiment.group
    if group is not None and group.policy == "random":
        _, chosen = find_bucket(bucketing_id, group.id, group.allocation)
        if not chosen:
            if _wants(reasons, _INFO):
                _emit(reasons, _INFO, f'User "{user_id}" is in no experiment.')
            return False
        if chosen != experiment.id:
            if _wants(reasons, _INFO):
                _emit(reasons, _INFO, f'User "{user_id}" is not in experiment "{experiment.key}" of group {group.id}.')
            return False
        if _wants(reasons, _INFO):
            _emit(reasons, _INFO, f'User "{user_id}" is in experiment {experiment.key} of group {group.id}.')
    end = experiment.cmab.get("trafficAllocation") if experiment.cmab else None
    value, entity = find_bucket(bucketing_id, experiment.id, (("$", end if isinstance(end, int) else None),))
    if _log.isEnabledFor(_DEBUG):
        _log.debug('Assigned bucket %s to user with bucketing ID "%s".', value, bucketing_id)
    return bool(entity)


def finish_cmab(
    experiment: ExperimentInfo, variation_id: str, user_id: str, reasons: list[str] | None
) -> VariationInfo | None:
    """The variation a CMAB prediction named, with the official messages. A prediction naming a variation the
    experiment does not have gives no variation (the flag goes on to its next rule), as in the official SDK.
    CMAB results are never recorded in the user profile."""
    if _log.isEnabledFor(_DEBUG):
        _log.debug(
            'Skipping user profile service for CMAB experiment "%s". CMAB decisions are dynamic and not stored '
            "for sticky bucketing.",
            experiment.key,
        )
    variation = experiment.variations_by_id.get(variation_id)
    if variation is None:
        _log.error('Variation ID "%s" is not in datafile.', variation_id)
        if _wants(reasons, _INFO):
            _emit(reasons, _INFO, f'User "{user_id}" is in no variation.')
        return None
    if _wants(reasons, _INFO):
        _emit(reasons, _INFO, f'User "{user_id}" is in variation "{variation.key}" of experiment {experiment.key}.')
    return variation


def _holdout_variation(
    config: ProjectConfig,
    holdout: HoldoutInfo,
    user_id: str,
    attributes: Mapping[str, Any],
    reasons: list[str] | None,
) -> VariationInfo | None:
    bucketing_id = bucketing_id_for(user_id, attributes, reasons)
    if not _audience_ok(holdout, config, attributes, holdout.audience_label, reasons):
        if _wants(reasons, _DEBUG):
            _emit(reasons, _DEBUG, f"User '{user_id}' does not meet the conditions for holdout '{holdout.key}'.")
        return None
    variation = bucket(holdout, user_id, bucketing_id, reasons)
    if variation is not None:
        if _wants(reasons, _INFO):
            _emit(
                reasons,
                _INFO,
                f"The user '{user_id}' is bucketed into variation '{variation.key}' of holdout '{holdout.key}'.",
            )
        return variation
    if _wants(reasons, _INFO):
        _emit(
            reasons,
            _INFO,
            f"User '{user_id}' is not bucketed into any variation for holdout '{holdout.key}'.",
        )
    return None


_MISSING: Final[Any] = object()


def forced_decision_variation(
    flag: FlagInfo,
    rule_key: str | None,
    user_id: str,
    forced_decisions: ForcedDecisions,
    reasons: list[str] | None,
) -> VariationInfo | None:
    """A user-context forced decision for (flag, rule), resolved against every variation of the flag."""
    variation_key = forced_decisions.get((flag.key, rule_key), _MISSING)
    if variation_key is _MISSING:
        return None
    variation = flag.variations_by_key.get(variation_key) if isinstance(variation_key, str) else None
    if variation is not None:
        if rule_key:
            message = (
                f"Variation ({variation_key}) is mapped to flag ({flag.key}), rule ({rule_key}) "
                f"and user ({user_id}) in the forced decision map."
            )
        else:
            message = (
                f"Variation ({variation_key}) is mapped to flag ({flag.key}) and user ({user_id}) "
                "in the forced decision map."
            )
    elif rule_key:
        message = (
            f"Invalid variation is mapped to flag ({flag.key}), rule ({rule_key}) "
            f"and user ({user_id}) in the forced decision map."
        )
    else:
        message = f"Invalid variation is mapped to flag ({flag.key}) and user ({user_id}) in the forced decision map."
    _emit(reasons, _INFO, message)
    return variation


def decide_flag(
    config: ProjectConfig,
    flag: FlagInfo,
    user_id: str,
    attributes: Mapping[str, Any],
    forced: ForcedVariations,
    tracker: UserProfileTracker | None,
    reasons: list[str] | None = None,
    forced_decisions: ForcedDecisions | None = None,
    resume: Decision | None = None,
) -> Decision:
    """Global holdouts, then the flag's feature tests, then its rollout (the flag-level forced decision is
    the caller's, as it is checked before holdouts only by ``decide``).

    A CMAB rule the user is in stops the walk with a ``pending`` decision naming it. When its prediction gave
    no variation, ``resume=`` that decision goes on with the rules after it.
    """
    if reasons is None and tracker is None and not forced_decisions and resume is None:
        decision = decide_flag_quietly(config, flag, user_id, attributes, forced)
        if decision is not None:
            return decision
    holdout_hit: Decision | None = None
    experiment_ids = flag.experiment_ids
    if resume is not None:
        holdout_hit = resume.holdout
        if resume.experiment is not None:
            experiment_ids = experiment_ids[experiment_ids.index(resume.experiment.id) + 1 :]
    for holdout in config.global_holdouts if resume is None else ():
        variation = _holdout_variation(config, holdout, user_id, attributes, reasons)
        if variation is None:
            continue
        if _wants(reasons, _INFO):
            _emit(
                reasons,
                _INFO,
                f"The user '{user_id}' is bucketed into holdout '{holdout.key}' for feature flag '{flag.key}'.",
            )
        if not holdout.exclude_targeted_deliveries:
            return Decision(holdout, variation, HOLDOUT)
        if _wants(reasons, _INFO):
            _emit(
                reasons,
                _INFO,
                f"Holdout '{holdout.key}' excludes targeted deliveries. Targeted delivery rules will be evaluated.",
            )
        holdout_hit = Decision(holdout, variation, HOLDOUT)
        break

    experiments = config.experiments_by_id
    for experiment_id in experiment_ids:
        experiment = experiments[experiment_id]
        if holdout_hit is not None and experiment.type != "td":
            continue
        if forced_decisions:
            variation = forced_decision_variation(flag, experiment.key, user_id, forced_decisions, reasons)
            if variation is not None:
                return Decision(experiment, variation, FEATURE_TEST, holdout_hit)
        local = config.rule_holdouts.get(experiment.id) if config.rule_holdouts else None
        if local:
            for holdout in local:
                variation = _holdout_variation(config, holdout, user_id, attributes, reasons)
                if variation is not None:
                    if _wants(reasons, _INFO):
                        _emit(
                            reasons,
                            _INFO,
                            f"The user '{user_id}' is bucketed into local holdout '{holdout.key}' "
                            f"for experiment rule '{experiment.key}'.",
                        )
                    return Decision(holdout, variation, HOLDOUT)
        outcome = experiment_decision(config, experiment, user_id, attributes, forced, tracker, reasons)
        if outcome is not None:
            if isinstance(outcome, CmabPending):
                return Decision(experiment, None, FEATURE_TEST, holdout_hit, PENDING)
            return Decision(experiment, outcome, FEATURE_TEST, holdout_hit)

    if holdout_hit is not None and _wants(reasons, _INFO) and holdout_hit.experiment is not None:
        _emit(
            reasons,
            _INFO,
            f'Holdout "{holdout_hit.experiment.key}" has excludeTargetedDeliveries enabled, '
            "continuing to rollout evaluation.",
        )
    decision = _decide_rollout(config, flag, user_id, attributes, reasons, forced_decisions)
    if holdout_hit is not None:
        return Decision(decision.experiment, decision.variation, decision.source, holdout_hit)
    return decision


def _decide_rollout(
    config: ProjectConfig,
    flag: FlagInfo,
    user_id: str,
    attributes: Mapping[str, Any],
    reasons: list[str] | None,
    forced_decisions: ForcedDecisions | None,
) -> Decision:
    if not flag.rollout_id:
        return NO_ROLLOUT_DECISION
    rules = flag.rollout_rules
    if not rules:
        if _wants(reasons, _DEBUG):
            _emit(reasons, _DEBUG, f"Rollout {flag.rollout_id} has no experiments.")
        return NO_ROLLOUT_DECISION
    last = len(rules) - 1
    if reasons is None and not forced_decisions and not config.rule_holdouts and not _log.isEnabledFor(_INFO):
        raw_id = attributes.get(BUCKETING_ID_ATTRIBUTE)
        if raw_id is None or type(raw_id) is str:
            return rollout_quietly(config, flag, user_id if raw_id is None else raw_id, attributes)
    index = 0
    while index <= last:
        rule = rules[index]
        if forced_decisions:
            variation = forced_decision_variation(flag, rule.key, user_id, forced_decisions, reasons)
            if variation is not None:
                return Decision(rule, variation, ROLLOUT)
        local = config.rule_holdouts.get(rule.id) if config.rule_holdouts else None
        if local:
            for holdout in local:
                variation = _holdout_variation(config, holdout, user_id, attributes, reasons)
                if variation is not None:
                    if _wants(reasons, _INFO):
                        _emit(
                            reasons,
                            _INFO,
                            f"The user '{user_id}' is bucketed into local holdout '{holdout.key}' "
                            f"for delivery rule '{rule.key}'.",
                        )
                    return Decision(holdout, variation, HOLDOUT)
        bucketing_id = bucketing_id_for(user_id, attributes, reasons)
        everyone_else = index == last
        label = "Everyone Else" if everyone_else else str(index + 1)
        skip_to_everyone_else = False
        if _audience_ok(rule, config, attributes, "rule " + label, reasons):
            if _wants(reasons, _DEBUG):
                _emit(reasons, _DEBUG, f'User "{user_id}" meets audience conditions for targeting rule {label}.')
            variation = bucket(rule, user_id, bucketing_id, reasons)
            if variation is not None:
                if _wants(reasons, _DEBUG):
                    _emit(reasons, _DEBUG, f'User "{user_id}" bucketed into a targeting rule {label}.')
                return Decision(rule, variation, ROLLOUT)
            if not everyone_else:
                if _wants(reasons, _DEBUG):
                    _emit(
                        reasons,
                        _DEBUG,
                        f'User "{user_id}" not bucketed into a targeting rule {label}. '
                        'Checking "Everyone Else" rule now.',
                    )
                skip_to_everyone_else = True
        elif _wants(reasons, _DEBUG):
            _emit(
                reasons,
                _DEBUG,
                f'User "{user_id}" does not meet audience conditions for targeting rule {label}.',
            )
        index = last if skip_to_everyone_else else index + 1
    return NO_ROLLOUT_DECISION
