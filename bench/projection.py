"""The OptimizelyConfig projection on the generated ~1 MB datafile (``tests/bigdatafile.py``): what building it
costs the event loop, how soon after ready it is complete, and what ``get_optimizely_config()`` costs.

Run from the repository root: ``python bench/projection.py`` (about 20 s; ``--rounds N``).

1. **Steps.** The build run one step at a time, each step timed in CPU time (``time.thread_time``) and in wall
   time, with the interpreter's GC pauses (``gc.callbacks``) left out; the official SDK's eager build of its
   projection (one go, inside its constructor and at every update) for comparison.
2. **On the loop.** A client entered with the datafile builds the projection in the background. A task that
   does nothing but checkpoint measures the longest time it waits for its next turn while that build runs
   (wall, GC pauses in it shown apart; and the thread's CPU time, GC left out: the SDK's own longest hold),
   and when the projection is complete, counted from the entry.
3. **First call.** ``get_optimizely_config()`` right after entry (it runs the steps the background build has
   not run yet) and once the background build is over.

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


async def on_the_loop(text: str, pauses: GcPauses) -> dict[str, float]:
    out: dict[str, float] = {}
    async with AsyncOptimizely(datafile=text, event_dispatcher=NullSink()) as client:
        entered = time.perf_counter()
        assert client.config is not None
        build = client._projection_for(client.config)  # the one its background task runs
        longest = longest_gc = longest_cpu = 0.0
        last, last_cpu = time.perf_counter(), time.thread_time()
        pauses.reset()
        while not build.done:
            await anyio.lowlevel.checkpoint()
            now, now_cpu = time.perf_counter(), time.thread_time()
            if now - last > longest:
                longest, longest_gc = now - last, pauses.wall
            longest_cpu = max(longest_cpu, now_cpu - last_cpu - pauses.cpu)
            last, last_cpu = now, now_cpu
            pauses.reset()
        out["complete_after"] = time.perf_counter() - entered
        out["hold"], out["hold_gc"], out["hold_cpu"] = longest, longest_gc, longest_cpu
        cpu, wall = time.thread_time(), time.perf_counter()
        assert client.get_optimizely_config() is not None
        out["call_built_cpu"], out["call_built_wall"] = time.thread_time() - cpu, time.perf_counter() - wall
    async with AsyncOptimizely(datafile=text, event_dispatcher=NullSink()) as client:
        assert client.config is not None
        build = client._projection_for(client.config)
        out["steps_before_call"] = build.steps_run
        cpu, wall = time.thread_time(), time.perf_counter()
        assert client.get_optimizely_config() is not None
        out["call_first_cpu"], out["call_first_wall"] = time.thread_time() - cpu, time.perf_counter() - wall
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
    print("on the loop, a client entered with the datafile (idle loop):")
    show("projection complete after entry", samples["complete_after"])
    show("another task's longest wait for its turn meanwhile, wall", samples["hold"])
    show("  of which GC pauses", samples["hold_gc"])
    show("the SDK's longest hold between two turns, CPU, GC left out", samples["hold_cpu"])
    print("get_optimizely_config():")
    show("right after entry, CPU (runs the steps not run yet)", samples["call_first_cpu"])
    show("right after entry, wall", samples["call_first_wall"])
    show("steps the background had run by then", [float(v) for v in samples["steps_before_call"]], 1, "{:.0f}")
    show("once the background build is over, CPU", samples["call_built_cpu"], 1e6, "{:.1f} us")
    show("once the background build is over, wall", samples["call_built_wall"], 1e6, "{:.1f} us")


if __name__ == "__main__":
    main()
