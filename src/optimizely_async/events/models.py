"""Pydantic models of the user events the SDK queues.

A user event is built by the client at ``track()`` / impression time with everything already resolved
against the project config (attribute ids, campaign ids, decision metadata), so the queue and the payload
encoder never need the config. ``uuid`` may be left ``None``: it is then generated when the event is encoded,
which keeps ``uuid4()`` off the caller's hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .._logging import sdk_logger

__all__ = [
    "ConversionEvent",
    "DecisionMetadata",
    "EventContext",
    "ImpressionEvent",
    "PendingEvent",
    "QueuedEvent",
    "UserEvent",
    "VisitorAttribute",
    "materialize",
]

_log = sdk_logger()

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class EventContext(BaseModel):
    """Per-config facts copied into every payload; one instance per ProjectConfig."""

    model_config = _FROZEN

    account_id: str
    project_id: str
    revision: str
    anonymize_ip: Any = False  # the datafile's anonymizeIP, sent verbatim
    #: The events endpoint chosen by the datafile's region (overridden by the client's ``event_endpoint``).
    endpoint: str


class VisitorAttribute(BaseModel):
    model_config = _FROZEN

    entity_id: str
    key: str
    type: str = "custom"
    value: Any


class DecisionMetadata(BaseModel):
    model_config = _FROZEN

    flag_key: str
    rule_key: str
    rule_type: str
    variation_key: str
    enabled: bool
    cmab_uuid: str | None = None


class ImpressionEvent(BaseModel):
    """A decision the user was exposed to (``campaign_activated``)."""

    model_config = _FROZEN

    kind: Literal["impression"] = "impression"
    context: EventContext
    user_id: str
    attributes: tuple[VisitorAttribute, ...] = ()
    campaign_id: str
    experiment_id: str
    variation_id: str | None
    metadata: DecisionMetadata
    timestamp: int
    uuid: str | None = None


class ConversionEvent(BaseModel):
    """A ``track()`` call: an event key with optional revenue, value and tags."""

    model_config = _FROZEN

    kind: Literal["conversion"] = "conversion"
    context: EventContext
    user_id: str
    attributes: tuple[VisitorAttribute, ...] = ()
    event_id: str
    event_key: str
    revenue: int | None = None
    value: float | None = None
    tags: dict[Any, Any] | None = None
    timestamp: int
    uuid: str | None = None


UserEvent = ImpressionEvent | ConversionEvent


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


QueuedEvent = UserEvent | PendingEvent


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
