"""Lifecycle helpers of :class:`~optimizely_async.AsyncOptimizely`: the detached runner task of ``start()``
on asyncio, and the fork watch.

``async with client`` and ``start(task_group)`` run the client's background work in a task group the caller
owns. ``start()`` without one needs a task that outlives the caller's: on asyncio that is a task the client
creates and keeps (``close()`` ends it and waits for it); trio has no task without a nursery, so there
``start()`` refuses with a :class:`ClientStateError` that names the two ways that work.

A client whose background work runs in one process cannot send from a fork of it: the loop, its tasks and the
HTTP connections stay in the parent. ``os.register_at_fork`` tells every started client in the child that it
is a copy, so it can refuse clearly instead of queueing events nobody sends.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskStatus

from ._ctrl_c import keep_ctrl_c_out
from .errors import ClientStateError

if TYPE_CHECKING:
    import asyncio

__all__ = ["FORKED_MESSAGE", "Started", "keep_ctrl_c_out", "spawn_runner", "watch_forks"]

FORKED_MESSAGE = (
    "This AsyncOptimizely client was started in process {parent} and this process ({child}) is a fork of it: "
    "its background work (event delivery, polling, async listeners) stays in the parent. Create a new "
    "AsyncOptimizely in this process after the fork (or use SyncOptimizely, which restarts in each child)."
)

TRIO_START_MESSAGE = (
    "start() without a task group works on asyncio only. On trio, use `async with client:` or "
    "`await client.start(nursery_or_task_group)` and `await client.close()` before that group ends."
)


class Started(TaskStatus[None]):
    """A ``task_status`` for a runner that no task group started: ``started()`` sets an event."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def started(self, value: None = None) -> None:
        self.event.set()


def spawn_runner(run: Callable[[Started], Coroutine[Any, Any, None]]) -> tuple[asyncio.Task[None], Started]:
    """Create the asyncio task that runs ``run(status)``; the caller keeps the task and awaits its end.

    Raises :class:`ClientStateError` when the running loop is not asyncio's (trio)."""
    if "asyncio" not in sys.modules:  # no asyncio loop can be running: importing asyncio would only cost time
        raise ClientStateError(TRIO_START_MESSAGE)
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ClientStateError(TRIO_START_MESSAGE) from None
    status = Started()
    task = loop.create_task(run(status), name="optimizely_async background work")
    task.add_done_callback(lambda _: status.event.set())  # wakes start() if the runner ended before starting
    return task, status


class _Forkable(Protocol):
    def _forked(self, parent_pid: int) -> None: ...


_started: weakref.WeakSet[_Forkable] = weakref.WeakSet()
_parent_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _parent_pid
    parent, _parent_pid = _parent_pid, os.getpid()
    clients = list(_started)
    _started.clear()
    for client in clients:
        client._forked(parent)


def _before_fork() -> None:
    global _parent_pid
    _parent_pid = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def watch_forks(client: _Forkable, started: bool) -> None:
    """Have ``client`` told (``client._forked(parent_pid)``) in a child forked while it is started."""
    if started:
        _started.add(client)
    else:
        _started.discard(client)
