"""Unit tests of sticky bucketing (``optimizely_async.decision.user_profile``): the UserProfileService protocol,
load_profile / save_profile with sync and async services, the tracker, and how the engine uses it. Saved
profiles are compared with what the official SDK saves through the same service on the same datafile."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from optimizely.bucketer import Bucketer

from _logcapture import capture
from differential import make_official, make_ours
from optimizely_async.config.project_config import parse_config
from optimizely_async.decision.engine import decide_experiment
from optimizely_async.decision.user_profile import UserProfileService, UserProfileTracker, load_profile, save_profile

pytestmark = pytest.mark.anyio

LOGGER = logging.getLogger("optimizely_async")
US = '["and", ["or", ["or", {"name": "country", "type": "custom_attribute", "match": "exact", "value": "US"}]]]'


def _user(low: int, high: int) -> str:
    """A user whose official bucket in experiment 1001 is in [low, high]."""
    bucket = Bucketer()._generate_bucket_value
    return next(f"u{n}" for n in range(100_000) if low <= bucket(f"u{n}1001") <= high)


IN_A, IN_B = _user(0, 4999), _user(5000, 9999)  # bucketing gives "a" (1101) / "b" (1102)
VIP = "vip"  # whitelisted into "a"
DATAFILE: dict[str, Any] = {
    "version": "4",
    "accountId": "1",
    "projectId": "2",
    "revision": "3",
    "anonymizeIP": False,
    "botFiltering": False,
    "attributes": [{"id": "5001", "key": "country"}],
    "audiences": [{"id": "100", "name": "US", "conditions": US}],
    "events": [],
    "groups": [],
    "experiments": [
        {
            "id": "1001",
            "key": "exp",
            "status": "Running",
            "layerId": "9",
            "variations": [
                {"id": "1101", "key": "a", "variables": [], "featureEnabled": True},
                {"id": "1102", "key": "b", "variables": [], "featureEnabled": False},
            ],
            "trafficAllocation": [{"entityId": "1101", "endOfRange": 5000}, {"entityId": "1102", "endOfRange": 10000}],
            "audienceIds": ["100"],
            "forcedVariations": {VIP: "a"},
        },
        {
            "id": "1002",
            "key": "other",
            "status": "Running",
            "layerId": "9",
            "variations": [{"id": "1201", "key": "o", "variables": []}],
            "trafficAllocation": [{"entityId": "1201", "endOfRange": 10000}],
            "audienceIds": [],
            "forcedVariations": {},
        },
    ],
    "featureFlags": [{"id": "3001", "key": "feat", "experimentIds": ["1001"], "rolloutId": "", "variables": []}],
    "rollouts": [],
}
CONFIG = parse_config(DATAFILE)
EXP = CONFIG.experiments_by_id["1001"]


class SyncUPS:
    """A dict-backed service that records calls; ``fail`` makes lookup/save raise."""

    def __init__(self, profiles: dict[str, Any] | None = None, fail: str = "") -> None:
        self.profiles = copy.deepcopy(profiles or {})
        self.fail = fail
        self.lookups: list[str] = []
        self.saves: list[dict[str, Any]] = []

    def lookup(self, user_id: str) -> Any:
        self.lookups.append(user_id)
        if self.fail == "lookup":
            raise RuntimeError("lookup down")
        return copy.deepcopy(self.profiles.get(user_id))

    def save(self, user_profile: dict[str, Any]) -> None:
        self.saves.append(copy.deepcopy(user_profile))
        if self.fail == "save":
            raise RuntimeError("boom")
        self.profiles[user_profile["user_id"]] = copy.deepcopy(user_profile)


class AsyncUPS(SyncUPS):
    async def lookup(self, user_id: str) -> Any:  # type: ignore[override]
        return SyncUPS.lookup(self, user_id)

    async def save(self, user_profile: dict[str, Any]) -> None:  # type: ignore[override]
        SyncUPS.save(self, user_profile)


@pytest.fixture(params=[SyncUPS, AsyncUPS], ids=["sync", "async"])
def ups_class(request: pytest.FixtureRequest) -> type[SyncUPS]:
    return request.param  # type: ignore[no-any-return]


def profile(user_id: str, **buckets: str) -> dict[str, Any]:
    return {"user_id": user_id, "experiment_bucket_map": {e: {"variation_id": v} for e, v in buckets.items()}}


async def decide(ups: SyncUPS | None, user_id: str, attrs: dict[str, Any], forced: Any = None) -> str | None:
    """load -> decide_experiment -> save, as the client does for get_variation."""
    tracker = await load_profile(ups, user_id)
    variation = decide_experiment(CONFIG, EXP, user_id, attrs, forced or {}, tracker)
    await save_profile(ups, tracker)
    return variation.key if variation else None


def official_saves(profiles: dict[str, Any], calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """The official SDK's get_variation results and saved profiles for the same calls and store."""
    ups = SyncUPS(profiles)
    client, _, _ = make_official(DATAFILE, user_profile_service=ups)
    try:
        return [client.get_variation("exp", uid, attrs) for uid, attrs in calls], ups.saves
    finally:
        client.close()


