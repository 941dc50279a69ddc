"""The OptimizelyConfig projection is built on the loop, in bounded steps, for every config a client uses.

A client builds its static datafile's projection while it is entered (``async with`` / ``start()``), and
each polled revision's before it switches to it, so ``get_optimizely_config()`` on a started client finds it
ready; a call before that (a client not started, another task during entry) runs only the steps left, and
both end with one object. Steps are counted by the build itself (``ProjectionBuild.steps_run``); nothing here
asserts a timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import os
import subprocess
import sys
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
from bigdatafile import build_datafile
from optimizely_async import AsyncOptimizely, NotificationType, SyncOptimizely
from optimizely_async.config import optimizely_config as oc
from optimizely_async.config.project_config import ProjectConfig, parse_config
from optimizely_async.testing import RecordingDispatcher

GUARD = 20.0  # seconds; only stops a broken test from hanging
SRC = str(Path(__file__).resolve().parents[1] / "src")

#: 250 flags: a build of tens of steps (several ms), long enough to catch it half done.
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
    objects, after the flag or experiment that passes it, and the flags' maps of default variables (one each)
    and the delivery rules (two objects each) are parts of their own."""
    flags = config.flags_by_key.values()
    rules = [2 * len(f.rollout_rules) + 1 for f in flags]
    return len(flags) // oc.STEP_OBJECTS + sum(rules) // (oc.STEP_OBJECTS + max(rules))


def client_build(client: AsyncOptimizely) -> oc.ProjectionBuild | None:
    return client._projection


async def until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(GUARD):
        while not predicate():
            await anyio.lowlevel.checkpoint()


# ------------------------------------------------------------------------------------------- async client


@functools.cache
def huge() -> str:
    """1,000 flags: a build of a few hundred steps, tens of checkpoints of the loop."""
    return json.dumps(build_datafile("1", flags=1000))


async def checkpointing(seen: list[int], client: AsyncOptimizely, stop: anyio.Event) -> None:
    """Take a turn at every checkpoint until ``stop``, noting how many build steps had run at each."""
    while not stop.is_set():
        build = client_build(client)
        seen.append(build.steps_run if build is not None else 0)
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["async with", "start(task_group)", "start()"])
async def test_entry_returns_with_the_projection_built_in_steps_while_other_tasks_run(how: str) -> None:
    """A static datafile's projection is complete when entry returns; meanwhile another task had turns, and
    between two of them the build ran only a small part of its steps (it held the loop for a step budget, not
    for the whole build). Counted in steps, not timed."""
    if how == "start()" and not _on_asyncio():
        pytest.skip("start() without a task group is asyncio's (a task of its own)")
    client = AsyncOptimizely(datafile=huge(), event_dispatcher=RecordingDispatcher())
    assert client_build(client) is None  # nothing built at construction
    seen: list[int] = []
    entered = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(checkpointing, seen, client, entered)
        await anyio.lowlevel.checkpoint()
        if how == "async with":
            async with client:
                entered.set()
                build, projection = _built(client)
        else:
            await (client.start(group) if how == "start(task_group)" else client.start())
            entered.set()
            build, projection = _built(client)
            await client.close()
    config = client.config
    assert config is not None
    steps = build.steps_run
    assert steps >= least_steps(config) > 50
    during = [s for s in seen if 0 < s < steps]
    assert len(during) >= 10  # the other task ran while the build went on
    most = max(later - earlier for earlier, later in itertools.pairwise(seen))
    assert 0 < most * 4 <= steps  # and never waited for more than a quarter of it
    assert oc.optimizely_config_for(config) is projection
    assert same_as_fresh(projection, config)


def _built(client: AsyncOptimizely) -> tuple[oc.ProjectionBuild, oc.OptimizelyConfig]:
    """The client's build, right after entry: complete, and the first call runs no step of it."""
    build = client_build(client)
    assert build is not None and build.done and build.config is client.config
    steps = build.steps_run
    projection = client.get_optimizely_config()
    assert projection is not None and build.steps_run == steps
    assert client.get_optimizely_config() is projection
    return build, projection


@pytest.mark.anyio
async def test_a_call_before_entry_builds_at_once_and_entry_adds_no_step() -> None:
    client = AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher())
    projection = client.get_optimizely_config()  # not started: the whole build, at once
    build = client_build(client)
    assert projection is not None and build is not None and build.done
    steps = build.steps_run
    assert steps == rebuilt(build.config).steps_run
    async with client:
        assert client_build(client) is build and build.steps_run == steps
        assert client.get_optimizely_config() is projection


