"""The provider's view of a client: the few things :class:`OptimizelyProvider` needs, for one kind of client.

The provider talks only to an :class:`Engine`. :class:`AsyncEngine` adapts an :class:`AsyncOptimizely` whose
event loop runs in some thread: the async methods decide directly when called on that loop, and the blocking
ones hop onto it with :func:`anyio.from_thread.run` from any other thread. It learns that loop from the
client itself once the client is entered (see :func:`.._observe.event_loop`), or from the first async call.

:class:`SyncEngine` adapts a ``SyncOptimizely``: every decision runs in the calling thread (a decision does no
I/O, so the async methods call it inline too), ``track`` hands the event to the client's loop thread, and the
status watch runs there (a sync OPTIMIZELY_CONFIG_UPDATE listener and a periodic check in the client's task
group).

Nothing here imports ``openfeature``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from .. import _observe
from .._logging import sdk_logger
from ..notifications import NotificationType

if TYPE_CHECKING:
    from ..client import AsyncOptimizely
    from ..config.project_config import ProjectConfig
    from ..config.sources import PollingStats
    from ..decide import OptimizelyDecision
    from ..sync import SyncOptimizely

__all__ = ["AsyncEngine", "Engine", "LoopThreadError", "LoopUnknownError", "SyncEngine", "loop_running"]

_log = sdk_logger()

#: Longest wait for a SyncOptimizely's loop thread to start the provider's health check.
_START_TIMEOUT: Final = 5.0


class LoopThreadError(RuntimeError):
    """A blocking call was made on the client's own event loop thread (waiting there would deadlock)."""


class LoopUnknownError(RuntimeError):
    """A blocking call was made before the provider has seen the client's event loop, or after it ended."""


def loop_running() -> bool:
    """Whether an event loop runs in this thread (the client's may have ended, leaving a plain thread)."""
    try:
        anyio.lowlevel.current_token()
    except Exception:
        return False
    return True


