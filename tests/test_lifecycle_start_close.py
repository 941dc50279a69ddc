"""``await client.start()`` in one task, ``await client.close()`` in another (arq, on_startup/on_cleanup)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from _lifecycle_kit import Recorder, datafile, visitors
from _sink_server import serve_sink
from optimizely_async import AsyncOptimizely, ClientStateError

pytestmark = pytest.mark.anyio


async def test_start_in_one_task_close_in_another(anyio_backend: str) -> None:
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, flush_interval=60)
        async with anyio.create_task_group() as tg:

            async def startup(task_group: Any) -> None:
                # asyncio: the client runs its work in a task of its own; trio: in the group it is given.
                await client.start(None if anyio_backend == "asyncio" else task_group)
                await client.start()  # idempotent, on either backend once started
                for i in range(7):
                    await client.track("buy", f"u{i}")

            async def shutdown() -> None:
                report = await client.close()
                assert report.delivered == 7

            async with anyio.create_task_group() as startup_group:
                startup_group.start_soon(startup, tg)
            assert client.stats().state == "open"
            async with anyio.create_task_group() as shutdown_group:  # another task, after the first ended
                shutdown_group.start_soon(shutdown)
        assert client.stats().state == "closed"
    assert sorted(visitors(sink)) == [f"u{i}" for i in range(7)]


async def test_start_without_a_task_group_on_trio_says_what_to_do(anyio_backend: str) -> None:
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder())
    if anyio_backend == "asyncio":
        await client.start()
        assert client.stats().state == "open"
        await client.close()
        return
    with pytest.raises(ClientStateError) as info:
        await client.start()
    assert "async with" in str(info.value) and "start(" in str(info.value)
    assert client.stats().state == "unopened"
    async with client:  # the client is still usable the documented way
        assert client.stats().state == "open"


async def test_concurrent_start_calls_start_once_and_concurrent_closes_share_one_report() -> None:
    async with serve_sink() as sink:
        client = AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url)
        reports: list[Any] = []

        async def closer() -> None:
            reports.append(await client.close())

        async with anyio.create_task_group() as runner_group:
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(client.start, runner_group)
            await client.track("buy", "u1")
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(closer)
    assert len(reports) == 3 and reports[0] is reports[1] is reports[2]
    assert reports[0].delivered == 1 and visitors(sink) == ["u1"]


async def test_start_after_close_and_async_with_after_start_raise() -> None:
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder())
    async with anyio.create_task_group() as tg:
        await client.start(tg)
        with pytest.raises(ClientStateError):
            async with client:
                pass
        await client.close()
    with pytest.raises(ClientStateError):
        await client.start()
    assert (await client.close()).submitted == 0  # idempotent


async def test_close_without_start_returns_at_once() -> None:
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder())
    with anyio.fail_after(5):
        await client.flush()
        report = await client.close()
    assert report.submitted == 0


async def test_closing_the_given_task_group_late_still_ends_cleanly() -> None:
    """start(tg): close() ends the background work, so the group the caller owns can end."""
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder())
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await client.start(tg)
            await client.track("buy", "u1")
            await client.close()
    assert client.stats().state == "closed"


async def test_invalid_close_timeouts_are_logged_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    class Lying(float):
        def __ge__(self, other: object) -> bool:
            raise RuntimeError("no")

    for timeout in (Lying(1.0), float("nan"), -1, "soon"):
        client = AsyncOptimizely(datafile=datafile(), event_dispatcher=Recorder(), close_timeout=0.5)
        async with client:
            report = await client.close(timeout=timeout)  # type: ignore[arg-type]
        assert report.submitted == 0
    # A float subclass is read as the plain float it holds (its lying methods never run); the other three are
    # logged and replaced by close_timeout.
    assert sum('Provided "timeout" is in an invalid format' in r.getMessage() for r in caplog.records) == 3


async def test_start_with_a_plain_trio_nursery(anyio_backend: str) -> None:
    if anyio_backend != "trio":
        pytest.skip("a trio nursery is trio's")
    import trio

    recorder = Recorder()
    client = AsyncOptimizely(datafile=datafile(), event_dispatcher=recorder, flush_interval=60)
    with anyio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await client.start(nursery)  # type: ignore[arg-type]
            await client.track("buy", "u1")
            assert recorder.visitors == []
            report = await client.close()
    assert report.delivered == 1 and recorder.visitors == ["u1"]
