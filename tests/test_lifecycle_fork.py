"""An AsyncOptimizely used in a forked child whose loop it was not started on: clear refusals, no hang.

Each case runs in a subprocess (forking the test runner is not safe)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

PRELUDE = """
import json, logging, os, sys, threading
import anyio
from optimizely_async import AsyncOptimizely, ClientStateError, DispatchResult

logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(levelname)s %(message)s")
DATAFILE = {
    "version": "4", "accountId": "1", "projectId": "2", "revision": "3", "experiments": [],
    "events": [{"id": "9", "key": "buy", "experimentIds": []}], "audiences": [], "attributes": [],
    "groups": [], "rollouts": [],
    "featureFlags": [{"id": "F", "key": "flag", "experimentIds": [], "rolloutId": "", "variables": []}],
}

class Out:
    async def dispatch(self, request):
        who = [v["visitor_id"] for v in request.payload["visitors"]]
        print(f"{os.getpid()} sent {who}", flush=True)
        return DispatchResult(delivered=True, status=200)

def in_new_thread(fn):
    # The forked child is inside the parent's running loop: a fresh loop needs a thread of its own.
    t = threading.Thread(target=fn)
    t.start()
    t.join()
"""


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_started_client_in_a_forked_child_refuses_clearly_and_never_hangs(backend: str) -> None:
    done = run(
        f"""
        drops = []

        def child(client):
            async def use():
                with anyio.fail_after(10):  # nothing may hang
                    print("child decides", await client.is_feature_enabled("flag", "kid"), flush=True)
                    await client.track("buy", "kid")          # refused: counted as dropped ("forked")
                    await client.track("buy", "kid2")
                    await client.flush()                     # returns at once
                    try:
                        await client.start()
                    except ClientStateError as exc:
                        print("child start refused:", "fork" in str(exc), flush=True)
                    await client.close()
                    stats = client.stats()
                    print("child state", stats.state, "dropped", dict(stats.dropped), flush=True)
                    print("child on_drop", drops, flush=True)
            anyio.run(use, backend={backend!r})

        async def main():
            client = AsyncOptimizely(
                datafile=DATAFILE, event_dispatcher=Out(), flush_interval=60,
                on_drop=lambda events, reason: drops.append((len(events), reason)),
            )
            async with anyio.create_task_group() as tg:
                await client.start(tg)
                await client.track("buy", "parent-before-fork")
                pid = os.fork()
                if pid == 0:
                    in_new_thread(lambda: child(client))
                    os._exit(0)
                _, status = os.waitpid(pid, 0)
                print("child exit", os.waitstatus_to_exitcode(status), flush=True)
                await client.track("buy", "parent-after-fork")
                report = await client.close()
                print("parent delivered", report.delivered, flush=True)

        anyio.run(main, backend={backend!r})
        """
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "child decides False" in out
    assert "child start refused: True" in out
    assert "child state forked dropped {'forked': 2}" in out
    assert "child on_drop [(1, 'forked'), (1, 'forked')]" in out
    assert "child exit 0" in out
    assert "parent delivered 2" in out
    sent = [line for line in out.splitlines() if " sent " in line]
    assert len(sent) == 1 and "parent-before-fork" in sent[0] and "parent-after-fork" in sent[0]
    assert "kid" not in "".join(sent)
    # logged once, as the ClientStateError's message
    assert done.stderr.count("is a fork of it") == 1, done.stderr


def test_a_client_forked_before_it_started_works_in_the_child() -> None:
    """gunicorn --preload style: created in the parent, started in each child."""
    done = run(
        """
        client = AsyncOptimizely(datafile=DATAFILE, event_dispatcher=Out())
        pid = os.fork()
        if pid == 0:
            async def use():
                async with client:
                    await client.track("buy", "child-user")
            anyio.run(use)
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "sent ['child-user']" in done.stdout
