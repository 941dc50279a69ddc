"""Collect what a logger emits, as (level, message) pairs, for tests that compare log texts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Collector(logging.Handler):
    """A handler that keeps (level, message) of every record it sees."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


class Records(logging.Handler):
    """Every record a logger sees, kept whole (for the root logger: what uvicorn's or basicConfig's handler would
    print)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def lines(self, top: str, level: int = logging.INFO) -> list[str]:
        """Messages at ``level`` and above from the logger tree ``top`` ("optimizely" is the official SDK's)."""
        return [r.getMessage() for r in self.records if r.name.split(".")[0] == top and r.levelno >= level]


@contextmanager
def capture(logger: logging.Logger, level: int = logging.DEBUG) -> Iterator[list[tuple[int, str]]]:
    """Collect (level, message) of everything ``logger`` emits at ``level`` and above."""
    handler = Collector()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def at_our_levels(records: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The official SDK's records at the levels we log them: its per-call INFO lines (decisions, audiences,
    tracking, the metric value) and its per-event ``Attribute "x" is not in datafile.`` error are DEBUG here."""

    def ours(level: int, text: str) -> int:
        per_event = level == logging.ERROR and text.startswith("Attribute ") and text.endswith("not in datafile.")
        return logging.DEBUG if level == logging.INFO or per_event else level

    return [(ours(level, text), text) for level, text in records]
