"""SyncOptimizely: the official SDK's calls, answered in the calling thread, with events through a real sink.

Decisions are compared with the official SDK on generated datafiles; event payloads with AsyncOptimizely's
for the same calls (the async client's payloads are compared with the official SDK's elsewhere).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import anyio
import pytest

import datagen
from _datafile_server import DatafileServer
from _logcapture import capture
from _sync_support import EVENT_KEY, assert_each_once, datafile, sink_in_thread
from differential import make_official, same
from optimizely_async import (
    AsyncOptimizely,
    ConfigurationError,
    DecideOption,
    NotificationType,
    OptimizelyDecisionContext,
    OptimizelyForcedDecision,
    SyncOptimizely,
)
from optimizely_async.sync_context import SyncUserContext
from optimizely_async.testing import RecordingDispatcher


class Recorder(RecordingDispatcher):
    """The test kit's dispatcher (it runs on the client's loop thread), read back as the JSON it was sent."""

    @property
    def sent(self) -> list[dict[str, Any]]:
        return [json.loads(request.body) for request in self.requests]


@pytest.fixture
def sink() -> Iterator[Any]:
    with sink_in_thread() as running:
        yield running


# ---------------------------------------------------------------------- same answers as the official SDK


@pytest.mark.parametrize("seed", [3, 11])
def test_decisions_match_the_official_sdk(seed: int) -> None:
    df = datagen.generate_datafile(seed, version="4")
    users = [(u.user_id, u.attributes) for u in datagen.generate_users(random.Random(seed), df, 40)]
    official, official_notes, _ = make_official(df)
    ours = SyncOptimizely(df, event_dispatcher=Recorder())
    our_notes: list[Any] = []
    ours.notification_center.add_notification_listener(
        NotificationType.DECISION, lambda *args: our_notes.append(copy.deepcopy(args))
    )
    experiments = datagen.experiment_keys(df)
    flags = [f["key"] for f in df["featureFlags"]]
    variables = list(datagen.flag_variables(df))
    compared = 0
    try:
        for user_id, attrs in users:
            calls: list[tuple[str, tuple[Any, ...]]] = [("get_enabled_features", (user_id, attrs))]
            calls += [("get_variation", (key, user_id, attrs)) for key in experiments]
            calls += [("activate", (key, user_id, attrs)) for key in experiments]
            calls += [("is_feature_enabled", (key, user_id, attrs)) for key in flags]
            calls += [("get_all_feature_variables", (key, user_id, attrs)) for key in flags]
            calls += [("get_feature_variable", (flag, var, user_id, attrs)) for flag, var, _ in variables]
            for method, args in calls:
                before = len(official_notes)
                expected = getattr(official, method)(*args)
                got = getattr(ours, method)(*args)
                assert same(got, expected), (method, args, got, expected)
                assert same(our_notes[before:], official_notes[before:]), (method, args)
                compared += 1
            official_user = official.create_user_context(user_id, attrs)
            our_user = ours.create_user_context(user_id, attrs)
            assert our_user is not None
            # (Without INCLUDE_REASONS: the official SDK repeats some reasons; see test_differential_decide.py.)
            expected_all = {k: d.as_json() for k, d in official_user.decide_all().items()}
            got_all = {k: d.as_json() for k, d in our_user.decide_all().items()}
            assert same(got_all, expected_all)
    finally:
        official.close()
        ours.close()
    assert compared > 100


def _normalised(payloads: list[dict[str, Any]]) -> list[Any]:
    """The events of every payload, without the per-event uuid and timestamp and the client's name."""
    out = []
    for payload in payloads:
        payload = copy.deepcopy(payload)
        payload.pop("client_name", None)
        for visitor in payload["visitors"]:
            for snapshot in visitor["snapshots"]:
                for event in snapshot["events"]:
                    event.pop("uuid")
                    event.pop("timestamp")
            out.append(visitor)
    return out


