"""Typed shapes of the Optimizely datafile JSON (versions 2, 3 and 4), validated by pydantic.

The shapes mirror the JSON keys (camelCase) so that a datafile validates straight from its text with
pydantic-core into plain dicts and lists; unknown keys are ignored. Two kinds of element, the bulk of a datafile,
do not stay dicts: an experiment or rollout rule (:data:`Rule`) and a flag's variables become their indexed
forms (:mod:`.entities`) as soon as each is validated, while its dicts are still in the processor's cache: on a
1 MB datafile that saves about 3 of the 28 ms that indexing the whole validated tree afterwards took, and halves
the garbage collections of a parse. Condition trees (a rule's ``audienceConditions``, a typed audience's
``conditions``) come out with their lists made tuples, as the decisions read them. Everything that needs more
than one element lives in :class:`~optimizely_async.config.project_config.ProjectConfig`.

The shapes also refuse what the SDK could not use later (an error names the field): an unsupported
``version``, and free-form values (condition trees, ``cmab``, the flags kept as the JSON gave them) nested
deeper than :data:`~optimizely_async.config.depth.MAX_CONDITION_DEPTH`, so that no decision and no event
payload ever recurses past what the SDK supports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from typing_extensions import NotRequired, TypedDict

from .depth import TOO_DEEP, bounded_tree, too_deep
from .entities import RuleEntry, VariableInfo, rule_entry, variable_infos

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
    "Rule",
    "TrafficAllocation",
    "TypedAudience",
    "Variable",
    "VariableUsage",
    "Variation",
]

SUPPORTED_VERSIONS = frozenset({"2", "3", "4"})


def _bounded(value: Any) -> Any:
    if too_deep(value):
        raise ValueError(TOO_DEEP)
    return value


def _bounded_conditions(value: Any) -> Any:
    """A string is left as it is: an audience's ``conditions`` is JSON text in ``audiences`` (the config build
    parses it once, and checks its depth there) and a plain value in ``typedAudiences``."""
    return value if isinstance(value, str) else _bounded(value)


def _typed_conditions(value: Any) -> Any:
    return value if isinstance(value, str) else bounded_tree(value)


def _supported_version(value: str) -> str:
    if value not in SUPPORTED_VERSIONS:
        raise ValueError(f'unsupported datafile version {value!r}: this SDK reads versions "2", "3" and "4"')
    return value


class _After:
    """``Annotated`` metadata that runs ``check`` on a value once pydantic validated it, as pydantic's own
    ``AfterValidator`` does, through the protocol pydantic reads from any metadata. Unlike ``AfterValidator``
    it needs no import of pydantic here: pydantic is imported (by the loader) when a datafile is first read,
    not when the SDK is imported."""

    __slots__ = ("check",)

    def __init__(self, check: Callable[[Any], Any]) -> None:
        self.check = check

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.check, handler(source))


class _Built:
    """``Annotated`` metadata: the value is validated as ``shape``, then ``build`` makes it what the annotated type
    says (an after-validator of ``shape``, so an error inside it still names the field at fault)."""

    __slots__ = ("build", "shape")

    def __init__(self, shape: Any, build: Callable[[Any], Any]) -> None:
        self.shape = shape
        self.build = build

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.build, handler.generate_schema(self.shape))


#: A JSON value kept as the datafile gave it, nested at most MAX_CONDITION_DEPTH deep.
JsonValue = Annotated[Any, _After(_bounded)]
ConditionTree = Annotated[Any, _After(_bounded_conditions)]
#: A condition tree as the decisions read it: bounded as JsonValue, with its lists made tuples (dicts kept).
AudienceTree = Annotated[Any, _After(bounded_tree)]


# The datafile is validated into plain dicts and lists (TypedDicts): pydantic-core builds them straight from the
# JSON text in one call, with none of the per-instance cost of model objects. A key the JSON leaves out is left
# out here too (``NotRequired``): readers apply the defaults with ``.get``.


class Attribute(TypedDict):
    id: str
    key: str


class Audience(TypedDict):
    id: str
    name: NotRequired[str]
    #: JSON text (the config build parses it).
    conditions: ConditionTree


class TypedAudience(TypedDict):
    id: str
    name: NotRequired[str]
    #: A JSON value (a tree: lists made tuples), or a string kept as it is.
    conditions: Annotated[Any, _After(_typed_conditions)]


class Event(TypedDict):
    id: str
    key: str
    experimentIds: NotRequired[list[str]]


class VariableUsage(TypedDict):
    id: str
    value: str


class Variation(TypedDict):
    id: str
    key: str
    #: Absent: false for decisions, not listed by the projection.
    featureEnabled: NotRequired[bool | None]
    variables: NotRequired[list[VariableUsage]]


class TrafficAllocation(TypedDict):
    entityId: str
    endOfRange: int | None


class Experiment(TypedDict):
    id: str
    key: str
    status: str
    layerId: str
    variations: list[Variation]
    trafficAllocation: list[TrafficAllocation]
    audienceIds: list[str]
    forcedVariations: dict[str, str]
    audienceConditions: NotRequired[AudienceTree]
    type: NotRequired[str | None]
    cmab: NotRequired[dict[str, JsonValue] | None]


#: An experiment or a rollout rule, validated as an :class:`Experiment` and indexed at once (see
#: :func:`~optimizely_async.config.entities.rule_entry`).
Rule = Annotated[RuleEntry, _Built(Experiment, rule_entry)]


class Group(TypedDict):
    id: str
    policy: str
    experiments: list[Rule]
    trafficAllocation: list[TrafficAllocation]


class Variable(TypedDict):
    id: str
    key: str
    type: str
    defaultValue: str
    subType: NotRequired[str | None]


class FeatureFlag(TypedDict):
    id: str
    key: str
    experimentIds: NotRequired[list[str]]
    rolloutId: NotRequired[str]
    #: Validated as a list of :class:`Variable`, kept by key.
    variables: NotRequired[Annotated[dict[str, VariableInfo], _Built(list[Variable], variable_infos)]]


class Rollout(TypedDict):
    id: str
    experiments: NotRequired[list[Rule]]


class Integration(TypedDict):
    key: str
    host: NotRequired[str | None]
    publicKey: NotRequired[str | None]


class Holdout(TypedDict):
    id: str
    key: str
    status: str
    variations: NotRequired[list[Variation]]
    trafficAllocation: NotRequired[list[TrafficAllocation]]
    audienceIds: NotRequired[list[str]]
    audienceConditions: NotRequired[AudienceTree]
    includedRules: NotRequired[list[str] | None]
    excludeTargetedDeliveries: NotRequired[bool]


class Datafile(TypedDict):
    version: Annotated[str, _After(_supported_version)]
    accountId: str
    projectId: str
    revision: str
    sdkKey: NotRequired[str | None]
    environmentKey: NotRequired[str | None]
    region: NotRequired[str | None]
    # Kept as the JSON gave them, as the official SDK does (its schema does not type them): anonymizeIP is sent
    # verbatim, sendFlagDecisions is read for its truthiness, and only a real boolean botFiltering adds the
    # bot-filtering attribute to events. Lax bools would turn "false" into False and 1 into True.
    anonymizeIP: NotRequired[JsonValue]
    botFiltering: NotRequired[JsonValue]
    sendFlagDecisions: NotRequired[JsonValue]
    attributes: list[Attribute]
    audiences: list[Audience]
    typedAudiences: NotRequired[list[TypedAudience]]
    events: list[Event]
    experiments: list[Rule]
    groups: list[Group]
    featureFlags: NotRequired[list[FeatureFlag]]
    rollouts: NotRequired[list[Rollout]]
    integrations: NotRequired[list[Integration]]
    holdouts: NotRequired[list[Holdout]]
    localHoldouts: NotRequired[list[Holdout]]
