"""The synchronous user context and notification center of ``SyncOptimizely``.

``SyncUserContext`` is an ``OptimizelyUserContext`` whose ``decide``,
``decide_for_keys``, ``decide_all`` and ``track_event`` return their results instead of coroutines: each runs
the async context's own method to completion in the calling thread (see ``.sync_inline``), so attributes,
forced decisions, reasons and notifications behave exactly as there. Decisions carry a ``SyncUserContext`` as
their ``user_context``, so ``decision.user_context.decide(...)`` stays synchronous too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._logging import sdk_logger
from .decide import DecideOption, OptimizelyDecision
from .notifications import Listener, NotificationCenter, NotificationType
from .user_context import OptimizelyUserContext

if TYPE_CHECKING:
    from .client import AsyncOptimizely
    from .sync import SyncOptimizely

__all__ = ["SyncNotificationCenter", "SyncUserContext"]

_log = sdk_logger()


class SyncUserContext(OptimizelyUserContext):
    """A user (id and attributes) to decide for with a ``SyncOptimizely``; create
    it with ``client.create_user_context(user_id, attributes)``.

    The same methods as the official ``OptimizelyUserContext`` (attributes, forced decisions, ``decide``,
    ``decide_for_keys``, ``decide_all``, ``track_event``), all synchronous, none raising. One context may be
    used from several threads: each decide call works on a snapshot of the attributes and forced decisions.
    """

    def __init__(
        self,
        owner: SyncOptimizely,
        client: AsyncOptimizely,
        user_id: str,
        user_attributes: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(client, user_id, user_attributes)
        self._owner = owner

    def _bind(self) -> None:
        """Decide with the owner's current async client (a forked child replaces it; see ``.sync_fork``)."""
        client = self._owner._live()
        if self.client is not client:
            self.client = client

    def _clone(self) -> SyncUserContext:
        clone = SyncUserContext(self._owner, self.client, self.user_id, self._attributes)  # type: ignore[arg-type]
        if self._forced:
            clone._forced = dict(self._forced)
        clone._qualified_segments = self._qualified_segments  # replaced, never changed in place: shared
        return clone

    def decide(  # type: ignore[override]
        self, key: str, options: Sequence[DecideOption | str] | None = None
    ) -> OptimizelyDecision:
        """Decide one flag; sends its impression unless DISABLE_DECISION_EVENT. Never raises."""
        self._bind()
        decision = self._owner._decide(OptimizelyUserContext.decide(self, key, options), None, "decide")
        if decision is None:
            return OptimizelyDecision(flag_key=key if isinstance(key, str) else None, user_context=self._clone())
        return decision

    def decide_for_keys(  # type: ignore[override]
        self, keys: Iterable[str], options: Sequence[DecideOption | str] | None = None
    ) -> dict[str, OptimizelyDecision]:
        """Decide several flags with one user-profile lookup and one save."""
        self._bind()
        return self._owner._decide(OptimizelyUserContext.decide_for_keys(self, keys, options), {}, "decide_for_keys")

    def decide_all(  # type: ignore[override]
        self, options: Sequence[DecideOption | str] | None = None
    ) -> dict[str, OptimizelyDecision]:
        """Decide every flag of the datafile, in datafile order."""
        self._bind()
        return self._owner._decide(OptimizelyUserContext.decide_all(self, options), {}, "decide_all")

    def track_event(self, event_key: str, event_tags: dict[str, Any] | None = None) -> None:  # type: ignore[override]
        """``client.track`` for this user with the current attributes."""
        self._owner.track(event_key, self.user_id, self.get_user_attributes(), event_tags)

    def fetch_qualified_segments(  # type: ignore[override]
        self, callback: Callable[[bool], object] | None = None, options: Iterable[Any] | None = None
    ) -> bool:
        """Fetch the user's qualified segments from ODP; True when they came back (the context's segments are
        then replaced: by the result, or by None when the fetch failed). Never raises.

        The request runs on the client's loop thread; the calling thread waits for it (at most
        ``odp_segment_request_timeout`` and a margin). ``options``: ``OptimizelySegmentOption.IGNORE_CACHE`` /
        ``RESET_CACHE``. ``callback``, the official SDK's way to fetch on a thread of its own, is called with
        the result before this returns (here the call blocks either way).
        """
        self._bind()
        owner = self._owner
        fetched = owner._on_loop(
            OptimizelyUserContext.fetch_qualified_segments(self, options),
            False,
            "fetch_qualified_segments",
            owner._segments_wait,
        )
        if callback is not None:
            callback(fetched)
        return fetched

    def __repr__(self) -> str:
        return f"SyncUserContext(user_id={self.user_id!r}, attributes={self._attributes!r})"


class SyncNotificationCenter:
    """The notification center of a ``SyncOptimizely``: the official methods, for
    plain-function listeners.

    DECISION, TRACK and ACTIVATE listeners run in the thread that made the call, before it returns (as in the
    official SDK); LOG_EVENT and OPTIMIZELY_CONFIG_UPDATE listeners run on the client's loop thread. A coroutine
    function is refused (logged, ``-1``): nothing in a calling thread could await it.
    """

    def __init__(self, center: NotificationCenter) -> None:
        self._center = center

    def add_notification_listener(self, notification_type: NotificationType | str, callback: Listener) -> int:
        """Register ``callback``; its id, or -1 for an unknown type, a callback already registered for that
        type, or a coroutine function."""
        if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(type(callback).__call__):
            _log.error(
                "SyncOptimizely listeners must be plain functions; %s is a coroutine function. Not adding listener.",
                getattr(callback, "__qualname__", type(callback).__name__),
            )
            return -1
        return self._center.add_notification_listener(notification_type, callback)

    def remove_notification_listener(self, notification_id: int) -> bool:
        """Remove the listener with that id from whichever type holds it."""
        return self._center.remove_notification_listener(notification_id)

    def clear_notification_listeners(self, notification_type: NotificationType | str) -> None:
        """Remove every listener of one type."""
        self._center.clear_notification_listeners(notification_type)

    def clear_all_notification_listeners(self) -> None:
        """Remove every listener."""
        self._center.clear_all_notification_listeners()
