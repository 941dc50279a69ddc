"""The library logger and helpers that keep secrets out of logs."""

from __future__ import annotations

import logging

logger = logging.getLogger("optimizely_async")


def redact(secret: str | None) -> str:
    """Show at most the first four characters of an SDK key or token."""
    if not secret:
        return "<none>"
    return secret[:4] + "…" if len(secret) > 4 else "…"


class _RedactingFilter(logging.Filter):
    """Shortens registered secrets in records of the HTTP libraries' loggers (httpx logs each URL at INFO, and
    a datafile URL contains the SDK key)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, int] = {}

    def add(self, secret: str) -> None:
        self._secrets[secret] = self._secrets.get(secret, 0) + 1

    def discard(self, secret: str) -> None:
        count = self._secrets.get(secret, 0) - 1
        if count > 0:
            self._secrets[secret] = count
        else:
            self._secrets.pop(secret, None)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        changed = False
        for secret in tuple(self._secrets):
            if secret in message:
                message = message.replace(secret, redact(secret))
                changed = True
        if changed:
            record.msg = message
            record.args = ()
        return True


_redactor = _RedactingFilter()
_WATCHED_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def protect_secret(secret: str | None) -> None:
    """Keep ``secret`` out of the HTTP libraries' log records from now on."""
    if not secret:
        return
    for name in _WATCHED_LOGGERS:
        target = logging.getLogger(name)
        if _redactor not in target.filters:
            target.addFilter(_redactor)
    _redactor.add(secret)


def release_secret(secret: str | None) -> None:
    if secret:
        _redactor.discard(secret)