def test_events_match_the_async_client() -> None:
    async_recorder, sync_recorder = Recorder(), Recorder()

    async def with_async() -> None:
        async with AsyncOptimizely(datafile(), event_dispatcher=async_recorder) as client:
            assert await client.activate("exp", "a", {"browser": "firefox"}) == "on"
            assert await client.is_feature_enabled("rolled", "b")
            await client.track(EVENT_KEY, "c", {"browser": "x"}, {"revenue": 4200, "value": 1.5, "other": "t"})
            user = client.create_user_context("d", {"browser": "safari"})
            assert user is not None
            await user.decide("flag")
            await user.track_event(EVENT_KEY, {"revenue": 1})

    anyio.run(with_async)
    with SyncOptimizely(datafile(), event_dispatcher=sync_recorder) as client:
        assert client.activate("exp", "a", {"browser": "firefox"}) == "on"
        assert client.is_feature_enabled("rolled", "b")
        client.track(EVENT_KEY, "c", {"browser": "x"}, {"revenue": 4200, "value": 1.5, "other": "t"})
        user = client.create_user_context("d", {"browser": "safari"})
        assert user is not None
        user.decide("flag")
        user.track_event(EVENT_KEY, {"revenue": 1})
    assert len(_normalised(sync_recorder.sent)) == 5
    assert _normalised(sync_recorder.sent) == _normalised(async_recorder.sent)


# ---------------------------------------------------------------------- the official surface


def test_official_calls_and_failure_values() -> None:
    with SyncOptimizely(datafile(), event_dispatcher=Recorder()) as client:
        assert client.is_valid and client.is_ready and client.wait_until_ready(0)
        assert client.get_variation("exp", "u") == "on"
        assert client.get_feature_variable("flag", "size", "u") == 42
        assert client.get_feature_variable_integer("flag", "size", "u") == 42
        assert client.get_feature_variable_string("flag", "label", "u") == "big"
        assert client.get_feature_variable_boolean("flag", "size", "u") is None  # wrong type
        assert client.get_feature_variable_double("flag", "size", "u") is None
        assert client.get_feature_variable_json("flag", "size", "u") is None
        assert client.get_all_feature_variables("flag", "u") == {"size": 42, "label": "big"}
        assert client.get_enabled_features("u") == ["flag", "rolled"]
        assert client.set_forced_variation("exp", "u", "on") is True
        assert client.get_forced_variation("exp", "u") == "on"
        config = client.get_optimizely_config()
        assert config is not None and config.revision == "7"
        # Bad input: the official failure values, no exception.
        assert client.activate("", "u") is None
        assert client.get_variation("exp", 5) is None  # type: ignore[arg-type]
        assert client.is_feature_enabled("nope", "u") is False
        assert client.get_enabled_features(None) == []  # type: ignore[arg-type]
        assert client.get_all_feature_variables("nope", "u") is None
        assert client.track("nope", "u") is None
        assert client.create_user_context(7) is None  # type: ignore[arg-type]
        assert client.create_user_context("u", ["not", "a", "dict"]) is None  # type: ignore[arg-type]


def test_user_context_is_synchronous_all_the_way() -> None:
    with SyncOptimizely(datafile(), event_dispatcher=Recorder()) as client:
        user = client.create_user_context("u", {"browser": "firefox"})
        assert isinstance(user, SyncUserContext)
        decision = user.decide("flag", [DecideOption.INCLUDE_REASONS])
        assert (decision.enabled, decision.variation_key, decision.rule_key) == (True, "on", "exp")
        assert decision.variables == {"size": 42, "label": "big"}
        assert isinstance(decision.user_context, SyncUserContext)
        assert decision.user_context.decide("rolled").enabled  # still synchronous
        assert set(user.decide_for_keys(["flag", "nope"])) == {"flag", "nope"}
        assert list(user.decide_all([DecideOption.ENABLED_FLAGS_ONLY])) == ["flag", "rolled"]
        assert user.set_forced_decision(OptimizelyDecisionContext("flag", "exp"), OptimizelyForcedDecision("on"))
        assert user.get_forced_decision(OptimizelyDecisionContext("flag", "exp")) == OptimizelyForcedDecision("on")
        invalid = user.decide(123)  # type: ignore[arg-type]
        assert invalid.enabled is False and invalid.reasons
        user.set_attribute("browser", "safari")
        assert user.get_user_attributes() == {"browser": "safari"}