async def test_protocol_is_runtime_checkable() -> None:
    assert isinstance(SyncUPS(), UserProfileService)
    assert isinstance(AsyncUPS(), UserProfileService)
    assert not isinstance(object(), UserProfileService)

    class LookupOnly:
        def lookup(self, user_id: str) -> None:
            return None

    assert not isinstance(LookupOnly(), UserProfileService)


async def test_tracker_reads_only_well_formed_entries() -> None:
    tracker = UserProfileTracker("u", {"1": {"variation_id": "v"}, "2": "v", "3": {"variation_id": 5}, "4": {}})
    assert [tracker.stored_variation_id(e) for e in ("1", "2", "3", "4", "5")] == ["v", None, None, None, None]
    assert not tracker.updated
    tracker.record("2", "w")
    assert tracker.updated and tracker.stored_variation_id("2") == "w"
    assert tracker.as_dict()["experiment_bucket_map"]["2"] == {"variation_id": "w"}
    assert UserProfileTracker("u", None).as_dict() == {"user_id": "u", "experiment_bucket_map": {}}


async def test_fresh_bucketing_is_saved_in_the_official_shape(ups_class: type[SyncUPS]) -> None:
    ups = ups_class()
    assert await decide(ups, IN_A, {"country": "US"}) == "a"
    assert await decide(ups, IN_B, {"country": "US"}) == "b"
    assert ups.lookups == [IN_A, IN_B]
    assert ups.saves == [profile(IN_A, **{"1001": "1101"}), profile(IN_B, **{"1001": "1102"})]
    calls = [(IN_A, {"country": "US"}), (IN_B, {"country": "US"})]
    assert official_saves({}, calls) == (["a", "b"], ups.saves)


async def test_stored_decision_sticks_and_is_not_saved_again(ups_class: type[SyncUPS]) -> None:
    # Stored "b" for a user whose bucket says "a", and an audience that no longer matches.
    stored = {IN_A: profile(IN_A, **{"1001": "1102", "1002": "1201"})}
    ups = ups_class(stored)
    with capture(LOGGER) as logs:
        assert await decide(ups, IN_A, {"country": "FR"}) == "b"
    assert ups.saves == []
    assert (logging.DEBUG, "User profile loaded successfully.") in logs
    assert official_saves(stored, [(IN_A, {"country": "FR"})]) == (["b"], [])


@pytest.mark.parametrize("stale", ["999", "1201", ""])  # gone, another experiment's, empty
async def test_stored_variation_that_no_longer_exists_is_ignored(ups_class: type[SyncUPS], stale: str) -> None:
    stored = {IN_A: profile(IN_A, **{"1001": stale, "1002": "1201"})}
    ups = ups_class(stored)
    assert await decide(ups, IN_A, {"country": "US"}) == "a"
    assert ups.saves == [profile(IN_A, **{"1001": "1101", "1002": "1201"})]
    assert official_saves(stored, [(IN_A, {"country": "US"})]) == (["a"], ups.saves)
    # And when the audience does not match any more, the stale entry gives nothing.
    assert await decide(ups_class(stored), IN_A, {"country": "FR"}) is None


async def test_forced_and_whitelisted_decisions_are_not_saved(ups_class: type[SyncUPS]) -> None:
    ups = ups_class()
    assert await decide(ups, VIP, {}) == "a"
    assert await decide(ups, IN_A, {}, {IN_A: {"1001": "1102"}}) == "b"
    assert await decide(ups, IN_A, {"country": "FR"}) is None  # audience fails: nothing to record
    assert ups.saves == []
    assert len(ups.lookups) == 3
    assert official_saves({}, [(VIP, {}), (IN_A, {"country": "FR"})]) == (["a", None], [])


async def test_lookup_raising_is_logged_and_ignored(ups_class: type[SyncUPS]) -> None:
    ups = ups_class({IN_A: profile(IN_A, **{"1001": "1102"})}, fail="lookup")
    with capture(LOGGER) as logs:
        tracker = await load_profile(ups, IN_A)
    assert tracker.experiment_bucket_map == {} and tracker.user_id == IN_A and not tracker.updated
    assert (logging.ERROR, "Unable to retrieve a user profile as lookup failed.") in logs  # no user id above DEBUG
    # The decision goes on as if there were no profile, and the fresh bucketing is saved.
    assert await decide(ups, IN_A, {"country": "US"}) == "a"
    assert ups.saves == [profile(IN_A, **{"1001": "1101"})]


