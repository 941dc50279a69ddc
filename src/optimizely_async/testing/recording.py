"""RecordingDispatcher: an ``event_dispatcher=`` that keeps what it is sent and reads the events back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events.dispatcher import DispatchResult, EventRequest

__all__ = ["RecordedEvent", "RecordingDispatcher", "Responder"]


@dataclass(frozen=True)
class RecordedEvent:
    """One event from a recorded request, with its visitor's details beside it."""

    #: ``"impression"`` (a decision was shown) or ``"conversion"`` (``track``).
    kind: str
    #: The conversion's event key; ``"campaign_activated"`` for an impression.
    key: str
    user_id: str
    #: The visitor's attributes as sent: attribute key -> value (``$opt_...`` ones included).
    attributes: dict[str, Any]
    #: Impressions: the decision's flag, rule, rule type (``feature-test``, ``rollout``, ``experiment``) and
    #: variation keys, and whether the flag was enabled. None for conversions.
    flag_key: str | None = None
    rule_key: str | None = None
    rule_type: str | None = None
    variation_key: str | None = None
    enabled: bool | None = None
    #: Conversions: the event tags as sent, and the ``revenue`` / ``value`` read from them.
    tags: dict[str, Any] = field(default_factory=dict)
    revenue: int | None = None
    value: float | None = None
    #: The event and the visitor exactly as they are in the payload.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    visitor: dict[str, Any] = field(default_factory=dict, repr=False)


def _records(request: EventRequest) -> list[RecordedEvent]:
    records = []
    for visitor in request.payload.get("visitors", []):
        attributes = {a.get("key"): a.get("value") for a in visitor.get("attributes", [])}
        for snapshot in visitor.get("snapshots", []):
            decisions = snapshot.get("decisions") or []
            for event in snapshot.get("events", []):
                base = {
                    "user_id": visitor.get("visitor_id"),
                    "attributes": attributes,
                    "raw": event,
                    "visitor": visitor,
                }
                if event.get("key") == "campaign_activated" and decisions:
                    meta = decisions[0].get("metadata", {})
                    records.append(
                        RecordedEvent(
                            kind="impression",
                            key="campaign_activated",
                            flag_key=meta.get("flag_key"),
                            rule_key=meta.get("rule_key"),
                            rule_type=meta.get("rule_type"),
                            variation_key=meta.get("variation_key"),
                            enabled=meta.get("enabled"),
                            **base,
                        )
                    )
                else:
                    records.append(
                        RecordedEvent(
                            kind="conversion",
                            key=event.get("key", ""),
                            tags=dict(event.get("tags") or {}),
                            revenue=event.get("revenue"),
                            value=event.get("value"),
                            **base,
                        )
                    )
    return records


Responder = Callable[[EventRequest], DispatchResult]


class RecordingDispatcher:
    """An ``event_dispatcher=`` that keeps every request instead of sending it.

    Every request is appended to ``requests`` and answered with ``respond(request)`` (by default:
    delivered, HTTP 204). Call ``await client.flush()`` before reading: events are batched in the
    background. ``events``, ``impressions`` and ``conversions`` read the requests back as
    ``RecordedEvent`` values, in the order they were sent.

    Args:
        respond: decides the outcome of each request, e.g.
            ``lambda request: DispatchResult(delivered=False, retryable=True, status=503, reason="http_503")``
            to see the client retry. Failed requests are recorded too, one entry per attempt.
    """

    def __init__(self, respond: Responder | None = None) -> None:
        #: Every request the client handed over, in order (retries included).
        self.requests: list[EventRequest] = []
        self._respond = respond

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        """Record the request and answer it (delivered, unless ``respond`` says otherwise)."""
        self.requests.append(request)
        if self._respond is not None:
            return self._respond(request)
        return DispatchResult(delivered=True, status=204)

    @property
    def events(self) -> list[RecordedEvent]:
        """Every event of every recorded request."""
        return [record for request in self.requests for record in _records(request)]

    @property
    def impressions(self) -> list[RecordedEvent]:
        """The impressions (``decide``, ``activate`` ...), in order."""
        return [record for record in self.events if record.kind == "impression"]

    @property
    def conversions(self) -> list[RecordedEvent]:
        """The conversions (``track``, ``track_event``), in order."""
        return [record for record in self.events if record.kind == "conversion"]

    @property
    def payloads(self) -> list[Mapping[str, Any]]:
        """The requests' payloads (the JSON sent to the events API, as dicts)."""
        return [request.payload for request in self.requests]

    def clear(self) -> None:
        """Forget what was recorded (between two tests that share a client)."""
        self.requests.clear()
