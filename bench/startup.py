"""Start-up costs against the official SDK: import time, and the resident memory a client with a 1 MB datafile
adds. Each figure comes from fresh processes, alternating between the two SDKs; medians.

Run from the repository root: ``python bench/startup.py`` (about a minute).
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

RSS = r"""
import asyncio, gc, sys
which, path = sys.argv[1], sys.argv[2]

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

text = open(path).read()
if which == "official":
    from optimizely import optimizely
    gc.collect()
    before = rss_mb()
    client = optimizely.Optimizely(datafile=text)
else:
    from optimizely_async import AsyncOptimizely, DispatchResult

    class Sink:  # what the lazily created HTTP client of the event dispatcher costs until the first event
        async def dispatch(self, request):
            return DispatchResult(delivered=True, status=200)

    gc.collect()
    before = rss_mb()
    client = AsyncOptimizely(datafile=text, event_dispatcher=None if which == "ours" else Sink())
    if which == "ours-entered":  # running, its projection built in the background (the official's is eager)

        async def settle():
            async with client:
                while client._projection is None or not client._projection.done:
                    await asyncio.sleep(0.001)
                gc.collect()
                print(rss_mb() - before)

        asyncio.run(settle())
        sys.exit()
gc.collect()
print(rss_mb() - before)
"""


def run(args: list[str]) -> float:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


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
        added: dict[str, list[float]] = {"official": [], "ours": [], "ours-sink": [], "ours-entered": []}
        for _ in range(max(3, rounds // 3)):
            for which in added:
                added[which].append(run(["-c", RSS, which, f.name]))
    print("RSS added by constructing a client with a 1 MB datafile (after the import), median:")
    print(f"  official Optimizely(datafile)                  +{statistics.median(added['official']):.1f} MB")
    print(f"  ours AsyncOptimizely(datafile)                 +{statistics.median(added['ours']):.1f} MB")
    print(f"  ours, with a custom event dispatcher           +{statistics.median(added['ours-sink']):.1f} MB")
    print(f"  ours, that one entered, projection built       +{statistics.median(added['ours-entered']):.1f} MB")


if __name__ == "__main__":
    main()
