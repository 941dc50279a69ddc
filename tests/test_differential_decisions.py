"""Differential test of the decision APIs: our AsyncOptimizely against the official SDK, side by side.

For each seed: one generated datafile (tests/datagen.py), the official client on ``json.dumps`` of it and
ours on the dict, then for every generated user the same calls on both (get_variation for every experiment
key and unknown keys, activate, is_feature_enabled, get_enabled_features, get_all_feature_variables,
get_feature_variable and every typed getter incl. type mismatches), forced variations set and read the same
way on both, and bad inputs. Results and DECISION notifications must be identical.

The holdout tests run the same calls over v4 datafiles with global and local holdouts and typed rules
(``datagen.generate_datafile(holdouts=True, rule_types=True)``), in chunks of seeds that must each reach a
holdout through every legacy flag method: ``is_feature_enabled`` ("feature"), the variable getters
("feature-variable") and ``get_all_feature_variables`` ("all-feature-variables"), whose DECISION
``source_info`` the official 5.7 SDK fills for a holdout as for a feature test.

Environment: DIFF_SEEDS (default 150) datafiles on asyncio, DIFF_USERS (default 12) users per datafile,
DIFF_TRIO_SEEDS (default 4) of them again on trio; DIFF_HOLDOUT_CHUNKS (default 4) chunks of
DIFF_HOLDOUT_CHUNK (default 4) holdout datafiles on asyncio, one more chunk on trio. Run with ``-s`` to see the
totals compared.
"""

from __future__ import annotations

import collections
import copy
import inspect
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from optimizely.helpers import enums as official_enums

import datagen
from differential import Pair, make_official, make_ours

DIFF_SEEDS = int(os.environ.get("DIFF_SEEDS", "150"))
DIFF_USERS = int(os.environ.get("DIFF_USERS", "12"))
DIFF_TRIO_SEEDS = int(os.environ.get("DIFF_TRIO_SEEDS", "4"))
DIFF_HOLDOUT_CHUNKS = int(os.environ.get("DIFF_HOLDOUT_CHUNKS", "4"))
DIFF_HOLDOUT_CHUNK = int(os.environ.get("DIFF_HOLDOUT_CHUNK", "4"))
#: The DECISION notification types of the legacy flag methods, which must each meet a holdout in every chunk.
HOLDOUT_FLAG_TYPES = ("feature", "feature-variable", "all-feature-variables")

TYPED_GETTERS = {
    "boolean": "get_feature_variable_boolean",
    "double": "get_feature_variable_double",
    "integer": "get_feature_variable_integer",
    "string": "get_feature_variable_string",
    "json": "get_feature_variable_json",
}
UNKNOWN_EXPERIMENT = "no_such_experiment"
UNKNOWN_FLAG = "no_such_flag"

TOTALS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_totals() -> Iterator[None]:
    started = time.perf_counter()
    yield
    if TOTALS:
        print(
            f"\ndifferential decisions: {TOTALS['datafiles']} datafiles, {TOTALS['users']} users, "
            f"{TOTALS['calls']} calls compared, {TOTALS['notifications']} DECISION notifications compared "
            f"({TOTALS['holdout_notifications']} of them from a holdout), {time.perf_counter() - started:.1f}s"
        )


class AttrDict(dict):  # type: ignore[type-arg]
    """A dict subclass: the official SDK rejects attributes whose type is not exactly dict."""


class NotADict(collections.UserDict):  # type: ignore[type-arg]
    pass


# ------------------------------------------------------------------------------------------------ phases


