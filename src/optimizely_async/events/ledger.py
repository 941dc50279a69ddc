"""The EventQueue's books: where every event went, and who is waiting for what.

Events are numbered in the order the queue accepted them (their *sequence*). A batch takes a contiguous run
of them; it is **settled** exactly once, as delivered, dropped (with a reason) or undelivered (abandoned at
shutdown). ``flush()`` waiters are released once every event below their target sequence is settled.
The invariant::

    submitted == queued + in_flight + delivered + sum(dropped.values()) + undelivered
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._logging import logger
from .models import PendingEvent, QueuedEvent, UserEvent, materialize

__all__ = ["Batch", "DeliveryReport", "Ledger", "OnDrop", "QueueStats", "call_hook", "run_hook"]

OnDrop = Callable[[Sequence[UserEvent], str], "Awaitable[None] | None"]
"""``on_drop(events, reason)``: told about every event given up on; may be sync or async."""

_LOG_EVERY = 10.0  # seconds between repeated warnings for the same drop reason


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of the queue's counters (events, unless named otherwise)."""

    #: Every ``put()`` / ``put_nowait()`` call, accepted or not.
    submitted: int
    queued: int
    in_flight: int
    delivered: int
    #: Events given up on, by reason: ``queue_full``, ``closed``, ``cancelled``, ``http_400``,
    #: ``retries_exhausted``, ``invalid_payload``, ``dispatch_error`` ...
    dropped: Mapping[str, int]
    #: Events abandoned at shutdown (reason ``close_timeout`` or ``shutdown_cancelled``).
    undelivered: int
    #: Retry attempts (requests, not events).
    retries: int
    #: Dispatch attempts (requests).
    requests: int


@dataclass(frozen=True)
class DeliveryReport(QueueStats):
    """What ``close()`` achieved: the final counters, and whether the drain ran out of time."""

    timed_out: bool = False


class Batch:
    """Events taken from the buffer for one request."""

    __slots__ = ("events", "settled", "start")

    def __init__(self, events: list[QueuedEvent], start: int) -> None:
        self.events = events
        self.start = start  # sequence of the first event; batches are taken in FIFO order
        self.settled = False


class Ledger:
    """Counters, in-flight batches and flush waiters; tells ``on_drop`` about every event given up on."""

    def __init__(self, on_drop: OnDrop | None) -> None:
        self.on_drop = on_drop
        #: While set, async ``on_drop`` calls run in this task group.
        self.hooks: TaskGroup | None = None
        self.taken = 0  # events that left the buffer (the sequence of the next one to leave)
        self.rejected = 0
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self.undelivered = 0
        self.retries = 0
        self.requests = 0
        self._in_flight: set[Batch] = set()
        self._flush_waiters: list[tuple[int, anyio.Event]] = []
        self._last_warned: dict[str, float] = {}

    def take(self, events: list[QueuedEvent]) -> Batch:
        """Register ``events`` (just popped from the buffer) as an in-flight batch."""
        batch = Batch(events, self.taken)
        self.taken += len(events)
        self._in_flight.add(batch)
        return batch

    def settle(self, batch: Batch, reason: str | None) -> None:
        """Record a batch's final outcome, once: delivered (``reason`` None) or dropped for ``reason``."""
        if batch.settled:
            return
        batch.settled = True
        self._in_flight.discard(batch)
        if reason is None:
            self.delivered += len(batch.events)
        elif batch.events:
            self.drop(batch.events, reason)
        self._release_flush_waiters()

    def abandon(self, queued: list[QueuedEvent], reason: str) -> None:
        """Give up on every in-flight batch and on ``queued`` (already removed from the buffer)."""
        for batch in list(self._in_flight):
            batch.settled = True
            if batch.events:
                self.drop(batch.events, reason, undelivered=True)
        self._in_flight.clear()
        if queued:
            self.taken += len(queued)
            self.drop(queued, reason, undelivered=True)
        self._release_flush_waiters()

    def settled_below(self) -> int:
        """Every event whose sequence is below this is settled."""
        return min((batch.start for batch in self._in_flight), default=self.taken)

    def flush_waiter(self, target: int) -> anyio.Event:
        """An event set once every event below ``target`` is settled."""
        waiter = anyio.Event()
        self._flush_waiters.append((target, waiter))
        self._release_flush_waiters()
        return waiter

    def _release_flush_waiters(self) -> None:
        if not self._flush_waiters:
            return
        low = self.settled_below()
        waiting = []
        for target, waiter in self._flush_waiters:
            if target <= low:
                waiter.set()
            else:
                waiting.append((target, waiter))
        self._flush_waiters = waiting

    def stats(self, queued: int) -> QueueStats:
        return QueueStats(
            submitted=self.taken + queued + self.rejected,
            queued=queued,
            in_flight=sum(len(batch.events) for batch in self._in_flight),
            delivered=self.delivered,
            dropped=dict(self.dropped),
            undelivered=self.undelivered,
            retries=self.retries,
            requests=self.requests,
        )

    def reject(self, event: QueuedEvent, reason: str, *, await_inline: bool = False) -> Awaitable[Any] | None:
        """Count a ``put()`` that was refused."""
        self.rejected += 1
        return self.drop([event], reason, await_inline=await_inline)

    def drop(
        self,
        events: list[QueuedEvent],
        reason: str,
        *,
        undelivered: bool = False,
        await_inline: bool = False,
    ) -> Awaitable[Any] | None:
        """Count ``events`` as dropped (or undelivered), log, and tell ``on_drop``.

        An async ``on_drop`` runs in :attr:`hooks` while that is set. Otherwise it is returned for the caller
        to await (``await_inline``) or skipped with a warning.
        """
        count = len(events)
        if undelivered:
            self.undelivered += count
        else:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        now = time.monotonic()
        if now - self._last_warned.get(reason, -math.inf) >= _LOG_EVERY:
            self._last_warned[reason] = now
            logger.warning("Dropping %d event(s): %s.", count, reason)
        else:
            logger.debug("Dropping %d event(s): %s.", count, reason)
        if self.on_drop is None:
            return None
        # The callback sees models, as for every other drop (a queued track() may not be built yet).
        shown = materialize(events)[0] if any(type(e) is PendingEvent for e in events) else events
        pending = call_hook(self.on_drop, "on_drop", shown, reason)
        if pending is None:
            return None
        if self.hooks is not None:
            self.hooks.start_soon(run_hook, pending, "on_drop")
            return None
        if await_inline:
            return pending
        if inspect.iscoroutine(pending):
            pending.close()
        logger.warning("The async on_drop callback could not run: the event queue is not running.")
        return None


def call_hook(hook: Callable[..., Any], name: str, *args: Any) -> Awaitable[Any] | None:
    """Call a user hook, isolating its errors; return its awaitable when it is async."""
    try:
        result = hook(*args)
    except Exception:
        logger.exception("The %s callback raised; ignored.", name)
        return None
    return result if inspect.isawaitable(result) else None


async def run_hook(pending: Awaitable[Any] | None, name: str) -> None:
    """Await what an async hook returned, isolating its errors."""
    if pending is None:
        return
    try:
        await pending
    except Exception:
        logger.exception("The %s callback raised; ignored.", name)
