"""What the OpenFeature provider and the metrics read from a client that the client does not publish (yet).

Every look at a private attribute of :class:`~optimizely_async.AsyncOptimizely` made by
:mod:`optimizely_async.openfeature` and :mod:`optimizely_async.metrics` goes through this module, so that when
the client publishes these things (its polling state in ``client.stats()``, a way to run a task in its task
group) only the functions below change. Each one degrades to "not available" instead of raising when the
client's insides have moved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from ._ctrl_c import start_background
from ._logging import sdk_logger

if TYPE_CHECKING:
    from anyio.lowlevel import EventLoopToken

    from .config.sources import PollingStats
    from .events.dispatcher import Dispatcher

__all__ = ["event_loop", "loop_client", "on_sync_loop", "polling_stats", "refuse", "spawn", "wrap_dispatcher"]

_log = sdk_logger()


def polling_stats(client: object) -> PollingStats | None:
    """The datafile poller's counters (fetches, failures, consecutive failures, revision); None for a client
    without ``sdk_key`` (nothing polls)."""
    source = getattr(client, "_source", None)
    stats = getattr(source, "stats", None)
    return stats if stats is not None and hasattr(stats, "consecutive_failures") else None


def spawn(client: object, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> bool:
    """Run ``func(*args)`` in the client's task group (it is cancelled when the client stops).

    Call it on the client's event loop thread. False when the client is not running (not entered yet, or
    closed): nothing was started.
    """
    task_group = getattr(client, "_task_group", None)
    if task_group is None or getattr(getattr(client, "_state", None), "value", None) != "open":
        return False
    start_background(task_group, func, *args)
    return True


def wrap_dispatcher(client: object, wrap: Callable[[Dispatcher], Dispatcher]) -> bool:
    """Put ``wrap(dispatcher)`` between the client's event queue and its dispatcher (to time requests).

    Call it before the client is entered. False (and nothing changed) when the queue has no dispatcher
    where this function expects it.
    """
    queue = getattr(client, "_queue", None)
    inner = getattr(queue, "_dispatcher", None)
    if inner is None or not callable(getattr(inner, "dispatch", None)):
        _log.debug("Event request durations are not measured: the event queue has no dispatcher to wrap.")
        return False
    queue._dispatcher = wrap(inner)  # type: ignore[union-attr]
    return True


def event_loop(client: object) -> EventLoopToken | None:
    """The token of the event loop an ``AsyncOptimizely`` was entered on (None before; after it closed, the
    ended loop's token: using it raises ``anyio.RunFinishedError``)."""
    return getattr(client, "_loop_token", None)


def loop_client(sync_client: object) -> object | None:
    """The ``AsyncOptimizely`` a ``SyncOptimizely`` runs on its loop thread (this process's, after a fork)."""
    live = getattr(sync_client, "_live", None)
    return live() if callable(live) else None


def on_sync_loop(sync_client: object, func: Callable[[], object], timeout: float) -> bool:
    """Run ``func()`` on a ``SyncOptimizely``'s loop thread (starting it if needed) and wait for it; at once
    when called on that thread. False when that thread could not run it (closed, stopped, too slow)."""
    inner = loop_client(sync_client)
    if inner is not None and getattr(inner, "loop_thread", None) == threading.get_ident():
        func()
        return True
    call = getattr(getattr(sync_client, "_runner", None), "call", None)
    if call is None:
        return False

    async def run() -> None:
        func()
        await anyio.lowlevel.checkpoint()  # a task func() started takes its first step before the caller goes on

    try:
        call(run, timeout)  # LoopThread.call runs it in the loop thread's own context, whatever this thread runs
    except Exception:
        _log.debug("Could not run %r on the SyncOptimizely's loop thread.", func, exc_info=True)
        return False
    return True


def refuse(sync_client: object, reason: str) -> None:
    """Count an event a ``SyncOptimizely`` could not take as dropped for ``reason`` (in its stats and report)."""
    count = getattr(getattr(sync_client, "_runner", None), "refuse", None)
    if callable(count):
        count(reason)