@pytest.mark.anyio
async def test_a_call_from_another_task_during_entry_runs_only_the_steps_left() -> None:
    client = AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher())
    caught: list[tuple[int, int, oc.OptimizelyConfig | None]] = []

    async def call_mid_build() -> None:
        await until(lambda: (b := client_build(client)) is not None and b.steps_run > 0)
        build = client_build(client)
        assert build is not None
        before = build.steps_run
        caught.append((before, int(build.done), client.get_optimizely_config()))

    async with anyio.create_task_group() as group:
        group.start_soon(call_mid_build)
        async with client:
            build = client_build(client)
            assert build is not None and build.done
            assert len(caught) == 1
            before, was_done, projection = caught[0]
            assert not was_done and projection is not None  # caught half done, and finished by the call
            config = client.config
            assert config is not None
            whole = rebuilt(config)
            assert 0 < before < build.steps_run == whole.steps_run  # each step ran once
            assert client.get_optimizely_config() is projection
    assert same_as_fresh(projection, config, whole)


@pytest.mark.anyio
async def test_cancelling_the_entry_stops_the_build_and_a_later_entry_finishes_it() -> None:
    before = set(asyncio.all_tasks()) if _on_asyncio() else set()
    client = AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher())
    with anyio.CancelScope() as scope:

        async def cancel_mid_build() -> None:
            await until(lambda: (b := client_build(client)) is not None and b.steps_run > 0)
            scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(cancel_mid_build)
            async with client:
                pytest.fail("entered although cancelled")
    assert scope.cancelled_caught
    build = client_build(client)
    assert build is not None and not build.done  # stopped half way through
    stopped_at = build.steps_run
    await anyio.sleep(0.05)
    for _ in range(50):
        await anyio.lowlevel.checkpoint()
    assert build.steps_run == stopped_at  # nothing goes on building in the background
    if _on_asyncio():
        assert set(asyncio.all_tasks()) == before
    assert client.stats().state == "unopened"
    async with client:  # a later entry runs the steps left
        assert client_build(client) is build and build.done
        projection = client.get_optimizely_config()
    config = client.config
    assert config is not None and projection is not None
    assert build.steps_run == rebuilt(config).steps_run
    assert same_as_fresh(projection, config)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.anyio
async def test_a_polled_revision_is_built_before_the_switch_and_the_old_build_is_left_as_it_was() -> None:
    async with AsyncOptimizely(datafile=BIG, event_dispatcher=RecordingDispatcher()) as client:
        old = client_build(client)
        assert old is not None and old.done
        old_steps = old.steps_run
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
        assert old.steps_run == old_steps
        projection = client.get_optimizely_config()
        assert projection is not None and projection.revision == "2"
        assert new.steps_run >= least_steps(updated)
    assert same_as_fresh(projection, updated)


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


def test_ctrl_c_during_the_entry_build_on_trio_goes_to_the_main_task() -> None:
    """A real SIGINT, raised by the process itself in the middle of a build step of a client being entered:
    on trio it is raised in the main task (where the entry is awaited), not inside the client's background
    work; the entry stops, and another client open meanwhile still drains its queue as the program ends."""
    script = textwrap.dedent(
        """
        import json, signal, sys
        import anyio
        sys.path.insert(0, sys.argv[1])
        from bigdatafile import build_datafile
        from optimizely_async import AsyncOptimizely, DispatchResult
        from optimizely_async.config.optimizely_config import ProjectionBuild

        big = json.dumps(build_datafile("1", flags=250))
        step = ProjectionBuild._step

        def interrupting_step(self):
            if self.steps_run == 5:
                signal.raise_signal(signal.SIGINT)
            return step(self)

        class Out:
            async def dispatch(self, request):
                print("sent", len(request.payload["visitors"]), flush=True)
                return DispatchResult(delivered=True, status=200)

        async def main():
            small = json.dumps(build_datafile("1", flags=5))
            async with AsyncOptimizely(datafile=small, event_dispatcher=Out(), flush_interval=60) as open_one:
                await open_one.track(next(iter(open_one.config.events_by_key)), "u1")
                ProjectionBuild._step = interrupting_step
                entering = AsyncOptimizely(datafile=big, event_dispatcher=Out())
                try:
                    async with entering:
                        print("entered", flush=True)
                except KeyboardInterrupt:
                    build = entering._projection
                    print("interrupted", build.steps_run > 5, build.done, entering.stats().state, flush=True)
                    raise

        anyio.run(main, backend="trio")
        """
    )
    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, "-c", script, tests],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["interrupted", "True", "False", "unopened", "sent", "1"], done.stderr
    assert "KeyboardInterrupt" in done.stderr and done.returncode != 0  # it still stops the program


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