class Engine(Protocol):
    """What the provider needs from a client."""

    def config(self) -> ProjectConfig | None:
        """The config decisions use now; None before the first datafile."""

    def polling(self) -> PollingStats | None:
        """The datafile poller's counters; None when nothing polls."""

    def on_loop_thread(self) -> bool:
        """True when waiting here for the client would deadlock it."""

    def bind(self) -> None:
        """Note the running event loop as the client's, if the client has none yet (called from async code)."""

    async def decide(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        """``decide`` for this user, sending the impression as ``decide`` does."""

    def decide_blocking(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        """The same from a thread that may block; raises :class:`LoopThreadError` or :class:`LoopUnknownError`."""

    def track(self, event_key: str, user_id: str, attributes: dict[str, Any], tags: dict[str, Any] | None) -> None:
        """``track`` from any thread; never blocks the client's event loop."""

    def watch(self, on_config: Callable[[], None], check: Callable[[], None], interval: float) -> None:
        """Call ``on_config()`` after each new datafile and ``check()`` every ``interval`` seconds, on the
        client's side (its loop thread), for as long as the client runs."""

    def unwatch(self) -> None:
        """Stop the calls :meth:`watch` set up."""


class AsyncEngine:
    """An :class:`AsyncOptimizely` whose loop runs in some thread (the app's, or a portal's the provider owns)."""

    def __init__(self, client: AsyncOptimizely) -> None:
        self.client = client
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._thread: int | None = None
        self._check: Callable[[], None] | None = None
        self._interval = 1.0
        self._watching = False
        self._listener_id = -1
        self._lock = threading.Lock()

    # -- the loop
    def bind_to(self, token: anyio.lowlevel.EventLoopToken, thread_id: int) -> None:
        """Use this loop (a portal's the provider owns)."""
        with self._lock:
            self._token, self._thread = token, thread_id

    def bind(self) -> None:
        if self._token is None and not self._learn():
            try:
                token = anyio.lowlevel.current_token()
            except Exception:  # no event loop in this thread
                return
            with self._lock:
                if self._token is None:
                    self._token, self._thread = token, threading.get_ident()
        if not self._watching and self._check is not None and threading.get_ident() == self._thread:
            self._start_watch()

    def _learn(self) -> bool:
        """Take the loop the client was entered on, if it has been (a provider made before that, e.g. at import
        time, and used only from worker threads); True when the loop is known now."""
        if self._token is not None:
            return True
        token = _observe.event_loop(self.client)
        if token is None:
            return False
        try:
            here = anyio.lowlevel.current_token() == token
        except Exception:  # no event loop in this thread
            here = False
        if here:
            thread = threading.get_ident()
        else:
            try:  # one hop, once: which thread runs that loop
                thread = anyio.from_thread.run_sync(threading.get_ident, token=token)
            except Exception:  # the loop has ended (or cannot be reached from here)
                return False
        with self._lock:
            if self._token is None:
                self._token, self._thread = token, thread
        self._ensure_watch()
        return True

    def on_loop_thread(self) -> bool:
        if self._token is None:
            self._learn()
        return self._thread is not None and threading.get_ident() == self._thread

    # -- reading
    def config(self) -> ProjectConfig | None:
        return self.client.config

    def polling(self) -> PollingStats | None:
        return _observe.polling_stats(self.client)

    # -- deciding
    async def decide(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        if self._thread is not None and threading.get_ident() != self._thread:
            # Another event loop than the client's (e.g. the app's loop with a provider-owned client).
            return await anyio.to_thread.run_sync(self.decide_blocking, flag_key, user_id, attributes)
        user = self.client.create_user_context(user_id, attributes)
        assert user is not None  # the provider passes a str user id and a dict
        return await user.decide(flag_key)

    def decide_blocking(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        token = self._checked_token()
        try:
            return anyio.from_thread.run(self._decide_here, flag_key, user_id, attributes, token=token)
        except anyio.RunFinishedError:
            raise LoopUnknownError("The client's event loop has ended.") from None

    async def _decide_here(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        user = self.client.create_user_context(user_id, attributes)
        assert user is not None
        return await user.decide(flag_key)

    def _checked_token(self) -> anyio.lowlevel.EventLoopToken:
        if self.on_loop_thread() and loop_running():
            raise LoopThreadError
        if self._token is None:
            raise LoopUnknownError
        return self._token

    # -- tracking
    def track(self, event_key: str, user_id: str, attributes: dict[str, Any], tags: dict[str, Any] | None) -> None:
        args = (event_key, user_id, attributes, tags)
        if self.on_loop_thread():
            # On the loop: hand the call to the client's task group and return at once.
            if not _observe.spawn(self.client, self.client.track, *args):
                _log.error('track("%s") through OpenFeature was not recorded: the client is not running.', event_key)
            return
        if self._token is None:
            _log.error(
                'track("%s") through OpenFeature was not recorded: the provider has not seen the client\'s event '
                "loop yet (create the provider on it, or make one async evaluation first).",
                event_key,
            )
            return
        try:
            anyio.from_thread.run(self.client.track, *args, token=self._token)
        except Exception:  # the loop has stopped
            _log.error(
                'track("%s") through OpenFeature was not recorded: the client\'s loop is not running.', event_key
            )

    # -- status
    def watch(self, on_config: Callable[[], None], check: Callable[[], None], interval: float) -> None:
        def listener() -> None:
            self.bind()  # runs on the client's loop thread
            on_config()

        center = self.client.notification_center
        self._listener_id = center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, listener)
        self._check, self._interval = check, interval
        if not self._learn():
            return  # started when the loop becomes known
        self._ensure_watch()

    def _ensure_watch(self) -> None:
        """Start the health check in the client's task group, from whichever thread knows the loop."""
        if self._watching or self._check is None or self._token is None:
            return
        if self._thread is not None and threading.get_ident() == self._thread:
            self._start_watch()
            return
        try:
            anyio.from_thread.run_sync(self._start_watch, token=self._token)
        except Exception:
            _log.debug("Could not start the provider's health check on the client's loop.", exc_info=True)

    def _start_watch(self) -> None:
        if not self._watching and _observe.spawn(self.client, self._watch):
            self._watching = True

    async def _watch(self) -> None:
        try:
            await _checks(self)
        finally:
            self._watching = False

    def unwatch(self) -> None:
        """Stop calling back (the health check ends at its next wake-up)."""
        self._check = None
        if self._listener_id > 0:
            self.client.notification_center.remove_notification_listener(self._listener_id)
            self._listener_id = -1


class _Checked(Protocol):
    _check: Callable[[], None] | None
    _interval: float


async def _checks(engine: _Checked) -> None:
    """Call ``engine._check()`` every ``engine._interval`` seconds until :meth:`Engine.unwatch` clears it."""
    while True:
        check = engine._check
        if check is None:
            return
        check()
        await anyio.sleep(engine._interval)


class SyncEngine:
    """A ``SyncOptimizely``: decisions in the calling thread, status kept on the client's own loop thread."""

    def __init__(self, client: SyncOptimizely) -> None:
        self.client = client
        self._check: Callable[[], None] | None = None
        self._interval = 1.0
        self._watched: object | None = None  # the async client whose task group runs the health check
        self._listener_id = -1

    def config(self) -> ProjectConfig | None:
        return self.client.config

    def polling(self) -> PollingStats | None:
        return _observe.polling_stats(_observe.loop_client(self.client))

    def on_loop_thread(self) -> bool:
        return False  # nothing waits for the client's loop thread: no deadlock anywhere

    def bind(self) -> None:
        """Nothing to learn: the client owns its loop thread."""

    async def decide(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        return self.decide_blocking(flag_key, user_id, attributes)  # no I/O: as quick inline as on a thread

    def decide_blocking(self, flag_key: str, user_id: str, attributes: dict[str, Any]) -> OptimizelyDecision:
        if self._watched is not None and self._watched is not _observe.loop_client(self.client):
            self._rewatch()  # a forked child: its client and loop thread are new, the health check is not there
        user = self.client.create_user_context(user_id, attributes)
        assert user is not None  # the provider passes a str user id and a dict
        return user.decide(flag_key)

    def track(self, event_key: str, user_id: str, attributes: dict[str, Any], tags: dict[str, Any] | None) -> None:
        if self.client.config is None and loop_running():
            # SyncOptimizely.track would wait for the first datafile, holding this thread's event loop.
            _log.error(
                'track("%s") through OpenFeature was not recorded: no datafile yet, and waiting for one would '
                "block the event loop of this thread.",
                event_key,
            )
            _observe.refuse(self.client, "not_ready")
            return
        self.client.track(event_key, user_id, attributes, tags)

    def watch(self, on_config: Callable[[], None], check: Callable[[], None], interval: float) -> None:
        center = self.client.notification_center
        self._listener_id = center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, on_config)
        self._check, self._interval = check, interval
        if self.polling() is not None:  # a static datafile never goes stale: nothing to check
            self._rewatch()

    def _rewatch(self) -> None:
        """Start the health check in the task group of this process's client, once per client (a failure is
        not retried at every decision)."""
        inner = _observe.loop_client(self.client)
        if self._watched is inner:
            return
        # No lock (a lock copied into a forked child may be held for ever): two threads racing here start two
        # checks at worst, which report each change once (the provider compares states under its own lock).
        self._watched = inner
        if self._check is not None and not _observe.on_sync_loop(
            self.client, lambda: _observe.spawn(inner, self._watch), _START_TIMEOUT
        ):
            _log.debug("The provider's health check could not start on the SyncOptimizely's loop thread.")

    async def _watch(self) -> None:
        await _checks(self)

    def unwatch(self) -> None:
        """Stop calling back (the health check ends at its next wake-up)."""
        self._check = None
        if self._listener_id > 0:
            self.client.notification_center.remove_notification_listener(self._listener_id)
            self._listener_id = -1
