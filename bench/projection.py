"""The OptimizelyConfig projection on the generated ~1 MB datafile (``tests/bigdatafile.py``): what building it
costs, what it costs the event loop while a client is entered, and what ``get_optimizely_config()`` costs.

Run from the repository root: ``python bench/projection.py`` (about 20 s; ``--rounds N``).

1. **Steps.** The build run one step at a time, each step timed in CPU time (``time.thread_time``) and in wall
   time, with the interpreter's GC pauses (``gc.callbacks``) left out; the official SDK's eager build of its
   projection (one go, inside its constructor and at every update) for comparison.
2. **Entry.** A client with the datafile builds the projection while it is entered, in steps on the loop,
   before ``async with`` returns. Timed: construction, entry, and the two together (construction to entered).
   A task that does nothing but checkpoint runs meanwhile and measures the longest time it waits for its next
   turn during entry (wall, GC pauses in it shown apart; and the thread's CPU time, GC left out: the SDK's own
   longest hold).
3. **Calls.** ``get_optimizely_config()`` right after entry (the projection is built: it returns it) and on a
   client that was never started (it builds the whole projection at once, synchronously).

Every round uses a fresh config; medians over rounds, with the range. RSS: ``bench/startup.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import anyio
import anyio.lowlevel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bigdatafile import build_datafile  # noqa: E402
from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest  # noqa: E402
from optimizely_async.config.optimizely_config import ProjectionBuild  # noqa: E402
from optimizely_async.config.project_config import parse_config  # noqa: E402


class NullSink:
    async def dispatch(self, request: EventRequest) -> DispatchResult:
        return DispatchResult(delivered=True, status=200)


class GcPauses:
    """The CPU and wall time the interpreter's collections took since the last ``reset()``."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self._start = (0.0, 0.0)
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.cpu = self.wall = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = (time.thread_time(), time.perf_counter())
        else:
            self.cpu += time.thread_time() - self._start[0]
            self.wall += time.perf_counter() - self._start[1]


def steps(text: str, pauses: GcPauses) -> dict[str, float]:
    """The build one step at a time: its longest step (CPU, wall; GC left out), steps and total CPU."""
    build = ProjectionBuild(parse_config(text))
    longest_cpu = longest_wall = total = 0.0
    result = None
    while result is None:
        pauses.reset()
        cpu, wall = time.thread_time(), time.perf_counter()
        result = build._step()
        cpu, wall = time.thread_time() - cpu - pauses.cpu, time.perf_counter() - wall - pauses.wall
        longest_cpu, longest_wall, total = max(longest_cpu, cpu), max(longest_wall, wall), total + cpu
    return {"step_cpu": longest_cpu, "step_wall": longest_wall, "steps": build.steps_run, "total_cpu": total}


def official_build(text: str) -> float:
    """CPU time of the official SDK's projection build (what its constructor and each update run in one go)."""
    from optimizely import optimizely
    from optimizely.optimizely_config import OptimizelyConfigService

    client = optimizely.Optimizely(datafile=text)
    config = client.config_manager.get_config()
    start = time.thread_time()
    OptimizelyConfigService(config, client.logger).get_config()
    elapsed = time.thread_time() - start
    client.close()
    return elapsed


