"""The client's ODP: settings from the datafile, segment fetches, ``send_odp_event`` and its queue.

Nothing here runs without the datafile's ODP integration: no request, no event, and with ``odp_disabled`` not
even the queue's task. The integration is read from each new datafile revision on first use; when its key,
host or segment list changed, the segments cache is reset (the official behaviour), and events already
queued still go to the destination they were sent for.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from .. import defaults
from .._lazy_http import LazyHttpClient
from .._logging import sdk_logger
from .._validation import number
from .._version import __version__
from ..config.project_config import ProjectConfig
from ..errors import ConfigurationError
from .config import OdpSettings, odp_settings
from .events import OdpEvent, OdpEventQueue, OdpEventStats
from .segments import SegmentsFetcher

__all__ = ["OdpManager", "build_odp_manager"]

_log = sdk_logger()

NOT_ENABLED: Final = "ODP is not enabled."
NOT_INTEGRATED: Final = "ODP is not integrated."
_USER_ID_KEY: Final = "fs_user_id"
_DATA_TYPES: Final = (str, int, float, bool, type(None))


def odp_identifiers(identifiers: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of ``identifiers`` with the official renaming: the first key that reads ``fs_user_id`` or
    ``fs-user-id`` in any case becomes ``fs_user_id`` (moved last, as in the official SDK), unless an exact
    ``fs_user_id`` comes first. The caller's dict is not changed (the official SDK changes it in place)."""
    out = dict(identifiers)
    for key in list(out):
        if key == _USER_ID_KEY:
            break
        if isinstance(key, str) and key.lower() in ("fs-user-id", _USER_ID_KEY):
            out[_USER_ID_KEY] = out.pop(key)
            break
    return out


class OdpManager:
    """Segments and events for one client."""

    def __init__(
        self,
        http: LazyHttpClient,
        *,
        disabled: bool,
        segments_cache_size: int,
        segments_cache_timeout: float,
        segment_request_timeout: float,
        event_flush_interval: float,
        event_request_timeout: float,
    ) -> None:
        self.disabled = disabled
        self.segments = SegmentsFetcher(
            http, cache_size=segments_cache_size, cache_timeout=segments_cache_timeout, timeout=segment_request_timeout
        )
        self.events = OdpEventQueue(http, flush_interval=event_flush_interval, request_timeout=event_request_timeout)
        self._last: OdpSettings | None = None
        if disabled:
            _log.info("ODP is disabled.")

    def settings(self, config: ProjectConfig) -> OdpSettings:
        """The ODP settings of ``config``; a change from the last ones seen resets the segments cache."""
        settings = odp_settings(config)
        last = self._last
        if settings is not last:
            if last is not None and last == settings:
                _log.debug("Odp config was not changed.")
            elif last is not None:
                self.segments.cache.reset()
            self._last = settings
        return settings

    async def fetch_qualified_segments(
        self, config: ProjectConfig | None, user_id: str, options: Iterable[Any]
    ) -> list[str] | None:
        """The user's qualified segments, or None (logged) when they cannot be had."""
        if self.disabled:
            _log.error(NOT_ENABLED)
            return None
        if config is None:
            _log.error('Optimizely SDK is not ready: no datafile loaded yet. Failing "fetch_qualified_segments".')
            return None
        return await self.segments.fetch(self.settings(config), user_id, options)

    def identify_user(self, config: ProjectConfig | None, user_id: str) -> None:
        """What ``create_user_context`` asks for. The official 5.7.0 queue sends an identify event only with two
        or more identifiers and it is given one, so none is ever sent; the same here, with its debug line.

        It runs in the caller's thread (SyncOptimizely's calling threads too), so it only reads: the settings
        of ``config`` without :meth:`settings`'s cache reset, which is the loop's to do on its next use."""
        if self.disabled:
            _log.debug("ODP identify event is not dispatched (ODP disabled).")
        elif config is not None and not odp_settings(config).integrated:
            _log.debug("ODP identify event is not dispatched (ODP not integrated).")
        else:
            _log.debug("ODP identify event is not dispatched (fewer than 2 valid identifiers).")

    def send_event(
        self,
        config: ProjectConfig | None,
        action: Any,
        identifiers: Any,
        type: Any,
        data: Any,
    ) -> None:
        """``send_odp_event`` with the official checks in their order; the event is queued or the call logged."""
        if action is None or action == "":
            _log.error("ODP action is not valid (cannot be empty).")
            return
        if not identifiers or not isinstance(identifiers, dict):
            _log.error("ODP events must have at least one key-value pair in identifiers.")
            return
        if type is None or type == "":
            type = "fullstack"
        if config is None:
            _log.error('Invalid config. Optimizely instance is not valid. Failing "send_odp_event".')
            return
        if self.disabled:
            _log.error(NOT_ENABLED)
            return
        settings = self.settings(config)
        if not settings.integrated:
            _log.error(NOT_INTEGRATED)
            return
        data = data or {}
        if not isinstance(data, Mapping) or not all(isinstance(value, _DATA_TYPES) for value in data.values()):
            _log.error("ODP data is not valid.")
            return
        common: dict[str, Any] = {
            "idempotence_id": str(uuid.uuid4()),
            "data_source_type": "sdk",
            "data_source": defaults.CLIENT_NAME,
            "data_source_version": __version__,
        }
        common.update(data)
        payload = {"type": type, "action": action, "identifiers": odp_identifiers(identifiers), "data": common}
        try:
            json.dumps(payload)
        except (TypeError, ValueError):  # refused alone here, rather than failing the whole batch it would join
            _log.error("ODP event not sent: its action, type and identifiers must be JSON values.")
            return
        assert settings.api_host is not None and settings.api_key is not None
        self.events.offer(OdpEvent(settings.api_host, settings.api_key, payload))

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.events.run(task_status=task_status)

    async def flush(self) -> None:
        await self.events.flush()

    async def close(self, timeout: float) -> OdpEventStats:
        return await self.events.close(timeout)

    def stats(self) -> OdpEventStats:
        return self.events.stats()


def build_odp_manager(
    http: LazyHttpClient,
    *,
    disabled: bool,
    segments_cache_size: int,
    segments_cache_timeout: float,
    segment_request_timeout: float | None,
    event_flush_interval: float,
    event_request_timeout: float | None,
) -> OdpManager:
    """The client's ODP manager, after checking its options (ConfigurationError names the bad one)."""
    if not isinstance(disabled, bool):
        raise ConfigurationError(f"odp_disabled must be True or False, got {disabled!r}.")
    number("segments_cache_size", segments_cache_size, integer=True, allow_equal=True)
    number("segments_cache_timeout", segments_cache_timeout, allow_equal=True)
    if segment_request_timeout is None:
        segment_request_timeout = defaults.ODP_SEGMENT_REQUEST_TIMEOUT
    if event_request_timeout is None:
        event_request_timeout = defaults.ODP_EVENT_REQUEST_TIMEOUT
    number("odp_segment_request_timeout", segment_request_timeout)
    number("odp_event_request_timeout", event_request_timeout)
    number("odp_event_flush_interval", event_flush_interval, allow_equal=True)
    return OdpManager(
        http,
        disabled=disabled,
        segments_cache_size=segments_cache_size,
        segments_cache_timeout=float(segments_cache_timeout),
        segment_request_timeout=float(segment_request_timeout),
        event_flush_interval=float(event_flush_interval),
        event_request_timeout=float(event_request_timeout),
    )
