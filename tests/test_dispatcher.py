"""HttpDispatcher against a real local server; httpx.MockTransport only for transport-error seams."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx
import pytest

from _sink_server import Reply, serve_sink
from optimizely_async.errors import ConfigurationError
from optimizely_async.events.dispatcher import (
    DispatchResult,
    EventRequest,
    HttpDispatcher,
    parse_retry_after,
    retry_delay,
)

pytestmark = pytest.mark.anyio


def make_request(url: str, visitors: int = 2) -> EventRequest:
    payload: dict[str, Any] = {"account_id": "1", "visitors": [{"visitor_id": f"u{i}"} for i in range(visitors)]}
    return EventRequest(url=url, payload=payload, body=json.dumps(payload).encode(), event_count=visitors)


async def test_posts_json_and_reports_delivery() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher:
        request = make_request(sink.url)
        result = await dispatcher.dispatch(request)
    assert result == DispatchResult(delivered=True, status=200)
    (received,) = sink.received
    assert received.method == "POST"
    assert received.path == "/v1/events"
    assert received.headers["content-type"] == "application/json"
    assert received.body == request.body
    assert received.payload == request.payload


async def test_one_connection_is_reused() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher:
        for _ in range(5):
            assert (await dispatcher.dispatch(make_request(sink.url))).delivered
    assert len(sink.received) == 5
    assert sink.connections == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retryable(status: int) -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher:
        sink.script(Reply(status))
        result = await dispatcher.dispatch(make_request(sink.url))
    assert result == DispatchResult(delivered=False, retryable=True, status=status, reason=f"http_{status}")


async def test_429_with_retry_after_seconds() -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher:
        sink.script(Reply(429, headers={"Retry-After": "7"}))
        result = await dispatcher.dispatch(make_request(sink.url))
    assert result.retryable and not result.delivered
    assert (result.status, result.reason, result.retry_after) == (429, "http_429", 7.0)


async def test_503_with_retry_after_http_date() -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    async with serve_sink() as sink, HttpDispatcher() as dispatcher:
        sink.script(Reply(503, headers={"Retry-After": later}))
        result = await dispatcher.dispatch(make_request(sink.url))
    assert result.retryable
    assert result.retry_after is not None and 0 < result.retry_after <= 120


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_other_4xx_is_final(status: int) -> None:
    async with serve_sink() as sink, HttpDispatcher() as dispatcher:
        sink.script(Reply(status, headers={"Retry-After": "5"}))
        result = await dispatcher.dispatch(make_request(sink.url))
    assert result == DispatchResult(delivered=False, retryable=False, status=status, reason=f"http_{status}")


async def test_connection_refused_is_retryable_then_server_comes_up() -> None:
    async with serve_sink(start=False) as sink, HttpDispatcher() as dispatcher:
        refused = await dispatcher.dispatch(make_request(sink.url))
        await sink.start()
        accepted = await dispatcher.dispatch(make_request(sink.url))
    assert refused == DispatchResult(delivered=False, retryable=True, reason="connection_error")
    assert accepted.delivered
    assert len(sink.received) == 1


async def test_slow_response_beyond_timeout_is_retryable() -> None:
    async with serve_sink() as sink, HttpDispatcher(timeout=0.5) as dispatcher:
        sink.script(Reply(200, delay=30))
        slow = await dispatcher.dispatch(make_request(sink.url))
        fast = await dispatcher.dispatch(make_request(sink.url))  # the pool recovers
    assert slow == DispatchResult(delivered=False, retryable=True, reason="timeout")
    assert fast.delivered


async def test_shared_client_is_used_and_left_open() -> None:
    async with serve_sink() as sink, httpx.AsyncClient(headers={"X-Shared": "yes"}) as client:
        dispatcher = HttpDispatcher(client)
        assert (await dispatcher.dispatch(make_request(sink.url))).delivered
        await dispatcher.aclose()
        assert not client.is_closed
        assert (await client.get(sink.url.replace("/v1/events", "/ping"))).status_code == 200
    assert sink.received[0].headers["x-shared"] == "yes"


async def test_owned_client_is_created_on_first_use_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[httpx.AsyncClient] = []
    real_init = httpx.AsyncClient.__init__

    def counting_init(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        created.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", counting_init)
    unused = HttpDispatcher()
    await unused.aclose()
    assert created == []  # never sent anything: no client, no SSL context
    async with serve_sink() as sink:
        dispatcher = HttpDispatcher()
        assert created == []
        assert (await dispatcher.dispatch(make_request(sink.url))).delivered
        assert (await dispatcher.dispatch(make_request(sink.url))).delivered
        assert len(created) == 1
        await dispatcher.aclose()
        assert created[0].is_closed
        result = await dispatcher.dispatch(make_request(sink.url))
    assert (result.delivered, result.retryable, result.reason) == (False, False, "dispatcher_closed")
    assert len(sink.received) == 2


@pytest.mark.parametrize(
    ("error", "reason", "retryable"),
    [
        (httpx.ConnectError("refused"), "connection_error", True),
        (httpx.ReadError("reset"), "connection_error", True),
        (httpx.RemoteProtocolError("bad"), "connection_error", True),
        (httpx.ConnectTimeout("slow"), "connect_timeout", True),  # never sent: not a possible duplicate
        (httpx.ReadTimeout("slow"), "timeout", True),
        (httpx.WriteTimeout("slow"), "timeout", True),
        (httpx.PoolTimeout("busy"), "connect_timeout", True),
        (httpx.UnsupportedProtocol("ftp"), "request_error", False),
        (httpx.LocalProtocolError("bad header"), "request_error", False),
        (httpx.DecodingError("gzip"), "request_error", False),
    ],
)
async def test_transport_errors_are_classified(error: Exception, reason: str, retryable: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await HttpDispatcher(client).dispatch(make_request("http://sink.test/v1/events"))
    assert result == DispatchResult(delivered=False, retryable=retryable, reason=reason)


async def test_explicit_timeout_overrides_a_shared_client() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=99) as client:
        assert (await HttpDispatcher(client).dispatch(make_request("http://sink.test/"))).delivered
        assert (await HttpDispatcher(client, timeout=3).dispatch(make_request("http://sink.test/"))).delivered
    assert [t["read"] for t in seen] == [99, 3]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_bad_timeout_is_a_configuration_error(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        HttpDispatcher(timeout=timeout)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("12", 12.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_future_date() -> None:
    seconds = parse_retry_after(email.utils.formatdate(time.time() + 300, usegmt=True))
    assert seconds is not None and 200 < seconds <= 300


def test_retry_delay_full_jitter_grows_and_caps() -> None:
    top = [retry_delay(n, base=0.5, cap=30.0, rand=lambda: 1.0) for n in range(8)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry_delay(3, base=0.5, cap=30.0, rand=lambda: 0.0) == 0.0
    assert retry_delay(10_000, base=0.5, cap=30.0, rand=lambda: 1.0) == 30.0  # no overflow


def test_retry_delay_honours_retry_after_as_a_floor() -> None:
    assert retry_delay(0, 5.0, base=0.5, cap=30.0, rand=lambda: 1.0) == 5.0
    assert retry_delay(6, 5.0, base=0.5, cap=30.0, rand=lambda: 1.0) == 30.0
    assert retry_delay(0, 3600.0, base=0.5, cap=30.0, retry_after_cap=60.0, rand=lambda: 0.0) == 60.0
