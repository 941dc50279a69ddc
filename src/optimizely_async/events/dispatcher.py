"""Sending one events-API request: the ``Dispatcher`` seam and its httpx implementation.

A dispatcher makes **one attempt** and reports the outcome as a ``DispatchResult`` value; it does not
retry, sleep or raise for network and HTTP failures. Retrying, backoff and accounting belong to the
``EventQueue``, which also survives a custom dispatcher that raises.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from .. import defaults
from .._lazy_http import import_http_stack, new_client
from .._logging import logger
from ..errors import ConfigurationError

if TYPE_CHECKING:
    import httpx
else:
    from .._lazy_import import LazyModule

    httpx = LazyModule("httpx")  # imported when a dispatcher is made: import optimizely_async does not pay for it

__all__ = [
    "DispatchResult",
    "Dispatcher",
    "EventRequest",
    "HttpDispatcher",
    "parse_retry_after",
    "retry_delay",
]

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class EventRequest:
    """One events-API request: a batch of user events encoded as a single payload."""

    url: str
    #: The payload as a dict (what LOG_EVENT listeners see); ``body`` is its JSON encoding.
    payload: Mapping[str, Any]
    body: bytes
    event_count: int
    headers: Mapping[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    #: Earlier attempts of this same request that timed out after it was sent (so the receiver may already
    #: have it). :class:`HttpDispatcher` waits ``2 ** timeouts`` times its timeout for the answer (at most
    #: ``defaults.EVENT_REQUEST_TIMEOUT_MAX``), so a slow receiver gets a resend or two, not one per retry.
    timeouts: int = 0


@dataclass(frozen=True)
class DispatchResult:
    """The outcome of one attempt to deliver an ``EventRequest``."""

    delivered: bool
    #: Whether trying again later may succeed (connection errors, timeouts, 429, 5xx).
    retryable: bool = False
    #: The HTTP status, when a response arrived.
    status: int | None = None
    #: A short machine-readable cause: ``"ok"``, ``"http_503"``, ``"timeout"``, ``"connection_error"`` ...
    #: ``"timeout"`` means the request was sent and no answer came in time (the receiver may have it): the
    #: queue bounds how often it resends such a request. Use it in custom dispatchers with that meaning.
    reason: str = "ok"
    #: Seconds the server asked us to wait (``Retry-After``), if it said.
    retry_after: float | None = None


class Dispatcher(Protocol):
    """Anything that can deliver an ``EventRequest``; custom sinks implement this.

    ``dispatch`` must return a ``DispatchResult``. The queue survives one that does not: a dispatcher
    that raises or returns something else costs the batch (reasons ``dispatch_error`` and
    ``invalid_dispatch_result``), one that does not return within 120
    seconds is cancelled and counted as a timeout (``dispatch_timeout``); each problem is logged once at
    ERROR (later ones at DEBUG).
    """

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        """Make one delivery attempt and describe the outcome; should not raise."""
        ...


class HttpDispatcher:
    """POSTs each request as JSON over one shared ``httpx.AsyncClient``.

    The client it owns (and its SSL context) is created on the first request, not in the constructor, so a
    client that never sends an event never pays for it.

    Args:
        http_client: A client to share (connection pool, proxies, TLS settings). It is **not** closed by
            ``aclose``; its own timeouts apply unless ``timeout`` is given. Without one, the dispatcher
            creates and owns a client with a 10-second timeout.
        timeout: Per-request timeout (seconds or an ``httpx.Timeout``).
    """

    def __init__(
        self,
        http_client: httpx.AsyncClient | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
    ) -> None:
        if isinstance(timeout, (int, float)) and not (math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._owns_client = http_client is None
        if http_client is None:
            import_http_stack()  # here, not at the first request: see import_http_stack
        if http_client is None and timeout is None:
            timeout = defaults.EVENT_REQUEST_TIMEOUT
        self._client: httpx.AsyncClient | None = http_client
        self._timeout = timeout
        self._base_timeout: httpx.Timeout | None = None
        self._closed = False

    async def _http(self) -> httpx.AsyncClient | None:
        """The HTTP client (None once closed). The dispatcher's own is made at the first request, in a worker
        thread: building its SSL context would otherwise hold the event loop for about 20 ms."""
        if self._client is None and not self._closed:
            made = await new_client()
            if self._client is not None or self._closed:  # another request made one meanwhile, or aclose() ran
                await made.aclose()
            else:
                self._client = made
        return self._client

    def _timeout_for(self, client: httpx.AsyncClient, timeouts: int) -> httpx.Timeout:
        timeout = self._base_timeout
        if timeout is None:
            base = self._timeout if self._timeout is not None else client.timeout
            timeout = self._base_timeout = base if isinstance(base, httpx.Timeout) else httpx.Timeout(base)
        if timeouts <= 0:
            return timeout
        factor = 2.0 ** min(timeouts, 16)

        def scaled(seconds: float | None) -> float | None:
            if seconds is None:
                return None
            return max(seconds, min(seconds * factor, defaults.EVENT_REQUEST_TIMEOUT_MAX))

        return httpx.Timeout(
            connect=timeout.connect,  # a connection that cannot be made was never sent: no reason to wait longer
            read=scaled(timeout.read),
            write=scaled(timeout.write),
            pool=timeout.pool,
        )

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        """POST the request body once and classify the outcome."""
        client = await self._http()
        if client is None:
            return DispatchResult(delivered=False, retryable=False, reason="dispatcher_closed")
        try:
            response = await client.post(
                request.url,
                content=request.body,
                headers=request.headers,
                timeout=self._timeout_for(client, request.timeouts),
            )
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return _failure("connect_timeout", retryable=True, exc=exc)  # never sent
        except httpx.TimeoutException as exc:
            return _failure("timeout", retryable=True, exc=exc)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            return _failure("request_error", retryable=False, exc=exc)
        except httpx.TransportError as exc:
            return _failure("connection_error", retryable=True, exc=exc)
        except httpx.HTTPError as exc:
            return _failure("request_error", retryable=False, exc=exc)
        return classify_response(response.status_code, response.headers.get("Retry-After"))

    async def aclose(self) -> None:
        """Close the HTTP client if this dispatcher created it; a caller's client is left open."""
        if self._owns_client:
            self._closed = True
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()

    async def __aenter__(self) -> HttpDispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def classify_response(status: int, retry_after_header: str | None = None) -> DispatchResult:
    """Map an HTTP status to a result: 2xx delivered; 429 and 5xx retryable; anything else final."""
    if 200 <= status < 300:
        return DispatchResult(delivered=True, status=status)
    retryable = status == 429 or status >= 500
    retry_after = parse_retry_after(retry_after_header) if retryable else None
    logger.debug("Event request answered with HTTP %d.", status)
    return DispatchResult(
        delivered=False, retryable=retryable, status=status, reason=f"http_{status}", retry_after=retry_after
    )


def _failure(reason: str, *, retryable: bool, exc: Exception) -> DispatchResult:
    logger.debug("Event request failed (%s): %r", reason, exc)
    return DispatchResult(delivered=False, retryable=retryable, reason=reason)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent or
    unreadable. Past dates give 0."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        import email.utils  # here: an HTTP-date Retry-After is rare, and the import costs several ms

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def retry_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = defaults.RETRY_BACKOFF_BASE,
    cap: float = defaults.RETRY_BACKOFF_MAX,
    retry_after_cap: float = defaults.RETRY_AFTER_MAX,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt + 1``: exponential backoff with full jitter.

    The jittered delay is ``rand() * min(cap, base * 2**attempt)``. A server's ``Retry-After`` is a floor
    (clipped at ``retry_after_cap`` so one header cannot park a request for hours).
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    delay = rand() * ceiling
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay
