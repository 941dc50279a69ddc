"""Datafile benchmarks on a generated ~1 MB datafile (``tests/bigdatafile.py``), against the official SDK.

Run from the repository root: ``python bench/datafile.py`` (about 2 minutes; ``--quick`` for fewer rounds).

1. **Load.** From nothing to a client ready to decide: ours is ``AsyncOptimizely(datafile=text)``, entering
   it and ``wait_until_ready()``; the official one is ``Optimizely(datafile=text)`` with its default JSON-schema
   validation. Rounds alternate between the two in one process; medians. Target: at least 4x.
2. **Loop holds while updates apply.** A client polls a local HTTP server (a child process) every 50 ms, and
   every poll brings a new revision. The SDK's own hold of the event loop is timed where it happens: from the
   moment a build (of the config, then of its OptimizelyConfig projection) resumes after a checkpoint to its
   next checkpoint. The interpreter's garbage collections are timed apart (``gc.callbacks``): their length is
   the whole heap's, not the SDK's, and the build's time is shown with them taken out. Idle (nothing else on
   the loop) and under load (four tasks deciding flat out, with a checkpoint after each decision). Also: how
   long one update takes to apply.
3. **RSS over many revisions.** The resident memory of the polling client, sampled while it applies 200
   revisions; and how many objects the cyclic collector tracks that a config (and its projection) keeps.

Nothing here asserts: it prints what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import NullSink  # noqa: E402

from _support.datafiles import empty_datafile  # noqa: E402
from bigdatafile import build_datafile  # noqa: E402
from optimizely_async import AsyncOptimizely  # noqa: E402

_checkpoint = anyio.lowlevel.checkpoint  # the real one: the load tasks use it, and Holds wraps it


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


# --------------------------------------------------------------------------------------------------- 1. load


LOAD = r"""
import asyncio, gc, json, sys, time
which, path = sys.argv[1], sys.argv[2]
text = open(path).read()
tiny = json.dumps({"version": "4", "accountId": "1", "projectId": "2", "revision": "1", "attributes": [],
                   "audiences": [], "events": [], "experiments": [], "groups": [], "featureFlags": [], "rollouts": []})
if which == "ours":
    import logging
    logging.getLogger("optimizely_async").setLevel(logging.CRITICAL)
    from optimizely_async import AsyncOptimizely

    async def load(data):
        async with AsyncOptimizely(datafile=data) as client:
            assert await client.wait_until_ready(5)

    run = lambda data: asyncio.run(load(data))
else:
    from optimizely import optimizely

    def run(data):
        client = optimizely.Optimizely(datafile=data)
        assert client.is_valid
        client.close()
run(tiny)  # first-use costs (validators, caches) are start-up, not load
gc.collect()
start = time.perf_counter()
run(text)
print((time.perf_counter() - start) * 1000)
"""


def bench_load(path: str, rounds: int) -> None:
    """Each measurement in a fresh process (after a warm-up with a tiny datafile), alternating between the SDKs:
    an official client leaves tens of thousands of objects behind after ``close()``, which would slow every
    later garbage collection in a shared process."""
    times: dict[str, list[float]] = {"ours": [], "official": []}
    for i in range(rounds):
        for name in ("ours", "official") if i % 2 else ("official", "ours"):
            out = subprocess.run([sys.executable, "-c", LOAD, name, path], capture_output=True, text=True, check=True)
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    ours_ms, theirs_ms = statistics.median(times["ours"]), statistics.median(times["official"])
    print(f"load (construction + entry + ready; median of {rounds} fresh processes each):")
    print(f"  official Optimizely(datafile) {theirs_ms:7.1f} ms   ours {ours_ms:6.1f} ms   {theirs_ms / ours_ms:.1f}x")


def print_tracked(path: str) -> None:
    """How many objects the cyclic collector tracks that a config of the datafile keeps, then its projection
    (after a tiny datafile's, which builds the validators and classes a first use makes)."""
    from optimizely_async.config.optimizely_config import optimizely_config_for
    from optimizely_async.config.project_config import parse_config

    optimizely_config_for(parse_config(json.dumps(empty_datafile("1"))))
    counts = []
    gc.collect()
    counts.append(len(gc.get_objects()))
    config = parse_config(Path(path).read_text())
    gc.collect()
    counts.append(len(gc.get_objects()))
    projection = optimizely_config_for(config)
    gc.collect()
    counts.append(len(gc.get_objects()))
    kept, shown = counts[1] - counts[0], counts[2] - counts[1]
    print(f"objects the collector tracks: the config keeps {kept:,}, its OptimizelyConfig projection {shown:,}")
    del config, projection


# ------------------------------------------------------------------------------------- 2. holds and 3. RSS

SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
bodies = [open(p, "rb").read() for p in sys.argv[1:]]
count = [0]
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        body = bodies[count[0] % len(bodies)]
        count[0] += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Holds:
    """Times the SDK's stretches between checkpoints (only while a build runs) and the interpreter's GC pauses."""

    def __init__(self) -> None:
        self.building = 0
        self.builder: asyncio.Task[Any] | None = None  # the task whose build runs (the poller's)
        self.resumed = 0.0
        self.resumed_cpu = 0.0
        #: (wall length, the thread's CPU time, GC time inside it), seconds. On a shared machine the wall time
        #: also holds the moments the OS ran something else; the CPU time is the SDK's own work.
        self.stretches: list[tuple[float, float, float]] = []
        self.gc_pauses: list[float] = []
        self._gc_in_stretch = 0.0
        self._gc_start = 0.0

    def install(self) -> None:
        import optimizely_async.config.optimizely_config as oc
        import optimizely_async.config.project_config as pc

        real_checkpoint = _checkpoint

        async def checkpoint() -> None:
            if not self.building or asyncio.current_task() is not self.builder:  # other SDK code: not a build
                await real_checkpoint()
                return
            self._close_stretch()
            await real_checkpoint()
            self._open_stretch()

        def timed(real_run: Any) -> Any:  # a build's driver: its steps run between its checkpoints
            async def run(*args: Any) -> Any:
                self.building += 1
                self.builder = asyncio.current_task()
                self._open_stretch()
                try:
                    return await real_run(*args)
                finally:
                    self._close_stretch()
                    self.building -= 1

            return run

        anyio.lowlevel.checkpoint = checkpoint  # type: ignore[assignment]  # the build's driver imports it per call
        pc.run_in_steps = timed(pc.run_in_steps)
        # Each update also builds its OptimizelyConfig projection (a method: the wrapper gets the build first).
        oc.ProjectionBuild.run_in_steps = timed(oc.ProjectionBuild.run_in_steps)  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)

    def _open_stretch(self) -> None:
        self.resumed, self.resumed_cpu, self._gc_in_stretch = time.perf_counter(), time.thread_time(), 0.0

    def _close_stretch(self) -> None:
        wall, cpu = time.perf_counter() - self.resumed, time.thread_time() - self.resumed_cpu
        self.stretches.append((wall, cpu, self._gc_in_stretch))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_start
            self.gc_pauses.append(pause)
            if self.building:
                self._gc_in_stretch += pause

    def reset(self) -> None:
        self.stretches.clear()
        self.gc_pauses.clear()


