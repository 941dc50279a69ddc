"""Ctrl-C a child Python process once it says it is ready, and collect what it printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .child import SRC


def interrupt_when_ready(*args: str, timeout: float = 60, then_send: str | None = None) -> tuple[str, str]:
    """Run ``python *args`` (the SDK's src on PYTHONPATH), send SIGINT once its first stdout line is "ready",
    and return its (stdout after that line, stderr). The child is killed if it outlives ``timeout``.

    With ``then_send``, that text is written to the child's stdin after the SIGINT (so a child blocked reading
    stdin is sure to be interrupted while it waits)."""
    process = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": SRC},
        stdin=subprocess.PIPE if then_send is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)
        return process.communicate(then_send, timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
