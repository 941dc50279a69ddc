"""What the lifecycle and framework tests share: a minimal datafile, a local dispatcher, the sink's visitors."""

from __future__ import annotations

from typing import Any

from optimizely_async import DispatchResult, EventRequest


def datafile(revision: str = "3") -> dict[str, Any]:
    """One event (``buy``) and one flag (``flag``, no rules: off for everyone)."""
    return {
        "version": "4",
        "accountId": "1",
        "projectId": "2",
        "revision": revision,
        "experiments": [],
        "events": [{"id": "9", "key": "buy", "experimentIds": []}],
        "audiences": [],
        "attributes": [],
        "groups": [],
        "featureFlags": [{"id": "F", "key": "flag", "experimentIds": [], "rolloutId": "", "variables": []}],
        "rollouts": [],
    }


class Recorder:
    """A dispatcher that keeps the visitor ids it is given and delivers everything: nothing leaves the process."""

    def __init__(self) -> None:
        self.visitors: list[str] = []

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.visitors.extend(v["visitor_id"] for v in request.payload["visitors"])
        return DispatchResult(delivered=True, status=200)


def visitors(sink: Any) -> list[str]:
    """The visitor ids a ``SinkServer`` received, sorted."""
    return sorted(v["visitor_id"] for r in sink.received for v in r.payload["visitors"])
