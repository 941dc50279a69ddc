"""OptimizelyProvider backed by a SyncOptimizely, through the real openfeature-sdk client: every type and every
error code in both resolution styles and from many threads, status events against a real datafile server,
impressions and tracking to a real event sink on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails

from _datafile_server import DatafileServer, Status
from _of_datafile import EVENT_KEY, datafile
from _sink_server import SinkServer, serve_sink
from optimizely_async import NotificationType, SyncOptimizely
from optimizely_async.errors import ConfigurationError
from optimizely_async.openfeature import OptimizelyProvider

PLAN = EvaluationContext("u-plan", {"plan": "gold"})
GERMAN = EvaluationContext("u-de", {"country": "DE"})
ANYONE = EvaluationContext("u-anyone", {})
COUNTED = EvaluationContext("u-anyone", {"variableKey": "count"})
RATIO_DE = EvaluationContext("u-de", {"country": "DE", "variableKey": "ratio"})

#: (method, flag, default, context, expected value, reason, variant): every type, every reason.
CASES: list[tuple[str, str, Any, EvaluationContext, Any, Reason, str | None]] = [
    ("boolean", "of_flag", False, PLAN, True, Reason.SPLIT, "treat"),
    ("boolean", "off_flag", True, ANYONE, False, Reason.DISABLED, "off"),
    ("boolean", "empty_flag", True, ANYONE, False, Reason.DEFAULT, None),
    ("string", "of_flag", "d", GERMAN, "de", Reason.TARGETING_MATCH, "de_on"),
    ("string", "off_flag", "d", ANYONE, "d", Reason.DISABLED, "off"),
    ("integer", "of_flag", 0, COUNTED, 4, Reason.DEFAULT, "everyone_on"),
    ("float", "of_flag", 0.0, RATIO_DE, 1.5, Reason.TARGETING_MATCH, "de_on"),
    (
        "object",
        "of_flag",
        {},
        GERMAN,
        {"value": "de", "count": 3, "ratio": 1.5, "cfg": {"a": 3}, "flag": True},
        Reason.TARGETING_MATCH,
        "de_on",
    ),
]


def register(provider: OptimizelyProvider) -> OpenFeatureClient:
    domain = f"sync-{uuid.uuid4().hex}"
    api.set_provider_and_wait(provider, domain)
    return api.get_client(domain)


def sync_call(of: OpenFeatureClient, kind: str) -> Callable[..., FlagEvaluationDetails[Any]]:
    method: Callable[..., FlagEvaluationDetails[Any]] = getattr(of, f"get_{kind}_details")
    return method


def async_call(of: OpenFeatureClient, kind: str) -> Callable[..., Any]:
    method: Callable[..., Any] = getattr(of, f"get_{kind}_details_async")
    return method


def check(details: FlagEvaluationDetails[Any], value: Any, reason: Reason, variant: str | None) -> None:
    assert (details.value, details.reason, details.variant, details.error_code) == (value, reason, variant, None)
    assert type(details.value) is type(value)


def assert_error(details: FlagEvaluationDetails[Any], default: Any, code: ErrorCode) -> None:
    assert (details.value, details.reason, details.error_code) == (default, Reason.ERROR, code)
    assert details.error_message


@pytest.fixture
def static_client() -> Iterator[SyncOptimizely]:
    with SyncOptimizely(datafile=datafile(), event_endpoint="http://127.0.0.1:9/v1/events", close_timeout=0.2) as c:
        yield c


@pytest.fixture
def of(static_client: SyncOptimizely) -> Iterator[OpenFeatureClient]:
    yield register(OptimizelyProvider(static_client))
    api.clear_providers()


# ---------------------------------------------------------------------------- every type


def test_every_type_sync_from_many_threads(of: OpenFeatureClient) -> None:
    """No event loop anywhere: 16 threads each run every case several times."""
    failures: list[str] = []

    def worker() -> None:
        for _ in range(5):
            for kind, flag, default, context, value, reason, variant in CASES:
                got = sync_call(of, kind)(flag, default, context)
                if (got.value, got.reason, got.variant, got.error_code) != (value, reason, variant, None):
                    failures.append(f"{kind} {flag}: {got}")

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures[:3]
    for kind, flag, default, context, value, reason, variant in CASES:
        check(sync_call(of, kind)(flag, default, context), value, reason, variant)


@pytest.mark.anyio
async def test_every_type_async_equals_sync(of: OpenFeatureClient) -> None:
    """The async methods decide inline on any event loop (the SyncOptimizely has no loop of its own to use)."""
    for kind, flag, default, context, value, reason, variant in CASES:
        details = await async_call(of, kind)(flag, default, context)
        check(details, value, reason, variant)
        assert details.flag_metadata == sync_call(of, kind)(flag, default, context).flag_metadata
    named = await of.get_integer_details_async(
        "of_flag", 0, EvaluationContext("u-plan", {"plan": "gold", "variableKey": "count"})
    )
    assert named.flag_metadata == {"flagKey": "of_flag", "ruleKey": "of_test", "variableKey": "count"}
    # Many concurrent async evaluations on one loop.
    results: list[Any] = []

    async def one(index: int) -> None:
        results.append(
            await of.get_string_value_async("of_flag", "d", EvaluationContext(f"u{index}", {"country": "DE"}))
        )

    async with anyio.create_task_group() as tg:
        for index in range(50):
            tg.start_soon(one, index)
    assert results == ["de"] * 50


# ---------------------------------------------------------------------------- every error code


class _Exploding(Mapping[str, Any]):
    """Attributes that fail when read (the provider's last line of defence turns that into GENERAL)."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("attributes exploded")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("attributes exploded")

    def __len__(self) -> int:
        return 1


def error_cases(of: OpenFeatureClient) -> list[tuple[str, Any, EvaluationContext, str, ErrorCode]]:
    ratio = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "ratio"})
    missing = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "nope"})
    return [
        ("boolean", True, PLAN, "no_such_flag", ErrorCode.FLAG_NOT_FOUND),
        ("string", "d", missing, "of_flag", ErrorCode.FLAG_NOT_FOUND),
        ("string", "d", EvaluationContext(None, {}), "of_flag", ErrorCode.TARGETING_KEY_MISSING),
        ("float", 0.5, EvaluationContext("", {}), "of_flag", ErrorCode.TARGETING_KEY_MISSING),
        ("string", "d", COUNTED, "of_flag", ErrorCode.TYPE_MISMATCH),
        ("integer", 9, ratio, "of_flag", ErrorCode.TYPE_MISMATCH),
        ("object", {"x": 1}, ratio, "of_flag", ErrorCode.TYPE_MISMATCH),
    ]


