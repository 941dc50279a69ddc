"""The pure engine's part of CMAB: it stops at a CMAB rule the user is in, and resumes after it.

No network here: the async shell's part is in test_cmab_decide.py. These pin the contract between the two
(``pending`` decisions, ``resume=``, :func:`finish_cmab`), and that a flag without CMAB never stops.
"""

from __future__ import annotations

import copy
import logging

import pytest

from _cmab_support import EXPERIMENT, FLAG, small_datafile
from optimizely_async.config.project_config import parse_config
from optimizely_async.decision.engine import (
    CmabPending,
    decide_experiment,
    decide_flag,
    experiment_decision,
    finish_cmab,
)


def test_a_user_in_the_cmab_traffic_gets_a_pending_decision_then_the_rules_after_it() -> None:
    config = parse_config(small_datafile())
    flag = config.flags_by_key[FLAG]
    reasons: list[str] = []
    pending = decide_flag(config, flag, "user_1", {"age": 3}, {}, None, reasons)
    assert pending.pending and pending.variation is None and pending.experiment is not None
    assert pending.experiment.key == EXPERIMENT
    # a prediction naming a variation the experiment lacks: no variation, then the rollout
    assert finish_cmab(pending.experiment, "99999", "user_1", reasons) is None  # type: ignore[arg-type]
    resumed = decide_flag(config, flag, "user_1", {"age": 3}, {}, None, reasons, resume=pending)
    assert not resumed.pending and resumed.variation is not None and resumed.variation.key == "rollout_on"
    assert reasons[-1] == 'User "user_1" bucketed into a targeting rule Everyone Else.'
    assert 'User "user_1" is in no variation.' in reasons
    variation = finish_cmab(pending.experiment, "4002", "user_1", None)  # type: ignore[arg-type]
    assert variation is not None and variation.key == "treatment_b"


def test_outside_the_cmab_traffic_nothing_is_pending() -> None:
    config = parse_config(small_datafile(traffic=0))
    reasons: list[str] = []
    decision = decide_flag(config, config.flags_by_key[FLAG], "user_1", {}, {}, None, reasons)
    assert not decision.pending and decision.variation is not None and decision.variation.key == "rollout_on"
    at = reasons.index('User "user_1" not in CMAB experiment "cmab_exp" due to traffic allocation.')
    assert reasons[at + 1] == 'User "user_1" is in no variation.'


def test_an_experiment_level_caller_sees_pending_or_none() -> None:
    config = parse_config(small_datafile())
    experiment = config.experiments_by_key[EXPERIMENT]
    assert isinstance(experiment_decision(config, experiment, "user_1", {}, {}, None), CmabPending)
    assert decide_experiment(config, experiment, "user_1", {}, {}, None) is None  # callers that cannot fetch
    assert decide_experiment(config, experiment, "whitelisted", {}, {}, None) is not None  # needs no prediction


@pytest.mark.parametrize("cmab", [None, {}])
def test_an_empty_or_missing_cmab_entry_is_an_ordinary_experiment(cmab: object) -> None:
    datafile = small_datafile()
    experiment = datafile["experiments"][0]
    if cmab is None:
        experiment.pop("cmab")
    else:
        experiment["cmab"] = cmab
    config = parse_config(copy.deepcopy(datafile))
    decision = decide_flag(config, config.flags_by_key[FLAG], "user_1", {}, {}, None)
    assert not decision.pending and decision.variation is not None and decision.variation.key == "treatment_a"


def test_the_unsupported_log_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(small_datafile())
    with caplog.at_level(logging.DEBUG, logger="optimizely_async"):
        decide_flag(config, config.flags_by_key[FLAG], "user_1", {}, {}, None)
    assert "unsupported" not in caplog.text.lower()
    assert "Failed to fetch CMAB data" not in caplog.text  # the engine does not fetch: the shell decides that
