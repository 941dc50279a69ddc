"""Optimizely Data Platform: audience segments for the ``qualified`` condition, and ODP events.

See :mod:`.manager` for the client's part, :mod:`.user` for the user context's.
"""

from __future__ import annotations

from .config import OdpSettings, odp_settings, segments_to_check
from .events import OdpEvent, OdpEventQueue, OdpEventStats
from .manager import OdpManager, build_odp_manager, odp_identifiers
from .segments import OptimizelySegmentOption, SegmentsFetcher
from .user import QualifiedSegments, SegmentedAttributes, engine_attributes

__all__ = [
    "OdpEvent",
    "OdpEventQueue",
    "OdpEventStats",
    "OdpManager",
    "OdpSettings",
    "OptimizelySegmentOption",
    "QualifiedSegments",
    "SegmentedAttributes",
    "SegmentsFetcher",
    "build_odp_manager",
    "engine_attributes",
    "odp_identifiers",
    "odp_settings",
    "segments_to_check",
]
