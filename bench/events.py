"""Events: ours against the official SDK, in one run.

Run: ``python bench/events.py`` (about a minute). Three measurements:

(a) **track() cost** per call, best of several rounds of 500 calls. The official client is the default one,
    ``Optimizely(datafile, event_dispatcher=<no-op>)``: its BatchEventProcessor thread runs (batch size 1),
    so the caller pays for enqueueing while that thread builds payloads next to it. Ours sends to an in-memory
    sink that accepts everything. Between rounds each side drains (not timed), and the two SDKs' rounds
    alternate so that both see the same machine. A second row adds the drain:
    everything each SDK spends per event until the sink has it.
(b) **End-to-end events/s** delivered to a real HTTP server on 127.0.0.1, default settings on both sides. The
    server (a ``ThreadingHTTPServer`` that counts visitors) runs in a child process, so neither SDK shares the
    GIL with it. The official client keeps its default ``EventDispatcher`` (one ``requests`` POST per event);
    only the URL is pointed at the local server. It is fed no faster than its 1,000-slot queue takes, so it
    loses nothing here.
(c) **Events lost under a burst**: 20,000 ``track()`` calls in a tight loop against the healthy local server,
    default settings, then ``close()``; events the server received against events sent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
from _common import ROOT, NullSink, bench_users, compare, datafiles, example_datafile

from optimizely_async import AsyncOptimizely

TARGET = 8.0
EVENT_KEY = "bench_purchase"
TAGS = {"revenue": 4200, "value": 1.5, "category": "shoes"}
ROUND = 500
BURST = 20_000
OFFICIAL_E2E_EVENTS = 2_000
OURS_E2E_EVENTS = 20_000


# ------------------------------------------------------------------------------------------------ the sink


class _CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections
    lock = threading.Lock()
    requests = 0
    visitors = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        count = len(json.loads(body)["visitors"])
        with self.lock:
            type(self).requests += 1
            type(self).visitors += count
        self._reply(b"")

    def do_GET(self) -> None:
        with self.lock:
            stats = {"requests": type(self).requests, "visitors": type(self).visitors}
            if self.path == "/reset":
                type(self).requests = type(self).visitors = 0
        self._reply(json.dumps(stats).encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_sink() -> None:
    """The child process: serve on an ephemeral port, print it, serve until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Sink:
    """The counting server in a child process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True, cwd=str(ROOT)
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/v1/events"

    def _get(self, path: str) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def visitors(self) -> int:
        return self._get("/stats")["visitors"]

    def reset(self) -> None:
        self._get("/reset")

    def wait_for(self, count: int, timeout: float) -> int:
        """Poll until the server has ``count`` visitors or ``timeout`` passes; the count at that point."""
        deadline = time.perf_counter() + timeout
        seen = self.visitors()
        while seen < count and time.perf_counter() < deadline:
            time.sleep(0.01)
            seen = self.visitors()
        return seen

    def settle(self, quiet: float = 0.5, timeout: float = 10.0) -> int:
        """Wait until the count stops moving for ``quiet`` seconds; the final count."""
        deadline = time.perf_counter() + timeout
        last, since = self.visitors(), time.perf_counter()
        while time.perf_counter() < deadline:
            time.sleep(0.05)
            now = self.visitors()
            if now != last:
                last, since = now, time.perf_counter()
            elif time.perf_counter() - since >= quiet:
                break
        return last

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


# ------------------------------------------------------------------------------------------------ clients


class NoOpDispatcher:
    @staticmethod
    def dispatch_event(event: Any) -> None:
        return None


class LocalEventDispatcher:
    """The official default ``EventDispatcher``, unchanged except that it posts to the local server."""

    def __init__(self, url: str) -> None:
        from optimizely.event_dispatcher import EventDispatcher

        self.url = url
        self._dispatch = EventDispatcher.dispatch_event

    def dispatch_event(self, event: Any) -> None:
        event.url = self.url
        self._dispatch(event)


def official(df: dict[str, Any], dispatcher: Any) -> Any:
    from optimizely import optimizely as official_sdk

    return official_sdk.Optimizely(datafile=json.dumps(df), event_dispatcher=dispatcher)


def official_queue_drained(client: Any) -> Callable[[], bool]:
    processor = client.event_processor
    return lambda: processor.event_queue.empty() and not processor._current_batch


def wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition() and time.perf_counter() < deadline:
        time.sleep(0.001)


# ------------------------------------------------------------------------------------------------ (a)


async def track_costs(df: dict[str, Any], users: list[tuple[str, Any]], rounds: int) -> tuple[float, ...]:
    """(official per call, ours per call, official per event with the drain, ours per event with the drain),
    best of ``rounds``; the two SDKs' rounds alternate so that both see the same machine."""
    official_client = official(df, NoOpDispatcher())
    drained = official_queue_drained(official_client)

    def official_round() -> int:
        for i in range(ROUND):
            user_id, attributes = users[i % len(users)]
            official_client.track(EVENT_KEY, user_id, attributes, TAGS)
        return ROUND

    try:
        async with AsyncOptimizely(datafile=df, event_dispatcher=NullSink()) as ours:

            async def our_round() -> int:
                for i in range(ROUND):
                    user_id, attributes = users[i % len(users)]
                    await ours.track(EVENT_KEY, user_id, attributes, TAGS)
                return ROUND

            settle = {"official_settle": lambda: wait(drained), "our_settle": ours.flush, "repeat": rounds}
            off_call, our_call = await compare(official_round, our_round, **settle)
            off_total, our_total = await compare(official_round, our_round, include_settle=True, **settle)
    finally:
        official_client.close()
    return off_call, our_call, off_total, our_total


