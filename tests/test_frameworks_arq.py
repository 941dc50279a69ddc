"""arq's real worker: ``await client.start()`` in ``on_startup``, ``await client.close()`` in ``on_shutdown``.

The worker runs as arq's own CLI in a subprocess against a real redis-server that the fixture starts on
127.0.0.1 (skipped when the redis-server binary is missing: ``apt-get install redis-server``); events go to a
real HTTP sink in the test process. arq is asyncio-only, so the test runs on asyncio.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from _lifecycle_kit import datafile, visitors
from _sink_server import serve_sink

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary (apt-get)"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # arq and redis.asyncio run on asyncio only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def worker_env(tmp_path: Path, redis_port: int, sink_url: str) -> dict[str, str]:
    path = tmp_path / "datafile.json"
    path.write_text(json.dumps(datafile()))
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "REDIS_PORT": str(redis_port),
        "SINK_URL": sink_url,
        "OPTIMIZELY_DATAFILE": str(path),
    }


async def enqueue(redis_port: int, users: list[str]) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings(host="127.0.0.1", port=redis_port))
    try:
        for user in users:
            await pool.enqueue_job("purchase", user)
    finally:
        await pool.aclose()


async def read_all(stream: Any) -> str:
    chunks = []
    try:
        while True:
            chunks.append(await stream.receive())
    except anyio.EndOfStream:
        return b"".join(chunks).decode()


async def test_arq_burst_worker_delivers_every_event_and_exits_0(tmp_path: Path, redis_port: int) -> None:
    users = [f"user-{i}" for i in range(6)]
    await enqueue(redis_port, users)
    async with serve_sink() as sink:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "arq", "tests._arq_worker.WorkerSettings", "--burst"],
                cwd=ROOT,
                env=worker_env(tmp_path, redis_port, sink.url),
                check=False,
            )
        output = done.stdout.decode() + done.stderr.decode()
        assert done.returncode == 0, output
        assert "close report: delivered=6 undelivered=0" in output
        assert "cancel scope" not in output
        assert visitors(sink) == users


async def test_arq_worker_stopped_by_sigterm_drains_on_shutdown(tmp_path: Path, redis_port: int) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    users = [f"user-{i}" for i in range(4)]
    pool = await create_pool(RedisSettings(host="127.0.0.1", port=redis_port))
    async with serve_sink() as sink:
        worker = await anyio.open_process(
            [sys.executable, "-u", "-m", "arq", "tests._arq_worker.WorkerSettings"],
            cwd=ROOT,
            env=worker_env(tmp_path, redis_port, sink.url),
        )
        try:
            assert worker.stdout is not None
            with anyio.fail_after(60):
                jobs = [await pool.enqueue_job("purchase", user) for user in users]
                for job in jobs:
                    assert job is not None
                    assert await job.result(timeout=30, poll_delay=0.05) is False  # the job ran (and decided)
                assert visitors(sink) == []  # queued in the client (flush_interval=60), not sent yet
                worker.send_signal(signal.SIGTERM)  # arq cancels its main task, then calls on_shutdown
                output = await read_all(worker.stdout)
                returncode = await worker.wait()
        finally:
            if worker.returncode is None:
                worker.kill()
            with anyio.CancelScope(shield=True):
                await worker.aclose()
                await pool.aclose()
        assert returncode == 0, output
        assert "close report: delivered=4 undelivered=0" in output
        assert visitors(sink) == users
