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
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import httpx

from . import defaults
from ._decisions import DecisionMethods
from ._lazy_http import LazyHttpClient
from ._validation import (
    NOT_READY,
    attributes_ok,
    event_tags_ok,
    invalid_input,
    is_non_empty_str,
    number,
)
from .cmab import build_cmab_service
from .config.loader import run_paced
from .config.project_config import (
    EMPTY_EXPERIMENT,
    ExperimentInfo,
    HoldoutInfo,
    ProjectConfig,
    VariationInfo,
    parse_config,
    take_apart,
)
from .decision.user_profile import UserProfileService
from .errors import ClientStateError, ConfigurationError
from .events.dispatcher import Dispatcher, HttpDispatcher
from .events.factory import build_conversion, build_impression, now_ms
from .events.ledger import call_hook, run_hook
from .events.models import ConversionEvent, EventContext, PendingEvent, QueuedEvent
from .events.payload import build_payload
from .events.queue import DeliveryReport, EventQueue, QueueStats
from .events.tags import check_json_encodable, parse_revenue, parse_value
from .notifications import NotificationCenter, NotificationType
from .odp import build_odp_manager
from .odp.stats import ClientStats, with_odp

if TYPE_CHECKING:
    from .config.optimizely_config import OptimizelyConfig
    from .config.sources import PollingConfigSource
    from .decide import DecideOption
    from .user_context import OptimizelyUserContext

__all__ = ["AsyncOptimizely", "HeldTrack"]

_log = logging.getLogger("optimizely_async")

_ACTIVATE: Final = NotificationType.ACTIVATE
_TRACK: Final = NotificationType.TRACK

#: Static datafiles larger than this are parsed in a worker thread when the client starts.
_INLINE_PARSE_LIMIT: Final = 256 * 1024
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


#: How long a replaced config is watched for its last outside reference to go before it is left to refcounting.
_RETIRE_PATIENCE = 600.0


def _held_only_count() -> int:
    """What ``sys.getrefcount`` says, in :func:`_retire_when_unused`'s code shape, of an object that only a
    one-item list references (measured, not assumed: interpreters differ in the temporary references they
    count)."""
    holder = [object()]
    return sys.getrefcount(holder[0])


_HELD_ONLY = _held_only_count() if hasattr(sys, "getrefcount") else -1


async def _retire_when_unused(holder: list[ProjectConfig]) -> None:
    """Wait until ``holder`` has the only reference to its config (decisions in progress, queued events and
    user code may still hold it), then take the config apart in a worker thread, a few entries at a time.

    Nothing can get hold of an object it has no reference to, so once the count says "only us", it stays so.
    A config still referenced after :data:`_RETIRE_PATIENCE` seconds is left alone (refcounting frees it).
    """
    delay = 0.05
    deadline = anyio.current_time() + _RETIRE_PATIENCE
    while sys.getrefcount(holder[0]) > _HELD_ONLY:
        if anyio.current_time() >= deadline:
            return
        await anyio.sleep(delay)
        delay = min(delay * 2, 5.0)
    config = holder.pop()
    try:
        await run_paced(functools.partial(take_apart, config))
    except Exception:  # never let this housekeeping take the client's task group down
        _log.exception("Could not take apart the replaced config of revision %s.", config.revision)


