"""Build user events from decisions and ``track()`` calls, resolving everything against the config.

The rules are the official SDK's: attribute filtering and ids, the bot-filtering entry, campaign and
variation id normalisation, how an impression's variation is found.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._logging import sdk_logger
from ..config.project_config import ExperimentInfo, HoldoutInfo, ProjectConfig, VariationInfo

if TYPE_CHECKING:
    from . import models
    from .models import ConversionEvent, DecisionMetadata, EventContext, ImpressionEvent, VisitorAttribute
else:
    from .._lazy_import import LazyModule

    # The pydantic event models (and pydantic): imported by the first event_context(), at client construction.
    models = LazyModule(f"{__package__}.models")

__all__ = ["build_attributes", "build_conversion", "build_impression", "event_context", "prepare_models"]

_log = sdk_logger()

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


# The last attribute list built, with what it was built from: a user's attributes usually go out with several
# events in a row (decide_all, get_enabled_features, a handler deciding several flags).
_last_built: list[Any] = [None, None, ()]


def build_attributes(config: ProjectConfig, attributes: Mapping[str, Any] | None) -> tuple[VisitorAttribute, ...]:
    """The visitor attributes sent with an event: valid values only, mapped to attribute ids, then the
    bot-filtering entry when the datafile sets ``botFiltering``."""
    if not attributes:
        return _build_attributes(config, attributes)[0]
    try:
        # Types are part of the key: True == 1 == 1.0 as values, but they are different attributes on the wire.
        key = (tuple(attributes.items()), tuple(map(type, attributes.values())))
        # Keyed on the config's attribute-id map (not the config, which it would keep alive after an update).
        if _last_built[0] is config.attribute_ids and _last_built[1] == key:
            result: tuple[VisitorAttribute, ...] = _last_built[2]
            return result
    except Exception:  # a value whose == is unusual (e.g. an array): just build
        return _build_attributes(config, attributes)[0]
    result, quiet = _build_attributes(config, attributes)
    # Only lists whose build logged nothing are kept (every event logs its own unknown or reserved keys, as the
    # official SDK does); 0.0 and -0.0 are equal but sent differently, so such lists are not kept either.
    if quiet and not any(type(v) is float and v == 0.0 for v in attributes.values()):
        _last_built[:] = (config.attribute_ids, key, result)
    return result


def _build_attributes(
    config: ProjectConfig, attributes: Mapping[str, Any] | None
) -> tuple[tuple[VisitorAttribute, ...], bool]:
    """The attribute list, and whether building it logged nothing."""
    out: list[VisitorAttribute] = []
    quiet = True
    if attributes:
        ids = config.attribute_ids
        for key, value in attributes.items():
            kind = type(value)
            if kind is str or kind is bool:
                pass
            elif kind is int:
                if not -_MAX_NUMBER <= value <= _MAX_NUMBER:
                    continue
            elif not _valid_value(value):
                continue
            if type(key) is not str and not isinstance(key, str):
                continue
            attribute_id = ids.get(key)
            if attribute_id is not None:
                if key.startswith(RESERVED_PREFIX):
                    quiet = False
                    _log.warning(
                        "Attribute %s unexpectedly has reserved prefix %s; using attribute ID instead of "
                        "reserved attribute name.",
                        key,
                        RESERVED_PREFIX,
                    )
                if not attribute_id:  # a datafile attribute with an empty id is left out, as officially
                    continue
            elif key.startswith(RESERVED_PREFIX):
                attribute_id = key
            else:
                quiet = False
                _log.debug('Attribute "%s" is not in datafile.', key)
                continue
            out.append(_attribute(attribute_id, key, value))
    if isinstance(config.bot_filtering, bool):
        out.append(_attribute(BOT_FILTERING, BOT_FILTERING, config.bot_filtering))
    return tuple(out), quiet


# Event parts are frozen models, so equal ones can be shared between events. These caches keep the hot path
# to one model validation per event; they are bounded and cleared when full.
_CACHE_LIMIT = 20_000
_attributes: dict[tuple[str, str, type, Any], VisitorAttribute] = {}
_metadata: dict[tuple[str, str, str, str, bool, str | None], DecisionMetadata] = {}


def _attribute(entity_id: str, key: str, value: Any) -> VisitorAttribute:
    # type(value) keeps True, 1 and 1.0 apart: they are equal as dict keys but not on the wire. So are 0.0
    # and -0.0 (same type too), so float zeros are never shared.
    if value == 0 and type(value) is float:
        return models.VisitorAttribute(entity_id=entity_id, key=key, value=value)
    cache_key = (entity_id, key, type(value), value)
    found = _attributes.get(cache_key)
    if found is None:
        if len(_attributes) >= _CACHE_LIMIT:
            _attributes.clear()
        found = _attributes[cache_key] = models.VisitorAttribute(entity_id=entity_id, key=key, value=value)
    return found


def _decision_metadata(
    flag_key: str, rule_key: str, rule_type: str, variation_key: str, enabled: bool, cmab_uuid: str | None
) -> DecisionMetadata:
    cache_key = (flag_key, rule_key, rule_type, variation_key, enabled, cmab_uuid)
    found = _metadata.get(cache_key)
    if found is None:
        if len(_metadata) >= _CACHE_LIMIT:
            _metadata.clear()
        found = _metadata[cache_key] = models.DecisionMetadata(
            flag_key=flag_key,
            rule_key=rule_key,
            rule_type=rule_type,
            variation_key=variation_key,
            enabled=enabled,
            cmab_uuid=cmab_uuid,
        )
    return found


def now_ms() -> int:
    """Milliseconds since the epoch, as the official SDK stamps events."""
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
    timestamp: int | None = None,
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
    return models.ImpressionEvent(
        context=context,
        user_id=user_id,
        attributes=build_attributes(config, attributes),
        campaign_id=campaign_id,
        experiment_id=experiment_id,
        variation_id=_numeric_id(resolved.id) if resolved is not None else None,
        metadata=_decision_metadata(
            flag_key, rule_key, rule_type, resolved.key if resolved is not None else "", enabled, cmab_uuid or None
        ),
        timestamp=now_ms() if timestamp is None else timestamp,
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
    timestamp: int | None = None,
) -> ConversionEvent:
    return models.ConversionEvent(
        context=context,
        user_id=user_id,
        attributes=build_attributes(config, attributes),
        event_id=event_id,
        event_key=event_key,
        revenue=revenue,
        value=value,
        tags=tags,
        timestamp=now_ms() if timestamp is None else timestamp,
        uuid=event_uuid,
    )


def event_context(config: ProjectConfig, endpoint: str | None = None) -> EventContext:
    """The per-config facts every payload carries; ``endpoint`` (the client's ``event_endpoint``) replaces the
    datafile region's. The first call imports the event models (and pydantic)."""
    return models.EventContext(
        account_id=config.account_id,
        project_id=config.project_id,
        revision=config.revision,
        anonymize_ip=config.anonymize_ip,
        endpoint=endpoint if endpoint is not None else config.event_endpoint,
    )


def prepare_models() -> None:
    """Import the event models (and pydantic) now, if not done yet: a client calls this at construction, so
    that a polled datafile's first config does not pay for the import on the event loop."""
    importlib.import_module(f"{__package__}.models")
