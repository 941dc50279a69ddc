"""EventQueue: the bounded buffer between ``track()`` / impressions and the events API.

Policy (after OpenTelemetry's ``BatchProcessor``, rebuilt on anyio): ``put()`` appends without waiting while
there is room; the flush loop sends a batch when ``batch_size`` events are waiting, when the oldest waiting
event is ``flush_interval`` old, on ``flush()`` and on ``close()``. Up to ``max_concurrent_requests`` batches
are in flight at once; failures are retried with jittered exponential backoff that honours ``Retry-After``.
Every event handed to ``put()`` ends up delivered, dropped (with a reason) or undelivered (abandoned at
shutdown); see :mod:`.ledger` for the books.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from .. import defaults
from .._logging import logger
from .._validation import number
from ..errors import ConfigurationError
from .dispatcher import Dispatcher, DispatchResult, EventRequest, retry_delay
from .ledger import Batch, DeliveryReport, Ledger, OnDrop, QueueStats, call_hook, run_hook
from .models import QueuedEvent, materialize
from .payload import RequestBuilder

# Events built and encoded between two checkpoints while a batch is prepared (a few tenths of a ms of work).
_BUILD_STEP = 4

__all__ = ["DeliveryReport", "EventQueue", "OnDispatch", "OnDrop", "QueueStats"]

OnDispatch = Callable[[Mapping[str, Any], str], "Awaitable[None] | None"]
"""``on_dispatch(payload, url)``: called once per payload, before its first attempt; may be sync or async."""

_NEW, _RUNNING, _STOPPED = "new", "running", "stopped"


class EventQueue:
    """Bounded, batching, concurrent event delivery with exact accounting.

    The owner starts it with ``await task_group.start(queue.run)`` and stops it with ``await queue.close()``.

    Args:
        dispatcher: Delivers one request per call (e.g. :class:`HttpDispatcher`).
        batch_size: Most events per request; a full batch is sent at once.
        flush_interval: Seconds the oldest waiting event may wait before a partial batch is sent.
        max_queue_size: Most events waiting to be sent (in-flight batches not included).
        enqueue_timeout: Seconds ``put()`` waits for room in a full queue before dropping (``queue_full``).
        max_concurrent_requests: Most requests in flight at once.
        max_retries: Retries per request after the first attempt.
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
        max_retries: int = defaults.EVENT_MAX_RETRIES,
        retry_backoff_base: float = defaults.RETRY_BACKOFF_BASE,
        retry_backoff_max: float = defaults.RETRY_BACKOFF_MAX,
        on_drop: OnDrop | None = None,
        on_dispatch: OnDispatch | None = None,
    ) -> None:
        for name, count, minimum in (
            ("batch_size", batch_size, 1),
            ("max_queue_size", max_queue_size, 1),
            ("max_concurrent_requests", max_concurrent_requests, 1),
            ("max_retries", max_retries, 0),
        ):
            number(name, count, minimum=minimum, integer=True, allow_equal=True)
        number("flush_interval", flush_interval)
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
        self._backoff_base = float(retry_backoff_base)
        self._backoff_max = float(retry_backoff_max)
        self._on_dispatch = on_dispatch
        self._ledger = Ledger(on_drop)

        self._buffer: deque[QueuedEvent] = deque()
        self._limit = max_queue_size  # 0 once closed, so put()'s fast path falls through to the slow one
        self._wake_at = sys.maxsize  # put() wakes the loop when the buffer reaches this length
        self._wakeup: anyio.Event | None = None
        self._space: anyio.Event | None = None  # set when room appears; created by a waiting put()
        self._flush_upto = 0  # sequence below which flush() asked for everything to be sent
        self._state = _NEW
        self._closing = False
        self._timed_out = False
        self._senders: TaskGroup | None = None
        self._drained: anyio.Event | None = None
        self._slots: anyio.Semaphore | None = None

    # -- producers ----------------------------------------------------------------------------------------

    async def put(self, event: QueuedEvent) -> bool:
        """Queue ``event``; True when accepted. Never waits while there is room; when the queue is full it
        waits up to ``enqueue_timeout`` for room, then drops the event (``queue_full``)."""
        if self.offer(event):
            return True
        return await self._put_slow(event)

    def offer(self, event: QueuedEvent) -> bool:
        """Queue ``event`` if there is room right now; False otherwise (nothing is dropped or counted: the
        caller then awaits :meth:`put`). The producers' fast path, without a coroutine."""
        buffer = self._buffer
        if len(buffer) < self._limit:
            buffer.append(event)
            if len(buffer) >= self._wake_at:
                self._wake()
            return True
        return False

    def put_nowait(self, event: QueuedEvent) -> bool:
        """Queue ``event`` without waiting; when the queue is full it is dropped at once (``queue_full``)."""
        buffer = self._buffer
        if len(buffer) < self._limit:
            buffer.append(event)
            if len(buffer) >= self._wake_at:
                self._wake()
            return True
        self._ledger.reject(event, "closed" if self._closing else "queue_full")
        return False

    async def _put_slow(self, event: QueuedEvent) -> bool:
        buffer = self._buffer
        try:
            with anyio.move_on_after(self._enqueue_timeout):
                while len(buffer) >= self._limit and not self._closing:
                    if self._space is None:
                        self._space = anyio.Event()
                    await self._space.wait()
        except BaseException:
            # The caller was cancelled while waiting for room: the event was never accepted.
            self._ledger.reject(event, "cancelled")
            raise
        if len(buffer) < self._limit:
            buffer.append(event)
            if len(buffer) >= self._wake_at:
                self._wake()
            return True
        reason = "closed" if self._closing else "queue_full"
        await run_hook(self._ledger.reject(event, reason, await_inline=True), "on_drop")
        return False

    # -- the owner ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The flush loop. Returns once ``close()`` has drained (or abandoned) everything."""
        if self._state != _NEW:
            raise RuntimeError("EventQueue.run() can only be started once.")
        self._state = _RUNNING
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
                    self._abandon("shutdown_cancelled")
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

        Later ``put()`` calls are dropped (``closed``). Whatever is still queued or in flight when the time
        is up is abandoned and counted as undelivered (``close_timeout``). Never waits past ``timeout``.
        A ``timeout`` that is not a number of seconds is logged and replaced by the default; close never raises.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
            logger.error(
                "close(timeout=%r): the timeout must be a number of seconds; using %g s.",
                timeout,
                defaults.CLOSE_TIMEOUT,
            )
            timeout = defaults.CLOSE_TIMEOUT
        if not self._closing:
            self._closing, self._limit = True, 0
            self._wake()
            if self._space is not None:
                self._space.set()  # put() calls waiting for room now see the queue closed
                self._space = None
        if self._state == _RUNNING and self._drained is not None:
            with anyio.move_on_after(max(0.0, timeout)):
                await self._drained.wait()
            if not self._drained.is_set():
                self._timed_out = True
                logger.warning("The event queue did not drain within %s s; abandoning the rest.", timeout)
                self._abandon("close_timeout")
                if self._senders is not None:
                    self._senders.cancel_scope.cancel()
        elif self._state == _NEW and self._buffer:
            self._timed_out = True
            logger.warning("The event queue was closed before it ran; %d events not sent.", len(self._buffer))
            self._abandon("close_timeout")
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
            senders.start_soon(self._deliver, batch)

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
        if self._space is not None:
            self._space.set()
            self._space = None
        return self._ledger.take(events)

    async def _deliver(self, batch: Batch) -> None:
        assert self._slots is not None
        ledger = self._ledger
        try:
            request = await self._build_request(batch)
            if request is None:
                return
            if self._on_dispatch is not None:
                await run_hook(call_hook(self._on_dispatch, "on_dispatch", request.payload, request.url), "on_dispatch")
            attempt = 0
            while not batch.settled:
                result = await self._dispatch_once(request)
                if batch.settled:  # abandoned by close() while the request was out
                    return
                if result.delivered:
                    ledger.settle(batch, None)
                elif not result.retryable:
                    logger.error("Event request rejected (%s); dropping %d events.", result.reason, request.event_count)
                    ledger.settle(batch, result.reason)
                elif attempt >= self._max_retries:
                    logger.error(
                        "Event request failed %d times (last: %s); dropping %d events.",
                        attempt + 1,
                        result.reason,
                        request.event_count,
                    )
                    ledger.settle(batch, "retries_exhausted")
                else:
                    delay = retry_delay(attempt, result.retry_after, base=self._backoff_base, cap=self._backoff_max)
                    attempt += 1
                    ledger.retries += 1
                    logger.debug(
                        "Event request failed (%s); retry %d of %d in %.2f s.",
                        result.reason,
                        attempt,
                        self._max_retries,
                        delay,
                    )
                    await anyio.sleep(delay)
        finally:
            self._slots.release()

    async def _dispatch_once(self, request: EventRequest) -> DispatchResult:
        self._ledger.requests += 1
        try:
            return await self._dispatcher.dispatch(request)
        except Exception:
            logger.exception("The event dispatcher raised; the request is not retried.")
            return DispatchResult(delivered=False, retryable=False, reason="dispatch_error")

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
            logger.error("Dropping %d events whose payload cannot be encoded as JSON.", len(builder.bad))
            self._ledger.drop(list(builder.bad), "invalid_payload")
        if request is None:
            self._ledger.settle(batch, None)  # nothing left in it; its events are already counted
        return request

    def _abandon(self, reason: str) -> None:
        queued = list(self._buffer)
        self._buffer.clear()
        self._ledger.abandon(queued, reason)
