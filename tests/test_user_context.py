"""Unit tests of OptimizelyUserContext: creation, attributes, forced decisions, snapshots under concurrency and
``track_event``. Every async test runs on asyncio and trio (tests/conftest.py)."""

from __future__ import annotations

import collections
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _support.datafiles import empty_datafile
from optimizely_async import AsyncOptimizely, DecideOption, NotificationType
from optimizely_async.testing import RecordingDispatcher
from optimizely_async.user_context import (
    OptimizelyDecisionContext,
    OptimizelyForcedDecision,
    OptimizelyUserContext,
)


def _variation(variation_id: str, key: str, enabled: bool) -> dict[str, Any]:
    return {
        "id": variation_id,
        "key": key,
        "featureEnabled": enabled,
        "variables": [{"id": "111", "value": key}],
    }


def datafile() -> dict[str, Any]:
    """One flag with a rollout: adults (age >= 18) get "adult", everyone else "minor"; an experiment rule
    "exp" (nobody allocated) whose variation "forced_on" is only reachable by a forced decision."""
    return {
        "version": "4",
        "projectId": "11",
        "accountId": "12",
        "revision": "3",
        "attributes": [{"id": "101", "key": "age"}, {"id": "102", "key": "plan"}],
        "audiences": [],
        "typedAudiences": [
            {
                "id": "201",
                "name": "adults",
                "conditions": ["and", {"name": "age", "type": "custom_attribute", "match": "ge", "value": 18}],
            }
        ],
        "experiments": [
            {
                "id": "301",
                "key": "exp",
                "layerId": "302",
                "status": "Running",
                "variations": [_variation("401", "forced_on", True)],
                "trafficAllocation": [],
                "audienceIds": [],
                "forcedVariations": {},
            }
        ],
        "groups": [],
        "events": [{"id": "501", "key": "purchase", "experimentIds": ["301"]}],
        "featureFlags": [
            {
                "id": "601",
                "key": "flag",
                "experimentIds": ["301"],
                "rolloutId": "701",
                "variables": [{"id": "111", "key": "label", "type": "string", "defaultValue": "default"}],
            }
        ],
        "rollouts": [
            {
                "id": "701",
                "experiments": [
                    {
                        "id": "702",
                        "key": "adults_rule",
                        "layerId": "701",
                        "status": "Running",
                        "variations": [_variation("801", "adult", True)],
                        "trafficAllocation": [{"entityId": "801", "endOfRange": 10000}],
                        "audienceIds": ["201"],
                        "forcedVariations": {},
                    },
                    {
                        "id": "703",
                        "key": "everyone_else",
                        "layerId": "701",
                        "status": "Running",
                        "variations": [_variation("802", "minor", False)],
                        "trafficAllocation": [{"entityId": "802", "endOfRange": 10000}],
                        "audienceIds": [],
                        "forcedVariations": {},
                    },
                ],
            }
        ],
    }


