"""SyncOptimizely: the client for code without an event loop (Django and Flask views, Celery tasks, scripts).

It has the official ``optimizely.Optimizely`` method names, arguments and return values. Decisions run in the
calling thread, through the async client's own code (``.sync_inline``), so they cost no thread round trip
and give the same results, logs and notifications as ``AsyncOptimizely``. Events,
datafile polling and the LOG_EVENT / CONFIG_UPDATE listeners run on a loop thread the client owns
(``.sync_loop``); a fork gives each child process its own (``.sync_fork``).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from . import defaults
from ._logging import sdk_logger
from ._validation import NOT_READY, seconds
from .errors import ConfigurationError
from .events.queue import DeliveryReport
from .stats import ClientStats
from .sync_context import SyncNotificationCenter, SyncUserContext
from .sync_fork import abandon, ensure_exit_hooks, watch
from .sync_inline import drive
from .sync_loop import LoopClient, LoopThread, OwnThreadError
from .sync_options import SyncOptions, check_options, sync_signature

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .config.optimizely_config import OptimizelyConfig
    from .config.project_config import ProjectConfig
    from .events.models import QueuedEvent

__all__ = ["SyncOptimizely"]

_log = sdk_logger()

_T = TypeVar("_T")

#: Seconds a calling thread waits for the loop thread beyond a request's own timeout (the loop may be busy).
_LOOP_MARGIN: Final = 5.0


class SyncOptimizely:
    """The synchronous Optimizely Feature Experimentation client: a drop-in for the official
    ``optimizely.Optimizely`` in the common calls, and thread-safe.

    ```python
    with SyncOptimizely(sdk_key="...") as client:
        client.wait_until_ready(10)
        if client.is_feature_enabled("new_checkout", "user-1", {"plan": "pro"}):
            ...
        client.track("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200})
    ```

    Decisions are computed in the calling thread; events and polling run on a daemon thread the client owns,
    started when it is first needed (at once with ``sdk_key``). Use it from any number of threads. It
    survives ``fork()`` (gunicorn ``--preload``, Celery prefork): each child process gets its own thread and
    an empty event queue on its first call. ``close()`` (or leaving the ``with`` block) delivers what is
    queued within ``close_timeout``; clients still open at interpreter exit are closed then.

    The options are ``AsyncOptimizely``'s (``SyncOptions`` lists them; each one's meaning and default are in
    ``AsyncOptimizely``'s reference), CMAB and ODP included, less two that do not apply: ``http_client``
    (an ``httpx.AsyncClient`` belongs to one event loop) and ``enqueue_timeout`` (a calling thread never waits
    for room: when the queue is full the event is dropped at once and counted, as in the official SDK). An
    option it does not take raises ``ConfigurationError``. ``user_profile_service`` and listeners must be
    plain functions and methods; ``on_drop`` and a custom ``event_dispatcher`` run on the loop thread and may
    be ``async``. An exception from those on the loop thread is logged and the thread goes on, ``SystemExit`` and
    ``KeyboardInterrupt`` included (there they could only end the thread, and event delivery with it); from the
    user's code run there for a call (a CMAB decision's user profile service or listeners), the call raises them.

    With a datafile that has CMAB experiments, decisions run on the loop thread (the calling thread waits for
    them): a prediction may have to be fetched. ``fetch_qualified_segments`` and ``send_odp_event`` run there
    too.
    """

    def __init__(
        self,
        datafile: str | bytes | Mapping[str, Any] | None = None,
        sdk_key: str | None = None,
        **options: Unpack[SyncOptions],
    ) -> None:
        check_options(options)
        ups = options.get("user_profile_service")
        for name in ("lookup", "save"):
            if inspect.iscoroutinefunction(getattr(ups, name, None)):
                raise ConfigurationError(
                    f"SyncOptimizely needs a user_profile_service whose {name}() is a plain method: decisions "
                    "run in the calling thread, which has no event loop to await it."
                )
        self._sdk_key = sdk_key
        self._options = options
        self._client: LoopClient = self._new_client(datafile)  # validates every option
        self._close_timeout = float(options.get("close_timeout", defaults.CLOSE_TIMEOUT))
        self._max_pending = options.get("max_queue_size", defaults.MAX_QUEUE_SIZE)
        # How long a calling thread waits for the loop thread to fetch a CMAB prediction (two attempts, 0.1 s
        # apart) or ODP segments; past it, the call gives its failure value (logged).
        cmab_timeout = options.get("cmab_request_timeout", defaults.CMAB_REQUEST_TIMEOUT)
        self._cmab_wait = 2 * float(cmab_timeout) + defaults.CMAB_RETRY_DELAY + _LOOP_MARGIN
        segments_timeout = options.get("odp_segment_request_timeout") or defaults.ODP_SEGMENT_REQUEST_TIMEOUT
        self._segments_wait = float(segments_timeout) + _LOOP_MARGIN
        self._lock = threading.RLock()  # lifecycle: starting, closing, recovering after a fork
        self._forked = False
        self._report: DeliveryReport | None = None
        self._runner = LoopThread(self._client, max_pending=self._max_pending)
        #: Listeners for DECISION, TRACK, ACTIVATE, LOG_EVENT and OPTIMIZELY_CONFIG_UPDATE (plain functions).
        self.notification_center = SyncNotificationCenter(self._client.notification_center)
        if sdk_key is not None or self._client.config is None:
            # Polling starts now; a large static datafile is parsed on the loop before the constructor returns.
            self._runner.start(wait=True)
        watch(self)

    def _new_client(self, datafile: str | bytes | Mapping[str, Any] | None) -> LoopClient:
        return LoopClient(self._hand_off, datafile, self._sdk_key, **self._options)

    # ------------------------------------------------------------------ readiness and state

    @property
    def is_valid(self) -> bool:
        """Always True, for code written against the official SDK: options that are not usable raise
        ``ConfigurationError`` at construction instead. See ``is_ready``."""
        return True

    @property
    def is_ready(self) -> bool:
        """Whether a datafile is loaded (decisions return their failure values until then)."""
        return self._live().config is not None

    @property
    def config(self) -> ProjectConfig | None:
        """The config decisions use now (None until a datafile is loaded)."""
        return self._live().config

    def wait_until_ready(self, timeout: float = defaults.READY_TIMEOUT) -> bool:
        """Block until a datafile is loaded (at once for a static one); False when ``timeout`` passes first."""
        client = self._live()
        if client.config is not None:
            return True
        if self._report is not None:
            return False
        wait = _seconds("wait_until_ready", timeout, defaults.READY_TIMEOUT)
        try:
            return self._runner.call(lambda: client.wait_until_ready(wait), wait + 1.0)
        except OwnThreadError:
            _log.error("wait_until_ready() cannot be called from a listener on the client's own loop thread.")
        except (TimeoutError, RuntimeError):
            pass
        return client.config is not None

    def stats(self) -> ClientStats:
        """The client's health, as ``AsyncOptimizely.stats()``: the event counters (queued, including events
        not yet moved to the queue, in flight, delivered, retries and drops by reason), the lifecycle state,
        the revision in use, the datafile poller's state and the ODP event queue's counters."""
        self._live()
        return self._runner.stats()

    # ------------------------------------------------------------------ experiments

    def activate(self, experiment_key: str, user_id: str, attributes: dict[str, Any] | None = None) -> str | None:
        """Decide the user's variation and send an impression; the variation key or None."""
        return self._decide(self._live().activate(experiment_key, user_id, attributes), None, "activate")

    def get_variation(self, experiment_key: str, user_id: str, attributes: dict[str, Any] | None = None) -> str | None:
        """The variation key the user is bucketed into, or None. Sends no event."""
        return self._decide(self._live().get_variation(experiment_key, user_id, attributes), None, "get_variation")

    def set_forced_variation(self, experiment_key: str, user_id: str, variation_key: str | None) -> bool:
        """Force (or with None, unforce) a user into a variation of an experiment."""
        return self._live().set_forced_variation(experiment_key, user_id, variation_key)

    def get_forced_variation(self, experiment_key: str, user_id: str) -> str | None:
        """The variation key forced with ``set_forced_variation``, or None."""
        return self._live().get_forced_variation(experiment_key, user_id)

    def track(
        self,
        event_key: str,
        user_id: str,
        attributes: dict[str, Any] | None = None,
        event_tags: dict[str, Any] | None = None,
    ) -> None:
        """Record a conversion for ``event_key``; returns nothing and never raises."""
        client = self._live()
        if client.config is not None or self._report is not None:
            drive(client.track(event_key, user_id, attributes, event_tags), None, "track")
            return
        # No datafile yet: the async client holds the call until one arrives, on its loop.
        try:
            self._runner.call(lambda: client.track(event_key, user_id, attributes, event_tags), self._close_timeout)
        except OwnThreadError:
            drive(client.track(event_key, user_id, attributes, event_tags), None, "track")
        except (TimeoutError, RuntimeError):
            _log.error(NOT_READY.format("track"))
            self._runner.refuse("not_ready")

    # ------------------------------------------------------------------ feature flags and variables

    def is_feature_enabled(self, feature_key: str, user_id: str, attributes: dict[str, Any] | None = None) -> bool:
        """Whether the flag is on for the user; sends the impression the official SDK sends."""
        return self._decide(
            self._live().is_feature_enabled(feature_key, user_id, attributes), False, "is_feature_enabled"
        )

    def get_enabled_features(self, user_id: str, attributes: dict[str, Any] | None = None) -> list[str]:
        """Keys of every flag enabled for the user (each decided as ``is_feature_enabled`` does)."""
        return self._decide(self._live().get_enabled_features(user_id, attributes), [], "get_enabled_features")

    def get_feature_variable(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> Any:
        """A variable's value for the user, typed by its declared type; None when it cannot be decided."""
        return self._decide(
            self._live().get_feature_variable(feature_key, variable_key, user_id, attributes),
            None,
            "get_feature_variable",
        )

    def get_feature_variable_boolean(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> bool | None:
        """A ``boolean`` variable's value; None for a variable of another type."""
        return self._decide(
            self._live().get_feature_variable_boolean(feature_key, variable_key, user_id, attributes),
            None,
            "get_feature_variable_boolean",
        )

    def get_feature_variable_double(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> float | None:
        """A ``double`` variable's value; None for a variable of another type."""
        return self._decide(
            self._live().get_feature_variable_double(feature_key, variable_key, user_id, attributes),
            None,
            "get_feature_variable_double",
        )

    def get_feature_variable_integer(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> int | None:
        """An ``integer`` variable's value; None for a variable of another type."""
        return self._decide(
            self._live().get_feature_variable_integer(feature_key, variable_key, user_id, attributes),
            None,
            "get_feature_variable_integer",
        )

    def get_feature_variable_string(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> str | None:
        """A ``string`` variable's value; None for a variable of another type."""
        return self._decide(
            self._live().get_feature_variable_string(feature_key, variable_key, user_id, attributes),
            None,
            "get_feature_variable_string",
        )

    def get_feature_variable_json(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> Any:
        """A ``json`` variable's value, parsed; None for a variable of another type."""
        return self._decide(
            self._live().get_feature_variable_json(feature_key, variable_key, user_id, attributes),
            None,
            "get_feature_variable_json",
        )

    def get_all_feature_variables(
        self, feature_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Every variable of the flag for the user, typed; None for an unknown flag."""
        return self._decide(
            self._live().get_all_feature_variables(feature_key, user_id, attributes),
            None,
            "get_all_feature_variables",
        )

    def get_optimizely_config(self) -> OptimizelyConfig | None:
        """The OptimizelyConfig projection of the current datafile (built once per revision, on the loop thread
        once that runs; a call before that build is over runs the steps left in the calling thread)."""
        return self._live().get_optimizely_config()

    # ------------------------------------------------------------------ ODP

    def send_odp_event(
        self,
        action: str,
        identifiers: dict[str, str] | None = None,
        type: str = "fullstack",
        data: dict[str, str | int | float | bool | None] | None = None,
    ) -> None:
        """Queue an event for the Optimizely Data Platform, as ``AsyncOptimizely.send_odp_event`` (the same
        checks and logs); never raises. The event is handed to the loop thread, which batches and sends it;
        ``flush()`` and ``close()`` wait for it."""
        coroutine = self._live().send_odp_event(action, identifiers, type, data)
        self._on_loop(coroutine, None, "send_odp_event", _LOOP_MARGIN)

    # ------------------------------------------------------------------ decide API

    def create_user_context(self, user_id: str, attributes: dict[str, Any] | None = None) -> SyncUserContext | None:
        """A user context for ``decide``, ``decide_for_keys``, ``decide_all`` and ``track_event``; None (with
        a log) for a bad user id or attributes."""
        client = self._live()
        if client.create_user_context(user_id, attributes) is None:  # the official checks and messages
            return None
        return SyncUserContext(self, client, user_id, attributes)

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event produced before the call is delivered or has failed for good, or until
        ``timeout`` seconds (default ``close_timeout``) have passed (then a warning is logged)."""
        self._live()
        wait = _seconds("flush", timeout, self._close_timeout)
        try:
            settled = self._runner.flush(wait)
        except OwnThreadError:
            _log.error("flush() cannot be called from a listener on the client's own loop thread.")
            return
        if not settled:
            _log.warning("flush() returned after %.1f s with events still being sent.", wait)

    def close(self, timeout: float | None = None) -> DeliveryReport:
        """Stop taking events, deliver what is queued within ``timeout`` (default ``close_timeout``), stop
        polling and the loop thread, and report what happened to every event. Idempotent.

        Decisions keep working afterwards (with the last datafile); their events are counted as dropped
        (``closed``).
        """
        with self._lock:
            if self._report is not None:
                return self._report
            runner = self._runner
        try:
            report = runner.stop(_seconds("close", timeout, self._close_timeout))
        except OwnThreadError:
            _log.error("close() cannot be called from a listener on the client's own loop thread.")
            return DeliveryReport(**vars(runner.stats().events))
        with self._lock:
            if self._report is None:
                self._report = report
            return self._report

    def __enter__(self) -> SyncOptimizely:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _decide(self, coroutine: Coroutine[Any, Any, _T], failure: _T, method: str) -> _T:
        """Run a decision coroutine of the async client (made by ``self._live()``) in the calling thread; with a
        datafile that has CMAB experiments, on the loop thread instead: a prediction may have to be fetched,
        which only the loop can wait for, and the prediction cache is then touched by that one thread only."""
        config = self._client._config
        if config is None or not config.has_cmab:
            return drive(coroutine, failure, method)
        return self._on_loop(coroutine, failure, method, self._cmab_wait)

    def _on_loop(self, coroutine: Coroutine[Any, Any, _T], failure: _T, method: str, wait: float) -> _T:
        """The result of ``coroutine`` (not started yet) run on the loop thread, waiting at most ``wait`` seconds
        (then ``failure``, logged). Where the loop thread cannot take it (a listener on that very thread calls,
        or the client is closed), it runs here, as a decision does: what needs no network still works, and what
        does gives ``failure`` (logged)."""
        try:
            return self._runner.call(lambda: coroutine, wait)
        except TimeoutError:
            _log.error("%s() returned %r after waiting %.1f s for the client's loop thread.", method, failure, wait)
            return failure
        except (OwnThreadError, RuntimeError):  # it has not started: the loop never ran it
            return drive(coroutine, failure, method)

    def _live(self) -> LoopClient:
        """The async client for this process (rebuilt on the first call after a fork)."""
        if self._forked:
            self._recover_from_fork()
        return self._client

    def _hand_off(self, event: QueuedEvent) -> None:
        """Called by the client with each event produced outside its loop thread."""
        if self._forked:
            self._recover_from_fork()
        runner = self._runner
        if not runner.started:
            runner.start(wait=False)
        runner.hand_off(event)

    def _recover_from_fork(self) -> None:
        """Build this process's own client and loop thread; see ``.sync_fork``."""
        with self._lock:
            if not self._forked:
                return
            self._forked = False
            if self._report is not None:
                return  # closed before the fork: decisions go on with the inherited client, events are refused
            inherited = self._client
            config = inherited.config
            client = self._new_client(config.raw if config is not None else None)
            client._forced = inherited._forced  # forced variations set before the fork still apply
            client.notification_center = inherited.notification_center  # so do listeners, with their ids
            self._client = client
            self._runner = LoopThread(client, max_pending=self._max_pending)
            ensure_exit_hooks()
            if self._sdk_key is not None or client.config is None:
                self._runner.start(wait=client.config is None)

    def _fork_prepare(self) -> None:
        self._lock.acquire()
        self._runner.pause_for_fork()

    def _fork_parent(self) -> None:
        self._runner.resume_after_fork()
        self._lock.release()

    def _fork_child(self) -> None:
        self._lock = threading.RLock()
        abandon(self._client, self._runner)
        self._client.loop_thread = None  # that thread does not exist here
        # Never started here; the inherited one's locks and events are the parent's.
        self._runner = LoopThread(self._client, max_pending=self._max_pending)
        if self._report is not None:
            self._runner.stop(0.0)  # closed: refuses events, counting them
        self._forked = True

    def _close_at_exit(self) -> None:
        if self._report is None:
            self.close()


def _seconds(method: str, value: object, default: float) -> float:
    """A blocking call's timeout: ``seconds()``'s checks (anything but a finite number >= 0 is logged and
    replaced by ``default``, never raised, whatever the object does), capped at what a thread can wait for
    (beyond ``threading.TIMEOUT_MAX`` a wait raises OverflowError; half of it leaves room for the margins added)."""
    return min(seconds(f"{method}(timeout)", value, default), threading.TIMEOUT_MAX / 2)


# inspect.signature(SyncOptimizely) and help() show every option with its default: AsyncOptimizely's, derived.
SyncOptimizely.__init__.__signature__ = sync_signature()  # type: ignore[attr-defined]
