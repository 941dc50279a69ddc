"""EventQueue: the bounded buffer between ``track()`` / impressions and the events API.

Delivery (after OpenTelemetry's ``BatchProcessor``, rebuilt on anyio): the flush loop sends a batch when
``batch_size`` events are waiting, when the oldest waiting event is ``flush_interval`` old, on ``flush()`` and on
``close()``. Up to ``max_concurrent_requests`` batches are in flight at once. Retryable failures (connection
errors, timeouts, 429, 5xx) are retried with jittered exponential backoff that honours ``Retry-After``, for up
to ``retry_timeout`` seconds; a request that timed out after it was sent is resent at most
``MAX_TIMEOUT_RESENDS`` times (each wait for the answer twice as long), which bounds duplicates. A batch
answered 400 or 413 is split in halves and each half resent, so only the events the receiver refuses are
dropped.

Back-pressure: ``put()`` appends without waiting while there is room. When the queue is full, callers wait
for room first come, first served, for up to ``enqueue_timeout`` -- but only while delivery makes progress.
Delivery is *stalled* when every request slot holds a batch whose last attempt failed, or when no room has
appeared for ``enqueue_timeout`` seconds; then ``put()`` on a full queue drops at once (``queue_full``) and
waiting callers are released, until room appears again. So an outage costs each caller at most one wait,
while a burst against a healthy endpoint waits and loses nothing.

Every event handed to ``put()`` ends up delivered, dropped (with a reason), undelivered or in flight at close;
see :mod:`.ledger` for the books. Events lost without ``close()`` (the process exits, the queue is collected)
are reported in one warning with the totals.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from .. import defaults
from .._ctrl_c import start_background
from .._logging import logger
from .._owned_threads import user_code_errors
from .._validation import number
from ..errors import ConfigurationError
from .dispatcher import Dispatcher, DispatchResult, EventRequest, retry_delay
from .ledger import Batch, DeliveryReport, Ledger, OnDrop, QueueStats, call_hook, run_hook
from .payload import RequestBuilder, split_request
from .pending import materialize

if TYPE_CHECKING:
    from .models import QueuedEvent

# Events built and encoded between two checkpoints while a batch is prepared (a few tenths of a ms of work).
_BUILD_STEP = 4
# Results that mean "sent, but no answer in time": the receiver may have the events.
_TIMEOUT_REASONS = frozenset({"timeout", "dispatch_timeout"})
# Statuses after which a batch is split to find the events the receiver refuses.
_SPLIT_STATUSES = frozenset({400, 413})

__all__ = ["DeliveryReport", "EventQueue", "OnDispatch", "OnDrop", "QueueStats"]

OnDispatch = Callable[[Mapping[str, Any], str], "Awaitable[None] | None"]
"""``on_dispatch(payload, url)``: called once per payload, before its first attempt; may be sync or async."""

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"
_WAITING, _ACCEPTED, _REFUSED = 0, 1, 2


class _Waiter:
    """A ``put()`` waiting for room; served in arrival order."""

    __slots__ = ("done", "event", "state")

    def __init__(self, event: QueuedEvent) -> None:
        self.event = event
        self.done = anyio.Event()
        self.state = _WAITING


class _Books:
    """What the exit report needs, without a reference to the queue (so it can be collected)."""

    __slots__ = ("buffer", "closed", "ledger")

    def __init__(self, buffer: deque[QueuedEvent], ledger: Ledger) -> None:
        self.buffer = buffer
        self.ledger = ledger
        self.closed = False


def _report_unsent(books: _Books) -> None:
    """At exit or collection: say, once, how many events an unclosed queue never sent."""
    if books.closed:
        return
    books.closed = True
    stats = books.ledger.stats(len(books.buffer))
    unsent = stats.queued + stats.in_flight
    if unsent:
        logger.warning(
            "%d event(s) were never sent: the event queue was not closed (call close() or leave `async with` "
            "before the process exits). Totals: %s.",
            unsent,
            books.ledger.totals(len(books.buffer)),
        )


_live: weakref.WeakSet[EventQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_live):
        queue._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class EventQueue:
    """Bounded, batching, concurrent event delivery with exact accounting.

    The owner starts it with ``await task_group.start(queue.run)`` and stops it with ``await queue.close()``.

    Args:
        dispatcher: Delivers one request per call (e.g. :class:`HttpDispatcher`).
        batch_size: Most events per request; a full batch is sent at once.
        flush_interval: Seconds the oldest waiting event may wait before a partial batch is sent.
        max_queue_size: Most events waiting to be sent (in-flight batches not included).
        enqueue_timeout: Seconds ``put()`` waits for room in a full queue before dropping (``queue_full``),
            while delivery makes progress (see the module docstring).
        max_concurrent_requests: Most requests in flight at once.
        max_retries: Most retries per request after the first attempt; None: as many as ``retry_timeout``
            allows.
        retry_timeout: Seconds after a request's first attempt during which failures are retried.
        retry_backoff_base: Backoff ceiling before the first retry, doubled for each later one.
        retry_backoff_max: Largest backoff ceiling.
        on_drop: Told ``(events, reason)`` about every event that will not be delivered.
        on_dispatch: Given each payload dict and its URL once, before it is first sent (the client's LOG_EVENT).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        batch_size: int = defaults.BATCH_SIZE,
        flush_interval: float = defaults.FLUSH_INTERVAL,
        max_queue_size: int = defaults.MAX_QUEUE_SIZE,
        enqueue_timeout: float = defaults.ENQUEUE_TIMEOUT,
        max_concurrent_requests: int = defaults.MAX_CONCURRENT_REQUESTS,
        max_retries: int | None = None,
        retry_timeout: float = defaults.EVENT_RETRY_TIMEOUT,
        retry_backoff_base: float = defaults.RETRY_BACKOFF_BASE,
        retry_backoff_max: float = defaults.RETRY_BACKOFF_MAX,
        on_drop: OnDrop | None = None,
        on_dispatch: OnDispatch | None = None,
    ) -> None:
        for name, count, minimum in (
            ("batch_size", batch_size, 1),
            ("max_queue_size", max_queue_size, 1),
            ("max_concurrent_requests", max_concurrent_requests, 1),
        ):
            number(name, count, minimum=minimum, integer=True, allow_equal=True)
        if max_retries is not None:
            number("max_retries", max_retries, minimum=0, integer=True, allow_equal=True)
        number("flush_interval", flush_interval)
        number("retry_timeout", retry_timeout)
        for name, seconds in (
            ("enqueue_timeout", enqueue_timeout),
            ("retry_backoff_base", retry_backoff_base),
            ("retry_backoff_max", retry_backoff_max),
        ):
            number(name, seconds, allow_equal=True)
        if batch_size > max_queue_size:
            raise ConfigurationError(
                f"batch_size ({batch_size}) must be less than or equal to max_queue_size ({max_queue_size})."
            )
        self._dispatcher = dispatcher
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._enqueue_timeout = float(enqueue_timeout)
        self._max_concurrent = max_concurrent_requests
        self._max_retries = max_retries
        self._retry_timeout = float(retry_timeout)
        self._backoff_base = float(retry_backoff_base)
        self._backoff_max = float(retry_backoff_max)
        self._attempt_timeout = defaults.DISPATCH_ATTEMPT_TIMEOUT
        self._max_timeout_resends = defaults.MAX_TIMEOUT_RESENDS
        self._on_dispatch = on_dispatch
        self._ledger = Ledger(on_drop)
        self._max_queue_size = max_queue_size

        self._buffer: deque[QueuedEvent] = deque()
        self._limit = max_queue_size  # 0 once closed, so put()'s fast path falls through to the slow one
        self._reset_state()
        self._books = _Books(self._buffer, self._ledger)
        weakref.finalize(self, _report_unsent, self._books)
        _live.add(self)

    def _reset_state(self) -> None:
        self._wake_at = sys.maxsize  # put() wakes the loop when the buffer reaches this length
        self._wakeup: anyio.Event | None = None
        self._waiters: deque[_Waiter] = deque()  # put() calls waiting for room, first come first served
        self._full_since: float | None = None  # when a put() last found the queue full with no room since
        self._failing: set[Batch] = set()  # in-flight batches whose last attempt failed
        self._stall_warned = False
        self._outage = False  # a retryable failure was seen and no request has succeeded since
        self._complained: set[str] = set()
        self._flush_upto = 0  # sequence below which flush() asked for everything to be sent
        self._state = _NEW
        self._closing = False
        self._timed_out = False
        self._senders: TaskGroup | None = None
        self._drained: anyio.Event | None = None
        self._slots: anyio.Semaphore | None = None
        self._run_thread: int | None = None

    # -- producers ----------------------------------------------------------------------------------------

    async def put(self, event: QueuedEvent) -> bool:
        """Queue ``event``; True when accepted. Never waits while there is room; when the queue is full it
        waits (first come, first served) up to ``enqueue_timeout`` for room while delivery makes progress,
        and drops the event (``queue_full``) otherwise."""
        if self.offer(event):
            return True
        return await self._put_slow(event)

    def offer(self, event: QueuedEvent) -> bool:
        """Queue ``event`` if there is room right now and nobody is waiting for it; False otherwise (nothing
        is dropped or counted: the caller then awaits :meth:`put`). The producers' fast path."""
        buffer = self._buffer
        if len(buffer) < self._limit and not self._waiters:
            buffer.append(event)
            if len(buffer) >= self._wake_at:
                self._wake()
            return True
        return False

    def put_nowait(self, event: QueuedEvent) -> bool:
        """Queue ``event`` without waiting; when the queue is full it is dropped at once (``queue_full``)."""
        if self.offer(event):
            return True
        self._ledger.reject(event, "closed" if self._closing else "queue_full")
        return False

    def reject(self, event: QueuedEvent, reason: str) -> None:
        """Count an event refused before it reached the queue (e.g. a payload that cannot be built) and tell
        ``on_drop``, so that it is in the totals like every other drop."""
        self._ledger.reject(event, reason)

    async def _put_slow(self, event: QueuedEvent) -> bool:
        if self._closing:
            reason = "closed"
        elif self._stalled():
            reason = "queue_full"
        else:
            waiter = _Waiter(event)
            self._waiters.append(waiter)
            try:
                with anyio.move_on_after(self._enqueue_timeout):
                    await waiter.done.wait()
            except BaseException:
                if waiter.state == _WAITING:
                    # The caller was cancelled while waiting for room: the event was never accepted.
                    self._waiters.remove(waiter)
                    self._ledger.reject(event, "cancelled")
                raise
            if waiter.state == _ACCEPTED:
                return True
            if waiter.state == _WAITING:  # timed out
                self._waiters.remove(waiter)
            reason = "closed" if self._closing else "queue_full"
        await run_hook(self._ledger.reject(event, reason, await_inline=True), "on_drop")
        return False

    def _stalled(self) -> bool:
        """Whether a full queue should refuse at once instead of letting the caller wait (module docstring)."""
        if len(self._failing) >= self._max_concurrent:
            stalled = True
        else:
            now = anyio.current_time()
            if self._full_since is None:
                self._full_since = now
            stalled = now - self._full_since >= self._enqueue_timeout
        if stalled and not self._stall_warned:
            self._stall_warned = True
            logger.warning(
                "The event queue is full and delivery is stalled: new events are dropped at once (queue_full) "
                "instead of waiting, until delivery makes progress. Totals: %s.",
                self._ledger.totals(len(self._buffer)),
            )
        return stalled

    def _room_appeared(self) -> None:
        """Hand the room to waiting put() calls in arrival order."""
        self._full_since = None
        self._stall_warned = False
        buffer, waiters = self._buffer, self._waiters
        while waiters and len(buffer) < self._limit:
            waiter = waiters.popleft()
            waiter.state = _ACCEPTED
            buffer.append(waiter.event)
            waiter.done.set()
        if len(buffer) >= self._wake_at:
            self._wake()

    def _release_waiters(self) -> None:
        """Send every waiting put() away (the queue closed, or delivery stalled); each counts its own drop."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.state = _REFUSED
            waiter.done.set()

    # -- the owner ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The flush loop. Returns once ``close()`` has drained (or abandoned) everything."""
        if self._state != _NEW:
            raise RuntimeError("EventQueue.run() can only be started once.")
        self._state = _RUNNING
        self._run_thread = threading.get_ident()
        self._drained = anyio.Event()
        self._slots = anyio.Semaphore(self._max_concurrent)
        try:
            async with anyio.create_task_group() as hooks:
                self._ledger.hooks = hooks
                try:
                    async with anyio.create_task_group() as senders:
                        self._senders = senders
                        task_status.started()
                        await self._loop(senders)
                finally:
                    # Finds nothing after a clean drain; when cancelled from outside, this accounts for
                    # whatever was still queued or in flight.
                    self._closing, self._limit = True, 0
                    self._release_waiters()
                    self._abandon("shutdown_cancelled", "the event queue was stopped before it drained")
                    self._drained.set()
        finally:
            self._ledger.hooks = None
            self._state = _STOPPED

    async def flush(self) -> None:
        """Send everything queued so far; return once each of those events is delivered or given up on."""
        target = self._ledger.taken + len(self._buffer)
        if self._ledger.settled_below() >= target:
            return
        if self._state != _RUNNING:
            logger.warning("flush() called while the event queue is not running; nothing was sent.")
            return
        self._flush_upto = max(self._flush_upto, target)
        waiter = self._ledger.flush_waiter(target)
        self._wake()
        await waiter.wait()

    async def close(self, timeout: float = defaults.CLOSE_TIMEOUT) -> DeliveryReport:
        """Stop accepting events, deliver what is queued within ``timeout`` seconds, and report.

        Later ``put()`` calls are dropped (``closed``). Whatever is still queued when the time is up is
        abandoned and counted as undelivered (``close_timeout``); events whose request is still out are
        counted apart as ``in_flight_at_close`` (the receiver may have them). Never waits past ``timeout``.
        A ``timeout`` that is not a number of seconds is logged and replaced by the default; close never raises.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
            logger.error(
                "close(timeout=%r): the timeout must be a number of seconds; using %g s.",
                timeout,
                defaults.CLOSE_TIMEOUT,
            )
            timeout = defaults.CLOSE_TIMEOUT
        timeout = float(timeout)
        if not self._closing:
            self._closing, self._limit = True, 0
            self._wake()
            self._release_waiters()  # put() calls waiting for room now see the queue closed
        if self._state == _RUNNING and self._drained is not None:
            with anyio.move_on_after(max(0.0, timeout)):
                await self._drained.wait()
            if not self._drained.is_set():
                self._timed_out = True
                self._abandon("close_timeout", f"the event queue did not drain within {timeout:g} s")
                if self._senders is not None:
                    self._senders.cancel_scope.cancel()
        elif self._state == _NEW and self._buffer:
            self._timed_out = True
            self._abandon("close_timeout", "the event queue was closed before it ran")
        self._books.closed = True
        return DeliveryReport(**vars(self.stats()), timed_out=self._timed_out)

    def stats(self) -> QueueStats:
        """A snapshot of the counters."""
        return self._ledger.stats(len(self._buffer))

    # -- the flush loop -----------------------------------------------------------------------------------

    async def _loop(self, senders: TaskGroup) -> None:
        assert self._slots is not None
        buffer = self._buffer
        deadline = math.inf  # when the oldest waiting event is due
        while True:
            if not buffer:
                if self._closing:
                    return
                deadline = math.inf
                await self._sleep(math.inf, wake_at=1)
                continue
            now = anyio.current_time()
            if deadline == math.inf:
                deadline = now + self._flush_interval
            due = (
                len(buffer) >= self._batch_size
                or self._closing
                or self._ledger.taken < self._flush_upto
                or now >= deadline
            )
            if not due:
                await self._sleep(deadline, wake_at=self._batch_size)
                continue
            await self._slots.acquire()
            batch = self._take()
            if batch is None:
                self._slots.release()
                continue
            deadline = anyio.current_time() + self._flush_interval if buffer else math.inf
            start_background(senders, self._deliver, batch)

    async def _sleep(self, deadline: float, *, wake_at: int) -> None:
        self._wakeup = anyio.Event()
        self._wake_at = wake_at
        with anyio.CancelScope(deadline=deadline):
            await self._wakeup.wait()
        self._wake_at = sys.maxsize

    def _wake(self) -> None:
        self._wake_at = sys.maxsize
        if self._wakeup is not None:
            self._wakeup.set()

    def _take(self) -> Batch | None:
        """Pop the next batch: up to ``batch_size`` events with the first one's project and revision."""
        buffer = self._buffer
        if not buffer:
            return None
        first = buffer.popleft()
        events = [first]
        project_id, revision = first.context.project_id, first.context.revision
        while buffer and len(events) < self._batch_size:
            context = buffer[0].context
            if context.project_id != project_id or context.revision != revision:
                break
            events.append(buffer.popleft())
        self._room_appeared()
        return self._ledger.take(events)

    async def _deliver(self, batch: Batch) -> None:
        assert self._slots is not None
        try:
            request = await self._build_request(batch)
            if request is not None:
                if self._on_dispatch is not None:
                    pending = call_hook(self._on_dispatch, "on_dispatch", request.payload, request.url)
                    await run_hook(pending, "on_dispatch")
                await self._send(batch, request)
        except Exception:
            self._complain("internal", "Unexpected error while delivering events; the batch is dropped.", True)
            self._ledger.settle(batch, "internal_error")
        finally:
            self._slots.release()

    async def _send(self, batch: Batch, request: EventRequest) -> None:
        """Deliver one batch: retry what may succeed later, split what the receiver refuses."""
        ledger = self._ledger
        first_attempt = anyio.current_time()
        retries = timeouts = 0
        try:
            while not batch.settled:
                result = await self._attempt(batch, dataclasses.replace(request, timeouts=timeouts))
                if batch.settled:  # abandoned by close() while the request was out
                    return
                if result.delivered:
                    ledger.settle(batch, None)
                    if self._outage:
                        self._outage = False
                        logger.info("Event requests succeed again. Totals: %s.", ledger.totals(len(self._buffer)))
                    return
                if not result.retryable:
                    if result.status in _SPLIT_STATUSES and len(batch.events) > 1:
                        self._failing.discard(batch)
                        await self._split(batch, request)
                    else:
                        ledger.settle(batch, result.reason)
                    return
                if result.reason in _TIMEOUT_REASONS:
                    timeouts += 1
                    if timeouts > self._max_timeout_resends:
                        ledger.settle(batch, result.reason)  # sent that often; the receiver may have it
                        return
                out_of_time = anyio.current_time() - first_attempt >= self._retry_timeout
                if out_of_time or (self._max_retries is not None and retries >= self._max_retries):
                    ledger.settle(batch, "retries_exhausted")
                    return
                if not self._outage:
                    self._outage = True
                    logger.warning(
                        "Event requests are failing (%s); retrying each for up to %g s while new events queue "
                        "(room for %d more).",
                        result.reason,
                        self._retry_timeout,
                        max(0, self._limit - len(self._buffer)),
                    )
                self._failing.add(batch)
                if len(self._failing) >= self._max_concurrent and self._waiters and self._stalled():
                    self._release_waiters()
                delay = retry_delay(retries, result.retry_after, base=self._backoff_base, cap=self._backoff_max)
                retries += 1
                ledger.retries += 1
                logger.debug("Event request failed (%s); retry %d in %.2f s.", result.reason, retries, delay)
                await anyio.sleep(delay)
        except Exception:
            self._complain("internal", "Unexpected error while delivering events; the batch is dropped.", True)
            ledger.settle(batch, "internal_error")
        finally:
            self._failing.discard(batch)

    async def _split(self, batch: Batch, request: EventRequest) -> None:
        """Resend the halves of a refused batch, so that only the events the receiver refuses are dropped."""
        at = len(batch.events) // 2
        first, second = self._ledger.split(batch, at)
        head, tail = split_request(request, at)
        logger.debug("Event request answered %s; resending it as two halves.", request.event_count)
        await self._send(first, head)
        await self._send(second, tail)

    async def _attempt(self, batch: Batch, request: EventRequest) -> DispatchResult:
        """One call of the dispatcher, isolated: whatever it does costs at most this batch."""
        self._ledger.requests += 1
        batch.sending = True
        try:
            with anyio.move_on_after(self._attempt_timeout) as scope:
                outcome: Any = self._dispatcher.dispatch(request)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
        except user_code_errors():
            self._complain(
                "raised", "The event dispatcher raised; each batch it raises for is dropped (dispatch_error).", True
            )
            return DispatchResult(delivered=False, retryable=False, reason="dispatch_error")
        finally:
            batch.sending = False
        if scope.cancelled_caught:
            self._complain(
                "hung",
                f"The event dispatcher did not return within {self._attempt_timeout:g} s; the attempt was "
                "cancelled and counts as a timeout (dispatch_timeout).",
            )
            return DispatchResult(delivered=False, retryable=True, reason="dispatch_timeout")
        if not isinstance(outcome, DispatchResult):
            self._complain(
                "result",
                f"The event dispatcher returned {type(outcome).__name__}, not a DispatchResult; each batch it "
                "does so for is dropped (invalid_dispatch_result).",
            )
            return DispatchResult(delivered=False, retryable=False, reason="invalid_dispatch_result")
        return outcome

    def _complain(self, kind: str, message: str, with_traceback: bool = False) -> None:
        """Log a problem at ERROR the first time, then at DEBUG."""
        if kind in self._complained:
            logger.debug(message, exc_info=with_traceback)
            return
        self._complained.add(kind)
        logger.error("%s (Logged once; later occurrences at DEBUG.)", message, exc_info=with_traceback)

    async def _build_request(self, batch: Batch) -> EventRequest | None:
        """Build and encode the batch; events that cannot be built or encoded are dropped.

        The work is done a few events at a time with a checkpoint in between, so a large batch never holds
        the event loop for long. (A worker thread would not help: building and encoding hold the GIL.)
        """
        queued = batch.events
        builder = RequestBuilder()
        failed: list[QueuedEvent] = []
        for start in range(0, len(queued), _BUILD_STEP):
            if start:
                await anyio.lowlevel.checkpoint()
                if batch.settled:  # abandoned by close() meanwhile; its events are already counted
                    return None
            built, step_failed = materialize(queued[start : start + _BUILD_STEP])
            failed += step_failed
            builder.add(built)
        request = builder.finish()
        batch.events = list(builder.events)
        if failed:
            self._ledger.drop(failed, "invalid_event")
        if builder.bad:
            self._ledger.drop(list(builder.bad), "invalid_payload")
        if request is None:
            self._ledger.settle(batch, None)  # nothing left in it; its events are already counted
        return request

    def _abandon(self, reason: str, why: str) -> None:
        queued = list(self._buffer)
        self._buffer.clear()
        lost, out = self._ledger.abandon(queued, reason)
        if lost or out:
            also = (
                f" and {out} whose request was still out (in_flight_at_close: the receiver may have them)"
                if out
                else ""
            )
            logger.warning(
                "%s: %d event(s) not sent (%s)%s. Totals: %s.",
                why[:1].upper() + why[1:],
                lost,
                reason,
                also,
                self._ledger.totals(0),
            )

    def _forked(self) -> None:
        """In a child process after ``fork()``: the events queued so far belong to the parent, which sends
        them; this process's queue starts empty with its own counters, so nothing is sent twice."""
        inherited = len(self._buffer) + self._ledger.stats(0).in_flight
        for batch in list(self._ledger._in_flight):
            batch.settled = True  # a delivery task that survived the fork (same thread) stops at once
        self._buffer.clear()
        on_drop = self._ledger.on_drop
        self._ledger = Ledger(on_drop)
        self._books.closed = True  # the parent reports its own
        self._books = _Books(self._buffer, self._ledger)
        weakref.finalize(self, _report_unsent, self._books)
        loop_survived = self._run_thread == threading.get_ident() and self._state == _RUNNING
        if self._closing or self._state == _STOPPED or loop_survived:
            self._waiters.clear()
            self._failing.clear()
        else:  # the loop that ran it stayed in the parent: this copy can be started again on a new loop
            self._reset_state()
            self._limit = self._max_queue_size
        if inherited:
            logger.debug("Forked: %d queued event(s) stay with the parent; this process starts empty.", inherited)
