"""Datafile text to pydantic models in small steps, so that a worker thread can yield the GIL between them.

One ``json.loads`` or one ``model_validate_json`` of a 1 MB datafile is a single C call that holds the GIL
for tens of milliseconds, and the event loop stalls for all of it. Here the top-level object is scanned by
hand and each element of its big arrays (experiments, flags, rollouts, audiences ...) is decoded and
validated on its own, with ``pause()`` called between elements. The result is the same :class:`Datafile` a
single validation gives, and errors name the path of the bad field the same way.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import anyio
import pydantic

from ..errors import InvalidDatafileError
from . import datafile as df

__all__ = ["Pacer", "gc_paused", "lend_gil", "load_datafile", "no_pause", "run_paced"]

Pause = Callable[[], None]
T = TypeVar("T")

#: Top-level arrays whose elements are decoded and validated one at a time.
_SECTIONS: Final[Mapping[str, type[pydantic.BaseModel]]] = {
    "attributes": df.Attribute,
    "audiences": df.Audience,
    "typedAudiences": df.Audience,
    "events": df.Event,
    "experiments": df.Experiment,
    "groups": df.Group,
    "featureFlags": df.FeatureFlag,
    "rollouts": df.Rollout,
    "integrations": df.Integration,
    "holdouts": df.Holdout,
    "localHoldouts": df.Holdout,
}
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own whitespace
_DECODER = json.JSONDecoder()


def sections() -> tuple[str, ...]:
    """The names of the top-level arrays handled element by element."""
    return tuple(_SECTIONS)


def no_pause() -> None:
    return None


class Pacer:
    """A ``pause`` for a build in a worker thread: after ``budget`` seconds of work it yields the GIL.

    It yields with ``sleep(0)``. When the GIL comes back at once nobody else wanted it, and the build goes on
    at full speed. When it comes back late, another thread (the event loop's) is busy, and the build then also
    rests for ``rest`` seconds, so that it takes at most about ``budget / (budget + rest)`` of the GIL while
    the loop has work: the loop's own steps stretch by that share, not by half. On a loop that never idles
    the build could hardly get the GIL back at all; :func:`lend_gil` then lends it (:meth:`lend`), and the
    build tells the lender, runs one budget and rests. ``clock`` and ``sleep`` are ``time.perf_counter`` and
    ``time.sleep``.
    """

    __slots__ = (
        "_budget",
        "_clock",
        "_last",
        "_lending",
        "_owe_rest",
        "_rest",
        "_resting_until",
        "_seen",
        "_sleep",
        "lent",
        "resumed",
    )

    #: Getting the GIL back later than this after ``sleep(0)`` means another thread ran meanwhile.
    CONTENDED = 0.0001

    def __init__(
        self,
        budget: float = 0.0005,
        rest: float = 0.0015,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._budget = budget
        self._rest = rest
        self._clock = clock
        self._sleep = sleep
        #: When the build last yielded (its budget counts from there).
        self._last = clock()
        #: When the build last ran (called the pacer), and until when it rests without wanting the GIL.
        self._seen = self._last
        self._resting_until = 0.0
        #: Set by :meth:`lend` while the event loop's thread waits for the build to take the GIL.
        self._lending = False
        #: After a loan, the next yield rests whether or not the GIL came back late.
        self._owe_rest = False
        #: Set when the build has taken the GIL lent to it.
        self.resumed = threading.Event()
        #: How many times the GIL was lent to this build.
        self.lent = 0

    def __call__(self) -> None:
        now = self._seen = self._clock()
        if self._lending:
            self._take_loan(now)
        if now - self._last >= self._budget:
            self._sleep(0)
            after = self._clock()
            if self._lending:
                self._take_loan(after)
                return
            if (after - now > self.CONTENDED or self._owe_rest) and self._rest > 0:
                self._owe_rest = False
                self._resting_until = after + self._rest
                self._sleep(self._rest)
                after = self._clock()
                if self._lending:
                    self._take_loan(after)
                    return
            self._last = self._seen = after

    def _take_loan(self, now: float) -> None:
        # The event loop's thread lent us the GIL (see lend_gil) and waits: tell it, run a whole budget, and then
        # rest, which hands the GIL back for sure (after a sleep(0), the thread that wakes up usually loses the
        # GIL to the one that is running).
        self._lending = False
        self._owe_rest = True
        self._last = self._seen = now
        self.resumed.set()

    def waiting_for(self) -> float:
        """Seconds the build has been waiting for the GIL: since it last ran, or since its rest ended; 0 once
        :meth:`done`. Read from the event loop's thread, so the build is not running at that moment."""
        return max(0.0, self._clock() - max(self._seen, self._resting_until))

    def lend(self, timeout: float) -> None:
        """Block the calling thread (the event loop's) without the GIL until the build has taken it, for at
        most ``timeout`` seconds. The build then runs a whole budget before it yields again."""
        self.resumed.clear()
        self._lending = True
        self.lent += 1
        self.resumed.wait(timeout)
        self._lending = False

    def done(self) -> None:
        """The build is over: it wants the GIL no more, and nothing is lent to it."""
        self._resting_until = float("inf")


#: How often :func:`lend_gil` looks at its build.
_LEND_EVERY = 0.005
#: A build that has waited this long for the GIL (since it last ran, or since its rest ended) is lent it.
_LEND_AFTER = 0.01
#: The longest the loop's thread waits, without the GIL, for the build to take it.
_LEND_AT_MOST = 0.001


async def lend_gil(pacer: Pacer) -> None:
    """Run on the event loop beside a paced build in a worker thread, and hand the build the GIL when it
    can't get it.

    A thread that wants the GIL waits on a condition variable, and asks the holder to drop it only when no
    other thread took it for a whole switch interval. An event loop that never idles (its tasks are always
    ready) releases the GIL and takes it back at every iteration, around its ``select(0)``: the waiting
    thread is woken each time, but the loop's thread is already running and takes the GIL back first. The
    build then waits for hundreds of milliseconds at each of its yields, and a 1 MB datafile takes tens of
    seconds to apply (48 s with four tasks that only checkpoint, on a 2-core machine).

    So, every 5 ms, when the build has waited more than 10 ms, the loop's thread blocks in :meth:`Pacer.lend`
    for at most 1 ms, without the GIL: the build takes it and says so at once, runs one budget (0.5 ms) and
    rests, which hands the GIL back, and the loop goes on. That is a stall of the loop of about 0.6 ms, which
    the build would have caused anyway had it got the GIL by itself; on a loop that idles now and then the
    build hardly ever waits that long, and nothing is lent.
    """
    while True:
        await anyio.sleep(_LEND_EVERY)
        if pacer.waiting_for() > _LEND_AFTER:
            pacer.lend(_LEND_AT_MOST)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _outcome(work: Callable[[Pacer], T], pacer: Pacer) -> T | _Failure:
    # What work raises comes back as a value: raised inside the task group it would arrive in an ExceptionGroup.
    try:
        return work(pacer)
    except Exception as exc:
        return _Failure(exc)
    finally:
        pacer.done()


async def run_paced(work: Callable[[Pacer], T], pacer: Pacer | None = None) -> T:
    """``work(pacer)`` in a worker thread (``anyio.to_thread``) with a :class:`Pacer` (a new one unless
    given), and :func:`lend_gil` beside it on the event loop. What ``work`` raises is raised here as is."""
    pacer = pacer if pacer is not None else Pacer()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lend_gil, pacer)
        try:
            result = await anyio.to_thread.run_sync(_outcome, work, pacer)
        finally:
            tg.cancel_scope.cancel()
    if isinstance(result, _Failure):
        raise result.error
    return result


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False
_switch_interval = 0.005
#: While a config is built in a worker thread, the event loop's thread gets the GIL back this fast.
_BUILD_SWITCH_INTERVAL = 0.0005


