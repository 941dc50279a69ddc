"""Leaving ``async with client:`` by every path: the body's exception leaves as itself, the SDK's own failures
never cancel the body, and the queue is drained within close_timeout, shielded from the outer cancellation."""

from __future__ import annotations

import sys
import textwrap
import traceback
from typing import Any

import anyio
import pytest

from _lifecycle_kit import Recorder, datafile, visitors
from _sink_server import Reply, serve_sink
from _support.child import run_python
from _support.interrupt import interrupt_when_ready
from optimizely_async import AsyncOptimizely, EventRequest, NotificationType

pytestmark = pytest.mark.anyio


def exit_script(backend: str, *body: str) -> str:
    """A program for a child process: inside ``async with client:`` on ``backend`` it tracks one event, then
    runs the ``body`` lines; its dispatcher prints ``sent <visitors>`` for each request."""
    lines = "\n".join(" " * 16 + line for line in body)
    return textwrap.dedent(
        f"""
        import sys, anyio
        from optimizely_async import AsyncOptimizely, DispatchResult

        class Out:
            async def dispatch(self, request):
                print("sent", len(request.payload["visitors"]), flush=True)
                return DispatchResult(delivered=True, status=200)

        async def main():
            df = {datafile()!r}
            async with AsyncOptimizely(datafile=df, event_dispatcher=Out(), flush_interval=60) as client:
                await client.track("buy", "u1")
{lines}

        anyio.run(main, backend={backend!r})
        """
    )


def _raise_value_error() -> None:
    raise ValueError("from the body")


async def test_a_value_error_leaves_as_itself_with_its_traceback() -> None:
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)
        with pytest.raises(ValueError) as info:
            async with client:
                await client.track("buy", "u1")
                _raise_value_error()
    assert type(info.value) is ValueError and str(info.value) == "from the body"
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "_raise_value_error"
    assert visitors(sink) == ["u1"]  # drained on the way out
    assert client.stats().delivered == 1


async def test_except_around_the_block_catches_the_body_exception() -> None:
    caught = None
    try:
        async with AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder()):
            raise KeyError("k")
    except KeyError as exc:
        caught = exc
    assert type(caught) is KeyError  # not an ExceptionGroup around it


async def test_keyboard_interrupt_leaves_as_itself_and_the_queue_is_drained() -> None:
    recorder = Recorder()
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=recorder, flush_interval=60)
    caught: BaseException | None = None
    try:
        async with client:
            await client.track("buy", "u1")
            raise KeyboardInterrupt
    except BaseException as exc:
        caught = exc
    assert type(caught) is KeyboardInterrupt
    assert recorder.visitors == ["u1"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sys_exit_inside_the_block_exits_with_its_status(backend: str) -> None:
    """``sys.exit(3)`` in the body ends the process with status 3, after the queued event is delivered."""
    script = exit_script(backend, "sys.exit(3)")
    done = run_python(script, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["sent", "1"]
    assert "ExceptionGroup" not in done.stderr


class ReturnsNothing:
    """A broken custom dispatcher (returns None instead of a DispatchResult)."""

    async def dispatch(self, request: EventRequest) -> Any:
        return None


async def test_background_failures_never_cancel_the_body() -> None:
    async def failing_listener(*_: Any) -> None:
        raise RuntimeError("listener bug")

    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=ReturnsNothing(), batch_size=1)
    client.notification_center.add_notification_listener(NotificationType.TRACK, failing_listener)
    reached = False
    async with client:
        for i in range(5):
            await client.track("buy", f"u{i}")
        await anyio.sleep(0.2)  # the dispatcher and the listener fail meanwhile
        await anyio.sleep(0)  # still not cancelled
        reached = True
    assert reached
    report = await client.close()
    assert report.submitted == 5
    assert report.delivered == 0
    assert client.stats().listeners.failed == 5


async def test_cancelled_from_outside_the_block_drains_shielded() -> None:
    """The issue's reproducer: 0 of 95 were delivered under ``move_on_after(0.1)`` with close_timeout=10."""
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=0.02)
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60, close_timeout=10)
        with anyio.move_on_after(0.1) as scope:
            async with client:
                for i in range(95):
                    await client.track("buy", f"u{i}")
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        report = await client.close()
    assert report.delivered == 95 and report.undelivered == 0 and not report.timed_out
    assert sorted(visitors(sink)) == sorted(f"u{i}" for i in range(95))


