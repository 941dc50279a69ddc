"""optimizely-async: an async-first SDK for Optimizely Feature Experimentation.

Same decisions and event payloads as the official ``optimizely-sdk``, on asyncio and trio, with a background
batching queue that loses nothing silently.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ClientStateError, ConfigurationError, InvalidDatafileError, OptimizelyError

if TYPE_CHECKING:
    from .client import AsyncOptimizely, HeldTrack
    from .config.optimizely_config import OptimizelyConfig
    from .config.sources import PollingStats
    from .decide import DecideOption, OptimizelyDecision
    from .decision.user_profile import UserProfileService
    from .events.dispatcher import Dispatcher, DispatchResult, EventRequest, HttpDispatcher
    from .events.queue import DeliveryReport, QueueStats
    from .notifications import NotificationCenter, NotificationType
    from .stats import ClientStats, ListenerStats
    from .sync import SyncOptimizely
    from .user_context import OptimizelyDecisionContext, OptimizelyForcedDecision, OptimizelyUserContext

#: Where each public name lives. They are imported on first use, so ``import optimizely_async`` (or importing
#: one of its submodules) does not load the whole SDK and its dependencies (httpx, pydantic) up front.
_LAZY = {
    "AsyncOptimizely": ".client",
    "HeldTrack": ".client",
    "OptimizelyConfig": ".config.optimizely_config",
    "PollingStats": ".config.sources",
    "DecideOption": ".decide",
    "OptimizelyDecision": ".decide",
    "UserProfileService": ".decision.user_profile",
    "Dispatcher": ".events.dispatcher",
    "DispatchResult": ".events.dispatcher",
    "EventRequest": ".events.dispatcher",
    "HttpDispatcher": ".events.dispatcher",
    "DeliveryReport": ".events.queue",
    "QueueStats": ".events.queue",
    "NotificationCenter": ".notifications",
    "NotificationType": ".notifications",
    "ClientStats": ".stats",
    "ListenerStats": ".stats",
    "SyncOptimizely": ".sync",
    "OptimizelyDecisionContext": ".user_context",
    "OptimizelyForcedDecision": ".user_context",
    "OptimizelyUserContext": ".user_context",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "SyncOptimizely",
    "UserProfileService",
    "__version__",
]