class Turns:
    """A task that only checkpoints, noting for every wait between two of its turns the wall time, the GC
    pauses in it and the thread's CPU time without them."""

    def __init__(self, pauses: GcPauses) -> None:
        self.pauses = pauses
        self.longest = self.longest_gc = self.longest_cpu = 0.0
        self.turns = 0
        self._last = (0.0, 0.0)

    def restart(self) -> None:
        """Count the next wait from now (what ran before is not measured)."""
        self.pauses.reset()
        self._last = (time.perf_counter(), time.thread_time())

    def mark(self) -> None:
        now, now_cpu = time.perf_counter(), time.thread_time()
        if self.turns:
            wall, cpu = now - self._last[0], now_cpu - self._last[1] - self.pauses.cpu
            if wall > self.longest:
                self.longest, self.longest_gc = wall, self.pauses.wall
            self.longest_cpu = max(self.longest_cpu, cpu)
        self.turns += 1
        self.pauses.reset()
        self._last = (now, time.thread_time())

    async def run(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            self.mark()
            await anyio.lowlevel.checkpoint()


async def on_the_loop(text: str, pauses: GcPauses) -> dict[str, float]:
    out: dict[str, float] = {}
    turns = Turns(pauses)
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(turns.run, stop)
        await anyio.lowlevel.checkpoint()
        start = time.perf_counter()
        client = AsyncOptimizely(datafile=text, event_dispatcher=NullSink())
        constructed = time.perf_counter()
        turns.restart()  # the construction (one go, before any await) is not the entry's hold
        async with client:
            turns.mark()  # the last stretch of the entry, up to its return
            entered = time.perf_counter()
            stop.set()
            assert client.config is not None
            build = client._projection_for(client.config)
            out["done_at_entry"] = float(build.done)
            cpu, wall = time.thread_time(), time.perf_counter()
            assert client.get_optimizely_config() is not None
            out["call_entered_cpu"], out["call_entered_wall"] = time.thread_time() - cpu, time.perf_counter() - wall
    out["construct"], out["entry"], out["ready"] = constructed - start, entered - constructed, entered - start
    out["hold"], out["hold_gc"], out["hold_cpu"] = turns.longest, turns.longest_gc, turns.longest_cpu
    out["turns"] = turns.turns
    client = AsyncOptimizely(datafile=text, event_dispatcher=NullSink())
    cpu, wall = time.thread_time(), time.perf_counter()
    assert client.get_optimizely_config() is not None
    out["call_unstarted_cpu"], out["call_unstarted_wall"] = time.thread_time() - cpu, time.perf_counter() - wall
    return out


def show(label: str, values: list[float], unit: float = 1000, fmt: str = "{:.2f} ms") -> None:
    median, low, high = statistics.median(values), min(values), max(values)
    text = fmt.format(median * unit)
    print(f"  {label:<62} {text:>10}  (range {low * unit:.2f}-{high * unit:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    logging.getLogger("optimizely_async").setLevel(logging.CRITICAL)
    logging.getLogger("optimizely").setLevel(logging.CRITICAL)
    text = json.dumps(build_datafile("1"))
    pauses = GcPauses()
    samples: dict[str, list[float]] = {}
    for index in range(args.rounds):
        parts = [lambda: steps(text, pauses), lambda: anyio.run(on_the_loop, text, pauses)]
        for part in parts if index % 2 else parts[::-1]:
            for key, value in part().items():
                samples.setdefault(key, []).append(value)
        samples.setdefault("official", []).append(official_build(text))
        gc.collect()
    print(f"datafile {len(text) / 1e6:.2f} MB, {args.rounds} rounds; Python {sys.version.split()[0]}")
    print("the build, one step at a time (GC pauses left out):")
    show("steps", [float(v) for v in samples["steps"]], 1, "{:.0f}")
    show("longest step, CPU", samples["step_cpu"])
    show("longest step, wall", samples["step_wall"])
    show("all steps, CPU", samples["total_cpu"])
    show("official SDK: its eager build in one go, CPU", samples["official"])
    print("entry: a client with the datafile, entered on an idle loop (the build runs in it):")
    show("construction", samples["construct"])
    show("entry (async with, up to its body)", samples["entry"])
    show("construction to entered", samples["ready"])
    show("projection complete when entry returns (1 = yes)", samples["done_at_entry"], 1, "{:.0f}")
    show("another task's turns during entry", samples["turns"], 1, "{:.0f}")
    show("another task's longest wait for its turn during entry, wall", samples["hold"])
    show("  of which GC pauses", samples["hold_gc"])
    show("the SDK's longest hold between two turns, CPU, GC left out", samples["hold_cpu"])
    print("get_optimizely_config():")
    show("right after entry, CPU (returns the built projection)", samples["call_entered_cpu"], 1e6, "{:.1f} us")
    show("right after entry, wall", samples["call_entered_wall"], 1e6, "{:.1f} us")
    show("on a client never started, CPU (the whole build at once)", samples["call_unstarted_cpu"])


if __name__ == "__main__":
    main()