def test_listeners_run_where_the_official_sdk_runs_them(sink: Any) -> None:
    threads: dict[str, set[int]] = {"decision": set(), "track": set(), "log_event": set()}
    client = SyncOptimizely(datafile(), event_endpoint=sink.url, batch_size=1)
    center = client.notification_center
    center.add_notification_listener(NotificationType.DECISION, lambda *a: threads["decision"].add(_me()))
    center.add_notification_listener(NotificationType.TRACK, lambda *a: threads["track"].add(_me()))
    center.add_notification_listener(NotificationType.LOG_EVENT, lambda *a: threads["log_event"].add(_me()))

    async def coroutine_listener(*args: Any) -> None:
        pass

    with capture(logging.getLogger("optimizely_async"), logging.ERROR) as records:
        assert center.add_notification_listener(NotificationType.DECISION, coroutine_listener) == -1
    assert any("coroutine function" in message for _, message in records)
    assert client.is_feature_enabled("flag", "u")
    client.track(EVENT_KEY, "u")
    client.flush()
    report = client.close()
    assert threads["decision"] == {_me()} and threads["track"] == {_me()}
    assert threads["log_event"] and _me() not in threads["log_event"]  # the loop thread
    assert report.delivered == 2 == len(sink.events())


def _me() -> int:
    return threading.get_ident()


def test_an_async_user_profile_service_is_refused() -> None:
    class AsyncProfiles:
        async def lookup(self, user_id: str) -> dict[str, Any] | None:
            return None

        async def save(self, profile: dict[str, Any]) -> None:
            return None

    with pytest.raises(ConfigurationError, match="plain method"):
        SyncOptimizely(datafile(), user_profile_service=AsyncProfiles())


def test_a_sync_user_profile_service_makes_bucketing_sticky() -> None:
    class Profiles:
        def __init__(self) -> None:
            self.saved: dict[str, dict[str, Any]] = {}

        def lookup(self, user_id: str) -> dict[str, Any] | None:
            return self.saved.get(user_id)

        def save(self, profile: dict[str, Any]) -> None:
            self.saved[profile["user_id"]] = copy.deepcopy(profile)

    profiles = Profiles()
    with SyncOptimizely(datafile(), user_profile_service=profiles, event_dispatcher=Recorder()) as client:
        assert client.activate("exp", "u") == "on"
    assert profiles.saved["u"]["experiment_bucket_map"] == {"4001": {"variation_id": "2001"}}


def test_a_listener_that_returns_an_awaitable_does_not_hold_the_caller() -> None:
    class Waits:
        def __await__(self) -> Generator[None, None, None]:
            yield  # would need a loop to resume it

    with SyncOptimizely(datafile(), event_dispatcher=Recorder()) as client:
        client.notification_center.add_notification_listener(NotificationType.DECISION, lambda *a: Waits())
        started = time.monotonic()
        with capture(logging.getLogger("optimizely_async"), logging.ERROR) as records:
            enabled = client.is_feature_enabled("flag", "u")
        assert time.monotonic() - started < 1.0  # the calling thread never waits for it
        # Once the loop thread runs, the awaitable is awaited in the background and the decision stands; before
        # that, the call cannot wait for it and gives the failure value with a log saying why.
        if enabled is not True:
            assert enabled is False and any("had to wait" in message for _, message in records)


def test_blocking_calls_from_the_loop_thread_are_refused_not_deadlocked(sink: Any) -> None:
    seen: list[Any] = []
    client = SyncOptimizely(datafile(), event_endpoint=sink.url, batch_size=1)

    def on_log_event(event: Any) -> None:  # runs on the loop thread
        client.flush()
        seen.append(client.close())

    client.notification_center.add_notification_listener(NotificationType.LOG_EVENT, on_log_event)
    with capture(logging.getLogger("optimizely_async"), logging.ERROR) as records:
        client.track(EVENT_KEY, "u")
        client.flush(timeout=10)
    messages = [message for _, message in records]
    assert any("flush() cannot be called" in m for m in messages)
    assert any("close() cannot be called" in m for m in messages)
    assert client.close().delivered == 1 and len(seen) == 1


