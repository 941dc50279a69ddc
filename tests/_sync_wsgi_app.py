"""A tiny WSGI app for tests/test_sync_gunicorn.py: the client is created at import, which ``gunicorn --preload``
does once in the master before it forks the workers; each request decides a flag and tracks an event."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from _sync_support import EVENT_KEY, datafile
from optimizely_async import SyncOptimizely

client = SyncOptimizely(datafile(), event_endpoint=os.environ["SYNC_TEST_SINK"], flush_interval=60.0)
client.track(EVENT_KEY, "master-preload")  # waiting in the master's queue when the workers fork


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    user = environ.get("QUERY_STRING") or "anonymous"
    time.sleep(0.05)  # a little work, so that concurrent requests spread over both workers
    enabled = client.is_feature_enabled("flag", user)  # sends an impression
    client.track(EVENT_KEY, user)
    body = json.dumps({"pid": os.getpid(), "enabled": enabled}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
