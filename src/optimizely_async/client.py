"""AsyncOptimizely: the client's lifecycle and its public methods.

The client holds the current :class:`ProjectConfig` (swapped atomically on updates), runs its background
work (event queue, datafile poller) in one task group it owns, and delegates decisions to the pure engine in
:mod:`optimizely_async.decision`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from . import defaults
from ._ctrl_c import start_background
from ._decisions import DecisionMethods
from ._fork_copy import drop_in_children
from ._lazy_http import LazyHttpClient
from ._lifecycle import FORKED_MESSAGE, Started, keep_ctrl_c_out, spawn_runner, watch_forks
from ._logging import sdk_logger
from ._logroute import logs_to_its_logger, starts_background_work
from ._validation import (
    NOT_READY,
    attributes_ok,
    event_tags_ok,
    invalid_input,
    is_non_empty_str,
    number,
    plain,
    seconds,
)
from .cmab import build_cmab_service
from .config.project_config import (
    EMPTY_EXPERIMENT,
    ExperimentInfo,
    HoldoutInfo,
    ProjectConfig,
    VariationInfo,
    parse_config,
)
from .decision.user_profile import UserProfileService
from .errors import ClientStateError, ConfigurationError
from .events.dispatcher import Dispatcher, HttpDispatcher
from .events.factory import build_conversion, build_impression, event_context, now_ms, prepare_models
from .events.ledger import call_hook, run_hook
from .events.payload import build_payload
from .events.pending import PendingEvent, materialize
from .events.queue import DeliveryReport, EventQueue, QueueStats
from .events.tags import parse_revenue, parse_value, snapshot_tags
from .notifications import NotificationCenter, NotificationType
from .odp import build_odp_manager
from .stats import ClientStats
from .user_context import OptimizelyUserContext

if TYPE_CHECKING:
    import asyncio

    import httpx

    from .config.optimizely_config import OptimizelyConfig, ProjectionBuild
    from .config.sources import PollingConfigSource
    from .decide import DecideOption
    from .events.models import ConversionEvent, EventContext, QueuedEvent, UserEvent
    from .metrics import ClientMetrics

__all__ = ["AsyncOptimizely", "HeldTrack"]

_log = sdk_logger()

_ACTIVATE: Final = NotificationType.ACTIVATE
_TRACK: Final = NotificationType.TRACK

#: track() calls buffered while no datafile is loaded yet.
_PENDING_TRACK_LIMIT: Final = 10_000


@dataclasses.dataclass(frozen=True)
class HeldTrack:
    """A ``track()`` call made while no datafile was loaded, as ``on_drop`` sees it when it is given up on.

    Such a call has no event model yet (the event id, attribute ids and the account come from the datafile),
    so ``on_drop(events, reason)`` receives these instead of ``ConversionEvent`` models for the reasons
    ``not_ready`` (no datafile before close, after close, or more than 10,000 calls waiting) and
    ``unknown_event`` (the datafile that arrived has no such event). The fields are the call's arguments
    (shallow copies) and the moment of the call.
    """

    event_key: str
    user_id: str
    attributes: dict[str, Any] | None
    event_tags: dict[str, Any] | None
    #: Milliseconds since the epoch at the ``track()`` call; the event is sent with this timestamp.
    timestamp: int


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"
    #: A copy in a process forked while the client was started (its background work is the parent's).
    FORKED = "forked"


#: How long close() waits for the background work to end once it is cancelled.
_STOP_PATIENCE = 5.0


async def _guarded(
    run: Callable[..., Awaitable[None]], what: str, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run one part of the client's background work; a failure is logged, never propagated (it would cancel
    its siblings and, through the task group, the caller's code)."""
    try:
        await run(task_status=task_status)
    except Exception:
        _log.exception("%s failed; the client goes on without it.", what)