class GatedUPS:
    """An async user profile service whose lookups wait until ``gate`` is set, so a decide can be paused
    after it took its snapshot."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.waiting = 0

    async def lookup(self, user_id: str) -> dict[str, Any] | None:
        self.waiting += 1
        await self.gate.wait()
        return None

    async def save(self, user_profile: dict[str, Any]) -> None:
        pass


def client(**options: Any) -> AsyncOptimizely:
    return AsyncOptimizely(
        datafile=datafile(), event_dispatcher=options.pop("event_dispatcher", RecordingDispatcher()), **options
    )


# ------------------------------------------------------------------------------------------------ creation


@pytest.mark.parametrize("user_id", [None, 42, 4.5, b"user", ["user"]])
def test_create_user_context_rejects_bad_user_ids(user_id: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert client().create_user_context(user_id, {"age": 1}) is None
    assert 'Provided "user_id" is in an invalid format.' in caplog.text


class AttrDict(dict):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "attributes",
    [[("age", 1)], "age", 1, AttrDict(age=1), collections.OrderedDict(age=1), collections.UserDict(age=1), [], ""],
)
def test_create_user_context_rejects_attributes_that_are_not_a_dict(attributes: Any) -> None:
    assert client().create_user_context("u1", attributes) is None


def test_create_user_context_copies_the_attributes() -> None:
    attributes: dict[str, Any] = {"age": 20}
    user = client().create_user_context("u1", attributes)
    assert user is not None
    attributes["age"] = 5
    assert user.get_user_attributes() == {"age": 20}
    assert client().create_user_context("", None).get_user_attributes() == {}  # type: ignore[union-attr]


def test_attributes_are_read_and_written_through_copies() -> None:
    user = client().create_user_context("u1", {"age": 20})
    assert user is not None
    copy = user.get_user_attributes()
    copy["age"] = 1
    copy["plan"] = "gold"
    assert user.get_user_attributes() == {"age": 20}
    user.set_attribute("plan", "gold")
    user.set_attribute("age", None)  # no validation, as the official SDK
    user.set_attribute("odd", [1, 2])
    assert user.get_user_attributes() == {"age": None, "plan": "gold", "odd": [1, 2]}
    assert user.as_json() == {"user_id": "u1", "attributes": {"age": None, "plan": "gold", "odd": [1, 2]}}
    user.as_json()["attributes"]["plan"] = "x"
    assert user.get_user_attributes()["plan"] == "gold"


class _HashRaises:
    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class _EqRaises:
    """Hashes like "age", and comparing it with a str raises: inserting it next to "age" fails."""

    def __hash__(self) -> int:
        return hash("age")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")


@pytest.mark.parametrize("bad_key", [[], ["age"], {"a": 1}, {1, 2}, bytearray(b"age"), _HashRaises(), _EqRaises()])
def test_set_attribute_with_a_key_that_cannot_be_a_dict_key_is_logged_and_ignored(
    bad_key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The official SDK raises TypeError here (an unhashable key); ours logs an error and changes nothing."""
    user = client().create_user_context("u1", {"age": 20})
    assert user is not None
    with caplog.at_level(logging.ERROR, logger="optimizely_async"):
        user.set_attribute(bad_key, 1)
    assert user.get_user_attributes() == {"age": 20}
    assert user.as_json() == {"user_id": "u1", "attributes": {"age": 20}}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "optimizely_async"]
    assert len(errors) == 1, caplog.text
    assert f'Attribute key of type "{type(bad_key).__name__}" is invalid' in errors[0].getMessage()
    assert "set_attribute ignored" in errors[0].getMessage()
    user.set_attribute("plan", "gold")  # the context still works
    assert user.get_user_attributes() == {"age": 20, "plan": "gold"}


