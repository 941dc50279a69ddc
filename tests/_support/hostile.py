"""Hostile values for the never-raise tests: objects whose dunders raise or lie, str / float / int subclasses
that misbehave in look-ups and comparisons, containers whose methods raise, and very deep or cyclic values.

Every hostile method raises :class:`Boom` (a ``RuntimeError``), so a test can tell the SDK's own errors from
the ones these values throw at it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "Boom",
    "DictLies",
    "FloatLies",
    "IntLies",
    "MappingLies",
    "RaisingDunders",
    "StrEq",
    "StrEqRaises",
    "StrHashRaises",
    "deep_dict",
    "deep_list",
    "make_cycle",
    "raiser",
]


class Boom(RuntimeError):
    """What every hostile method raises."""


class RaisingDunders:
    """Every dunder a look-up, comparison, conversion or log line could reach raises."""

    def __hash__(self) -> int:
        raise Boom("__hash__")

    def __eq__(self, other: object) -> bool:
        raise Boom("__eq__")

    def __getattr__(self, name: str) -> Any:
        raise Boom(f"__getattr__({name})")

    def __repr__(self) -> str:
        raise Boom("__repr__")

    def __str__(self) -> str:
        raise Boom("__str__")

    def __bool__(self) -> bool:
        raise Boom("__bool__")

    def __len__(self) -> int:
        raise Boom("__len__")

    def __iter__(self) -> Iterator[Any]:
        raise Boom("__iter__")

    def __float__(self) -> float:
        raise Boom("__float__")

    def __index__(self) -> int:
        raise Boom("__index__")


class StrEq(str):
    """Equal to every string, hashed as the text it holds."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class StrEqRaises(str):
    def __eq__(self, other: object) -> bool:
        raise Boom("__eq__")

    __hash__ = str.__hash__

    def __str__(self) -> str:
        raise Boom("__str__")

    def __format__(self, spec: str) -> str:
        raise Boom("__format__")

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        raise Boom("encode")

    def __add__(self, other: object) -> str:
        raise Boom("__add__")


class StrHashRaises(str):
    def __hash__(self) -> int:
        raise Boom("__hash__")


class DictLies(dict):  # type: ignore[type-arg]
    """A dict whose methods raise (its storage still holds items)."""

    def __iter__(self) -> Iterator[Any]:
        raise Boom("__iter__")

    def keys(self) -> Any:
        raise Boom("keys")

    def items(self) -> Any:
        raise Boom("items")

    def __getitem__(self, key: Any) -> Any:
        raise Boom("__getitem__")

    def get(self, key: Any, default: Any = None) -> Any:
        raise Boom("get")

    def __len__(self) -> int:
        raise Boom("__len__")


class MappingLies(Mapping[Any, Any]):
    """A mapping whose every method raises, comparison included (hashed by identity)."""

    def __len__(self) -> int:
        raise Boom("__len__")

    def __getitem__(self, key: Any) -> Any:
        raise Boom("__getitem__")

    def __iter__(self) -> Iterator[Any]:
        raise Boom("__iter__")

    def __eq__(self, other: object) -> bool:
        raise Boom("__eq__")

    __hash__ = object.__hash__


class FloatLies(float):
    def __float__(self) -> float:
        raise Boom("__float__")

    def __lt__(self, other: object) -> bool:
        raise Boom("__lt__")

    __gt__ = __le__ = __ge__ = __lt__

    def __add__(self, other: object) -> float:
        raise Boom("__add__")

    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __add__

    def __repr__(self) -> str:
        raise Boom("__repr__")


class IntLies(int):
    def __eq__(self, other: object) -> bool:
        raise Boom("__eq__")

    __hash__ = int.__hash__

    def __index__(self) -> int:
        raise Boom("__index__")


def deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def raiser(*args: Any) -> None:
    raise Boom("listener")


def make_cycle() -> Any:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    return cycle
