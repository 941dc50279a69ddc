"""Every named default of the SDK in one place."""

from __future__ import annotations

from typing import Final

#: Events API endpoints by datafile ``region``.
EVENT_ENDPOINTS: Final = {
    "US": "https://logx.optimizely.com/v1/events",
    "EU": "https://eu.logx.optimizely.com/v1/events",
}
DEFAULT_REGION: Final = "US"

#: Name sent as ``client_name`` in every event payload.
CLIENT_NAME: Final = "optimizely-async"

DATAFILE_URL_TEMPLATE: Final = "https://cdn.optimizely.com/datafiles/{sdk_key}.json"
AUTHENTICATED_DATAFILE_URL_TEMPLATE: Final = "https://config.optimizely.com/datafiles/auth/{sdk_key}.json"
UPDATE_INTERVAL: Final = 300.0
MIN_RECOMMENDED_UPDATE_INTERVAL: Final = 30.0
DATAFILE_REQUEST_TIMEOUT: Final = 10.0
READY_TIMEOUT: Final = 10.0

BATCH_SIZE: Final = 10
FLUSH_INTERVAL: Final = 30.0
MAX_QUEUE_SIZE: Final = 10_000
#: How long ``track()`` waits for room in a full queue before the event is dropped.
ENQUEUE_TIMEOUT: Final = 5.0
CLOSE_TIMEOUT: Final = 10.0
MAX_CONCURRENT_REQUESTS: Final = 4
#: Async notification listener calls waiting to run in the background before new ones are dropped (counted).
LISTENER_BACKLOG: Final = 10_000
EVENT_REQUEST_TIMEOUT: Final = 10.0
#: After a timeout, the next attempt of the same request waits twice as long for its answer, up to this.
EVENT_REQUEST_TIMEOUT_MAX: Final = 60.0
#: Most resends of a request whose earlier attempts timed out (the receiver may have it: each is a duplicate).
MAX_TIMEOUT_RESENDS: Final = 2
#: A failing request is retried for this long (seconds since its first attempt) before its events are dropped.
EVENT_RETRY_TIMEOUT: Final = 600.0
#: A custom dispatcher's attempt that takes longer than this is cancelled and counted as a timeout.
DISPATCH_ATTEMPT_TIMEOUT: Final = 120.0
RETRY_BACKOFF_BASE: Final = 0.5
RETRY_BACKOFF_MAX: Final = 30.0
#: A server's ``Retry-After`` is honoured up to this many seconds.
RETRY_AFTER_MAX: Final = 60.0

#: CMAB predictions: the official endpoint template (``{}`` = the rule id), per-attempt timeout, the pause
#: before the one retry, and the prediction cache (one entry per user and rule).
CMAB_PREDICTION_ENDPOINT: Final = "https://prediction.cmab.optimizely.com/predict/{}"
CMAB_REQUEST_TIMEOUT: Final = 10.0
CMAB_RETRY_DELAY: Final = 0.1
CMAB_CACHE_SIZE: Final = 10_000
CMAB_CACHE_TTL: Final = 1800.0

#: ODP: the segments cache, the GraphQL request, and the ODP event queue (official values).
SEGMENTS_CACHE_SIZE: Final = 10_000
SEGMENTS_CACHE_TIMEOUT: Final = 600.0
ODP_SEGMENT_REQUEST_TIMEOUT: Final = 10.0
ODP_EVENT_REQUEST_TIMEOUT: Final = 10.0
ODP_EVENT_FLUSH_INTERVAL: Final = 1.0
ODP_EVENT_BATCH_SIZE: Final = 10
ODP_EVENT_QUEUE_SIZE: Final = 1000
ODP_EVENT_MAX_RETRIES: Final = 3
ODP_EVENT_RETRY_BASE: Final = 0.2
ODP_EVENT_RETRY_MAX: Final = 1.0

#: Bucketing constants (MurmurHash3 x86_32, seed 1, 10,000 buckets).
HASH_SEED: Final = 1
MAX_TRAFFIC_VALUE: Final = 10_000
