"""Build user events from decisions and ``track()`` calls, resolving everything against the config.

The rules are the official SDK's: attribute filtering and ids, the bot-filtering entry, campaign and
variation id normalisation, how an impression's variation is found.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from ..config.project_config import ExperimentInfo, HoldoutInfo, ProjectConfig, VariationInfo
from .models import ConversionEvent, DecisionMetadata, EventContext, ImpressionEvent, VisitorAttribute

__all__ = ["build_attributes", "build_conversion", "build_impression"]

_log = logging.getLogger("optimizely_async")

RESERVED_PREFIX = "$opt_"
BOT_FILTERING = "$opt_bot_filtering"
_MAX_NUMBER = 2**53


def _valid_value(value: object) -> bool:
    if isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return abs(value) <= _MAX_NUMBER
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= _MAX_NUMBER
    return False


def build_attributes(config: ProjectConfig, attributes: Mapping[str, Any] | None) -> tuple[VisitorAttribute, ...]:
    """The visitor attributes sent with an event: valid values only, mapped to attribute ids, then the
    bot-filtering entry when the datafile sets ``botFiltering``."""
    out: list[VisitorAttribute] = []
    if attributes:
        ids = config.attribute_ids
        for key, value in attributes.items():
            if not isinstance(key, str) or not _valid_value(value):
                continue
            attribute_id = ids.get(key)
            if attribute_id is not None:
                if key.startswith(RESERVED_PREFIX):
                    _log.warning(
                        "Attribute %s unexpectedly has reserved prefix %s; using attribute ID instead of "
                        "reserved attribute name.",
                        key,
                        RESERVED_PREFIX,
                    )
            elif key.startswith(RESERVED_PREFIX):
                attribute_id = key
            else:
                _log.error('Attribute "%s" is not in datafile.', key)
                continue
            out.append(VisitorAttribute(entity_id=attribute_id, key=key, value=value))
    if isinstance(config.bot_filtering, bool):
        out.append(VisitorAttribute(entity_id=BOT_FILTERING, key=BOT_FILTERING, value=config.bot_filtering))
    return tuple(out)


def _now_ms() -> int:
    return round(time.time() * 1000)


def _numeric_id(value: str) -> str | None:
    return value if value and value.isascii() and value.isdigit() else None


def build_impression(
    config: ProjectConfig,
    context: EventContext,
    experiment: ExperimentInfo | HoldoutInfo | None,
    variation: VariationInfo | None,
    flag_key: str,
    rule_key: str,
    rule_type: str,
    enabled: bool,
    user_id: str,
    attributes: Mapping[str, Any] | None,
    cmab_uuid: str | None = None,
    event_uuid: str | None = None,
) -> ImpressionEvent:
    """An impression as the official SDK builds it; a missing experiment is the empty default one."""
    experiment_id = experiment.id if experiment is not None else ""
    layer_id = experiment.layer_id if isinstance(experiment, ExperimentInfo) else ""
    campaign_id = layer_id or experiment_id or ""
    resolved: VariationInfo | None = None
    if variation is not None and variation.id:
        if flag_key and rule_type != "holdout":
            flag = config.flags_by_key.get(flag_key)
            resolved = flag.variations_by_id.get(variation.id) if flag is not None else None
        elif experiment_id and experiment is not None:
            resolved = experiment.variations_by_id.get(variation.id)
    return ImpressionEvent(
        context=context,
        user_id=user_id,
        attributes=build_attributes(config, attributes),
        campaign_id=campaign_id,
        experiment_id=experiment_id,
        variation_id=_numeric_id(resolved.id) if resolved is not None else None,
        metadata=DecisionMetadata(
            flag_key=flag_key,
            rule_key=rule_key,
            rule_type=rule_type,
            variation_key=resolved.key if resolved is not None else "",
            enabled=enabled,
            cmab_uuid=cmab_uuid or None,
        ),
        timestamp=_now_ms(),
        uuid=event_uuid,
    )


def build_conversion(
    config: ProjectConfig,
    context: EventContext,
    event_id: str,
    event_key: str,
    user_id: str,
    attributes: Mapping[str, Any] | None,
    tags: dict[Any, Any] | None,
    revenue: int | None,
    value: float | None,
    event_uuid: str | None = None,
) -> ConversionEvent:
    return ConversionEvent(
        context=context,
        user_id=user_id,
        attributes=build_attributes(config, attributes),
        event_id=event_id,
        event_key=event_key,
        revenue=revenue,
        value=value,
        tags=tags,
        timestamp=_now_ms(),
        uuid=event_uuid,
    )
