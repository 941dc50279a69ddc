"""Contextual multi-armed bandits: the prediction client, its cache, and resuming the engine with a prediction.

:func:`build_cmab_service` validates the client's CMAB options (a mistake raises
:class:`~optimizely_async.errors.ConfigurationError`) and builds the :class:`CmabService` the client keeps.
"""

from __future__ import annotations

from .. import defaults
from .._lazy_http import LazyHttpClient
from .._validation import number
from ..errors import ConfigurationError
from .client import PredictionClient, PredictionError
from .service import NO_CMAB_OPTIONS, CmabOptions, CmabService, Prediction

__all__ = [
    "NO_CMAB_OPTIONS",
    "CmabOptions",
    "CmabService",
    "Prediction",
    "PredictionClient",
    "PredictionError",
    "build_cmab_service",
]


def build_cmab_service(
    *,
    endpoint: str | None,
    cache_size: int,
    cache_ttl: float,
    request_timeout: float,
    http: LazyHttpClient,
) -> CmabService:
    """The client's CMAB service, after checking its options (no network until the first prediction)."""
    if endpoint is None:
        endpoint = defaults.CMAB_PREDICTION_ENDPOINT
    if not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://")) and "{}" in endpoint):
        raise ConfigurationError(
            "cmab_prediction_endpoint must be an http(s) URL template with {} where the rule id goes, "
            f"e.g. {defaults.CMAB_PREDICTION_ENDPOINT!r}; got {endpoint!r}."
        )
    try:
        endpoint.format("rule")
    except (IndexError, KeyError, ValueError) as exc:
        raise ConfigurationError(
            f"cmab_prediction_endpoint must have exactly one {{}} and no other braces; got {endpoint!r}."
        ) from exc
    number("cmab_cache_size", cache_size, integer=True, allow_equal=True)
    number("cmab_cache_ttl", cache_ttl)
    number("cmab_request_timeout", request_timeout)
    client = PredictionClient(endpoint, timeout=float(request_timeout), http=http)
    return CmabService(client, cache_size=cache_size, cache_ttl=float(cache_ttl))
