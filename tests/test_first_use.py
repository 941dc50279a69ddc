"""The HTTP stack (httpx, httpcore, certifi; trio too, which httpcore imports when it is installed) is imported
when the event dispatcher is made, in the constructing thread: neither on the event loop nor in a worker thread
at the first event (a worker importing it held the interpreter lock for most of ~100 ms, and a timer on the
loop ran ~20 ms late). A client with its own event dispatcher never imports it; a ``fork()`` while a worker makes
an HTTP client waits for it. Each check runs in a fresh interpreter (this test process has imported everything
already).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from _support.child import last_json, run_python

TESTS = Path(__file__).resolve().parent
DATAFILE = TESTS.parent / "src" / "optimizely_async" / "example_datafile.json"

#: An import observer for the child processes: a finder first on ``sys.meta_path`` that finds nothing and
#: records which thread asked for each module not imported yet (it changes no import).
OBSERVER = r"""
import sys, threading

class Observer:
    def __init__(self):
        self.seen = []  # (module, imported on the main thread)

    def find_spec(self, name, path=None, target=None):
        self.seen.append((name, threading.current_thread() is threading.main_thread()))
        return None

observer = Observer()
sys.meta_path.insert(0, observer)
"""


def run_child(code: str, *args: str) -> Any:
    """Run ``code`` in a fresh interpreter with tests/ on the path; its last output line is JSON."""
    return last_json(run_python(code, *args, with_tests=True))


FIRST_EVENT = (
    OBSERVER
    + r"""
import json
datafile, backend = open(sys.argv[1]).read(), sys.argv[2]

import anyio
from _sink_server import serve_sink
from optimizely_async import AsyncOptimizely

STACK = ("httpx", "httpcore", "certifi", "h11", "trio")

def stack():
    return sorted(m for m in STACK if m in sys.modules)

async def main():
    facts = {}
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile, event_endpoint=sink.url, batch_size=1)
        facts["constructed"] = stack()
        async with client:
            await client.wait_until_ready(5)
            decision = await client.create_user_context("user-1").decide("new_checkout", ["DISABLE_DECISION_EVENT"])
            await client.get_variation("checkout_test", "user-1")  # no event either
            facts["ready, no event yet"] = stack()
            mark = len(observer.seen)
            await client.track("purchase", "user-1")
            await client.flush()
            facts["on the loop at the first event"] = sorted({m for m, main in observer.seen[mark:] if main})
            facts["off the loop at the first event"] = sorted(
                {m.split(".")[0] for m, main in observer.seen[mark:] if not main} & set(STACK)
            )
        facts["delivered"] = len(sink.received)
        facts["decided"] = decision.flag_key
    print(json.dumps(facts))

anyio.run(main, backend=backend)
"""
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_http_stack_is_imported_at_construction_and_nothing_at_the_first_event(backend: str) -> None:
    """All of it once the client is constructed; at the first event nothing more is imported, on the loop or
    in the worker thread that makes the dispatcher's HTTP client."""
    facts = run_child(FIRST_EVENT, str(DATAFILE), backend)
    stack = ["certifi", "h11", "httpcore", "httpx", "trio"]
    assert facts == {
        "constructed": stack,
        "ready, no event yet": stack,
        "on the loop at the first event": [],
        "off the loop at the first event": [],
        "delivered": 1,
        "decided": "new_checkout",
    }


OWN_DISPATCHER = r"""
import json, sys
datafile, backend = open(sys.argv[1]).read(), sys.argv[2]

import anyio
from optimizely_async import AsyncOptimizely, DispatchResult

class Sink:
    def __init__(self):
        self.events = 0

    async def dispatch(self, request):
        self.events += request.event_count
        return DispatchResult(delivered=True, status=200)

async def main():
    sink = Sink()
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=sink, batch_size=1) as client:
        await client.create_user_context("user-1").decide("new_checkout")
        await client.track("purchase", "user-1")
        await client.flush()
    print(json.dumps([sink.events, sorted(m for m in ("httpx", "httpcore", "certifi", "h11") if m in sys.modules)]))

anyio.run(main, backend=backend)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_client_with_its_own_dispatcher_never_imports_httpx(backend: str) -> None:
    assert run_child(OWN_DISPATCHER, str(DATAFILE), backend) == [2, []]


FORK_DURING_IMPORT = r"""
import json, os, sys, time
datafile = open(sys.argv[1]).read()

import anyio
from _sink_server import serve_sink
from optimizely_async import AsyncOptimizely

CHILD = "import httpx, certifi; httpx.AsyncClient(); print('ok')"

async def main():
    async with serve_sink() as sink:
        async with AsyncOptimizely(datafile=datafile, event_endpoint=sink.url, batch_size=1) as client:
            await client.track("purchase", "user-1")
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.flush)  # the worker thread starts making the dispatcher's HTTP client
                await anyio.sleep(0.001)
                pid = os.fork()  # waits until the worker has made the client
                if pid == 0:
                    code = 0
                    try:  # the child imports and makes a client of its own: never hangs on a held lock
                        exec(CHILD)
                    except BaseException:
                        code = 1
                    os._exit(code)
                deadline = time.monotonic() + 20
                while True:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done or time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.01)
                if not done:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
        print(json.dumps([bool(done), os.waitstatus_to_exitcode(status) if done else None, len(sink.received)]))

anyio.run(main)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_the_worker_makes_the_http_client_leaves_a_working_child() -> None:
    """A child forked while another thread is inside OpenSSL making a context (or halfway through an import)
    would inherit those locks held and hang at its own; the fork waits for the worker instead."""
    assert run_child(FORK_DURING_IMPORT, str(DATAFILE)) == [True, 0, 1]
