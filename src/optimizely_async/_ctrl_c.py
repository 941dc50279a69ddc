"""Ctrl-C and the SDK's background tasks on trio.

trio raises the ``KeyboardInterrupt`` of a Ctrl-C in whatever task happens to run Python code at that moment,
unless that code is *KI-protected*: then trio raises it in the main task at its next checkpoint instead. Raised
inside the client's background work it would fail the task group it runs in and cancel the drain of queued
events on the way out, so every task the SDK starts runs protected: the parts of the client's background work
(marked with :func:`keep_ctrl_c_out`) and the tasks those parts start in task groups of their own (event
delivery, async ``on_drop`` callbacks, the OpenFeature provider's work), started with :func:`start_background`.

The user's code that such a task calls (a custom dispatcher, a listener, ``on_drop``) is covered too: a Ctrl-C
that comes while it runs is not lost, it is raised in the main task, which then leaves ``async with client:``
and drains the queue as for a Ctrl-C at any other moment. The user's own tasks are never protected.

Nothing to do on asyncio, whose ``run()`` turns Ctrl-C into a cancellation of the main task. trio is never
imported here: when it is not loaded, no trio loop can be running.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import TaskGroup

__all__ = ["keep_ctrl_c_out", "start_background"]


def keep_ctrl_c_out(*functions: Callable[..., Any]) -> None:
    """On trio, have a Ctrl-C that arrives while one of ``functions`` (or what it calls) runs raised in the main
    task at its next checkpoint instead, as trio does for its own machinery. Uses trio's public
    ``enable_ki_protection`` (which marks the functions' code; calling it again is harmless)."""
    trio = sys.modules.get("trio")
    if trio is not None:
        for function in functions:
            trio.lowlevel.enable_ki_protection(function)


async def _background(func: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """The root of a task started by :func:`start_background` (KI-protected on trio)."""
    await func(*args)


def start_background(task_group: TaskGroup, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """``task_group.start_soon(func, *args)`` for a task of the SDK's own: on trio it runs KI-protected (see the
    module docstring), whatever ``func`` is."""
    keep_ctrl_c_out(_background)
    task_group.start_soon(_background, func, *args)
