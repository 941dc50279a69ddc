"""OpenTelemetry metrics for ``AsyncOptimizely`` (extra ``otel``: ``opentelemetry-api``).

Every client is instrumented when it is created, if the OpenTelemetry API is installed and a meter provider
is set (``opentelemetry.metrics.set_meter_provider``) by then; otherwise nothing is recorded and nothing is
added to any code path. ``instrument`` instruments a client with a meter provider of your choosing.

Most instruments are *observable*: they read the counters the client keeps anyway (``client.stats()``,
the datafile poller's), when the reader collects. Two things are measured as they happen: each decision
(through a DECISION notification listener) and each event request's duration (through a thin wrapper around
the event dispatcher).

=====================================  =========================  =============================================
name                                   instrument (unit)          attributes
=====================================  =========================  =============================================
``optimizely.decisions``               counter ({decision})       ``flag_key``, ``decision_type``, ``enabled``
``optimizely.events.queued``           observable counter         every event handed to the queue
``optimizely.events.delivered``        observable counter         events the events API accepted
``optimizely.events.dropped``          observable counter         ``reason`` (``queue_full``, ``http_400``, ...)
``optimizely.events.retries``          observable counter         request retries
``optimizely.events.requests``         observable counter         request attempts
``optimizely.events.pending``          observable up-down         events waiting in the queue
``optimizely.events.request.duration`` histogram (s)              ``outcome`` (``delivered`` or the reason)
``optimizely.datafile.fetches``        observable counter         datafile requests made by the poller
``optimizely.datafile.failures``       observable counter         fetches that failed
``optimizely.datafile.updates``        observable counter         new revisions taken
``optimizely.datafile.revision``       observable gauge           ``revision`` (the string); value: it as int
=====================================  =========================  =============================================

Every data point also carries ``optimizely.client`` (1, 2, ... in the order clients were instrumented). No
user id or attribute value is ever recorded.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _observe
from ._logging import sdk_logger
from .notifications import NotificationType

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

    from .client import AsyncOptimizely
    from .events.dispatcher import Dispatcher, DispatchResult, EventRequest

__all__ = ["ClientMetrics", "attach", "instrument"]

_log = sdk_logger()

_METER_NAME = "optimizely_async"
_ids = itertools.count(1)
_lock = threading.Lock()
#: The instruments of each meter provider, made once.
_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_NOT_LOADED: Any = object()
#: What an observable callback reads from one client: (value, extra attributes or None) pairs.
_Points = Iterable[tuple[int | float, dict[str, Any] | None]]
_Callback = Callable[["CallbackOptions"], Iterator["Observation"]]
_api: Any = _NOT_LOADED


def _otel() -> Any:
    """``opentelemetry.metrics``, or None when the API is not installed (looked up once)."""
    global _api
    if _api is _NOT_LOADED:
        try:
            import opentelemetry.metrics

            _api = opentelemetry.metrics
        except ImportError:
            _api = None
    return _api


def _global_provider() -> MeterProvider | None:
    """The meter provider set globally, or None when there is none (or only a no-op one)."""
    if "opentelemetry.metrics" not in sys.modules:
        return None  # nobody can have set one: do not pay for importing the API
    api = _otel()
    if api is None:
        return None
    provider = api.get_meter_provider()
    # Until set_meter_provider() is called the API hands out a proxy that records nothing.
    if isinstance(provider, api.NoOpMeterProvider) or type(provider).__name__ == "_ProxyMeterProvider":
        return None
    return provider  # type: ignore[no-any-return]


def attach(client: AsyncOptimizely) -> ClientMetrics | None:
    """Instrument ``client`` with the global meter provider if one is set; called by the client's constructor.
    Never raises: a failure is logged and the client works without metrics."""
    try:
        provider = _global_provider()
        return None if provider is None else instrument(client, provider)
    except Exception:
        _log.exception("Could not set up OpenTelemetry metrics; the client runs without them.")
        return None


def instrument(client: AsyncOptimizely, meter_provider: MeterProvider | None = None) -> ClientMetrics | None:
    """Record ``client``'s metrics with ``meter_provider`` (default: the global one). None (and nothing added
    to the client) when the OpenTelemetry API is not installed, or no meter provider is set, or it is the
    API's no-op one.

    Call it before the client is entered to have event request durations measured from the first request.
    """
    if meter_provider is None:
        meter_provider = _global_provider()
        if meter_provider is None:
            return None
    api = _otel()
    if api is None or isinstance(meter_provider, api.NoOpMeterProvider):
        return None  # it would record nothing: add nothing to the client's paths
    with _lock:
        instruments = _by_provider.get(meter_provider)
        if instruments is None:
            instruments = _by_provider[meter_provider] = _Instruments(meter_provider.get_meter(_METER_NAME))
    metrics = ClientMetrics(client, instruments)
    instruments.clients.add(metrics)
    return metrics


class ClientMetrics:
    """One client's part in the metrics; ``detach`` stops recording it."""

    def __init__(self, client: AsyncOptimizely, instruments: _Instruments) -> None:
        self.id = str(next(_ids))
        self._client = weakref.ref(client)
        self._instruments = instruments
        self._base = {"optimizely.client": self.id}
        #: Decisions so far by (decision type, flag key, enabled): read by the observable counter.
        self.decisions: dict[tuple[str, str, bool], int] = {}
        self._counts_lock = threading.Lock()  # decisions may come from several threads (a sync client)
        counts, lock = self.decisions, self._counts_lock

        def on_decision(decision_type: str, user_id: Any, attributes: Any, info: Any) -> None:
            # Runs inline in every decision: one dict update. No user data is read.
            flag_key = info.get("flag_key") or info.get("feature_key") or info.get("experiment_key") or ""
            enabled = info.get("enabled")
            if enabled is None:
                enabled = info.get("feature_enabled")
                if enabled is None:
                    enabled = info.get("variation_key") is not None
            key = (decision_type, flag_key, bool(enabled))
            with lock:
                counts[key] = counts.get(key, 0) + 1

        self._listener_id = client.notification_center.add_notification_listener(NotificationType.DECISION, on_decision)
        self._timers: list[_TimedDispatcher] = []

        def wrap(inner: Dispatcher) -> Dispatcher:
            timer = _TimedDispatcher(inner, instruments.request_duration, self._base)
            self._timers.append(timer)
            return timer

        _observe.wrap_dispatcher(client, wrap)

    @property
    def client(self) -> AsyncOptimizely | None:
        return self._client()

    def detach(self) -> None:
        """Stop recording this client (its observable series end at the next collection)."""
        self._instruments.clients.discard(self)
        for timer in self._timers:
            timer.recording = False
        client = self._client()
        if client is not None and self._listener_id > 0:
            client.notification_center.remove_notification_listener(self._listener_id)
            self._listener_id = -1


