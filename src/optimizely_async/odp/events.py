"""The ODP event queue: bounded, batching, retrying, drained on close, every event accounted for.

The official SDK runs one thread per client with a 1,000-event queue, batches of 10 (one when the flush
interval is 0), a flush deadline one interval after the first event of a batch, and up to 3 retries (0.2, 0.4,
0.8 s) for network errors and 5xx answers; a failed batch is dropped with a log line. The same policy here, as
one task in the client's task group, with counters: every accepted event ends up delivered or dropped with a
reason, so ``submitted == queued + in_flight + delivered + sum(dropped.values())``.

A batch only holds events for one destination (host and key): when the datafile's integration changes, the
events queued for the old one are sent to it first, as the official queue flushes before switching.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import TaskStatus

from .. import defaults
from .._fork_copy import drop_in_children
from .._lazy_http import LazyHttpClient
from .._logging import sdk_logger

if TYPE_CHECKING:
    import httpx
else:
    from .._lazy_import import LazyModule

    httpx = LazyModule("httpx")  # the first request imports it, if no dispatcher or poller did before

__all__ = ["OdpEvent", "OdpEventQueue", "OdpEventStats"]

_log = sdk_logger()

SEND_FAILED: Final = "ODP event send failed ({})."


@dataclass(frozen=True, slots=True)
class OdpEvent:
    """One event for the ODP events API, with the destination it was sent for."""

    api_host: str
    api_key: str
    #: ``{"type", "action", "identifiers", "data"}``, as sent.
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class OdpEventStats:
    """A snapshot of the ODP event queue's counters (events, unless named otherwise)."""

    submitted: int
    queued: int
    in_flight: int
    delivered: int
    #: Events given up on, by reason: ``queue_full``, ``closed``, ``http_4xx`` codes (``http_400`` ...),
    #: ``retries_exhausted``, ``request_error``, ``close_timeout``, ``shutdown_cancelled``, ``forked`` (sent in a
    #: forked child to its copy of a client started in the parent, which cannot send from there).
    dropped: Mapping[str, int]
    #: Retry attempts (requests, not events).
    retries: int
    #: Requests made.
    requests: int


