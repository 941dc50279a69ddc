"""``logger=``: send everything one client logs to the logger its owner chose.

The SDK's modules log through :class:`~optimizely_async._logging.SdkLogger` objects, which look up the context
variable :data:`~optimizely_async._logging.client_logger`. A client given ``logger=`` sets that variable for
the duration of each of its public methods (and of its user contexts' and notification center's), and for its
background tasks (event queue, dispatcher, datafile poller, ODP queue, async listeners), which keep it for their
whole life: they are all started by one method, marked :func:`starts_background_work`. The client's
and its notification center's methods are wrapped on the instance (once, at construction); its user contexts
get a subclass whose methods do the same (made once per class; a user context only switches class). A client
without ``logger=`` runs the plain methods, unchanged.

Why a context variable and not a logger handed to every component: the decision engine is a set of plain
functions called from many places; passing a logger through all of them would change every signature for a
feature most users never turn on. A context variable follows the work wherever it goes, including into the
tasks the client starts (anyio copies the context into a new task), and two clients in one process, or one
task using two clients, never mix their lines.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ._logging import AnyLogger, client_logger, enable_routing, protect_logger

__all__ = ["logs_to_its_logger", "route_client_logs", "starts_background_work"]

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")

#: Per class: the names of its public methods (computed once per class).
_PUBLIC: dict[type, tuple[str, ...]] = {}


def _public_methods(kind: type) -> tuple[str, ...]:
    names = _PUBLIC.get(kind)
    if names is None:
        names = tuple(
            name for name in dir(kind) if not name.startswith("_") and inspect.isfunction(getattr(kind, name, None))
        )
        _PUBLIC[kind] = names
    return names


def _routed(method: Callable[..., Any], logger: AnyLogger) -> Callable[..., Any]:
    """``method`` with ``client_logger`` set to ``logger`` while it runs."""
    if inspect.iscoroutinefunction(method):

        async def routed_async(*args: Any, **kwargs: Any) -> Any:
            token = client_logger.set(logger)
            try:
                return await method(*args, **kwargs)
            finally:
                client_logger.reset(token)

        routed_async.__wrapped__ = method  # type: ignore[attr-defined]  # inspect.signature follows it
        return routed_async

    def routed(*args: Any, **kwargs: Any) -> Any:
        token = client_logger.set(logger)
        try:
            return method(*args, **kwargs)
        finally:
            client_logger.reset(token)

    routed.__wrapped__ = method  # type: ignore[attr-defined]
    return routed


def _route(target: _T, logger: AnyLogger, names: tuple[str, ...]) -> _T:
    for name in names:
        setattr(target, name, _routed(getattr(target, name), logger))
    return target


#: Per user-context class: its subclass whose public methods log to ``self._log_to``.
_ROUTED_CLASSES: dict[type, type] = {}


def _routed_class(kind: type) -> type:
    """A subclass of ``kind`` (made once) whose public methods set ``client_logger`` to ``self._log_to``."""
    routed = _ROUTED_CLASSES.get(kind)
    if routed is not None or getattr(kind, "_routes_logs", False):
        return routed or kind
    methods: dict[str, Any] = {"_routes_logs": True, "__module__": kind.__module__, "__qualname__": kind.__qualname__}
    for name in _public_methods(kind):
        methods[name] = _routed_method(getattr(kind, name))
    routed = type(kind.__name__, (kind,), methods)
    _ROUTED_CLASSES[kind] = routed
    return routed


def _routed_method(function: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(function):

        async def routed_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            token = client_logger.set(self._log_to)
            try:
                return await function(self, *args, **kwargs)
            finally:
                client_logger.reset(token)

        return functools.wraps(function)(routed_async)

    def routed(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = client_logger.set(self._log_to)
        try:
            return function(self, *args, **kwargs)
        finally:
            client_logger.reset(token)

    return functools.wraps(function)(routed)


def route_client_logs(client: Any, logger: AnyLogger) -> None:
    """Make ``client`` (an AsyncOptimizely) log to ``logger``: its public methods, the user contexts it
    creates, its notification center, and the background tasks it starts."""
    enable_routing()
    protect_logger(logger)
    _route(client, logger, tuple(name for name in _public_methods(type(client)) if name != "create_user_context"))
    _route(client.notification_center, logger, _public_methods(type(client.notification_center)))
    # Background work: read by @starts_background_work, around the one method that launches it.
    client._log_to = logger

    create = client.create_user_context

    def create_user_context(*args: Any, **kwargs: Any) -> Any:
        token = client_logger.set(logger)
        try:
            user = create(*args, **kwargs)
        finally:
            client_logger.reset(token)
        if user is not None:
            # One attribute and a class switch, not a wrapper per method: user contexts are made per request.
            user._log_to = logger
            user.__class__ = _routed_class(type(user))
        return user

    create_user_context.__wrapped__ = create  # type: ignore[attr-defined]
    client.create_user_context = create_user_context


def starts_background_work(start: Callable[..., Awaitable[_R]]) -> Callable[..., Awaitable[_R]]:
    """For the one method of the client that launches its background work (``AsyncOptimizely._start``, which
    both ``async with client`` and ``start()`` go through): with ``logger=``, ``client_logger`` is set while it
    runs, so every task it starts (event queue, ODP queue, poller, async listeners, and whatever they start in
    turn) copies the logger with its context and keeps it for its whole life. No list of method names: a
    background task added or renamed later is routed because of where it is started, not what it is called."""

    @functools.wraps(start)
    async def start_with_logger(self: Any, *args: Any, **kwargs: Any) -> _R:
        logger: AnyLogger | None = getattr(self, "_log_to", None)
        if logger is None:
            return await start(self, *args, **kwargs)
        token = client_logger.set(logger)
        try:
            return await start(self, *args, **kwargs)
        finally:
            client_logger.reset(token)

    return start_with_logger


def logs_to_its_logger(init: Callable[_P, None]) -> Callable[_P, None]:
    """For the client's ``__init__``: with ``logger=``, what the constructor logs goes there too, and the new
    client is routed (:func:`route_client_logs`). Without it, ``__init__`` runs as it is. The signature is
    kept (for type checkers too: they check every call of the constructor against it)."""

    @functools.wraps(init)
    def init_with_logger(*args: _P.args, **kwargs: _P.kwargs) -> None:
        logger = kwargs.get("logger")
        if not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
            init(*args, **kwargs)  # no logger, or a wrong one for __init__ to reject
            return
        enable_routing()
        token = client_logger.set(logger)
        try:
            init(*args, **kwargs)
        finally:
            client_logger.reset(token)
        route_client_logs(args[0], logger)

    return init_with_logger
