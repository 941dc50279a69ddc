"""The library logger and helpers that keep secrets out of logs.

Secrets are redacted by value, not by pattern: every registered secret is replaced wherever it appears in a log
record of the SDK's or of the HTTP libraries' loggers (message, arguments and exception text), in each form it
can take there: as it is, percent-encoded (in a URL), escaped as Python shows it inside a ``repr`` (an
exception that quotes a header), and as the bytes literal of its UTF-8 form.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from urllib.parse import quote

logger = logging.getLogger("optimizely_async")

#: Shorter strings are not scrubbed from log records: real SDK keys and tokens are over 20 characters, and
#: replacing a two-letter "key" (as tests and demos use) wherever it occurs would garble every message.
MIN_SECRET_LENGTH = 8


def redact(secret: str | None) -> str:
    """Show at most the first four characters of an SDK key or token."""
    if not secret:
        return "<none>"
    return secret[:4] + "…" if len(secret) > 4 else "…"


@functools.lru_cache(maxsize=64)
def secret_forms(secret: str) -> tuple[str, ...]:
    """The texts under which ``secret`` can show up in a message, longest first."""
    forms = {secret, quote(secret, safe=""), repr(secret)[1:-1]}
    with contextlib.suppress(UnicodeEncodeError):
        forms.add(repr(secret.encode("utf-8"))[2:-1])
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every form of each secret shortened to its first four characters."""
    for secret in secrets:
        if len(secret) < MIN_SECRET_LENGTH:
            continue
        short = redact(secret)
        for form in secret_forms(secret):
            if form in text:
                text = text.replace(form, short)
    return text


class _RedactingFilter(logging.Filter):
    """Shortens registered secrets in records of the HTTP libraries' loggers (httpx logs each URL at INFO, and
    a datafile URL contains the SDK key)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, int] = {}

    def add(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            return
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
        secrets = list(self._secrets)
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = scrub(message, secrets)
        if cleaned != message:
            record.msg = cleaned
            record.args = ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Handlers render exc_text when it is set: fill it in, redacted (an exception's text may hold a secret).
            record.exc_text = scrub(_formatter.formatException(record.exc_info), secrets)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text, secrets)
        return True


_formatter = logging.Formatter()
_redactor = _RedactingFilter()
_WATCHED_LOGGERS = (
    "optimizely_async",
    "optimizely_async.config",
    "optimizely_async.events",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def protect_secret(secret: str | None) -> None:
    """Keep ``secret`` out of the SDK's and the HTTP libraries' log records from now on."""
    if not secret:
        return
    for name in _WATCHED_LOGGERS:
        target = logging.getLogger(name)
        if _redactor not in target.filters:
            target.addFilter(_redactor)
    _redactor.add(secret)


def release_secrets(*secrets: str | None) -> None:
    """Stop redacting ``secrets`` (one registration each): their client is gone."""
    for secret in secrets:
        if secret:
            _redactor.discard(secret)
