"""The EventQueue's books: where every event went, and who is waiting for what.

Events are numbered in the order the queue accepted them (their *sequence*). A batch takes a contiguous run
of them; it is **settled** exactly once, as delivered, dropped (with a reason) or abandoned at shutdown:
*undelivered* when no request carrying it was out, *in flight at close* when one was (the receiver may have
it). A batch split in two (after a 400 or 413) is settled by its halves. ``flush()`` waiters are released
once every event below their target sequence is settled. The invariant::

    submitted == queued + in_flight + delivered + sum(dropped.values()) + undelivered + in_flight_at_close
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from .._ctrl_c import start_background
from .._logging import logger
from .._owned_threads import user_code_errors
from .pending import PendingEvent, materialize

if TYPE_CHECKING:
    from .models import QueuedEvent, UserEvent

__all__ = ["Batch", "DeliveryReport", "Ledger", "OnDrop", "QueueStats", "call_hook", "run_hook"]

OnDrop = Callable[[Sequence["UserEvent"], str], "Awaitable[None] | None"]
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
    #: Events abandoned at shutdown while a request carrying them was out: the receiver may have them, so
    #: re-sending them (from ``on_drop``, reason ``in_flight_at_close``) may create duplicates.
    in_flight_at_close: int = 0


@dataclass(frozen=True)
class DeliveryReport(QueueStats):
    """What ``close()`` achieved: the final counters, and whether the drain ran out of time."""

    timed_out: bool = False


class Batch:
    """Events taken from the buffer for one request."""

    __slots__ = ("events", "sending", "settled", "start")

    def __init__(self, events: list[QueuedEvent], start: int) -> None:
        self.events = events
        self.start = start  # sequence of the first event; batches are taken in FIFO order
        self.settled = False
        self.sending = False  # a request carrying these events is out (sent, not answered)


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
        self.in_flight_at_close = 0
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

    def split(self, batch: Batch, at: int) -> tuple[Batch, Batch]:
        """Replace an in-flight batch by two: its events ``[:at]`` and ``[at:]`` (each settled on its own)."""
        first = Batch(batch.events[:at], batch.start)
        second = Batch(batch.events[at:], batch.start + at)
        batch.settled = True
        self._in_flight.discard(batch)
        self._in_flight.update((first, second))
        return first, second

    def abandon(self, queued: list[QueuedEvent], reason: str) -> tuple[int, int]:
        """Give up on every in-flight batch and on ``queued`` (already removed from the buffer).

        Events whose request is out are counted apart (``in_flight_at_close``, which is also the reason
        ``on_drop`` sees); the others are undelivered for ``reason``. Logs nothing (the caller logs one
        summary); returns ``(undelivered, in_flight_at_close)`` for it.
        """
        lost = out = 0
        for batch in sorted(self._in_flight, key=lambda b: b.start):
            batch.settled = True
            if not batch.events:
                continue
            if batch.sending:
                out += len(batch.events)
                self.in_flight_at_close += len(batch.events)
                self._tell(batch.events, "in_flight_at_close")
            else:
                lost += len(batch.events)
                self.drop(batch.events, reason, undelivered=True, log=False)
        self._in_flight.clear()
        if queued:
            self.taken += len(queued)
            lost += len(queued)
            self.drop(queued, reason, undelivered=True, log=False)
        self._release_flush_waiters()
        return lost, out

    def totals(self, queued: int) -> str:
        """The counters in one line, for warnings that must say how many events went where."""
        stats = self.stats(queued)
        dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.dropped.items())) or "none"
        return (
            f"submitted {stats.submitted}, delivered {stats.delivered}, dropped {sum(stats.dropped.values())} "
            f"({dropped}), undelivered {stats.undelivered}, in flight at close {stats.in_flight_at_close}, "
            f"queued {stats.queued}, in flight {stats.in_flight}"
        )

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
            in_flight_at_close=self.in_flight_at_close,
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
        log: bool = True,
    ) -> Awaitable[Any] | None:
        """Count ``events`` as dropped (or undelivered), log, and tell ``on_drop``.

        The warning is rate-limited per reason and gives the running total for the reason and for all
        drops, so the last line logged is never stale by more than ``_LOG_EVERY`` seconds of drops.
        An async ``on_drop`` runs in :attr:`hooks` while that is set. Otherwise it is returned for the caller
        to await (``await_inline``) or skipped with a warning.
        """
        count = len(events)
        if undelivered:
            self.undelivered += count
        else:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        if log:
            now = time.monotonic()
            total = self.dropped.get(reason, 0) if not undelivered else self.undelivered
            if now - self._last_warned.get(reason, -math.inf) >= _LOG_EVERY:
                self._last_warned[reason] = now
                logger.warning(
                    "Dropped %d event(s): %s (%d so far for this reason; %d dropped in all, %d delivered).",
                    count,
                    reason,
                    total,
                    sum(self.dropped.values()),
                    self.delivered,
                )
            else:
                logger.debug("Dropped %d event(s): %s (%d so far for this reason).", count, reason, total)
        return self._tell(events, reason, await_inline=await_inline)

    def _tell(self, events: list[QueuedEvent], reason: str, *, await_inline: bool = False) -> Awaitable[Any] | None:
        """Pass ``events`` to ``on_drop`` (see :meth:`drop`)."""
        if self.on_drop is None:
            return None
        # The callback sees models, as for every other drop (a queued track() may not be built yet); an event
        # that cannot be built at all (``invalid_event``) is passed as the queued record it is.
        shown: Sequence[Any] = events
        if any(type(e) is PendingEvent for e in events):
            built, failed = materialize(events)
            shown = [*built, *failed]
        pending = call_hook(self.on_drop, "on_drop", shown, reason)
        if pending is None:
            return None
        if self.hooks is not None:
            start_background(self.hooks, run_hook, pending, "on_drop")
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
    except user_code_errors():
        logger.exception("The %s callback raised; ignored.", name)
        return None
    return result if inspect.isawaitable(result) else None


async def run_hook(pending: Awaitable[Any] | None, name: str) -> None:
    """Await what an async hook returned, isolating its errors."""
    if pending is None:
        return
    try:
        await pending
    except user_code_errors():
        logger.exception("The %s callback raised; ignored.", name)
