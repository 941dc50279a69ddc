"""AsyncOptimizely with a polled datafile, end to end, against a real HTTP server on 127.0.0.1.

Every test runs on asyncio and trio. Nothing here asserts wall-clock timing: progress is observed through
the server's request log, the client's config and the recorded event requests. ``anyio.fail_after`` only
keeps a broken test from hanging.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from _datafile_server import Body, DatafileServer, Redirect, Slow, Status
from optimizely_async import AsyncOptimizely, ConfigurationError, NotificationType
from optimizely_async import client as client_module
from optimizely_async.client import HeldTrack
from optimizely_async.config.project_config import ProjectConfig
from optimizely_async.decide import DecisionMessage
from optimizely_async.events.factory import now_ms
from optimizely_async.testing import RecordingDispatcher as KitDispatcher

SDK_KEY = "SdkKeyPollingSecret9876"
TOKEN = "TokenPollingSuperSecret4321"
INTERVAL = 0.05
GUARD = 10.0  # seconds; only stops a broken test from hanging

HAS_OPTIMIZELY_CONFIG = importlib.util.find_spec("optimizely_async.config.optimizely_config") is not None


# ---------------------------------------------------------------------------- datafiles


def datafile(
    revision: str,
    *,
    variation: str = "v1",
    enabled: bool = True,
    color: str = "red",
    padding: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One A/B test ``checkout`` (everyone goes to ``variation``), one flag ``banner`` with a rollout that
    is ``enabled`` for everyone with variable ``color``, and an event ``purchase``. ``padding`` adds that many
    extra events, to make the datafile large."""
    events = [{"id": "e1", "key": "purchase", "experimentIds": ["x1"]}]
    events += [{"id": f"pad{i}", "key": f"padding_event_{i:06d}", "experimentIds": []} for i in range(padding)]
    return {
        "version": "4",
        "accountId": "1",
        "projectId": "2",
        "revision": revision,
        "anonymizeIP": False,
        "sendFlagDecisions": True,
        "attributes": [{"id": "a1", "key": "plan"}],
        "audiences": [],
        "groups": [],
        "events": events,
        "experiments": [
            {
                "id": "x1",
                "key": "checkout",
                "status": "Running",
                "layerId": "l1",
                "audienceIds": [],
                "forcedVariations": {},
                "variations": [{"id": "v1", "key": "control"}, {"id": "v2", "key": "treatment"}],
                "trafficAllocation": [{"entityId": variation, "endOfRange": 10000}],
            }
        ],
        "featureFlags": [
            {
                "id": "f1",
                "key": "banner",
                "rolloutId": "r1",
                "experimentIds": [],
                "variables": [{"id": "var1", "key": "color", "type": "string", "defaultValue": "grey"}],
            }
        ],
        "rollouts": [
            {
                "id": "r1",
                "experiments": [
                    {
                        "id": "re1",
                        "key": "everyone",
                        "status": "Running",
                        "layerId": "r1",
                        "audienceIds": [],
                        "forcedVariations": {},
                        "variations": [
                            {
                                "id": "rv1",
                                "key": "rv",
                                "featureEnabled": enabled,
                                "variables": [{"id": "var1", "value": color}],
                            }
                        ],
                        "trafficAllocation": [{"entityId": "rv1", "endOfRange": 10000}],
                    }
                ],
            }
        ],
        **extra,
    }


REV1 = datafile("1")
REV2 = datafile("2", variation="v2", color="blue")
REV3 = datafile("3", variation="v1", enabled=False, color="green")


# ---------------------------------------------------------------------------- helpers


class RecordingDispatcher(KitDispatcher):
    """The test kit's in-memory dispatcher, read back by revision."""

    def visitors(self) -> list[tuple[str, dict[str, Any]]]:
        """(payload revision, visitor) for every visitor of every request, in order."""
        return [(r.payload["revision"], v) for r in self.requests for v in r.payload["visitors"]]

    def conversions(self) -> list[tuple[str, str, str]]:
        """(revision, user id, event key) of every conversion."""
        out: list[tuple[str, str, str]] = []
        for revision, visitor in self.visitors():
            for snapshot in visitor["snapshots"]:
                if not snapshot.get("decisions"):
                    out.extend((revision, visitor["visitor_id"], e["key"]) for e in snapshot["events"])
        return out

    def impressions(self) -> list[tuple[str, str, str]]:
        """(revision, user id, variation key) of every impression."""
        out: list[tuple[str, str, str]] = []
        for revision, visitor in self.visitors():
            for snapshot in visitor["snapshots"]:
                out.extend(
                    (revision, visitor["visitor_id"], d["metadata"]["variation_key"])
                    for d in snapshot.get("decisions", [])
                )
        return out


