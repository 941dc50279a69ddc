"""OpenTelemetry metrics, read with the SDK's InMemoryMetricReader: decisions by flag, the event queue's
counters and request durations against a real sink, the datafile poller's against a real datafile server;
and, in fresh interpreters, what happens with and without a global meter provider or the API."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from _datafile_server import DatafileServer, Status
from _of_datafile import EVENT_KEY, datafile
from _sink_server import Reply, SinkServer, serve_sink
from optimizely_async import AsyncOptimizely, NotificationType
from optimizely_async.metrics import instrument

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


def collect(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """{metric name: [(attributes, value or histogram point)]} of one collection."""
    out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    out.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return out


def value(points: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **attrs: Any) -> Any:
    matches = [v for a, v in points.get(name, []) if all(a.get(k) == w for k, w in attrs.items())]
    assert len(matches) == 1, (name, attrs, points.get(name))
    return matches[0]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    meter_provider = MeterProvider(metric_readers=[reader])
    yield meter_provider
    meter_provider.shutdown()


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    async with serve_sink() as server:
        yield server


async def test_decisions_are_counted_by_flag_without_user_data(
    sink: SinkServer, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
    metrics = instrument(client, provider)
    assert metrics is not None
    async with client:
        for i in range(3):
            user = client.create_user_context(f"secret-user-{i}", {"plan": "secret-plan"})
            assert user is not None
            await user.decide("of_flag")
        user = client.create_user_context("secret-user-9", {})
        assert user is not None
        await user.decide("off_flag")
        assert await client.is_feature_enabled("of_flag", "secret-user-8", {"plan": "secret-plan"})
    points = collect(reader)
    client_id = metrics.id
    assert value(points, "optimizely.decisions", flag_key="of_flag", decision_type="flag", enabled=True) == 3
    assert value(points, "optimizely.decisions", flag_key="off_flag", decision_type="flag", enabled=False) == 1
    assert value(points, "optimizely.decisions", flag_key="of_flag", decision_type="feature") == 1
    assert {a["optimizely.client"] for a, _ in points["optimizely.decisions"]} == {client_id}
    assert "secret" not in json.dumps([a for series in points.values() for a, _ in series])


async def test_event_counters_and_request_durations(
    sink: SinkServer, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, batch_size=1, flush_interval=60)
    instrument(client, provider)
    sink.script(Reply(500), Reply(200), Reply(400))
    async with client:
        await client.track(EVENT_KEY, "u-1")  # 500, retried, then 200
        await client.flush()
        await client.track(EVENT_KEY, "u-2")  # 400: dropped for good
        await client.flush()
        await client.track(EVENT_KEY, "u-3")  # 200
        await client.flush()
        points = collect(reader)
        assert value(points, "optimizely.events.queued") == 3
        assert value(points, "optimizely.events.delivered") == 2
        assert value(points, "optimizely.events.dropped", reason="http_400") == 1
        assert value(points, "optimizely.events.retries") == 1
        assert value(points, "optimizely.events.requests") == 4
        assert value(points, "optimizely.events.pending") == 0
        delivered = value(points, "optimizely.events.request.duration", outcome="delivered")
        assert delivered.count == 2 and 0 < delivered.sum < 10
        assert value(points, "optimizely.events.request.duration", outcome="http_500").count == 1
        assert value(points, "optimizely.events.request.duration", outcome="http_400").count == 1
        assert value(points, "optimizely.datafile.revision", revision="1") == 1
        assert "optimizely.datafile.fetches" not in points  # a static datafile: nothing polls


async def test_datafile_fetches_failures_updates_and_revision(
    sink: SinkServer, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    with DatafileServer() as server:
        server.set_datafile(datafile("41"))
        server.enqueue(Status(500))
        client = AsyncOptimizely(
            sdk_key="metrics-key",
            datafile_url_template=f"{server.url}/{{sdk_key}}.json",
            update_interval=0.1,
            event_endpoint=sink.url,
        )
        instrument(client, provider)
        async with client:
            assert await client.wait_until_ready(5)
            server.set_datafile(datafile("42"))
            with anyio.fail_after(5):
                while client.config is None or client.config.revision != "42":
                    await anyio.sleep(0.01)
            points = collect(reader)
    assert value(points, "optimizely.datafile.failures") == 1
    assert value(points, "optimizely.datafile.updates") == 2
    assert value(points, "optimizely.datafile.fetches") >= 3
    assert value(points, "optimizely.datafile.revision", revision="42") == 42


def test_a_no_op_meter_provider_adds_nothing() -> None:
    from opentelemetry.metrics import NoOpMeterProvider

    client = AsyncOptimizely(datafile=datafile())
    assert instrument(client, NoOpMeterProvider()) is None
    assert not client.notification_center.has_listeners(NotificationType.DECISION)


async def test_detach_stops_recording(sink: SinkServer, provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
    metrics = instrument(client, provider)
    assert metrics is not None and client.notification_center.has_listeners(NotificationType.DECISION)
    metrics.detach()
    assert not client.notification_center.has_listeners(NotificationType.DECISION)
    async with client:
        user = client.create_user_context("u", {})
        assert user is not None
        await user.decide("of_flag")
    points = collect(reader)
    assert "optimizely.events.queued" not in points
    assert "optimizely.events.request.duration" not in points  # the dispatcher wrapper stopped recording


async def test_clients_sharing_a_meter_provider_are_told_apart(
    sink: SinkServer, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    first = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
    second = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
    one, two = instrument(first, provider), instrument(second, provider)
    assert one is not None and two is not None and one.id != two.id
    async with first, second:
        for client, decisions in ((first, 1), (second, 2)):
            user = client.create_user_context("u", {"plan": "p"})
            assert user is not None
            for _ in range(decisions):
                await user.decide("of_flag")
    points = collect(reader)
    assert value(points, "optimizely.decisions", **{"optimizely.client": one.id}) == 1
    assert value(points, "optimizely.decisions", **{"optimizely.client": two.id}) == 2
    assert value(points, "optimizely.events.delivered", **{"optimizely.client": two.id}) == 2


def run_python(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (the global meter provider can be set once per process)."""
    env_path = f"{ROOT / 'src'}:{ROOT / 'tests'}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_meter_provider_set_after_import_but_before_the_client_is_used() -> None:
    result = run_python(
        """
        import json, anyio
        import optimizely_async
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from _of_datafile import datafile

        class Null:
            async def dispatch(self, request):
                from optimizely_async import DispatchResult
                return DispatchResult(delivered=True)

        before = optimizely_async.AsyncOptimizely(datafile=datafile(), event_dispatcher=Null())
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        after = optimizely_async.AsyncOptimizely(datafile=datafile(), event_dispatcher=Null())

        async def main():
            for client in (before, after):
                async with client:
                    user = client.create_user_context("u", {"plan": "p"})
                    await user.decide("of_flag")

        anyio.run(main)
        names = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    names[m.name] = [(dict(p.attributes), getattr(p, "value", None)) for p in m.data.data_points]
        print(json.dumps({"before": before._metrics is None, "after": after._metrics is not None,
                          "decisions": names.get("optimizely.decisions"), "names": sorted(names)}))
        """
    )
    assert result["before"] and result["after"]
    assert [v for _, v in result["decisions"]] == [1]  # only the client made after the provider was set
    assert "optimizely.events.delivered" in result["names"]


