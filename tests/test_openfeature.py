"""OptimizelyProvider through the real openfeature-sdk client: every type, both resolution styles, every error
code, impressions and tracking to a real event sink on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.provider import ProviderStatus
from openfeature.track import TrackingEventDetails

from _of_datafile import EVENT_KEY, datafile
from _sink_server import Reply, SinkServer, serve_sink
from optimizely_async import AsyncOptimizely, NotificationType
from optimizely_async.errors import ConfigurationError
from optimizely_async.openfeature import OptimizelyProvider

pytestmark = pytest.mark.anyio

PLAN = EvaluationContext("u-plan", {"plan": "gold"})
GERMAN = EvaluationContext("u-de", {"country": "DE"})
ANYONE = EvaluationContext("u-anyone", {})


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    async with serve_sink() as server:
        yield server


@pytest.fixture
async def client(sink: SinkServer) -> AsyncIterator[AsyncOptimizely]:
    async with AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60) as optimizely:
        yield optimizely


def bind(provider: OptimizelyProvider) -> OpenFeatureClient:
    """Register ``provider`` under a fresh domain (waiting for its initialize) and return a client of it."""
    domain = f"test-{uuid.uuid4().hex}"
    api.set_provider_and_wait(provider, domain)
    return api.get_client(domain)


@pytest.fixture
async def of(client: AsyncOptimizely) -> AsyncIterator[OpenFeatureClient]:
    provider = OptimizelyProvider(client)  # created on the client's loop
    of_client = bind(provider)
    yield of_client
    api.clear_providers()


# ---------------------------------------------------------------------------- every type, async


async def test_boolean_reasons_variants_and_metadata(of: OpenFeatureClient) -> None:
    split = await of.get_boolean_details_async("of_flag", False, PLAN)
    assert (split.value, split.reason, split.variant) == (True, Reason.SPLIT, "treat")
    assert split.flag_metadata == {"flagKey": "of_flag", "ruleKey": "of_test"}
    assert split.error_code is None

    targeted = await of.get_boolean_details_async("of_flag", False, GERMAN)
    assert (targeted.value, targeted.reason, targeted.variant) == (True, Reason.TARGETING_MATCH, "de_on")
    assert targeted.flag_metadata["ruleKey"] == "de_rule"

    everyone = await of.get_boolean_details_async("of_flag", False, ANYONE)
    assert (everyone.value, everyone.reason, everyone.variant) == (True, Reason.DEFAULT, "everyone_on")

    disabled = await of.get_boolean_details_async("off_flag", True, ANYONE)
    assert (disabled.value, disabled.reason, disabled.variant) == (False, Reason.DISABLED, "off")

    nothing = await of.get_boolean_details_async("empty_flag", True, ANYONE)
    assert (nothing.value, nothing.reason, nothing.variant) == (False, Reason.DEFAULT, None)
    assert nothing.flag_metadata == {"flagKey": "empty_flag"}


async def test_string_integer_float_read_the_value_variable_or_the_named_one(of: OpenFeatureClient) -> None:
    assert (await of.get_string_details_async("of_flag", "dflt", PLAN)).value == "treat-v"
    assert (await of.get_string_details_async("of_flag", "dflt", GERMAN)).value == "de"
    named = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "count"})
    count = await of.get_integer_details_async("of_flag", 0, named)
    assert (count.value, count.reason, count.variant) == (7, Reason.SPLIT, "treat")
    assert count.flag_metadata == {"flagKey": "of_flag", "ruleKey": "of_test", "variableKey": "count"}
    ratio = await of.get_float_details_async(
        "of_flag", 0.0, named.merge(EvaluationContext(None, {"variableKey": "ratio"}))
    )
    assert ratio.value == 2.5
    # An integer variable read as a float is converted.
    as_float = await of.get_float_details_async("of_flag", 0.0, named)
    assert as_float.value == 7.0 and isinstance(as_float.value, float)


async def test_object_is_every_variable_or_the_named_json_one(of: OpenFeatureClient) -> None:
    everything = await of.get_object_details_async("of_flag", {}, GERMAN)
    assert everything.value == {"value": "de", "count": 3, "ratio": 1.5, "cfg": {"a": 3}, "flag": True}
    assert everything.reason == Reason.TARGETING_MATCH
    cfg = await of.get_object_details_async(
        "of_flag", {}, EvaluationContext("u-de", {"country": "DE", "variableKey": "cfg"})
    )
    assert cfg.value == {"a": 3}


async def test_a_disabled_flag_or_no_rule_gives_the_callers_default(of: OpenFeatureClient) -> None:
    off = await of.get_string_details_async("off_flag", "dflt", ANYONE)
    assert (off.value, off.reason, off.variant, off.error_code) == ("dflt", Reason.DISABLED, "off", None)
    off_obj = await of.get_object_details_async("off_flag", {"d": 1}, ANYONE)
    assert (off_obj.value, off_obj.reason) == ({"d": 1}, Reason.DISABLED)
    empty = await of.get_integer_details_async("empty_flag", 42, ANYONE)
    assert (empty.value, empty.reason, empty.variant, empty.error_code) == (42, Reason.DEFAULT, None, None)


# ---------------------------------------------------------------------------- error codes


def _assert_error(details: FlagEvaluationDetails[Any], default: Any, code: ErrorCode) -> None:
    assert details.value == default
    assert details.reason == Reason.ERROR
    assert details.error_code == code
    assert details.error_message


async def test_error_codes_async(of: OpenFeatureClient) -> None:
    _assert_error(await of.get_boolean_details_async("no_such_flag", True, PLAN), True, ErrorCode.FLAG_NOT_FOUND)
    _assert_error(
        await of.get_string_details_async("of_flag", "d", EvaluationContext(None, {})),
        "d",
        ErrorCode.TARGETING_KEY_MISSING,
    )
    _assert_error(
        await of.get_string_details_async("of_flag", "d", EvaluationContext("", {})),
        "d",
        ErrorCode.TARGETING_KEY_MISSING,
    )
    # The provider itself returns the caller's default on a type mismatch (the OpenFeature client's async
    # path would otherwise hand back the mismatched value).
    counted = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "count"})
    _assert_error(await of.get_string_details_async("of_flag", "d", counted), "d", ErrorCode.TYPE_MISMATCH)
    ratio = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "ratio"})
    _assert_error(await of.get_integer_details_async("of_flag", 9, ratio), 9, ErrorCode.TYPE_MISMATCH)
    _assert_error(await of.get_object_details_async("of_flag", {"x": 1}, ratio), {"x": 1}, ErrorCode.TYPE_MISMATCH)
    flag_var = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "flag"})
    _assert_error(await of.get_integer_details_async("of_flag", 9, flag_var), 9, ErrorCode.TYPE_MISMATCH)
    # A variable the flag does not have.
    missing = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "nope"})
    _assert_error(await of.get_string_details_async("of_flag", "d", missing), "d", ErrorCode.FLAG_NOT_FOUND)


async def test_error_codes_sync_from_a_worker_thread(of: OpenFeatureClient) -> None:
    def run() -> list[FlagEvaluationDetails[Any]]:
        counted = EvaluationContext("u-plan", {"plan": "gold", "variableKey": "count"})
        return [
            of.get_boolean_details("no_such_flag", True, PLAN),
            of.get_string_details("of_flag", "d", EvaluationContext(None, {})),
            of.get_string_details("of_flag", "d", counted),
        ]

    not_found, no_key, mismatch = await anyio.to_thread.run_sync(run)
    _assert_error(not_found, True, ErrorCode.FLAG_NOT_FOUND)
    _assert_error(no_key, "d", ErrorCode.TARGETING_KEY_MISSING)
    _assert_error(mismatch, "d", ErrorCode.TYPE_MISMATCH)


async def test_provider_not_ready_before_the_first_datafile() -> None:
    """Asked directly (the OpenFeature client refuses a NOT_READY provider before asking it)."""
    unready = AsyncOptimizely(sdk_key="never-fetched", datafile_url_template="http://127.0.0.1:9/{sdk_key}")
    provider = OptimizelyProvider(unready)
    details = await provider.resolve_boolean_details_async("of_flag", True, PLAN)
    assert (details.value, details.error_code, details.reason) == (True, ErrorCode.PROVIDER_NOT_READY, Reason.ERROR)
    details_sync = await anyio.to_thread.run_sync(provider.resolve_string_details, "of_flag", "d", PLAN)
    assert (details_sync.value, details_sync.error_code) == ("d", ErrorCode.PROVIDER_NOT_READY)
    provider.shutdown()


async def test_sync_evaluation_on_the_loop_thread_returns_the_default_with_general(
    of: OpenFeatureClient, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(5):  # it must not wait for the loop it runs on
        details = of.get_boolean_details("of_flag", False, PLAN)
    _assert_error(details, False, ErrorCode.GENERAL)
    assert "resolve_boolean_details_async" in (details.error_message or "")
    assert "*_async" in caplog.text
    again = of.get_string_details("of_flag", "d", PLAN)
    _assert_error(again, "d", ErrorCode.GENERAL)
    assert caplog.text.count("*_async") == 1  # warned once


# ---------------------------------------------------------------------------- every type, sync


async def test_every_type_sync_from_worker_threads_equals_async(of: OpenFeatureClient) -> None:
    named = EvaluationContext("u-de", {"country": "DE", "variableKey": "ratio"})
    counted = EvaluationContext("u-anyone", {"variableKey": "count"})
    calls: list[tuple[str, Callable[..., Any], Callable[..., Any], Any, EvaluationContext]] = [
        ("of_flag", of.get_boolean_details, of.get_boolean_details_async, False, PLAN),
        ("of_flag", of.get_string_details, of.get_string_details_async, "d", GERMAN),
        ("of_flag", of.get_integer_details, of.get_integer_details_async, 0, counted),
        ("of_flag", of.get_float_details, of.get_float_details_async, 0.0, named),
        ("of_flag", of.get_object_details, of.get_object_details_async, {}, PLAN),
        ("off_flag", of.get_string_details, of.get_string_details_async, "d", PLAN),
    ]
    results: dict[int, FlagEvaluationDetails[Any]] = {}

    def worker(index: int) -> None:
        flag, sync, _, default, context = calls[index]
        results[index] = sync(flag, default, context)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        await anyio.sleep(0.01)  # the loop stays free to serve them
    for index, (flag, _, async_call, default, context) in enumerate(calls):
        expected = await async_call(flag, default, context)
        assert results[index] == expected, index
        assert results[index].error_code is None
    assert results[3].value == 1.5 and results[1].value == "de" and results[2].value == 4


# ---------------------------------------------------------------------------- impressions and tracking


async def test_impressions_are_sent_as_decide_sends_them(
    client: AsyncOptimizely, of: OpenFeatureClient, sink: SinkServer
) -> None:
    await of.get_boolean_value_async(
        "of_flag", False, EvaluationContext("u-plan", {"plan": "gold", "variableKey": "count"})
    )
    await anyio.to_thread.run_sync(of.get_string_value, "of_flag", "d", GERMAN)
    await client.flush()
    visitors = [v for r in sink.received for v in r.payload["visitors"]]
    assert [v["visitor_id"] for v in visitors] == ["u-plan", "u-de"]
    first = visitors[0]["snapshots"][0]["decisions"][0]
    assert first["metadata"]["flag_key"] == "of_flag"
    assert first["metadata"]["rule_key"] == "of_test"
    assert first["metadata"]["variation_key"] == "treat"
    # variableKey steers the provider; it is not a user attribute.
    keys = {a["key"] for a in visitors[0]["attributes"]}
    assert "plan" in keys and "variableKey" not in keys
    second = visitors[1]["snapshots"][0]["decisions"][0]["metadata"]
    assert (second["rule_key"], second["variation_key"], second["rule_type"]) == ("de_rule", "de_on", "rollout")


async def test_track_on_the_loop_and_from_a_thread(
    client: AsyncOptimizely, of: OpenFeatureClient, sink: SinkServer
) -> None:
    of.track(EVENT_KEY, EvaluationContext("u-1", {"plan": "gold"}), TrackingEventDetails(3.5, {"revenue": 1200}))
    await anyio.to_thread.run_sync(of.track, EVENT_KEY, EvaluationContext("u-2", {}), None)
    of.track(EVENT_KEY, EvaluationContext(None, {}))  # no user: logged, not sent
    of.track("unknown_event", EvaluationContext("u-3", {}))  # refused as client.track refuses it
    await anyio.sleep(0.05)  # the loop-thread call runs in the client's task group
    await client.flush()
    events = {v["visitor_id"]: v["snapshots"][0]["events"][0] for r in sink.received for v in r.payload["visitors"]}
    assert set(events) == {"u-1", "u-2"}
    assert events["u-1"]["key"] == EVENT_KEY
    assert events["u-1"]["tags"] == {"revenue": 1200, "value": 3.5}
    assert events["u-1"]["revenue"] == 1200 and events["u-1"]["value"] == 3.5
    assert "tags" not in events["u-2"] or not events["u-2"]["tags"]


# ---------------------------------------------------------------------------- construction and ownership


def test_configuration_mistakes_raise() -> None:
    client = AsyncOptimizely(datafile=datafile())
    with pytest.raises(ConfigurationError):
        OptimizelyProvider(client, datafile=datafile())
    with pytest.raises(ConfigurationError):
        OptimizelyProvider("not a client")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        OptimizelyProvider(client, stale_after_failures=0)
    with pytest.raises(ConfigurationError):
        OptimizelyProvider(client, ready_timeout=-1)
    assert OptimizelyProvider(client).get_metadata().name == "optimizely-async"


async def test_an_owned_client_runs_on_its_own_loop_and_is_closed_on_shutdown(sink: SinkServer) -> None:
    provider = OptimizelyProvider(datafile=datafile(), event_endpoint=sink.url, flush_interval=0.05)
    domain = f"owned-{uuid.uuid4().hex}"
    await anyio.to_thread.run_sync(api.set_provider_and_wait, provider, domain)
    of = api.get_client(domain)
    assert of.get_provider_status() is ProviderStatus.READY
    # Sync from a thread, and async from this (foreign) loop: both reach the provider's loop.
    sync = await anyio.to_thread.run_sync(of.get_string_details, "of_flag", "d", GERMAN)
    async_ = await of.get_string_details_async("of_flag", "d", GERMAN)
    assert sync.value == async_.value == "de"
    await anyio.to_thread.run_sync(of.track, EVENT_KEY, EvaluationContext("u-owned", {}))
    await anyio.to_thread.run_sync(provider.shutdown)  # drains the queue, then stops the loop
    visitors = [v["visitor_id"] for r in sink.received for v in r.payload["visitors"]]
    assert visitors.count("u-de") == 2 and "u-owned" in visitors
    api.clear_providers()


async def test_track_on_the_loop_never_waits_for_room_in_the_queue(sink: SinkServer) -> None:
    sink.script(Reply(200, delay=0.3))  # the first request is slow: the queue fills behind it
    async with AsyncOptimizely(
        datafile=datafile(),
        event_endpoint=sink.url,
        batch_size=1,
        max_queue_size=1,
        enqueue_timeout=5,
        max_concurrent_requests=1,
    ) as client:
        of = bind(OptimizelyProvider(client))
        try:
            for i in range(2):  # one in flight, one filling the queue
                await client.track(EVENT_KEY, f"direct-{i}")
            await anyio.sleep(0.05)
            stats = client.stats()
            assert (stats.in_flight, stats.queued) == (1, 1)  # full: client.track() would wait for room
            start = time.perf_counter()
            of.track(EVENT_KEY, EvaluationContext("through-of", {}))  # the client's track() would wait here
            assert time.perf_counter() - start < 0.05
            await client.flush()
            with anyio.fail_after(5):
                while "through-of" not in [v["visitor_id"] for r in sink.received for v in r.payload["visitors"]]:
                    await anyio.sleep(0.01)
        finally:
            api.clear_providers()


async def test_track_on_the_loop_of_a_client_not_running_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    client = AsyncOptimizely(datafile=datafile())
    provider = OptimizelyProvider(client)
    provider.track(EVENT_KEY, EvaluationContext("u-1", {}))
    assert "not recorded: the client is not running" in caplog.text
    assert client.stats().submitted == 0


async def test_shutdown_of_a_borrowed_client_leaves_it_running(client: AsyncOptimizely) -> None:
    provider = OptimizelyProvider(client)
    assert client.notification_center.has_listeners(NotificationType.OPTIMIZELY_CONFIG_UPDATE)
    provider.shutdown()
    assert not client.notification_center.has_listeners(NotificationType.OPTIMIZELY_CONFIG_UPDATE)
    user = client.create_user_context("u-plan", {"plan": "gold"})
    assert user is not None and (await user.decide("of_flag")).enabled


def test_without_openfeature_installed_the_import_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['openfeature'] = None\n"
        "import optimizely_async\n"
        "try:\n    import optimizely_async.openfeature\nexcept ImportError as exc:\n    print(exc)\n"
    )
    src = str(Path(__file__).resolve().parent.parent / "src")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={"PYTHONPATH": src}, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "optimizely-async[openfeature]" in done.stdout
