"""Pydantic models of the Optimizely datafile JSON (versions 2, 3 and 4).

The models mirror the JSON keys (camelCase) so that a datafile validates straight from bytes with
pydantic-core; unknown keys are ignored. They hold data only: every index and every derived value lives in
:class:`~optimizely_async.config.project_config.ProjectConfig`.

The models also refuse what the SDK could not use later (an error names the field): an unsupported
``version``, and free-form values (condition trees, ``cmab``, the flags kept as the JSON gave them) nested
deeper than :data:`~optimizely_async.config.depth.MAX_CONDITION_DEPTH`, so that no decision and no event
payload ever recurses past what the SDK supports.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .depth import MAX_CONDITION_DEPTH, too_deep

__all__ = [
    "Attribute",
    "Audience",
    "Datafile",
    "Event",
    "Experiment",
    "FeatureFlag",
    "Group",
    "Holdout",
    "Integration",
    "Rollout",
    "TrafficAllocation",
    "Variable",
    "VariableUsage",
    "Variation",
]

SUPPORTED_VERSIONS = frozenset({"2", "3", "4"})


_TOO_DEEP = f"nested deeper than {MAX_CONDITION_DEPTH} levels, which this SDK does not support"


def _bounded(value: Any) -> Any:
    if too_deep(value):
        raise ValueError(_TOO_DEEP)
    return value


def _bounded_conditions(value: Any) -> Any:
    """Also looks inside a string: an audience's ``conditions`` is JSON text (in ``typedAudiences`` a string is
    a plain value, and text that is not JSON is left to the config build to report)."""
    if not isinstance(value, str):
        return _bounded(value)
    try:
        parsed = json.loads(value)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    except ValueError:
        return value
    _bounded(parsed)
    return value


def _supported_version(value: str) -> str:
    if value not in SUPPORTED_VERSIONS:
        raise ValueError(f'unsupported datafile version {value!r}: this SDK reads versions "2", "3" and "4"')
    return value


#: A JSON value kept as the datafile gave it, nested at most MAX_CONDITION_DEPTH deep.
JsonValue = Annotated[Any, AfterValidator(_bounded)]
ConditionTree = Annotated[Any, AfterValidator(_bounded_conditions)]


class _Model(BaseModel):
    # Schemas are built on first validation, not at import (import time is the application's start-up).
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class Attribute(_Model):
    id: str
    key: str


class Audience(_Model):
    id: str
    name: str = ""
    #: A JSON string in ``audiences``; a JSON value in ``typedAudiences``.
    conditions: ConditionTree


class Event(_Model):
    id: str
    key: str
    experimentIds: list[str] = Field(default_factory=list)


class VariableUsage(_Model):
    id: str
    value: str


class Variation(_Model):
    id: str
    key: str
    featureEnabled: bool | None = False
    variables: list[VariableUsage] = Field(default_factory=list)


class TrafficAllocation(_Model):
    entityId: str
    endOfRange: int | None


class Experiment(_Model):
    id: str
    key: str
    status: str
    layerId: str
    variations: list[Variation]
    trafficAllocation: list[TrafficAllocation]
    audienceIds: list[str]
    forcedVariations: dict[str, str]
    audienceConditions: JsonValue = None
    type: str | None = None
    cmab: dict[str, JsonValue] | None = None


class Group(_Model):
    id: str
    policy: str
    experiments: list[Experiment]
    trafficAllocation: list[TrafficAllocation]


class Variable(_Model):
    id: str
    key: str
    type: str
    defaultValue: str
    subType: str | None = None


class FeatureFlag(_Model):
    id: str
    key: str
    experimentIds: list[str] = Field(default_factory=list)
    rolloutId: str = ""
    variables: list[Variable] = Field(default_factory=list)


class Rollout(_Model):
    id: str
    experiments: list[Experiment] = Field(default_factory=list)


class Integration(_Model):
    key: str
    host: str | None = None
    publicKey: str | None = None


class Holdout(_Model):
    id: str
    key: str
    status: str
    variations: list[Variation] = Field(default_factory=list)
    trafficAllocation: list[TrafficAllocation] = Field(default_factory=list)
    audienceIds: list[str] = Field(default_factory=list)
    audienceConditions: JsonValue = None
    includedRules: list[str] | None = None
    excludeTargetedDeliveries: bool = False


class Datafile(_Model):
    version: Annotated[str, AfterValidator(_supported_version)]
    accountId: str
    projectId: str
    revision: str
    sdkKey: str | None = None
    environmentKey: str | None = None
    region: str | None = None
    # Kept as the JSON gave them, as the official SDK does (its schema does not type them): anonymizeIP is sent
    # verbatim, sendFlagDecisions is read for its truthiness, and only a real boolean botFiltering adds the
    # bot-filtering attribute to events. Lax bools would turn "false" into False and 1 into True.
    anonymizeIP: JsonValue = False
    botFiltering: JsonValue = None
    sendFlagDecisions: JsonValue = False
    attributes: list[Attribute]
    audiences: list[Audience]
    typedAudiences: list[Audience] = Field(default_factory=list)
    events: list[Event]
    experiments: list[Experiment]
    groups: list[Group]
    featureFlags: list[FeatureFlag] = Field(default_factory=list)
    rollouts: list[Rollout] = Field(default_factory=list)
    integrations: list[Integration] = Field(default_factory=list)
    holdouts: list[Holdout] = Field(default_factory=list)
    localHoldouts: list[Holdout] = Field(default_factory=list)