@pytest.mark.parametrize("odd_key", [1, 0, None, True, 2.5, (1, 2), b"age", frozenset()])
@pytest.mark.anyio
async def test_set_attribute_with_a_non_string_key_keeps_it_and_decisions_ignore_it(
    odd_key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As the official SDK (tests/test_differential_as_json.py compares the two): the key is stored and shown,
    audiences and events only read string keys. Ours also warns."""
    recorder = RecordingDispatcher()
    async with client(event_dispatcher=recorder, batch_size=1) as optimizely:
        user = optimizely.create_user_context("u1", {"age": 30})
        assert user is not None
        with caplog.at_level(logging.WARNING, logger="optimizely_async"):
            user.set_attribute(odd_key, "value")
        assert f'Attribute key of type "{type(odd_key).__name__}" is not a string' in caplog.text
        assert user.get_user_attributes() == {"age": 30, odd_key: "value"}
        decision = await user.decide("flag")
        assert (decision.variation_key, decision.enabled) == ("adult", True)
        assert decision.as_json()["user_context"] == {"user_id": "u1", "attributes": {"age": 30, odd_key: "value"}}
        await user.track_event("purchase")
        await optimizely.flush()
    assert len(recorder.payloads) == 1
    attributes = recorder.payloads[0]["visitors"][0]["attributes"]
    assert [a["key"] for a in attributes if not a["key"].startswith("$opt")] == ["age"]


# ------------------------------------------------------------------------------------------------ forced decisions


def test_forced_decisions_set_get_remove() -> None:
    user = client().create_user_context("u1")
    assert user is not None
    flag = OptimizelyDecisionContext("flag")
    rule = OptimizelyDecisionContext("flag", "exp")
    assert flag == OptimizelyDecisionContext("flag", None) and flag != rule
    assert hash(flag) == hash(OptimizelyDecisionContext("flag", None))
    assert user.OptimizelyDecisionContext is OptimizelyDecisionContext
    assert user.OptimizelyForcedDecision is OptimizelyForcedDecision

    assert user.get_forced_decision(flag) is None
    assert user.remove_forced_decision(flag) is False
    assert user.set_forced_decision(flag, OptimizelyForcedDecision("adult")) is True
    assert user.set_forced_decision(rule, OptimizelyForcedDecision("no_such_variation")) is True  # not validated
    assert user.get_forced_decision(flag) == OptimizelyForcedDecision("adult")
    assert user.get_forced_decision(rule).variation_key == "no_such_variation"  # type: ignore[union-attr]
    assert user.get_forced_decision(OptimizelyDecisionContext("other")) is None
    assert user.set_forced_decision(flag, OptimizelyForcedDecision("minor")) is True  # overwrite
    assert user.get_forced_decision(flag) == OptimizelyForcedDecision("minor")
    assert user.remove_forced_decision(flag) is True
    assert user.remove_forced_decision(flag) is False
    assert user.get_forced_decision(flag) is None
    assert user.get_forced_decision(rule) is not None
    assert user.remove_all_forced_decisions() is True
    assert user.get_forced_decision(rule) is None
    assert user.remove_all_forced_decisions() is True  # also when there is nothing to remove


@pytest.mark.anyio
async def test_forced_decisions_change_decisions() -> None:
    async with client() as optimizely:
        user = optimizely.create_user_context("u1", {"age": 30})
        assert user is not None
        assert (await user.decide("flag")).variation_key == "adult"
        user.set_forced_decision(OptimizelyDecisionContext("flag", "exp"), OptimizelyForcedDecision("forced_on"))
        decision = await user.decide("flag", [DecideOption.INCLUDE_REASONS])
        assert (decision.variation_key, decision.rule_key, decision.variables) == (
            "forced_on",
            "exp",
            {"label": "forced_on"},
        )
        assert decision.reasons == [
            "Variation (forced_on) is mapped to flag (flag), rule (exp) and user (u1) in the forced decision map."
        ]
        user.set_forced_decision(OptimizelyDecisionContext("flag"), OptimizelyForcedDecision("minor"))
        decision = await user.decide("flag")
        assert (decision.variation_key, decision.rule_key, decision.enabled) == ("minor", None, False)
        user.remove_all_forced_decisions()
        assert (await user.decide("flag")).variation_key == "adult"


# ------------------------------------------------------------------------------------------------ snapshots


@pytest.mark.anyio
async def test_a_decision_keeps_the_context_it_was_made_with() -> None:
    async with client() as optimizely:
        user = optimizely.create_user_context("u1", {"age": 30})
        assert user is not None
        decision = await user.decide("flag")
        every = await user.decide_all()
        user.set_attribute("age", 5)
        user.set_forced_decision(OptimizelyDecisionContext("flag"), OptimizelyForcedDecision("minor"))
        assert decision.user_context is not user
        assert decision.user_context.as_json() == {"user_id": "u1", "attributes": {"age": 30}}  # type: ignore[union-attr]
        assert every["flag"].user_context.get_user_attributes() == {"age": 30}  # type: ignore[union-attr]
        assert decision.user_context.get_forced_decision(OptimizelyDecisionContext("flag")) is None  # type: ignore[union-attr]
        assert (await user.decide("flag")).user_context.as_json()["attributes"] == {"age": 5}  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_set_attribute_while_a_decide_is_in_flight_does_not_change_it() -> None:
    ups = GatedUPS()
    async with client(user_profile_service=ups) as optimizely:
        user = optimizely.create_user_context("u1", {"age": 10})
        assert user is not None
        results: dict[str, Any] = {}

        async def slow_decide() -> None:
            results["slow"] = await user.decide("flag")

        async def slow_decide_all() -> None:
            results["slow_all"] = await user.decide_all()

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_decide)
            tg.start_soon(slow_decide_all)
            while ups.waiting < 2:  # both decides took their snapshot and wait for the profile lookup
                await anyio.lowlevel.checkpoint()
            user.set_attribute("age", 40)
            user.set_forced_decision(OptimizelyDecisionContext("flag", "exp"), OptimizelyForcedDecision("forced_on"))
            fast = await user.decide("flag", [DecideOption.IGNORE_USER_PROFILE_SERVICE])
            assert (fast.variation_key, fast.user_context.get_user_attributes()) == ("forced_on", {"age": 40})  # type: ignore[union-attr]
            user.remove_all_forced_decisions()
            ups.gate.set()
        assert results["slow"].variation_key == "minor"
        assert results["slow"].user_context.get_user_attributes() == {"age": 10}
        assert results["slow_all"]["flag"].variation_key == "minor"
        assert (await user.decide("flag", [DecideOption.IGNORE_USER_PROFILE_SERVICE])).variation_key == "adult"


class CheckpointUPS:
    """An async user profile service that yields to the other tasks on every call."""

    async def lookup(self, user_id: str) -> None:
        await anyio.lowlevel.checkpoint()

    async def save(self, user_profile: dict[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_many_tasks_share_one_context() -> None:
    async with client(user_profile_service=CheckpointUPS()) as optimizely:
        user = optimizely.create_user_context("shared")
        assert user is not None
        seen: list[tuple[int, Any]] = []

        async def worker(age: int) -> None:
            for _ in range(5):
                user.set_attribute("age", age)
                decision = await user.decide("flag")  # the snapshot is taken before the first await inside
                seen.append((decision.user_context.get_user_attributes()["age"], decision.variation_key))  # type: ignore[union-attr]
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for age in (5, 17, 18, 60):
                tg.start_soon(worker, age)
        assert len(seen) == 20
        for age, variation_key in seen:
            assert variation_key == ("adult" if age >= 18 else "minor"), (age, variation_key)


# ------------------------------------------------------------------------------------------------ track_event


@pytest.mark.anyio
async def test_track_event_sends_a_conversion_with_the_current_attributes() -> None:
    recorder = RecordingDispatcher()
    tracked: list[tuple[Any, ...]] = []
    async with client(event_dispatcher=recorder, batch_size=1) as optimizely:
        optimizely.notification_center.add_notification_listener(
            NotificationType.TRACK, lambda *args: tracked.append(args)
        )
        user = optimizely.create_user_context("u1", {"age": 30})
        assert user is not None
        user.set_attribute("plan", "gold")
        await user.track_event("purchase", {"revenue": 500, "value": 2.5, "note": "x"})
        await user.track_event("no_such_event")  # logged, nothing sent
        await optimizely.flush()
    assert len(recorder.payloads) == 1
    visitor = recorder.payloads[0]["visitors"][0]
    assert visitor["visitor_id"] == "u1"
    assert {(a["key"], a["value"]) for a in visitor["attributes"] if not a["key"].startswith("$opt")} == {
        ("age", 30),
        ("plan", "gold"),
    }
    event = visitor["snapshots"][0]["events"][0]
    assert (event["key"], event["entity_id"], event["revenue"], event["value"]) == ("purchase", "501", 500, 2.5)
    assert event["tags"] == {"revenue": 500, "value": 2.5, "note": "x"}
    assert [(t[0], t[1], t[2]) for t in tracked] == [("purchase", "u1", {"age": 30, "plan": "gold"})]


@pytest.mark.anyio
async def test_a_context_without_a_client_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    user = OptimizelyUserContext(None, "u1", {"age": 1})
    decision = await user.decide("flag")
    assert (decision.flag_key, decision.variation_key, decision.enabled) == ("flag", None, False)
    assert await user.decide_for_keys(["flag"]) == {}
    assert await user.decide_all() == {}
    await user.track_event("purchase")  # logged, never raised
    assert 'Provided "user_context" is in an invalid format.' in caplog.text


@pytest.mark.anyio
async def test_options_that_are_not_a_list_fall_back_to_the_defaults() -> None:
    async with client(default_decide_options=[DecideOption.EXCLUDE_VARIABLES]) as optimizely:
        user = optimizely.create_user_context("u1", {"age": 30})
        assert user is not None
        decision = await user.decide("flag", "INCLUDE_REASONS")
        assert (decision.reasons, decision.variables) == ([], {})
        decision = await user.decide("flag", ["INCLUDE_REASONS", "NOT_AN_OPTION"])
        assert decision.reasons and decision.variables == {}  # the defaults are added to a list
        assert list(await user.decide_all([DecideOption.ENABLED_FLAGS_ONLY])) == ["flag"]
        user.set_attribute("age", 1)
        assert await user.decide_all([DecideOption.ENABLED_FLAGS_ONLY]) == {}
        assert (await user.decide("flag", [DecideOption.ENABLED_FLAGS_ONLY])).variation_key == "minor"


@pytest.mark.anyio
async def test_forced_decision_methods_never_raise_on_bad_arguments() -> None:
    client = AsyncOptimizely(datafile=empty_datafile("3"))
    user = client.create_user_context("u1")
    assert user is not None
    assert user.set_forced_decision(None, None) is False  # type: ignore[arg-type]
    assert (
        user.set_forced_decision(OptimizelyDecisionContext("f", ["unhashable"]), OptimizelyForcedDecision("v")) is False
    )  # type: ignore[arg-type]
    assert user.get_forced_decision("nope") is None  # type: ignore[arg-type]
    assert user.remove_forced_decision(42) is False  # type: ignore[arg-type]