async def wait_until(predicate: Callable[[], bool], limit: float = GUARD) -> None:
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.005)


async def wait_for_requests(server: DatafileServer, count: int) -> None:
    """Wait until the server has answered ``count`` more requests than now."""
    target = len(server.requests) + count
    await wait_until(lambda: len(server.requests) >= target)


def revision_of(client: AsyncOptimizely) -> str | None:
    config = client.config
    return config.revision if config is not None else None


def all_log_records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(logger name, full text incl. traceback and args) of every captured record."""
    out = []
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        out.append((record.name, text))
    return out


@pytest.fixture
def server() -> Iterator[DatafileServer]:
    with DatafileServer() as srv:
        srv.set_datafile(REV1)
        yield srv


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


def make_client(server: DatafileServer, dispatcher: RecordingDispatcher, **kwargs: Any) -> AsyncOptimizely:
    kwargs.setdefault("sdk_key", SDK_KEY)
    kwargs.setdefault("datafile_url_template", f"http://127.0.0.1:{server.port}/datafiles/{{sdk_key}}.json")
    kwargs.setdefault("update_interval", INTERVAL)
    return AsyncOptimizely(event_dispatcher=dispatcher, **kwargs)


# ---------------------------------------------------------------------------- readiness


@pytest.mark.anyio
async def test_ready_after_the_first_fetch(server: DatafileServer, dispatcher: RecordingDispatcher) -> None:
    client = make_client(server, dispatcher, update_interval=1.0)
    assert not client.is_ready
    assert client.config is None
    async with client:
        assert await client.wait_until_ready(GUARD) is True
        # Woken by the first fetch itself, not by the timeout or a later poll.
        assert len(server.requests) == 1
        assert client.is_ready
        assert revision_of(client) == "1"
        assert isinstance(client.config, ProjectConfig)
        assert server.requests[0].path == f"/datafiles/{SDK_KEY}.json"
        assert await client.activate("checkout", "u1") == "control"
        assert await client.is_feature_enabled("banner", "u1") is True
        assert await client.get_feature_variable_string("banner", "color", "u1") == "red"
        # Once ready, later calls return at once.
        assert await client.wait_until_ready(0) is True


@pytest.mark.anyio
async def test_not_ready_before_entering_and_nothing_is_fetched(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    client = make_client(server, dispatcher)
    # The poller runs only inside `async with`; nothing talks to the server before that.
    assert await client.wait_until_ready(0.05) is False
    assert server.requests == []
    async with client:
        assert await client.wait_until_ready(GUARD) is True


@pytest.mark.anyio
async def test_wait_until_ready_times_out_when_the_server_only_fails(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    server.enqueue(*[Status(500, b"oops")] * 10_000)
    client = make_client(server, dispatcher)
    async with client:
        assert await client.wait_until_ready(0.3) is False
        assert not client.is_ready
        assert client.config is None
        assert await client.get_variation("checkout", "u1") is None
    assert len(server.requests) >= 1
    assert server.pending == 10_000 - len(server.requests)  # every request got a 500


@pytest.mark.anyio
async def test_ready_after_failures_recover(server: DatafileServer, dispatcher: RecordingDispatcher) -> None:
    server.enqueue(Status(500), Status(503), Body(b"{not json"))
    client = make_client(server, dispatcher)
    async with client:
        assert await client.wait_until_ready(GUARD) is True
        assert revision_of(client) == "1"
    assert len(server.requests) >= 4


@pytest.mark.anyio
async def test_decisions_before_readiness_return_defaults_at_once(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="optimizely_async")
    # The first fetch hangs (until the server stops); no decision may wait for it.
    server.enqueue(Slow(60.0))
    client = make_client(server, dispatcher)
    async with client:
        await wait_until(lambda: len(server.requests) == 1)
        with anyio.fail_after(GUARD):
            assert await client.activate("checkout", "u1") is None
            assert await client.get_variation("checkout", "u1") is None
            assert await client.is_feature_enabled("banner", "u1") is False
            assert await client.get_enabled_features("u1") == []
            assert await client.get_feature_variable("banner", "color", "u1") is None
            assert await client.get_feature_variable_string("banner", "color", "u1") is None
            assert await client.get_all_feature_variables("banner", "u1") is None
            assert client.get_forced_variation("checkout", "u1") is None
            assert client.set_forced_variation("checkout", "u1", "control") is False
            assert client.get_optimizely_config() is None
            user = client.create_user_context("u1", {"plan": "gold"})
            assert user is not None
            decision = await user.decide("banner")
            assert decision.enabled is False
            assert decision.variation_key is None
            assert decision.reasons == [DecisionMessage.SDK_NOT_READY]
            assert await user.decide_all() == {}
            assert await user.decide_for_keys(["banner"]) == {}
        # Still the one hanging request: the calls neither waited for it nor triggered fetches of their own.
        assert len(server.requests) == 1
        assert not client.is_ready
    assert dispatcher.requests == []
    not_ready = [r for r in caplog.records if "not ready" in r.getMessage().lower()]
    assert len(not_ready) >= 10


# ---------------------------------------------------------------------------- static datafile + sdk_key


@pytest.mark.anyio
async def test_datafile_with_sdk_key_serves_at_once_and_polling_continues(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    server.set_datafile(REV1)
    client = make_client(server, dispatcher, datafile=json.dumps(REV1))
    updates: list[str | None] = []
    client.notification_center.add_notification_listener(
        NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: updates.append(revision_of(client))
    )
    # Usable before entering and before any request.
    assert client.is_ready
    assert await client.wait_until_ready(0) is True
    assert await client.get_variation("checkout", "u1") == "control"
    assert server.requests == []
    async with client:
        assert await client.get_variation("checkout", "u1") == "control"
        await wait_for_requests(server, 3)
        # The server has the revision the client started with: no update, no notification.
        assert updates == []
        assert revision_of(client) == "1"
        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
        assert await client.get_variation("checkout", "u1") == "treatment"
        assert await client.get_feature_variable_string("banner", "color", "u1") == "blue"
    assert updates == ["2"]


@pytest.mark.anyio
async def test_large_static_datafile_with_sdk_key_is_adopted(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    # Over the inline-parse limit: parsed in a worker thread on entering.
    big = json.dumps(datafile("1", padding=6000))
    assert len(big) > 256 * 1024
    server.set_datafile(big)
    client = make_client(server, dispatcher, datafile=big)
    updates: list[str | None] = []
    client.notification_center.add_notification_listener(
        NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: updates.append(revision_of(client))
    )
    async with client:
        assert await client.wait_until_ready(0) is True
        assert revision_of(client) == "1"
        await wait_for_requests(server, 2)
        assert updates == []  # the same revision from the server is not an update
        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
    assert updates == ["2"]


# ---------------------------------------------------------------------------- live updates


@pytest.mark.anyio
async def test_live_update_changes_decisions_and_notifies_once_per_revision(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="optimizely_async")
    client = make_client(server, dispatcher)
    sync_calls: list[tuple[tuple[Any, ...], str | None]] = []
    async_calls: list[tuple[tuple[Any, ...], str | None]] = []

    def on_update_sync(*args: Any) -> None:
        sync_calls.append((args, revision_of(client)))

    async def on_update_async(*args: Any) -> None:
        await anyio.sleep(0)
        async_calls.append((args, revision_of(client)))

    center = client.notification_center
    assert center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, on_update_sync) > 0
    assert center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, on_update_async) > 0

    async with client:
        assert await client.wait_until_ready(GUARD)
        assert await client.get_variation("checkout", "u1") == "control"
        assert await client.get_all_feature_variables("banner", "u1") == {"color": "red"}
        await wait_for_requests(server, 3)  # 304s: no new notification
        assert [rev for _, rev in sync_calls] == ["1"]

        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
        assert await client.get_variation("checkout", "u1") == "treatment"
        assert await client.get_all_feature_variables("banner", "u1") == {"color": "blue"}
        await wait_for_requests(server, 3)

        # New bytes (new ETag) with the same revision: parsed, but not an update.
        server.set_datafile(datafile("2", variation="v2", color="blue", botFiltering=True))
        await wait_for_requests(server, 3)
        assert revision_of(client) == "2"

        server.set_datafile(REV3)
        await wait_until(lambda: revision_of(client) == "3")
        assert await client.is_feature_enabled("banner", "u1") is False
        assert await client.get_feature_variable_string("banner", "color", "u1") == "grey"
        await wait_for_requests(server, 3)
        await wait_until(lambda: len(async_calls) == 3)

    # Exactly once per revision change, no arguments, after the new config is in place.
    assert sync_calls == [((), "1"), ((), "2"), ((), "3")]
    assert async_calls == [((), "1"), ((), "2"), ((), "3")]
    # Each new revision is logged once (by the datafile source, under the library's logger), not twice.
    messages = [
        r.getMessage() for r in caplog.records if r.name.startswith("optimizely_async") and r.levelno >= logging.INFO
    ]
    assert sum("Old revision number: None. New revision number: 1." in m for m in messages) == 1
    assert sum("Old revision number: 1. New revision number: 2." in m for m in messages) == 1
    assert sum("Old revision number: 2. New revision number: 3." in m for m in messages) == 1


@pytest.mark.anyio
async def test_a_failing_update_listener_does_not_stop_polling(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    client = make_client(server, dispatcher)
    seen: list[str | None] = []

    def boom() -> None:
        raise RuntimeError("listener boom")

    client.notification_center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, boom)
    client.notification_center.add_notification_listener(
        NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: seen.append(revision_of(client))
    )
    async with client:
        assert await client.wait_until_ready(GUARD)
        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
    assert seen == ["1", "2"]


class GateProfileService:
    """An async user profile service whose lookup waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.waiting = 0

    async def lookup(self, user_id: str) -> dict[str, Any] | None:
        self.waiting += 1
        await self.gate.wait()
        return None

    async def save(self, user_profile: dict[str, Any]) -> None:
        return None


