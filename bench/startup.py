"""Start-up costs against the official SDK, each from fresh processes alternating between the two SDKs; medians:

- import time;
- import plus the first load of a 1 MB datafile, with no warm-up: what the deferred imports cost at first use
  (ours: construction + entry + ready; asyncio is imported beforehand, as an asyncio app has it);
- resident memory: what the import and a first client with a tiny datafile add, then a client with a 1 MB one.

Run from the repository root: ``python bench/startup.py`` (about two minutes).
"""

from __future__ import annotations

import json
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

FIRST_LOAD = r"""
import asyncio, sys, time  # asyncio first: an asyncio app has it already (the official SDK does not need it)
which, path = sys.argv[1], sys.argv[2]
text = open(path).read()
start = time.perf_counter()
if which == "official":
    from optimizely import optimizely
    imported = time.perf_counter()
    assert optimizely.Optimizely(datafile=text).is_valid
else:
    from optimizely_async import AsyncOptimizely
    imported = time.perf_counter()

    async def load():
        async with AsyncOptimizely(datafile=text) as client:
            assert await client.wait_until_ready(5)

    asyncio.run(load())
done = time.perf_counter()
print((imported - start) * 1000, (done - imported) * 1000)
"""

RSS = r"""
import gc, json, sys
which, path = sys.argv[1], sys.argv[2]

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

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

    class Sink:  # what the lazily created HTTP client of the event dispatcher costs until the first event
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


def run(args: list[str]) -> float:
    return run_all(args)[0]


def run_all(args: list[str]) -> list[float]:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True)
    return [float(value) for value in out.stdout.strip().splitlines()[-1].split()]


def main(rounds: int = 9) -> None:
    timer = "import time; t = time.perf_counter(); {}; print((time.perf_counter() - t) * 1000)"
    times: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(rounds):
        for name, statement in IMPORTS.items():
            times[name].append(run(["-c", timer.format(statement)]))
    print(f"import time, median of {rounds} fresh processes:")
    for name, values in times.items():
        print(f"  {name:<52} {statistics.median(values):6.1f} ms  (min {min(values):.1f})")

    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(build_datafile("1"), f)
        f.flush()
        first: dict[str, list[list[float]]] = {"official": [], "ours": []}
        for _ in range(rounds):
            for which in first:
                first[which].append(run_all(["-c", FIRST_LOAD, which, f.name]))
        print(f"import, then the first load of a 1 MB datafile (no warm-up), median of {rounds} fresh processes:")
        for which, values in first.items():
            imp, load, total = (statistics.median(v[k] if k < 2 else v[0] + v[1] for v in values) for k in range(3))
            print(f"  {which:<9} import {imp:6.1f} ms + first load {load:6.1f} ms = {total:6.1f} ms")
        added: dict[str, list[list[float]]] = {"official": [], "ours": [], "ours-sink": [], "ours-entered": []}
        for _ in range(max(3, rounds // 3)):
            for which in added:
                added[which].append(run_all(["-c", RSS, which, f.name]))
    print("RSS added, median: by the import and a first client with a tiny datafile | then by a 1 MB datafile client")
    for which, label in (
        ("official", "official Optimizely"),
        ("ours", "ours AsyncOptimizely"),
        ("ours-sink", "ours, custom event dispatcher"),
        ("ours-entered", "ours, entered, projection built"),
    ):
        setup, client = (statistics.median(v[k] for v in added[which]) for k in range(2))
        print(f"  {label:<30} +{setup:5.1f} MB | +{client:5.1f} MB")


if __name__ == "__main__":
    main()
