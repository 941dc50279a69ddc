"""Threads the SDK owns (SyncOptimizely's loop thread), and what an exit raised by the user's code means there.

The SDK calls the user's code in a few places (notification listeners, a custom dispatcher, ``on_drop``) and
isolates each call with ``except user_code_errors():`` -- an ``Exception`` is logged and never reaches the SDK's
own work. On a thread the SDK owns, ``SystemExit`` and ``KeyboardInterrupt`` are isolated the same way: raised
there they could only end that thread (Python exits the process from the main thread alone, and delivers
Ctrl-C to the main thread alone), and event delivery with it. Everywhere else they pass through untouched: on
the user's own threads and event loops they mean what the user meant.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["owned_thread", "user_code_errors"]

_owned: set[int] = set()
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


def user_code_errors() -> type[BaseException] | tuple[type[BaseException], ...]:
    """The exceptions of the user's code to log and absorb on the calling thread (see the module docstring)."""
    return _ON_OWNED if threading.get_ident() in _owned else Exception
