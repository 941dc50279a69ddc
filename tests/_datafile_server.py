"""A scriptable datafile server on 127.0.0.1 for the polling tests.

It runs the standard library's threading HTTP server (HTTP/1.1, keep-alive) in a background thread, so it
works the same under every async backend. By default every GET answers with the current datafile, its
``ETag`` and ``Last-Modified``, and 304 when the request's ``If-None-Match`` (or, without it,
``If-Modified-Since``) matches. One-off replies queued with :meth:`DatafileServer.enqueue` are used first,
in order. Every request is recorded with its headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Status:
    """Answer with this status code and body."""

    code: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Body:
    """Answer 200 with this body and these validators (no conditional check)."""

    body: bytes
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending anything."""


@dataclass(frozen=True)
class Slow:
    """Wait ``delay`` seconds (or until the server stops), then answer normally."""

    delay: float


@dataclass(frozen=True)
class Redirect:
    """Answer ``code`` with a ``Location`` header."""

    location: str
    code: int = 302


Reply = Status | Body | Drop | Slow | Redirect


class _Auto:
    """Marker: derive the validator from the body."""


AUTO = _Auto()


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class DatafileServer:
    """Use as a context manager; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._queue: deque[Reply] = deque()
        self._body = b""
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._version = 0
        self.requests: list[Recorded] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})

    # -- lifecycle
    def __enter__(self) -> DatafileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    # -- scripting
    def set_datafile(
        self,
        datafile: dict[str, Any] | bytes | str,
        *,
        etag: str | _Auto | None = AUTO,
        last_modified: str | _Auto | None = AUTO,
    ) -> None:
        """Serve this datafile from now on. Validators default to fresh values derived from the body."""
        body = (
            json.dumps(datafile).encode()
            if isinstance(datafile, dict)
            else datafile.encode()
            if isinstance(datafile, str)
            else datafile
        )
        with self._lock:
            self._version += 1
            self._body = body
            self._etag = f'"{hashlib.sha1(body).hexdigest()[:16]}"' if isinstance(etag, _Auto) else etag
            self._last_modified = (
                f"Mon, 01 Jan 2024 00:00:{self._version % 60:02d} GMT"
                if isinstance(last_modified, _Auto)
                else last_modified
            )

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def paths(self) -> Iterator[str]:
        return (r.path for r in list(self.requests))

    # -- request handling (server threads)
    def _next(self, recorded: Recorded) -> Reply | None:
        with self._lock:
            self.requests.append(recorded)
            return self._queue.popleft() if self._queue else None

    def _current(self) -> tuple[bytes, str | None, str | None]:
        with self._lock:
            return self._body, self._etag, self._last_modified


def _make_handler(server: DatafileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            recorded = Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
            reply = server._next(recorded)
            if isinstance(reply, Slow):
                server._stopping.wait(reply.delay)
                reply = None
            if isinstance(reply, Drop):
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(reply, Status):
                self._send(reply.code, reply.body, reply.headers)
            elif isinstance(reply, Body):
                headers = {}
                if reply.etag is not None:
                    headers["ETag"] = reply.etag
                if reply.last_modified is not None:
                    headers["Last-Modified"] = reply.last_modified
                self._send(200, reply.body, headers)
            elif isinstance(reply, Redirect):
                self._send(reply.code, b"", {"Location": reply.location})
            else:
                self._serve_current(recorded)

        def _serve_current(self, recorded: Recorded) -> None:
            body, etag, last_modified = server._current()
            headers = {}
            if etag is not None:
                headers["ETag"] = etag
            if last_modified is not None:
                headers["Last-Modified"] = last_modified
            inm = recorded.header("if-none-match")
            ims = recorded.header("if-modified-since")
            if inm is not None:
                not_modified = etag is not None and inm == etag
            else:
                not_modified = ims is not None and last_modified is not None and ims == last_modified
            if not_modified:
                self._send(304, b"", headers)
            else:
                self._send(200, body, {"Content-Type": "application/json", **headers})

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            try:
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                if code != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if code != 304 and body:
                    self.wfile.write(body)
            except OSError:
                self.close_connection = True

    return Handler
