"""The decision engine's fast path: a flag decided with nothing to explain.

Most calls ask for no reasons, and the logger does not want DEBUG, where every per-call line of the engine is.
Such a call needs none of the engine's messages, so it needs none of its level checks either (one per step,
a sixth of a microsecond each). :func:`decide_flag_quietly` decides the common case of such a call: it checks
the level once, and answers None whenever something on the way would have to be said or looked up (a forced
or whitelisted variation, a holdout, a CMAB rule, a bucketing id that is not a string): ``decide_flag`` then
decides with the messages. For every call it answers, its decision is the one ``decide_flag`` gives
(tests/test_quiet_path.py compares the two over generated datafiles and users).

Log lines above DEBUG are still written where ``decide_flag`` writes them: the audience leaves' warnings (they
are the same compiled checks) and the error for a bucketed variation id the datafile lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from .._logging import sdk_logger
from ..config.project_config import ExperimentInfo, FlagInfo, ProjectConfig, VariationInfo
from .bucketing import find_bucket
from .compiled import matcher_for
from .outcome import BUCKETING_ID_ATTRIBUTE, FEATURE_TEST, NO_ROLLOUT_DECISION, ROLLOUT, Decision, ForcedVariations

__all__ = ["decide_flag_quietly", "rollout_quietly"]

_log = sdk_logger()
_DEBUG: Final = logging.DEBUG


def decide_flag_quietly(
    config: ProjectConfig, flag: FlagInfo, user_id: str, attributes: Mapping[str, Any], forced: ForcedVariations
) -> Decision | None:
    """``decide_flag(config, flag, user_id, attributes, forced, None)`` when nothing is to be logged at DEBUG;
    None when this call needs the engine's full path (see the module docstring)."""
    if config.global_holdouts or config.rule_holdouts or (forced and forced.get(user_id)):
        return None
    raw_id = attributes.get(BUCKETING_ID_ATTRIBUTE)
    if raw_id is not None and type(raw_id) is not str:  # decide_flag warns about it
        return None
    if _log.isEnabledFor(_DEBUG):
        return None
    bucketing_id: str = user_id if raw_id is None else raw_id
    experiments = config.experiments_by_id
    matchers = config.matchers
    for experiment_id in flag.experiment_ids:
        experiment = experiments[experiment_id]
        if experiment.status != "Running":
            continue
        whitelist = experiment.forced_variations
        if (whitelist and user_id in whitelist) or experiment.cmab:
            return None
        if (matchers.get(experiment) or matcher_for(config, experiment))(attributes):
            variation = _bucket(experiment, bucketing_id)
            if variation is not None:
                return Decision(experiment, variation, FEATURE_TEST)
    return rollout_quietly(config, flag, bucketing_id, attributes)


def rollout_quietly(
    config: ProjectConfig, flag: FlagInfo, bucketing_id: str, attributes: Mapping[str, Any]
) -> Decision:
    """The rollout step of ``decide_flag`` for a call with nothing to log, no forced decision and no local
    holdout: each rule in order until the user meets one's audience; a user it does not bucket goes straight to
    the last rule, "Everyone Else"."""
    rules = flag.rollout_rules
    if not flag.rollout_id or not rules:
        return NO_ROLLOUT_DECISION
    matchers = config.matchers
    last = len(rules) - 1
    index = 0
    while index <= last:
        rule = rules[index]
        if (matchers.get(rule) or matcher_for(config, rule))(attributes):
            variation = _bucket(rule, bucketing_id)
            if variation is not None:
                return Decision(rule, variation, ROLLOUT)
            index = last if index != last else last + 1  # a miss jumps to "Everyone Else"
        else:
            index += 1
    return NO_ROLLOUT_DECISION


def _bucket(entity: ExperimentInfo, bucketing_id: str) -> VariationInfo | None:
    """``engine.bucket`` without its messages: the group's draw first, then the entity's own."""
    if not entity.key.strip():  # an invalid entity key buckets nobody
        return None
    group = entity.group
    if group is not None and group.policy == "random":
        chosen = find_bucket(bucketing_id, group.id, group.allocation)[1]
        if not chosen or chosen != entity.id:
            return None
    variation_id = find_bucket(bucketing_id, entity.id, entity.allocation)[1]
    if not variation_id:
        return None
    variation = entity.variations_by_id.get(variation_id)
    if variation is None:
        _log.error('Variation with id "%s" not defined in the datafile for experiment "%s".', variation_id, entity.id)
    return variation
