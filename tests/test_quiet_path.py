"""The engine's quiet path (decision/quiet.py) gives the decisions of its full path.

``decide_flag`` takes the quiet path for a call with no reasons, no user profile and no forced decisions while
the logger does not want DEBUG; with a ``reasons`` list it always takes the full path. Both run here on every
flag of generated datafiles (with and without holdouts, typed rules, groups, whitelists and edge-case
attributes) for generated users, and on a config whose client forces variations for some users.
"""

from __future__ import annotations

import logging
import random

import pytest

import datagen
from optimizely_async.config.project_config import parse_config
from optimizely_async.decision.engine import decide_flag
from optimizely_async.decision.quiet import decide_flag_quietly

SEEDS = range(60)


@pytest.fixture(autouse=True)
def _quiet_logger() -> None:
    assert not logging.getLogger("optimizely_async").isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize("features", ["plain", "holdouts and rule types"])
def test_the_quiet_path_decides_as_the_full_path(features: str) -> None:
    answered = compared = 0
    for seed in SEEDS:
        extra = {"holdouts": True, "rule_types": True} if features != "plain" else {}
        datafile = datagen.generate_datafile(seed, **extra)  # type: ignore[arg-type]
        config = parse_config(datafile)
        users = datagen.generate_users(random.Random(seed), datafile, 12)
        forced: dict[str, dict[str, str]] = {}
        experiments = list(config.experiments_by_id.values())
        for user in users[::4]:  # some users have a forced variation (set_forced_variation)
            experiment = random.Random(user.user_id).choice(experiments)
            if experiment.variations_by_id:
                forced[user.user_id] = {experiment.id: next(iter(experiment.variations_by_id))}
        for user in users:
            attributes = dict(user.attributes or {})
            for flag in config.flags_by_key.values():
                full = decide_flag(config, flag, user.user_id, attributes, forced, None, [])
                quick = decide_flag_quietly(config, flag, user.user_id, attributes, forced)
                assert decide_flag(config, flag, user.user_id, attributes, forced, None) == full
                compared += 1
                if quick is not None:
                    answered += 1
                    assert quick == full, (seed, user, flag.key)
    # Not vacuous: the quiet path answered most calls (not those with holdouts, forced or whitelisted users).
    assert answered > (compared // 2 if features == "plain" else 0), (answered, compared)


def test_the_quiet_path_steps_aside_at_debug() -> None:
    config = parse_config(datagen.generate_datafile(3))
    flag = next(iter(config.flags_by_key.values()))
    logger = logging.getLogger("optimizely_async")
    assert decide_flag_quietly(config, flag, "u", {}, {}) is not None
    saved = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        assert decide_flag_quietly(config, flag, "u", {}, {}) is None
    finally:
        logger.setLevel(saved)
