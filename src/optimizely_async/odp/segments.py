"""Fetching a user's qualified ODP segments: the official GraphQL request, response handling, cache and logs.

No retry, one timeout (``odp_segment_request_timeout``); every failure is logged as
``Audience segments fetch failed ({detail}).`` with the official detail and gives None.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from typing import Any, Final

import httpx

from .._lazy_http import LazyHttpClient
from .._logging import sdk_logger
from .._ttl_cache import TtlLruCache
from .config import OdpSettings

__all__ = ["FETCH_FAILED", "OptimizelySegmentOption", "SegmentsFetcher"]

_log = sdk_logger()  # the client's logger= when it has one (._logroute), else the library logger

FETCH_FAILED: Final = "Audience segments fetch failed ({})."
_QUERY: Final = (
    "query($userId: String, $audiences: [String]) {customer(fs_user_id: $userId) "
    "{audiences(subset: $audiences) {edges {node {name state}}}}}"
)
_CACHE_PREFIX: Final = "fs_user_id-$-"


class OptimizelySegmentOption(str, enum.Enum):
    """Options of ``fetch_qualified_segments``; each value is the official string, so plain strings work too."""

    IGNORE_CACHE = "IGNORE_CACHE"
    RESET_CACHE = "RESET_CACHE"

    def __str__(self) -> str:
        return self.value


def _http_error_text(response: httpx.Response) -> str:
    """The error text the official SDK's HTTP library gives for a 4xx / 5xx answer."""
    side = "Client" if response.status_code < 500 else "Server"
    return f"{response.status_code} {side} Error: {response.reason_phrase} for url: {response.request.url}"


def _qualified_names(body: Any) -> list[str] | None:
    """The names of the ``qualified`` nodes of a GraphQL answer, or None (logged) when it has errors or the
    wrong shape."""
    if body and isinstance(body, (dict, list, str)) and "errors" in body:
        answer: Any = body
        try:
            extensions = answer["errors"][0]["extensions"]
            classification = extensions["classification"]
            code = extensions.get("code")
        except (KeyError, IndexError, TypeError, AttributeError):
            _log.error(FETCH_FAILED.format("decode error"))
            return None
        if code == "INVALID_IDENTIFIER_EXCEPTION":
            _log.warning(FETCH_FAILED.format("invalid identifier"))
        else:
            _log.error(FETCH_FAILED.format(classification))
        return None
    try:
        edges = body["data"]["customer"]["audiences"]["edges"]
        return [edge["node"]["name"] for edge in edges if edge["node"]["state"] == "qualified"]
    except (KeyError, TypeError, IndexError):
        _log.error(FETCH_FAILED.format("decode error"))
        return None


class SegmentsFetcher:
    """The segments cache (key ``fs_user_id-$-{user id}``) and the GraphQL request."""

    def __init__(self, http: LazyHttpClient, *, cache_size: int, cache_timeout: float, timeout: float) -> None:
        self.cache: TtlLruCache[str, list[str]] = TtlLruCache(cache_size, cache_timeout)
        self._http = http
        self._timeout = timeout
        #: GraphQL requests made, for tests and stats.
        self.requests = 0

    async def fetch(self, settings: OdpSettings, user_id: str, options: Iterable[Any]) -> list[str] | None:
        """The user's qualified segments among ``settings.segments_to_check``, or None (logged) on failure."""
        if not settings.integrated:
            _log.error(FETCH_FAILED.format("api_key/api_host not defined"))
            return None
        if not settings.segments_to_check:
            _log.debug("No segments are used in the project. Returning empty list.")
            return []
        chosen = {str(option) for option in options}
        ignore = OptimizelySegmentOption.IGNORE_CACHE.value in chosen
        key = _CACHE_PREFIX + user_id
        if OptimizelySegmentOption.RESET_CACHE.value in chosen:
            self.cache.reset()
        elif not ignore:
            cached = self.cache.lookup(key)
            if cached:
                _log.debug("ODP cache hit. Returning segments from cache.")
                return list(cached)
            _log.debug("ODP cache miss.")
        _log.debug("Making a call to ODP server.")
        segments = await self._request(settings, user_id)
        if segments and not ignore:
            self.cache.save(key, list(segments))
        return segments

    async def _request(self, settings: OdpSettings, user_id: str) -> list[str] | None:
        url = f"{settings.api_host}/v3/graphql"
        body = json.dumps(
            {"query": _QUERY, "variables": {"userId": user_id, "audiences": list(settings.segments_to_check)}}
        )
        headers = {"content-type": "application/json", "x-api-key": str(settings.api_key)}
        self.requests += 1
        try:
            response = await self._http.get().post(url, content=body.encode(), headers=headers, timeout=self._timeout)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            _log.debug("GraphQL download failed: %s", exc)
            _log.error(FETCH_FAILED.format("network error"))
            return None
        except httpx.HTTPError as exc:
            _log.error(FETCH_FAILED.format(exc))
            return None
        if response.status_code >= 400:
            _log.error(FETCH_FAILED.format(_http_error_text(response)))
            return None
        try:
            parsed = json.loads(response.content)
        except (ValueError, RecursionError):
            _log.error(FETCH_FAILED.format("JSON decode error"))
            return None
        return _qualified_names(parsed)
