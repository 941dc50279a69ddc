"""Alternating rounds for benchmarks that compare several variants against one baseline in one process.

Each round runs every variant once, starting with a different one each time. A variant's ratio to the
baseline is taken within each round (the two ran seconds apart, on the same machine state) and the median of
those ratios is reported: on a shared machine whose speed drifts, that is steadier than a ratio of two bests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Variant = tuple[str, Callable[[], Any]]  # a round: returns its operation count (or an awaitable of it)


async def alternate(variants: Sequence[Variant], rounds: int) -> dict[str, list[float]]:
    """Seconds per operation of every variant, one sample per round."""
    samples: dict[str, list[float]] = {name: [] for name, _ in variants}
    order = list(variants)
    for index in range(rounds):
        shift = index % len(order)
        for name, fn in order[shift:] + order[:shift]:
            start = time.perf_counter()
            result = fn()
            count = await result if isinstance(result, Awaitable) else result
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def ratio(samples: dict[str, list[float]], name: str, base: str) -> float:
    """The median, over rounds, of ``name``'s time divided by ``base``'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[base], strict=True))
