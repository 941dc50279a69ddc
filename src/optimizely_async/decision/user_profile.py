"""User profile service (sticky bucketing): the protocol and the per-decision tracker.

A service's ``lookup`` and ``save`` may be plain or ``async`` methods. The stored shape is the official one::

    {"user_id": "<uid>", "experiment_bucket_map": {"<experiment_id>": {"variation_id": "<variation_id>"}}}

The engine reads and records through a :class:`UserProfileTracker` synchronously; the async shell loads the
profile before a decision and saves it after, once per call (one load and one save for a whole
``decide_all``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable

from .._logging import sdk_logger

__all__ = ["UserProfileService", "UserProfileTracker", "load_profile", "save_profile"]

_log = sdk_logger()


@runtime_checkable
class UserProfileService(Protocol):
    """Stores the variations a user was bucketed into. Methods may be sync or ``async``."""

    def lookup(self, user_id: str) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None: ...

    def save(self, user_profile: dict[str, Any]) -> Awaitable[None] | None: ...


class UserProfileTracker:
    """The profile of one user during one decision call."""

    __slots__ = ("experiment_bucket_map", "updated", "user_id")

    def __init__(self, user_id: Any, experiment_bucket_map: dict[str, Any] | None = None) -> None:
        self.user_id = user_id
        self.experiment_bucket_map: dict[str, Any] = experiment_bucket_map if experiment_bucket_map else {}
        self.updated = False

    def stored_variation_id(self, experiment_id: str) -> str | None:
        entry = self.experiment_bucket_map.get(experiment_id)
        if not isinstance(entry, dict):
            return None
        value = entry.get("variation_id")
        return value if isinstance(value, str) else None

    def record(self, experiment_id: str, variation_id: str) -> None:
        self.experiment_bucket_map[experiment_id] = {"variation_id": variation_id}
        self.updated = True

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "experiment_bucket_map": self.experiment_bucket_map}


async def load_profile(service: UserProfileService | None, user_id: str) -> UserProfileTracker:
    """Look the user up (awaiting an async service); any failure leaves an empty profile."""
    tracker = UserProfileTracker(user_id)
    if service is None:
        return tracker
    try:
        result = service.lookup(user_id)
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        _log.exception("Unable to retrieve a user profile as lookup failed.")  # no user id above DEBUG
        return tracker
    if result is None:
        _log.debug("Unable to get a user profile from the UserProfileService.")
    elif isinstance(result, dict) and "user_id" in result and "experiment_bucket_map" in result:
        bucket_map = result["experiment_bucket_map"]
        # The stored user_id is kept as it is (the official SDK saves it back unchanged, whatever its type).
        tracker = UserProfileTracker(result["user_id"], bucket_map if isinstance(bucket_map, dict) else None)
        _log.debug("User profile loaded successfully.")
    else:
        missing = [k for k in ("user_id", "experiment_bucket_map") if not isinstance(result, dict) or k not in result]
        _log.debug("User profile is missing keys: %s", ", ".join(missing))
    return tracker


async def save_profile(service: UserProfileService | None, tracker: UserProfileTracker) -> None:
    """Save the profile if the decision recorded a new bucketing; failures are logged, never raised."""
    if service is None or not tracker.updated:
        return
    try:
        result = service.save(tracker.as_dict())
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        _log.warning("Failed to save a user profile: %s.", type(exc).__name__)  # its text may hold user data
        _log.debug('Failed to save user profile of user "%s" for exception:%s".', tracker.user_id, exc)
        return
    _log.debug('Saved user profile of user "%s".', tracker.user_id)
