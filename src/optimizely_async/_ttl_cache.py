"""A least-recently-used cache whose entries expire a fixed time after they were saved.

Shared by the CMAB prediction cache and the ODP segments cache, which the official SDK builds on one such
cache: a lookup moves an entry to the most-recently-used end but does not refresh its age; a stale entry is
removed when it is looked up and counts as a miss; when full, the least recently used entry goes. A capacity
of 0 caches nothing; a ``ttl`` of 0 means entries never expire. Not thread-safe: it lives on one event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TtlLruCache"]

K = TypeVar("K")
V = TypeVar("V")


class TtlLruCache(Generic[K, V]):
    """``capacity`` entries at most, each valid for ``ttl`` seconds after its save (``clock`` gives seconds)."""

    __slots__ = ("_clock", "_data", "capacity", "ttl")

    def __init__(self, capacity: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def lookup(self, key: K) -> V | None:
        """The value saved under ``key`` if it is still fresh (and mark it most recently used), else None."""
        entry = self._data.get(key)
        if entry is None:
            return None
        value, saved = entry
        if self.ttl > 0 and self._clock() - saved >= self.ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def save(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` (its age starts now), evicting the least recently used when full."""
        if self.capacity <= 0:
            return
        data = self._data
        data.pop(key, None)
        data[key] = (value, self._clock())
        while len(data) > self.capacity:
            data.popitem(last=False)

    def remove(self, key: K) -> None:
        self._data.pop(key, None)

    def reset(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
