"""An entry (``async with client``) cancelled halfway ends promptly, and leaves the client unopened or closed.

The client's background work runs shielded (so that a cancelled body still drains). It used to be started with
the host task group's ``start()``, which, when its caller is cancelled, cancels the new task and waits for it:
a shielded task never ends that way, so an entry cancelled at the wrong moment waited for good. Each case runs
in a child process, so that a hang fails the test instead of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bigdatafile import build_datafile

SRC = str(Path(__file__).resolve().parents[1] / "src")

CHILD = textwrap.dedent(
    """
    import sys, anyio
    from optimizely_async import AsyncOptimizely, DispatchResult

    class Sink:
        async def dispatch(self, request):
            return DispatchResult(delivered=True, status=200)

    backend, kind, path = sys.argv[1], sys.argv[2], sys.argv[3]
    text = open(path).read() if kind == "static" else None

    def make():
        if kind == "static":
            return AsyncOptimizely(datafile=text, event_dispatcher=Sink())
        # A port nothing listens on: the poller keeps failing, and the entry has no datafile to wait for.
        return AsyncOptimizely(sdk_key="k", datafile_url_template="http://127.0.0.1:9/{sdk_key}.json",
                               event_dispatcher=Sink())

    async def main():
        for delay in (0, 0.00005, 0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008):
            client = make()
            entered = False
            with anyio.move_on_after(delay):
                async with client:
                    entered = True
                    await anyio.sleep(1)
            print(delay, entered, client.stats().state, flush=True)

    anyio.run(main, backend=backend)
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("kind", ["polling", "static"])
def test_an_entry_cancelled_at_any_point_ends(backend: str, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "datafile.json"
    path.write_text(json.dumps(build_datafile("1")))  # 1 MB: its projection is built during the entry
    result = subprocess.run(
        [sys.executable, "-c", CHILD, backend, kind, str(path)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 8, result.stdout
    # Cancelled before its background work started, the client is left unopened; after, it is closed.
    assert all(line.split()[-1] in ("unopened", "closed") for line in lines), result.stdout
