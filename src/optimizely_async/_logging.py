"""The library logger and helpers that keep secrets out of logs."""

from __future__ import annotations

import logging

logger = logging.getLogger("optimizely_async")


def redact(secret: str | None) -> str:
    """Show at most the first four characters of an SDK key or token."""
    if not secret:
        return "<none>"
    return secret[:4] + "…" if len(secret) > 4 else "…"
