"""Differential test of sticky bucketing: the same user profile service behind both SDKs.

A dict-backed user profile service (and, for ours, the same service with ``async def lookup/save``) is
pre-seeded with profiles of every shape: valid stored variations, variation ids missing from the datafile or
belonging to another experiment, entries without a variation id, unknown experiment ids, profiles missing
keys, garbage, a foreign ``user_id``, extra keys. Some lookups and saves raise. Then every user is decided
three times: with their attributes, with attributes that no longer match (stored variations must stick),
and with their attributes again. Decisions, DECISION notifications, the sequence of saved profiles and the
final store must be identical; a separate test also compares the lookups.

Environment: UPS_SEEDS (default 20) datafiles per UPS flavour on asyncio, UPS_TRIO_SEEDS (default 3).
"""

from __future__ import annotations

import collections
import copy
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import anyio.lowlevel
import pytest

import datagen
from differential import Pair, make_official, make_ours, same, short

UPS_SEEDS = int(os.environ.get("UPS_SEEDS", "20"))
UPS_TRIO_SEEDS = int(os.environ.get("UPS_TRIO_SEEDS", "3"))
UPS_USERS = 8
MISSING_VARIATION_ID = "999999999"
TOTALS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_totals() -> Iterator[None]:
    started = time.perf_counter()
    yield
    if TOTALS:
        print(
            f"\ndifferential UPS: {TOTALS['scenarios']} scenarios, {TOTALS['calls']} calls and "
            f"{TOTALS['saves']} saved profiles compared, {time.perf_counter() - started:.1f}s"
        )


class DictUPS:
    """A dict-backed user profile service that records every call; some users' lookups or saves fail."""

    def __init__(
        self,
        profiles: dict[str, Any],
        failing_lookups: frozenset[str] = frozenset(),
        failing_saves: frozenset[str] = frozenset(),
    ) -> None:
        self.profiles: dict[Any, Any] = copy.deepcopy(profiles)
        self.failing_lookups = failing_lookups
        self.failing_saves = failing_saves
        self.lookups: list[Any] = []
        self.saves: list[Any] = []

    def lookup(self, user_id: str) -> Any:
        self.lookups.append(user_id)
        if user_id in self.failing_lookups:
            raise RuntimeError("profile store unavailable")
        return copy.deepcopy(self.profiles.get(user_id))

    def save(self, user_profile: Any) -> None:
        self.saves.append(copy.deepcopy(user_profile))
        user_id = user_profile.get("user_id") if isinstance(user_profile, dict) else None
        if user_id in self.failing_saves:
            raise RuntimeError("profile store read-only")
        self.profiles[user_id] = copy.deepcopy(user_profile)


class AsyncDictUPS(DictUPS):
    """The same store behind coroutine methods (ours only: the official SDK cannot await)."""

    async def lookup(self, user_id: str) -> Any:  # type: ignore[override,unused-ignore]
        await anyio.lowlevel.checkpoint()
        return DictUPS.lookup(self, user_id)

    async def save(self, user_profile: Any) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        DictUPS.save(self, user_profile)


def _stored_entry(rng: random.Random, experiments: list[dict[str, Any]], experiment: dict[str, Any]) -> Any:
    roll = rng.random()
    if roll < 0.6 and experiment["variations"]:
        return {"variation_id": rng.choice(experiment["variations"])["id"]}
    if roll < 0.75:
        return {"variation_id": MISSING_VARIATION_ID}
    if roll < 0.85:
        other = rng.choice(experiments)
        return {"variation_id": other["variations"][0]["id"] if other["variations"] else MISSING_VARIATION_ID}
    if roll < 0.92:
        return {}
    return {"variation_id": None}


def seeded_profiles(rng: random.Random, datafile: dict[str, Any], user_ids: list[str]) -> dict[str, Any]:
    experiments = datagen.all_experiments(datafile)
    profiles: dict[str, Any] = {}
    for user_id in user_ids:
        roll = rng.random()
        if roll < 0.3 or not experiments:
            continue
        bucket_map: dict[str, Any] = {}
        for experiment in rng.sample(experiments, k=min(len(experiments), rng.randint(1, 4))):
            bucket_map[experiment["id"]] = _stored_entry(rng, experiments, experiment)
        if rng.random() < 0.1:
            bucket_map["123"] = {"variation_id": "456"}  # an experiment that is not in the datafile
        profile: Any = {"user_id": user_id, "experiment_bucket_map": bucket_map}
        if roll < 0.35:
            profile = {"user_id": user_id}
        elif roll < 0.4:
            profile = {"experiment_bucket_map": bucket_map}
        elif roll < 0.42:
            profile = {}
        elif roll < 0.45:
            profile = rng.choice(["garbage", 42, []])
        elif roll < 0.48:
            profile["user_id"] = "someone_else"
        elif roll < 0.52:
            profile["experiment_bucket_map"] = None
        elif roll < 0.6:
            profile["extra"] = {"kept": False}
        profiles[user_id] = profile
    return profiles