async def test_cancelled_while_events_are_in_flight_drains_them() -> None:
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=0.3)  # requests are at the server when the cancellation comes
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, batch_size=5, close_timeout=10)
        with anyio.move_on_after(0.1):
            async with client:
                for i in range(20):
                    await client.track("buy", f"u{i}")
                await anyio.sleep_forever()
        report = await client.close()
    assert report.delivered == 20
    assert len(visitors(sink)) == 20


async def test_leaving_reports_what_it_could_not_deliver_within_close_timeout() -> None:
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=30)  # never answered in time
        dropped: list[tuple[int, str]] = []
        client = AsyncOptimizely(
            datafile=datafile(),
            event_endpoint=sink.url,
            batch_size=5,
            close_timeout=0.3,
            on_drop=lambda events, reason: dropped.append((len(events), reason)),
        )
        started = anyio.current_time()
        with anyio.move_on_after(0.1):
            async with client:
                for i in range(12):
                    await client.track("buy", f"u{i}")
                await anyio.sleep_forever()
        took = anyio.current_time() - started
        report = await client.close()
    assert report.timed_out
    # Their requests were out when the time ran out: reported apart, as the receiver may have them.
    assert report.delivered == 0 and report.undelivered + report.in_flight_at_close == 12
    assert sum(count for count, _ in dropped) == 12
    assert took < 5  # bounded by close_timeout (0.3 s), not by the server's 30 s


async def test_exception_in_the_body_still_drains() -> None:
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)
        with pytest.raises(LookupError):
            async with client:
                for i in range(30):
                    await client.track("buy", f"u{i}")
                raise LookupError
    assert len(visitors(sink)) == 30


async def test_close_inside_a_cancelled_scope_still_drains() -> None:
    """close() is shielded too: a caller cancelled while closing does not abandon the queue."""
    async with serve_sink() as sink:
        sink.default = Reply(200, delay=0.05)
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)
        await_report: list[Any] = []
        async with client:
            for i in range(10):
                await client.track("buy", f"u{i}")
            with anyio.CancelScope() as scope:
                scope.cancel()
                await_report.append(await client.close())
    assert await_report[0].delivered == 10


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_drains_the_queue_before_the_process_ends(backend: str) -> None:
    """SIGINT (Ctrl-C) while the body waits: the queued event is delivered on the way out."""
    script = exit_script(backend, 'print("ready", flush=True)', "await anyio.sleep_forever()")
    out, err = interrupt_when_ready("-c", script)
    assert out.split() == ["sent", "1"], err
    assert "ExceptionGroup" not in err
    if backend == "asyncio" and sys.version_info < (3, 11):
        # Python 3.10's asyncio.run has no SIGINT handler of its own: the KeyboardInterrupt leaves the loop, which
        # then cancels the main task, and the process ends with that CancelledError (the drain still ran).
        assert "CancelledError" in err
    else:
        assert "KeyboardInterrupt" in err


async def test_close_with_an_integer_beyond_a_float_drains_and_the_block_ends() -> None:
    # 10**4000 has no float value: close() once raised OverflowError from inside itself, leaving the background
    # work running, so leaving the block hung for ever. Now the timeout is logged and replaced.
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
        with anyio.fail_after(20):
            async with client:
                await client.track("buy", "u1")
                report = await client.close(timeout=10**4000)
    assert report.delivered == 1 and report.queued == 0