@pytest.mark.anyio
async def test_error_codes_in_both_styles(of: OpenFeatureClient) -> None:
    for kind, default, context, flag, code in error_cases(of):
        assert_error(await async_call(of, kind)(flag, default, context), default, code)
        assert_error(await anyio.to_thread.run_sync(sync_call(of, kind), flag, default, context), default, code)


def test_provider_not_ready_and_general_at_the_provider(static_client: SyncOptimizely) -> None:
    """Asked directly: the OpenFeature client refuses a NOT_READY provider itself, and turns its own failures
    (reading exploding attributes) into GENERAL before the provider sees them."""
    with SyncOptimizely(
        sdk_key="never-served", datafile_url_template="http://127.0.0.1:9/{sdk_key}", close_timeout=0.2
    ) as unready:
        provider = OptimizelyProvider(unready, health_check_interval=0.05)
        assert_error(provider.resolve_boolean_details("of_flag", True, PLAN), True, ErrorCode.PROVIDER_NOT_READY)
        for backend in ("asyncio", "trio"):
            details = anyio.run(provider.resolve_string_details_async, "of_flag", "d", PLAN, backend=backend)
            assert (details.value, details.error_code) == ("d", ErrorCode.PROVIDER_NOT_READY)
        provider.shutdown()
    ready = OptimizelyProvider(static_client)
    exploding = EvaluationContext("u-1", _Exploding())
    general = ready.resolve_integer_details("of_flag", 5, exploding)
    assert (general.value, general.error_code) == (5, ErrorCode.GENERAL)
    assert "attributes exploded" in (general.error_message or "")
    for backend in ("asyncio", "trio"):
        general_async = anyio.run(ready.resolve_float_details_async, "of_flag", 0.5, exploding, backend=backend)
        assert (general_async.value, general_async.error_code) == (0.5, ErrorCode.GENERAL)
    ready.shutdown()


# ---------------------------------------------------------------------------- impressions and tracking


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    async with serve_sink() as server:
        yield server


