"""What ODP needs from a datafile revision: the integration (host, public key) and the segments to check.

Read once per :class:`~optimizely_async.config.project_config.ProjectConfig`, on first use (a client that never
uses ODP never reads it), and kept beside the config while it lives.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..config.project_config import ProjectConfig

__all__ = ["OdpSettings", "odp_settings", "segments_to_check"]


@dataclass(frozen=True, slots=True)
class OdpSettings:
    """The ODP integration of one datafile revision."""

    api_key: str | None
    api_host: str | None
    #: The segments the ``qualified`` conditions name, each once, in datafile order.
    segments_to_check: tuple[str, ...]

    @property
    def integrated(self) -> bool:
        """Both the host and the public key are set (the official "integrated" state)."""
        return bool(self.api_key) and bool(self.api_host)


_SETTINGS: weakref.WeakKeyDictionary[ProjectConfig, OdpSettings] = weakref.WeakKeyDictionary()


def _leaves(tree: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(tree, Mapping):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for node in tree:
            yield from _leaves(node)


def segments_to_check(audiences: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of every leaf condition with match ``qualified``, whatever its type.

    The official SDK lists them per audience (a set each) and concatenates, so a segment two audiences name is
    sent twice, in set order; the order carries no meaning, and here each segment is listed once, in the order
    the audiences name them (see docs/compatibility.md).
    """
    seen: dict[str, None] = {}
    for conditions in audiences.values():
        for leaf in _leaves(conditions):
            if leaf.get("match") == "qualified":
                value = leaf.get("value")
                if isinstance(value, str):
                    seen.setdefault(value)
    return tuple(seen)


def odp_settings(config: ProjectConfig) -> OdpSettings:
    """The ODP settings of ``config`` (computed on first call, then kept while the config lives)."""
    settings = _SETTINGS.get(config)
    if settings is None:
        host, key = config.odp_integration or (None, None)
        settings = OdpSettings(key, host, segments_to_check(config.audiences))
        _SETTINGS[config] = settings
    return settings
