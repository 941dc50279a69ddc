"""Logging: quiet at INFO (compared with the official SDK in the same run), no user data above DEBUG, and
``logger=`` receiving everything one client logs, background work included, on asyncio and trio."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from _cmab_odp_server import Reply as StandInReply
from _cmab_odp_server import serve_stand_in
from _cmab_support import FLAG as CMAB_FLAG
from _cmab_support import small_datafile
from _datafile_server import DatafileServer, Status
from _logcapture import Records
from _sink_server import Reply, serve_sink
from differential import make_official
from optimizely_async import AsyncOptimizely, NotificationType
from optimizely_async.errors import ConfigurationError
from optimizely_async.testing import DatafileBuilder

pytestmark = pytest.mark.anyio

CALLS = 1_000
SECRET_VALUE = "pat@example.org"  # an attribute value that must never show above DEBUG


def datafile() -> dict[str, Any]:
    return (
        DatafileBuilder()
        .event("purchase")
        .audience("adults", age=("ge", 18))
        .flag("checkout", variables={"title": "Hi"})
        .experiment("checkout_test", audience="adults", metrics=["purchase"])
        .rollout(enabled=True)
        .flag("banner")
        .rollout(enabled=True)
        .ab_test("legacy_test", metrics=["purchase"])
        .build()
    )


@pytest.fixture
def root_at_info() -> Iterator[Records]:
    """The root logger at INFO with one handler, as ``logging.basicConfig(level=INFO)`` or uvicorn leaves it."""
    root = logging.getLogger()
    handler = Records()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def user_id(i: int) -> str:
    return f"visitor-{i:05d}"


def attributes(i: int) -> dict[str, Any]:
    # "email" is not in the datafile: the official SDK logs an error for it with every event.
    return {"age": 15 + i % 10, "email": SECRET_VALUE}


async def ours_mixed(client: AsyncOptimizely) -> None:
    """CALLS mixed requests: decide with an impression, decide of a delivery, the legacy calls, track; one in
    a hundred names a flag or event that does not exist."""
    for i in range(CALLS):
        uid, attrs = user_id(i), attributes(i)
        user = client.create_user_context(uid, attrs)
        await user.decide("checkout")
        await user.decide("banner")
        await client.is_feature_enabled("banner", uid, attrs)
        await client.activate("legacy_test", uid, attrs)
        await client.track("purchase", uid, attrs, {"revenue": 100, "value": 1.5})
        if i % 100 == 0:
            await user.decide("no_such_flag")
            await client.track("no_such_event", uid, attrs)


def official_mixed(client: Any) -> None:
    for i in range(CALLS):
        uid, attrs = user_id(i), attributes(i)
        user = client.create_user_context(uid, attrs)
        user.decide("checkout")
        user.decide("banner")
        client.is_feature_enabled("banner", uid, attrs)
        client.activate("legacy_test", uid, attrs)
        client.track("purchase", uid, attrs, {"revenue": 100, "value": 1.5})
        if i % 100 == 0:
            user.decide("no_such_flag")
            client.track("no_such_event", uid, attrs)


def leaks(lines: list[str]) -> list[str]:
    return [line for line in lines if "visitor-" in line or SECRET_VALUE in line]


async def test_quieter_than_the_official_sdk_at_info(root_at_info: Records) -> None:
    official, _, _ = make_official(datafile())
    try:
        official_mixed(official)
    finally:
        official.close()
    async with (
        serve_sink() as sink,
        AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url, batch_size=100) as client,
    ):
        await ours_mixed(client)
    theirs, ours = root_at_info.lines("optimizely"), root_at_info.lines("optimizely_async")
    print(f"records at INFO+ for {CALLS} mixed requests: official {len(theirs)}, ours {len(ours)}")
    assert len(theirs) > CALLS  # the comparison means something: the official SDK logs per call
    assert leaks(ours) == []
    # The caller's mistakes are still reported (an unknown flag and an unknown event, once per hundred)...
    assert sum("no_such_flag" in line for line in ours) == CALLS // 100
    assert sum("no_such_event" in line for line in ours) == CALLS // 100
    # ... and nothing else: no per-call line for the valid calls.
    assert len(ours) == 2 * (CALLS // 100)
    assert len(ours) * 10 < len(theirs)


async def test_debug_still_has_the_per_call_lines(root_at_info: Records) -> None:
    """The lines moved to DEBUG are there when DEBUG is on for the SDK alone."""
    library = logging.getLogger("optimizely_async")
    library.setLevel(logging.DEBUG)
    try:
        async with serve_sink() as sink, AsyncOptimizely(datafile=datafile(), event_endpoint=sink.url) as client:
            await client.track("purchase", user_id(1), attributes(1))
            await client.activate("legacy_test", user_id(1), attributes(1))
    finally:
        library.setLevel(logging.NOTSET)
    debug = root_at_info.lines("optimizely_async", logging.DEBUG)
    assert 'Tracking event "purchase" for user "visitor-00001".' in debug
    assert 'Attribute "email" is not in datafile.' in debug
    assert any(line.startswith('Activating user "visitor-00001"') for line in debug)
    assert root_at_info.lines("optimizely_async") == []


def test_logger_must_be_a_logger() -> None:
    with pytest.raises(ConfigurationError, match="logger must be"):
        AsyncOptimizely(datafile=datafile(), logger="optimizely")  # type: ignore[arg-type]


def own_logger(name: str) -> tuple[logging.Logger, Records]:
    target = logging.getLogger(name)
    handler = Records()
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    target.propagate = False
    return target, handler


async def test_two_clients_two_loggers_background_work_included(root_at_info: Records) -> None:
    """Each client's lines, from its calls and from its background tasks (a failed event request to a sink
    answering 500, a failed datafile poll), reach its own logger and nothing else."""
    first_logger, first = own_logger("app.first")
    adapter_base, second = own_logger("app.second")
    second_logger = logging.LoggerAdapter(adapter_base, {"tenant": "b"})
    with DatafileServer() as datafiles:
        datafiles.set_datafile(datafile())
        async with serve_sink() as sink:
            sink.script(*[Reply(500)] * 20)
            one = AsyncOptimizely(
                datafile=datafile(),
                event_endpoint=sink.url,
                batch_size=1,
                close_timeout=0.2,
                logger=first_logger,
            )
            two = AsyncOptimizely(
                sdk_key="tenant-b",
                datafile_url_template=f"http://127.0.0.1:{datafiles.port}/datafiles/{{sdk_key}}.json",
                update_interval=0.05,
                logger=second_logger,
            )
            async with one, two:
                assert await two.wait_until_ready(5)
                datafiles.enqueue(*[Status(500)] * 3)
                one.notification_center.add_notification_listener("nonsense", print)  # type: ignore[arg-type]
                async with anyio.create_task_group() as tg:  # both at once, interleaved on one loop
                    tg.start_soon(one.track, "purchase", "u1", {"email": SECRET_VALUE})
                    tg.start_soon(two.track, "unknown_b_event", "u2")
                    user_two = two.create_user_context("u2")
                    tg.start_soon(user_two.decide, "unknown_b_flag")
                with anyio.fail_after(5):  # the event request fails (500): the queue logs that it retries
                    while not any(line.startswith("Event request failed") for line in first.lines("app", 0)):
                        await anyio.sleep(0.02)
                    while datafiles.pending:  # and the polls fail too
                        await anyio.sleep(0.02)
                    await anyio.sleep(0.1)
    first_lines = first.lines("app", logging.DEBUG)
    second_lines = second.lines("app", logging.DEBUG)
    # the first client: its call (DEBUG), its listener mistake (ERROR), and its event queue's failure (ERROR)
    assert 'Tracking event "purchase" for user "u1".' in first_lines
    assert any(line.startswith("Invalid notification_type") for line in first_lines)
    assert any(line.startswith("Event request failed") for line in first_lines)
    assert any(line.startswith("The event queue did not drain") for line in first.lines("app", logging.WARNING))
    # the second: its unknown keys, through the adapter, and its failed polls
    assert 'Event "unknown_b_event" is not in datafile.' in second_lines
    assert "No feature flag was found for key 'unknown_b_flag'." in second_lines
    assert any("500" in line for line in second.lines("app", logging.WARNING)), second_lines
    # no line crosses over, and nothing reaches the library logger
    assert not any("unknown_b" in line or "500" in line for line in first_lines if "Event request" not in line)
    assert not any("purchase" in line or "Invalid notification" in line for line in second_lines)
    assert not [r for r in root_at_info.records if r.name.startswith("optimizely_async")]
    assert leaks(first.lines("app")) == [] and leaks(second.lines("app")) == []
    assert not any("tenant-b" in line for line in second_lines)  # the SDK key, shortened in every line
    for target in (first_logger, adapter_base):
        for handler in list(target.handlers):
            target.removeHandler(handler)


async def test_all_background_work_logs_to_the_clients_logger(root_at_info: Records) -> None:
    """Every part of the work ``async with client`` starts logs to ``logger=``, on asyncio and trio: the event
    queue (a sink answering 500), the ODP event queue (its endpoint answering 500), the datafile poller (polls
    answering 500) and the async listener queue (a listener that raises); so do the CMAB and ODP requests made
    for decide() and fetch_qualified_segments(). Nothing reaches the library logger. (The background tasks get
    the logger from the one place that starts them; this fails if any of them lost it.)"""
    target, records = own_logger("app.background")

    async def failing_listener(*args: Any) -> None:
        raise RuntimeError("this listener fails")

    with serve_stand_in() as stand_in, DatafileServer() as datafiles:
        stand_in.events = lambda body, attempt: StandInReply(500)
        stand_in.predict = lambda rule_id, body, attempt: StandInReply(500)
        stand_in.graphql = lambda body: StandInReply(500)
        datafiles.set_datafile(small_datafile(host=stand_in.url))
        async with serve_sink() as sink:
            sink.script(*[Reply(500)] * 20)
            client = AsyncOptimizely(
                sdk_key="background-logs",
                datafile_url_template=f"http://127.0.0.1:{datafiles.port}/datafiles/{{sdk_key}}.json",
                update_interval=0.05,
                event_endpoint=sink.url,
                batch_size=1,
                close_timeout=0.3,
                cmab_prediction_endpoint=stand_in.url + "/predict/{}",
                cmab_request_timeout=0.5,
                odp_segment_request_timeout=0.5,
                odp_event_flush_interval=0,
                logger=target,
            )
            client.notification_center.add_notification_listener(NotificationType.TRACK, failing_listener)
            async with client:
                assert await client.wait_until_ready(5)
                datafiles.enqueue(*[Status(500)] * 3)
                await client.track("purchase", "u1")
                await client.send_odp_event("login", {"fs_user_id": "u1"})
                user = client.create_user_context("u1", {"age": 30, "plan": "pro"})
                assert user is not None
                await user.decide(CMAB_FLAG)
                assert await user.fetch_qualified_segments() is False
                expected = (
                    "Event request failed",  # the event queue
                    "ODP event send failed",  # the ODP event queue
                    "Unknown problem when sending",  # the async listener queue
                    "CMAB decision fetch failed",  # decide()
                    "Audience segments fetch failed",  # fetch_qualified_segments()
                )
                with anyio.fail_after(10):
                    while not all(
                        any(line.startswith(start) for line in records.lines("app", 0)) for start in expected
                    ):
                        await anyio.sleep(0.02)
                    while datafiles.pending:  # the polls fail too
                        await anyio.sleep(0.02)
                    await anyio.sleep(0.1)
    polls = [line for line in records.lines("app", logging.WARNING) if "/datafiles/" in line]
    assert any("HTTP 500" in line for line in polls), polls  # the datafile poller
    assert not [r.getMessage() for r in root_at_info.records if r.name.startswith("optimizely_async")]
    for handler in list(target.handlers):
        target.removeHandler(handler)
