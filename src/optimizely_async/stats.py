"""``client.stats()``: the client's health in one frozen value, cheap enough for a ``/health`` endpoint.

The event counters of ``QueueStats`` (``ClientStats`` is one, so code that reads
``stats().delivered`` keeps working), and next to them the lifecycle state, the datafile revision in use, the
datafile poller's state and the async listeners' counters. A snapshot: it never changes after it is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ._listener_queue import ListenerStats
from .config.sources import PollingStats
from .events.queue import QueueStats
from .odp.events import OdpEventStats

__all__ = ["ClientStats", "ListenerStats", "PollingStats"]


@dataclass(frozen=True)
class ClientStats(QueueStats):
    """What ``AsyncOptimizely.stats()`` returns.

    The event counters are ``QueueStats``'s. ``polling`` is None for a client without
    ``sdk_key``; otherwise its ``last_error`` (secrets redacted), ``consecutive_failures``, ``revision`` and
    ``last_success`` (``time.time()`` of the last fetch answered 200 or 304) tell whether the datafile is
    fresh.
    """

    #: ``"unopened"`` (not started yet), ``"open"`` (background work running), ``"closed"``, or ``"forked"``
    #: (a copy in a forked child: see the lifecycle docs).
    state: str = "unopened"
    #: The revision of the datafile decisions use now; None before one is loaded.
    revision: str | None = None
    #: The datafile poller's counters and last error; None without ``sdk_key``.
    polling: PollingStats | None = None
    #: Async notification listeners run in the background.
    listeners: ListenerStats = field(default_factory=ListenerStats)
    #: The ODP event queue's counters (all 0 without an ODP integration).
    odp: OdpEventStats = field(default_factory=lambda: OdpEventStats(0, 0, 0, 0, {}, 0, 0))

    @property
    def events(self) -> QueueStats:
        """The event counters alone, as a ``QueueStats``."""
        return QueueStats(**{f.name: getattr(self, f.name) for f in fields(QueueStats)})