@pytest.mark.anyio
async def test_impressions_and_tracking_reach_the_sink(sink: SinkServer) -> None:
    client = SyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)
    of = register(OptimizelyProvider(client))
    try:
        await of.get_boolean_value_async(
            "of_flag", False, EvaluationContext("u-plan", {"plan": "gold", "variableKey": "count"})
        )
        await anyio.to_thread.run_sync(of.get_string_value, "of_flag", "d", GERMAN)
        # Tracking on this event loop (never blocks it) and from a worker thread.
        start = time.perf_counter()
        of.track(EVENT_KEY, EvaluationContext("t-1", {"plan": "gold"}), TrackingEventDetails(3.5, {"revenue": 1200}))
        assert time.perf_counter() - start < 0.05
        await anyio.to_thread.run_sync(of.track, EVENT_KEY, EvaluationContext("t-2", {}))
        of.track(EVENT_KEY, EvaluationContext(None, {}))  # no user: logged, not sent
        await anyio.to_thread.run_sync(client.flush)
    finally:
        api.clear_providers()
        report = await anyio.to_thread.run_sync(client.close)
    visitors = [v for r in sink.received for v in r.payload["visitors"]]
    impressions = [v for v in visitors if v["snapshots"][0].get("decisions")] if visitors else []
    assert [v["visitor_id"] for v in impressions] == ["u-plan", "u-de"]
    first = impressions[0]["snapshots"][0]["decisions"][0]["metadata"]
    assert (first["flag_key"], first["rule_key"], first["variation_key"]) == ("of_flag", "of_test", "treat")
    assert "variableKey" not in {a["key"] for a in impressions[0]["attributes"]}
    second = impressions[1]["snapshots"][0]["decisions"][0]["metadata"]
    assert (second["rule_key"], second["variation_key"], second["rule_type"]) == ("de_rule", "de_on", "rollout")
    events = {
        v["visitor_id"]: v["snapshots"][0]["events"][0] for v in visitors if not v["snapshots"][0].get("decisions")
    }
    assert set(events) == {"t-1", "t-2"}
    assert events["t-1"]["key"] == EVENT_KEY and events["t-1"]["tags"] == {"revenue": 1200, "value": 3.5}
    assert report.delivered == 4 and not report.dropped


# ---------------------------------------------------------------------------- status and events