def test_nothing_is_added_without_a_meter_provider_or_without_the_api() -> None:
    result = run_python(
        """
        import json, sys
        from _of_datafile import datafile
        import optimizely_async
        from optimizely_async import NotificationType

        plain = optimizely_async.AsyncOptimizely(datafile=datafile())
        imported = "opentelemetry.metrics" in sys.modules  # the client does not import the API itself
        from opentelemetry import metrics
        metrics.set_meter_provider(metrics.NoOpMeterProvider())
        noop = optimizely_async.AsyncOptimizely(datafile=datafile())
        print(json.dumps({
            "plain": [plain._metrics is None, plain.notification_center.has_listeners(NotificationType.DECISION),
                      type(plain._queue._dispatcher).__name__],
            "noop": [noop._metrics is None, noop.notification_center.has_listeners(NotificationType.DECISION)],
            "imported": imported,
        }))
        """
    )
    assert result["plain"] == [True, False, "HttpDispatcher"]
    assert result["noop"] == [True, False]
    assert result["imported"] is False
    absent = run_python(
        """
        import json, sys
        sys.modules["opentelemetry"] = None  # as if the API were not installed
        from _of_datafile import datafile
        import optimizely_async
        from optimizely_async.metrics import instrument
        client = optimizely_async.AsyncOptimizely(datafile=datafile())
        print(json.dumps([client._metrics is None, instrument(client) is None]))
        """
    )
    assert absent == [True, True]  # type: ignore[comparison-overlap]
