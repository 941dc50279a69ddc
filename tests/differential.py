"""Harness for the differential tests: the official SDK and ours, side by side, on the same calls.

Every public call goes to both clients with the same arguments; the return values and the DECISION
notifications each call emits are compared strictly (same types, same values, NaN equal to NaN). The
official SDK is never expected to raise on generated input (``tests/datagen.py`` avoids its known crashes);
if it does, that is reported as a generator bug, not hidden.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Callable
from typing import Any

import httpx
from optimizely import optimizely as official_sdk
from optimizely.event.event_processor import ForwardingEventProcessor
from optimizely.helpers import enums as official_enums
from optimizely.helpers.sdk_settings import OptimizelySdkSettings

Notification = tuple[Any, Any, Any, Any]

#: Stops the mismatch list from growing without bound when one divergence cascades.
MAX_MISMATCHES = 25


def same(a: Any, b: Any) -> bool:
    """Strict structural equality: same types all the way down, NaN equal to NaN, dict order ignored."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def short(value: Any, limit: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class RecordingDispatcher:
    """Official-SDK event dispatcher that records instead of sending."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def dispatch_event(self, event: Any) -> None:
        self.events.append(event)


def make_official(
    datafile: dict[str, Any],
    user_profile_service: Any = None,
    logger: Any = None,
    default_decide_options: list[str] | None = None,
) -> tuple[official_sdk.Optimizely, list[Notification], RecordingDispatcher]:
    """The official client on ``json.dumps(datafile)``, synchronous events, no ODP, DECISIONs recorded."""
    dispatcher = RecordingDispatcher()
    client = official_sdk.Optimizely(
        datafile=json.dumps(datafile),
        event_dispatcher=dispatcher,
        event_processor=ForwardingEventProcessor(dispatcher),
        user_profile_service=user_profile_service,
        logger=logger,
        settings=OptimizelySdkSettings(odp_disabled=True),
        default_decide_options=default_decide_options,
    )
    if client.config_manager.get_config() is None:
        client.close()
        raise AssertionError("the official SDK rejected the generated datafile (schema or ProjectConfig)")
    notes: list[Notification] = []

    def on_decision(kind: Any, user_id: Any, attributes: Any, info: Any) -> None:
        notes.append((kind, user_id, copy.deepcopy(attributes), copy.deepcopy(info)))

    client.notification_center.add_notification_listener(official_enums.NotificationTypes.DECISION, on_decision)
    return client, notes, dispatcher


def make_ours(
    datafile: dict[str, Any], user_profile_service: Any = None, **client_options: Any
) -> tuple[Any, list[Notification], list[httpx.Request]]:
    """Our client on the datafile dict; its events go to an in-memory transport, never to the network.

    ``client_options`` go to ``AsyncOptimizely`` as they are (e.g. ``event_dispatcher=``, ``batch_size=``).
    """
    from optimizely_async import AsyncOptimizely, NotificationType

    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(204)

    if "http_client" not in inspect.signature(AsyncOptimizely).parameters:
        raise AssertionError(
            "AsyncOptimizely must accept http_client= (DESIGN.md section 3) so tests never dispatch to logx"
        )
    http_client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = AsyncOptimizely(
        datafile=datafile, user_profile_service=user_profile_service, http_client=http_client, **client_options
    )
    notes: list[Notification] = []

    def on_decision(kind: Any, user_id: Any, attributes: Any, info: Any) -> None:
        notes.append((kind, user_id, copy.deepcopy(attributes), copy.deepcopy(info)))

    client.notification_center.add_notification_listener(NotificationType.DECISION, on_decision)
    return client, notes, requests


class Pair:
    """Sends each call to both clients and records every difference (result, notifications, extra checks)."""

    def __init__(
        self,
        official: Any,
        ours: Any,
        official_notes: list[Notification],
        our_notes: list[Notification],
        context: str,
    ) -> None:
        self.official = official
        self.ours = ours
        self.official_notes = official_notes
        self.our_notes = our_notes
        self.context = context
        self.mismatches: list[str] = []
        self.calls = 0
        self.notifications = 0
        self.after_call: list[Callable[[str], None]] = []

    def mismatch(self, text: str) -> None:
        if len(self.mismatches) < MAX_MISMATCHES:
            self.mismatches.append(f"[{self.context}] {text}")
        elif len(self.mismatches) == MAX_MISMATCHES:
            self.mismatches.append("… more mismatches not shown")

    async def call(self, method: str, *args: Any) -> Any:
        label = f"{method}{short(args, 300)}"
        try:
            expected = getattr(self.official, method)(*args)
        except Exception as exc:
            raise AssertionError(
                f"[{self.context}] the official SDK raised {exc!r} on {label}: the generator must avoid this "
                "input (add it to datagen.OFFICIAL_CRASHES and hazard_cases)"
            ) from exc
        self.calls += 1
        try:
            result = getattr(self.ours, method)(*args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            self.mismatch(f"{label}: ours raised {exc!r}; official returned {short(expected)}")
            self.official_notes.clear()
            self.our_notes.clear()
            return expected
        if not same(expected, result):
            self.mismatch(f"{label}: official {short(expected)} != ours {short(result)}")
        self._compare_notes(label)
        for check in self.after_call:
            check(label)
        return expected

    def _compare_notes(self, label: str) -> None:
        expected, got = list(self.official_notes), list(self.our_notes)
        self.official_notes.clear()
        self.our_notes.clear()
        self.notifications += len(expected)
        if len(expected) != len(got):
            self.mismatch(
                f"{label}: official sent {len(expected)} DECISION notifications, ours {len(got)}: "
                f"official {short(expected)} / ours {short(got)}"
            )
            return
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            if not same(a, b):
                self.mismatch(f"{label}: DECISION #{i}: official {short(a, 600)} != ours {short(b, 600)}")

    def raise_if_any(self) -> None:
        if self.mismatches:
            raise AssertionError(
                f"{len(self.mismatches)} difference(s) from the official SDK:\n" + "\n".join(self.mismatches)
            )