def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_status_and_events_follow_the_poller() -> None:
    """ERROR without a datafile, READY on the first, CONFIGURATION_CHANGED on a new revision, STALE while
    fetches fail, READY again; no event loop in the test, the checks run on the client's loop thread."""
    with (
        DatafileServer() as server,
        SyncOptimizely(
            sdk_key="sync-status",
            datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
            update_interval=0.2,
            event_endpoint="http://127.0.0.1:9/v1/events",
            close_timeout=0.2,
        ) as client,
    ):
        provider = OptimizelyProvider(client, ready_timeout=0.3, stale_after_failures=2, health_check_interval=0.02)
        domain = f"sync-status-{uuid.uuid4().hex}"
        of = api.get_client(domain)
        seen: list[tuple[ProviderEvent, EventDetails]] = []
        lock = threading.Lock()

        def kinds() -> list[ProviderEvent]:
            with lock:
                return [kind for kind, _ in seen]

        def handler(kind: ProviderEvent) -> Callable[[EventDetails], None]:
            def record(details: EventDetails) -> None:
                with lock:
                    seen.append((kind, details))

            return record

        try:
            api.set_provider(provider, domain)
            for kind in ProviderEvent:
                of.add_handler(kind, handler(kind))
            wait_for(lambda: ProviderEvent.PROVIDER_ERROR in kinds())
            assert of.get_provider_status() is ProviderStatus.ERROR

            server.set_datafile(datafile("1"))
            wait_for(lambda: ProviderEvent.PROVIDER_READY in kinds())
            assert of.get_string_value("of_flag", "d", PLAN) == "treat-v"

            server.set_datafile(datafile("2", value="second"))
            wait_for(lambda: ProviderEvent.PROVIDER_CONFIGURATION_CHANGED in kinds())
            assert of.get_string_value("of_flag", "d", PLAN) == "second"
            changed = [d for k, d in seen if k is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
            assert "2" in (changed[0].message or "")

            server.enqueue(*[Status(500)] * 4)
            wait_for(lambda: ProviderEvent.PROVIDER_STALE in kinds())
            assert of.get_provider_status() is ProviderStatus.STALE
            assert of.get_string_value("of_flag", "d", PLAN) == "second"  # the last good datafile

            wait_for(lambda: kinds().count(ProviderEvent.PROVIDER_READY) == 2)
            assert kinds() == [
                ProviderEvent.PROVIDER_ERROR,
                ProviderEvent.PROVIDER_READY,
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                ProviderEvent.PROVIDER_STALE,
                ProviderEvent.PROVIDER_READY,
            ]
        finally:
            api.clear_providers()
        # Shutting the provider down leaves the borrowed client running, without the provider's listener.
        assert not client._live().notification_center.has_listeners(NotificationType.OPTIMIZELY_CONFIG_UPDATE)
        assert client.is_feature_enabled("of_flag", "u-plan", {"plan": "gold"})


# ---------------------------------------------------------------------------- ownership


def test_owned_client_is_a_sync_optimizely_closed_on_shutdown() -> None:
    provider = OptimizelyProvider(datafile=datafile(), event_endpoint="http://127.0.0.1:9/v1/events", close_timeout=0.2)
    assert isinstance(provider.client, SyncOptimizely)
    of = register(provider)
    assert of.get_boolean_value("of_flag", False, PLAN) is True
    api.clear_providers()
    provider.client.track(EVENT_KEY, "after-shutdown")
    assert provider.client.stats().dropped.get("closed") == 1


def test_options_a_sync_client_does_not_take_raise() -> None:
    with pytest.raises(ConfigurationError, match="SyncOptimizely"):
        OptimizelyProvider(datafile=datafile(), enqueue_timeout=1.0)
    with pytest.raises(ConfigurationError):
        OptimizelyProvider(SyncOptimizely(datafile=datafile()), datafile=datafile())


@pytest.mark.anyio
async def test_track_on_an_event_loop_before_the_first_datafile_is_counted_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await anyio.to_thread.run_sync(
        lambda: SyncOptimizely(
            sdk_key="never-served", datafile_url_template="http://127.0.0.1:9/{sdk_key}", close_timeout=0.2
        )
    )
    provider = OptimizelyProvider(client)
    try:
        start = time.perf_counter()
        provider.track(EVENT_KEY, EvaluationContext("u-1", {}))
        assert time.perf_counter() - start < 0.1  # SyncOptimizely.track would wait close_timeout for a datafile
        assert "not recorded" in caplog.text
        stats = await anyio.to_thread.run_sync(client.stats)
        assert stats.dropped.get("not_ready") == 1
    finally:
        provider.shutdown()
        await anyio.to_thread.run_sync(client.close)


_FORK_SCRIPT = """
import os, sys, time
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider import ProviderStatus
from _datafile_server import DatafileServer, Status
from _of_datafile import datafile
from optimizely_async import SyncOptimizely
from optimizely_async.openfeature import OptimizelyProvider

with DatafileServer() as server:
    server.set_datafile(datafile("1"))
    client = SyncOptimizely(
        sdk_key="fork-key",
        datafile_url_template=server.url + "/datafiles/{sdk_key}.json",
        update_interval=0.1,
        event_endpoint="http://127.0.0.1:9/v1/events",
        close_timeout=0.2,
    )
    api.set_provider_and_wait(OptimizelyProvider(client, stale_after_failures=2, health_check_interval=0.02))
    of = api.get_client()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            context = EvaluationContext("u-plan", {"plan": "gold"})
            assert of.get_string_value("of_flag", "d", context) == "treat-v"  # starts this process's checks
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and of.get_provider_status() is not ProviderStatus.STALE:
                time.sleep(0.02)
            code = 0 if of.get_provider_status() is ProviderStatus.STALE else 3
        finally:
            os._exit(code)
    server.enqueue(*[Status(500)] * 400)  # both processes poll; each sees failures in a row
    _, status = os.waitpid(pid, 0)
    client.close()
    print("child", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_reports_stale_from_its_own_loop_thread() -> None:
    """gunicorn --preload: the provider is made in the parent; the child's health check runs in the child's
    client (started by the first evaluation there), so the child still reports STALE."""
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{tests.parent / 'src'}{os.pathsep}{tests}"}
    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "child 0" in done.stdout, (done.stdout, done.stderr[-2000:])
