"""The front door: exactly these names are public, and each is importable from the package."""

from __future__ import annotations

import re
from pathlib import Path

import optimizely_async

EXPECTED = {
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
}


def test_all_is_pinned_and_sorted() -> None:
    assert set(optimizely_async.__all__) == EXPECTED
    assert list(optimizely_async.__all__) == sorted(optimizely_async.__all__)


def test_every_public_name_exists() -> None:
    for name in optimizely_async.__all__:
        assert getattr(optimizely_async, name) is not None


def test_errors_share_one_base() -> None:
    for name in ("ClientStateError", "ConfigurationError", "InvalidDatafileError"):
        assert issubclass(getattr(optimizely_async, name), optimizely_async.OptimizelyError)


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert optimizely_async.__version__ == version("optimizely-async")


def test_every_public_name_is_in_the_api_reference() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: optimizely_async\.(\w+)$", page, flags=re.MULTILINE))
    assert set(optimizely_async.__all__) <= documented, set(optimizely_async.__all__) - documented