@contextmanager
def gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector while a config is built, and keep the build from causing a full
    collection afterwards.

    A build allocates tens of thousands of objects. With the collector on, they trigger collections that walk
    the whole heap while holding the GIL (the event loop stalls for each), and the objects the new config
    keeps would count towards the next full collection. None of them is cyclic garbage: the transient models
    are freed by reference counting, and the config is acyclic. So the collector is off for the whole build;
    at the end the objects allocated meanwhile (in any thread) are moved to the oldest generation, without a
    pass, by ``gc.freeze()`` followed at once by ``gc.unfreeze()``, and the collector goes back on. Garbage
    cycles made by other threads during the build are found by the next full collection.

    The move is skipped when the application has frozen objects itself (``gc.get_freeze_count() > 0``):
    ``unfreeze()`` would release its frozen set. Re-entrant across threads: the collector is back on when the
    last builder ends, and an application that disabled it keeps it disabled.
    """
    global _gc_holders, _gc_was_enabled, _switch_interval
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
            _switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_interval, _BUILD_SWITCH_INTERVAL))
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0:
                sys.setswitchinterval(_switch_interval)
                if _gc_was_enabled:
                    if gc.get_freeze_count() == 0:
                        gc.freeze()
                        gc.unfreeze()
                    gc.enable()


def _text(data: str | bytes | bytearray) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDatafileError(f"datafile is not valid UTF-8: {exc}") from None


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match is not None else index


def _decode(text: str, index: int, where: str = "") -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, index)
    except (ValueError, RecursionError) as exc:  # also a number of more than 4,300 digits, or nesting too deep
        at = f" in {where}" if where else ""
        raise InvalidDatafileError(f"datafile is not valid JSON{at}: {exc}") from None


def _expect(text: str, index: int, char: str) -> int:
    if text[index : index + 1] != char:
        found = text[index : index + 1] or "end of data"
        raise InvalidDatafileError(f"datafile is not valid JSON: expected '{char}' but found {found!r} at char {index}")
    return index + 1


def _scan(text: str, pause: Pause) -> dict[str, Any]:
    """The top-level object, with the big arrays decoded element by element."""
    index = _skip(text, 0)
    if text[index : index + 1] != "{":
        value, _ = _decode(text, index)
        raise InvalidDatafileError(f"datafile must be a JSON object, not {type(value).__name__}")
    index = _skip(text, index + 1)
    result: dict[str, Any] = {}
    if text[index : index + 1] == "}":
        return result
    while True:
        key, index = _decode(text, index)
        if not isinstance(key, str):
            raise InvalidDatafileError(f"datafile is not valid JSON: object key expected at char {index}")
        index = _skip(text, _expect(text, _skip(text, index), ":"))
        if key in _SECTIONS and text[index : index + 1] == "[":
            items: list[Any] = []
            index = _skip(text, index + 1)
            if text[index : index + 1] == "]":
                index += 1
            else:
                while True:
                    item, index = _decode(text, index, f"{key}[{len(items)}]")
                    items.append(item)
                    pause()
                    index = _skip(text, index)
                    if text[index : index + 1] == ",":
                        index = _skip(text, index + 1)
                        continue
                    index = _expect(text, index, "]")
                    break
            result[key] = items
        else:
            result[key], index = _decode(text, index, key)
        index = _skip(text, index)
        if text[index : index + 1] == ",":
            index = _skip(text, index + 1)
            continue
        index = _expect(text, index, "}")
        if _skip(text, index) != len(text):
            raise InvalidDatafileError(f"datafile is not valid JSON: extra data at char {_skip(text, index)}")
        return result


def _problems(exc: pydantic.ValidationError, prefix: str) -> list[str]:
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{(prefix + loc).lstrip('.') or '<root>'}: {err['msg']}")
    return parts


def _raise(problems: list[str]) -> None:
    shown = problems[:5]
    if len(problems) > len(shown):
        shown.append(f"and {len(problems) - len(shown)} more")
    raise InvalidDatafileError("invalid datafile: " + "; ".join(shown))


def check_version(version: object) -> None:
    if not isinstance(version, str) or version not in df.SUPPORTED_VERSIONS:
        raise InvalidDatafileError(
            f'unsupported datafile version {version!r}: this SDK reads versions "2", "3" and "4"'
        )


def load_datafile(data: str | bytes | bytearray, pause: Pause = no_pause) -> df.Datafile:
    """Validate a datafile's JSON text into a :class:`Datafile`, calling ``pause()`` between small steps."""
    top = _scan(_text(data), pause)
    if "version" in top:
        check_version(top["version"])
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for key, value in top.items():
        model = _SECTIONS.get(key)
        if model is None or not isinstance(value, list):
            fields[key] = value
            continue
        validated = []
        for i, item in enumerate(value):
            try:
                validated.append(model.model_validate(item))
            except pydantic.ValidationError as exc:
                problems.extend(_problems(exc, f"{key}[{i}]"))
            value[i] = None  # free each decoded element now, not all at once at the end
            pause()
        fields[key] = validated
    try:
        result = df.Datafile.model_validate(fields)
    except pydantic.ValidationError as exc:
        problems.extend(_problems(exc, ""))
    if problems:
        _raise(problems)
    check_version(result.version)
    return result
