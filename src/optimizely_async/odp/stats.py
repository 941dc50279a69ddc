"""``client.stats()``: the event queue's counters, with the ODP event queue's under ``odp``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..events.queue import QueueStats
from .events import OdpEventStats

__all__ = ["ClientStats", "with_odp"]

_EMPTY = OdpEventStats(0, 0, 0, 0, {}, 0, 0)


@dataclass(frozen=True, eq=False)
class ClientStats(QueueStats):
    """:class:`QueueStats` of the conversion/impression queue, plus the ODP event queue's counters.

    It equals a plain :class:`QueueStats` with the same queue counters (so comparisons written before ODP
    counters existed still hold), and another ``ClientStats`` when the ODP counters are equal too.
    """

    odp: OdpEventStats = _EMPTY

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueueStats):
            return NotImplemented
        if _queue_fields(self) != _queue_fields(other):
            return False
        return not isinstance(other, ClientStats) or self.odp == other.odp

    __hash__ = None  # type: ignore[assignment]  # the counters hold a dict: unhashable, as QueueStats


def _queue_fields(stats: QueueStats) -> tuple[object, ...]:
    return tuple(getattr(stats, field.name) for field in dataclasses.fields(QueueStats))


def with_odp(stats: QueueStats, odp: OdpEventStats) -> ClientStats:
    """``stats`` (whatever its fields) as a :class:`ClientStats` carrying ``odp``."""
    fields = {field.name: getattr(stats, field.name) for field in dataclasses.fields(QueueStats)}
    return ClientStats(**fields, odp=odp)