# ---------------------------------------------------------------------- lifecycle and accounting


def test_close_reports_and_later_events_are_counted(sink: Any) -> None:
    with SyncOptimizely(datafile(), event_endpoint=sink.url) as client:
        assert client.activate("exp", "a") == "on"
        client.track(EVENT_KEY, "b")
        stats = client.stats()
        assert stats.submitted == 2 and stats.delivered == 0  # batched: waiting for the flush interval
    report = client.close()
    assert (report.submitted, report.delivered, report.timed_out) == (2, 2, False)
    assert client.close() is report  # idempotent
    assert_each_once(sink.events(), {("a", "campaign_activated"), ("b", EVENT_KEY)})
    assert client.activate("exp", "c") == "on"  # decisions go on after close
    client.track(EVENT_KEY, "d")
    stats = client.stats()
    assert stats.dropped.get("closed") == 2 and stats.submitted == 4
    assert len(sink.events()) == 2


def test_track_before_the_first_datafile_is_held_then_sent(sink: Any) -> None:
    with DatafileServer() as server:
        client = SyncOptimizely(
            sdk_key="k",
            datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
            update_interval=0.2,
            event_endpoint=sink.url,
        )
        try:
            assert not client.is_ready and not client.wait_until_ready(0.2)
            client.track(EVENT_KEY, "early")  # held: the datafile is not served yet
            assert client.stats().queued == 1
            server.set_datafile(datafile())
            assert client.wait_until_ready(20)
            client.flush()
            assert_each_once(sink.events(), {("early", EVENT_KEY)})
            updates: list[int] = []
            client.notification_center.add_notification_listener(
                NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: updates.append(_me())
            )
            server.set_datafile(datafile(revision="8"))
            _eventually(lambda: client.config is not None and client.config.revision == "8")
            assert updates and _me() not in updates
        finally:
            report = client.close()
        assert report.delivered == 1


def test_a_large_static_datafile_is_parsed_before_the_constructor_returns() -> None:
    big = datafile()
    big["attributes"] += [{"id": str(90000 + i), "key": f"attribute_{i:05d}_{'x' * 40}"} for i in range(6000)]
    assert len(json.dumps(big)) > 256 * 1024
    with SyncOptimizely(json.dumps(big), event_dispatcher=Recorder()) as client:
        assert client.is_ready and client.get_variation("exp", "u") == "on"


def _eventually(condition: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_no_loop_thread_until_one_is_needed() -> None:
    client = SyncOptimizely(datafile(), event_dispatcher=Recorder())
    thread = client._runner._thread
    assert client.get_variation("exp", "u") == "on"  # decisions alone need no thread
    assert not thread.is_alive()
    client.track(EVENT_KEY, "u")
    assert thread.is_alive() and thread.daemon
    assert client.close().delivered == 1
    assert not thread.is_alive()


def test_used_inside_a_running_event_loop_too() -> None:
    async def main() -> str | None:
        with SyncOptimizely(datafile(), event_dispatcher=Recorder()) as client:
            return client.activate("exp", "u")

    assert asyncio.run(main()) == "on"


def test_a_full_queue_drops_at_once_and_counts(sink: Any) -> None:
    """The loop thread is held (a LOG_EVENT listener blocks it), so the hand-off fills to ``max_queue_size``;
    the calling thread never waits, later events are counted as dropped, and the books balance."""
    gate, held = threading.Event(), threading.Event()

    def block_the_loop(event: Any) -> None:
        if not held.is_set():
            held.set()
            gate.wait(20)

    client = SyncOptimizely(datafile(), event_endpoint=sink.url, batch_size=1, max_queue_size=5)
    client.notification_center.add_notification_listener(NotificationType.LOG_EVENT, block_the_loop)
    client.track(EVENT_KEY, "first")
    assert held.wait(20)
    for i in range(20):
        client.track(EVENT_KEY, f"u{i}")
    gate.set()
    report = client.close()
    assert report.submitted == 21
    assert report.dropped == {"queue_full": 15}
    assert report.delivered == 6 == len(sink.events())
