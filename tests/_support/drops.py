"""``DropLog``: an ``on_drop`` hook for tests, keeping what it was told."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DropLog"]


class DropLog:
    """An ``on_drop`` hook that records its calls: (events, reason)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], str]] = []

    def __call__(self, events: Sequence[Any], reason: str) -> None:
        self.calls.append((list(events), reason))

    def counts(self) -> dict[str, int]:
        """Events dropped, by reason."""
        out: dict[str, int] = {}
        for events, reason in self.calls:
            out[reason] = out.get(reason, 0) + len(events)
        return out
