"""What importing the SDK loads, and where the deferred imports are paid instead.

``import optimizely_async`` and ``from optimizely_async import AsyncOptimizely`` load neither httpx (nor ssl),
pydantic, the event models nor asyncio: a client pays for pydantic and the event models at construction, and
for httpx when its first request makes an HTTP client, in a worker thread rather than on the event loop. Each
check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATAFILE = TESTS.parent / "src" / "optimizely_async" / "example_datafile.json"

#: Modules the import leaves for later (asyncio: a trio app or a script never needs it).
DEFERRED = ("asyncio", "httpx", "ssl", "pydantic", "pydantic_core", "optimizely_async.events.models")

LOADED = "import sys; print(json.dumps(sorted(m for m in {deferred} if m in sys.modules)))"


def run_child(code: str, *args: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; its last output line is JSON."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def loaded_after(statement: str) -> list[str]:
    return run_child(f"import json\n{statement}\n" + LOADED.format(deferred=DEFERRED))


@pytest.mark.parametrize(
    "statement",
    [
        "import optimizely_async",
        "from optimizely_async import AsyncOptimizely",
        "from optimizely_async import AsyncOptimizely, DecideOption, NotificationType, OptimizelyUserContext",
    ],
)
def test_importing_the_sdk_defers_the_heavy_modules(statement: str) -> None:
    assert loaded_after(statement) == []


def test_the_check_itself_can_fail() -> None:
    assert loaded_after("import optimizely_async.events.models") == [
        "optimizely_async.events.models",
        "pydantic",
        "pydantic_core",
    ]


def test_a_static_client_pays_for_pydantic_at_construction_and_for_nothing_else() -> None:
    statement = (
        f"from optimizely_async import AsyncOptimizely\nAsyncOptimizely(datafile=open({str(DATAFILE)!r}).read())"
    )
    assert loaded_after(statement) == ["optimizely_async.events.models", "pydantic", "pydantic_core"]


def test_a_polling_client_imports_at_construction_what_its_first_config_needs() -> None:
    """The first polled config is built on the loop: nothing it needs may be imported there."""
    statement = "from optimizely_async import AsyncOptimizely\nAsyncOptimizely(sdk_key='some-key')"
    assert loaded_after(statement) == ["httpx", "optimizely_async.events.models", "pydantic", "pydantic_core", "ssl"]


FIRST_REQUEST = r"""
import importlib.abc, json, sys, threading
sys.path.insert(0, sys.argv[1])
datafile, backend = open(sys.argv[2]).read(), sys.argv[3]

importers = []

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "httpx":
            importers.append(threading.current_thread() is threading.main_thread())
        return None

sys.meta_path.insert(0, Watch())

import anyio
from _sink_server import serve_sink
from optimizely_async import AsyncOptimizely

async def main():
    async with serve_sink() as sink:
        async with AsyncOptimizely(datafile=datafile, event_endpoint=sink.url, batch_size=1) as client:
            await client.track("purchase", "user-1")
            await client.flush()
        print(json.dumps({"delivered": len(sink.received), "httpx_imported_on_loop_thread": importers}))

anyio.run(main, backend=backend)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_first_event_request_imports_httpx_off_the_loop(backend: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST, str(TESTS), str(DATAFILE), backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"delivered": 1, "httpx_imported_on_loop_thread": [False]}


TRIO_APP = r"""
import json, sys
import trio
from optimizely_async import AsyncOptimizely, ClientStateError, DispatchResult

class Sink:
    def __init__(self):
        self.requests = 0

    async def dispatch(self, request):
        self.requests += 1
        return DispatchResult(delivered=True, status=200)

async def main():
    sink = Sink()
    client = AsyncOptimizely(datafile=open(sys.argv[1]).read(), event_dispatcher=sink, batch_size=1)
    try:
        await client.start()
    except ClientStateError:
        refused = True
    else:
        refused = False
    async with client:
        decision = await client.create_user_context("user-1").decide("new_checkout")
        await client.track("purchase", "user-1")
        await client.flush()
    print(json.dumps([refused, decision.flag_key, sink.requests > 0, "asyncio" in sys.modules]))

trio.run(main)
"""


def test_a_trio_app_never_imports_asyncio() -> None:
    assert run_child(TRIO_APP, str(DATAFILE)) == [True, "new_checkout", True, False]
