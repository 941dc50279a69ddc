"""Pydantic models of the user events the SDK queues (imported when the first event context is built).

A user event is built by the client at ``track()`` / impression time with everything already resolved
against the project config (attribute ids, campaign ids, decision metadata), so the queue and the payload
encoder never need the config. ``uuid`` may be left ``None``: it is then generated when the event is encoded,
which keeps ``uuid4()`` off the caller's hot path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .pending import PendingEvent, materialize

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


QueuedEvent = UserEvent | PendingEvent
