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
from typing import Any

from .. import defaults
from .._version import __version__
from .dispatcher import EventRequest
from .models import ConversionEvent, ImpressionEvent, UserEvent, VisitorAttribute

__all__ = ["ACTIVATE_EVENT_KEY", "build_payload", "build_request", "encode_payload", "split_batches"]

ACTIVATE_EVENT_KEY = "campaign_activated"
_NONE_DROPPED_KEYS = frozenset({"revenue", "value", "tags", "decisions"})


def build_payload(events: Sequence[UserEvent]) -> dict[str, Any]:
    """Build the events-API payload for ``events`` (non-empty; one visitor each, in order).

    Events whose ``uuid`` is None get a fresh ``str(uuid4())`` here, off the caller's hot path.
    """
    if not events:
        raise ValueError("build_payload() needs at least one event")
    context = events[0].context
    return {
        "account_id": context.account_id,
        "project_id": context.project_id,
        "revision": context.revision,
        "client_name": defaults.CLIENT_NAME,
        "client_version": __version__,
        "anonymize_ip": context.anonymize_ip,
        "enrich_decisions": True,
        "visitors": [_visitor(event) for event in events],
    }


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Encode a payload as the request body: compact ASCII JSON, with NaN and infinities written as Python's
    ``json`` (and so the official SDK) writes them."""
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


def split_batches(events: Sequence[UserEvent]) -> list[list[UserEvent]]:
    """Split ``events`` into runs that may share one request.

    The official rule: a new batch starts whenever an event's ``project_id`` or ``revision`` differs from the
    previous event's. Account and endpoint are not compared (they change only with the project).
    """
    batches: list[list[UserEvent]] = []
    current: list[UserEvent] = []
    previous: tuple[str, str] | None = None
    for event in events:
        key = (event.context.project_id, event.context.revision)
        if current and key != previous:
            batches.append(current)
            current = []
        current.append(event)
        previous = key
    if current:
        batches.append(current)
    return batches


def build_request(events: list[UserEvent]) -> tuple[EventRequest | None, list[UserEvent]]:
    """Build the request for a batch, setting aside events that cannot be encoded.

    Returns the request (None when no event could be encoded) and the events set aside. The endpoint is
    the first event's ``context.endpoint``.
    """
    try:
        return _request_for(events), []
    except (TypeError, ValueError, RecursionError):
        pass
    good: list[UserEvent] = []
    bad: list[UserEvent] = []
    for event in events:
        try:
            encode_payload(build_payload([event]))
        except (TypeError, ValueError, RecursionError):
            bad.append(event)
        else:
            good.append(event)
    return (_request_for(good) if good else None), bad


def _request_for(events: list[UserEvent]) -> EventRequest:
    payload = build_payload(events)
    return EventRequest(
        url=events[0].context.endpoint, payload=payload, body=encode_payload(payload), event_count=len(events)
    )


def _visitor(event: UserEvent) -> dict[str, Any]:
    event_uuid = event.uuid if event.uuid is not None else str(uuid.uuid4())
    snapshot: dict[str, Any]
    if isinstance(event, ImpressionEvent):
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
        return str(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, (int, float)):
        return json.dumps(key)
    return key  # type: ignore[no-any-return]
