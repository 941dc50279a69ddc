"""A real HTTP server on 127.0.0.1 that stands in for the CMAB prediction endpoint and the ODP GraphQL and events
endpoints, for both SDKs.

It runs in its own thread (``ThreadingHTTPServer``), because the official SDK makes blocking requests from the
test's thread: a server inside the test's event loop could not answer them. Every request is recorded; the
answers come from plain Python callables the test sets, so each failure mode is one line::

    with serve_stand_in() as server:
        server.predict = lambda rule_id, body, attempt: Reply.json({"predictions": [{"variation_id": "1"}]})
        url = server.url + "/predict/{}"

``Reply`` can delay its answer, close the connection without answering, or send any status and body.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Reply", "StandIn", "dead_url", "serve_stand_in"]


@dataclass(frozen=True)
class Reply:
    """One answer."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds before answering (longer than the client's timeout: a timeout)
    close: bool = False  # drop the connection without any answer (a network error)
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(data: Any, status: int = 200) -> Reply:
        return Reply(status, json.dumps(data).encode(), headers={"Content-Type": "application/json"})


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


#: predict(rule_id, request body, attempt number for this body's cmabUUID (1, 2 ...)) -> Reply
Predictor = Callable[[str, Any, int], Reply]
#: graphql(request body) -> Reply
GraphQL = Callable[[Any], Reply]
#: events(request body, attempt number for this batch (1, 2 ...)) -> Reply
Events = Callable[[Any, int], Reply]


def _no_prediction(rule_id: str, body: Any, attempt: int) -> Reply:
    return Reply(404)


def _no_segments(body: Any) -> Reply:
    return Reply.json({"data": {"customer": {"audiences": {"edges": []}}}})


def _accept_events(body: Any, attempt: int) -> Reply:
    return Reply(200, b"{}")


class StandIn:
    """The server's state: what it answers and what it received (thread-safe)."""

    def __init__(self) -> None:
        self.url = ""
        self.predict: Predictor = _no_prediction
        self.graphql: GraphQL = _no_segments
        self.events: Events = _accept_events
        self.received: list[Received] = []
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def requests(self, prefix: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self._attempts.clear()

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.received.append(Received(method, path, headers, body, time.monotonic()))
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if path.startswith("/predict/"):
            uuid = ""
            with suppress(KeyError, IndexError, TypeError):
                uuid = str(data["instances"][0]["cmabUUID"])
            return self.predict(path[len("/predict/") :], data, self._count("p" + uuid))
        if path == "/v3/graphql":
            return self.graphql(data)
        if path == "/v3/events":
            return self.events(data, self._count("e" + body.decode("utf-8", "replace")))
        return Reply(404)

    def _count(self, key: str) -> int:
        with self._lock:
            self._attempts[key] = self._attempts.get(key, 0) + 1
            return self._attempts[key]


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = state._answer("POST", self.path, headers, body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.close:
                self.close_connection = True
                with suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            with suppress(OSError):  # the client may have timed out and gone
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

    return Handler


@contextmanager
def serve_stand_in() -> Iterator[StandIn]:
    """A :class:`StandIn` listening on 127.0.0.1 (an ephemeral port) until the block ends."""
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def dead_url() -> str:
    """A 127.0.0.1 URL where nothing listens (connection refused): the endpoint is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