async def run_updates(port: int, holds: Holds, *, updates: int, load: bool, rss_every: int = 0) -> dict[str, Any]:
    applied: list[float] = []
    rss: list[tuple[int, float]] = []
    client = AsyncOptimizely(
        sdk_key="BenchSdkKey",
        datafile_url_template=f"http://127.0.0.1:{port}/{{sdk_key}}.json",
        update_interval=0.05,
        event_dispatcher=NullSink(),
    )
    flags: list[str] = []

    async def decider(stop: anyio.Event) -> None:
        user = client.create_user_context("load-user", {"country": "US", "age": 30})
        assert user is not None
        i = 0
        while not stop.is_set():
            await user.decide(flags[i % len(flags)])
            i += 1
            await _checkpoint()

    async with client:
        assert await client.wait_until_ready(30)
        flags.extend(client.config.flags_by_key if client.config else ())
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if load:
                for _ in range(4):
                    tg.start_soon(decider, stop)
            holds.reset()
            last = client.config
            started = time.perf_counter()
            for n in range(1, updates + 1):
                while client.config is last:
                    await anyio.sleep(0.001)
                now = time.perf_counter()
                applied.append(now - started)
                started, last = now, client.config
                if rss_every and n % rss_every == 0:
                    rss.append((n, rss_mb()))
            stop.set()
    return {"applied": applied, "rss": rss}


def print_holds(title: str, holds: Holds, result: dict[str, Any]) -> None:
    stretches = holds.stretches
    wall = max(w for w, _, _ in stretches)
    wall_net = max(w - g for w, _, g in stretches)
    cpu_net = max(c - g for _, c, g in stretches)
    gcs = sorted(holds.gc_pauses)
    print(f"  {title}: {len(result['applied'])} updates, each applied in {statistics.median(result['applied']):.2f} s")
    print(
        f"    SDK's longest hold of the loop, GC pauses left out: {cpu_net * 1000:.2f} ms of CPU "
        f"({wall_net * 1000:.2f} ms wall; {wall * 1000:.2f} ms wall with GC pauses); {len(stretches)} stretches, "
        f"median {statistics.median(w for w, _, _ in stretches) * 1000:.2f} ms"
    )
    if gcs:
        print(
            f"    interpreter GC pauses meanwhile: {len(gcs)}, longest {gcs[-1] * 1000:.1f} ms, "
            f"99th percentile {gcs[int(len(gcs) * 0.99)] * 1000:.2f} ms"
        )


async def bench_updates(paths: list[str], updates: int, revisions: int) -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER, *paths], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        holds = Holds()
        holds.install()
        print("loop holds while updates apply (1 MB datafile, a new revision at every 50 ms poll):")
        for title, load in (("idle loop", False), ("four tasks deciding flat out", True)):
            result = await run_updates(port, holds, updates=updates, load=load)
            print_holds(title, holds, result)
        gc.collect()
        before = rss_mb()
        result = await run_updates(port, holds, updates=revisions, load=False, rss_every=revisions // 10)
        samples = "  ".join(f"{n}: {mb:.0f}" for n, mb in result["rss"])
        print(f"RSS (MB) while {revisions} revisions apply, from {before:.0f} MB before the client:")
        print(f"  {samples}")
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and updates")
    args = parser.parse_args()
    import logging

    logging.getLogger("optimizely_async").setLevel(logging.CRITICAL)
    logging.getLogger("optimizely").setLevel(logging.CRITICAL)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for revision in ("1", "2"):
            path = Path(tmp) / f"rev{revision}.json"
            path.write_text(json.dumps(build_datafile(revision)))
            paths.append(str(path))
        print(f"datafile: {Path(paths[0]).stat().st_size / 1e6:.2f} MB; Python {sys.version.split()[0]}")
        bench_load(paths[0], rounds=5 if args.quick else 15)
        print_tracked(paths[0])
        anyio.run(bench_updates, paths, 10 if args.quick else 30, 50 if args.quick else 200)


if __name__ == "__main__":
    main()
