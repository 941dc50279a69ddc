"""SyncOptimizely's blocking calls never raise for their timeout argument, whatever it is.

``flush()``, ``close()`` and ``wait_until_ready()`` hand their timeout to thread waits, which raise
OverflowError past ``threading.TIMEOUT_MAX`` (and ``int``s past the range of a float raise it when converted);
a number subclass whose comparisons or arithmetic raise got as far as ``value < 0`` or ``timeout + 1.0``.
Each of these used to escape the public method.
"""

from __future__ import annotations

import json
import math
import reprlib
import threading
from typing import Any

import pytest

from _datafile_server import DatafileServer
from _sync_support import EVENT_KEY, datafile
from optimizely_async import DispatchResult, EventRequest, SyncOptimizely


class Recorder:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.payloads.append(json.loads(request.body))
        return DispatchResult(delivered=True, status=200)


class Touchy(float):
    """A float whose comparisons and arithmetic raise."""

    def __lt__(self, other: object) -> bool:
        raise ArithmeticError("__lt__")

    __gt__ = __le__ = __ge__ = __lt__

    def __add__(self, other: object) -> float:
        raise ArithmeticError("__add__")

    __radd__ = __sub__ = __mul__ = __truediv__ = __add__


def _name(value: Any) -> str:
    return f"{type(value).__name__}:{reprlib.repr(value)}" if type(value) is not object else "object"


HUGE_INT = 10**4000  # no float can hold it
HUGE_FINITE = [2**53 + 1, 1e300]  # floats, but far past what a thread can wait for
INVALID: list[Any] = [HUGE_INT, math.nan, math.inf, -1, "soon", True, object()]


@pytest.mark.parametrize("timeout", [*INVALID, *HUGE_FINITE, Touchy(0.5)], ids=_name)
def test_flush_and_close_take_any_timeout(timeout: Any) -> None:
    sink = Recorder()
    client = SyncOptimizely(datafile(), event_dispatcher=sink, flush_interval=60.0)
    client.track(EVENT_KEY, "before-flush")
    assert client.flush(timeout) is None
    assert len(sink.payloads) == 1
    client.track(EVENT_KEY, "before-close")
    report = client.close(timeout)
    assert report.delivered == 2 and report.submitted == 2
    assert not client._runner._thread.is_alive()


@pytest.mark.parametrize("timeout", [HUGE_INT, math.nan, "soon", Touchy(5.0)], ids=_name)
def test_wait_until_ready_takes_any_timeout(timeout: Any) -> None:
    with DatafileServer() as server:  # serves nothing usable until the timer below publishes the datafile
        client = SyncOptimizely(
            sdk_key="k",
            datafile_url_template=f"{server.url}/datafiles/{{sdk_key}}.json",
            update_interval=0.05,
            event_dispatcher=Recorder(),
        )
        timer = threading.Timer(0.3, server.set_datafile, args=(datafile(),))
        timer.start()
        try:
            assert client.wait_until_ready(timeout) is True  # an invalid timeout means the default (10 s)
            assert client.wait_until_ready(HUGE_FINITE[0]) is True  # ready: returns at once
        finally:
            timer.cancel()
            client.close(5)
