"""The OptimizelyConfig projection is built in the background, in bounded steps, for every config a client uses.

A running client builds the projection of its config on the loop (a task of its runner for a static
datafile's config, the poller for each update before CONFIG_UPDATE), so ``get_optimizely_config()`` finds it
ready; a call before that build is over runs only the steps it has left, and both end with one object. Steps
are counted by the build itself (``ProjectionBuild.steps_run``); nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _datafile_server import DatafileServer
from _support.interrupt import interrupt_when_ready
from bigdatafile import build_datafile
from optimizely_async import AsyncOptimizely, NotificationType, SyncOptimizely
from optimizely_async.config import optimizely_config as oc
from optimizely_async.config.project_config import ProjectConfig, parse_config
from optimizely_async.testing import RecordingDispatcher

GUARD = 20.0  # seconds; only stops a broken test from hanging
SRC = str(Path(__file__).resolve().parents[1] / "src")

#: 250 flags: a build of thousands of steps (over 10 ms), long enough to catch it half done.
BIG = json.dumps(build_datafile("1", flags=250))
BIG2 = json.dumps(build_datafile("2", flags=250))


def plain(obj: Any, memo: dict[int, Any]) -> Any:
    """``obj`` as dicts, lists and values (``dataclasses.asdict`` without its copies, each shared object once)."""
    known = memo.get(id(obj))
    if known is not None:
        return known
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: Any = {name: plain(getattr(obj, name), memo) for name in _fields(type(obj))}
    elif isinstance(obj, dict):
        out = {k: plain(v, memo) for k, v in obj.items()}
    elif isinstance(obj, tuple):
        out = [plain(v, memo) for v in obj]
    else:
        return obj
    memo[id(obj)] = out
    return out


@functools.cache
def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def rebuilt(config: ProjectConfig) -> oc.ProjectionBuild:
    """A build of the same datafile on its own, run at once, from a config parsed anew."""
    build = oc.ProjectionBuild(parse_config(config.raw))
    build.finish()
    return build


def same_as_fresh(
    projection: oc.OptimizelyConfig | None, config: ProjectConfig, whole: oc.ProjectionBuild | None = None
) -> bool:
    """Whether ``projection`` equals one built on its own (``whole``, or a new one) from the same datafile."""
    return bool(plain(projection, {}) == plain((whole or rebuilt(config)).finish(), {}))


def least_steps(config: ProjectConfig) -> int:
    """The steps a build of ``config`` takes at least: a step ends once it has made ``oc.STEP_OBJECTS``
    objects, after the flag or experiment that passes it, and making the flags' default variables and the
    delivery rules (two objects each) are parts of their own."""
    flags = config.flags_by_key.values()
    variables = [len(f.variables) + 1 for f in flags]
    rules = [2 * len(f.rollout_rules) + 1 for f in flags]
    return sum(variables) // (oc.STEP_OBJECTS + max(variables)) + sum(rules) // (oc.STEP_OBJECTS + max(rules))


def client_build(client: AsyncOptimizely) -> oc.ProjectionBuild | None:
    return client._projection


async def until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(GUARD):
        while not predicate():
            await anyio.lowlevel.checkpoint()


# ------------------------------------------------------------------------------------------- async client


@pytest.mark.anyio
async def test_the_projection_is_ready_once_the_client_settles_without_a_call() -> None:
    turns = 0
    async with AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher()) as client:
        with anyio.fail_after(GUARD):
            while (build := client_build(client)) is None or not build.done:
                turns += 1  # this task ran while the build went on: it did not hold the loop throughout
                await anyio.lowlevel.checkpoint()
        config = client.config
        assert config is not None and build.config is config
        assert build.steps_run >= least_steps(config) > 10  # bounded steps, not one long go
        assert turns > 10
        steps = build.steps_run
        projection = client.get_optimizely_config()
        assert build.steps_run == steps  # the first call took no build step
        assert projection is not None and client.get_optimizely_config() is projection
        assert oc.optimizely_config_for(config) is projection
    assert same_as_fresh(projection, config)


@pytest.mark.anyio
async def test_a_call_during_the_background_build_runs_only_the_steps_left() -> None:
    async with AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher()) as client:
        await until(lambda: (b := client_build(client)) is not None and b.steps_run > 0)
        build = client_build(client)
        assert build is not None and not build.done  # caught half done
        before = build.steps_run
        projection = client.get_optimizely_config()
        assert projection is not None and build.done
        config = client.config
        assert config is not None
        whole = rebuilt(config)
        assert 0 < before < build.steps_run == whole.steps_run  # each step ran once
        for _ in range(20):  # the background task sees the build done and ends; it runs no step again
            await anyio.lowlevel.checkpoint()
        assert build.steps_run == whole.steps_run
        assert client.get_optimizely_config() is projection
        assert build.finish() is projection and oc.optimizely_config_for(config) is projection
    assert same_as_fresh(projection, config, whole)


@pytest.mark.anyio
async def test_a_revision_replaced_mid_build_is_dropped() -> None:
    async with AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher()) as client:
        await until(lambda: (b := client_build(client)) is not None and b.steps_run > 0)
        old = client_build(client)
        assert old is not None and not old.done
        updated = parse_config(BIG2)
        # What the poller does with a new revision: build its projection in steps, switch, then CONFIG_UPDATE.
        seen: list[oc.ProjectionBuild | None] = []
        client.notification_center.add_notification_listener(
            NotificationType.OPTIMIZELY_CONFIG_UPDATE, lambda: seen.append(client_build(client))
        )
        await client._on_new_config(updated)
        new = client_build(client)
        assert new is not None and new is not old and new.config is updated
        assert seen == [new] and new.done  # built before CONFIG_UPDATE was sent
        stopped_at = old.steps_run
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert old.steps_run == stopped_at and not old.done  # dropped, not finished
        projection = client.get_optimizely_config()
        assert projection is not None and projection.revision == "2"
        assert new.steps_run >= least_steps(updated)
    assert same_as_fresh(projection, updated)


@pytest.mark.anyio
async def test_no_build_step_runs_after_close() -> None:
    before = set(asyncio.all_tasks()) if _on_asyncio() else set()
    client = AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher())
    async with client:
        await until(lambda: (b := client_build(client)) is not None and b.steps_run > 0)
    build = client_build(client)
    assert build is not None and not build.done  # closed half way through the build
    stopped_at = build.steps_run
    await anyio.sleep(0.05)
    for _ in range(50):
        await anyio.lowlevel.checkpoint()
    assert build.steps_run == stopped_at  # no task outlived close()
    if _on_asyncio():
        assert set(asyncio.all_tasks()) == before
    projection = client.get_optimizely_config()  # still answers after close: the rest, at once
    assert projection is not None and build.done
    config = client.config
    assert config is not None
    assert same_as_fresh(projection, config)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.anyio
async def test_each_polled_revision_is_built_in_the_background() -> None:
    """A polled revision's projection is built before the client switches to it: whenever the client has a
    config, its projection is complete, so get_optimizely_config() never runs a build step itself."""
    with DatafileServer() as server:
        server.set_datafile(BIG)
        client = AsyncOptimizely(
            sdk_key="ProjectionSdkKey",
            datafile_url_template=f"http://127.0.0.1:{server.port}/datafiles/{{sdk_key}}.json",
            update_interval=0.05,
            event_dispatcher=RecordingDispatcher(),
        )
        async with client:
            assert await client.wait_until_ready(GUARD)
            for revision, text in (("1", BIG2), ("2", None)):
                build = client_build(client)  # no waiting: complete when the config became current
                assert build is not None
                config = client.config
                assert config is not None and build.config is config and build.done
                steps = build.steps_run
                projection = client.get_optimizely_config()
                assert build.steps_run == steps and projection is not None and projection.revision == revision
                if text is not None:
                    server.set_datafile(text)
                    await until(functools.partial(lambda old: client.config is not old, config))


def test_ctrl_c_during_the_background_build_on_trio_still_drains() -> None:
    """SIGINT while the projection is being built: on trio it goes to the main task, and close() drains."""
    script = textwrap.dedent(
        """
        import json, sys
        import anyio
        sys.path.insert(0, sys.argv[1])
        from bigdatafile import build_datafile
        from optimizely_async import AsyncOptimizely, DispatchResult

        text = json.dumps(build_datafile("1", flags=1500))

        class Out:
            async def dispatch(self, request):
                print("sent", len(request.payload["visitors"]), flush=True)
                return DispatchResult(delivered=True, status=200)

        async def main():
            async with AsyncOptimizely(datafile=text, event_dispatcher=Out(), flush_interval=60) as client:
                await client.track(next(iter(client.config.events_by_key)), "u1")
                print("ready", flush=True)
                await anyio.sleep_forever()

        anyio.run(main, backend="trio")
        """
    )
    tests = str(Path(__file__).resolve().parent)
    out, err = interrupt_when_ready("-c", script, tests)
    assert out.split() == ["sent", "1"], err
    assert "KeyboardInterrupt" in err  # it still stops the program


# -------------------------------------------------------------------------------------------- sync client


def test_sync_client_builds_on_its_loop_thread_and_callers_share_the_rest() -> None:
    with DatafileServer() as server:
        server.set_datafile(BIG)
        with SyncOptimizely(
            sdk_key="ProjectionSdkKey",
            datafile_url_template=f"http://127.0.0.1:{server.port}/datafiles/{{sdk_key}}.json",
            update_interval=60,
            event_dispatcher=RecordingDispatcher(),
        ) as client:
            assert client.wait_until_ready(GUARD)
            inner = client._live()
            deadline = time.monotonic() + GUARD
            while (build := inner._projection) is None or not build.done:
                assert time.monotonic() < deadline
                time.sleep(0.002)
            steps = build.steps_run
            projection = client.get_optimizely_config()
            assert build.steps_run == steps and projection is not None  # built on the loop thread, no call needed
            config = client.config
            assert config is not None
    assert same_as_fresh(projection, config)


def test_sync_callers_racing_the_loop_thread_get_one_projection_and_no_step_twice() -> None:
    # A static datafile: the loop thread starts with the first event, and then builds the projection.
    with SyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher()) as client:
        config = client.config
        assert config is not None
        client.track(next(iter(config.events_by_key)), "u1")  # starts the loop thread
        inner = client._live()
        deadline = time.monotonic() + GUARD
        while (build := inner._projection) is None or build.steps_run == 0:
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        results: list[Any] = []
        barrier = threading.Barrier(4)

        def call() -> None:
            barrier.wait()
            results.append(client.get_optimizely_config())

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GUARD)
        assert len(results) == 4 and results[0] is not None and all(r is results[0] for r in results)
        assert inner._projection is build and build.done
        whole = rebuilt(config)
        assert build.steps_run == whole.steps_run  # the loop thread and the callers ran each step once
    assert same_as_fresh(results[0], config, whole)
