"""Fork and exit handling for every live :class:`~optimizely_async.sync.SyncOptimizely` of the process.

``gunicorn --preload``, Celery's prefork pool and ``multiprocessing`` create a client in a parent process and
``fork()``. A child inherits a copy of the client but not its loop thread, and its copy of the event queue
holds events the parent will send. So, in the child (``os.register_at_fork(after_in_child=...)``), each client
is marked *forked*: its first call there builds a fresh async client (empty queue, its own HTTP connections,
the parent's current datafile, listeners and forced variations) and a fresh loop thread, which also resumes
polling. The inherited objects are kept referenced and never touched again: closing the inherited event loop
would unregister file descriptors from an epoll set that the parent still uses.

Around the fork each client's lifecycle lock is held (``before``) and released in the parent, replaced in
the child, so a child never inherits a client halfway through starting or closing.

At interpreter exit, and at the exit of a ``multiprocessing`` / billiard child (which skips ``atexit``), every
client still open is closed, so queued events are delivered within its ``close_timeout``.
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from typing import Protocol

from ._logging import sdk_logger

__all__ = ["abandon", "ensure_exit_hooks", "watch"]

_log = sdk_logger()


class ForkAware(Protocol):
    def _fork_prepare(self) -> None: ...

    def _fork_parent(self) -> None: ...

    def _fork_child(self) -> None: ...

    def _close_at_exit(self) -> None: ...


_clients: weakref.WeakSet[ForkAware] = weakref.WeakSet()
#: Objects inherited by a forked child that must never be finalised there (see the module docstring).
_abandoned: list[object] = []
_exit_hooks_pid: int | None = None


def watch(client: ForkAware) -> None:
    """Handle ``client`` at every fork and at exit, while it is alive."""
    _clients.add(client)
    ensure_exit_hooks()


def abandon(*objects: object) -> None:
    """Keep inherited objects alive for the life of this (child) process."""
    _abandoned.extend(objects)


def ensure_exit_hooks() -> None:
    """Close the open clients when a ``multiprocessing`` or billiard (Celery) process exits: those end with
    ``os._exit()`` after running their ``multiprocessing.util`` finalizers, not ``atexit``."""
    global _exit_hooks_pid
    pid = os.getpid()
    if _exit_hooks_pid == pid:
        return
    _exit_hooks_pid = pid
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _close_all, exitpriority=10)


def _before() -> None:
    for client in list(_clients):
        client._fork_prepare()


def _after_in_parent() -> None:
    for client in list(_clients):
        client._fork_parent()


def _after_in_child() -> None:
    for client in list(_clients):
        client._fork_child()


def _close_all() -> None:
    for client in list(_clients):
        try:
            client._close_at_exit()
        except Exception:
            _log.exception("Could not close a SyncOptimizely client at exit.")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
atexit.register(_close_all)