# ------------------------------------------------------------------------------------------------ (b)


def official_throughput(df: dict[str, Any], users: list[tuple[str, Any]], sink: Sink) -> tuple[int, float]:
    """Events delivered and seconds taken; fed only while its queue has room, so none are dropped."""
    sink.reset()
    client = official(df, LocalEventDispatcher(sink.url))
    queue = client.event_processor.event_queue
    try:
        start = time.perf_counter()
        for i in range(OFFICIAL_E2E_EVENTS):
            while queue.qsize() >= 900:
                time.sleep(0.0005)
            user_id, attributes = users[i % len(users)]
            client.track(EVENT_KEY, user_id, attributes, TAGS)
        delivered = sink.wait_for(OFFICIAL_E2E_EVENTS, timeout=60)
        elapsed = time.perf_counter() - start
    finally:
        client.close()
    return delivered, elapsed


async def our_throughput(df: dict[str, Any], users: list[tuple[str, Any]], sink: Sink) -> tuple[int, float]:
    sink.reset()
    async with AsyncOptimizely(datafile=df, event_endpoint=sink.url) as client:
        start = time.perf_counter()
        for i in range(OURS_E2E_EVENTS):
            user_id, attributes = users[i % len(users)]
            await client.track(EVENT_KEY, user_id, attributes, TAGS)
        await client.flush()
        elapsed = time.perf_counter() - start
        delivered = client.stats().delivered
    assert sink.visitors() == delivered, (sink.visitors(), delivered)
    return delivered, elapsed


# ------------------------------------------------------------------------------------------------ (c)


def official_burst(df: dict[str, Any], users: list[tuple[str, Any]], sink: Sink) -> tuple[int, int]:
    """(received when close() returned, received once the server went quiet)."""
    sink.reset()
    client = official(df, LocalEventDispatcher(sink.url))
    for i in range(BURST):
        user_id, attributes = users[i % len(users)]
        client.track(EVENT_KEY, user_id, attributes, TAGS)
    client.close()
    at_close = sink.visitors()
    return at_close, sink.settle()


async def our_burst(df: dict[str, Any], users: list[tuple[str, Any]], sink: Sink) -> tuple[int, int, str]:
    sink.reset()
    client = AsyncOptimizely(datafile=df, event_endpoint=sink.url)
    async with client:
        for i in range(BURST):
            user_id, attributes = users[i % len(users)]
            await client.track(EVENT_KEY, user_id, attributes, TAGS)
    report = await client.close()
    detail = f"delivered {report.delivered}, dropped {dict(report.dropped)}, undelivered {report.undelivered}"
    return sink.visitors(), sink.settle(), detail


# ------------------------------------------------------------------------------------------------ main


def prepare(df: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    df = {**df, "events": [*df.get("events", []), {"id": "99990001", "key": EVENT_KEY, "experimentIds": []}]}
    return df, bench_users(df, n=300)


async def main(rounds: int) -> None:
    print(f"(a) track() cost, best of {rounds} rounds of {ROUND} calls; 300 users with attributes, tags {TAGS}")
    for title, raw in datafiles():
        df, users = prepare(raw)
        print(f"  {title}: {len(df['featureFlags'])} flags, {len(df['attributes'])} attributes")
        off_call, our_call, off_total, our_total = await track_costs(df, users, rounds)
        for name, off_s, our_s, target in (
            ("track() call", off_call, our_call, TARGET),
            ("track() + drain, per event", off_total, our_total, None),  # informational: the background work
        ):
            ratio = off_s / our_s
            if target is None:
                verdict = "(no target: includes building, encoding and sending)"
            else:
                verdict = "ok" if ratio >= target else f"below the {target:g}x target"
            print(
                f"    {name:<28} official {off_s * 1e6:8.2f} us   ours {our_s * 1e6:8.2f} us   {ratio:5.1f}x  {verdict}"
            )

    df, users = prepare(example_datafile())
    sink = Sink()
    try:
        print("(b) end to end to a local HTTP server, default settings (example datafile)")
        off_n, off_s = official_throughput(df, users, sink)
        our_n, our_s = await our_throughput(df, users, sink)
        print(f"    official {off_n / off_s:>10,.0f} events/s  ({off_n:,} events in {off_s:.2f} s)")
        print(f"    ours     {our_n / our_s:>10,.0f} events/s  ({our_n:,} events in {our_s:.2f} s)")
        print(f"    ratio    {(our_n / our_s) / (off_n / off_s):10.1f}x")

        print(f"(c) burst of {BURST:,} track() calls in a tight loop, then close(); default settings")
        off_close, off_final = official_burst(df, users, sink)
        our_close, our_final, detail = await our_burst(df, users, sink)
        print(f"    {'':<9}{'received at close()':>20}{'lost':>8}{'received at the end':>21}{'lost':>8}")
        for name, at_close, final in (("official", off_close, off_final), ("ours", our_close, our_final)):
            print(f"    {name:<9}{at_close:>20,}{BURST - at_close:>8,}{final:>21,}{BURST - final:>8,}")
        print(f"    ours: {detail}")
    finally:
        sink.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.sink:
        serve_sink()
    else:
        anyio.run(main, args.rounds)
