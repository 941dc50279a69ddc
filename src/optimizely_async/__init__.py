"""optimizely-async: an async-first SDK for Optimizely Feature Experimentation.

Same decisions and event payloads as the official ``optimizely-sdk``, on asyncio and trio, with a background
batching queue that loses nothing silently.
"""

from __future__ import annotations

from ._version import __version__
from .client import AsyncOptimizely, HeldTrack
from .config.optimizely_config import OptimizelyConfig
from .config.sources import PollingStats
from .decide import DecideOption, OptimizelyDecision
from .decision.user_profile import UserProfileService
from .errors import ClientStateError, ConfigurationError, InvalidDatafileError, OptimizelyError
from .events.dispatcher import Dispatcher, DispatchResult, EventRequest, HttpDispatcher
from .events.queue import DeliveryReport, QueueStats
from .notifications import NotificationCenter, NotificationType
from .stats import ClientStats, ListenerStats
from .user_context import OptimizelyDecisionContext, OptimizelyForcedDecision, OptimizelyUserContext

__all__ = [
    "AsyncOptimizely",
    "ClientStateError",
    "ClientStats",
    "ConfigurationError",
    "DecideOption",
    "DeliveryReport",
    "DispatchResult",
    "Dispatcher",
    "EventRequest",
    "HeldTrack",
    "HttpDispatcher",
    "InvalidDatafileError",
    "ListenerStats",
    "NotificationCenter",
    "NotificationType",
    "OptimizelyConfig",
    "OptimizelyDecision",
    "OptimizelyDecisionContext",
    "OptimizelyError",
    "OptimizelyForcedDecision",
    "OptimizelyUserContext",
    "PollingStats",
    "QueueStats",
    "UserProfileService",
    "__version__",
]
