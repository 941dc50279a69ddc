"""Ctrl-C on trio while the client's background tasks run the user's code (a dispatcher, a listener, on_drop).

trio raises a Ctrl-C's KeyboardInterrupt in the task that runs Python code at that moment unless that code is
KI-protected. Every task the SDK starts, nested task groups included (the event queue's delivery tasks, async
``on_drop`` callbacks, tasks the OpenFeature provider starts), must run protected, so that the interrupt is
raised in the main task, which leaves ``async with client:`` and drains, instead of failing the background
work's task group and cancelling the drain. The user's own tasks stay unprotected.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import anyio
import httpx
import pytest

from _cmab_support import small_datafile
from _lifecycle_kit import datafile
from _support.interrupt import interrupt_when_ready
from optimizely_async import AsyncOptimizely, DispatchResult, NotificationType, _observe

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_user_code_called_by_background_tasks_runs_ki_protected() -> None:
    import trio

    seen: dict[str, bool] = {}

    def record(where: str) -> None:
        seen.setdefault(where, trio.lowlevel.currently_ki_protected())

    class Refusing:
        async def dispatch(self, request: Any) -> DispatchResult:
            record("dispatcher")
            return DispatchResult(delivered=False, retryable=False, status=400, reason="http_400")

    def odp_endpoint(request: httpx.Request) -> httpx.Response:
        record("ODP request")
        return httpx.Response(200, json={})

    async def on_drop(events: Any, reason: str) -> None:
        record("async on_drop")

    async def async_listener(*args: Any) -> None:
        record("async LOG_EVENT listener")

    client = AsyncOptimizely(
        datafile=small_datafile(),
        event_dispatcher=Refusing(),
        batch_size=1,
        on_drop=on_drop,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(odp_endpoint)),
        odp_event_flush_interval=0,
    )
    center = client.notification_center
    center.add_notification_listener(NotificationType.LOG_EVENT, lambda *a: record("LOG_EVENT listener"))
    center.add_notification_listener(NotificationType.LOG_EVENT, async_listener)
    center.add_notification_listener(NotificationType.TRACK, lambda *a: record("TRACK listener (spawned track)"))
    async with client:
        record("the user's task")
        # As the OpenFeature provider does: a track() in a task of the client's task group.
        assert _observe.spawn(client, client.track, "purchase", "u1")
        await client.send_odp_event(action="login", identifiers={"fs_user_id": "u1"})
        for _ in range(100):
            await anyio.sleep(0.01)
            if len(seen) == 7:
                break
        await client.flush()
    assert seen == {
        "the user's task": False,
        "TRACK listener (spawned track)": True,
        "LOG_EVENT listener": True,
        "dispatcher": True,
        "async LOG_EVENT listener": True,
        "async on_drop": True,
        "ODP request": True,
    }


def _mid_dispatch_script(block_in: str) -> str:
    """A trio program: five events, one per request, one request at a time; the first request blocks in
    ``block_in`` ("dispatcher" or "listener", a sync LOG_EVENT listener) reading stdin, after saying "ready".
    Each delivered request prints ``sent``; the totals are printed after the block, whichever way it ends."""
    return textwrap.dedent(
        f"""
        import sys, anyio
        from optimizely_async import AsyncOptimizely, DispatchResult, NotificationType

        calls = []

        def block_once(where):
            if where == {block_in!r} and not calls:
                calls.append(where)
                print("ready", flush=True)
                sys.stdin.readline()  # the parent sends SIGINT, then a line

        class Out:
            def dispatch(self, request):
                block_once("dispatcher")
                print("sent", len(request.payload["visitors"]), flush=True)
                return DispatchResult(delivered=True, status=200)

        async def main():
            client = AsyncOptimizely(
                datafile={json.dumps(datafile())}, event_dispatcher=Out(), batch_size=1,
                max_concurrent_requests=1, flush_interval=60,
            )
            client.notification_center.add_notification_listener(
                NotificationType.LOG_EVENT, lambda event: block_once("listener")
            )
            try:
                async with client:
                    for i in range(5):
                        await client.track("buy", f"u{{i}}")
                    await anyio.sleep_forever()
            finally:
                stats = client.stats()
                print("delivered", stats.delivered, "dropped", sum(stats.dropped.values()), flush=True)

        anyio.run(main, backend="trio")
        """
    )


@pytest.mark.parametrize("block_in", ["dispatcher", "listener"])
def test_ctrl_c_mid_dispatch_on_trio_still_delivers_every_event(block_in: str) -> None:
    """SIGINT while a delivery task runs the user's dispatcher (or LOG_EVENT listener) on trio: the interrupt
    reaches the main task, which leaves the block and drains, so all five events are delivered and the process
    ends with a plain KeyboardInterrupt."""
    out, err = interrupt_when_ready("-c", _mid_dispatch_script(block_in), then_send="go\n")
    assert out.split() == ["sent", "1"] * 5 + ["delivered", "5", "dropped", "0"], err
    assert "KeyboardInterrupt" in err and "ExceptionGroup" not in err, err
