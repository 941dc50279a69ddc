"""The ODP part of a user context: its qualified segments, and the attributes view the engine reads them from.

The ``qualified`` audience condition is true when the user is qualified for the condition's segment. The
engine is pure and sees only attributes, so a context with segments decides with a
:class:`SegmentedAttributes` (a copy of its attributes that also carries the segments); a context without any
(None: never fetched, or the last fetch failed) decides with its plain attributes and qualifies for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._logging import sdk_logger

if TYPE_CHECKING:
    from ..client import AsyncOptimizely

__all__ = ["QualifiedSegments", "SegmentedAttributes", "engine_attributes"]

_log = sdk_logger()  # the client's logger= when it has one (._logroute), else the library logger


class SegmentedAttributes(dict[str, Any]):
    """A user's attributes, with the segments the ``qualified`` condition reads (``qualified_segments``)."""

    __slots__ = ("qualified_segments",)

    def __init__(self, attributes: Mapping[str, Any], segments: list[str]) -> None:
        super().__init__(attributes)
        self.qualified_segments = segments


class QualifiedSegments:
    """Mixed into :class:`~optimizely_async.user_context.OptimizelyUserContext`: the official segment methods."""

    client: AsyncOptimizely | None
    user_id: str
    _qualified_segments: list[str] | None = None

    def get_qualified_segments(self) -> list[str] | None:
        """A copy of the segments, or None before any fetch (and after a failed one)."""
        segments = self._qualified_segments
        return list(segments) if segments is not None else None

    def set_qualified_segments(self, segments: Iterable[str] | None) -> None:
        """Replace the segments with a copy of ``segments`` (None clears them)."""
        if segments is None:
            self._qualified_segments = None
            return
        try:
            self._qualified_segments = list(segments)
        except TypeError:
            _log.error("Qualified segments must be a list of strings; set_qualified_segments ignored.")

    def is_qualified_for(self, segment: str) -> bool:
        """Whether ``segment`` is among the segments (False when there are none)."""
        segments = self._qualified_segments
        try:
            return segments is not None and segment in segments
        except Exception:
            return False

    async def fetch_qualified_segments(self, options: Iterable[Any] | None = None) -> bool:
        """Fetch the user's qualified segments from ODP; True when they came back.

        The context's segments are then replaced: by the result, or by None when the fetch failed (as in the
        official SDK). ``options``: ``OptimizelySegmentOption.IGNORE_CACHE`` / ``RESET_CACHE`` (or their
        strings). Never raises.
        """
        client = self.client
        try:
            if client is None:
                _log.error('Provided "user_context" is in an invalid format.')
                return False
            segments = await client._odp.fetch_qualified_segments(client.config, self.user_id, options or ())
        except Exception:
            _log.exception("Unexpected error in fetch_qualified_segments.")
            segments = None
        self._qualified_segments = segments
        return segments is not None


def engine_attributes(user: QualifiedSegments, attributes: dict[str, Any]) -> dict[str, Any]:
    """What the engine decides with: the attributes, carrying the user's segments when there are any."""
    segments = user._qualified_segments
    return attributes if segments is None else SegmentedAttributes(attributes, segments)
