"""Run one of the async client's decision coroutines to completion in the calling thread, without a loop.

The decision methods of :class:`~optimizely_async.client.AsyncOptimizely` are coroutines only so that they
*may* wait (an ``async`` user profile service or listener, a full queue); on the path a
:class:`~optimizely_async.sync.SyncOptimizely` gives them they never do: its user profile service and listeners
are plain functions, and its client hands events to the loop thread instead of waiting for room. Such a
coroutine finishes on its first step, which is what :func:`drive` takes: the same code, the same decisions,
logs and notifications as the async client, at the cost of one coroutine step and no thread round trip.

Should a coroutine ever wait after all, it is closed (its ``finally`` blocks run), the problem is logged and
the method's failure value returned: a calling thread has no loop to wait on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._logging import sdk_logger

__all__ = ["drive"]

_log = sdk_logger()

_T = TypeVar("_T")


def drive(coroutine: Coroutine[Any, Any, _T], failure: _T, method: str) -> _T:
    """The result of ``coroutine`` when it completes without waiting; otherwise ``failure`` (logged)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception:  # the client's methods catch their own errors; this is a last line of defence
        _log.exception("Unexpected error in %s().", method)
        return failure
    with contextlib.suppress(Exception):
        coroutine.close()
    _log.error(
        "%s() had to wait for something (an async user profile service or listener?); SyncOptimizely decides "
        "in the calling thread and cannot wait. Returning %r.",
        method,
        failure,
    )
    return failure
