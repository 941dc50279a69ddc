"""A stand-in for a module that is imported on first use: keeps a heavy dependency out of ``import optimizely_async``.

httpx (with its SSL, email and HTTP/1.1 machinery) is a large part of the SDK's import time, and an application
that never sends an event, or sends them through its own dispatcher, never needs it. A module that uses httpx
binds the name to a :class:`LazyModule` instead of importing it; static type checkers see the real import.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stands for the module ``name``: the first attribute read imports it through the ordinary import system
    (thread-safe, and the same module object every other importer gets), and every read is passed through to
    it, so a name the module rebinds later is seen as it is then."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"