async def run_ups_seed(seed: int, flavour: str, check_lookups: bool) -> None:
    rng = random.Random(seed * 104729 + 3)
    datafile = datagen.generate_datafile(seed, version=rng.choice(["4", "4", "3"]))
    users = datagen.generate_users(seed, datafile, UPS_USERS)
    user_ids = sorted({u.user_id for u in users})
    profiles = seeded_profiles(rng, datafile, user_ids)
    failing_lookups = frozenset(u for u in user_ids if rng.random() < 0.1)
    failing_saves = frozenset(u for u in user_ids if rng.random() < 0.1)

    official_ups = DictUPS(profiles, failing_lookups, failing_saves)
    our_ups = (AsyncDictUPS if flavour == "async" else DictUPS)(profiles, failing_lookups, failing_saves)
    official, official_notes, _ = make_official(datafile, user_profile_service=official_ups)
    ours, our_notes, _ = make_ours(copy.deepcopy(datafile), our_ups)
    pair = Pair(official, ours, official_notes, our_notes, f"seed {seed}, {flavour} UPS")

    def compare_store(label: str) -> None:
        n = len(official_ups.saves)
        if not same(official_ups.saves, our_ups.saves):
            pair.mismatch(
                f"{label}: saved profiles differ: official {short(official_ups.saves[-3:], 800)} / "
                f"ours {short(our_ups.saves[-3:], 800)} ({n} vs {len(our_ups.saves)} saves)"
            )
            our_ups.saves[:] = copy.deepcopy(official_ups.saves)  # report each divergence once
        if check_lookups and official_ups.lookups != our_ups.lookups:
            pair.mismatch(
                f"{label}: lookups differ: official {short(official_ups.lookups[-5:])} "
                f"({len(official_ups.lookups)}) / ours {short(our_ups.lookups[-5:])} ({len(our_ups.lookups)})"
            )
            our_ups.lookups[:] = list(official_ups.lookups)

    pair.after_call.append(compare_store)
    experiment_keys = datagen.experiment_keys(datafile)
    flags = [f["key"] for f in datafile.get("featureFlags", [])]
    variables = list(datagen.flag_variables(datafile))
    try:
        async with ours:
            # forced variations are never saved
            for user_id in rng.sample(user_ids, k=min(2, len(user_ids))):
                experiment = rng.choice(datagen.all_experiments(datafile))
                if experiment["variations"]:
                    variation = rng.choice(experiment["variations"])["key"]
                    await pair.call("set_forced_variation", experiment["key"], user_id, variation)
            for round_no in range(3):
                for index, user in enumerate(users):
                    pair.context = f"seed {seed}, {flavour} UPS, round {round_no}, user #{index} {user.user_id!r}"
                    attributes = user.attributes
                    if round_no == 1:  # the audience stops matching: stored decisions must stick
                        attributes = rng.choice([None, {}, users[(index + 1) % len(users)].attributes])
                    for key in experiment_keys:
                        await pair.call("get_variation", key, user.user_id, attributes)
                    for flag in flags:
                        await pair.call("is_feature_enabled", flag, user.user_id, attributes)
                    if experiment_keys:
                        await pair.call("activate", rng.choice(experiment_keys), user.user_id, attributes)
                    for flag, variable, _ in rng.sample(variables, k=min(2, len(variables))):
                        await pair.call("get_feature_variable", flag, variable, user.user_id, attributes)
                    if flags and rng.random() < 0.3:
                        await pair.call("get_all_feature_variables", rng.choice(flags), user.user_id, attributes)
                    if rng.random() < 0.3:
                        await pair.call("get_enabled_features", user.user_id, attributes)
    finally:
        official.close()
    TOTALS.update(scenarios=1, calls=pair.calls, saves=len(official_ups.saves))
    if not same(official_ups.profiles, our_ups.profiles):
        pair.mismatch(
            f"final stores differ: official {short(official_ups.profiles, 800)} / ours {short(our_ups.profiles, 800)}"
        )
    pair.raise_if_any()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("seed", range(UPS_SEEDS))
@pytest.mark.anyio
async def test_ups_decisions_and_saves_match_official(seed: int, flavour: str) -> None:
    await run_ups_seed(seed, flavour, check_lookups=False)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("seed", range(UPS_TRIO_SEEDS))
@pytest.mark.anyio
async def test_ups_decisions_and_saves_match_official_on_trio(seed: int) -> None:
    await run_ups_seed(5_000 + seed, "async", check_lookups=False)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("seed", range(min(UPS_SEEDS, 10)))
@pytest.mark.anyio
async def test_ups_lookups_match_official(seed: int) -> None:
    """Stricter: ours looks profiles up exactly when (and as often as) the official SDK does."""
    await run_ups_seed(seed, "sync", check_lookups=True)


def test_ups_scenarios_exercise_sticky_paths() -> None:
    """Measured on the official SDK alone: the scenarios reach the sticky-bucketing paths."""
    counts = {"stored decision returned": 0, "stored id missing from datafile": 0, "sticky after audience": 0}
    logger = logging.getLogger("tests.ups.coverage")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Found a stored decision."):
                counts["stored decision returned"] += 1
            if message == f'Variation ID "{MISSING_VARIATION_ID}" is not in datafile.':
                counts["stored id missing from datafile"] += 1

    logger.handlers[:] = [Counter()]
    for seed in range(UPS_SEEDS):
        rng = random.Random(seed * 104729 + 3)
        datafile = datagen.generate_datafile(seed, version=rng.choice(["4", "4", "3"]))
        users = datagen.generate_users(seed, datafile, UPS_USERS)
        ups = DictUPS({})
        with_ups: Any = make_official(datafile, user_profile_service=ups, logger=logger)[0]
        without_ups: Any = make_official(datafile)[0]
        ups.profiles = seeded_profiles(rng, datafile, sorted({u.user_id for u in users}))
        for user in users:
            for key in datagen.experiment_keys(datafile):
                with_ups.get_variation(key, user.user_id, user.attributes)
        for user in users:
            for key in datagen.experiment_keys(datafile):
                sticky = with_ups.get_variation(key, user.user_id, {})
                fresh = without_ups.get_variation(key, user.user_id, {})
                if sticky is not None and fresh is None:
                    counts["sticky after audience"] += 1
        with_ups.close()
        without_ups.close()
    print("\nUPS path coverage:", counts)
    assert all(counts.values()), counts
