"""The backlog of async notification listeners: run in the client's background work, off the caller's path.

A listener that is a coroutine function (or any callable that returns an awaitable) is called inline, which
only creates its coroutine; the coroutine is handed to this queue and awaited later by one task in the
client's task group, one at a time, in notification order. So an ``async def`` DECISION listener that awaits
50 ms costs ``is_feature_enabled`` nothing. The backlog is bounded: past ``limit`` waiting coroutines the new
one is closed without running, counted (``overflowed``) and the first time logged at WARNING.

While no task runs the queue (before the client starts, after it stops, in a forked child), :meth:`submit`
returns False and the notification center awaits the coroutine inline, as before.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ._logging import logger

__all__ = ["AsyncListenerQueue", "ListenerStats"]


@dataclass(frozen=True)
class ListenerStats:
    """Counters of the async listeners run in the background (a snapshot)."""

    #: Coroutines waiting to run (the one running included).
    queued: int = 0
    #: Coroutines that ran to the end, with or without an exception.
    completed: int = 0
    #: Of those, how many raised (each is logged).
    failed: int = 0
    #: Coroutines closed without running because the backlog was full.
    overflowed: int = 0
    #: Coroutines closed without running (or cut short) because the client stopped before their turn.
    abandoned: int = 0


def _discard(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never run, so Python does not warn that it was never awaited."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


class AsyncListenerQueue:
    """A bounded FIFO of listener coroutines, run one at a time by :meth:`run` in the client's task group."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._backlog: deque[tuple[Awaitable[Any], str]] = deque()
        self._running = False
        self._worker: int | None = None  # the id of the task that runs the queue
        self._wakeup: anyio.Event | None = None
        self._submitted = 0
        self._finished = 0  # completed + abandoned (overflowed ones never count as submitted)
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._completed = 0
        self._failed = 0
        self._overflowed = 0
        self._abandoned = 0

    def submit(self, awaitable: Awaitable[Any], kind: str) -> bool:
        """Queue ``awaitable`` (a listener's result for a ``kind`` notification). False when no task runs the
        queue: then the caller awaits it itself."""
        if not self._running:
            return False
        if len(self._backlog) >= self._limit:
            _discard(awaitable)
            self._overflowed += 1
            if self._overflowed == 1:
                logger.warning(
                    "More than %d async notification listener calls are waiting; dropping new ones (counted in "
                    "stats().listeners.overflowed). A listener is slower than the notifications it receives.",
                    self._limit,
                )
            return True
        self._backlog.append((awaitable, kind))
        self._submitted += 1
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Await queued listener coroutines in order until cancelled; then abandon the rest."""
        self._running = True
        self._worker = anyio.get_current_task().id
        task_status.started()
        backlog = self._backlog
        try:
            while True:
                if not backlog:
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
                    self._wakeup = None
                    continue
                awaitable, kind = backlog[0]
                try:
                    await awaitable
                except Exception:
                    self._failed += 1
                    logger.exception('Unknown problem when sending "%s" type notification.', kind)
                backlog.popleft()
                self._completed += 1
                self._finish(1)
        finally:
            self._running = False
            self._worker = None
            self._abandon()

    async def join(self) -> None:
        """Return once every coroutine queued before the call has run (or was abandoned)."""
        target = self._submitted
        if self._finished >= target or self.in_worker():
            return  # (a listener that flushes would otherwise wait for itself)
        event = anyio.Event()
        self._waiters.append((target, event))
        await event.wait()

    def in_worker(self) -> bool:
        """Whether the calling task is the one running the queue (that is, an async listener)."""
        return self._worker is not None and anyio.get_current_task().id == self._worker

    def stop(self) -> None:
        """Take no more coroutines (callers await them inline from now on); queued ones still run."""
        self._running = False

    def forget(self) -> None:
        """In a forked child: the task that ran the queue is in the parent; the backlog is its copy."""
        self._running = False
        self._backlog.clear()
        self._wakeup = None
        self._waiters = []

    def stats(self) -> ListenerStats:
        return ListenerStats(
            queued=len(self._backlog),
            completed=self._completed,
            failed=self._failed,
            overflowed=self._overflowed,
            abandoned=self._abandoned,
        )

    def _abandon(self) -> None:
        count = len(self._backlog)
        while self._backlog:
            awaitable, _ = self._backlog.popleft()
            _discard(awaitable)
        if count:
            self._abandoned += count
            logger.warning("%d async notification listener call(s) did not run before the client stopped.", count)
            self._finish(count)

    def _finish(self, count: int) -> None:
        self._finished += count
        if self._waiters:
            ready = [w for w in self._waiters if w[0] <= self._finished]
            if ready:
                self._waiters = [w for w in self._waiters if w[0] > self._finished]
                for _, event in ready:
                    event.set()
