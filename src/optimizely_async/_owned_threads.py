"""Threads the SDK owns (SyncOptimizely's loop thread), and what an exit raised by the user's code means there.

The SDK calls the user's code in a few places (notification listeners, a custom dispatcher, ``on_drop``) and
isolates each call with ``except user_code_errors():`` -- an ``Exception`` is logged and never reaches the SDK's
own work. On a thread the SDK owns, ``SystemExit`` and ``KeyboardInterrupt`` raised by the user's code it runs
in the background (a LOG_EVENT listener, the dispatcher, ``on_drop``) are isolated the same way: there they
could only end that thread (Python exits the process from the main thread alone, and delivers Ctrl-C to the
main thread alone), and event delivery with it. Everywhere else they pass through untouched: on the user's
own threads and event loops, and in work that a calling thread waits for (:func:`for_caller`: a decision run
on the loop thread, with its user profile service and DECISION listeners), they mean what the user meant.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["for_caller", "owned_thread", "user_code_errors"]

_owned: set[int] = set()
_for_caller: ContextVar[bool] = ContextVar("optimizely_async_for_caller", default=False)
_ON_OWNED: tuple[type[BaseException], ...] = (Exception, SystemExit, KeyboardInterrupt)

if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's other threads
    os.register_at_fork(after_in_child=_owned.clear)


@contextmanager
def owned_thread() -> Iterator[None]:
    """Mark the calling thread as the SDK's own for the duration of the block."""
    ident = threading.get_ident()
    _owned.add(ident)
    try:
        yield
    finally:
        _owned.discard(ident)


@contextmanager
def for_caller() -> Iterator[None]:
    """Mark the work of the block (in this task) as done for a calling thread that waits for it."""
    token = _for_caller.set(True)
    try:
        yield
    finally:
        _for_caller.reset(token)


def user_code_errors() -> type[BaseException] | tuple[type[BaseException], ...]:
    """The exceptions of the user's code to log and absorb here (see the module docstring)."""
    return _ON_OWNED if threading.get_ident() in _owned and not _for_caller.get() else Exception
