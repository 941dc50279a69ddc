"""The immutable pieces a :class:`~optimizely_async.config.project_config.ProjectConfig` is made of, and how
one validated datafile element becomes one.

Experiments and rollout rules are the bulk of a datafile: the datafile shapes (:mod:`.datafile`) turn each one
into its :data:`RuleEntry` the moment pydantic has validated it (:func:`rule_entry`), and a flag's variables
into their :class:`VariableInfo` (:func:`variable_infos`), so that the validated dicts and lists of one element
are freed while they are still in the processor's cache, and a parse never holds two copies of the bulk at once.
Everything that needs the whole datafile (groups, feature-rollout variations, flags' rules) is put together
afterwards in :mod:`.project_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import defaults
from .slots import slot_setters
from .variables import VariableSet

if TYPE_CHECKING:
    from . import datafile as df

__all__ = [
    "EMPTY_EXPERIMENT",
    "AudienceEntry",
    "EventInfo",
    "ExperimentInfo",
    "FlagInfo",
    "GroupInfo",
    "HoldoutInfo",
    "OptimizelyVariable",
    "RuleEntry",
    "VariableInfo",
    "VariationInfo",
    "allocation",
    "placed",
    "rule_entry",
    "variable_infos",
    "variation",
]


class VariationInfo(NamedTuple):
    id: str
    key: str
    #: The raw ``featureEnabled`` value (``None`` when the datafile says null).
    feature_enabled: bool | None
    #: What the OptimizelyConfig projection shows: as ``feature_enabled``, but None when the key is absent.
    listed_enabled: bool | None = None


class GroupInfo(NamedTuple):
    id: str
    policy: str
    allocation: tuple[tuple[str, int | None], ...]


@dataclass(frozen=True, slots=True, eq=False, init=False)
class ExperimentInfo:
    """An A/B experiment, a feature test or a rollout rule, with its look-ups precomputed.

    Compared and hashed by identity: the decision layer keys its compiled audience checks by the rule. Filled
    by its slots' setters (:mod:`.slots`): a datafile has hundreds of rules.
    """

    id: str
    key: str
    status: str
    layer_id: str
    type: str | None
    #: The variations by id, in datafile order (a feature rollout's appended "everyone else" last).
    variations_by_id: Mapping[str, VariationInfo]
    allocation: tuple[tuple[str, int | None], ...]
    #: ``audienceConditions`` when it is not null, else ``audienceIds`` (lists made tuples).
    audience_tree: Any
    forced_variations: Mapping[str, str]
    group: GroupInfo | None = None
    cmab: Mapping[str, Any] | None = None
    #: Whether the datafile gave ``audienceConditions`` (the projection renders only those).
    has_conditions: bool = False
    #: Whether the last of ``variations`` is the flag's "everyone else" variation, appended to a feature
    #: rollout (``type: "fr"``); the datafile lists the others.
    fr_extra: bool = False

    def __init__(
        self,
        id: str,
        key: str,
        status: str,
        layer_id: str,
        type: str | None,
        variations_by_id: Mapping[str, VariationInfo],
        allocation: tuple[tuple[str, int | None], ...],
        audience_tree: Any,
        forced_variations: Mapping[str, str],
        group: GroupInfo | None = None,
        cmab: Mapping[str, Any] | None = None,
        has_conditions: bool = False,
        fr_extra: bool = False,
    ) -> None:
        (
            s_id,
            s_key,
            s_status,
            s_layer,
            s_type,
            s_variations,
            s_allocation,
            s_tree,
            s_forced,
            s_group,
            s_cmab,
            s_has,
            s_fr,
        ) = _EXPERIMENT_SETTERS
        s_id(self, id)
        s_key(self, key)
        s_status(self, status)
        s_layer(self, layer_id)
        s_type(self, type)
        s_variations(self, variations_by_id)
        s_allocation(self, allocation)
        s_tree(self, audience_tree)
        s_forced(self, forced_variations)
        s_group(self, group)
        s_cmab(self, cmab)
        s_has(self, has_conditions)
        s_fr(self, fr_extra)

    @property
    def running(self) -> bool:
        return self.status == "Running"

    @property
    def campaign_id(self) -> str:
        """The id sent as ``campaign_id``: the layer id when set, else the experiment id."""
        return self.layer_id or self.id

    @property
    def audience_label(self) -> str:
        """How audience messages name it: ``experiment "<key>"``."""
        return f'experiment "{self.key}"'

    @property
    def variations(self) -> tuple[VariationInfo, ...]:
        return tuple(self.variations_by_id.values())

    @property
    def variations_by_key(self) -> Mapping[str, VariationInfo]:
        """The variations by key (built on each use: only forced variations and whitelists look them up)."""
        return {v.key: v for v in self.variations_by_id.values()}


_EXPERIMENT_SETTERS = slot_setters(ExperimentInfo)


@dataclass(frozen=True, slots=True, eq=False)
class HoldoutInfo:
    id: str
    key: str
    status: str
    variations_by_id: Mapping[str, VariationInfo]
    allocation: tuple[tuple[str, int | None], ...]
    audience_tree: Any
    included_rules: tuple[str, ...]
    exclude_targeted_deliveries: bool

    @property
    def running(self) -> bool:
        return self.status == "Running"

    @property
    def campaign_id(self) -> str:
        return self.id

    @property
    def audience_label(self) -> str:
        return f'experiment "{self.key}"'

    @property
    def variations_by_key(self) -> Mapping[str, VariationInfo]:
        return {v.key: v for v in self.variations_by_id.values()}


@dataclass(frozen=True, slots=True, init=False)
class OptimizelyVariable:
    """A flag's variable. The config keeps one per variable, whose ``value`` is the default value; the
    OptimizelyConfig projection (:mod:`.optimizely_config`, which exports the class) shows those same objects
    wherever a variation keeps the default, and makes one per value a variation overrides."""

    id: str
    key: str
    #: One of boolean, double, integer, string, json (``string`` + subType ``json`` is ``json``).
    type: str
    #: The value as the datafile writes it (a string).
    value: str

    def __init__(self, id: str, key: str, type: str, value: str) -> None:
        set_id, set_key, set_type, set_value = _VARIABLE_SETTERS
        set_id(self, id)
        set_key(self, key)
        set_type(self, type)
        set_value(self, value)


_VARIABLE_SETTERS = slot_setters(OptimizelyVariable)
#: The config's name for a flag variable: its ``value`` is the default value.
VariableInfo = OptimizelyVariable


@dataclass(frozen=True, slots=True, eq=False)
class FlagInfo:
    id: str
    key: str
    experiment_ids: tuple[str, ...]
    rollout_id: str
    variables: Mapping[str, VariableInfo]
    #: Rollout rules in order (the last one is "Everyone Else"); empty without a rollout.
    rollout_rules: tuple[ExperimentInfo, ...]
    #: Every variation of every rule, deduplicated by id, in rule order (forced decisions, impressions).
    variations_by_id: Mapping[str, VariationInfo]
    #: Typed variable values per enabled variation id (None: the defaults), cast on first use.
    typed_variables: dict[str | None, VariableSet] = field(default_factory=dict)
    #: Whether a feature test of the flag is a CMAB experiment (its decision may need an awaited prediction).
    has_cmab: bool = False

    @property
    def variations_by_key(self) -> Mapping[str, VariationInfo]:
        """By key, the first of each key in rule order (built on each use: only forced decisions need it)."""
        by_key: dict[str, VariationInfo] = {}
        for info in self.variations_by_id.values():
            by_key.setdefault(info.key, info)
        return by_key


class EventInfo(NamedTuple):
    id: str
    key: str
    experiment_ids: tuple[str, ...]


#: An audience as the OptimizelyConfig projection lists it: (id, name, conditions). The conditions are JSON text,
#: or a typed audience's tree (the config's own, lists made tuples), which the projection writes as JSON text in
#: its own build (in steps, in the background) rather than the load of the datafile.
AudienceEntry = tuple[str, str, Any]


#: The official SDK's ``Experiment.get_default()``: what ACTIVATE listeners get for an impression with no rule.
EMPTY_EXPERIMENT = ExperimentInfo(
    id="",
    key="",
    status="",
    layer_id="",
    type=None,
    variations_by_id={},
    allocation=(),
    audience_tree=(),
    forced_variations={},
)


def allocation(items: list[df.TrafficAllocation]) -> tuple[tuple[str, int | None], ...]:
    return tuple([(t["entityId"], t["endOfRange"]) for t in items])


def variation(v: df.Variation) -> VariationInfo:
    listed = v.get("featureEnabled")  # None when absent: the projection does not list it
    return VariationInfo(v["id"], v["key"], v.get("featureEnabled", False), listed)


#: An experiment or rollout rule as its datafile shape validates it (see :func:`rule_entry`): (the rule outside any
#: group and without a feature rollout's extra variation (see :func:`placed`); each variation's variable values,
#: variation id -> {variable id: value}; the first variation the datafile lists, or None). A feature rollout's
#: "everyone else" variation is the first one of the flag's last rollout rule. A plain tuple: a named one takes
#: five times as long to make, for each of hundreds of rules.
RuleEntry = tuple[ExperimentInfo, dict[str, dict[str, str]], VariationInfo | None]


def rule_entry(e: df.Experiment) -> RuleEntry:
    """One validated experiment or rollout rule, indexed."""
    by_id: dict[str, VariationInfo] = {}
    usages: dict[str, dict[str, str]] = {}
    first = None
    # variation() and allocation() written out: the calls cost about 0.6-1 ms of a 1 MB datafile's load (and a
    # comprehension is a call of its own on Python 3.11).
    for v in e["variations"]:
        variation_id = v["id"]
        listed = v.get("featureEnabled")  # None when absent (the projection does not list it); the same when null
        info = VariationInfo(variation_id, v["key"], listed if "featureEnabled" in v else False, listed)
        if first is None:
            first = info
        by_id[variation_id] = info
        values = usages[variation_id] = {}
        for u in v.get("variables", ()):
            values[u["id"]] = u["value"]
    ranges = []
    for t in e["trafficAllocation"]:
        ranges.append((t["entityId"], t["endOfRange"]))
    conditions = e.get("audienceConditions")  # a tree, its lists made tuples by the shape (df.AudienceTree)
    has_conditions = conditions is not None
    return (
        ExperimentInfo(
            e["id"],
            e["key"],
            e["status"],
            e["layerId"],
            e.get("type"),
            by_id,
            tuple(ranges),
            conditions if has_conditions else tuple(e["audienceIds"]),
            e["forcedVariations"],
            None,
            e.get("cmab"),
            has_conditions,
        ),
        usages,
        first,
    )


def placed(info: ExperimentInfo, group: GroupInfo | None, extra: VariationInfo | None) -> ExperimentInfo:
    """``info`` as a member of ``group``, and with a feature rollout's ``extra`` variation appended (the flag's
    "everyone else" variation, given all traffic left)."""
    by_id = info.variations_by_id
    allocation = info.allocation
    if extra is not None:
        by_id = {**by_id, extra.id: extra}
        allocation = (*allocation, (extra.id, defaults.MAX_TRAFFIC_VALUE))
    return ExperimentInfo(
        info.id,
        info.key,
        info.status,
        info.layer_id,
        info.type,
        by_id,
        allocation,
        info.audience_tree,
        info.forced_variations,
        group,
        info.cmab,
        info.has_conditions,
        extra is not None,
    )


def variable_infos(variables: list[df.Variable]) -> dict[str, VariableInfo]:
    """A flag's validated variables by key (``string`` with subType ``json`` is ``json``)."""
    infos: dict[str, VariableInfo] = {}
    for var in variables:
        vtype = var["type"]
        if vtype == "string" and var.get("subType") == "json":
            vtype = "json"
        infos[var["key"]] = VariableInfo(var["id"], var["key"], vtype, var["defaultValue"])
    return infos
