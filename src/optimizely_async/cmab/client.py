"""The CMAB prediction request: one POST per attempt, one retry, the official body and log lines.

The official SDK waits 10 s per attempt and retries once after 0.1 s, whatever failed (an HTTP status
outside 2xx, a network error or timeout, a body of the wrong shape). The same here, awaited; the per-attempt
timeout is ``cmab_request_timeout`` (default 10 s, the official value). The httpx client is created on the
first request (or the application's shared one is used) and closed with the SDK.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import anyio
import httpx

from .. import defaults
from .._lazy_http import LazyHttpClient
from .._logging import sdk_logger

__all__ = ["PredictionClient", "PredictionError"]

_log = sdk_logger()  # the client's logger= when it has one (._logroute), else the library logger

_HEADERS: Final = {"Content-Type": "application/json"}
FETCH_FAILED: Final = "CMAB decision fetch failed with status: {}."
INVALID_RESPONSE: Final = "Invalid CMAB fetch response."
_EXHAUSTED: Final = "Exhausted all retries for CMAB request."


class PredictionError(Exception):
    """No prediction could be had; the text is the official error message."""


def _variation_id(body: Any) -> str | None:
    """``predictions[0].variation_id`` as a string, when the body has the official shape."""
    if not isinstance(body, dict):
        return None
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or not predictions:
        return None
    first = predictions[0]
    if not isinstance(first, dict) or "variation_id" not in first:
        return None
    return str(first["variation_id"])


class PredictionClient:
    """POSTs prediction requests to ``endpoint`` (a URL template, ``{}`` standing for the rule id)."""

    def __init__(
        self,
        endpoint: str = defaults.CMAB_PREDICTION_ENDPOINT,
        *,
        timeout: float = defaults.CMAB_REQUEST_TIMEOUT,
        http: LazyHttpClient | None = None,
        retry_delay: float = defaults.CMAB_RETRY_DELAY,
    ) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._http = http if http is not None else LazyHttpClient()
        self._retry_delay = retry_delay
        #: Prediction requests made (attempts), for tests and stats.
        self.requests = 0

    async def fetch(self, rule_id: str, user_id: str, attributes: Sequence[dict[str, Any]], cmab_uuid: str) -> str:
        """The variation id the service predicts; raises :class:`PredictionError` after both attempts fail.

        ``attributes`` are the ``{"id", "value", "type"}`` entries of the body. A body that cannot be encoded
        as JSON raises ``TypeError`` / ``ValueError`` before any request, as the official SDK does.
        """
        url = self._endpoint.format(rule_id)
        body = json.dumps(
            {
                "instances": [
                    {
                        "visitorId": user_id,
                        "experimentId": rule_id,
                        "attributes": list(attributes),
                        "cmabUUID": cmab_uuid,
                    }
                ]
            }
        ).encode()
        for attempt in range(2):
            if attempt:
                _log.info("Retrying CMAB request (attempt: %d) after %s seconds...", attempt, self._retry_delay)
                await anyio.sleep(self._retry_delay)
            variation_id = await self._attempt(url, body)
            if variation_id is not None:
                return variation_id
        message = FETCH_FAILED.format(_EXHAUSTED)
        _log.error(message)
        raise PredictionError(message)

    async def _attempt(self, url: str, body: bytes) -> str | None:
        self.requests += 1
        try:
            response = await self._http.get().post(url, content=body, headers=_HEADERS, timeout=self._timeout)
        except httpx.HTTPError as exc:
            _log.error(FETCH_FAILED.format(str(exc) or type(exc).__name__))
            return None
        if not 200 <= response.status_code < 300:
            _log.error(FETCH_FAILED.format(response.status_code))
            return None
        try:
            variation_id = _variation_id(json.loads(response.content))
        except (ValueError, RecursionError):
            variation_id = None
        if variation_id is None:
            _log.error(INVALID_RESPONSE)
        return variation_id

    async def aclose(self) -> None:
        await self._http.aclose()