class AsyncOptimizely(DecisionMethods):
    """The async Optimizely Feature Experimentation client.

    Use it as an async context manager: entering starts the background event queue (and the datafile
    poller with ``sdk_key``); leaving drains queued events within ``close_timeout`` and stops.

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
        enqueue_timeout: how long ``track()`` waits for room in a full queue before dropping the event.
        max_concurrent_requests: event requests in flight at once.
        close_timeout: how long leaving the context may take to drain.
        http_client: an ``httpx.AsyncClient`` to share (not closed by the SDK).
        event_dispatcher: a custom :class:`~optimizely_async.events.dispatcher.Dispatcher` (replaces HTTP).
        user_profile_service: sticky bucketing; ``lookup``/``save`` may be sync or async.
        default_decide_options: options added to every ``decide`` call.
        datafile_request_timeout: seconds one datafile fetch may take before it counts as failed (default 10).
        on_drop: ``callback(events, reason)`` for events dropped for good (sync or async; its errors are
            logged). ``events`` are the ``ImpressionEvent`` / ``ConversionEvent`` models, except for
            ``track()`` calls given up on before a datafile could build them (reasons ``not_ready`` and
            ``unknown_event``): those arrive as :class:`HeldTrack` records.
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
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
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
        self._task_group: anyio.abc.TaskGroup | None = None
        self._source_scope: anyio.CancelScope | None = None
        self._on_drop = on_drop
        self._pending: list[HeldTrack] = []
        #: Held track() calls given up on, by reason (``not_ready``, ``unknown_event``, ``invalid_payload``).
        self._pending_dropped: dict[str, int] = {}
        self._report: DeliveryReport | None = None
        self._warned_unopened = False
        self._raw_datafile: str | bytes | bytearray | Mapping[str, Any] | None = None

        if datafile is not None:
            if isinstance(datafile, Mapping) or len(datafile) <= _INLINE_PARSE_LIMIT:
                self._set_config(parse_config(datafile))
            else:
                self._raw_datafile = datafile  # parsed off the loop in __aenter__

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

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncOptimizely:
        if self._state is _State.OPEN:
            raise ClientStateError("This AsyncOptimizely client is already open.")
        if self._state is _State.CLOSED:
            raise ClientStateError("This AsyncOptimizely client is closed; create a new one.")
        if self._raw_datafile is not None:
            raw, self._raw_datafile = self._raw_datafile, None
            self._set_config(await run_paced(functools.partial(parse_config, raw)))
            if self._source is not None and self._config is not None:
                self._source.adopt(self._config)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self._queue.run)
            if not self._odp.disabled:
                await task_group.start(self._odp.run)
            if self._source is not None:
                await task_group.start(self._run_source)
        except BaseException as exc:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._task_group = task_group
        self._state = _State.OPEN
        if self._config is not None and self._pending:
            # track() calls made before a large static datafile was parsed (just above).
            await self._replay_pending()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        task_group = self._task_group
        try:
            with anyio.CancelScope(shield=exc_type is not None):
                await self.close()
        finally:
            if self._ready is not None:
                self._ready.set()  # release wait_until_ready() callers: no config can arrive any more
            if task_group is not None:
                self._task_group = None
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(exc_type, exc, tb)
        return None

    async def close(self, timeout: float | None = None) -> DeliveryReport:
        """Stop taking events, deliver what is queued within ``timeout`` (default ``close_timeout``), stop
        polling and return what happened to every event. Idempotent."""
        if self._report is not None:
            return self._report
        self._state = _State.CLOSED
        if self._pending:
            held, self._pending = self._pending, []
            _log.warning("Dropping %d track() calls made before any datafile was loaded.", len(held))
            await self._drop_held(held, "not_ready")
        budget = self._close_timeout if timeout is None else timeout
        started = anyio.current_time()
        report = await self._queue.close(budget)
        # ODP events share the same bound: whatever time the event queue left.
        seconds = float(budget) if _seconds(budget) else defaults.CLOSE_TIMEOUT
        await self._odp.close(max(0.0, seconds - (anyio.current_time() - started)))
        await self._http.aclose()
        if self._pending_dropped:
            report = _with_held(report, 0, self._pending_dropped)
        self._report = report
        if self._source is not None:
            await self._source.aclose()
        if self._owns_dispatcher and isinstance(self._dispatcher, HttpDispatcher):
            await self._dispatcher.aclose()
        # Stop polling, but never cancel the task group here: close() may run inside the `async with` body,
        # which the group's cancel scope also covers. __aexit__ ends the group.
        if self._source_scope is not None:
            self._source_scope.cancel()
        return report

    async def _run_source(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self._source is not None
        with anyio.CancelScope() as scope:
            self._source_scope = scope
            await self._source.run(task_status=task_status)

    async def wait_until_ready(self, timeout: float = defaults.READY_TIMEOUT) -> bool:
        """Wait until a datafile is loaded (at once for a static one); False when ``timeout`` passes first."""
        if self._config is not None:
            return True
        if self._state is _State.CLOSED:
            return False  # nothing polls any more
        if self._state is _State.UNOPENED and self._source is not None:
            _log.warning(
                "wait_until_ready() before `async with client`: the datafile is fetched only once the client "
                "is entered."
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
        """Return when every event queued before the call is delivered or has failed for good."""
        await self._queue.flush()
        await self._odp.flush()

    def stats(self) -> ClientStats:
        """Event counters: queued, in flight, delivered, retries and drops by reason; ODP events under ``odp``."""
        stats = self._queue.stats()
        if self._pending or self._pending_dropped:
            stats = _with_held(stats, len(self._pending), self._pending_dropped)
        return with_odp(stats, self._odp.stats())

    # ------------------------------------------------------------------ config

    def _set_config(self, config: ProjectConfig) -> None:
        old = self._config
        context = config.event_context
        if self._event_endpoint is not None:
            context = context.model_copy(update={"endpoint": self._event_endpoint})
        # One assignment each; decisions read self._config once, so they always see one consistent config.
        self._context = context
        self._config = config
        if self._ready is not None:
            self._ready.set()
        if old is not None and old is not config:
            self._retire(old)

    def _retire(self, config: ProjectConfig) -> None:
        """Have the replaced ``config`` taken apart in a worker thread once nothing references it any more, so
        that freeing it does not stall the event loop (see :func:`take_apart`)."""
        task_group = self._task_group
        if task_group is None or self._state is not _State.OPEN or _HELD_ONLY < 0:
            return  # freed by reference counting wherever its last reference goes, as before
        task_group.start_soon(_retire_when_unused, [config])

    async def _on_new_config(self, config: ProjectConfig) -> None:
        self._set_config(config)
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
            self._task_group.start_soon(run_hook, pending, "on_drop")
        else:
            with anyio.move_on_after(self._close_timeout):
                await run_hook(pending, "on_drop")

    def get_optimizely_config(self) -> OptimizelyConfig | None:
        """The OptimizelyConfig projection of the current datafile (built once per revision)."""
        config = self._usable_config("get_optimizely_config")
        if config is None:
            return None
        try:
            from .config.optimizely_config import optimizely_config_for

            return optimizely_config_for(config)
        except Exception:
            _log.exception("Could not build the OptimizelyConfig.")
            return None

    # ------------------------------------------------------------------ events

    async def _on_dispatch(self, payload: Mapping[str, Any], url: str) -> None:
        if self.notification_center.has_listeners(NotificationType.LOG_EVENT):
            await self.notification_center.send_notifications(NotificationType.LOG_EVENT, _log_event(url, payload))

    async def _enqueue(self, event: QueuedEvent) -> None:
        if not self._offer(event):
            await self._queue.put(event)  # waits for room (bounded by enqueue_timeout), or counts the drop

    def _offer(self, event: QueuedEvent) -> bool:
        """Queue ``event`` if the queue has room now (the hot path: no coroutine); False when it has not."""
        if self._state is _State.UNOPENED and not self._warned_unopened:
            self._warned_unopened = True
            _log.warning("Events are queued but not sent: enter the client with `async with` to start sending.")
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
        context = self._context if self._config is config else None
        if context is None:
            context = config.event_context
        # A snapshot of the input, stamped with the moment of the decision; built later by the queue's task.
        build = functools.partial(
            build_impression,
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
            timestamp=now_ms(),
        )
        if not self.notification_center.has_listeners(_ACTIVATE):
            pending = PendingEvent(context, build)
            if not self._offer(pending):
                await self._queue.put(pending)
            return
        # Listeners see the payload that is sent, so the event is built (and its uuid fixed) now.
        event = build(event_uuid=str(uuid.uuid4()))
        await self._enqueue(event)
        await self.notification_center.send_notifications(
            _ACTIVATE,
            experiment if experiment is not None else EMPTY_EXPERIMENT,
            user_id,
            attributes,
            variation,
            _log_event(context.endpoint, build_payload([event])),
        )

    async def track(
        self,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None = None,
        event_tags: dict[str, Any] | None = None,
    ) -> None:
        """Record a conversion for ``event_key``; returns nothing and never raises."""
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
            if config is None:
                problem = check_json_encodable(event_tags) if event_tags else None
                if problem is not None:  # refused now, as it would be with a datafile
                    _log.error('Not tracking event "%s": %s', event_key, problem)
                    return
                await self._hold_track(event_key, user_id, attributes, event_tags)
                return
            prepared = self._prepare_conversion(config, event_key, user_id, attributes, event_tags, now_ms())
            if isinstance(prepared, str):
                return
            if not self.notification_center.has_listeners(_TRACK):
                if not self._offer(prepared):
                    await self._queue.put(prepared)
                if _log.isEnabledFor(logging.INFO):
                    _log.info('Tracking event "%s" for user "%s".', event_key, user_id)
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
            _log.info('Not tracking user "%s" for event "%s".', user_id, event_key)
            return "unknown_event"
        tags = event_tags if event_tags else (None if event_tags is None else {})
        if tags:
            problem = check_json_encodable(tags)
            if problem is not None:
                _log.error('Not tracking event "%s": %s', event_key, problem)
                return "invalid_payload"
        context = self._context if self._config is config else config.event_context
        assert context is not None
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
                dict(tags) if tags is not None else None,
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
            if _log.isEnabledFor(logging.INFO):
                _log.info('Tracking event "%s" for user "%s".', event_key, user_id)
            return
        # TRACK listeners get the payload that is sent, so the event is built (and its uuid fixed) now.
        event = prepared.build(event_uuid=str(uuid.uuid4()))
        await self._enqueue(event)
        if _log.isEnabledFor(logging.INFO):
            _log.info('Tracking event "%s" for user "%s".', event_key, user_id)
        await self.notification_center.send_notifications(
            _TRACK,
            event_key,
            user_id,
            attributes,
            event_tags,
            _log_event(event.context.endpoint, build_payload([event])),
        )

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
        if len(self._pending) >= _PENDING_TRACK_LIMIT:
            _log.warning("No datafile yet and %d track() calls are waiting: dropping this one.", _PENDING_TRACK_LIMIT)
            await self._drop_held([held], "not_ready")
            return
        _log.info('No datafile yet: track("%s") is held until one is loaded.', event_key)
        self._pending.append(held)

    # ------------------------------------------------------------------ decide API

    def create_user_context(
        self, user_id: str, attributes: dict[str, Any] | None = None
    ) -> OptimizelyUserContext | None:
        """A user context for the decide API; None (with a log) for a bad user id or attributes."""
        if not isinstance(user_id, str):
            invalid_input("user_id")
            return None
        if attributes is not None and type(attributes) is not dict:
            invalid_input("attributes")
            return None
        from .user_context import OptimizelyUserContext

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
