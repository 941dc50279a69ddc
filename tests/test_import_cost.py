"""What importing the SDK loads, and where the deferred imports are paid instead.

``import optimizely_async`` and ``from optimizely_async import AsyncOptimizely`` load neither httpx (nor ssl),
pydantic, the event models nor asyncio. A client pays for pydantic and the event models at construction; a
datafile poller for httpx too (it checks its URL with it). The event dispatcher imports httpx only when it makes
its HTTP client, at the first event, in a worker thread (see tests/test_first_use.py). Each check runs in a
fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _support.child import last_json, run_python

TESTS = Path(__file__).resolve().parent
DATAFILE = TESTS.parent / "src" / "optimizely_async" / "example_datafile.json"

#: Modules the import leaves for later (asyncio: a trio app or a script never needs it).
DEFERRED = ("asyncio", "httpx", "ssl", "pydantic", "pydantic_core", "optimizely_async.events.models")

LOADED = "import sys; print(json.dumps(sorted(m for m in set({deferred}) if m in sys.modules)))"


def run_child(code: str, *args: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; its last output line is JSON."""
    result: list[str] = last_json(run_python(code, *args))
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


HTTP_STACK = ["certifi", "httpcore", "httpx"]


def test_a_client_with_its_own_dispatcher_imports_pydantic_at_construction_and_no_http() -> None:
    statement = (
        "from optimizely_async import AsyncOptimizely, DispatchResult\n"
        "class Sink:\n"
        "    async def dispatch(self, request): return DispatchResult(delivered=True, status=200)\n"
        f"AsyncOptimizely(datafile=open({str(DATAFILE)!r}).read(), event_dispatcher=Sink())"
    )
    assert loaded_after(statement) == ["optimizely_async.events.models", "pydantic", "pydantic_core"]


def test_a_client_with_a_static_datafile_imports_the_http_stack_at_construction() -> None:
    """Its event dispatcher imports httpx in the constructing thread (not on the loop, not in a worker thread
    at the first event); its HTTP client and SSL context wait for the first event."""
    statement = (
        f"from optimizely_async import AsyncOptimizely\nAsyncOptimizely(datafile=open({str(DATAFILE)!r}).read())"
    )
    code = f"import json\n{statement}\n" + LOADED.format(deferred=(*DEFERRED, *HTTP_STACK))
    assert run_child(code) == [*HTTP_STACK, "optimizely_async.events.models", "pydantic", "pydantic_core", "ssl"]


def test_a_polling_client_imports_at_construction_what_its_first_fetch_and_config_need() -> None:
    """The poller checks its URL with httpx; its HTTP client is made in a worker thread, which must then import
    nothing more; the first polled config is built on the loop, which must import nothing either."""
    statement = "from optimizely_async import AsyncOptimizely\nAsyncOptimizely(sdk_key='some-key')"
    code = f"import json\n{statement}\n" + LOADED.format(deferred=(*DEFERRED, *HTTP_STACK))
    assert run_child(code) == [*HTTP_STACK, "optimizely_async.events.models", "pydantic", "pydantic_core", "ssl"]


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
