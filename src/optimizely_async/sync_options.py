"""The options of ``SyncOptimizely``: those of ``AsyncOptimizely``, less the two that need the caller's loop.

One source, ``AsyncOptimizely.__init__``: ``SyncOptimizely(**options)`` hands its options to the
``AsyncOptimizely`` it runs on its loop thread, which checks their values. Here:

- :func:`check_options` checks their *names* against that signature at construction, so an option the sync
  client cannot use, or a misspelt one, raises ``ConfigurationError`` naming it (not a bare ``TypeError``);
- :func:`sync_signature` is the signature ``inspect.signature(SyncOptimizely)`` and ``help()`` show: the
  async one without the excluded options, with their defaults;
- :class:`SyncOptions` types the options for mypy and editors (``**options: Unpack[SyncOptions]``). It is the
  one list written out by hand; mypy checks each of its types against the async constructor where
  ``LoopClient`` forwards them, and tests/test_sync_options.py checks that it names exactly the async options
  less :data:`NOT_SYNC`, annotated alike.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypedDict

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .decide import DecideOption
    from .decision.user_profile import UserProfileService
    from .events.dispatcher import Dispatcher

__all__ = ["NOT_SYNC", "SyncOptions", "check_options", "sync_signature"]

#: ``AsyncOptimizely`` options that ``SyncOptimizely`` does not take, and why.
NOT_SYNC: Final[Mapping[str, str]] = {
    "http_client": "an httpx.AsyncClient belongs to one event loop; the client's loop thread makes its own",
    "enqueue_timeout": (
        "a calling thread never waits for room: when the queue is full an event is dropped at once and counted"
    ),
}


class SyncOptions(TypedDict, total=False):
    """The keyword options of ``SyncOptimizely``: ``AsyncOptimizely``'s (see its reference for each one's
    meaning and default) except ``http_client`` and ``enqueue_timeout``.

    ``user_profile_service`` and listeners must be plain functions and methods there; ``on_drop`` and a custom
    ``event_dispatcher`` run on the loop thread and may be ``async``.
    """

    datafile_access_token: str | None
    datafile_url_template: str | None
    update_interval: float
    event_endpoint: str | None
    batch_size: int
    flush_interval: float
    max_queue_size: int
    max_concurrent_requests: int
    close_timeout: float
    event_dispatcher: Dispatcher | None
    user_profile_service: UserProfileService | None
    default_decide_options: Iterable[DecideOption | str]
    on_drop: Callable[..., Any] | None
    datafile_request_timeout: float
    logger: logging.Logger | logging.LoggerAdapter[Any] | None
    cmab_prediction_endpoint: str | None
    cmab_cache_size: int
    cmab_cache_ttl: float
    cmab_request_timeout: float
    odp_disabled: bool
    segments_cache_size: int
    segments_cache_timeout: float
    odp_segment_request_timeout: float | None
    odp_event_flush_interval: float
    odp_event_request_timeout: float | None


@functools.lru_cache(maxsize=1)
def sync_signature() -> inspect.Signature:
    """``AsyncOptimizely.__init__``'s signature without the options in :data:`NOT_SYNC`."""
    from .client import AsyncOptimizely

    signature = inspect.signature(AsyncOptimizely.__init__)
    return signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in NOT_SYNC])


def _keyword_options() -> list[str]:
    return [p.name for p in sync_signature().parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def check_options(options: Mapping[str, object]) -> None:
    """Raise ``ConfigurationError`` for an option ``SyncOptimizely`` does not take (values are checked by the
    ``AsyncOptimizely`` they are handed to)."""
    known = _keyword_options()
    for name in options:
        if name in NOT_SYNC:
            raise ConfigurationError(f"SyncOptimizely does not take {name}=: {NOT_SYNC[name]}.")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]}=?" if close else " See SyncOptions for the options it takes."
            raise ConfigurationError(f"SyncOptimizely got an unknown option {name}=.{hint}")
