"""Start-up costs against the official SDK, each from fresh processes alternating between the two SDKs; medians:

- import time;
- import plus the first client with a 1 MB datafile, ready, with no warm-up: what the deferred imports cost at
  first use, in time and in resident memory (ours: construction + entry + ready, the exit not counted; asyncio
  is imported beforehand, as an asyncio app has it; the official: construction);
- resident memory: what the import and a first client with a tiny datafile add, then a client with a 1 MB one;
- ours only: the first event, where the SDK's HTTP client is made (in a worker
  thread): how late a 1 ms timer on the loop ran meanwhile, against the same timer before it.

Both SDKs import from compiled bytecode, as an installed package does: the child processes keep theirs in a
temporary directory (``PYTHONPYCACHEPREFIX``), filled by a warm-up run of each before anything is timed (with
``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__`` in the checkout, ours would be compiled from source at
every import: about 60 ms more).

Run from the repository root: ``python bench/startup.py`` (about half a minute).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bigdatafile import build_datafile  # noqa: E402

IMPORTS = {
    "ours: import optimizely_async": "import optimizely_async",
    "ours: from optimizely_async import AsyncOptimizely": "from optimizely_async import AsyncOptimizely",
    "official: from optimizely import optimizely": "from optimizely import optimizely",
}

RSS_MB = r"""
def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
"""

FIRST_CLIENT = (
    RSS_MB
    + r"""
import asyncio, sys, time  # asyncio first: an asyncio app has it already (the official SDK does not need it)
which, path = sys.argv[1], sys.argv[2]
text = open(path).read()
rss = rss_mb()
start = time.perf_counter()
if which == "official":
    from optimizely import optimizely
    imported = time.perf_counter()
    assert optimizely.Optimizely(datafile=text).is_valid
    ready, rss_ready = time.perf_counter(), rss_mb()
else:
    from optimizely_async import AsyncOptimizely
    imported = time.perf_counter()

    async def load():
        async with AsyncOptimizely(datafile=text) as client:
            assert await client.wait_until_ready(5)
            return time.perf_counter(), rss_mb()

    ready, rss_ready = asyncio.run(load())
print((imported - start) * 1000, (ready - imported) * 1000, rss_ready - rss)
"""
)

RSS = (
    RSS_MB
    + r"""
import gc, json, sys
which, path = sys.argv[1], sys.argv[2]
text = open(path).read()
tiny = json.dumps({"version": "4", "accountId": "1", "projectId": "2", "revision": "1", "attributes": [],
                   "audiences": [], "events": [], "experiments": [], "groups": [], "featureFlags": [], "rollouts": []})
gc.collect()
start = rss_mb()
if which == "official":
    from optimizely import optimizely

    make = lambda data: optimizely.Optimizely(datafile=data)
else:
    from optimizely_async import AsyncOptimizely, DispatchResult

    class Sink:  # a custom event dispatcher: the SDK never needs httpx
        async def dispatch(self, request):
            return DispatchResult(delivered=True, status=200)

    make = lambda data: AsyncOptimizely(datafile=data, event_dispatcher=Sink() if which == "ours-sink" else None)
first = make(tiny)  # pays what the import deferred (ours: pydantic and the event models)
gc.collect()
before = rss_mb()
client = make(text)
if which == "ours-entered":  # running, its projection built in the background (the official's is eager)
    import asyncio

    async def settle():
        async with client:
            while client._projection is None or not client._projection.done:
                await asyncio.sleep(0.001)
            gc.collect()
            print(before - start, rss_mb() - before)

    asyncio.run(settle())
    sys.exit()
gc.collect()
print(before - start, rss_mb() - before)
"""
)

FIRST_EVENT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import anyio
from _sink_server import serve_sink
from optimizely_async import AsyncOptimizely

async def main():
    async with serve_sink() as sink:
        async with AsyncOptimizely(datafile=open(sys.argv[2]).read(), event_endpoint=sink.url, batch_size=1) as client:
            late, stop = [0.0], anyio.Event()

            async def timer():
                while not stop.is_set():
                    start = time.perf_counter()
                    await anyio.sleep(0.001)
                    late[0] = max(late[0], time.perf_counter() - start - 0.001)

            async with anyio.create_task_group() as tg:
                tg.start_soon(timer)
                await anyio.sleep(0.3)  # the projection's build and the timer's first rounds
                late[0] = 0.0
                await anyio.sleep(0.2)
                quiet, late[0] = late[0], 0.0
                start = time.perf_counter()
                await client.track("event_0", "user-1")
                await client.flush()
                took = time.perf_counter() - start
                stop.set()
        assert len(sink.received) == 1
    print(quiet * 1000, late[0] * 1000, took * 1000)

anyio.run(main, backend=sys.argv[3])
"""


