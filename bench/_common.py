"""Shared helpers for the benchmarks: datafile and users, timing (the decide rounds and their clock), a sink
that accepts every event, and the official SDK set up alike."""

from __future__ import annotations

import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import datagen  # noqa: E402
from optimizely_async import DispatchResult, EventRequest  # noqa: E402

logging.getLogger("optimizely_async").setLevel(logging.CRITICAL)


def example_datafile() -> dict[str, Any]:
    """The realistic datafile the package ships for its demo."""
    path = ROOT / "src" / "optimizely_async" / "example_datafile.json"
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def datafiles() -> list[tuple[str, dict[str, Any]]]:
    """What the benchmarks run on: the shipped example, and a generated one full of edge cases."""
    return [("example datafile", example_datafile()), ("generated datafile (edge cases)", bench_datafile())]


def bench_datafile(seed: int = 7) -> dict[str, Any]:
    """A generated datafile with several experiments, a group, flags with feature tests and rollouts."""
    best: dict[str, Any] | None = None
    for s in range(seed, seed + 40):
        df = datagen.generate_datafile(s, version="4")
        if best is None or len(df.get("featureFlags", [])) + len(datagen.all_experiments(df)) > len(
            best.get("featureFlags", [])
        ) + len(datagen.all_experiments(best)):
            best = df
    assert best is not None
    return best


def bench_users(df: dict[str, Any], n: int = 500, seed: int = 11) -> list[tuple[str, dict[str, Any] | None]]:
    return [(u.user_id, u.attributes) for u in datagen.generate_users(random.Random(seed), df, n)]


class NoOpDispatcher:
    """An official-SDK event dispatcher that sends nothing."""

    @staticmethod
    def dispatch_event(event: Any) -> None:
        return None


def official_client(df: dict[str, Any]) -> Any:
    from optimizely import optimizely as official

    return official.Optimizely(datafile=json.dumps(df), event_dispatcher=NoOpDispatcher())


class NullSink:
    """Our ``event_dispatcher=``: accepts every request at once (the runs measure building and queueing events,
    not a network)."""

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        return DispatchResult(delivered=True, status=200)


def official_decide_round(
    contexts: Sequence[Any], flags: Sequence[str], after: Callable[[], object] | None = None
) -> Callable[[], int]:
    """A timed round for the official SDK: every flag decided for every user context, then ``after()`` (e.g.
    waiting for the event thread) inside the round; returns the number of decisions."""

    def round_() -> int:
        for user in contexts:
            for key in flags:
                user.decide(key)
        if after is not None:
            after()
        return len(contexts) * len(flags)

    return round_


def our_decide_round(
    contexts: Sequence[Any], flags: Sequence[str], after: Callable[[], Awaitable[object]] | None = None
) -> Callable[[], Awaitable[int]]:
    """The same round for our client: ``await user.decide(key)`` for every flag and user context, then
    ``await after()`` (e.g. ``client.flush``) inside the round; returns the number of decisions."""

    async def round_() -> int:
        for user in contexts:
            for key in flags:
                await user.decide(key)
        if after is not None:
            await after()
        return len(contexts) * len(flags)

    return round_


def official_settle(client: Any) -> Callable[[], None]:
    """Wait until the official client's event thread has processed everything queued so far."""
    processor = client.event_processor

    def settle() -> None:
        deadline = time.perf_counter() + 60
        while (not processor.event_queue.empty() or processor._current_batch) and time.perf_counter() < deadline:
            time.sleep(0.0005)

    return settle


async def compare(
    official_fn: Callable[[], int],
    our_fn: Callable[[], Awaitable[int]],
    *,
    official_settle: Callable[[], None] | None = None,
    our_settle: Callable[[], Awaitable[object]] | None = None,
    include_settle: bool = False,
    repeat: int = 7,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Best seconds per operation for each SDK: ``(official, ours)``. Each function runs one round and returns
    its operation count.

    Rounds alternate (official, ours, official, ...) so that both sides see the same machine: on a shared
    machine the speed drifts between runs, and a ratio of two far-apart measurements drifts with it.
    The ``settle`` functions wait until the SDK's background event work is done. They run around every
    round, untimed, so no round inherits a backlog and the official event thread never runs during our
    round; with ``include_settle`` the clock runs until they return, so the events' cost is included.
    ``clock`` is wall time by default; ``time.thread_time`` counts only this thread's CPU time (see
    ``bench/cmab.py``: the time other processes hold the CPU is then not counted).
    """
    official_samples: list[float] = []
    our_samples: list[float] = []
    for _ in range(repeat):
        if official_settle is not None:
            official_settle()
        start = clock()
        count = official_fn()
        if include_settle and official_settle is not None:
            official_settle()
        official_samples.append((clock() - start) / count)
        if official_settle is not None:
            official_settle()  # its event thread must not compete with our round for the GIL

        if our_settle is not None:
            await our_settle()
        start = clock()
        count = await our_fn()
        if include_settle and our_settle is not None:
            await our_settle()
        our_samples.append((clock() - start) / count)
    return min(official_samples), min(our_samples)


def row(name: str, official_s: float, ours_s: float, target: float | None = None) -> str:
    ratio = official_s / ours_s
    verdict = "" if target is None else ("  ok" if ratio >= target else f"  below the {target:g}x target")
    return (
        f"{name:<28} official {1 / official_s:>11,.0f} ops/s ({official_s * 1e6:7.2f} us)   "
        f"ours {1 / ours_s:>11,.0f} ops/s ({ours_s * 1e6:7.2f} us)   ratio {ratio:5.1f}x{verdict}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)
