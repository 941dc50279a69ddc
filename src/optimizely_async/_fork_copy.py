"""What a forked child does with its copy of work that the parent process holds.

A child made by ``fork()`` (``multiprocessing``, gunicorn ``--preload``, Celery prefork) gets a copy of every
object, including the work a client holds but has not done yet: ``track()`` calls waiting for the first
datafile, ODP events waiting in their queue. That work belongs to the parent, which still does it; a child
that started its copy of the client would do it a second time (duplicate events). So right after the fork,
in the child, every registered holder drops its copy and starts its counters from zero: the child reports
only what it did itself. (The event queue does the same for its events, ``events/queue.py``.)
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["drop_in_children"]


class _Holder(Protocol):
    def _drop_inherited(self) -> None:
        """In a forked child: forget the parent's work and counters (called once, right after the fork)."""


_holders: weakref.WeakSet[_Holder] = weakref.WeakSet()


def drop_in_children(holder: _Holder) -> None:
    """Have ``holder._drop_inherited()`` called in every child forked while ``holder`` is alive."""
    _holders.add(holder)


def _after_fork_in_child() -> None:
    for holder in list(_holders):
        holder._drop_inherited()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