class _TimedDispatcher:
    """Measures each event request; otherwise the dispatcher it wraps."""

    def __init__(self, inner: Dispatcher, histogram: Histogram, base: dict[str, str]) -> None:
        self._inner = inner
        self._histogram = histogram
        self._base = base
        self._attrs: dict[str, dict[str, str]] = {}
        self.recording = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        start = time.perf_counter()
        outcome = "error"
        try:
            result = await self._inner.dispatch(request)
            outcome = "delivered" if result.delivered else str(result.reason or "failed")
            return result
        finally:
            if self.recording:
                self._record(time.perf_counter() - start, outcome)

    def _record(self, seconds: float, outcome: str) -> None:
        labels = self._attrs.get(outcome)
        if labels is None:
            labels = self._attrs[outcome] = {**self._base, "outcome": outcome}
        self._histogram.record(seconds, labels)


class _Instruments:
    """The instruments of one meter, shared by every client instrumented with it."""

    def __init__(self, meter: Meter) -> None:
        #: Every instrumented client's part; one whose client is gone is dropped at the next collection.
        self.clients: set[ClientMetrics] = set()
        meter.create_observable_counter(
            "optimizely.decisions",
            [self._observer(_decisions)],
            unit="{decision}",
            description="Flag and experiment decisions made, by flag.",
        )
        self.request_duration: Histogram = meter.create_histogram(
            "optimizely.events.request.duration", unit="s", description="Duration of each events-API request."
        )
        queue = self._queue_observer
        source = self._source_observer
        meter.create_observable_counter(
            "optimizely.events.queued",
            [queue(lambda s: [(s.submitted, None)])],
            unit="{event}",
            description="Events handed to the event queue (including ones then dropped).",
        )
        meter.create_observable_counter(
            "optimizely.events.delivered",
            [queue(lambda s: [(s.delivered, None)])],
            unit="{event}",
            description="Events the events API accepted.",
        )
        meter.create_observable_counter(
            "optimizely.events.dropped",
            [queue(_dropped)],
            unit="{event}",
            description="Events given up on, by reason.",
        )
        meter.create_observable_counter(
            "optimizely.events.retries",
            [queue(lambda s: [(s.retries, None)])],
            unit="{request}",
            description="Event requests retried.",
        )
        meter.create_observable_counter(
            "optimizely.events.requests",
            [queue(lambda s: [(s.requests, None)])],
            unit="{request}",
            description="Event request attempts.",
        )
        meter.create_observable_up_down_counter(
            "optimizely.events.pending",
            [queue(lambda s: [(s.queued, None)])],
            unit="{event}",
            description="Events waiting in the queue.",
        )
        meter.create_observable_counter(
            "optimizely.datafile.fetches",
            [source(lambda p: [(p.fetches, None)])],
            unit="{request}",
            description="Datafile requests made by the poller.",
        )
        meter.create_observable_counter(
            "optimizely.datafile.failures",
            [source(lambda p: [(p.failures, None)])],
            unit="{request}",
            description="Datafile fetches that failed (network, status, unusable datafile).",
        )
        meter.create_observable_counter(
            "optimizely.datafile.updates",
            [source(lambda p: [(p.updates, None)])],
            unit="{update}",
            description="New datafile revisions taken from the poller.",
        )
        meter.create_observable_gauge(
            "optimizely.datafile.revision",
            [self._observer(_revision)],
            description="The datafile revision decisions use now (attribute revision; the value is it as a number).",
        )

    def _observer(self, read: Callable[[ClientMetrics, AsyncOptimizely], _Points]) -> _Callback:
        """An observable callback: ``read`` for every live instrumented client. Never raises (a client that
        cannot be read is skipped)."""
        api = _otel()

        def callback(options: CallbackOptions) -> Iterator[Observation]:
            for metrics in list(self.clients):
                client = metrics.client
                if client is None:
                    self.clients.discard(metrics)
                    continue
                try:
                    points = list(read(metrics, client))
                except Exception:
                    _log.debug("Could not read a client's counters for OpenTelemetry.", exc_info=True)
                    continue
                for value, extra in points:
                    yield api.Observation(value, {**metrics._base, **extra} if extra else metrics._base)

        return callback

    def _queue_observer(self, read: Callable[[Any], _Points]) -> _Callback:
        return self._observer(lambda metrics, client: read(client.stats()))

    def _source_observer(self, read: Callable[[Any], _Points]) -> _Callback:
        def from_client(metrics: ClientMetrics, client: AsyncOptimizely) -> _Points:
            stats = _observe.polling_stats(client)
            return () if stats is None else read(stats)

        return self._observer(from_client)


def _decisions(metrics: ClientMetrics, client: AsyncOptimizely) -> _Points:
    with metrics._counts_lock:
        counts = dict(metrics.decisions)
    return [
        (count, {"flag_key": flag, "decision_type": kind, "enabled": enabled})
        for (kind, flag, enabled), count in counts.items()
    ]


def _dropped(stats: Any) -> _Points:
    points: list[tuple[int | float, dict[str, Any] | None]] = [
        (count, {"reason": reason}) for reason, count in stats.dropped.items()
    ]
    if stats.undelivered:
        points.append((stats.undelivered, {"reason": "undelivered"}))
    return points


def _revision(metrics: ClientMetrics, client: AsyncOptimizely) -> _Points:
    config = client.config
    if config is None:
        return []
    revision = str(config.revision)
    try:
        value = int(revision)
    except ValueError:
        value = 0
    return [(value, {"revision": revision})]