@pytest.mark.anyio
async def test_a_decision_in_progress_uses_one_consistent_config(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    ups = GateProfileService()
    client = make_client(server, dispatcher, user_profile_service=ups)
    results: dict[str, Any] = {}

    async def activate() -> None:
        results["activate"] = await client.activate("checkout", "u1")

    async def variables() -> None:
        results["variables"] = await client.get_all_feature_variables("banner", "u2")

    async def decide() -> None:
        user = client.create_user_context("u3")
        assert user is not None
        decision = await user.decide("banner")
        results["decide"] = (decision.enabled, decision.variables)

    async with client:
        assert await client.wait_until_ready(GUARD)
        async with anyio.create_task_group() as tg:
            tg.start_soon(activate)
            tg.start_soon(variables)
            tg.start_soon(decide)
            await wait_until(lambda: ups.waiting == 3)
            # All three decisions have started on revision 1; revision 3 arrives while they wait.
            server.set_datafile(REV3)
            await wait_until(lambda: revision_of(client) == "3")
            ups.gate.set()
        # Fresh calls see revision 3.
        assert await client.activate("checkout", "u4") == "control"
        assert await client.is_feature_enabled("banner", "u4") is False
        await client.flush()

    assert results["activate"] == "control"
    assert results["variables"] == {"color": "red"}
    assert results["decide"] == (True, {"color": "red"})
    impressions = dispatcher.impressions()
    # The in-flight activate's impression carries revision 1, not the revision current when it was sent.
    assert ("1", "u1", "control") in impressions
    assert ("1", "u3", "rv") in impressions
    assert ("3", "u4", "control") in impressions
    assert all(rev == "3" for rev, user, _ in impressions if user == "u4")


# ---------------------------------------------------------------------------- keeping the last good config


@pytest.mark.anyio
async def test_not_modified_keeps_the_config(server: DatafileServer, dispatcher: RecordingDispatcher) -> None:
    client = make_client(server, dispatcher)
    async with client:
        assert await client.wait_until_ready(GUARD)
        config = client.config
        first = len(server.requests)
        await wait_for_requests(server, 4)
        assert client.config is config
        etag = server.requests[0].header("if-none-match")
        assert etag is None
        # Every later request was conditional on the served ETag, so the server answered 304.
        later = server.requests[first:]
        assert later and all(r.header("if-none-match") is not None for r in later)
        assert len({r.header("if-none-match") for r in later}) == 1
        assert await client.get_variation("checkout", "u1") == "control"


@pytest.mark.anyio
async def test_invalid_datafiles_and_server_errors_keep_the_last_good_config(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="optimizely_async")
    client = make_client(server, dispatcher)
    updates: list[str | None] = []
    client.notification_center.add_notification_listener(
        NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: updates.append(revision_of(client))
    )
    async with client:
        assert await client.wait_until_ready(GUARD)
        config = client.config
        server.enqueue(
            Body(b'{"version": "4", "revision": '),  # truncated JSON
            Status(500, b"internal error"),
            Body(json.dumps(datafile("9", version="99")).encode()),  # unsupported version
            Body(json.dumps({"revision": "10"}).encode()),  # not a datafile
            Status(503),
            Body(b""),
        )
        await wait_until(lambda: server.pending == 0)
        await wait_for_requests(server, 1)
        assert client.config is config
        assert await client.get_variation("checkout", "u1") == "control"
        assert await client.get_all_feature_variables("banner", "u1") == {"color": "red"}
        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
    assert updates == ["1", "2"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("Keeping revision 1" in m for m in errors) == 6


# ---------------------------------------------------------------------------- track() before readiness


@pytest.mark.anyio
async def test_track_before_readiness_is_delivered_once_the_config_arrives(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    server.enqueue(Status(500), Status(500), Status(500))
    client = make_client(server, dispatcher)
    await client.track("purchase", "early", {"plan": "gold"}, {"revenue": 4200})
    async with client:
        assert not client.is_ready
        await client.track("purchase", "while_failing")
        await client.track("unknown_event", "while_failing")  # not in the datafile: logged, not sent
        held = client.stats()
        assert (held.submitted, held.queued, held.requests) == (3, 3, 0)  # held, counted as queued
        assert await client.wait_until_ready(GUARD)
        await client.track("purchase", "after")
        await client.flush()
        sent = client.stats()
        # The unknown event was dropped on replay (not in the datafile); the others were sent once each.
        assert (sent.submitted, sent.queued, sent.delivered) == (4, 0, 3)
        assert sent.dropped == {"unknown_event": 1}
    report = await client.close()
    assert report.delivered == 3
    assert report.dropped == {"unknown_event": 1}
    assert dispatcher.conversions() == [
        ("1", "early", "purchase"),
        ("1", "while_failing", "purchase"),
        ("1", "after", "purchase"),
    ]
    [early] = [v for _, v in dispatcher.visitors() if v["visitor_id"] == "early"]
    assert early["snapshots"][0]["events"][0]["revenue"] == 4200
    assert {"key": "plan", "value": "gold"}.items() <= early["attributes"][0].items()


@pytest.mark.anyio
async def test_a_large_static_datafile_is_parsed_at_construction(
    dispatcher: RecordingDispatcher,
) -> None:
    big = json.dumps(datafile("1", padding=6000))
    assert len(big) > 256 * 1024
    client = AsyncOptimizely(datafile=big, event_dispatcher=dispatcher)
    assert client.is_ready  # at once, unpaced: nothing else waits on a client being constructed
    await client.track("purchase", "early")
    async with client:
        assert client.is_ready
        await client.flush()
    report = await client.close()
    assert "not_ready" not in report.dropped
    assert dispatcher.conversions() == [("1", "early", "purchase")]


@pytest.mark.anyio
async def test_track_is_dropped_as_not_ready_when_the_client_closes_without_config(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    server.enqueue(*[Status(500)] * 10_000)
    client = make_client(server, dispatcher)
    async with client:
        for i in range(3):
            await client.track("purchase", f"u{i}")
        assert (client.stats().queued, client.stats().delivered) == (3, 0)
        assert await client.wait_until_ready(0.1) is False
    report = await client.close()
    assert report.dropped.get("not_ready") == 3
    assert dispatcher.requests == []
    # After closing, track() is dropped at once as well.
    await client.track("purchase", "late")
    assert (await client.close()).dropped.get("not_ready") == 3  # the report is final
    assert client.stats().dropped.get("not_ready") == 4


class DropRecorder:
    """An ``on_drop`` callback, sync or async, that records ``(events, reason)``."""

    def __init__(self, is_async: bool) -> None:
        self.calls: list[tuple[list[Any], str]] = []
        self.callback: Callable[..., Any] = self._async if is_async else self._sync

    def _sync(self, events: Any, reason: str) -> None:
        self.calls.append((list(events), reason))

    async def _async(self, events: Any, reason: str) -> None:
        await anyio.sleep(0)
        self.calls.append((list(events), reason))

    def counts(self) -> list[tuple[int, str]]:
        return [(len(events), reason) for events, reason in self.calls]


@pytest.mark.anyio
@pytest.mark.parametrize("with_listener", [False, True])
async def test_a_held_track_is_sent_with_the_time_of_the_call(
    server: DatafileServer, dispatcher: RecordingDispatcher, with_listener: bool
) -> None:
    client = make_client(server, dispatcher)
    seen: list[dict[str, Any]] = []
    if with_listener:  # the event is then built at replay (with its uuid) rather than by the queue
        client.notification_center.add_notification_listener(NotificationType.TRACK, lambda *a: seen.append(a[4]))
    before = now_ms()
    await client.track("purchase", "early", None, {"revenue": 5})
    after = now_ms()
    assert (client.stats().queued, client.is_ready) == (1, False)  # held: no datafile yet
    await anyio.sleep(0.3)  # the datafile arrives measurably later than the call
    async with client:
        assert await client.wait_until_ready(GUARD)
        await client.flush()
    assert dispatcher.conversions() == [("1", "early", "purchase")]
    [(_, visitor)] = dispatcher.visitors()
    [event] = visitor["snapshots"][0]["events"]
    assert before <= event["timestamp"] <= after
    if with_listener:
        [log_event] = seen
        assert log_event["params"]["visitors"][0]["snapshots"][0]["events"][0]["timestamp"] == event["timestamp"]


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_a_held_track_of_an_event_missing_from_the_datafile_is_dropped_as_unknown_event(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="optimizely_async")
    drops = DropRecorder(is_async)
    client = make_client(server, dispatcher, on_drop=drops.callback)
    before = now_ms()
    await client.track("no_such_event", "u1", {"plan": "gold"}, {"revenue": 1})
    await client.track("purchase", "u2")
    assert (client.stats().submitted, client.stats().queued) == (2, 2)
    async with client:
        assert await client.wait_until_ready(GUARD)
        await client.flush()
        await wait_until(lambda: len(drops.calls) == 1)
        stats = client.stats()
        assert (stats.submitted, stats.queued, stats.delivered) == (2, 0, 1)
        assert stats.dropped == {"unknown_event": 1}
    report = await client.close()
    assert (report.submitted, report.delivered, report.dropped) == (2, 1, {"unknown_event": 1})
    assert dispatcher.conversions() == [("1", "u2", "purchase")]
    [([held], reason)] = drops.calls
    assert reason == "unknown_event"
    assert isinstance(held, HeldTrack)
    assert (held.event_key, held.user_id, held.attributes, held.event_tags) == (
        "no_such_event",
        "u1",
        {"plan": "gold"},
        {"revenue": 1},
    )
    assert before <= held.timestamp <= now_ms()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no_such_event" in m and "unknown_event" in m for m in warnings)


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_held_tracks_dropped_at_close_reach_on_drop_as_not_ready(
    server: DatafileServer, dispatcher: RecordingDispatcher, is_async: bool
) -> None:
    server.enqueue(*[Status(500)] * 10_000)
    drops = DropRecorder(is_async)
    client = make_client(server, dispatcher, on_drop=drops.callback)
    async with client:
        for i in range(3):
            await client.track("purchase", f"u{i}", {"plan": "gold"})
        assert drops.calls == []
    report = await client.close()
    assert report.dropped == {"not_ready": 3}
    assert drops.counts() == [(3, "not_ready")]
    [(events, _)] = drops.calls
    assert all(isinstance(e, HeldTrack) for e in events)
    assert [(e.event_key, e.user_id, e.attributes) for e in events] == [
        ("purchase", f"u{i}", {"plan": "gold"}) for i in range(3)
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_a_track_after_close_without_config_reaches_on_drop_as_not_ready(
    server: DatafileServer, dispatcher: RecordingDispatcher, is_async: bool
) -> None:
    server.enqueue(*[Status(500)] * 10_000)
    drops = DropRecorder(is_async)
    client = make_client(server, dispatcher, on_drop=drops.callback)
    async with client:
        pass
    assert drops.calls == []
    await client.track("purchase", "late", None, {"value": 2.5})
    assert drops.counts() == [(1, "not_ready")]
    [([held], _)] = drops.calls
    assert (held.event_key, held.user_id, held.event_tags) == ("purchase", "late", {"value": 2.5})
    assert client.stats().dropped == {"not_ready": 1}


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_a_track_beyond_the_held_limit_reaches_on_drop_as_not_ready(
    server: DatafileServer, dispatcher: RecordingDispatcher, monkeypatch: pytest.MonkeyPatch, is_async: bool
) -> None:
    monkeypatch.setattr(client_module, "_PENDING_TRACK_LIMIT", 2)
    server.enqueue(*[Status(500)] * 10_000)
    drops = DropRecorder(is_async)
    client = make_client(server, dispatcher, on_drop=drops.callback)
    async with client:
        for i in range(3):
            await client.track("purchase", f"u{i}")
        await wait_until(lambda: len(drops.calls) == 1)
        assert drops.counts() == [(1, "not_ready")]
        assert drops.calls[0][0][0].user_id == "u2"  # the one that did not fit
        stats = client.stats()
        assert (stats.submitted, stats.queued, stats.dropped) == (3, 2, {"not_ready": 1})
    assert drops.counts() == [(1, "not_ready"), (2, "not_ready")]  # the two held ones, at close
    assert (await client.close()).dropped == {"not_ready": 3}


@pytest.mark.anyio
@pytest.mark.parametrize("is_async", [False, True])
async def test_a_failing_on_drop_for_held_tracks_is_isolated(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    server.enqueue(*[Status(500)] * 10_000)
    calls: list[str] = []

    def boom(events: Any, reason: str) -> None:
        calls.append(reason)
        raise RuntimeError("on_drop failed")

    async def boom_async(events: Any, reason: str) -> None:
        boom(events, reason)

    client = make_client(server, dispatcher, on_drop=boom_async if is_async else boom)
    async with client:
        await client.track("purchase", "u1")
    report = await client.close()
    await client.track("purchase", "u2")  # must not raise either
    assert calls == ["not_ready", "not_ready"]
    assert report.dropped == {"not_ready": 1}
    assert client.stats().dropped == {"not_ready": 2}
    assert any("on_drop callback raised" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- datafile request timeout


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), "5", None, True])
def test_datafile_request_timeout_is_validated(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="datafile_request_timeout"):
        AsyncOptimizely(sdk_key=SDK_KEY, datafile_request_timeout=value)


@pytest.mark.anyio
async def test_a_datafile_request_slower_than_its_timeout_fails_and_the_config_is_kept(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="optimizely_async")
    client = make_client(server, dispatcher, datafile_request_timeout=0.2)
    # The slow reply takes GUARD seconds: only the 0.2 s timeout lets the client move on within GUARD / 2.
    with anyio.fail_after(GUARD / 2):
        async with client:
            assert await client.wait_until_ready(GUARD)
            config = client.config
            server.enqueue(Slow(GUARD))
            await wait_until(lambda: server.pending == 0)  # the slow request is at the server
            assert client.config is config
            await wait_until(lambda: any("timed out after 0.2 s" in r.getMessage() for r in caplog.records))
            assert client.config is config
            assert await client.get_variation("checkout", "u1") == "control"
            server.set_datafile(REV2)
            await wait_until(lambda: revision_of(client) == "2")  # polling carries on after the failure
    [failure] = [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]
    assert "Keeping revision 1" in failure


@pytest.mark.anyio
async def test_wait_until_ready_after_close_returns_false_at_once(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    server.enqueue(*[Status(500)] * 10_000)
    client = make_client(server, dispatcher)
    async with client:
        pass
    requests = len(server.requests)
    with anyio.fail_after(GUARD / 2):
        assert await client.wait_until_ready(GUARD) is False
    assert len(server.requests) == requests


@pytest.mark.anyio
async def test_a_waiter_is_released_when_the_client_closes(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    server.enqueue(*[Status(500)] * 10_000)
    client = make_client(server, dispatcher)
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await client.wait_until_ready(GUARD * 10))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg, client:
            tg.start_soon(waiter)
            await wait_for_requests(server, 1)
    assert result == [False]


# ---------------------------------------------------------------------------- the access token and the logs


@pytest.mark.anyio
async def test_access_token_goes_only_to_the_configured_host_and_is_never_logged(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with DatafileServer() as other:
        other.set_datafile(REV2)
        # The first poll is redirected to another host (a different port is a different origin).
        server.enqueue(Redirect(f"{other.url}/mirror/{SDK_KEY}.json", code=307), Status(401))
        client = make_client(
            server,
            dispatcher,
            datafile_access_token=TOKEN,
            datafile_url_template=f"http://127.0.0.1:{server.port}/auth/{{sdk_key}}.json",
        )
        updates: list[str | None] = []
        client.notification_center.add_notification_listener(
            NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: updates.append(revision_of(client))
        )
        async with client:
            assert await client.wait_until_ready(GUARD)
            await wait_until(lambda: revision_of(client) == "1")
            await wait_for_requests(server, 2)
            assert await client.get_variation("checkout", "u1") == "control"
        assert updates == ["2", "1"]  # the mirror's datafile, then (after the 401) the configured host's
        assert other.requests, "the redirect was not followed"
        assert all(r.header("authorization") is None for r in other.requests)
    assert server.requests
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in server.requests)
    assert all(r.path == f"/auth/{SDK_KEY}.json" for r in server.requests)

    records = all_log_records(caplog)
    assert records, "nothing was logged; the check below would prove nothing"
    assert any("401" in text for _, text in records)  # the auth failure was logged (redacted)
    for name, text in records:
        assert TOKEN not in text, f"{name} logged the access token"
        assert TOKEN[:12] not in text
        assert SDK_KEY not in text, f"{name} logged the SDK key: {text}"  # httpx's request log included


@pytest.mark.anyio
async def test_sdk_key_appears_in_no_log_record_of_any_logger(
    server: DatafileServer, dispatcher: RecordingDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(server, dispatcher)
    async with client:
        assert await client.wait_until_ready(GUARD)
    leaks = [name for name, text in all_log_records(caplog) if SDK_KEY in text]
    assert leaks == []


# ---------------------------------------------------------------------------- OptimizelyConfig


@pytest.mark.anyio
async def test_get_optimizely_config_follows_updates(server: DatafileServer, dispatcher: RecordingDispatcher) -> None:
    if not HAS_OPTIMIZELY_CONFIG:
        pytest.skip("optimizely_async.config.optimizely_config does not exist yet")
    client = make_client(server, dispatcher)
    seen_in_listener: list[str | None] = []

    def on_update() -> None:
        projection = client.get_optimizely_config()
        seen_in_listener.append(projection.revision if projection is not None else None)

    client.notification_center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, on_update)
    async with client:
        assert await client.wait_until_ready(GUARD)
        first = client.get_optimizely_config()
        assert first is not None
        assert first.revision == "1"
        assert client.get_optimizely_config() is first  # built once per revision
        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
        second = client.get_optimizely_config()
        assert second is not None
        assert second.revision == "2"
        assert second is not first
        assert "checkout" in second.experiments_map
        assert "banner" in second.features_map
    # A CONFIG_UPDATE listener already sees the projection of the new revision.
    assert seen_in_listener == ["1", "2"]


@pytest.mark.anyio
async def test_a_replaced_config_is_freed_once_nothing_holds_it(
    server: DatafileServer, dispatcher: RecordingDispatcher
) -> None:
    client = make_client(server, dispatcher)
    async with client:
        assert await client.wait_until_ready(GUARD)
        held = client.config
        assert held is not None
        gone = weakref.ref(held)
        server.set_datafile(REV2)
        await wait_until(lambda: revision_of(client) == "2")
        # Still referenced here, so whole and usable.
        assert held.revision == "1" and "checkout" in held.experiments_by_key
        del held
        await wait_until(lambda: gone() is None)  # freed by reference counting: no collector pass, no thread
        assert await client.get_variation("checkout", "u1") is not None
