"""Unit tests of the pure decision engine (``optimizely_async.decision.engine``) over a small hand-written
datafile. Expected variations and reasons come from the official SDK on the same datafile wherever it can
answer the same question (``get_variation``, ``set_forced_variation``, ``decide`` with forced decisions)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from optimizely.bucketer import Bucketer
from optimizely.optimizely_user_context import OptimizelyUserContext as OfficialContext

from differential import make_official
from optimizely_async.config.project_config import parse_config
from optimizely_async.decision import engine
from optimizely_async.decision.engine import FEATURE_TEST, ROLLOUT, Decision

_bucket_value = Bucketer()._generate_bucket_value  # the official hash-to-bucket formula


@functools.cache
def user_with_bucket(parent_id: str, low: int, high: int | None = None, prefix: str = "user") -> str:
    """The first ``<prefix><n>`` whose official bucket for ``parent_id`` is in [low, high] (high defaults to low)."""
    high = low if high is None else high
    for n in range(1_000_000):
        if low <= _bucket_value(f"{prefix}{n}{parent_id}") <= high:
            return f"{prefix}{n}"
    raise AssertionError("no such user")


def leaf(name: str, value: Any) -> str:
    cond = f'{{"name": "{name}", "type": "custom_attribute", "match": "exact", "value": {value}}}'
    return f'["and", ["or", ["or", {cond}]]]'


def var(vid: str, key: str, enabled: bool | None = None) -> dict[str, Any]:
    return {"id": vid, "key": key, "variables": [], "featureEnabled": enabled}


def exp(eid: str, key: str, variations: list[dict[str, Any]], ends: list[tuple[str, int]], **extra: Any) -> dict:
    return {
        "id": eid,
        "key": key,
        "status": extra.pop("status", "Running"),
        "layerId": "L" + eid,
        "variations": variations,
        "trafficAllocation": [{"entityId": e, "endOfRange": end} for e, end in ends],
        "audienceIds": extra.pop("audiences", []),
        "forcedVariations": extra.pop("forced", {}),
        **extra,
    }


# A whitelisted user whose own bucket would put them in "a": the whitelist, not bucketing, must give "b".
VIP = user_with_bucket("1001", 0, 4999, prefix="vip")
AB, FT = [var("1101", "a"), var("1102", "b")], [var("1501", "on", True), var("1502", "off", False)]
DATAFILE: dict[str, Any] = {
    "version": "4",
    "accountId": "1",
    "projectId": "2",
    "revision": "7",
    "anonymizeIP": False,
    "botFiltering": False,
    "sendFlagDecisions": True,
    "attributes": [{"id": "5001", "key": "country"}, {"id": "5002", "key": "beta"}],
    "audiences": [
        {"id": "100", "name": "US", "conditions": leaf("country", '"US"')},
        {"id": "101", "name": "beta", "conditions": leaf("beta", "true")},
    ],
    "events": [],
    "experiments": [
        exp("1001", "exp_ab", AB, [("1101", 5000), ("1102", 10000)], audiences=["100"], forced={VIP: "b"}),
        exp("1002", "exp_paused", [var("1201", "p")], [("1201", 10000)], status="Paused", forced={VIP: "p"}),
        exp("1003", "exp_gaps", [var("1301", "g")], [("", 5000), ("1301", 10000)]),
        exp("1004", "exp_empty", [var("1401", "e")], []),
        exp("1005", "ft", FT, [("1501", 5000), ("1502", 10000)], audiences=["101"]),
    ],
    "groups": [
        {
            "id": "2001",
            "policy": "random",
            "trafficAllocation": [{"entityId": "1601", "endOfRange": 3000}, {"entityId": "1602", "endOfRange": 6000}],
            "experiments": [
                exp("1601", "grp_one", [var("1611", "x")], [("1611", 10000)]),
                exp("1602", "grp_two", [var("1621", "y")], [("1621", 10000)]),
            ],
        }
    ],
    "featureFlags": [
        {"id": "3001", "key": "feat", "experimentIds": ["1005"], "rolloutId": "4001", "variables": []},
        {"id": "3002", "key": "bare", "experimentIds": [], "rolloutId": "", "variables": []},
    ],
    "rollouts": [
        {
            "id": "4001",
            "experiments": [
                exp("4101", "rule_us", [var("4111", "r1", True)], [("4111", 2000)], audiences=["100"]),
                exp("4102", "rule_us_all", [var("4112", "r2", True)], [("4112", 10000)], audiences=["100"]),
                exp("4103", "everyone_else", [var("4113", "ee", False)], [("4113", 10000)]),
            ],
        }
    ],
}
CONFIG = parse_config(DATAFILE)
EMPTY_RANGE = "Bucketed into an empty traffic range. Returning nil."


@pytest.fixture(autouse=True)
def _quiet_logger() -> Iterator[None]:
    """Below INFO the engine takes its fast path when no reasons list is given."""
    logger = logging.getLogger("optimizely_async")
    saved = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(saved)


@pytest.fixture
def official() -> Iterator[Any]:
    client, _, _ = make_official(DATAFILE)
    yield client
    client.close()


def check(official: Any, key: str, user_id: str, attrs: dict[str, Any] | None = None, forced: Any = None) -> tuple:
    """Our (variation key, reasons) for one experiment: the fast path (no reasons) must agree, and so must the
    official decision service (no user profile; run-time forced variations set on ``official`` beforehand)."""
    e, attrs = CONFIG.experiments_by_key[key], attrs or {}
    fast = engine.decide_experiment(CONFIG, e, user_id, attrs, forced or {}, None)
    reasons: list[str] = []
    assert engine.decide_experiment(CONFIG, e, user_id, attrs, forced or {}, None, reasons) is fast
    ours = (fast.key if fast else None), reasons
    config = official.config_manager.get_config()
    user = official.create_user_context(user_id, attrs)
    result = official.decision_service.get_variation(config, config.get_experiment_from_key(key), user, None, [], [])
    assert ours == ((result["variation"].key if result["variation"] else None), result["reasons"])
    return ours


def flag(user_id: str, attrs: dict[str, Any], forced_decisions: Any = None) -> tuple[Decision, list[str]]:
    """Our flag decision (fast and slow path must agree) and its reasons."""
    f = CONFIG.flags_by_key["feat"]
    fast = engine.decide_flag(CONFIG, f, user_id, attrs, {}, None, None, forced_decisions)
    reasons: list[str] = []
    assert engine.decide_flag(CONFIG, f, user_id, attrs, {}, None, reasons, forced_decisions) == fast
    return fast, reasons


def official_flag(client: Any, user_id: str, attrs: dict[str, Any], forced: Any = None) -> tuple[Any, ...]:
    user = client.create_user_context(user_id, attrs)
    for (flag_key, rule_key), variation_key in (forced or {}).items():
        user.set_forced_decision(
            OfficialContext.OptimizelyDecisionContext(flag_key, rule_key),
            OfficialContext.OptimizelyForcedDecision(variation_key),
        )
    d = user.decide("feat", ["INCLUDE_REASONS"])
    return d.variation_key, d.rule_key, d.enabled, d.reasons


def summary(decision: Decision) -> tuple[Any, ...]:
    v, rule = decision.variation, decision.experiment
    return (v.key if v else None), (rule.key if rule else None), bool(v and v.feature_enabled)


US = {"country": "US"}


def test_not_running_gives_nothing_even_to_whitelisted(official: Any) -> None:
    assert check(official, "exp_paused", VIP) == (None, ['Experiment "exp_paused" is not running.'])
    assert check(official, "exp_paused", "anyone")[0] is None


def test_whitelist_beats_audience_and_bucketing(official: Any) -> None:
    assert _bucket_value(VIP + "1001") < 5000  # bucketing alone would give "a"
    assert check(official, "exp_ab", VIP, {"country": "FR"}) == ("b", [f'User "{VIP}" is forced in variation "b".'])


def test_runtime_forced_variation_beats_whitelist(official: Any) -> None:
    forced = {VIP: {"1001": "1101"}, "other": {"1001": "1102"}}
    assert official.set_forced_variation("exp_ab", VIP, "a")
    assert check(official, "exp_ab", VIP, {}, forced) == (
        "a",
        [f'Variation "a" is mapped to experiment "exp_ab" and user "{VIP}" in the forced variation map'],
    )
    assert official.set_forced_variation("exp_ab", VIP, None)
    # A forced variation id the experiment does not have is ignored: the whitelist applies again.
    assert check(official, "exp_ab", VIP, {}, {VIP: {"1001": "4111"}})[0] == "b"
    # Forced variations of other experiments or users change nothing.
    assert check(official, "exp_ab", VIP, {}, {VIP: {"1003": "1301"}})[0] == "b"


@pytest.mark.parametrize("attrs", [{}, {"country": "FR"}, {"country": "us"}, US, {"country": "US", "beta": True}])
def test_audience_pass_and_fail(official: Any, attrs: dict[str, Any]) -> None:
    users = [f"aud{i}" for i in range(12)]
    ours = [check(official, "exp_ab", u, attrs) for u in users]
    assert ({key for key, _ in ours} == {None}) is (attrs.get("country") != "US")
    if attrs.get("country") != "US":
        assert ours[0][1][-1] == 'User "aud0" does not meet conditions to be in experiment "exp_ab".'


@pytest.mark.parametrize(("bucket", "expected"), [(0, "a"), (4999, "a"), (5000, "b"), (9999, "b")])
def test_traffic_allocation_boundaries(official: Any, bucket: int, expected: str) -> None:
    user = user_with_bucket("1001", bucket)
    variation, reasons = check(official, "exp_ab", user, US)
    assert variation == expected
    assert reasons[-1] == f'User "{user}" is in variation "{expected}" of experiment exp_ab.'


@pytest.mark.parametrize(("bucket", "expected"), [(0, None), (4999, None), (5000, "g"), (9999, "g")])
def test_empty_entity_id_is_an_empty_range(official: Any, bucket: int, expected: str | None) -> None:
    user = user_with_bucket("1003", bucket)
    variation, reasons = check(official, "exp_gaps", user)
    assert variation == expected
    if expected is None:
        assert reasons[-2:] == [EMPTY_RANGE, f'User "{user}" is in no variation.']


def test_empty_traffic_allocation(official: Any) -> None:
    assert {check(official, "exp_empty", f"e{i}")[0] for i in range(20)} == {None}
    assert check(official, "exp_empty", "e0")[1][-2:] == [EMPTY_RANGE, 'User "e0" is in no variation.']


def test_mutual_exclusion_group(official: Any) -> None:
    first, outside = user_with_bucket("2001", 0, 2999), user_with_bucket("2001", 6000, 9999)
    second = user_with_bucket("2001", 3000, 5999)
    for user, expected in ((first, ("x", None)), (second, (None, "y")), (outside, (None, None))):
        assert (check(official, "grp_one", user)[0], check(official, "grp_two", user)[0]) == expected
    assert check(official, "grp_two", first)[1][-3:] == [
        f'User "{first}" is not in experiment "grp_two" of group 2001.',
        EMPTY_RANGE,
        f'User "{first}" is in no variation.',
    ]
    assert check(official, "grp_one", outside)[1][-3:-1] == [f'User "{outside}" is in no experiment.', EMPTY_RANGE]
    assert f'User "{first}" is in experiment grp_one of group 2001.' in check(official, "grp_one", first)[1]


def test_feature_test_before_rollout_and_feature_enabled_false(official: Any) -> None:
    on, off = user_with_bucket("1005", 0, 4999), user_with_bucket("1005", 5000, 9999)
    attrs = {"country": "US", "beta": True}
    for user, expected in ((on, ("on", "ft", True)), (off, ("off", "ft", False))):
        decision, reasons = flag(user, attrs)
        assert decision.source == FEATURE_TEST
        assert summary(decision) == expected == official_flag(official, user, attrs)[:3]
        assert reasons == official_flag(official, user, attrs)[3]
    # Not in the feature test's audience: the rollout decides.
    decision, _ = flag(on, US)
    assert decision.source == ROLLOUT and summary(decision) == official_flag(official, on, US)[:3]


def test_rollout_jumps_to_everyone_else(official: Any) -> None:
    inside, outside = user_with_bucket("4101", 0, 1999), user_with_bucket("4101", 2000, 9999)
    decision, _ = flag(inside, US)
    assert summary(decision) == ("r1", "rule_us", True) == official_flag(official, inside, US)[:3]
    # Audience matches rule 1 but not bucketed: rule 2 (which would take everyone) is skipped.
    decision, reasons = flag(outside, US)
    assert summary(decision) == ("ee", "everyone_else", False) == official_flag(official, outside, US)[:3]
    assert f'User "{outside}" not bucketed into a targeting rule 1. Checking "Everyone Else" rule now.' in reasons
    assert not any("rule 2" in r for r in reasons)
    assert reasons == official_flag(official, outside, US)[3]
    # No audience match: each targeted rule is tried in turn, then "Everyone Else".
    decision, reasons = flag(outside, {"country": "FR"})
    assert summary(decision) == ("ee", "everyone_else", False)
    assert reasons == official_flag(official, outside, {"country": "FR"})[3]


def test_flag_without_rollout_or_experiments() -> None:
    bare = CONFIG.flags_by_key["bare"]
    assert engine.decide_flag(CONFIG, bare, "u", {}, {}, None, []) == Decision(None, None, ROLLOUT)


def test_bucketing_id_attribute(official: Any) -> None:
    low, high = user_with_bucket("1001", 4999), user_with_bucket("1001", 5000)
    for bucketing_id, expected in ((low, "a"), (high, "b")):
        attrs = {"country": "US", "$opt_bucketing_id": bucketing_id}
        assert check(official, "exp_ab", high if expected == "a" else low, attrs)[0] == expected
    # Not a string: a warning reason and the user id buckets.
    variation, reasons = check(official, "exp_ab", low, {"country": "US", "$opt_bucketing_id": 42})
    assert variation == "a" and "Bucketing ID attribute is not a string. Defaulted to user_id." in reasons
    assert engine.bucketing_id_for("u", {"$opt_bucketing_id": None}, None) == "u"


@pytest.mark.parametrize(
    "forced",
    [
        {("feat", "ft"): "off"},  # a rule-level forced decision on the feature test, outside its audience
        {("feat", "rule_us"): "ee"},  # any variation of the flag, even another rule's
        {("feat", "rule_us_all"): "r2"},  # skipped: rule 1's miss jumps to "Everyone Else"
        {("feat", "everyone_else"): "on"},
        {("feat", "ft"): "nope", ("feat", "rule_us"): None},  # invalid: ignored
        {("other", "ft"): "on", ("feat", None): "on"},  # other flags and the flag level are the caller's
    ],
)
def test_rule_forced_decisions(official: Any, forced: dict[Any, Any]) -> None:
    user = user_with_bucket("4101", 2000, 9999)
    decision, reasons = flag(user, US, forced)
    expected = official_flag(official, user, US, {k: v for k, v in forced.items() if k[1] is not None})
    assert summary(decision) == expected[:3]
    assert set(reasons) == set(expected[3])
    if ("feat", "ft") in forced and forced[("feat", "ft")] == "nope":
        assert reasons[0] == (
            f"Invalid variation is mapped to flag (feat), rule (ft) and user ({user}) in the forced decision map."
        )


def test_forced_decision_variation_messages() -> None:
    f = CONFIG.flags_by_key["feat"]
    reasons: list[str] = []
    assert engine.forced_decision_variation(f, None, "u", {("feat", None): "r2"}, reasons).id == "4112"
    assert engine.forced_decision_variation(f, "ft", "u", {("feat", None): "r2"}, reasons) is None
    assert engine.forced_decision_variation(f, None, "u", {("feat", None): 3}, reasons) is None
    assert reasons == [
        "Variation (r2) is mapped to flag (feat) and user (u) in the forced decision map.",
        "Invalid variation is mapped to flag (feat) and user (u) in the forced decision map.",
    ]


def test_bucket_rejects_blank_entity_key() -> None:
    rule = CONFIG.experiments_by_key["exp_ab"]
    bucketing_id = user_with_bucket("1001", 0)
    assert engine.bucket(rule, "u", bucketing_id, None).key == "a"
    for key in ("", "  "):
        reasons: list[str] = []
        assert engine.bucket(dataclasses.replace(rule, key=key), "u", bucketing_id, reasons) is None
        assert reasons == []


class CountingStr(str):
    """A user id that counts how often it is formatted into a message."""

    formatted = 0

    def __format__(self, spec: str) -> str:
        CountingStr.formatted += 1
        return str.__format__(self, spec)


def test_reasons_only_when_a_list_is_given() -> None:
    user = CountingStr(user_with_bucket("4101", 2000, 9999))
    ab, grp = CONFIG.experiments_by_key["exp_ab"], CONFIG.experiments_by_key["grp_two"]
    CountingStr.formatted = 0
    engine.decide_flag(CONFIG, CONFIG.flags_by_key["feat"], user, {"country": "US", "$opt_bucketing_id": 1}, {}, None)
    engine.decide_experiment(CONFIG, ab, user, {"country": "FR"}, {}, None)
    engine.decide_experiment(CONFIG, grp, user, {}, {}, None)
    assert CountingStr.formatted == 0
    reasons: list[str] = []
    engine.decide_experiment(CONFIG, ab, user, {"country": "FR"}, {}, None, reasons)
    assert CountingStr.formatted > 0 and reasons