class AsyncOptimizely(DecisionMethods):
    """The async Optimizely Feature Experimentation client.

    Use it as an async context manager: entering starts the background event queue (and the datafile
    poller with ``sdk_key``); leaving drains queued events within ``close_timeout`` and stops. Where startup
    and shutdown run in different tasks, ``await client.start()`` and ``await client.close()`` do the same
    (see the Lifecycle docs).

    Args:
        datafile: a static datafile (str, bytes or dict). With ``sdk_key`` too, it serves until the first
            poll succeeds.
        sdk_key: poll the datafile of this SDK key.
        datafile_access_token: fetch an authenticated datafile (sent as a Bearer token, never logged).
        datafile_url_template: a URL with ``{sdk_key}``; default: the Optimizely CDN.
        update_interval: seconds between polls (default 300).
        event_endpoint: where events go; default: the US or EU endpoint chosen by the datafile's ``region``.
        batch_size: most events per request (default 10).
        flush_interval: seconds the oldest queued event may wait before a partial batch is sent (default 30).
        max_queue_size: most events waiting to be sent (default 10,000).
        enqueue_timeout: how long ``track()`` waits for room in a full queue before dropping the event (it does
            not wait while delivery is stalled; see docs/reliability.md).
        max_concurrent_requests: event requests in flight at once.
        close_timeout: how long leaving the context may take to drain.
        http_client: an ``httpx.AsyncClient`` to share (not closed by the SDK).
        event_dispatcher: a custom ``Dispatcher`` (replaces HTTP).
        user_profile_service: sticky bucketing; ``lookup``/``save`` may be sync or async.
        default_decide_options: options added to every ``decide`` call.
        datafile_request_timeout: seconds one datafile fetch may take before it counts as failed (default 10).
        on_drop: ``callback(events, reason)`` for events dropped for good (sync or async; its errors are
            logged). ``events`` are the ``ImpressionEvent`` / ``ConversionEvent`` models, except for
            ``track()`` calls given up on before a datafile could build them (reasons ``not_ready`` and
            ``unknown_event``) and calls whose tags cannot be sent (``invalid_payload``): those arrive as
            ``HeldTrack`` records. An event that could not be built at all (``invalid_event``) arrives as
            the queued record it was.
        logger: a ``logging.Logger`` or ``logging.LoggerAdapter`` that receives everything this client logs
            (its methods, decisions, events, polling); default: the library logger ``optimizely_async``.
        cmab_prediction_endpoint: the CMAB prediction URL template, ``{}`` standing for the rule id (default:
            the official endpoint).
        cmab_cache_size: CMAB predictions cached, one per user and rule (default 10,000; 0 caches none).
        cmab_cache_ttl: seconds a cached prediction is used after it was fetched (default 1,800).
        cmab_request_timeout: seconds one prediction attempt may take (default 10, the official fixed value).
        odp_disabled: no ODP at all (segments, events), even with an ODP integration in the datafile.
        segments_cache_size: users whose ODP segments are cached (default 10,000; 0 caches none).
        segments_cache_timeout: seconds cached segments are used (default 600; 0: no expiry).
        odp_segment_request_timeout: seconds a segments request may take (default 10).
        odp_event_flush_interval: seconds an ODP event may wait for a batch (default 1; 0 sends each alone).
        odp_event_request_timeout: seconds an ODP events request may take (default 10).
    """

    @logs_to_its_logger
    def __init__(
        self,
        datafile: str | bytes | Mapping[str, Any] | None = None,
        sdk_key: str | None = None,
        *,
        datafile_access_token: str | None = None,
        datafile_url_template: str | None = None,
        update_interval: float = defaults.UPDATE_INTERVAL,
        event_endpoint: str | None = None,
        batch_size: int = defaults.BATCH_SIZE,
        flush_interval: float = defaults.FLUSH_INTERVAL,
        max_queue_size: int = defaults.MAX_QUEUE_SIZE,
        enqueue_timeout: float = defaults.ENQUEUE_TIMEOUT,
        max_concurrent_requests: int = defaults.MAX_CONCURRENT_REQUESTS,
        close_timeout: float = defaults.CLOSE_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        event_dispatcher: Dispatcher | None = None,
        user_profile_service: UserProfileService | None = None,
        default_decide_options: Iterable[DecideOption | str] = (),
        on_drop: Callable[..., Any] | None = None,
        datafile_request_timeout: float = defaults.DATAFILE_REQUEST_TIMEOUT,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        cmab_prediction_endpoint: str | None = None,
        cmab_cache_size: int = defaults.CMAB_CACHE_SIZE,
        cmab_cache_ttl: float = defaults.CMAB_CACHE_TTL,
        cmab_request_timeout: float = defaults.CMAB_REQUEST_TIMEOUT,
        odp_disabled: bool = False,
        segments_cache_size: int = defaults.SEGMENTS_CACHE_SIZE,
        segments_cache_timeout: float = defaults.SEGMENTS_CACHE_TIMEOUT,
        odp_segment_request_timeout: float | None = None,
        odp_event_flush_interval: float = defaults.ODP_EVENT_FLUSH_INTERVAL,
        odp_event_request_timeout: float | None = None,
    ) -> None:
        if datafile is None and sdk_key is None:
            raise ConfigurationError("Provide datafile= (a static datafile) or sdk_key= (to poll one).")
        if datafile is not None and not isinstance(datafile, (str, bytes, bytearray, Mapping)):
            raise ConfigurationError(f"datafile must be str, bytes or dict, not {type(datafile).__name__}.")
        if sdk_key is not None and not is_non_empty_str(sdk_key):
            raise ConfigurationError("sdk_key must be a non-empty string.")
        if datafile_access_token is not None and sdk_key is None:
            raise ConfigurationError("datafile_access_token needs sdk_key= as well.")
        if event_endpoint is not None and not (
            isinstance(event_endpoint, str) and event_endpoint.startswith(("http://", "https://"))
        ):
            raise ConfigurationError(f"event_endpoint must be an http(s) URL, got {event_endpoint!r}.")
        if http_client is not None and not _is_httpx_client(http_client):
            raise ConfigurationError(f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__}.")
        if event_dispatcher is not None and not callable(getattr(event_dispatcher, "dispatch", None)):
            raise ConfigurationError("event_dispatcher must have an async dispatch(request) method.")
        if user_profile_service is not None and not (
            callable(getattr(user_profile_service, "lookup", None))
            and callable(getattr(user_profile_service, "save", None))
        ):
            raise ConfigurationError("user_profile_service must have lookup(user_id) and save(profile) methods.")
        if on_drop is not None and not callable(on_drop):
            raise ConfigurationError("on_drop must be callable.")
        if logger is not None and not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
            raise ConfigurationError(f"logger must be a logging.Logger or LoggerAdapter, not {type(logger).__name__}.")
        self._close_timeout = float(number("close_timeout", close_timeout))
        # CMAB and ODP: their options are checked here; no request until a decision or call needs one.
        self._http = LazyHttpClient(http_client)
        self._cmab = build_cmab_service(
            endpoint=cmab_prediction_endpoint,
            cache_size=cmab_cache_size,
            cache_ttl=cmab_cache_ttl,
            request_timeout=cmab_request_timeout,
            http=self._http,
        )
        self._odp = build_odp_manager(
            self._http,
            disabled=odp_disabled,
            segments_cache_size=segments_cache_size,
            segments_cache_timeout=segments_cache_timeout,
            segment_request_timeout=odp_segment_request_timeout,
            event_flush_interval=odp_event_flush_interval,
            event_request_timeout=odp_event_request_timeout,
        )
        datafile_request_timeout = float(number("datafile_request_timeout", datafile_request_timeout))

        from .decide import coerce_options

        if isinstance(default_decide_options, (str, bytes)) or not isinstance(default_decide_options, Iterable):
            raise ConfigurationError(
                "default_decide_options must be a list of DecideOption values (or their strings), "
                f"got {default_decide_options!r}."
            )
        self._default_decide_options: tuple[DecideOption, ...] = coerce_options(default_decide_options)
        self._decide_options_cache: dict[tuple[Any, ...], Any] = {}

        self.notification_center = NotificationCenter()
        self._sdk_key = sdk_key
        self._event_endpoint = event_endpoint
        self._ups = user_profile_service
        self._forced: dict[str, dict[str, str]] = {}
        self._config: ProjectConfig | None = None
        self._context: EventContext | None = None
        self._state = _State.UNOPENED
        self._ready: anyio.Event | None = None
        # Lifecycle (see start(), _run(), close()): the runner's task group and scope, the caller's group
        # that `async with` entered, the runner task of start() on asyncio, and the events of each step.
        self._task_group: TaskGroup | None = None
        self._run_scope: anyio.CancelScope | None = None
        self._host: TaskGroup | None = None
        self._runner_task: asyncio.Task[None] | None = None
        self._starting: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._closing: anyio.Event | None = None
        self._forked_from = 0
        self._warned_forked = False
        self._on_drop = on_drop
        self._pending: list[HeldTrack] = []
        #: Held track() calls given up on, by reason (``not_ready``, ``unknown_event``, ``invalid_payload``).
        self._pending_dropped: dict[str, int] = {}
        self._report: DeliveryReport | None = None
        self._warned_unopened = False
        #: The OptimizelyConfig projection of the current config, built on the loop in steps (_build_projection).
        self._projection: ProjectionBuild | None = None
        drop_in_children(self)  # held track() calls are the parent's in a forked child (._drop_inherited)

        if datafile is not None:
            # At once, unpaced: nothing else waits on a client that is being constructed.
            self._set_config(parse_config(datafile))
        # Defining the OptimizelyConfig classes takes a few ms: here, not in a step of the projection's build.
        from .config.optimizely_config import ProjectionBuild  # noqa: F401

        prepare_models()  # the event models now, not on the loop when a polled datafile's first config comes
        self._dispatcher: Dispatcher = event_dispatcher or HttpDispatcher(http_client)
        self._owns_dispatcher = event_dispatcher is None
        self._queue = EventQueue(
            self._dispatcher,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            enqueue_timeout=enqueue_timeout,
            max_concurrent_requests=max_concurrent_requests,
            on_drop=on_drop,
            on_dispatch=self._on_dispatch,
        )

        self._source: PollingConfigSource | None = None
        if sdk_key is not None:
            from .config.sources import PollingConfigSource

            self._source = PollingConfigSource(
                sdk_key,
                on_config=self._on_new_config,
                url_template=datafile_url_template,
                access_token=datafile_access_token,
                update_interval=update_interval,
                request_timeout=datafile_request_timeout,
                http_client=http_client,
                initial_config=self._config,
            )

        self._metrics: ClientMetrics | None = None  # unless OpenTelemetry's API is installed and a provider set
        if "opentelemetry.metrics" in sys.modules:  # else no provider can have been set: skip importing .metrics
            from .metrics import attach as attach_metrics

            self._metrics = attach_metrics(self)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncOptimizely:
        """Start the background work in a task group of this task; ``__aexit__`` drains and ends it.

        Whatever the body raises leaves the block as itself; the SDK's own background failures are logged and
        never cancel the body. Leaving by any path (normal, exception, cancellation) runs :meth:`close`,
        shielded from the outer cancellation and bounded by ``close_timeout``.
        """
        if self._state is _State.OPEN or self._starting is not None:
            raise ClientStateError("This AsyncOptimizely client is already open.")
        self._check_startable()
        host = anyio.create_task_group()
        await host.__aenter__()
        # Shielded: the outer cancellation that ends the body must not end the drain with it. Started with
        # start_soon, not host.start(): a start() whose caller is cancelled cancels the new task and waits for it,
        # which a shielded task never obliges (an entry cancelled halfway hung for good).
        status = Started()

        async def launch() -> None:  # run by _start, so that the runner copies what _start sets (the log route)
            host.start_soon(self._run_in_host, status)
            await status.event.wait()

        try:
            await self._start(launch)
        except BaseException:
            if self._run_scope is not None:
                # The background work runs, shielded: cancelling the group would not end it, and leaving the group
                # would wait for it for good. Closing the client ends it. (Before that point the cancellation
                # reaches it: the client is left unopened, and may be entered again.)
                with anyio.CancelScope(shield=True):
                    await self.close()
            host.cancel_scope.cancel()
            await host.__aexit__(None, None, None)
            raise
        self._host = host
        return self

    async def _run_in_host(self, status: Started) -> None:
        try:
            await self._run(shielded=True, task_status=status)
        finally:
            status.event.set()  # wakes the entry if the runner ended before it started

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        host, self._host = self._host, None
        with anyio.CancelScope(shield=True):
            await self.close()
        if host is not None:
            # Only a cancellation is the group's business (it may be its own scope's); anything else the body
            # raised stays out of it, so it is not wrapped in an ExceptionGroup and leaves as itself.
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                await host.__aexit__(exc_type, exc, tb)
            else:
                await host.__aexit__(None, None, None)

    async def start(self, task_group: TaskGroup | None = None) -> None:
        """Start the background work (event queue, datafile poller, async listeners); idempotent.

        For apps whose startup and shutdown hooks run in different tasks (arq, aiohttp ``on_startup`` /
        ``on_cleanup``, Starlette and FastAPI ``on_startup`` / ``on_shutdown``): ``await client.start()`` in
        one, ``await client.close()`` in the other (any task of the same event loop). Without ``task_group``
        the client runs its work in a task of its own, which needs asyncio; on trio pass a nursery or an
        anyio task group (and close the client before it ends), or use ``async with client:``.

        Raises:
            ClientStateError: the client is closed, is a copy in a forked child, or (trio) no task group was
                given.
        """
        if self._state is _State.OPEN:
            return
        if self._starting is not None:  # another task is starting it
            await self._starting.wait()
            if self.stats().state != _State.OPEN.value:  # (re-read after the wait)
                raise ClientStateError("The client did not start (see the log), or was closed meanwhile.")
            return
        self._check_startable()
        if task_group is not None:
            await self._start(functools.partial(task_group.start, self._run))
            return
        task, status = spawn_runner(lambda started: self._run(task_status=started))
        self._runner_task = task  # owned: close() ends it
        await self._start(status.event.wait)

    def _check_startable(self) -> None:
        if self._state is _State.CLOSED:
            raise ClientStateError("This AsyncOptimizely client is closed; create a new one.")
        if self._state is _State.FORKED:
            raise ClientStateError(self._forked_message())

    @starts_background_work
    async def _start(self, launch: Callable[[], Awaitable[Any]]) -> None:
        """Launch :meth:`_run` (``launch`` returns once it has started or ended), then replay track() calls held
        until a datafile was there."""
        starting = self._starting = anyio.Event()
        try:
            self._stopped = anyio.Event()
            await launch()
            if self._stopped.is_set():
                raise ClientStateError("The client's background work ended as it started; see the log.")
            self._state = _State.OPEN
            self._loop_token = anyio.lowlevel.current_token()  # for the OpenFeature provider (_observe.event_loop)
            watch_forks(self, True)
        finally:
            self._starting = None
            starting.set()
        if self._config is not None and self._pending:
            await self._replay_pending()

    async def _run(self, *, shielded: bool = False, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The background work, in one task that owns its task group, so that start() and close() may run in
        different tasks. Each part is guarded: a failure is logged and never reaches the caller's task."""
        # On trio a Ctrl-C that comes while a part of the background work runs is raised in the main task
        # instead (inside a part it would fail the task group and cancel the drain on the way out).
        keep_ctrl_c_out(_guarded)
        keep_ctrl_c_out(AsyncOptimizely._build_projection)
        try:
            # A static datafile's projection, in steps on the loop, before the client counts as started: a call
            # after entry never runs build steps itself. Outside the shield, so cancelling the entry stops it.
            await self._build_projection()
            await anyio.lowlevel.checkpoint()  # an entry cancelled by now ends the run here, not in the shield
            with anyio.CancelScope(shield=shielded) as scope:
                self._run_scope = scope
                if self._state is _State.CLOSED:  # closed while this task was on its way here
                    scope.cancel()
                async with anyio.create_task_group() as task_group:
                    await task_group.start(_guarded, self._queue.run, "The event queue")
                    if not self._odp.disabled:
                        await task_group.start(_guarded, self._odp.run, "The ODP event queue")
                    if self._source is not None:
                        await task_group.start(_guarded, self._source.run, "The datafile poller")
                    listeners = self.notification_center.background
                    await task_group.start(_guarded, listeners.run, "The async listener queue")
                    self._task_group = task_group
                    task_status.started()
        except Exception:  # not expected: every part is guarded
            _log.exception("The client's background work failed.")
        finally:
            self._task_group = None
            self._run_scope = None
            if self._stopped is not None:
                self._stopped.set()

    async def close(self, timeout: float | None = None) -> DeliveryReport:
        """Stop taking events, deliver what is queued and let async listeners finish within ``timeout``
        (default ``close_timeout``), stop polling and return what happened to every event.

        Idempotent, callable from any task of the loop the client runs on (concurrent calls share one
        report), shielded from cancellation and bounded by the timeout. Never raises.
        """
        if self._report is not None:
            return self._report
        if self._state is _State.FORKED:
            return self._report_in_fork()
        closing = self._closing
        if closing is None:
            closing = self._closing = anyio.Event()
            try:
                with anyio.CancelScope(shield=True):
                    if self._starting is not None:  # let a start() in progress finish first
                        await self._starting.wait()
                    try:
                        self._report = await self._close(timeout)
                    except Exception:  # not expected; the background work must still end with the client
                        _log.exception("Unexpected error while closing the client.")
                        self._state = _State.CLOSED
                        await self._stop_runner()
                        self._report = self._report_now()
            finally:
                closing.set()
        else:  # another task is closing the client: share its report
            with anyio.CancelScope(shield=True):
                await closing.wait()
        return self._report if self._report is not None else self._report_now()

    async def _close(self, timeout: object) -> DeliveryReport:
        # Any value: None means close_timeout; a subclass is read without its methods; NaN, negatives and
        # integers beyond a float's range are logged and replaced by close_timeout.
        budget = seconds("timeout", timeout, self._close_timeout)
        deadline = anyio.current_time() + budget
        self._state = _State.CLOSED
        watch_forks(self, False)
        try:
            if self._pending:
                held, self._pending = self._pending, []
                _log.warning("Dropping %d track() calls made before any datafile was loaded.", len(held))
                await self._drop_held(held, "not_ready")
            report = await self._queue.close(budget)
            # ODP events share the same bound: whatever time the event queue left.
            await self._odp.close(max(0.0, deadline - anyio.current_time()))
            await self._http.aclose()
            listeners = self.notification_center.background
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                await listeners.join()  # the rest is abandoned (counted, logged) when the runner stops
            listeners.stop()
            await self._stop_runner()
            if self._pending_dropped:
                report = _with_held(report, 0, self._pending_dropped)
            if self._source is not None:
                await self._source.aclose()
            if self._owns_dispatcher and isinstance(self._dispatcher, HttpDispatcher):
                await self._dispatcher.aclose()
        except Exception:
            _log.exception("Unexpected error while closing the client.")
            await self._stop_runner()
            report = self._report_now()
        finally:
            if self._ready is not None:
                self._ready.set()  # release wait_until_ready() callers: no config can arrive any more
        return report

    async def _stop_runner(self) -> None:
        """Cancel what still runs in the background (poller, listener queue) and wait for the runner to end
        (bounded; not at all from an async listener, which runs inside the runner and would wait for itself)."""
        if self._run_scope is not None:
            self._run_scope.cancel()
        if self._stopped is not None and not self.notification_center.background.in_worker():
            with anyio.move_on_after(_STOP_PATIENCE):
                await self._stopped.wait()
        self._runner_task = None

    def _report_now(self) -> DeliveryReport:
        stats = self._queue.stats()
        if self._pending_dropped:
            stats = _with_held(stats, len(self._pending), self._pending_dropped)
        return DeliveryReport(**vars(stats))

    async def wait_until_ready(self, timeout: float = defaults.READY_TIMEOUT) -> bool:
        """Wait until a datafile is loaded (at once for a static one); False when ``timeout`` passes first."""
        if self._config is not None:
            return True
        timeout = seconds("timeout", timeout, defaults.READY_TIMEOUT)
        if self._state in (_State.CLOSED, _State.FORKED):
            return False  # nothing polls any more (here)
        if self._state is _State.UNOPENED and self._source is not None:
            _log.warning(
                "wait_until_ready() before `async with client` (or `await client.start()`): the datafile is "
                "fetched only once the client is started."
            )
        if self._ready is None:
            self._ready = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._ready.wait()
        return self._config is not None

    @property
    def is_ready(self) -> bool:
        return self._config is not None

    @property
    def config(self) -> ProjectConfig | None:
        """The config decisions use now (None until a datafile is loaded)."""
        return self._config

    async def flush(self) -> None:
        """Return when every event queued before the call is delivered or has failed for good, and every async
        listener call made before it has run. Returns at once in a forked child (logged)."""
        if self._state is _State.FORKED:
            self._log_forked()
            return
        await self._queue.flush()
        await self._odp.flush()
        await self.notification_center.background.join()

    def stats(self) -> ClientStats:
        """The client's health as one frozen value: the event counters (queued, in flight, delivered,
        retries, drops by reason), the lifecycle state, the revision in use, the datafile poller's state
        (last error, consecutive failures, last success), the async listeners' counters and the ODP event
        queue's counters."""
        stats = self._queue.stats()
        if self._pending or self._pending_dropped:
            stats = _with_held(stats, len(self._pending), self._pending_dropped)
        config = self._config
        return ClientStats(
            **vars(stats),
            state=self._state.value,
            revision=config.revision if config is not None else None,
            polling=self._source.stats if self._source is not None else None,
            listeners=self.notification_center.background.stats(),
            odp=self._odp.stats(),
        )

    # ------------------------------------------------------------------ fork

    def _forked(self, parent_pid: int) -> None:
        """In a child forked while this client was started: its background work stays in the parent, so the
        copy refuses events (counted as dropped, ``forked``) and start(); decisions still work."""
        self._state = _State.FORKED
        self._forked_from = parent_pid
        self.notification_center.background.forget()
        self._task_group = self._run_scope = self._runner_task = self._host = None
        self._stopped = self._starting = self._closing = None
        self._ready = None

    def _drop_inherited(self) -> None:
        """In any forked child (``._fork_copy``): the track() calls held for the first datafile were made in the
        parent, which sends them; the copy keeps none and counts only its own (as its event queue does)."""
        self._pending = []
        self._pending_dropped = {}

    def _forked_message(self) -> str:
        return FORKED_MESSAGE.format(parent=self._forked_from, child=os.getpid())

    def _log_forked(self) -> None:
        if not self._warned_forked:
            self._warned_forked = True
            _log.error("%s", ClientStateError(self._forked_message()))

    def _report_in_fork(self) -> DeliveryReport:
        """close() in a forked child: nothing to drain here (the queued events are the parent's to send), and
        the HTTP connections are shared with the parent, so they are left alone."""
        self._log_forked()
        return self._report_now()

    async def _refuse_in_fork(self, event: QueuedEvent) -> None:
        self._log_forked()
        self._pending_dropped["forked"] = self._pending_dropped.get("forked", 0) + 1
        if self._on_drop is not None:
            built, _ = materialize([event])
            await run_hook(call_hook(self._on_drop, "on_drop", built, "forked"), "on_drop")

    # ------------------------------------------------------------------ config

    def _set_config(self, config: ProjectConfig) -> None:
        # One assignment each; decisions read self._config once, so they always see one consistent config. The
        # replaced config is simply dropped: whatever still uses it (a decision in progress, a queued event)
        # keeps it alive, and reference counting frees it after.
        self._context = event_context(config, self._event_endpoint)
        self._projection = None  # the replaced config's, built or not
        self._config = config
        if self._ready is not None:
            self._ready.set()

    def _context_of(self, config: ProjectConfig) -> EventContext:
        """The event context of ``config``: the current one's, or (a config replaced meanwhile) built anew."""
        context = self._context
        if self._config is config and context is not None:
            return context
        return event_context(config, self._event_endpoint)

    async def _on_new_config(self, config: ProjectConfig) -> None:
        # Its projection first, in steps, so that get_optimizely_config() never finds the new config without it
        # (and never runs a build's steps itself); as the official SDK, which builds it before the switch too.
        build = await self._prebuild_projection(config)
        self._set_config(config)
        self._projection = build
        # The source has logged the new revision (at INFO); this only marks that the client switched to it.
        _log.debug("The client now uses datafile revision %s.", config.revision)
        # Held track() calls go first, so a slow CONFIG_UPDATE listener does not hold them back.
        if self._pending:
            await self._replay_pending()
        await self.notification_center.send_notifications(NotificationType.OPTIMIZELY_CONFIG_UPDATE)

    async def _replay_pending(self) -> None:
        """Send the track() calls held while no datafile was loaded, in the order they were made."""
        pending, self._pending = self._pending, []
        _log.info("A datafile is loaded: sending %d held track() calls.", len(pending))
        config = self._config
        assert config is not None
        for held in pending:
            submitted = self._queue.stats().submitted
            try:
                # Stamped with the moment of the call, not of the datafile's arrival.
                reason = await self._send_conversion(
                    config, held.event_key, held.user_id, held.attributes, held.event_tags, held.timestamp
                )
            except Exception:
                _log.exception('Unexpected error sending the held track("%s") call.', held.event_key)
                # Counted as dropped unless the queue took it (then the queue accounts for it).
                reason = "invalid_payload" if self._queue.stats().submitted == submitted else None
            if reason is not None:
                _log.warning('Dropping the held track("%s") call: %s.', held.event_key, reason)
                await self._drop_held([held], reason)

    async def _drop_held(self, held: Sequence[HeldTrack], reason: str) -> None:
        """Count held track() calls as dropped for ``reason`` and tell ``on_drop`` (sync or async; its errors
        are logged). While the client is open an async callback runs in its task group, as the queue's do;
        otherwise it is awaited here, for at most ``close_timeout`` so that close() stays bounded."""
        self._pending_dropped[reason] = self._pending_dropped.get(reason, 0) + len(held)
        if self._on_drop is None or not held:
            return
        pending = call_hook(self._on_drop, "on_drop", list(held), reason)
        if pending is None:
            return
        if self._task_group is not None and self._state is _State.OPEN:
            start_background(self._task_group, run_hook, pending, "on_drop")
        else:
            with anyio.move_on_after(self._close_timeout):
                await run_hook(pending, "on_drop")

    def get_optimizely_config(self) -> OptimizelyConfig | None:
        """The OptimizelyConfig projection of the current datafile, built once per revision on the loop in
        bounded steps: a static datafile's while the client is entered (``async with`` / ``start()``), each
        polled revision's before the client switches to it. A call on a started client returns the built object;
        a call before the client is started (or after it closed mid-build) builds what is left at once."""
        config = self._usable_config("get_optimizely_config")
        if config is None:
            return None
        try:
            return self._projection_for(config).finish()
        except Exception:
            _log.exception("Could not build the OptimizelyConfig.")
            return None

    def _projection_for(self, config: ProjectConfig) -> ProjectionBuild:
        """The projection build of ``config``: the client's, or a new one (kept while ``config`` is current)."""
        build = self._projection
        if build is None or build.config is not config:
            from .config.optimizely_config import ProjectionBuild

            build = ProjectionBuild(config)
            if config is self._config:
                self._projection = build
        return build

    async def _prebuild_projection(self, config: ProjectConfig) -> ProjectionBuild:
        """The projection build of a config about to be switched to, run in steps until done or the client
        closes (a later call then runs the steps left)."""
        from .config.optimizely_config import ProjectionBuild

        build = ProjectionBuild(config)
        await self._run_projection(build, lambda: self._state is not _State.CLOSED)
        return build

    async def _build_projection(self) -> None:
        """Build the current config's projection (a static datafile's, at entry) on the loop in steps, as the
        official SDK builds it at every update, so that get_optimizely_config() finds it ready; stop if the client
        closes meanwhile (a later call runs the steps left). It runs before the poller starts, so no polled
        revision can replace the config during it."""
        config = self._config
        if config is None:
            return
        build = self._projection_for(config)
        await self._run_projection(build, lambda: self._state is not _State.CLOSED)

    @staticmethod
    async def _run_projection(build: ProjectionBuild, keep_going: Callable[[], bool]) -> None:
        """Run ``build`` in steps while ``keep_going()``; a failure is logged (a later call retries the steps left)."""
        try:
            await build.run_in_steps(keep_going)
        except Exception:
            _log.exception("Could not build the OptimizelyConfig of revision %s.", build.config.revision)

    # ------------------------------------------------------------------ events

    async def _on_dispatch(self, payload: Mapping[str, Any], url: str) -> None:
        if self.notification_center.has_listeners(NotificationType.LOG_EVENT):
            await self.notification_center.send_notifications(NotificationType.LOG_EVENT, _log_event(url, payload))

    async def _enqueue(self, event: QueuedEvent) -> None:
        if not self._offer(event):
            await self._put(event)

    async def _put(self, event: QueuedEvent) -> None:
        """The slow path after :meth:`_offer`: wait for room (bounded by enqueue_timeout), or count the drop."""
        if self._state is _State.FORKED:
            await self._refuse_in_fork(event)
            return
        await self._queue.put(event)

    def _offer(self, event: QueuedEvent) -> bool:
        """Queue ``event`` if the queue has room now (the hot path: no coroutine); False when it has not."""
        if self._state is not _State.OPEN:
            if self._state is _State.FORKED:
                return False
            if self._state is _State.UNOPENED and not self._warned_unopened:
                self._warned_unopened = True
                _log.warning(
                    "Events are queued but not sent: start the client (`async with client` or "
                    "`await client.start()`) to start sending."
                )
        return self._queue.offer(event)

    async def _send_impression(
        self,
        config: ProjectConfig,
        experiment: ExperimentInfo | HoldoutInfo | None,
        variation: VariationInfo | None,
        flag_key: str,
        rule_key: str,
        rule_type: str,
        enabled: bool,
        user_id: str,
        attributes: dict[str, Any] | None,
        cmab_uuid: str | None = None,
    ) -> None:
        pending = self._impression(
            config, experiment, variation, flag_key, rule_key, rule_type, enabled, user_id, attributes, cmab_uuid
        )
        if not self.notification_center.has_listeners(_ACTIVATE):
            if not self._offer(pending):
                await self._put(pending)
            return
        # Listeners see the payload that is sent, so the event is built (and its uuid fixed) now.
        built = self._build_for_listeners(pending, pending.build)
        if built is None:
            return
        event, payload = built
        await self._enqueue(event)
        await self.notification_center.send_notifications(
            _ACTIVATE,
            experiment if experiment is not None else EMPTY_EXPERIMENT,
            user_id,
            attributes,
            variation,
            _log_event(pending.context.endpoint, payload),
        )

    def _impression(
        self,
        config: ProjectConfig,
        experiment: ExperimentInfo | HoldoutInfo | None,
        variation: VariationInfo | None,
        flag_key: str,
        rule_key: str,
        rule_type: str,
        enabled: bool,
        user_id: str,
        attributes: dict[str, Any] | None,
        cmab_uuid: str | None,
    ) -> PendingEvent:
        """An impression to queue: a snapshot of the input, stamped with the moment of the decision. The queue's
        task builds the event later (``_send_impression`` builds it at once for ACTIVATE listeners). The synchronous
        decide path queues it with ``_offer`` (no ACTIVATE listener there)."""
        context = self._context_of(config)
        return PendingEvent(
            context,
            build_impression,
            (
                config,
                context,
                experiment,
                variation,
                flag_key,
                rule_key,
                rule_type,
                enabled,
                user_id,
                dict(attributes) if attributes else None,
                cmab_uuid,
                now_ms(),
            ),
        )

    async def track(
        self,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None = None,
        event_tags: dict[str, Any] | None = None,
    ) -> None:
        """Record a conversion for ``event_key``; returns nothing and never raises."""
        event_key, user_id = plain(event_key), plain(user_id)
        try:
            if not isinstance(event_key, str) or not event_key:
                invalid_input("event_key")
                return
            if not isinstance(user_id, str):
                invalid_input("user_id")
                return
            if (attributes and type(attributes) is not dict) or (event_tags and type(event_tags) is not dict):
                if attributes_ok(attributes):  # each logs the official message when it fails
                    event_tags_ok(event_tags)
                return
            config = self._config
            # A deep copy now: what the caller does with the tags later cannot change or break the event.
            tags, problem = snapshot_tags(event_tags) if event_tags else (event_tags, None)
            if problem is not None:  # this event alone is refused, counted and passed to on_drop
                _log.error('Not tracking event "%s": %s', event_key, problem)
                held = HeldTrack(
                    event_key, user_id, dict(attributes) if attributes else attributes, dict(event_tags or {}), now_ms()
                )
                await self._drop_held([held], "invalid_payload")
                return
            if config is None:
                await self._hold_track(event_key, user_id, attributes, tags)
                return
            prepared = self._prepare_conversion(config, event_key, user_id, attributes, tags, now_ms())
            if isinstance(prepared, str):
                return
            if not self.notification_center.has_listeners(_TRACK):
                if not self._offer(prepared):
                    await self._put(prepared)
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug('Tracking event "%s" for user "%s".', event_key, user_id)
                return
            await self._send_prepared(prepared, event_key, user_id, attributes, event_tags)
        except Exception:
            _log.exception('Unexpected error in track("%s"); the event was not recorded.', event_key)

    async def _send_conversion(
        self,
        config: ProjectConfig,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None,
        event_tags: dict[str, Any] | None,
        timestamp: int,
    ) -> str | None:
        """Queue the conversion of a validated track() call; return None, or why it was not queued."""
        prepared = self._prepare_conversion(config, event_key, user_id, attributes, event_tags, timestamp)
        if isinstance(prepared, str):
            return prepared
        await self._send_prepared(prepared, event_key, user_id, attributes, event_tags)
        return None

    def _prepare_conversion(
        self,
        config: ProjectConfig,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None,
        event_tags: dict[str, Any] | None,
        timestamp: int,
    ) -> PendingEvent | str:
        """The deferred conversion of a validated track() call, or why it is refused.

        It holds a snapshot of the input, stamped with the moment of the call; the queue's task builds the
        event model later.
        """
        event_info = config.events_by_key.get(event_key)
        if event_info is None:
            _log.error('Event "%s" is not in datafile.', event_key)
            _log.debug('Not tracking user "%s" for event "%s".', user_id, event_key)
            return "unknown_event"
        # The tags are track()'s snapshot (snapshot_tags), also for held calls.
        tags = event_tags if event_tags else (None if event_tags is None else {})
        context = self._context_of(config)
        return PendingEvent(
            context,
            _conversion,
            (
                config,
                context,
                event_info.id,
                event_key,
                user_id,
                dict(attributes) if attributes else None,
                tags,
                timestamp,
            ),
        )

    async def _send_prepared(
        self,
        prepared: PendingEvent,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None,
        event_tags: dict[str, Any] | None,
    ) -> None:
        if not self.notification_center.has_listeners(_TRACK):
            await self._enqueue(prepared)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug('Tracking event "%s" for user "%s".', event_key, user_id)
            return
        # TRACK listeners get the payload that is sent, so the event is built (and its uuid fixed) now.
        built = self._build_for_listeners(prepared, prepared.build)
        if built is None:
            return
        event, payload = built
        await self._enqueue(event)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug('Tracking event "%s" for user "%s".', event_key, user_id)
        await self.notification_center.send_notifications(
            _TRACK, event_key, user_id, attributes, event_tags, _log_event(event.context.endpoint, payload)
        )

    def _build_for_listeners(
        self, pending: PendingEvent, build: Callable[..., UserEvent]
    ) -> tuple[UserEvent, dict[str, Any]] | None:
        """The event and its payload, built now for TRACK / ACTIVATE listeners; None (the event counted as
        dropped, ``invalid_event``) when they cannot be built: it costs that event only."""
        try:
            event = build(event_uuid=str(uuid.uuid4()))
            return event, build_payload([event])
        except Exception:
            _log.exception("Could not build an event for its listeners; the event is dropped.")
            self._queue.reject(pending, "invalid_event")
            return None

    async def _hold_track(
        self,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None,
        event_tags: dict[str, Any] | None,
    ) -> None:
        held = HeldTrack(
            event_key,
            user_id,
            dict(attributes) if attributes else attributes,
            dict(event_tags) if event_tags else event_tags,
            now_ms(),
        )
        if self._state is _State.CLOSED:
            _log.error(NOT_READY.format("track"))
            await self._drop_held([held], "not_ready")
            return
        if self._state is _State.FORKED:  # nothing here will ever replay it
            self._log_forked()
            await self._drop_held([held], "forked")
            return
        if len(self._pending) >= _PENDING_TRACK_LIMIT:
            _log.warning("No datafile yet and %d track() calls are waiting: dropping this one.", _PENDING_TRACK_LIMIT)
            await self._drop_held([held], "not_ready")
            return
        _log.debug('No datafile yet: track("%s") is held until one is loaded.', event_key)
        self._pending.append(held)

    # ------------------------------------------------------------------ decide API

    def create_user_context(
        self, user_id: str, attributes: dict[str, Any] | None = None
    ) -> OptimizelyUserContext | None:
        """A user context for the decide API; None (with a log) for a bad user id or attributes."""
        user_id = plain(user_id)
        if not isinstance(user_id, str):
            invalid_input("user_id")
            return None
        if attributes is not None and type(attributes) is not dict:
            invalid_input("attributes")
            return None
        if _log.isEnabledFor(logging.DEBUG):
            self._odp.identify_user(self._config, user_id)
        return OptimizelyUserContext(self, user_id, attributes)

    # ------------------------------------------------------------------ ODP

    async def send_odp_event(
        self,
        action: str,
        identifiers: dict[str, str] | None = None,
        type: str = "fullstack",
        data: dict[str, str | int | float | bool | None] | None = None,
    ) -> None:
        """Queue an event for the Optimizely Data Platform (the datafile's ODP integration); never raises.

        The official checks apply, in order: a non-empty ``action``, at least one identifier, ODP enabled and
        integrated, ``data`` values of type str/int/float/bool/None. An ``fs-user-id`` identifier key (any
        case) is sent as ``fs_user_id``; the caller's dict is not changed. Delivery is batched in the
        background (``odp_event_flush_interval``); ``flush()`` and ``close()`` wait for it.
        """
        try:
            self._odp.send_event(self._config, action, identifiers, type, data)
        except Exception:
            _log.exception("Unexpected error in send_odp_event.")


_S = TypeVar("_S", QueueStats, DeliveryReport)


def _with_held(stats: _S, waiting: int, dropped: Mapping[str, int]) -> _S:
    """Fold the track() calls held (or given up on) before any datafile into the queue's counters."""
    drops = dict(stats.dropped)
    for reason, count in dropped.items():
        drops[reason] = drops.get(reason, 0) + count
    return dataclasses.replace(
        stats,
        submitted=stats.submitted + waiting + sum(dropped.values()),
        queued=stats.queued + waiting,
        dropped=drops,
    )


def _conversion(
    config: ProjectConfig,
    context: EventContext,
    event_id: str,
    event_key: str,
    user_id: str,
    attributes: dict[str, Any] | None,
    tags: dict[Any, Any] | None,
    timestamp: int | None = None,
    event_uuid: str | None = None,
) -> ConversionEvent:
    return build_conversion(
        config,
        context,
        event_id,
        event_key,
        user_id,
        attributes,
        tags,
        parse_revenue(tags) if tags else None,
        parse_value(tags) if tags else None,
        event_uuid=event_uuid,
        timestamp=timestamp,
    )


def _is_httpx_client(value: object) -> bool:
    import httpx  # only when a client is given: importing httpx is a large part of the SDK's import time

    return isinstance(value, httpx.AsyncClient)


def _seconds(value: object) -> bool:
    """Whether ``value`` is a usable number of seconds (``close(timeout=...)`` tolerates anything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _log_event(url: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The official ``LogEvent.__dict__`` shape that TRACK, ACTIVATE and LOG_EVENT listeners receive."""
    return {
        "url": url,
        "params": payload,
        "http_verb": "POST",
        "headers": {"Content-Type": "application/json"},
    }