@pytest.mark.parametrize(
    ("junk", "message"),
    [
        (None, "Unable to get a user profile from the UserProfileService."),
        ([], "User profile is missing keys: user_id, experiment_bucket_map"),
        ("profile", "User profile is missing keys: user_id, experiment_bucket_map"),
        ({"user_id": "x"}, "User profile is missing keys: experiment_bucket_map"),
        ({"experiment_bucket_map": {"1001": {"variation_id": "1102"}}}, "User profile is missing keys: user_id"),
        ({"user_id": "x", "experiment_bucket_map": "junk"}, None),
        ({"user_id": "x", "experiment_bucket_map": {"1001": "1102"}}, None),
        ({"user_id": "x", "experiment_bucket_map": {"1001": {"variation_id": 1102}}}, None),
        ({"user_id": "x", "experiment_bucket_map": {"1001": {"variationId": "1102"}}}, None),
    ],
)
async def test_junk_lookup_results_are_ignored(ups_class: type[SyncUPS], junk: Any, message: str | None) -> None:
    ups = ups_class({IN_A: junk})
    with capture(LOGGER) as logs:
        tracker = await load_profile(ups, IN_A)
    assert tracker.stored_variation_id("1001") is None
    if message is not None:
        assert (logging.DEBUG, message) in logs
    # Bucketing decides ("a", where the junk pointed at "b"), and the new profile replaces the junk.
    variation = decide_experiment(CONFIG, EXP, IN_A, {"country": "US"}, {}, tracker)
    assert variation is not None and variation.key == "a"
    assert tracker.updated and tracker.as_dict()["experiment_bucket_map"]["1001"] == {"variation_id": "1101"}


async def test_save_raising_is_logged_and_never_reaches_the_caller(ups_class: type[SyncUPS]) -> None:
    ups = ups_class(fail="save")
    with capture(LOGGER) as logs:
        assert await decide(ups, IN_B, {"country": "US"}) == "b"
    assert ups.saves == [profile(IN_B, **{"1001": "1102"})]
    assert (logging.WARNING, "Failed to save a user profile: RuntimeError.") in logs  # no user data above DEBUG
    assert (logging.DEBUG, f'Failed to save user profile of user "{IN_B}" for exception:boom".') in logs
    assert not any(text.startswith("Saved user profile") for _, text in logs)


async def test_successful_save_is_logged(ups_class: type[SyncUPS]) -> None:
    with capture(LOGGER) as logs:
        await decide(ups_class(), IN_B, {"country": "US"})
    assert (logging.DEBUG, f'Saved user profile of user "{IN_B}".') in logs


async def test_no_service_means_an_empty_profile_and_no_save() -> None:
    tracker = await load_profile(None, IN_A)
    assert tracker.as_dict() == {"user_id": IN_A, "experiment_bucket_map": {}}
    tracker.record("1001", "1101")
    await save_profile(None, tracker)  # nothing to call, nothing raised
    assert await decide(None, IN_A, {"country": "US"}) == "a"


async def test_unchanged_profile_is_not_saved(ups_class: type[SyncUPS]) -> None:
    ups = ups_class()
    await save_profile(ups, UserProfileTracker(IN_A, {"1001": {"variation_id": "1101"}}))
    assert ups.saves == []


async def test_client_looks_up_once_and_honours_ignore_option(ups_class: type[SyncUPS]) -> None:
    ups = ups_class()
    client, _, _ = make_ours(copy.deepcopy(DATAFILE), ups)
    async with client:
        user = client.create_user_context(IN_B, {"country": "US"})
        ignored = await user.decide("feat", ["IGNORE_USER_PROFILE_SERVICE", "DISABLE_DECISION_EVENT"])
        assert (ignored.variation_key, ups.lookups, ups.saves) == ("b", [], [])
        decided = await user.decide("feat", ["DISABLE_DECISION_EVENT"])
        assert decided.variation_key == "b"
        assert ups.lookups == [IN_B] and ups.saves == [profile(IN_B, **{"1001": "1102"})]
        # Sticky now, even with the audience gone; the stored profile is not saved again.
        user = client.create_user_context(IN_B, {"country": "FR"})
        assert (await user.decide("feat", ["DISABLE_DECISION_EVENT"])).variation_key == "b"
        assert (await user.decide("feat", ["IGNORE_USER_PROFILE_SERVICE"])).variation_key is None
        assert ups.lookups == [IN_B, IN_B] and len(ups.saves) == 1


@pytest.mark.parametrize("stored_id", [42, None, "someone-else"])
async def test_a_stored_user_id_is_saved_back_as_the_official_sdk_saves_it(
    stored_id: Any, ups_class: type[SyncUPS]
) -> None:
    """The official SDK keeps the stored ``user_id`` as it is (whatever its type) when it saves the profile."""
    service = ups_class({"u": {"user_id": stored_id, "experiment_bucket_map": {}}})
    tracker = await load_profile(service, "u")
    tracker.record("1001", "1101")
    await save_profile(service, tracker)
    saved = service.saves[-1]["user_id"]
    assert saved == stored_id and type(saved) is type(stored_id)
