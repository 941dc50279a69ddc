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
from typing import Any, Final

import pydantic

from ..errors import InvalidDatafileError
from . import datafile as df

__all__ = ["Pacer", "gc_on_for_new_objects", "gc_paused", "load_datafile", "no_pause"]

Pause = Callable[[], None]

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
    """A ``pause`` that yields the GIL (``time.sleep(0)``) once ``budget`` seconds of work have gone by."""

    __slots__ = ("_budget", "_last")

    def __init__(self, budget: float = 0.0005) -> None:
        self._budget = budget
        self._last = time.perf_counter()

    def __call__(self) -> None:
        now = time.perf_counter()
        if now - self._last >= self._budget:
            time.sleep(0)
            self._last = time.perf_counter()


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False
_switch_interval = 0.005
#: While a config is built in a worker thread, the event loop's thread gets the GIL back this fast.
_BUILD_SWITCH_INTERVAL = 0.0005


@contextmanager
def gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector while a config is built.

    Building one allocates tens of thousands of objects, which triggers collections that walk the whole
    heap while holding the GIL. Nothing built here is cyclic garbage, so those walks only cost time (and
    stall the event loop). Re-entrant across threads: the collector is back on when the last builder ends.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
            global _switch_interval
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
                    gc.enable()


@contextmanager
def gc_on_for_new_objects() -> Iterator[None]:
    """Inside :func:`gc_paused`: set aside (``gc.freeze()``) everything allocated so far, the transient models
    included, and let the collector run again for what is allocated next.

    The objects the build keeps are then collected a few hundred at a time as they are made, instead of all at
    once (with everything the event loop allocated meanwhile) when the collector comes back on. The frozen
    objects go back to the oldest generation at the end (``gc.unfreeze()``). Only done when nobody else froze
    objects (an application that calls ``gc.freeze()`` itself keeps its frozen set) and no other build runs.
    """
    with _gc_lock:
        usable = _gc_holders == 1 and _gc_was_enabled and gc.get_freeze_count() == 0
        if usable:
            gc.freeze()
            gc.enable()
    try:
        yield
    finally:
        if usable:
            with _gc_lock:
                gc.disable()
                gc.unfreeze()


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


def _decode(text: str, index: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, index)
    except json.JSONDecodeError as exc:
        raise InvalidDatafileError(f"datafile is not valid JSON: {exc}") from None


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
                    item, index = _decode(text, index)
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
            result[key], index = _decode(text, index)
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
    if version not in df.SUPPORTED_VERSIONS:
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
