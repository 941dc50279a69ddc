"""The queue's view of a user event that may not be built yet: :class:`PendingEvent` and :func:`materialize`.

Kept apart from :mod:`.models` so that the queue, the ledger and the client can handle queued events without
importing pydantic and building the event models; :mod:`.factory` imports those when it builds the first
event context (at client construction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._logging import sdk_logger

if TYPE_CHECKING:
    from .models import EventContext, QueuedEvent, UserEvent

__all__ = ["PendingEvent", "materialize"]

_log = sdk_logger()


class PendingEvent:
    """A user event whose model is built later, by the queue's task rather than in the caller.

    ``track()`` validates its input, snapshots it and queues one of these: the pydantic model, the attribute
    list and the reserved-tag parsing then cost the caller nothing (the official SDK defers the same work to
    its flush thread). ``context`` is set so the queue can batch by project and revision.
    """

    __slots__ = ("_args", "_build", "context")

    def __init__(self, context: EventContext, build: Callable[..., UserEvent], args: tuple[Any, ...] = ()) -> None:
        self.context = context
        self._build = build
        self._args = args

    def build(self, **extra: Any) -> UserEvent:
        """The event model: ``build(*args, **extra)``."""
        return self._build(*self._args, **extra)


def materialize(events: Sequence[QueuedEvent]) -> tuple[list[UserEvent], list[QueuedEvent]]:
    """Build any pending events: ``(built, failed)``."""
    built: list[UserEvent] = []
    failed: list[QueuedEvent] = []
    for event in events:
        if isinstance(event, PendingEvent):
            try:
                built.append(event.build())
            except Exception:
                _log.exception("Could not build a queued event.")
                failed.append(event)
        else:
            built.append(event)
    return built, failed
