"""The library logger and helpers that keep secrets out of logs.

Secrets are redacted by value, not by pattern: every registered secret is replaced wherever it appears in a log
record of the SDK's or of the HTTP libraries' loggers (message, arguments and exception text), in each form it
can take there: as it is, percent-encoded (in a URL), escaped as Python shows it inside a ``repr`` (an
exception that quotes a header), and as the bytes literal of its UTF-8 form.

Every module logs through an :class:`SdkLogger` (``sdk_logger(name)``), which sends its records to the
``logger=`` of the client doing the work when that client was given one (see :mod:`._logroute`), and to the
library logger ``name`` otherwise. Until the first client with ``logger=`` is created in the process, an
``SdkLogger``'s methods ARE the library logger's bound methods: logging costs exactly what it did before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from contextvars import ContextVar
from typing import Any, Union
from urllib.parse import quote

#: A ``logging.Logger`` or ``logging.LoggerAdapter``: what ``logger=`` accepts.
AnyLogger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]

#: The ``logger=`` of the client whose work runs in this context; None: the library loggers.
client_logger: ContextVar[AnyLogger | None] = ContextVar("optimizely_async_logger", default=None)

_DIRECT = ("isEnabledFor", "debug", "info", "warning", "error", "exception", "log")


class SdkLogger:
    """The logger of one of the SDK's modules: the library logger ``name``, or the current client's ``logger=``.

    Offers the ``logging.Logger`` methods the SDK uses. Direct mode (the start): the methods are the library
    logger's own, set on the instance. Routed mode (after :func:`enable_routing`): the class methods below
    look up :data:`client_logger` first, about a tenth of a microsecond more per call.
    """

    __slots__ = ("__dict__", "base", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.base = logging.getLogger(name)
        if not _routing:
            vars(self).update({method: getattr(self.base, method) for method in _DIRECT})
        _all.append(self)

    def _target(self) -> AnyLogger:
        custom = client_logger.get()
        return self.base if custom is None else custom

    def isEnabledFor(self, level: int) -> bool:
        return self._target().isEnabledFor(level)

    def _emit(self, level: int, msg: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        target = self._target()
        if target.isEnabledFor(level):
            kwargs.setdefault("stacklevel", 3)  # the line that called debug() / info() ..., not this module
            target.log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self._emit(logging.ERROR, msg, args, kwargs)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)


_all: list[SdkLogger] = []
_routing = False


def sdk_logger(name: str = "optimizely_async") -> SdkLogger:
    """The logger a module of the SDK logs through (``name`` is the library logger used without ``logger=``)."""
    return SdkLogger(name)


def enable_routing() -> None:
    """Switch every SdkLogger to routed mode, for good (called when a client is given ``logger=``)."""
    global _routing
    _routing = True
    for each in _all:
        vars(each).clear()


logger = sdk_logger("optimizely_async")

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


def protect_logger(target: AnyLogger) -> None:
    """Apply the secret redaction to a user's ``logger=`` too (to the Logger under an adapter)."""
    while isinstance(target, logging.LoggerAdapter):
        target = target.logger
    if isinstance(target, logging.Logger) and _redactor not in target.filters:
        target.addFilter(_redactor)


def release_secrets(*secrets: str | None) -> None:
    """Stop redacting ``secrets`` (one registration each): their client is gone."""
    for secret in secrets:
        if secret:
            _redactor.discard(secret)
