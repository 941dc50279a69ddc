"""What the lifecycle and framework tests share: a minimal datafile, a local dispatcher, the sink's visitors."""

from __future__ import annotations

from typing import Any

from _support.datafiles import empty_datafile
from optimizely_async.testing import RecordingDispatcher


def datafile(revision: str = "3") -> dict[str, Any]:
    """One event (``buy``) and one flag (``flag``, no rules: off for everyone)."""
    return empty_datafile(
        revision,
        events=[{"id": "9", "key": "buy", "experimentIds": []}],
        featureFlags=[{"id": "F", "key": "flag", "experimentIds": [], "rolloutId": "", "variables": []}],
    )


class Recorder(RecordingDispatcher):
    """The test kit's dispatcher (keeps every request, delivers it: nothing leaves the process), with the
    visitor ids it was given."""

    @property
    def visitors(self) -> list[str]:
        return [v["visitor_id"] for r in self.requests for v in r.payload["visitors"]]


def visitors(sink: Any) -> list[str]:
    """The visitor ids a ``SinkServer`` received, sorted."""
    return sorted(v["visitor_id"] for r in sink.received for v in r.payload["visitors"])
