"""The test kit (``optimizely_async.testing``): built datafiles are real datafiles, recorded events are real
events.

* Differential: for generated builder programs (flags with variables of every type, extra variations, A/B
  tests with splits, traffic, audiences, allowlists and paused ones, deliveries with percentages, Everyone
  Else overrides, standalone experiments, events), the official SDK 5.7.0 accepts the datafile (its JSON
  schema and its ProjectConfig) and both SDKs give the same decisions, variations, variables and event
  payloads for generated users.
* The builder's promises: the brief's one-liner, variable types, splits and traffic shares, every match type,
  allowlists, stable ids, revisions, and a clear ``ConfigurationError`` for each mistake.
* ``RecordingDispatcher`` and ``update_datafile`` with a real client on both backends, and the pytest example
  in ``examples/`` run as a user would run it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import optimizely_async
from differential import make_official, same, short
from optimizely_async import AsyncOptimizely, ConfigurationError, DispatchResult, NotificationType
from optimizely_async.testing import DatafileBuilder, RecordingDispatcher, update_datafile

pytestmark = pytest.mark.anyio

KIT_SEEDS = int(os.environ.get("KIT_SEEDS", "40"))
KIT_USERS = int(os.environ.get("KIT_USERS", "24"))
VOLATILE = frozenset({"uuid", "timestamp", "client_name", "client_version"})
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def scrub(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: scrub(v) for k, v in node.items() if k not in VOLATILE}
    if isinstance(node, list):
        return [scrub(item) for item in node]
    return node


# ------------------------------------------------------------------------------------- generated programs

PLANS = ["free", "pro", "premium"]
COUNTRIES = ["US", "DE", "JP"]


def _condition(rng: random.Random) -> tuple[str, Any]:
    return rng.choice(
        [
            lambda: ("plan", rng.choice(PLANS)),
            lambda: ("age", (rng.choice(["gt", "ge", "lt", "le"]), rng.randint(15, 60))),
            lambda: ("score", (rng.choice(["gt", "lt"]), round(rng.uniform(0, 1), 2))),
            lambda: ("beta", rng.random() < 0.5),
            lambda: ("email", ("substring", rng.choice(["@acme", "@example", ".org"]))),
            lambda: (
                "app_version",
                (rng.choice(["semver_ge", "semver_lt", "semver_eq"]), rng.choice(["2.0", "2.4.1"])),
            ),
            lambda: ("country", ("exists",)),
            lambda: ("country", rng.choice(COUNTRIES)),
        ]
    )()


def _audience_ref(rng: random.Random, names: list[str]) -> Any:
    if not names or rng.random() < 0.35:
        return None
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(names)
    if roll < 0.7:
        return rng.sample(names, rng.randint(1, len(names)))
    first = rng.choice(names)
    return rng.choice([["and", first, ["not", rng.choice(names)]], ["or", ["not", first]], ["and", *names]])


def _variable_value(rng: random.Random, kind: str) -> Any:
    return {
        "str": lambda: rng.choice(["", "Hello", "Grüße", "a b"]),
        "int": lambda: rng.randint(-5, 10**6),
        "float": lambda: rng.choice([0.0, 0.5, -2.25, 1e-3, 12345.678]),
        "bool": lambda: rng.random() < 0.5,
        "json": lambda: {"n": rng.randint(0, 9), "list": [1, "x", None], "nested": {"ok": True}},
    }[kind]()


def random_builder(seed: int) -> tuple[DatafileBuilder, dict[str, list[str]]]:
    """A builder program from a seed, and what it made: flag keys, rule (experiment) keys, event keys."""
    rng = random.Random(seed)
    builder = DatafileBuilder(revision=str(seed), send_flag_decisions=rng.random() < 0.8)
    names = []
    for index in range(rng.randint(0, 4)):
        name = f"audience_{index}"
        conditions = dict(_condition(rng) for _ in range(rng.randint(1, 2)))
        builder.audience(name, conditions)
        names.append(name)
    made: dict[str, list[str]] = {"flags": [], "experiments": [], "events": ["signup"]}
    builder.event("signup")
    for flag_index in range(rng.randint(1, 4)):
        flag_key = f"flag_{flag_index}"
        kinds = {f"var_{i}": rng.choice(["str", "int", "float", "bool", "json"]) for i in range(rng.randint(0, 4))}
        variables = {name: _variable_value(rng, kind) for name, kind in kinds.items()}
        extra = {
            f"variant_{i}": {
                name: _variable_value(rng, kinds[name]) for name in rng.sample(list(kinds), rng.randint(0, len(kinds)))
            }
            for i in range(rng.randint(0, 2))
        }
        builder.flag(flag_key, variables=variables, variations=extra)
        made["flags"].append(flag_key)
        pool = ["off", "on", *extra]
        for exp_index in range(rng.randint(0, 2)):
            key = f"{flag_key}_test_{exp_index}"
            chosen = rng.sample(pool, rng.randint(1, len(pool)))
            split = None if rng.random() < 0.5 else [rng.choice([0, 1, 2.5, 7]) or 1 for _ in chosen]
            allowlist = {f"user-{rng.randint(0, KIT_USERS)}": rng.choice(chosen)} if rng.random() < 0.3 else None
            metrics = ["purchase"] if rng.random() < 0.5 else []
            builder.experiment(
                key,
                chosen,
                split=split,
                traffic=rng.choice([100, 100, 50, 33.33, 0]),
                audience=_audience_ref(rng, names),
                allowlist=allowlist,
                metrics=metrics,
                status="Running" if rng.random() < 0.85 else "Paused",
            )
            made["experiments"].append(key)
            made["events"] += metrics
        for rule_index in range(rng.randint(0, 3)):
            style = rng.random()
            options: dict[str, Any] = {}
            if style < 0.3:
                options["enabled"] = rng.random() < 0.7
            elif style < 0.6 and kinds:
                options["variables"] = {name: _variable_value(rng, kinds[name]) for name in list(kinds)[:2]}
            elif style < 0.8:
                options["variation"] = rng.choice(pool)
            builder.rollout(
                audience=_audience_ref(rng, names),
                percentage=rng.choice([100, 100, 50, 10, 0]),
                key=f"{flag_key}_rule_{rule_index}" if rng.random() < 0.5 else None,
                **options,
            )
        if rng.random() < 0.3:
            builder.everyone_else(variation=rng.choice(pool))
        if rng.random() < 0.2:
            builder.for_users({f"user-{rng.randint(0, KIT_USERS - 1)}": rng.choice(pool) for _ in range(2)})
            made["experiments"].append(f"{flag_key}_users")
    for index in range(rng.randint(0, 2)):
        key = f"legacy_{index}"
        builder.ab_test(
            key, ["a", "b", "c"][: rng.randint(1, 3)], audience=_audience_ref(rng, names), metrics=["purchase"]
        )
        made["experiments"].append(key)
        made["events"].append("purchase")
    if len(made["experiments"]) >= 2 and rng.random() < 0.5:
        members = rng.sample(made["experiments"], rng.randint(2, min(3, len(made["experiments"]))))
        builder.exclusion_group("group", members, split=[rng.choice([1, 2, 5]) for _ in members])
    made["events"] = sorted(set(made["events"]))
    return builder, made


def random_attributes(rng: random.Random) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if rng.random() < 0.7:
        attrs["plan"] = rng.choice(PLANS)
    if rng.random() < 0.7:
        attrs["age"] = rng.randint(10, 70)
    if rng.random() < 0.5:
        attrs["score"] = rng.random()
    if rng.random() < 0.5:
        attrs["beta"] = rng.random() < 0.5
    if rng.random() < 0.5:
        attrs["email"] = rng.choice(["a@acme.com", "b@example.org", "c@other.net"])
    if rng.random() < 0.5:
        attrs["app_version"] = rng.choice(["1.9", "2.0", "2.4.1", "3.0.0"])
    if rng.random() < 0.6:
        attrs["country"] = rng.choice(COUNTRIES)
    if rng.random() < 0.2:
        attrs["not_declared"] = "x"
    return attrs


def _view(decision: Any) -> tuple[Any, ...]:
    return (decision.flag_key, decision.enabled, decision.variation_key, decision.rule_key, decision.variables)


async def _compare(datafile: dict[str, Any], made: dict[str, list[str]], seed: int) -> int:
    """Run both SDKs on the datafile for generated users; returns how many results were compared."""
    official, _, official_events = make_official(copy.deepcopy(datafile))
    recorder = RecordingDispatcher()
    compared = 0
    mismatches: list[str] = []
    rng = random.Random(seed * 7919)
    try:
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=recorder, batch_size=1) as ours:
            for index in range(KIT_USERS):
                user_id = f"user-{index}"
                attrs = random_attributes(rng)
                theirs_user = official.create_user_context(user_id, dict(attrs))
                our_user = ours.create_user_context(user_id, dict(attrs))
                assert our_user is not None
                calls: list[tuple[str, Any, Any]] = []
                for flag in made["flags"]:
                    calls.append(
                        (f"decide({flag})", _view(theirs_user.decide(flag)), _view(await our_user.decide(flag)))
                    )
                    calls.append(
                        (
                            f"is_feature_enabled({flag})",
                            official.is_feature_enabled(flag, user_id, dict(attrs)),
                            await ours.is_feature_enabled(flag, user_id, dict(attrs)),
                        )
                    )
                for key in made["experiments"]:
                    calls.append(
                        (
                            f"activate({key})",
                            official.activate(key, user_id, dict(attrs)),
                            await ours.activate(key, user_id, dict(attrs)),
                        )
                    )
                for event in made["events"]:
                    tags = {"revenue": rng.randint(1, 5000)} if rng.random() < 0.5 else None
                    official.track(event, user_id, dict(attrs), tags)
                    await ours.track(event, user_id, dict(attrs), tags)
                await ours.flush()
                for label, expected, got in calls:
                    compared += 1
                    if not same(expected, got):
                        mismatches.append(f"{user_id} {attrs} {label}: official {short(expected)} != ours {short(got)}")
                expected_events = [scrub(event.params) for event in official_events.events]
                got_events = [scrub(dict(payload)) for payload in recorder.payloads]
                compared += len(expected_events)
                if expected_events != got_events:
                    mismatches.append(
                        f"{user_id} events: official {short(expected_events)} != ours {short(got_events)}"
                    )
                official_events.events.clear()
                recorder.clear()
    finally:
        official.close()
    assert not mismatches, f"seed {seed}:\n" + "\n".join(mismatches[:10])
    return compared


@pytest.mark.parametrize("seed", range(KIT_SEEDS))
async def test_built_datafiles_decide_like_the_official_sdk(seed: int) -> None:
    builder, made = random_builder(seed)
    assert await _compare(builder.build(), made, seed) > 0


async def test_the_generated_programs_cover_every_outcome() -> None:
    """The differential runs see enabled and disabled flags, A/B and delivery rules, the Everyone Else rule,
    allowlisted users, experiments that bucket nobody, and conversions with and without revenue."""
    seen: set[str] = set()
    for seed in range(KIT_SEEDS):
        builder, made = random_builder(seed)
        datafile = builder.build()
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
            rng = random.Random(seed * 7919)
            for index in range(KIT_USERS):
                user = client.create_user_context(f"user-{index}", random_attributes(rng))
                assert user is not None
                for flag in made["flags"]:
                    decision = await user.decide(flag)
                    seen.add("enabled" if decision.enabled else "disabled")
                    rule = decision.rule_key or ""
                    seen.add(
                        "everyone else"
                        if rule.startswith("default-rollout-")
                        else "test"
                        if "_test_" in rule
                        else "delivery"
                        if rule
                        else "no rule"
                    )
        seen.update(f"{e['status']}" for e in datafile["experiments"])
        seen.update("allowlist" for e in datafile["experiments"] if e["forcedVariations"])
        seen.update("zero traffic" for e in datafile["experiments"] if e["trafficAllocation"][-1]["endOfRange"] == 0)
        seen.update("group" for _ in datafile["groups"])
        seen.update("for_users" for e in datafile["experiments"] if e["key"].endswith("_users"))
    assert {
        "enabled",
        "disabled",
        "everyone else",
        "test",
        "delivery",
        "Running",
        "Paused",
        "allowlist",
        "zero traffic",
        "group",
        "for_users",
    } <= seen, seen


# ------------------------------------------------------------------------------------------------ builder


async def test_the_one_liner_from_the_docs() -> None:
    datafile = (
        DatafileBuilder()
        .flag("kit_flag", variables={"title": "Hello", "limit": 3})
        .rollout(enabled=True, variables={"title": "Welcome"})
        .build()
    )
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
        for user_id in ("alice", "bob", "carol"):
            user = client.create_user_context(user_id)
            assert user is not None
            decision = await user.decide("kit_flag")
            assert decision.enabled is True
            assert decision.variables == {"title": "Welcome", "limit": 3}
            assert decision.rule_key == "kit_flag_delivery_1"
            assert decision.variation_key == "kit_flag_delivery_1"


async def test_variable_types_follow_the_python_values() -> None:
    variables = {"s": "text", "i": 7, "f": 2.5, "b": True, "j": {"columns": [1, 2], "dark": False}}
    datafile = DatafileBuilder().flag("typed", variables=variables).rollout(enabled=True).build()
    declared = {
        v["key"]: (v["type"], v.get("subType"), v["defaultValue"]) for v in datafile["featureFlags"][0]["variables"]
    }
    assert declared == {
        "s": ("string", None, "text"),
        "i": ("integer", None, "7"),
        "f": ("double", None, "2.5"),
        "b": ("boolean", None, "true"),
        "j": ("string", "json", json.dumps(variables["j"])),
    }
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
        got = await client.get_all_feature_variables("typed", "u")
        assert got is not None and same(got, variables)
        assert await client.get_feature_variable_double("typed", "f", "u") == 2.5
        assert await client.get_feature_variable_json("typed", "j", "u") == variables["j"]


async def test_a_split_and_traffic_share_out_users_as_asked() -> None:
    datafile = (
        DatafileBuilder()
        .flag("shop", variables={"color": "grey"}, variations={"red": {"color": "red"}, "blue": {"color": "blue"}})
        .experiment("colors", ["red", "blue"], split={"red": 25, "blue": 75}, traffic=40)
        .build()
    )
    counts: dict[str | None, int] = {}
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
        for index in range(4000):
            variation = await client.get_variation("colors", f"visitor-{index}")
            counts[variation] = counts.get(variation, 0) + 1
    # 40 % take part, a quarter of them red: 10 % red, 30 % blue, 60 % none (binomial sd under 1 % here)
    assert abs(counts.get("red", 0) / 4000 - 0.10) < 0.025, counts
    assert abs(counts.get("blue", 0) / 4000 - 0.30) < 0.035, counts
    assert abs(counts.get(None, 0) / 4000 - 0.60) < 0.04, counts
    allocation = datafile["experiments"][0]["trafficAllocation"]
    assert [entry["endOfRange"] for entry in allocation] == [1000, 4000]


async def test_audiences_with_every_match_type() -> None:
    builder = (
        DatafileBuilder()
        .audience("adult", age=("ge", 18))
        .audience("acme", email=("substring", "@acme.com"))
        .audience("modern", app_version=("semver_ge", "2.1"))
        .audience("located", {"geo-country": ("exists",)})
        .audience("premium", plan="premium", beta=True)
        .audience("either", ["or", {"name": "score", "type": "custom_attribute", "match": "lt", "value": 0.5}])
    )
    for name in ("adult", "acme", "modern", "located", "premium", "either"):
        builder.flag(f"for_{name}").rollout(audience=name)
    builder.flag("combined").rollout(audience=["and", "adult", ["not", "premium"]])
    builder.flag("any_of").rollout(audience=["acme", "modern"])
    cases = [
        ({"age": 18}, {"for_adult"}),  # "premium" is UNKNOWN without plan and beta, so its NOT is UNKNOWN too
        ({"age": 17}, set()),
        ({"email": "x@acme.com", "app_version": "2.0.9"}, {"for_acme", "any_of"}),
        ({"app_version": "2.10.0"}, {"for_modern", "any_of"}),
        ({"geo-country": "FR"}, {"for_located"}),
        ({"plan": "premium", "beta": True, "age": 40}, {"for_premium", "for_adult"}),
        ({"plan": "premium", "beta": False, "age": 40}, {"for_adult", "combined"}),
        ({"score": 0.25}, {"for_either"}),
    ]
    datafile = builder.build()
    assert {a["key"] for a in datafile["attributes"]} == {
        "age",
        "email",
        "app_version",
        "geo-country",
        "plan",
        "beta",
        "score",
    }
    official, _, _ = make_official(datafile)
    try:
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
            for attrs, expected in cases:
                ours = set(await client.get_enabled_features("u", attrs))
                assert ours == expected, (attrs, ours)
                assert set(official.get_enabled_features("u", attrs)) == expected, attrs
    finally:
        official.close()


async def test_an_allowlist_and_a_paused_test() -> None:
    datafile = (
        DatafileBuilder()
        .flag("checkout", variations={"fast": {}})
        .experiment("paused", ["fast"], status="Paused")
        .experiment("ab", ["off", "fast"], traffic=0, allowlist={"qa": "fast"})
        .build()
    )
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
        qa = client.create_user_context("qa")
        other = client.create_user_context("someone")
        assert qa is not None and other is not None
        assert (await qa.decide("checkout")).variation_key == "fast"
        assert (await qa.decide("checkout")).rule_key == "ab"
        assert (await other.decide("checkout")).variation_key == "off"  # traffic 0: Everyone Else serves off
        assert await client.get_variation("paused", "qa") is None


async def test_for_users_serves_single_users_first() -> None:
    datafile = (
        DatafileBuilder()
        .flag("beta", variables={"label": "plain"}, variations={"shiny": {"label": "shiny"}})
        .rollout(enabled=False)
        .for_users({"alice": "shiny", "bob": "on"})
        .build()
    )
    official, _, _ = make_official(datafile)
    try:
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
            for user_id, expected in (
                ("alice", ("shiny", "shiny")),
                ("bob", ("on", "plain")),
                ("carol", ("off", "plain")),
            ):
                user = client.create_user_context(user_id)
                assert user is not None
                decision = await user.decide("beta")
                assert (decision.variation_key, decision.variables["label"]) == expected, user_id
                assert _view(decision) == _view(official.create_user_context(user_id).decide("beta"))
    finally:
        official.close()
    assert datafile["featureFlags"][0]["experimentIds"] == [datafile["experiments"][0]["id"]]


async def test_an_exclusion_group_keeps_users_in_one_experiment() -> None:
    datafile = (
        DatafileBuilder()
        .flag("hero")
        .experiment("hero_test", ["off", "on"])
        .flag("banner")
        .experiment("banner_test", ["off", "on"])
        .ab_test("pricing")
        .exclusion_group("surface", ["hero_test", "banner_test", "pricing"], split=[1, 1, 2])
        .build()
    )
    assert [e["key"] for e in datafile["groups"][0]["experiments"]] == ["hero_test", "banner_test", "pricing"]
    assert datafile["experiments"] == []
    counts = {"hero_test": 0, "banner_test": 0, "pricing": 0}
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
        for index in range(2000):
            got = [key for key in counts if await client.get_variation(key, f"u{index}") is not None]
            assert len(got) == 1, got  # everyone is in exactly one: the group takes all traffic
            counts[got[0]] += 1
    assert abs(counts["pricing"] / 2000 - 0.5) < 0.05 and abs(counts["hero_test"] / 2000 - 0.25) < 0.05, counts


def test_ids_follow_keys_and_revisions_count_builds() -> None:
    one = DatafileBuilder().flag("a", variables={"x": 1}).experiment("t", ["on", "off"])
    first = one.build()
    two = DatafileBuilder().flag("zzz").rollout().flag("a", variables={"x": 1}).experiment("t", ["on", "off"])
    second = two.build()
    rule = {e["key"]: e for e in second["experiments"]}["t"]
    assert rule == first["experiments"][0]  # another flag before it changes nothing (bucketing depends on ids)
    assert (first["revision"], one.build()["revision"], one.build()["revision"]) == ("1", "2", "3")
    assert DatafileBuilder(revision="42").build()["revision"] == "42"
    rules = [rule for rollout in second["rollouts"] for rule in rollout["experiments"]]
    ids = [x["id"] for x in [*second["featureFlags"], *second["experiments"], *second["rollouts"], *rules]]
    ids += [v["id"] for f in second["featureFlags"] for v in f["variables"]]
    assert len(ids) == len(set(ids))  # unique across kinds
    assert json.loads(one.build_json())["featureFlags"] == first["featureFlags"]


def test_the_datafile_has_the_cdn_shape() -> None:
    datafile = (
        DatafileBuilder()
        .audience("beta", beta=True)
        .flag("f", variables={"n": 1})
        .rollout(audience="beta", percentage=50)
        .build()
    )
    assert datafile["version"] == "4"
    audiences = {a["id"]: a for a in datafile["audiences"]}
    typed = datafile["typedAudiences"][0]
    assert "$opt_dummy_audience" in audiences and audiences[typed["id"]]["name"] == "beta"
    assert typed["conditions"] == [
        "and",
        ["or", ["or", {"match": "exact", "name": "beta", "type": "custom_attribute", "value": True}]],
    ]
    flag = datafile["featureFlags"][0]
    rollout = datafile["rollouts"][0]
    assert flag["rolloutId"] == rollout["id"] and rollout["id"].startswith(f"rollout-{flag['id']}-")
    delivery, everyone = rollout["experiments"]
    assert everyone["key"] == everyone["id"] == f"default-{rollout['id']}"
    assert everyone["variations"][0]["key"] == "off" and everyone["variations"][0]["featureEnabled"] is False
    assert delivery["audienceConditions"] == ["or", typed["id"]] and delivery["audienceIds"] == [typed["id"]]
    assert delivery["trafficAllocation"] == [{"entityId": delivery["variations"][0]["id"], "endOfRange": 5000}]
    assert {d["layerId"] for d in rollout["experiments"]} == {rollout["id"]}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda b: b.rollout(), "call flag(key) first"),
        (lambda b: b.flag("f").flag("f"), "defined twice"),
        (lambda b: b.flag("f", variables={"n": [1]}), "no datafile type"),
        (lambda b: b.flag("f", variables={"n": 1}).rollout(variables={"n": "one"}), "not a integer"),
        (lambda b: b.flag("f", variables={"n": 1}).rollout(variables={"m": 2}), "no variable 'm'"),
        (lambda b: b.flag("f", variables={"n": 1}).rollout(enabled=False, variables={"n": 2}), "is disabled"),
        (lambda b: b.flag("f").rollout(variation="nope"), "no variation 'nope'"),
        (lambda b: b.flag("f").rollout(percentage=101), "percentage"),
        (lambda b: b.flag("f").experiment("t", ["on"], split=[1, 2]), "2 weights for 1"),
        (lambda b: b.flag("f").experiment("t", ["on"], allowlist={"u": "off"}), "unknown 'off'"),
        (lambda b: b.flag("f").rollout(audience="ghost").build(), "audience 'ghost'"),
        (lambda b: b.audience("a", age=("older", 3)), "must start with one of"),
        (lambda b: b.audience("a"), "no conditions"),
        (lambda b: b.flag("f", variables={"x": float("nan")}), "finite"),
        (lambda b: b.flag("f").for_users({"u": "nope"}), "known variations ['nope']"),
        (lambda b: b.flag("f").for_users({"u": "on"}).for_users({"v": "on"}), "once"),
        (lambda b: b.ab_test("a").exclusion_group("g", ["a", "b"]).build(), "experiment 'b' is not defined"),
        (lambda b: b.ab_test("a").exclusion_group("g", ["a"]).exclusion_group("h", ["a"]).build(), "another group"),
        (
            lambda b: b.flag("f").experiment("a").flag("g").experiment("a").exclusion_group("x", ["a"]).build(),
            "several",
        ),
    ],
)
def test_mistakes_raise_a_clear_configuration_error(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        build(DatafileBuilder())


# ------------------------------------------------------------------------------------------- dispatcher


async def test_the_recording_dispatcher_reads_back_impressions_and_conversions() -> None:
    datafile = (
        DatafileBuilder()
        .audience("pro", plan="pro")
        .flag("banner", variables={"text": "Hi"})
        .rollout(enabled=True, audience="pro")
        .event("purchase")
        .build()
    )
    recorder = RecordingDispatcher()
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=recorder, batch_size=10) as client:
        user = client.create_user_context("alice", {"plan": "pro", "secret": "not declared"})
        assert user is not None
        await user.decide("banner")
        await user.track_event("purchase", {"revenue": 1299, "value": 2.5, "sku": "A1"})
        await client.flush()
    assert len(recorder.requests) == 1 and recorder.requests[0].event_count == 2
    (impression,) = recorder.impressions
    assert (impression.user_id, impression.flag_key, impression.rule_key, impression.variation_key) == (
        "alice",
        "banner",
        "banner_delivery_1",
        "on",
    )
    assert impression.enabled is True and impression.rule_type == "rollout"
    assert impression.attributes == {"plan": "pro", "$opt_bot_filtering": False}  # only declared attributes go
    (conversion,) = recorder.conversions
    assert (conversion.key, conversion.revenue, conversion.value) == ("purchase", 1299, 2.5)
    assert conversion.tags == {"revenue": 1299, "value": 2.5, "sku": "A1"}
    assert [e.kind for e in recorder.events] == ["impression", "conversion"]
    assert json.loads(recorder.requests[0].body) == recorder.payloads[0]
    recorder.clear()
    assert recorder.requests == [] and recorder.events == []


async def test_the_recording_dispatcher_can_answer_with_failures() -> None:
    datafile = DatafileBuilder().event("purchase").build()
    answers = iter([DispatchResult(delivered=False, retryable=True, status=503, reason="http_503")])

    def respond(request: Any) -> DispatchResult:
        return next(answers, DispatchResult(delivered=True, status=204))

    recorder = RecordingDispatcher(respond)
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=recorder) as client:
        await client.track("purchase", "bob")
        await client.flush()
        stats = client.stats()
    assert len(recorder.requests) == 2  # the failed attempt and the retry, both recorded
    assert stats.delivered == 1 and stats.retries == 1
    assert [e.user_id for e in recorder.conversions] == ["bob", "bob"]


async def test_update_datafile_steers_a_running_client() -> None:
    base = DatafileBuilder().flag("new_checkout", variables={"headline": "Classic"})
    recorder = RecordingDispatcher()
    updates: list[str] = []
    async with AsyncOptimizely(datafile=base.build(), event_dispatcher=recorder) as client:
        client.notification_center.add_notification_listener(
            NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: updates.append("u")
        )
        assert await client.is_feature_enabled("new_checkout", "alice") is False
        await update_datafile(client, base.rollout(enabled=True, variables={"headline": "Fast"}).build())
        assert await client.is_feature_enabled("new_checkout", "alice") is True
        assert await client.get_feature_variable_string("new_checkout", "headline", "alice") == "Fast"
        assert client.config is not None and client.config.revision == "2"
        with pytest.raises(Exception, match="datafile"):
            await update_datafile(client, '{"version": "4"}')
        assert client.config.revision == "2"  # a bad datafile leaves the running one in place
        with pytest.raises(ConfigurationError, match="takes an AsyncOptimizely client"):
            await update_datafile(object(), base.build())  # type: ignore[arg-type]
    assert updates == ["u"]


def test_the_pytest_example_runs() -> None:
    """``examples/test_with_the_kit.py`` is a user's test module: it passes under pytest, on both backends."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_with_the_kit.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=EXAMPLES,
        env={**os.environ, "PYTHONPATH": str(Path(optimizely_async.__file__).resolve().parents[1])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout, result.stdout
