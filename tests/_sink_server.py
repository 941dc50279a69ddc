"""A real, scriptable events-API sink on 127.0.0.1 for dispatch and queue tests.

A small HTTP/1.1 (keep-alive) server written on anyio, so it runs inside the test's own event loop on asyncio
and trio alike (no thread competing for the GIL with the client under test)::

    async with serve_sink() as sink:              # listening on an ephemeral port
        sink.script(Reply(500), Reply(500))       # the next two requests get 500, then sink.default (200)

    async with serve_sink(start=False) as sink:   # port bound but not listening: connection refused ...
        await sink.start()                        # ... until now
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketListener, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Server Error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request as the sink saw it, with the reply it was given."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    reply: Reply

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def visitor_count(self) -> int:
        return len(self.payload["visitors"])


class SinkServer:
    """Records every request; answers from the script, then with ``default``."""

    def __init__(self, task_group: TaskGroup) -> None:
        self._tg = task_group
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        self.port: int = self._sock.getsockname()[1]
        self.default = Reply()
        self.received: list[Received] = []
        self.connections = 0  # TCP connections accepted
        self._script: deque[Reply] = deque()
        #: Answers by content when set (after the script): given the body, a Reply, or None for ``default``.
        self.responder: Callable[[bytes], Reply | None] | None = None
        self._listener: SocketListener | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/events"

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def delivered_visitors(self) -> int:
        """Visitors in requests answered 2xx at once (so the client certainly saw the answer)."""
        return sum(r.visitor_count for r in self.received if 200 <= r.reply.status < 300 and not r.reply.delay)

    def visitor_uuids(self) -> list[str]:
        return [
            snapshot["events"][0]["uuid"]
            for r in self.received
            for visitor in r.payload["visitors"]
            for snapshot in visitor["snapshots"]
        ]

    async def start(self) -> None:
        assert self._sock is not None, "already started"
        sock, self._sock = self._sock, None
        sock.listen(128)
        sock.setblocking(False)
        self._listener = await SocketListener.from_socket(sock)
        self._tg.start_soon(self._listener.serve, self._handle)

    async def aclose(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()
        if self._sock is not None:
            self._sock.close()

    def _reply_for(self, body: bytes) -> Reply:
        if self._script:
            return self._script.popleft()
        if self.responder is not None:
            return self.responder(body) or self.default
        return self.default

    async def _handle(self, stream: ByteStream) -> None:
        self.connections += 1
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    head = await reader.receive_until(b"\r\n\r\n", 65536)
                    request_line, *header_lines = head.decode("latin-1").split("\r\n")
                    method, path, _ = request_line.split(" ", 2)
                    headers = {}
                    for line in header_lines:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                    length = int(headers.get("content-length", "0"))
                    body = await reader.receive_exactly(length) if length else b""
                    reply = self._reply_for(body)
                    self.received.append(Received(method, path, headers, body, reply))
                    if reply.delay:
                        await anyio.sleep(reply.delay)
                    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
                    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
                    lines += ["Content-Length: 0", "", ""]
                    await stream.send("\r\n".join(lines).encode("latin-1"))
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the client closed the connection (or gave up waiting)


@asynccontextmanager
async def serve_sink(*, start: bool = True) -> AsyncIterator[SinkServer]:
    """Run a :class:`SinkServer` for the duration of the block."""
    sink: SinkServer | None = None
    try:
        async with anyio.create_task_group() as tg:
            sink = SinkServer(tg)
            try:
                if start:
                    await sink.start()
                yield sink
            finally:
                tg.cancel_scope.cancel()  # stops the listener and every connection
    finally:
        if sink is not None:
            with anyio.CancelScope(shield=True):
                await sink.aclose()
