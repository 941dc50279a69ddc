"""Fork scenarios for tests/test_fork_held_work.py, each run in its own process
(``python _fork_held_script.py SCENARIO BACKEND``). Prints one JSON line per fact the test checks.

Work a client holds before it starts (track() calls waiting for the first datafile, ODP events, events in its
queue) was done by the process that holds it; a forked child that starts its copy of the client must not
send it again.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import anyio

from _cmab_odp_server import StandIn, serve_stand_in
from _cmab_support import small_datafile
from _datafile_server import DatafileServer
from _sync_fork_script import wait_child
from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest, SyncOptimizely

EVENT = "purchase"


def say(**fact: Any) -> None:
    print(json.dumps(fact), flush=True)


class Out:
    """Prints who sent which visitor's event."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        for visitor in request.payload["visitors"]:
            say(sent=self.name, pid=os.getpid(), visitor=visitor["visitor_id"])
        return DispatchResult(delivered=True, status=200)


def odp_sent(odp: StandIn) -> None:
    for received in odp.requests("/v3/events"):
        for event in received.json:
            say(odp=event["identifiers"]["fs_user_id"])


def async_before_start(backend: str) -> None:
    """Un-started AsyncOptimizely clients fork: one holds a track() call for its first datafile, the other has
    an event and an ODP event queued. Parent and child then each start them."""
    with serve_stand_in() as odp, DatafileServer() as server:
        held = AsyncOptimizely(
            sdk_key="k", datafile_url_template=f"{server.url}/{{sdk_key}}.json", event_dispatcher=Out("held")
        )
        static = AsyncOptimizely(
            datafile=small_datafile(host=odp.url), event_dispatcher=Out("static"), odp_event_flush_interval=0
        )

        async def before() -> None:
            await held.track(EVENT, "before-held")
            await static.track(EVENT, "before-queued")
            await static.send_odp_event("bought", {"fs_user_id": "before-odp"})

        anyio.run(before, backend=backend)
        say(parent_held=held.stats().queued, parent_queued=static.stats().queued, odp=static.stats().odp.queued)
        server.set_datafile(small_datafile(host=odp.url))

        async def use(who: str) -> None:
            async with held, static:
                assert await held.wait_until_ready(20)
                await held.track(EVENT, f"{who}-held")
                await static.track(EVENT, f"{who}-queued")
                await static.send_odp_event("bought", {"fs_user_id": f"{who}-odp"})
            say(
                who=who,
                held=held.stats().submitted,
                static=static.stats().submitted,
                odp=static.stats().odp.submitted,
                odp_delivered=static.stats().odp.delivered,
            )

        pid = os.fork()
        if pid == 0:
            try:
                anyio.run(use, "child", backend=backend)
            finally:
                os._exit(0)
        code = wait_child(pid)
        anyio.run(use, "parent", backend=backend)
        odp_sent(odp)
        say(code=code)


def async_started(backend: str) -> None:
    """Started clients fork inside the parent's loop: one still waits for its first datafile, the other has an
    ODP event waiting for its batch. Their copies in the child refuse what they are given, counted."""
    with serve_stand_in() as odp, DatafileServer() as server:
        held = AsyncOptimizely(
            sdk_key="k", datafile_url_template=f"{server.url}/{{sdk_key}}.json", event_dispatcher=Out("held")
        )
        static = AsyncOptimizely(
            datafile=small_datafile(host=odp.url), event_dispatcher=Out("static"), odp_event_flush_interval=60
        )

        def child() -> None:
            async def use() -> None:
                with anyio.fail_after(10):
                    await held.track(EVENT, "child-held")
                    await static.send_odp_event("bought", {"fs_user_id": "child-odp"})
                    await held.close()
                    await static.close()
                say(who="child", held=dict(held.stats().dropped), odp=dict(static.stats().odp.dropped))
                say(child_odp_submitted=static.stats().odp.submitted, child_held_queued=held.stats().queued)

            anyio.run(use, backend=backend)

        async def main() -> None:
            async with held, static:
                await held.track(EVENT, "before-held")
                await static.send_odp_event("bought", {"fs_user_id": "before-odp"})
                pid = os.fork()
                if pid == 0:
                    try:
                        thread = threading.Thread(target=child)  # the child is inside the parent's loop
                        thread.start()
                        thread.join()
                    finally:
                        os._exit(0)
                code = wait_child(pid)
                server.set_datafile(small_datafile(host=odp.url))
                assert await held.wait_until_ready(20)
            say(code=code, held=held.stats().delivered, odp=static.stats().odp.delivered)

        anyio.run(main, backend=backend)
        odp_sent(odp)


def sync_before_ready(backend: str) -> None:
    """A SyncOptimizely holds a track() call for its first datafile when the process forks."""
    with DatafileServer() as server:
        client = SyncOptimizely(
            sdk_key="k",
            datafile_url_template=f"{server.url}/{{sdk_key}}.json",
            update_interval=0.2,
            event_dispatcher=Out("sync"),
        )
        client.track(EVENT, "before-held")
        say(parent_held=client.stats().queued)
        server.set_datafile(small_datafile())
        pid = os.fork()
        if pid == 0:
            try:
                assert client.wait_until_ready(20)
                client.track(EVENT, "child-held")
                report = client.close()
                say(who="child", sync=report.submitted, delivered=report.delivered)
            except BaseException as exc:  # os._exit() would lose the traceback
                say(child_error=repr(exc))
            finally:
                os._exit(0)
        code = wait_child(pid)
        assert client.wait_until_ready(20)
        client.track(EVENT, "parent-held-2")
        report = client.close()
        say(who="parent", sync=report.submitted, delivered=report.delivered)
        say(code=code)


if __name__ == "__main__":
    scenarios = {"async_before_start": async_before_start, "async_started": async_started}
    scenarios["sync_before_ready"] = sync_before_ready
    scenarios[sys.argv[1]](sys.argv[2])
