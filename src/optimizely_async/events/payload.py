"""The events-API wire payload, byte for byte in the official SDK's shape.

One request carries one batch; every user event becomes its own visitor (visitors are never merged, even
for the same user). The batch-level fields come from the first event's :class:`EventContext`. Keys appear
in the official order::

    {account_id, project_id, revision, client_name, client_version, anonymize_ip, enrich_decisions,
     visitors: [{snapshots: [{events: [...], decisions?: [...]}], attributes: [...], visitor_id}]}

The official SDK round-trips its payload through ``json`` and, at every nesting level, drops the keys
``revenue``, ``value``, ``tags`` and ``decisions`` whose value is None. The builder applies the same rule
(inside user tags too) and the same JSON normalisation of tags (tuples become lists, int/float/bool/None
keys become strings), so the dict handed to LOG_EVENT listeners equals the official one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import defaults
from .._version import __version__
from .dispatcher import EventRequest

if TYPE_CHECKING:
    from .models import ConversionEvent, EventContext, UserEvent, VisitorAttribute

__all__ = [
    "ACTIVATE_EVENT_KEY",
    "RequestBuilder",
    "build_payload",
    "build_request",
    "encode_payload",
    "split_request",
]

ACTIVATE_EVENT_KEY = "campaign_activated"
_NONE_DROPPED_KEYS = frozenset({"revenue", "value", "tags", "decisions"})


def build_payload(events: Sequence[UserEvent]) -> dict[str, Any]:
    """Build the events-API payload for ``events`` (non-empty; one visitor each, in order).

    Events whose ``uuid`` is None get a fresh ``str(uuid4())`` here, off the caller's hot path.
    """
    if not events:
        raise ValueError("build_payload() needs at least one event")
    payload = _batch_fields(events[0].context)
    payload["visitors"] = [_visitor(event) for event in events]
    return payload


def _batch_fields(context: EventContext) -> dict[str, Any]:
    return {
        "account_id": context.account_id,
        "project_id": context.project_id,
        "revision": context.revision,
        "client_name": defaults.CLIENT_NAME,
        "client_version": __version__,
        "anonymize_ip": context.anonymize_ip,
        "enrich_decisions": True,
    }


def encode_payload(payload: Mapping[str, Any] | Sequence[Any]) -> bytes:
    """Encode a payload as the request body: compact ASCII JSON, with NaN and infinities written as Python's
    ``json`` (and so the official SDK) writes them."""
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


def build_request(events: Sequence[UserEvent]) -> tuple[EventRequest | None, list[UserEvent]]:
    """Build the request for a batch, setting aside events that cannot be encoded.

    Returns the request (None when no event could be encoded) and the events set aside. The endpoint is
    the first event's ``context.endpoint``.
    """
    builder = RequestBuilder()
    builder.add(events)
    return builder.finish(), builder.bad


class RequestBuilder:
    """Builds one request a few events at a time, so a caller can pause between steps.

    Each :meth:`add` turns its events into visitors and encodes them (one ``json.dumps`` call for the step);
    :meth:`finish` joins the pieces under the batch-level fields. The body is byte for byte what
    :func:`encode_payload` gives for the whole payload. Events whose visitor cannot be encoded are set aside
    in :attr:`bad`; the rest are in :attr:`events`.
    """

    __slots__ = ("_bodies", "_visitors", "bad", "events")

    def __init__(self) -> None:
        self.events: list[UserEvent] = []
        self.bad: list[UserEvent] = []
        self._visitors: list[dict[str, Any]] = []
        self._bodies: list[bytes] = []

    def add(self, events: Sequence[UserEvent]) -> None:
        if not events:
            return
        visitors: list[dict[str, Any]] = []
        good: list[UserEvent] = []
        for event in events:
            try:
                visitors.append(_visitor(event))
            except Exception:  # whatever one event holds, it costs only that event
                self.bad.append(event)
            else:
                good.append(event)
        if not good:
            return
        try:
            self._bodies.append(encode_payload(visitors)[1:-1])  # the list's items, without its brackets
        except Exception:
            for event, visitor in zip(good, visitors, strict=True):
                try:
                    body = encode_payload(visitor)
                except Exception:
                    self.bad.append(event)
                else:
                    self.events.append(event)
                    self._visitors.append(visitor)
                    self._bodies.append(body)
            return
        self.events.extend(good)
        self._visitors.extend(visitors)

    def finish(self) -> EventRequest | None:
        """The request for every encodable event added, or None when there is none."""
        if not self.events:
            return None
        payload = _batch_fields(self.events[0].context)
        payload["visitors"] = []
        head = encode_payload(payload)  # ends with the empty visitor list: b'[]}'
        payload["visitors"] = self._visitors
        body = head[:-3] + b"[" + b",".join(self._bodies) + b"]}"
        return EventRequest(
            url=self.events[0].context.endpoint, payload=payload, body=body, event_count=len(self.events)
        )


def split_request(request: EventRequest, at: int) -> tuple[EventRequest, EventRequest]:
    """The request's visitors ``[:at]`` and ``[at:]`` as two requests with the same batch fields (each body
    re-encoded; the visitors, their uuids included, are the same objects)."""
    visitors = request.payload["visitors"]
    halves = []
    for part in (visitors[:at], visitors[at:]):
        payload = {**request.payload, "visitors": part}
        halves.append(
            EventRequest(
                url=request.url,
                payload=payload,
                body=encode_payload(payload),
                event_count=len(part),
                headers=request.headers,
            )
        )
    return halves[0], halves[1]


def _visitor(event: UserEvent) -> dict[str, Any]:
    event_uuid = event.uuid if event.uuid is not None else str(uuid.uuid4())
    snapshot: dict[str, Any]
    if event.kind == "impression":
        campaign_id = event.campaign_id or event.experiment_id or ""
        variation_id = event.variation_id
        if not (variation_id and variation_id.isascii() and variation_id.isdigit()):
            variation_id = None
        meta = event.metadata
        metadata: dict[str, Any] = {
            "flag_key": meta.flag_key,
            "rule_key": meta.rule_key,
            "rule_type": meta.rule_type,
            "variation_key": meta.variation_key,
            "enabled": meta.enabled,
        }
        if meta.cmab_uuid:
            metadata["cmab_uuid"] = meta.cmab_uuid
        snapshot = {
            "events": [
                {
                    "entity_id": campaign_id,
                    "uuid": event_uuid,
                    "key": ACTIVATE_EVENT_KEY,
                    "timestamp": event.timestamp,
                }
            ],
            "decisions": [
                {
                    "campaign_id": campaign_id,
                    "experiment_id": event.experiment_id,
                    "variation_id": variation_id,
                    "metadata": metadata,
                }
            ],
        }
    else:
        snapshot = {"events": [_conversion(event, event_uuid)]}
    return {
        "snapshots": [snapshot],
        "attributes": [_attribute(attribute) for attribute in event.attributes],
        "visitor_id": event.user_id,
    }


def _conversion(event: ConversionEvent, event_uuid: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "entity_id": event.event_id,
        "uuid": event_uuid,
        "key": event.event_key,
        "timestamp": event.timestamp,
    }
    if event.revenue is not None:
        body["revenue"] = event.revenue
    if event.value is not None:
        body["value"] = event.value
    if event.tags is not None:
        body["tags"] = _json_clean_dict(event.tags)
    return body


def _attribute(attribute: VisitorAttribute) -> dict[str, Any]:
    body: dict[str, Any] = {"entity_id": attribute.entity_id, "key": attribute.key, "type": attribute.type}
    value = attribute.value
    if value is not None:
        kind = type(value)
        body["value"] = value if kind is str or kind is bool or kind is int or kind is float else _json_clean(value)
    return body


def _json_clean(value: Any) -> Any:
    """What ``json.loads(json.dumps(value))`` with the official cleaning hook would give back."""
    if isinstance(value, dict):
        return _json_clean_dict(value)
    if isinstance(value, (list, tuple)):
        return [_json_clean(item) for item in value]
    return value


def _json_clean_dict(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in mapping.items():
        name = key if type(key) is str else _json_key(key)
        if value is None and name in _NONE_DROPPED_KEYS:
            continue
        cleaned[name] = _json_clean(value)
    return cleaned


def _json_key(key: Any) -> str:
    # json.dumps turns these key types into strings; anything else is rejected by check_json_encodable and
    # would fail encode_payload, so it is passed through for that error to surface.
    if isinstance(key, str):
        return str.__str__(key)  # the plain value: a subclass's own __str__ is never called
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, (int, float)):
        return json.dumps(key)
    return key  # type: ignore[no-any-return]