class OdpEventQueue:
    """Owner: ``await task_group.start(queue.run)``; then ``await queue.close(timeout)`` drains and stops it."""

    def __init__(
        self,
        http: LazyHttpClient,
        *,
        flush_interval: float = defaults.ODP_EVENT_FLUSH_INTERVAL,
        request_timeout: float = defaults.ODP_EVENT_REQUEST_TIMEOUT,
        max_queue_size: int = defaults.ODP_EVENT_QUEUE_SIZE,
        batch_size: int = defaults.ODP_EVENT_BATCH_SIZE,
        max_retries: int = defaults.ODP_EVENT_MAX_RETRIES,
        retry_backoff_base: float = defaults.ODP_EVENT_RETRY_BASE,
        retry_backoff_max: float = defaults.ODP_EVENT_RETRY_MAX,
    ) -> None:
        self._http = http
        self._interval = float(flush_interval)
        self._timeout = float(request_timeout)
        self._limit = max_queue_size
        self._batch_size = 1 if flush_interval == 0 else batch_size
        self._max_retries = max_retries
        self._backoff_base = retry_backoff_base
        self._backoff_max = retry_backoff_max
        self._buffer: deque[tuple[OdpEvent, float]] = deque()
        self._current: list[OdpEvent] = []
        self._closed = False
        self._running = False
        self._wakeup = anyio.Event()
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._flush_upto = 0
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._taken = 0  # events that left the buffer (sent, dropped or abandoned)
        self._settled = 0  # of those, events whose fate is known
        self._submitted = 0
        self._delivered = 0
        self._dropped: dict[str, int] = {}
        self._retries = 0
        self._requests = 0
        self._forked = False  # a copy, in a forked child, of a queue the parent runs: it refuses events
        drop_in_children(self)

    # ------------------------------------------------------------------ producers

    def offer(self, event: OdpEvent) -> bool:
        """Queue ``event`` without waiting; when the queue is full or closed it is dropped (counted, logged)."""
        self._submitted += 1
        if self._closed:
            if self._forked:
                self._refuse_forked()
            else:
                _log.warning("ODP event queue is shutdown, not accepting events.")
                self._count_drop("closed", 1)
            return False
        buffer = self._buffer
        if len(buffer) >= self._limit:
            _log.warning(SEND_FAILED.format("Queue is full"))
            self._count_drop("queue_full", 1)
            return False
        _log.debug("ODP event queue: adding event.")
        buffer.append((event, anyio.current_time()))
        if len(buffer) == 1 or len(buffer) >= self._batch_size or event.api_host != buffer[0][0].api_host:
            self._wakeup.set()
        return True

    # ------------------------------------------------------------------ the owner

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The flush loop; returns once ``close()`` has drained the queue (or given up on it)."""
        if self._running or self._done is not None:
            raise RuntimeError("OdpEventQueue.run() can only be started once.")
        self._running = True
        self._done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                await self._loop()
        finally:
            self._running = False
            self._abandon("shutdown_cancelled")
            self._done.set()

    async def _loop(self) -> None:
        while True:
            buffer = self._buffer
            if not buffer:
                if self._closed:
                    return
                await self._sleep(None)
                continue
            first, first_at = buffer[0]
            due = first_at + self._interval
            now = anyio.current_time()
            if (
                self._closed
                or now >= due
                or len(buffer) >= self._batch_size
                or self._flush_upto > self._taken
                or buffer[-1][0].api_host != first.api_host
                or buffer[-1][0].api_key != first.api_key
            ):
                await self._send_batch()
            else:
                await self._sleep(due - now)

    async def _sleep(self, seconds: float | None) -> None:
        self._wakeup = anyio.Event()
        if seconds is None:
            await self._wakeup.wait()
        else:
            with anyio.move_on_after(seconds):
                await self._wakeup.wait()

    async def flush(self) -> None:
        """Send everything queued so far; return once each of those events is delivered or dropped."""
        target = self._taken + len(self._buffer)
        if self._settled >= target:
            return
        if not self._running:
            await self._drain_inline(None)
            return
        self._flush_upto = max(self._flush_upto, target)
        waiter = anyio.Event()
        self._waiters.append((target, waiter))
        self._wakeup.set()
        await waiter.wait()

    async def close(self, timeout: float = defaults.CLOSE_TIMEOUT) -> OdpEventStats:
        """Stop accepting events, send what is queued within ``timeout`` seconds, then report. Whatever is left
        when the time is up is dropped (``close_timeout``). Idempotent; never raises."""
        self._closed = True
        self._wakeup.set()
        if self._running and self._done is not None:
            with anyio.move_on_after(max(0.0, timeout)):
                await self._done.wait()
            if not self._done.is_set():
                if self._buffer or self._current:  # nothing to say when nothing was left to send
                    _log.warning("The ODP event queue did not drain within %s s; dropping the rest.", timeout)
                self._abandon("close_timeout")
                if self._scope is not None:
                    self._scope.cancel()
        elif self._buffer:
            await self._drain_inline(timeout)  # never started: deliver from here
        return self.stats()

    async def _drain_inline(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            while self._buffer:
                await self._send_batch()
        self._abandon("close_timeout")

    def stats(self) -> OdpEventStats:
        return OdpEventStats(
            submitted=self._submitted,
            queued=len(self._buffer),
            in_flight=len(self._current),
            delivered=self._delivered,
            dropped=dict(self._dropped),
            retries=self._retries,
            requests=self._requests,
        )

    # ------------------------------------------------------------------ sending

    async def _send_batch(self) -> None:
        buffer = self._buffer
        first = buffer[0][0]
        batch: list[OdpEvent] = []
        while buffer and len(batch) < self._batch_size:
            event = buffer[0][0]
            if event.api_host != first.api_host or event.api_key != first.api_key:
                break
            batch.append(buffer.popleft()[0])
        self._current = batch
        self._taken += len(batch)
        _log.debug("ODP event queue: flushing batch size %d.", len(batch))
        try:
            reason = await self._deliver(first.api_host, first.api_key, batch)
        except Exception:  # never let one batch stop the queue
            _log.exception("Unexpected error sending ODP events.")
            reason = "dispatch_error"
        if reason is None:
            self._delivered += len(batch)
        else:
            self._count_drop(reason, len(batch))
        self._current = []
        self._settle(len(batch))

    async def _deliver(self, host: str, key: str, batch: list[OdpEvent]) -> str | None:
        """None when delivered, else the drop reason (after the official retries, with the official logs)."""
        url = f"{host}/v3/events"
        body = json.dumps([dict(event.payload) for event in batch]).encode()
        headers = {"content-type": "application/json", "x-api-key": key}
        for attempt in range(self._max_retries + 1):
            if attempt:
                delay = min(self._backoff_base * 2 ** (attempt - 1), self._backoff_max)
                _log.debug("Error dispatching ODP events, retrying after %ss.", delay)
                self._retries += 1
                await anyio.sleep(delay)
            self._requests += 1
            try:
                response = await self._http.post(url, content=body, headers=headers, timeout=self._timeout)
            except (httpx.TransportError, httpx.TimeoutException):
                _log.error(SEND_FAILED.format("network error"))
                continue
            except httpx.HTTPError as exc:
                _log.error(SEND_FAILED.format(exc))
                return "request_error"
            status = response.status_code
            if status < 400:
                return None
            if status < 500:
                _log.error(SEND_FAILED.format(response.text[:500]))  # the server's explanation, kept short
                return f"http_{status}"
            _log.error(SEND_FAILED.format(f"{status} Server Error: {response.reason_phrase} for url: {url}"))
        # The official line lists the events (user identifiers) at ERROR; here their count, the events at DEBUG.
        _log.error(SEND_FAILED.format(f"Failed after {self._max_retries} retries: {len(batch)} events"))
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("ODP events given up on: %s", [dict(event.payload) for event in batch])
        return "retries_exhausted"

    # ------------------------------------------------------------------ forked children

    def _drop_inherited(self) -> None:
        """In a forked child (``.._fork_copy``): the queued events are the parent's, which sends them; the copy
        starts empty, counting only its own. A queue the parent runs cannot run here (its task and connections
        are the parent's), so its copy refuses events (dropped, ``forked``)."""
        if self._running and not self._closed:
            self._closed = self._forked = True
        self._running = False
        self._scope = None
        self._buffer.clear()
        self._current = []
        self._waiters = []
        self._flush_upto = self._taken = self._settled = self._submitted = self._delivered = 0
        self._retries = self._requests = 0
        self._dropped = {}

    def _refuse_forked(self) -> None:
        log = _log.debug if self._dropped.get("forked") else _log.warning
        log("ODP event not sent: this process is a fork of the one that started the client; create a new client here.")
        self._count_drop("forked", 1)

    # ------------------------------------------------------------------ the books

    def _count_drop(self, reason: str, count: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _settle(self, count: int) -> None:
        self._settled += count
        if self._waiters:
            ready = [w for w in self._waiters if w[0] <= self._settled]
            if ready:
                self._waiters = [w for w in self._waiters if w[0] > self._settled]
                for _, waiter in ready:
                    waiter.set()

    def _abandon(self, reason: str) -> None:
        """Drop whatever is queued or in flight (at shutdown), counted under ``reason``."""
        left = len(self._buffer) + len(self._current)
        if not left:
            return
        _log.warning("Dropping %d ODP events (%s).", left, reason)
        self._taken += len(self._buffer)
        self._buffer.clear()
        self._current = []
        self._count_drop(reason, left)
        self._settle(left)
