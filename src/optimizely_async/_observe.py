"""What the OpenFeature provider and the metrics read from a client that the client does not publish (yet).

Every look at a private attribute of :class:`~optimizely_async.AsyncOptimizely` made by
:mod:`optimizely_async.openfeature` and :mod:`optimizely_async.metrics` goes through this module, so that when
the client publishes these things (its polling state in ``client.stats()``, a way to run a task in its task
group) only the functions below change. Each one degrades to "not available" instead of raising when the
client's insides have moved.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._logging import sdk_logger

if TYPE_CHECKING:
    from .config.sources import PollingStats
    from .events.dispatcher import Dispatcher

__all__ = ["polling_stats", "spawn", "wrap_dispatcher"]

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
    task_group.start_soon(func, *args)
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
