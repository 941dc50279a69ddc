"""The notification center: DECISION, TRACK, ACTIVATE, LOG_EVENT and OPTIMIZELY_CONFIG_UPDATE listeners.

Type strings, listener ids and listener arguments are the official SDK's, so listeners written for it work
unchanged. A listener may be a plain function or a coroutine function; an exception in one is logged and never
reaches the caller, the queue or the other listeners. No method raises, whatever it is given: a callback that
is not callable is refused (-1) with an error log.

A plain function runs inline, on the event loop, in registration order: keep it quick (it delays the call
that notified). A coroutine function is called inline too (which only creates its coroutine); while the
client runs, the coroutine is awaited later in the client's background work, one at a time in notification
order, off the caller's path (see :mod:`._listener_queue`). ``flush()`` and ``close()`` wait for them.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any

from . import defaults
from ._listener_queue import AsyncListenerQueue
from ._logging import sdk_logger
from ._owned_threads import user_code_errors

__all__ = ["NotificationCenter", "NotificationType"]

_log = sdk_logger()

Listener = Callable[..., Any]


class NotificationType(str, enum.Enum):
    """Notification types; each value is the official SDK's type string."""

    ACTIVATE = "ACTIVATE:experiment, user_id, attributes, variation, event"
    DECISION = "DECISION:type, user_id, attributes, decision_info"
    OPTIMIZELY_CONFIG_UPDATE = "OPTIMIZELY_CONFIG_UPDATE"
    TRACK = "TRACK:event_key, user_id, attributes, event_tags, event"
    LOG_EVENT = "LOG_EVENT:log_event"

    def __str__(self) -> str:
        return self.value


_BY_VALUE: dict[str, NotificationType] = {t.value: t for t in NotificationType}


def _coerce(notification_type: object) -> NotificationType | None:
    """The type named by an enum member or its exact string; None for anything else. Never runs a method of
    the argument (a ``str`` subclass whose ``__hash__`` raises is read as the plain string it holds)."""
    if type(notification_type) is NotificationType:
        return notification_type
    kind = type(notification_type)
    if not issubclass(kind, str):
        return None
    return _BY_VALUE.get(str.__str__(notification_type))


def _shown(value: object) -> str:
    """A safe rendering of a bad argument for an error message (its own __repr__ or __str__ may raise)."""
    kind = type(value)
    if issubclass(kind, str):
        return str.__str__(value)
    return f"<{kind.__name__}>"


def _same(a: Listener, b: Listener) -> bool:
    """``a == b`` as the official duplicate check has it (bound methods of one object compare equal), but an
    ``__eq__`` that raises means "not the same"."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


class NotificationCenter:
    """Holds listeners by type and sends notifications to them."""

    def __init__(self) -> None:
        self._next_id = 1
        self._listeners: dict[NotificationType, list[tuple[int, Listener]]] = {t: [] for t in NotificationType}
        #: True while no DECISION and no ACTIVATE listener is registered: what the decide fast path checks, one
        #: attribute read per decide instead of two ``has_listeners`` calls. Kept current by every change below.
        self.decisions_unheard = True
        #: Runs async listeners' coroutines in the client's background work (see the module docstring).
        self.background = AsyncListenerQueue(defaults.LISTENER_BACKLOG)

    def add_notification_listener(self, notification_type: NotificationType | str, callback: Listener) -> int:
        """Register ``callback``; returns its id, or -1 for an unknown type or a callback already registered
        for that type."""
        kind = _coerce(notification_type)
        if kind is None:
            _log.error("Invalid notification_type: %s provided. Not adding listener.", _shown(notification_type))
            return -1
        try:
            usable = callable(callback)
        except Exception:
            usable = False
        if not usable:
            _log.error("Invalid notification callback: a %s is not callable. Not adding listener.", _shown(callback))
            return -1
        if any(_same(cb, callback) for _, cb in self._listeners[kind]):
            _log.error("Listener has already been added. Not adding it again.")
            return -1
        listener_id = self._next_id
        self._next_id += 1
        self._listeners[kind].append((listener_id, callback))
        self._changed()
        return listener_id

    def remove_notification_listener(self, notification_id: int) -> bool:
        """Remove the listener with that id from whichever type holds it."""
        if not isinstance(notification_id, int):
            return False
        notification_id = int.__int__(notification_id)  # a subclass's __eq__ never runs
        for kind, entries in self._listeners.items():
            for i, (listener_id, _) in enumerate(entries):
                if listener_id == notification_id:
                    self._listeners[kind] = entries[:i] + entries[i + 1 :]
                    self._changed()
                    return True
        return False

    def clear_notification_listeners(self, notification_type: NotificationType | str) -> None:
        kind = _coerce(notification_type)
        if kind is None:
            _log.error("Invalid notification_type: %s provided. Not removing any listener.", _shown(notification_type))
            return
        self._listeners[kind] = []
        self._changed()

    def clear_all_notification_listeners(self) -> None:
        for kind in self._listeners:
            self._listeners[kind] = []
        self._changed()

    def _changed(self) -> None:
        listeners = self._listeners
        self.decisions_unheard = not listeners[NotificationType.DECISION] and not listeners[NotificationType.ACTIVATE]

    def has_listeners(self, notification_type: NotificationType) -> bool:
        """Cheap check used on hot paths to skip building notification arguments."""
        return bool(self._listeners[notification_type])

    async def send_notifications(self, notification_type: NotificationType | str, *args: Any) -> None:
        """Call every listener of the type with ``args``. A coroutine result is queued to run in the client's
        background work; while that does not run (client not started, or stopped), it is awaited here."""
        kind = _coerce(notification_type)
        if kind is None:
            _log.error(
                "Invalid notification_type: %s provided. Not triggering any notification.", _shown(notification_type)
            )
            return
        for _, callback in tuple(self._listeners[kind]):
            try:
                result = callback(*args)
                if inspect.isawaitable(result) and not self.background.submit(result, kind.value):
                    await result
            except user_code_errors():
                _log.exception('Unknown problem when sending "%s" type notification.', kind.value)
