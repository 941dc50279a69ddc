"""PollingConfigSource against a real HTTP server on 127.0.0.1, on asyncio and trio."""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from _datafile_server import Body, DatafileServer, Drop, Redirect, Slow, Status
from _support.datafiles import empty_datafile as datafile
from optimizely_async import defaults
from optimizely_async.config.project_config import ProjectConfig, parse_config
from optimizely_async.config.sources import FetchResult, PollingConfigSource
from optimizely_async.errors import ClientStateError, ConfigurationError, InvalidDatafileError

SDK_KEY = "SdkKeyVerySecret123456"
TOKEN = "TokenSuperSecretABCDEF987"
INTERVAL = 0.05


class Recorder:
    """An on_config listener that remembers what it got."""

    def __init__(self) -> None:
        self.configs: list[ProjectConfig] = []

    def __call__(self, config: ProjectConfig) -> None:
        self.configs.append(config)

    @property
    def revisions(self) -> list[str]:
        return [c.revision for c in self.configs]


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait until ``predicate()`` holds; the limit only stops a broken test from hanging."""
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.01)


@pytest.fixture
def server() -> Iterator[DatafileServer]:
    with DatafileServer() as srv:
        srv.set_datafile(datafile("1"))
        yield srv


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_source(server: DatafileServer, recorder: Recorder, **kwargs: Any) -> PollingConfigSource:
    kwargs.setdefault("url_template", server.url + "/datafiles/{sdk_key}.json")
    kwargs.setdefault("update_interval", INTERVAL)
    kwargs.setdefault("request_timeout", 2.0)
    return PollingConfigSource(SDK_KEY, on_config=recorder, **kwargs)


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


# ---------------------------------------------------------------------------- fetch_once


@pytest.mark.anyio
async def test_first_fetch_delivers_the_config(server: DatafileServer, recorder: Recorder) -> None:
    source = make_source(server, recorder)
    try:
        assert source.config is None
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert recorder.revisions == ["1"]
    assert source.config is recorder.configs[0]
    assert isinstance(source.config, ProjectConfig)
    [request] = server.requests
    assert request.path == f"/datafiles/{SDK_KEY}.json"
    assert request.header("if-none-match") is None
    assert request.header("if-modified-since") is None
    assert request.header("authorization") is None
    stats = source.stats
    assert (stats.fetches, stats.updates, stats.failures, stats.revision) == (1, 1, 0, "1")


@pytest.mark.anyio
async def test_not_modified_sends_conditional_headers_and_does_not_redeliver(
    server: DatafileServer, recorder: Recorder
) -> None:
    server.set_datafile(datafile("1"), etag='"abc"', last_modified="Tue, 02 Jan 2024 10:00:00 GMT")
    source = make_source(server, recorder)
    try:
        assert await source.fetch_once() is FetchResult.UPDATED
        assert await source.fetch_once() is FetchResult.NOT_MODIFIED
        assert await source.fetch_once() is FetchResult.NOT_MODIFIED
    finally:
        await source.aclose()
    assert recorder.revisions == ["1"]
    for request in server.requests[1:]:
        assert request.header("if-none-match") == '"abc"'
        assert request.header("if-modified-since") == "Tue, 02 Jan 2024 10:00:00 GMT"
    assert source.stats.not_modified == 2
    assert source.config is not None and source.config.revision == "1"


@pytest.mark.anyio
async def test_last_modified_alone_is_used_when_there_is_no_etag(server: DatafileServer, recorder: Recorder) -> None:
    server.set_datafile(datafile("1"), etag=None, last_modified="Tue, 02 Jan 2024 10:00:00 GMT")
    source = make_source(server, recorder)
    try:
        await source.fetch_once()
        assert await source.fetch_once() is FetchResult.NOT_MODIFIED
    finally:
        await source.aclose()
    assert server.requests[1].header("if-none-match") is None
    assert server.requests[1].header("if-modified-since") == "Tue, 02 Jan 2024 10:00:00 GMT"


@pytest.mark.anyio
async def test_a_changed_datafile_is_delivered_once_per_revision(server: DatafileServer, recorder: Recorder) -> None:
    source = make_source(server, recorder)
    try:
        assert await source.fetch_once() is FetchResult.UPDATED
        server.set_datafile(datafile("2"))
        assert await source.fetch_once() is FetchResult.UPDATED
        # New bytes (new ETag) but the same revision: parsed, not delivered again.
        server.set_datafile(datafile("2", botFiltering=True))
        assert await source.fetch_once() is FetchResult.UNCHANGED
        assert await source.fetch_once() is FetchResult.NOT_MODIFIED
        server.set_datafile(datafile("3"))
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert recorder.revisions == ["1", "2", "3"]
    assert source.stats.unchanged == 1


@pytest.mark.anyio
async def test_invalid_json_then_good_datafile_with_the_same_validators_is_picked_up(
    server: DatafileServer, recorder: Recorder
) -> None:
    # The official SDK stores Last-Modified before parsing, so it would ask If-Modified-Since and get 304
    # for the good datafile forever. We store validators only after a successful parse.
    etag, lm = '"same"', "Wed, 03 Jan 2024 00:00:00 GMT"
    server.enqueue(Body(b'{"version": "4", "revision": ', etag=etag, last_modified=lm))
    server.set_datafile(datafile("7"), etag=etag, last_modified=lm)
    source = make_source(server, recorder)
    try:
        assert await source.fetch_once() is FetchResult.FAILED
        assert source.config is None
        assert "invalid datafile" in (source.stats.last_error or "")
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert server.requests[1].header("if-none-match") is None
    assert server.requests[1].header("if-modified-since") is None
    assert recorder.revisions == ["7"]


@pytest.mark.anyio
async def test_unsupported_version_keeps_the_last_good_config(server: DatafileServer, recorder: Recorder) -> None:
    source = make_source(server, recorder)
    try:
        await source.fetch_once()
        good = source.config
        server.set_datafile({**datafile("2"), "version": "99"})
        assert await source.fetch_once() is FetchResult.FAILED
        assert source.config is good
        assert "version" in (source.stats.last_error or "")
        server.set_datafile(datafile("2"))
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    # The bad body's validators were not stored: the retry still sends revision 1's.
    assert server.requests[2].header("if-none-match") == server.requests[1].header("if-none-match")
    assert server.requests[2].header("if-none-match") is not None
    assert recorder.revisions == ["1", "2"]


@pytest.mark.anyio
async def test_dropped_connection_fails_then_recovers(server: DatafileServer, recorder: Recorder) -> None:
    server.enqueue(Drop())
    source = make_source(server, recorder)
    try:
        assert await source.fetch_once() is FetchResult.FAILED
        assert source.stats.last_error
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert recorder.revisions == ["1"]


@pytest.mark.anyio
async def test_slow_response_times_out(server: DatafileServer, recorder: Recorder) -> None:
    server.enqueue(Slow(30))
    source = make_source(server, recorder, request_timeout=0.3)
    try:
        assert await source.fetch_once() is FetchResult.FAILED
        assert "timed out" in (source.stats.last_error or "")
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "hint"), [(403, "access token"), (404, "404"), (500, "500")])
async def test_error_statuses_fail(server: DatafileServer, recorder: Recorder, status: int, hint: str) -> None:
    server.enqueue(Status(status, b"nope"))
    source = make_source(server, recorder)
    try:
        assert await source.fetch_once() is FetchResult.FAILED
    finally:
        await source.aclose()
    assert hint in (source.stats.last_error or "")
    assert recorder.configs == []


@pytest.mark.anyio
async def test_initial_config_revision_counts_as_delivered(server: DatafileServer, recorder: Recorder) -> None:
    initial = parse_config(datafile("1"))
    source = make_source(server, recorder, initial_config=initial)
    try:
        assert source.config is initial
        assert await source.fetch_once() is FetchResult.UNCHANGED
        server.set_datafile(datafile("2"))
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert recorder.revisions == ["2"]


@pytest.mark.anyio
async def test_adopted_config_revision_counts_as_delivered(server: DatafileServer, recorder: Recorder) -> None:
    source = make_source(server, recorder)
    adopted = parse_config(datafile("1"))
    source.adopt(adopted)
    try:
        assert source.config is adopted
        assert await source.fetch_once() is FetchResult.UNCHANGED
    finally:
        await source.aclose()
    assert recorder.configs == []
    assert source.stats.revision == "1"


@pytest.mark.anyio
async def test_a_custom_parse_is_awaited_on_the_loop(server: DatafileServer, recorder: Recorder) -> None:
    threads: list[int] = []
    bodies: list[bytes] = []

    async def parse(body: bytes) -> ProjectConfig:
        threads.append(threading.get_ident())
        bodies.append(body)
        return parse_config(body)

    source = make_source(server, recorder, parse=parse)
    try:
        await source.fetch_once()
    finally:
        await source.aclose()
    assert threads == [threading.get_ident()]  # no worker thread
    assert json.loads(bodies[0])["revision"] == "1"
    assert recorder.revisions == ["1"]


@pytest.mark.anyio
async def test_async_listener_is_awaited_and_a_failing_one_is_isolated(
    server: DatafileServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def listener(config: ProjectConfig) -> None:
        await anyio.sleep(0)
        seen.append(config.revision)
        if config.revision == "1":
            raise RuntimeError("listener boom")

    source = PollingConfigSource(
        SDK_KEY, on_config=listener, url_template=server.url + "/{sdk_key}", update_interval=INTERVAL
    )
    try:
        assert await source.fetch_once() is FetchResult.UPDATED
        server.set_datafile(datafile("2"))
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert seen == ["1", "2"]
    assert "listener boom" in all_log_text(caplog)


# ---------------------------------------------------------------------------- redirects and the token


@pytest.mark.anyio
async def test_access_token_is_sent_as_bearer(
    server: DatafileServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optimizely_async")
    source = make_source(server, recorder, access_token=TOKEN, url_template=server.url + "/auth/{sdk_key}.json")
    try:
        assert await source.fetch_once() is FetchResult.UPDATED
        assert await source.fetch_once() is FetchResult.NOT_MODIFIED
    finally:
        await source.aclose()
    assert [r.header("authorization") for r in server.requests] == [f"Bearer {TOKEN}"] * 2
    assert server.requests[0].path == f"/auth/{SDK_KEY}.json"
    assert TOKEN not in all_log_text(caplog)


@pytest.mark.anyio
async def test_token_is_not_sent_to_another_origin_on_redirect(
    server: DatafileServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optimizely_async")
    with DatafileServer() as other:
        other.set_datafile(datafile("5"))
        server.enqueue(Redirect(other.url + f"/mirror/{SDK_KEY}.json?sig={TOKEN}", code=307))
        source = make_source(server, recorder, access_token=TOKEN)
        try:
            assert await source.fetch_once() is FetchResult.UPDATED
        finally:
            await source.aclose()
        assert server.requests[0].header("authorization") == f"Bearer {TOKEN}"
        [hop] = other.requests
        assert hop.path.startswith("/mirror/")
        assert hop.header("authorization") is None
    assert recorder.revisions == ["5"]
    logs = all_log_text(caplog)
    assert TOKEN not in logs
    assert SDK_KEY not in logs


@pytest.mark.anyio
async def test_same_origin_redirect_keeps_the_token(server: DatafileServer, recorder: Recorder) -> None:
    server.enqueue(Redirect("/elsewhere.json", code=301))
    source = make_source(server, recorder, access_token=TOKEN)
    try:
        assert await source.fetch_once() is FetchResult.UPDATED
    finally:
        await source.aclose()
    assert [r.path for r in server.requests] == [f"/datafiles/{SDK_KEY}.json", "/elsewhere.json"]
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in server.requests)


@pytest.mark.anyio
async def test_redirect_loop_fails(server: DatafileServer, recorder: Recorder) -> None:
    server.enqueue(*[Redirect("/again.json")] * 10)
    source = make_source(server, recorder)
    try:
        assert await source.fetch_once() is FetchResult.FAILED
    finally:
        await source.aclose()
    assert "redirects" in (source.stats.last_error or "")
    assert len(server.requests) == 6  # the request and MAX_REDIRECTS hops


@pytest.mark.anyio
async def test_no_secret_reaches_the_logs(
    server: DatafileServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optimizely_async")
    server.enqueue(
        Status(500),
        Status(401),
        Drop(),
        Slow(30),
        Body(b"not json"),
        Redirect(f"ftp://127.0.0.1/{SDK_KEY}/{TOKEN}"),
    )
    source = make_source(server, recorder, access_token=TOKEN, request_timeout=0.3)
    try:
        results = [await source.fetch_once() for _ in range(7)]
    finally:
        await source.aclose()
    assert results == [FetchResult.FAILED] * 6 + [FetchResult.UPDATED]
    logs = all_log_text(caplog)
    assert logs  # something was logged
    assert SDK_KEY not in logs
    assert TOKEN not in logs
    assert SDK_KEY not in repr(source) and TOKEN not in repr(source)
    assert SDK_KEY not in source.url
    assert SDK_KEY not in (source.stats.last_error or "")


@pytest.mark.anyio
async def test_user_client_is_used_and_not_closed(server: DatafileServer, recorder: Recorder) -> None:
    async with httpx.AsyncClient(headers={"X-Mine": "yes"}) as client:
        source = make_source(server, recorder, http_client=client)
        async with anyio.create_task_group() as tg:
            await tg.start(source.run)
            await wait_until(lambda: recorder.revisions == ["1"])
            tg.cancel_scope.cancel()
        assert not client.is_closed
        assert server.requests[0].header("x-mine") == "yes"


# ---------------------------------------------------------------------------- run()


@pytest.mark.anyio
async def test_run_starts_without_waiting_for_the_network(server: DatafileServer, recorder: Recorder) -> None:
    server.enqueue(Slow(60))  # answers only when the server stops
    source = make_source(server, recorder, request_timeout=60.0)
    assert source._own_client is None  # no HTTP client (and no SSL context) before the first fetch
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):  # guards against a hang only: start() must not wait for the fetch
            await tg.start(source.run)
        await wait_until(lambda: len(server.requests) == 1)
        assert recorder.configs == []
        own = source._own_client
        assert own is not None
        tg.cancel_scope.cancel()
    assert own.is_closed
    assert source._own_client is None


@pytest.mark.anyio
async def test_run_polls_and_delivers_changes(server: DatafileServer, recorder: Recorder) -> None:
    source = make_source(server, recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        await wait_until(lambda: recorder.revisions == ["1"])
        await wait_until(lambda: source.stats.not_modified >= 2)
        server.set_datafile(datafile("2"))
        await wait_until(lambda: recorder.revisions == ["1", "2"])
        tg.cancel_scope.cancel()
    assert recorder.revisions == ["1", "2"]


@pytest.mark.anyio
async def test_run_retries_after_500s_and_keeps_the_last_good_config(
    server: DatafileServer, recorder: Recorder
) -> None:
    source = make_source(server, recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        await wait_until(lambda: recorder.revisions == ["1"])
        server.set_datafile(datafile("2"))
        server.enqueue(Status(500), Status(503), Status(502))
        await wait_until(lambda: recorder.revisions == ["1", "2"])
        tg.cancel_scope.cancel()
    assert source.stats.failures == 3
    assert source.stats.consecutive_failures == 0
    assert "502" in (source.stats.last_error or "")


@pytest.mark.anyio
async def test_run_retries_after_timeout_and_dropped_connection(server: DatafileServer, recorder: Recorder) -> None:
    server.enqueue(Slow(30), Drop())
    source = make_source(server, recorder, request_timeout=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        await wait_until(lambda: recorder.revisions == ["1"])
        tg.cancel_scope.cancel()
    assert source.stats.failures == 2


@pytest.mark.anyio
async def test_run_survives_unexpected_errors(
    server: DatafileServer, recorder: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    source = make_source(server, recorder)
    real = source.fetch_once
    calls = 0

    async def flaky() -> FetchResult:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"bug in the poller {SDK_KEY}")
        return await real()

    monkeypatch.setattr(source, "fetch_once", flaky)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        await wait_until(lambda: recorder.revisions == ["1"])
        tg.cancel_scope.cancel()
    logs = all_log_text(caplog)
    assert "bug in the poller" in logs
    assert SDK_KEY not in logs
    assert source.stats.failures == 2  # counted, so a persistent bug backs off like any failure
    assert source.stats.consecutive_failures == 0


@pytest.mark.anyio
async def test_run_twice_at_once_is_refused(server: DatafileServer, recorder: Recorder) -> None:
    source = make_source(server, recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        with pytest.raises(ClientStateError):
            await source.run()
        tg.cancel_scope.cancel()
    # ...but it can run again after it stopped.
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------- backoff


def test_backoff_is_exponential_jittered_and_capped_at_the_interval() -> None:
    source = PollingConfigSource(SDK_KEY, on_config=lambda c: None, update_interval=300)
    caps = [source._backoff_cap(n) for n in range(1, 20)]
    assert caps[0] == defaults.RETRY_BACKOFF_BASE
    assert all(b >= a for a, b in itertools.pairwise(caps))
    assert caps[-1] == 300
    for n in range(1, 20):
        for _ in range(20):
            delay = source._backoff(n)
            assert source._backoff_cap(n) / 2 <= delay <= source._backoff_cap(n) <= 300
    assert source._backoff(10_000) <= 300
    assert source.next_delay() == 300


def test_backoff_never_exceeds_a_short_interval() -> None:
    source = PollingConfigSource(SDK_KEY, on_config=lambda c: None, update_interval=0.05)
    assert all(source._backoff(n) <= 0.05 for n in range(1, 50))


# ---------------------------------------------------------------------------- options


def test_default_urls() -> None:
    public = PollingConfigSource(SDK_KEY, on_config=lambda c: None)
    assert str(public._url) == defaults.DATAFILE_URL_TEMPLATE.format(sdk_key=SDK_KEY)
    auth = PollingConfigSource(SDK_KEY, on_config=lambda c: None, access_token=TOKEN)
    assert str(auth._url) == defaults.AUTHENTICATED_DATAFILE_URL_TEMPLATE.format(sdk_key=SDK_KEY)
    assert public.update_interval == defaults.UPDATE_INTERVAL
    assert SDK_KEY not in public.url and public.url.startswith("https://cdn.optimizely.com/")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sdk_key": ""}, "sdk_key"),
        ({"sdk_key": "   "}, "sdk_key"),
        ({"sdk_key": None}, "sdk_key"),
        ({"url_template": "https://example.com/datafile.json"}, "{sdk_key}"),
        ({"url_template": "https://example.com/{sdk_key}/{env}.json"}, "url_template"),
        ({"url_template": "ftp://example.com/{sdk_key}.json"}, "http"),
        ({"url_template": "{sdk_key}.json"}, "http"),
        ({"access_token": ""}, "access_token"),
        ({"update_interval": 0}, "update_interval"),
        ({"update_interval": -5}, "update_interval"),
        ({"update_interval": math.nan}, "update_interval"),
        ({"update_interval": math.inf}, "update_interval"),
        ({"update_interval": True}, "update_interval"),
        ({"update_interval": "60"}, "update_interval"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"request_timeout": None}, "request_timeout"),
        ({"http_client": object()}, "http_client"),
        ({"on_config": None}, "on_config"),
    ],
)
def test_invalid_options_raise_configuration_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"sdk_key": SDK_KEY, "on_config": lambda c: None, **kwargs}
    with pytest.raises(ConfigurationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        PollingConfigSource(**args)


def test_short_interval_warns_and_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    source = PollingConfigSource(SDK_KEY, on_config=lambda c: None, update_interval=5)
    assert source.update_interval == 5.0
    assert any(r.levelno == logging.WARNING and "not recommended" in r.getMessage() for r in caplog.records)
    caplog.clear()
    PollingConfigSource(SDK_KEY, on_config=lambda c: None, update_interval=30)
    assert not [r for r in caplog.records if "not recommended" in r.getMessage()]


def test_parse_config_rejects_what_the_source_treats_as_invalid() -> None:
    # The source relies on parse_config raising InvalidDatafileError for these.
    for body in (b"", b"{", b"[]", json.dumps({**datafile(), "version": "99"}).encode()):
        with pytest.raises(InvalidDatafileError):
            parse_config(body)