async def _forced_variation_phase(
    pair: Pair, rng: random.Random, datafile: dict[str, Any], users: list[datagen.User]
) -> None:
    experiments = datagen.all_experiments(datafile)
    if not experiments:
        return
    user_ids = sorted({u.user_id for u in users})
    forced_users = rng.sample(user_ids, k=max(1, len(user_ids) // 3))
    for user_id in forced_users:
        touched: list[str] = []
        for _ in range(rng.randint(1, 3)):
            experiment = rng.choice(experiments)
            roll = rng.random()
            variation_key: Any
            if roll < 0.7 and experiment["variations"]:
                variation_key = rng.choice(experiment["variations"])["key"]
            elif roll < 0.8:
                other = rng.choice(experiments)
                variation_key = other["variations"][0]["key"] if other["variations"] else "none"
            else:
                variation_key = rng.choice(["", None, "no_such_variation", 123])
            await pair.call("set_forced_variation", experiment["key"], user_id, variation_key)
            touched.append(experiment["key"])
        if rng.random() < 0.3:  # set then clear
            await pair.call("set_forced_variation", touched[0], user_id, None)
        for key in touched:
            await pair.call("get_forced_variation", key, user_id)
        await pair.call("get_forced_variation", UNKNOWN_EXPERIMENT, user_id)
    # invalid experiment keys and user ids
    some = experiments[0]
    some_variation = some["variations"][0]["key"] if some["variations"] else "x"
    for bad_key in ("", None, 42, UNKNOWN_EXPERIMENT):
        await pair.call("set_forced_variation", bad_key, "u", some_variation)
        await pair.call("get_forced_variation", bad_key, "u")
    for bad_user in (None, 42):
        await pair.call("set_forced_variation", some["key"], bad_user, some_variation)
        await pair.call("get_forced_variation", some["key"], bad_user)
    await pair.call("set_forced_variation", some["key"], "never_forced", None)  # nothing to clear


async def _decide_everything(
    pair: Pair, rng: random.Random, datafile: dict[str, Any], user_id: Any, attributes: Any
) -> None:
    experiment_keys = [*datagen.experiment_keys(datafile), UNKNOWN_EXPERIMENT]
    flags = [f["key"] for f in datafile.get("featureFlags", [])]
    for key in experiment_keys:
        await pair.call("get_variation", key, user_id, attributes)
    for key in rng.sample(experiment_keys, k=min(2, len(experiment_keys))):
        await pair.call("activate", key, user_id, attributes)
    for flag in [*flags, UNKNOWN_FLAG]:
        await pair.call("is_feature_enabled", flag, user_id, attributes)
    await pair.call("get_enabled_features", user_id, attributes)
    for flag in [*flags, UNKNOWN_FLAG]:
        await pair.call("get_all_feature_variables", flag, user_id, attributes)
    for flag, variable, variable_type in datagen.flag_variables(datafile):
        await pair.call("get_feature_variable", flag, variable, user_id, attributes)
        await pair.call(TYPED_GETTERS[variable_type], flag, variable, user_id, attributes)
        other = rng.choice([t for t in TYPED_GETTERS if t != variable_type])
        await pair.call(TYPED_GETTERS[other], flag, variable, user_id, attributes)
    if flags:
        flag = rng.choice(flags)
        await pair.call("get_feature_variable", flag, "no_such_variable", user_id, attributes)
        await pair.call("get_feature_variable_string", UNKNOWN_FLAG, "no_such_variable", user_id, attributes)


def _bad_attributes() -> list[Any]:
    return [
        ["a"],
        "attributes",
        AttrDict(browser="chrome"),
        collections.OrderedDict(browser="chrome"),
        collections.defaultdict(int, {"age": 3}),
        NotADict({"browser": "chrome"}),
        1,
        True,
        # falsy non-dicts pass the official check and count as no attributes
        [],
        "",
        0,
        False,
        AttrDict(),
        collections.OrderedDict(),
        NotADict(),
    ]


async def _bad_input_phase(pair: Pair, datafile: dict[str, Any]) -> None:
    experiment_keys = datagen.experiment_keys(datafile)
    experiment = experiment_keys[0] if experiment_keys else UNKNOWN_EXPERIMENT
    flags = [f["key"] for f in datafile.get("featureFlags", [])]
    flag = flags[0] if flags else UNKNOWN_FLAG
    variables = [(f, v, t) for f, v, t in datagen.flag_variables(datafile)]
    variable = variables[0] if variables else (flag, "no_such_variable", "string")

    async def everything(user_id: Any, attributes: Any) -> None:
        await pair.call("get_variation", experiment, user_id, attributes)
        await pair.call("activate", experiment, user_id, attributes)
        await pair.call("is_feature_enabled", flag, user_id, attributes)
        await pair.call("get_enabled_features", user_id, attributes)
        await pair.call("get_all_feature_variables", flag, user_id, attributes)
        await pair.call("get_feature_variable", variable[0], variable[1], user_id, attributes)
        await pair.call(TYPED_GETTERS[variable[2]], variable[0], variable[1], user_id, attributes)

    for bad_user in (None, 42, 4.5, b"user", ["user"]):
        await everything(bad_user, {"browser": "chrome"})
    for bad_attributes in _bad_attributes():
        await everything("bad_attributes_user", bad_attributes)
    await everything("", None)
    for bad_key in ("", None, 42):
        await pair.call("get_variation", bad_key, "u", None)
        await pair.call("activate", bad_key, "u", None)
        await pair.call("is_feature_enabled", bad_key, "u", None)
        await pair.call("get_all_feature_variables", bad_key, "u", None)
        await pair.call("get_feature_variable", bad_key, variable[1], "u", None)
        await pair.call("get_feature_variable", flag, bad_key, "u", None)
        await pair.call("get_feature_variable_integer", flag, bad_key, "u", None)


# ------------------------------------------------------------------------------------------------ driver


async def run_seed(seed: int, n_users: int, *, holdouts: bool = False) -> collections.Counter[str]:
    """Compare everything for one datafile; returns how many DECISION notifications of each type came from a
    holdout (``source == "holdout"``)."""
    rng = random.Random(seed * 7919 + 1)
    if holdouts:
        datafile = datagen.generate_datafile(seed, version="4", holdouts=True, rule_types=True)
    else:
        datafile = datagen.generate_datafile(seed)
    users = datagen.generate_users(seed, datafile, n_users)
    official, official_notes, _ = make_official(datafile)
    from_holdouts: collections.Counter[str] = collections.Counter()

    def count_holdouts(kind: Any, user_id: Any, attributes: Any, info: Any) -> None:
        if isinstance(info, dict) and info.get("source") == "holdout":
            from_holdouts[kind] += 1

    official.notification_center.add_notification_listener(official_enums.NotificationTypes.DECISION, count_holdouts)
    ours_datafile = copy.deepcopy(datafile)
    ours, our_notes, _ = make_ours(ours_datafile)
    pair = Pair(official, ours, official_notes, our_notes, f"seed {seed}, datafile v{datafile['version']}")
    try:
        async with ours:
            await _forced_variation_phase(pair, rng, datafile, users)
            for user in users:
                pair.context = f"seed {seed}, user {user.user_id!r}, attributes {user.attributes!r}"
                await _decide_everything(pair, rng, datafile, user.user_id, user.attributes)
            pair.context = f"seed {seed}, bad inputs"
            await _bad_input_phase(pair, datafile)
    finally:
        official.close()
    if ours_datafile != datafile:
        pair.mismatch("our client mutated the datafile dict it was given")
    TOTALS.update(
        datafiles=1,
        users=len(users),
        calls=pair.calls,
        notifications=pair.notifications,
        holdout_notifications=sum(from_holdouts.values()),
    )
    pair.raise_if_any()
    return from_holdouts


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("seed", range(DIFF_SEEDS))
@pytest.mark.anyio
async def test_decisions_match_official(seed: int) -> None:
    await run_seed(seed, DIFF_USERS)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("seed", range(DIFF_TRIO_SEEDS))
@pytest.mark.anyio
async def test_decisions_match_official_on_trio(seed: int) -> None:
    await run_seed(10_000 + seed, DIFF_USERS)


async def run_holdout_chunk(first_seed: int) -> None:
    from_holdouts: collections.Counter[str] = collections.Counter()
    for seed in range(first_seed, first_seed + DIFF_HOLDOUT_CHUNK):
        from_holdouts += await run_seed(seed, DIFF_USERS, holdouts=True)
    missing = [kind for kind in HOLDOUT_FLAG_TYPES if not from_holdouts[kind]]
    assert not missing, (
        f"seeds {first_seed}..{first_seed + DIFF_HOLDOUT_CHUNK - 1}: no holdout decision for {missing} "
        f"(holdout DECISIONs seen: {dict(from_holdouts)}): the chunk does not test what it is for"
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("chunk", range(DIFF_HOLDOUT_CHUNKS))
@pytest.mark.anyio
async def test_decisions_match_official_under_holdouts(chunk: int) -> None:
    """Every legacy decision method over datafiles with holdouts: results and DECISION notifications
    (``source`` "holdout" and its ``source_info``) as the official SDK's."""
    await run_holdout_chunk(20_000 + chunk * DIFF_HOLDOUT_CHUNK)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_decisions_match_official_under_holdouts_on_trio() -> None:
    await run_holdout_chunk(30_000)


# ------------------------------------------------------------------------------------------------ hazards


def _sane(method: str, value: Any, case: datagen.HazardCase) -> bool:
    variation_keys = {v["key"] for e in datagen.all_experiments(case.datafile) for v in e["variations"]}
    if method in ("get_variation", "activate"):
        return value is None or value in variation_keys
    if method == "is_feature_enabled":
        return isinstance(value, bool)
    if method == "get_enabled_features":
        return isinstance(value, list) and all(isinstance(k, str) for k in value)
    if method == "get_all_feature_variables":
        return isinstance(value, dict)
    raise AssertionError(method)


@pytest.mark.parametrize("case", datagen.hazard_cases(), ids=lambda c: c.name)
@pytest.mark.anyio
async def test_ours_survives_inputs_that_crash_the_official_sdk(case: datagen.HazardCase) -> None:
    """Where the official SDK raises (datagen.OFFICIAL_CRASHES), ours must return a sane value."""

    class StoredProfile:
        def lookup(self, user_id: str) -> Any:
            return copy.deepcopy(case.stored_profile)

        def save(self, profile: Any) -> None:
            pass

    ups = StoredProfile() if case.stored_profile is not None else None
    ours, _, _ = make_ours(copy.deepcopy(case.datafile), ups)
    user_id, attributes = case.user.user_id, case.user.attributes
    async with ours:
        for method, args in (
            ("get_variation", (case.experiment_key, user_id, attributes)),
            ("activate", (case.experiment_key, user_id, attributes)),
            ("is_feature_enabled", (case.flag_key, user_id, attributes)),
            ("get_all_feature_variables", (case.flag_key, user_id, attributes)),
            ("get_enabled_features", (user_id, attributes)),
        ):
            value = getattr(ours, method)(*args)
            if inspect.isawaitable(value):
                value = await value
            assert _sane(method, value, case), f"{case.name}: {method} returned {value!r}"