#: The child processes' environment: bytecode written to and read from a directory of the bench's own.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(args: list[str]) -> float:
    return run_all(args)[0]


def run_all(args: list[str]) -> list[float]:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True, env=CHILD_ENV)
    return [float(value) for value in out.stdout.strip().splitlines()[-1].split()]


def medians(rows: list[list[float]]) -> list[float]:
    return [statistics.median(column) for column in zip(*rows, strict=True)]


def main(rounds: int = 9) -> None:
    with tempfile.TemporaryDirectory() as cache, tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = cache
        json.dump(build_datafile("1"), f)
        f.flush()
        for which in ("official", "ours", "ours-sink", "ours-entered"):  # the warm-up: compiles what each imports
            run_all(["-c", RSS, which, f.name])
        run_all(["-c", FIRST_EVENT, str(ROOT / "tests"), f.name, "asyncio"])
        run_all(["-c", FIRST_EVENT, str(ROOT / "tests"), f.name, "trio"])
        measure(rounds, f.name)


def measure(rounds: int, datafile: str) -> None:
    timer = "import time; t = time.perf_counter(); {}; print((time.perf_counter() - t) * 1000)"
    times: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(rounds):
        for name, statement in IMPORTS.items():
            times[name].append(run(["-c", timer.format(statement)]))
    print(f"import time, median of {rounds} fresh processes:")
    for name, values in times.items():
        print(f"  {name:<52} {statistics.median(values):6.1f} ms  (min {min(values):.1f})")

    first: dict[str, list[list[float]]] = {"official": [], "ours": []}
    for _ in range(rounds):
        for which in first:
            first[which].append(run_all(["-c", FIRST_CLIENT, which, datafile]))
    print(f"import + first client with a 1 MB datafile, ready, median of {rounds} fresh processes (nothing warmed up):")
    for which, values in first.items():
        imp, load, added = medians(values)
        total = statistics.median(v[0] + v[1] for v in values)
        print(
            f"  {which:<9} import {imp:6.1f} ms + first client {load:6.1f} ms = {total:6.1f} ms;"
            f"  RSS added {added:5.1f} MB"
        )
    added: dict[str, list[list[float]]] = {"official": [], "ours": [], "ours-sink": [], "ours-entered": []}
    for _ in range(max(3, rounds // 3)):
        for which in added:
            added[which].append(run_all(["-c", RSS, which, datafile]))
    print("RSS added, median: by the import and a first client with a tiny datafile | then by a 1 MB datafile one")
    for which, label in (
        ("official", "official Optimizely"),
        ("ours", "ours AsyncOptimizely"),
        ("ours-sink", "ours, custom event dispatcher"),
        ("ours-entered", "ours, entered, projection built"),
    ):
        setup, client = medians(added[which])
        print(f"  {label:<31} +{setup:5.1f} MB | +{client:5.1f} MB")

    print(
        "ours, the first event (its HTTP client made in a worker thread): worst lateness of a"
        f" 1 ms timer on the loop, medians of {max(3, rounds // 3)} fresh processes"
    )
    for backend in ("asyncio", "trio"):
        args = ["-c", FIRST_EVENT, str(ROOT / "tests"), datafile, backend]
        rows = [run_all(args) for _ in range(max(3, rounds // 3))]
        quiet, during, took = medians(rows)
        worst = max(row[1] for row in rows)
        print(
            f"  {backend:<8} before it {quiet:4.1f} ms; while it is sent {during:4.1f} ms (worst {worst:.1f});"
            f" sent in {took:5.1f} ms"
        )


if __name__ == "__main__":
    main()
