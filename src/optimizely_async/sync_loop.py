"""The loop thread behind :class:`~optimizely_async.sync.SyncOptimizely`.

A :class:`LoopThread` runs one :class:`LoopClient` (an ``AsyncOptimizely``) on an asyncio event loop in a daemon
thread it owns: the event queue, its HTTP requests, the datafile poller and the LOG_EVENT / CONFIG_UPDATE
listeners all live there. Decisions do not: calling threads compute them themselves and only hand the
resulting events over.

The hand-off is a ``deque`` guarded by a lock, plus one wake-up of the loop per batch: the first event handed
over while the loop is idle schedules one ``call_soon_threadsafe``; the events that follow before the loop
has drained the deque just append. ``bench/sync.py`` measures why: one ``call_soon_threadsafe`` per event
writes to the loop's self-pipe every time, and each write can hand the GIL to the loop thread.

Events refused before they reach the queue (the client is closed, or the loop thread has fallen
``max_queue_size`` events behind) are counted by reason and folded into ``stats()`` and the close report, so
the books still balance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.lowlevel

from ._logging import sdk_logger
from ._owned_threads import for_caller, owned_thread
from .client import AsyncOptimizely
from .events.queue import DeliveryReport, EventQueue, QueueStats
from .stats import ClientStats

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .events.models import QueuedEvent
    from .sync_options import SyncOptions

__all__ = ["LoopClient", "LoopThread", "OwnThreadError", "zero_report"]

_log = sdk_logger()

_T = TypeVar("_T")
_S = TypeVar("_S", bound=QueueStats)

#: Events moved from the hand-off deque into the queue between two checkpoints of the loop.
_DRAIN_STEP: Final = 512
#: Seconds between two warnings about events refused for the same reason.
_WARN_EVERY: Final = 10.0
#: Longest wait for the loop thread to pause before a fork (and for a paused one to be resumed), or to answer
#: ``stats()``.
_FORK_PAUSE: Final = 5.0
#: Extra seconds ``stop()`` waits for the thread after the close timeout (closing the HTTP clients).
_JOIN_MARGIN: Final = 5.0


class OwnThreadError(Exception):
    """A blocking call was made from the loop thread itself (a LOG_EVENT or CONFIG_UPDATE listener): it could
    never complete, since it waits for that very thread."""


class _Exit:
    """A ``SystemExit`` or ``KeyboardInterrupt`` carried from the loop thread to the caller of ``call()``."""

    __slots__ = ("exception",)

    def __init__(self, exception: SystemExit | KeyboardInterrupt) -> None:
        self.exception = exception


class LoopClient(AsyncOptimizely):
    """An ``AsyncOptimizely`` whose events, when they are produced on another thread than its loop's, are
    handed to ``hand_off`` instead of being put into the queue (which only its loop may touch)."""

    def __init__(
        self,
        hand_off: Callable[[QueuedEvent], None],
        datafile: str | bytes | Mapping[str, Any] | None,
        sdk_key: str | None,
        **options: Unpack[SyncOptions],
    ) -> None:
        super().__init__(datafile, sdk_key, **options)
        self._hand_off = hand_off
        #: ``threading.get_ident()`` of the loop thread while it runs this client.
        self.loop_thread: int | None = None

    def _offer(self, event: QueuedEvent) -> bool:
        if threading.get_ident() == self.loop_thread:
            return super()._offer(event)
        self._hand_off(event)
        return True  # taken: queued by the loop thread, or counted as refused


class LoopThread:
    """Runs ``client`` in a daemon thread: started on demand, stopped once by :meth:`stop`."""

    def __init__(self, client: LoopClient, *, max_pending: int, name: str = "optimizely-async") -> None:
        self.client = client
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: deque[QueuedEvent] = deque()
        # True while a wake-up is scheduled, and until the loop exists (it drains the deque first thing).
        self._signalled = True
        self._accepting = True
        self._refused: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The loop thread's own context; what :meth:`call` runs its coroutines in.
        self._context = contextvars.Context()
        self._wakeup: asyncio.Event | None = None
        self._stop_timeout: float | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._start_lock = threading.Lock()
        self._entered = threading.Event()
        self._finished = threading.Event()
        self._error: BaseException | None = None
        self._starter_waits = False  # start(wait=True) re-raises a failure to enter the client
        self._report: DeliveryReport | None = None
        self._looping = threading.Event()  # the loop runs (its imports are done): it can be paused for a fork
        self._resume: threading.Event | None = None

    # ------------------------------------------------------------------ any thread

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self, *, wait: bool) -> None:
        """Start the thread (idempotent). With ``wait``, return once the client is entered, and raise what
        entering it raised (an invalid large datafile, parsed on the loop)."""
        with self._start_lock:
            if not self.started and self._accepting:
                self._starter_waits = wait
                self._thread.start()
        if wait and self.started:
            self._entered.wait()
            if self._error is not None:
                raise self._error

    def hand_off(self, event: QueuedEvent) -> None:
        """Give an event produced in a calling thread to the loop. Cheap; never blocks on the loop."""
        with self._lock:
            if not self._accepting:
                self._count_refused("closed")
                return
            if len(self._pending) >= self._max_pending:
                self._count_refused("queue_full")
                return
            self._pending.append(event)
            if self._signalled:
                return  # a wake-up is on its way (or the loop does not exist yet and drains on arrival)
            self._signalled = True
            loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            # The loop may just have closed: stop() drained the deque before, so nothing is lost.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wakeup.set)

    def refuse(self, reason: str) -> None:
        """Count an event that could not be queued at all (e.g. ``not_ready`` after close)."""
        with self._lock:
            self._count_refused(reason)

    def call(self, make: Callable[[], Awaitable[_T]], timeout: float | None) -> _T:
        """Run ``make()`` on the loop and wait for its result (at most ``timeout`` seconds; then the coroutine
        is cancelled and ``TimeoutError`` raised). Starts the thread if needed."""
        if threading.get_ident() == self.client.loop_thread:
            raise OwnThreadError
        self.start(wait=True)
        loop = self._loop
        if loop is None or self._finished.is_set():
            raise RuntimeError("the client's loop thread is not running")

        async def run() -> _T | _Exit:
            with for_caller():
                try:
                    return await make()
                except (SystemExit, KeyboardInterrupt) as exc:
                    # From the user's code the call ran (a CMAB decision's user profile service or listener): the
                    # caller gets it, as in its own thread. Let out of this task, it would end the loop thread.
                    return _Exit(exc)

        # Scheduled from a copy of the loop thread's context, not of the caller's: run_coroutine_threadsafe
        # would give the task a copy of this thread's context, and with it whatever async library runs here (a
        # trio task under anyio sets sniffio's context variable, which anyio on the loop thread would obey).
        future = self._context.copy().run(asyncio.run_coroutine_threadsafe, run(), loop)
        try:
            result = future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None
        except concurrent.futures.CancelledError:  # the loop shut down before it ran
            raise RuntimeError("the client's loop thread stopped") from None
        if isinstance(result, _Exit):
            raise result.exception
        return result

    def stats(self) -> ClientStats:
        """The client's counters with the events still in the hand-off deque and the refused ones folded in."""
        if self.started and not self._finished.is_set():
            try:
                return self.call(self._stats_on_loop, timeout=_FORK_PAUSE)
            except (OwnThreadError, RuntimeError, TimeoutError):
                pass  # read from here: a snapshot that may be a moment out of date
        return self._stats_on_loop_sync()

    def flush(self, timeout: float) -> bool:
        """Deliver everything handed over so far; False when ``timeout`` passed first."""
        if not self.started or self._finished.is_set():
            return True

        async def flush() -> None:
            await self._drain()
            await self.client.flush()

        try:
            self.call(flush, timeout)
        except TimeoutError:
            return False
        except RuntimeError:  # the thread stopped meanwhile: close() already drained everything
            return True
        return True

    def stop(self, timeout: float) -> DeliveryReport:
        """Refuse further events, drain and close the client within ``timeout``, end the thread; the report.
        Idempotent: later calls wait for the first one and return the same report."""
        if threading.get_ident() == self.client.loop_thread:
            raise OwnThreadError
        with self._lock:
            self._accepting = False
        with self._start_lock:
            started = self.started
        if not started:
            # Never started: nothing was handed over (a hand-off starts the thread first) and nothing polled.
            self._report = self._fold(zero_report(), 0)
            return self._report
        loop = self._loop
        self._entered.wait()
        if loop is None:
            loop = self._loop
        if loop is not None and not self._finished.is_set():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._request_stop, timeout)
        self._thread.join(timeout + _JOIN_MARGIN)
        if self._report is None:
            # The thread is stuck (a listener that never returns) or failed: report what is known.
            _log.warning("The client's loop thread did not stop within %.1f s.", timeout + _JOIN_MARGIN)
            self._report = dataclasses.replace(
                self._fold(DeliveryReport(**vars(self.client.stats().events)), len(self._pending)), timed_out=True
            )
        return self._report

    def pause_for_fork(self) -> None:
        """Before ``fork()``: have the loop thread wait between two callbacks until :meth:`resume_after_fork`.

        A thread forked in the middle of something leaves the child a copy of its half-done work; the worst
        is an import in progress (the first ``anyio.run`` imports its backend, the first request imports
        the HTTP stack), which leaves a partially initialised module in the child's ``sys.modules``. Between
        two callbacks the loop thread holds no lock and imports nothing. Bounded: a loop held longer than
        :data:`_FORK_PAUSE` (by a listener that blocks) is forked as it is.
        """
        if not self.started or self._finished.is_set() or threading.get_ident() == self.client.loop_thread:
            return
        if not self._looping.wait(_FORK_PAUSE) or self._loop is None:
            return
        resume, parked = threading.Event(), threading.Event()

        def park() -> None:
            parked.set()
            resume.wait(_FORK_PAUSE)

        try:
            self._loop.call_soon_threadsafe(park)
        except RuntimeError:  # the loop has just closed
            return
        self._resume = resume
        if not parked.wait(_FORK_PAUSE):
            _log.debug("The client's loop thread was busy; forking without pausing it.")

    def resume_after_fork(self) -> None:
        """In the parent, after ``fork()``: let the loop thread go on."""
        resume, self._resume = self._resume, None
        if resume is not None:
            resume.set()

    # ------------------------------------------------------------------ internals

    def _count_refused(self, reason: str) -> None:
        """Under ``_lock``."""
        self._refused[reason] = self._refused.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._warned_at.get(reason, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned_at[reason] = now
            if reason == "closed":
                _log.warning("An event was produced after close(); it is counted as dropped (closed).")
            else:
                _log.warning(
                    "The client's loop thread is %d events behind; dropping events (%s).", self._max_pending, reason
                )

    def _fold(self, stats: _S, pending: int) -> _S:
        """Add the events waiting in the deque (queued) and the refused ones (dropped) to ``stats``."""
        with self._lock:
            refused = dict(self._refused)
        if not pending and not refused:
            return stats
        dropped = dict(stats.dropped)
        for reason, count in refused.items():
            dropped[reason] = dropped.get(reason, 0) + count
        return dataclasses.replace(
            stats,
            submitted=stats.submitted + pending + sum(refused.values()),
            queued=stats.queued + pending,
            dropped=dropped,
        )

    async def _stats_on_loop(self) -> ClientStats:
        return self._stats_on_loop_sync()

    def _stats_on_loop_sync(self) -> ClientStats:
        return self._fold(self.client.stats(), len(self._pending))

    def _main(self) -> None:
        try:
            # A fresh context: on Pythons where threads inherit their starter's context, the starter's async
            # library (sniffio's context variable, set by anyio) would make anyio.run() refuse to start.
            # The thread is the SDK's: a SystemExit or KeyboardInterrupt from the user's code run here (a listener,
            # the dispatcher, on_drop) is logged like any other exception instead of ending it (_owned_threads).
            with owned_thread():
                contextvars.Context().run(lambda: anyio.run(self._serve, backend="asyncio"))
        except BaseException as exc:  # raised by start(wait=True), or logged below
            self._error = exc
            if not self._starter_waits or self._entered.is_set():
                _log.error("The client's loop thread failed; events are no longer sent.", exc_info=exc)
        finally:
            self._finished.set()
            self._entered.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        self._wakeup = asyncio.Event()
        self.client.loop_thread = threading.get_ident()
        self._looping.set()
        async with self.client:
            self._entered.set()
            while True:
                with self._lock:
                    self._wakeup.clear()
                    self._signalled = False
                await self._drain()
                if self._stop_timeout is not None:
                    break
                await self._wakeup.wait()
            await self._drain()  # the last events handed over before stop() refused further ones
            report = await self.client.close(self._stop_timeout)
            self._report = self._fold(report, 0)

    def _request_stop(self, timeout: float) -> None:
        self._stop_timeout = timeout
        assert self._wakeup is not None
        self._wakeup.set()

    async def _drain(self) -> None:
        """Move handed-over events into the queue, a step at a time. A full queue drops an event at once
        (``queue_full``, told to ``on_drop``): the calling thread has long returned, there is nobody to wait."""
        pending = self._pending
        client = self.client
        while pending:
            for _ in range(min(len(pending), _DRAIN_STEP)):
                event = pending.popleft()
                if not client._offer(event):
                    client._queue.put_nowait(event)
            if pending:
                await anyio.lowlevel.checkpoint()


def zero_report() -> DeliveryReport:
    """The report of a client that never queued anything (built by an idle queue, so it has every field)."""
    return DeliveryReport(**vars(EventQueue(_Unused()).stats()))


class _Unused:
    """A dispatcher that is never called (the queue it is given never runs)."""

    async def dispatch(self, request: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("unused")
