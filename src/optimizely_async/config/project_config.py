"""ProjectConfig: the immutable, indexed view of one datafile revision.

Every index the decision engine and the event builder need is built once here, so a decision is a handful of
dict look-ups. Instances are never mutated after :func:`parse_config` returns them, so any number of tasks
can share one, and a config update is an atomic swap of the reference.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .. import defaults
from ..decision.compiled import LazyMatcher
from ..errors import InvalidDatafileError
from ..events.models import EventContext
from . import datafile as df
from .loader import Pause, gc_paused, load_datafile, no_pause
from .loader import sections as loader_sections

__all__ = [
    "EventInfo",
    "ExperimentInfo",
    "FlagInfo",
    "GroupInfo",
    "HoldoutInfo",
    "ProjectConfig",
    "VariableInfo",
    "VariationInfo",
    "parse_config",
    "take_apart",
    "typed_value",
]

VARIABLE_TYPES = frozenset({"boolean", "double", "integer", "string", "json"})


_EVERYONE = LazyMatcher(None, {}, {})


@dataclass(frozen=True, slots=True)
class VariationInfo:
    id: str
    key: str
    #: The raw ``featureEnabled`` value (``None`` when the datafile says null).
    feature_enabled: bool | None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    id: str
    policy: str
    allocation: tuple[tuple[str, int | None], ...]


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    """An A/B experiment, a feature test or a rollout rule, with its look-ups precomputed."""

    id: str
    key: str
    status: str
    layer_id: str
    type: str | None
    variations: tuple[VariationInfo, ...]
    variations_by_id: Mapping[str, VariationInfo]
    variations_by_key: Mapping[str, VariationInfo]
    allocation: tuple[tuple[str, int | None], ...]
    #: ``audienceConditions`` when it is not null, else ``audienceIds``.
    audience_tree: Any
    forced_variations: Mapping[str, str]
    group: GroupInfo | None = None
    cmab: Mapping[str, Any] | None = None
    #: How audience messages name it: ``experiment "<key>"``.
    audience_label: str = ""
    #: The audience check compiled for the fast path (no reasons, no INFO logging).
    matcher: LazyMatcher = _EVERYONE

    @property
    def running(self) -> bool:
        return self.status == "Running"

    @property
    def campaign_id(self) -> str:
        """The id sent as ``campaign_id``: the layer id when set, else the experiment id."""
        return self.layer_id or self.id


#: The official SDK's ``Experiment.get_default()``: what ACTIVATE listeners get for an impression with no rule.
EMPTY_EXPERIMENT: ExperimentInfo


@dataclass(frozen=True, slots=True)
class HoldoutInfo:
    id: str
    key: str
    status: str
    variations_by_id: Mapping[str, VariationInfo]
    variations_by_key: Mapping[str, VariationInfo]
    allocation: tuple[tuple[str, int | None], ...]
    audience_tree: Any
    included_rules: tuple[str, ...]
    exclude_targeted_deliveries: bool
    audience_label: str = ""
    matcher: LazyMatcher = _EVERYONE

    @property
    def running(self) -> bool:
        return self.status == "Running"

    @property
    def campaign_id(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class VariableInfo:
    id: str
    key: str
    #: One of boolean, double, integer, string, json (``string`` + subType ``json`` is ``json``).
    type: str
    default_value: str


@dataclass(frozen=True, slots=True)
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
    variations_by_key: Mapping[str, VariationInfo]
    #: Typed variable values per enabled variation id (None: the defaults), filled on first use. Each entry
    #: holds the values that are safe to share, and the raw text of json variables, parsed afresh on every call.
    typed_variables: dict[str | None, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventInfo:
    id: str
    key: str
    experiment_ids: tuple[str, ...]


class _WeakReferenceable:
    __slots__ = ("__weakref__",)


@dataclass(frozen=True, slots=True, eq=False)
class ProjectConfig(_WeakReferenceable):
    """One datafile revision, parsed and indexed. Build it with :func:`parse_config`."""

    raw: bytes = field(repr=False)
    revision: str
    account_id: str
    project_id: str
    sdk_key: str | None
    environment_key: str | None
    region: str
    anonymize_ip: Any  # the datafile's value, sent verbatim
    bot_filtering: Any  # the datafile's value; only a bool adds the bot-filtering attribute
    send_flag_decisions: bool
    experiments_by_id: Mapping[str, ExperimentInfo]
    experiments_by_key: Mapping[str, ExperimentInfo]
    groups_by_id: Mapping[str, GroupInfo]
    audiences: Mapping[str, Any]
    events_by_key: Mapping[str, EventInfo]
    attribute_ids: Mapping[str, str]
    flags_by_key: Mapping[str, FlagInfo]
    #: experiment id -> the flag it is a feature test of
    experiment_flags: Mapping[str, str]
    #: variation id -> {variable id: value}
    variable_usages: Mapping[str, Mapping[str, str]]
    global_holdouts: tuple[HoldoutInfo, ...]
    rule_holdouts: Mapping[str, tuple[HoldoutInfo, ...]]
    event_context: EventContext
    #: (host, publicKey) of the first ``integrations`` entry with key "odp"; None when there is none.
    odp_integration: tuple[str | None, str | None] | None = None

    @property
    def datafile(self) -> df.Datafile:
        """The datafile's models, validated again from ``raw`` (the indexes do not keep them alive)."""
        return df.Datafile.model_validate_json(self.raw)

    def is_feature_experiment(self, experiment_id: str) -> bool:
        return experiment_id in self.experiment_flags

    def flag_variables(self, flag: FlagInfo, variation: VariationInfo | None) -> dict[str, Any]:
        """Every variable of the flag, typed: the variation's values when it is enabled, else the defaults."""
        enabled = variation is not None and bool(variation.feature_enabled)
        source = variation.id if enabled and variation is not None else None
        cache = flag.typed_variables
        cached = cache.get(source, _NOT_BUILT)
        if cached is _NOT_BUILT:
            if source is not None and variation is not None and source not in flag.variations_by_id:
                cached = None  # not one of the flag's variations (a holdout's): no cache entry
            else:
                usages = None if source is None else self.variable_usages.get(source)
                cached = _typed_set(flag.variables, usages) if source is None or usages is not None else None
                if len(cache) < 1024:
                    cache[source] = cached
        if cached is not None:
            values, json_raw = cached
            out = dict(values)
            for key, raw in json_raw:
                out[key] = typed_value(raw, "json")
            return out
        out = {}
        for key, variable in flag.variables.items():
            raw = variable.default_value
            if enabled and variation is not None:
                raw = self.variable_value(variable, variation)
            out[key] = typed_value(raw, variable.type)
        return out

    def variable_value(self, variable: VariableInfo, variation: VariationInfo) -> str | None:
        """The variation's value of a variable, else its default (None when the variation has no usages)."""
        usages = self.variable_usages.get(variation.id)
        if usages is None:
            return None
        return usages.get(variable.id, variable.default_value)


def _cast(value: str | None, variable_type: str) -> Any:
    if variable_type == "boolean":
        return value == "true"
    if variable_type == "integer":
        return int(value)  # type: ignore[arg-type]
    if variable_type == "double":
        return float(value)  # type: ignore[arg-type]
    if variable_type == "json":
        return json.loads(value)  # type: ignore[arg-type]
    return value


def typed_value(value: str | None, variable_type: str) -> Any:
    try:
        return _cast(value, variable_type)
    except Exception:
        logging.getLogger("optimizely_async").error("Unable to cast value. Returning None.")
        return None


_UNCASTABLE: Any = object()


def _quiet_cast(value: str | None, variable_type: str) -> Any:
    try:
        return _cast(value, variable_type)
    except Exception:
        return _UNCASTABLE


_NOT_BUILT: Any = object()
TypedSet = tuple[Mapping[str, Any], tuple[tuple[str, "str | None"], ...]]


def _typed_set(variables: Mapping[str, VariableInfo], usages: Mapping[str, str] | None) -> TypedSet | None:
    """Typed values of a flag's variables (the defaults, or one enabled variation's values), built on first use.

    None when a value does not cast: that variation keeps the slow path, which logs the cast error on every
    call as the official SDK does.
    """
    values: dict[str, Any] = {}
    json_raw: list[tuple[str, str | None]] = []
    for key, variable in variables.items():
        raw: str | None = variable.default_value
        if usages is not None:
            raw = usages.get(variable.id, raw)
        if variable.type == "json":
            if _quiet_cast(raw, "json") is _UNCASTABLE:
                return None
            values[key] = None  # keeps the key order; replaced by a fresh parse on each call
            json_raw.append((key, raw))
            continue
        typed = _quiet_cast(raw, variable.type)
        if typed is _UNCASTABLE:
            return None
        values[key] = typed
    return values, tuple(json_raw)


EMPTY_EXPERIMENT = ExperimentInfo(
    id="",
    key="",
    status="",
    layer_id="",
    type=None,
    variations=(),
    variations_by_id={},
    variations_by_key={},
    allocation=(),
    audience_tree=[],
    forced_variations={},
)


def _allocation(items: list[df.TrafficAllocation]) -> tuple[tuple[str, int | None], ...]:
    return tuple((t.entityId, t.endOfRange) for t in items)


def _variation(v: df.Variation) -> VariationInfo:
    return VariationInfo(v.id, v.key, v.featureEnabled)


def _experiment(
    e: df.Experiment,
    audiences: Mapping[str, Any],
    compiled: dict[str, Any],
    group: GroupInfo | None = None,
    extra: VariationInfo | None = None,
) -> ExperimentInfo:
    variations = [_variation(v) for v in e.variations]
    allocation = _allocation(e.trafficAllocation)
    if extra is not None:
        variations.append(extra)
        allocation = (*allocation, (extra.id, defaults.MAX_TRAFFIC_VALUE))
    audience_tree = e.audienceConditions if e.audienceConditions is not None else e.audienceIds
    return ExperimentInfo(
        id=e.id,
        key=e.key,
        status=e.status,
        layer_id=e.layerId,
        type=e.type,
        variations=tuple(variations),
        variations_by_id={v.id: v for v in variations},
        variations_by_key={v.key: v for v in variations},
        allocation=allocation,
        audience_tree=audience_tree,
        forced_variations=dict(e.forcedVariations),
        group=group,
        cmab=e.cmab,
        audience_label=f'experiment "{e.key}"',
        matcher=LazyMatcher(audience_tree, audiences, compiled),
    )


def _holdout(h: df.Holdout, audiences: Mapping[str, Any], *, local: bool) -> HoldoutInfo:
    variations = [_variation(v) for v in h.variations]
    audience_tree = h.audienceConditions if h.audienceConditions is not None else h.audienceIds
    return HoldoutInfo(
        id=h.id,
        key=h.key,
        status=h.status,
        variations_by_id={v.id: v for v in variations},
        variations_by_key={v.key: v for v in variations},
        allocation=_allocation(h.trafficAllocation),
        audience_tree=audience_tree,
        included_rules=tuple(h.includedRules or ()) if local else (),
        exclude_targeted_deliveries=h.excludeTargetedDeliveries,
        audience_label=f'experiment "{h.key}"',
        matcher=LazyMatcher(audience_tree, audiences, {}),
    )


def _load_conditions(audience: df.Audience, *, typed: bool) -> Any:
    if typed:
        return audience.conditions
    if not isinstance(audience.conditions, str):
        raise InvalidDatafileError(
            f"audiences[id={audience.id}].conditions: expected a JSON string, got {type(audience.conditions).__name__}"
        )
    try:
        return json.loads(audience.conditions)
    except ValueError as exc:
        raise InvalidDatafileError(f"audiences[id={audience.id}].conditions: invalid JSON ({exc})") from exc


def _raw(data: str | bytes | bytearray | Mapping[str, Any]) -> bytes:
    if isinstance(data, Mapping):
        try:
            return json.dumps(data).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidDatafileError(f"datafile dict is not JSON-serialisable: {exc}") from exc
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    raise InvalidDatafileError(f"datafile must be str, bytes or dict, not {type(data).__name__}")


def _release(model: df.Datafile, pause: Pause) -> None:
    """Free the transient models a few at a time: dropping the whole tree at once is one long GIL hold."""
    for name in loader_sections():
        items: list[Any] = getattr(model, name)
        while items:
            del items[-8:]
            pause()


class _Probe:
    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index: dict[str, int] = {}


def _field_only_count() -> int:
    """What ``sys.getrefcount`` says, in :func:`take_apart`'s code shape, of a dict that only an object's
    field references (measured, not assumed: interpreters differ in the temporary references they count)."""
    probe = _Probe()
    container = getattr(probe, "index")  # noqa: B009  (the same shape as the loop below)
    return sys.getrefcount(container)


_FIELD_ONLY = _field_only_count() if hasattr(sys, "getrefcount") else -1


def take_apart(config: ProjectConfig, pause: Pause = no_pause, step: int = 16) -> None:
    """Empty the indexes of a config that nothing uses any more, ``step`` entries at a time with ``pause()``
    in between.

    Dropping the last reference to a config frees all of it in one go: for a 1 MB datafile about 11,000
    objects, 2 to 3 ms holding the GIL, wherever that reference happens to go (usually on the event loop).
    Taken apart in a worker thread first, it is freed in many short steps instead. The config is unusable
    afterwards: call this only on a config no task, event or listener can reach. An index that something else
    still references (an application kept ``config.flags_by_key``, say) is left as it is.
    """
    if _FIELD_ONLY < 0:
        return  # no reference counts to go by (not CPython): leave it to the interpreter
    names = [f.name for f in fields(config)]
    # An index may be referenced from inside another one (the compiled audience checks of the experiments
    # hold ``audiences``): sweep until a pass empties nothing more.
    emptied = True
    while emptied:
        emptied = False
        for name in names:
            container = getattr(config, name)
            if not isinstance(container, dict) or not container or sys.getrefcount(container) > _FIELD_ONLY:
                continue
            while container:
                for _ in range(min(step, len(container))):
                    container.popitem()
                pause()
            emptied = True


def parse_config(data: str | bytes | bytearray | Mapping[str, Any], pause: Pause = no_pause) -> ProjectConfig:
    """Parse, validate and index a datafile.

    Raises :class:`~optimizely_async.errors.InvalidDatafileError` naming the problem (and the path of a bad
    field). CPU-bound: the async shell runs it in a worker thread with a :class:`~.loader.Pacer` as
    ``pause``, which yields the GIL between small steps so the event loop keeps running.
    """
    raw = _raw(data)
    with gc_paused():
        model = load_datafile(raw, pause)
        try:
            return _index(model, raw, pause)
        finally:
            _release(model, pause)


def _index(d: df.Datafile, raw: bytes, pause: Pause = no_pause) -> ProjectConfig:
    audiences: dict[str, Any] = {}
    for a in d.audiences:
        audiences[a.id] = _load_conditions(a, typed=False)
        pause()
    for a in d.typedAudiences:
        audiences[a.id] = _load_conditions(a, typed=True)
        pause()

    groups = {g.id: GroupInfo(g.id, g.policy, _allocation(g.trafficAllocation)) for g in d.groups}

    # Rollout rules that belong to flags with a feature-rollout ("fr") experiment need the flag's
    # "everyone else" variation appended; find those first.
    rollouts = {r.id: r for r in d.rollouts}
    fr_extra: dict[str, VariationInfo] = {}
    for flag in d.featureFlags:
        rollout = rollouts.get(flag.rolloutId) if flag.rolloutId else None
        if rollout is None or not rollout.experiments or not rollout.experiments[-1].variations:
            continue
        ev = rollout.experiments[-1].variations[0]
        fr_extra_var = VariationInfo(ev.id, ev.key, bool(ev.featureEnabled))
        for exp_id in flag.experimentIds:
            fr_extra[exp_id] = fr_extra_var
        pause()

    # The same overwrite order as the official config: top-level experiments, rollout rules, group members.
    raw_experiments: dict[str, tuple[df.Experiment, GroupInfo | None]] = {}
    for e in d.experiments:
        raw_experiments[e.id] = (e, None)
    for r in d.rollouts:
        for e in r.experiments:
            raw_experiments[e.id] = (e, None)
        pause()
    for g in d.groups:
        for e in g.experiments:
            raw_experiments[e.id] = (e, groups[g.id])

    experiments_by_id: dict[str, ExperimentInfo] = {}
    compiled: dict[str, Any] = {}  # audiences compiled once, shared by every experiment that names them
    for exp_id, (e, group) in raw_experiments.items():
        extra = fr_extra.get(exp_id) if e.type == "fr" else None
        experiments_by_id[exp_id] = _experiment(e, audiences, compiled, group, extra)
        pause()
    experiments_by_key = {e.key: e for e in experiments_by_id.values()}

    variable_usages: dict[str, dict[str, str]] = {}
    for e, _ in raw_experiments.values():
        for v in e.variations:
            variable_usages[v.id] = {u.id: u.value for u in v.variables}
        pause()
    for exp_id, extra in fr_extra.items():
        info2 = experiments_by_id.get(exp_id)
        if info2 is not None and info2.type == "fr":
            variable_usages.setdefault(extra.id, {})

    flags: dict[str, FlagInfo] = {}
    experiment_flags: dict[str, str] = {}
    for flag in d.featureFlags:
        variables: dict[str, VariableInfo] = {}
        for var in flag.variables:
            vtype = "json" if var.type == "string" and var.subType == "json" else var.type
            variables[var.key] = VariableInfo(var.id, var.key, vtype, var.defaultValue)
        rules: list[ExperimentInfo] = []
        for exp_id in flag.experimentIds:
            experiment_flags[exp_id] = flag.id
            if exp_id not in experiments_by_id:
                raise InvalidDatafileError(
                    f'featureFlags[key={flag.key}].experimentIds: experiment "{exp_id}" is not in the datafile'
                )
            rules.append(experiments_by_id[exp_id])
        rollout_rules: tuple[ExperimentInfo, ...] = ()
        if flag.rolloutId:
            rollout = rollouts.get(flag.rolloutId)
            if rollout is None:
                raise InvalidDatafileError(
                    f'featureFlags[key={flag.key}].rolloutId: rollout "{flag.rolloutId}" is not in the datafile'
                )
            rollout_rules = tuple(experiments_by_id[e.id] for e in rollout.experiments)
            rules.extend(rollout_rules)
        by_id: dict[str, VariationInfo] = {}
        for rule in rules:
            for info in rule.variations:
                by_id.setdefault(info.id, info)
        by_key: dict[str, VariationInfo] = {}
        for info in by_id.values():
            by_key.setdefault(info.key, info)
        flags[flag.key] = FlagInfo(
            id=flag.id,
            key=flag.key,
            experiment_ids=tuple(flag.experimentIds),
            rollout_id=flag.rolloutId,
            variables=variables,
            rollout_rules=rollout_rules,
            variations_by_id=by_id,
            variations_by_key=by_key,
        )
        pause()

    global_holdouts = tuple(h for h in (_holdout(x, audiences, local=False) for x in d.holdouts) if h.running)
    rule_holdouts: dict[str, list[HoldoutInfo]] = {}
    for x in d.localHoldouts:
        if x.includedRules is None:
            continue
        h = _holdout(x, audiences, local=True)
        if not h.running:
            continue
        for rule_id in h.included_rules:
            rule_holdouts.setdefault(rule_id, []).append(h)

    region = (d.region or defaults.DEFAULT_REGION).upper()
    context = EventContext(
        account_id=d.accountId,
        project_id=d.projectId,
        revision=d.revision,
        anonymize_ip=d.anonymizeIP,
        endpoint=defaults.EVENT_ENDPOINTS.get(region, defaults.EVENT_ENDPOINTS[defaults.DEFAULT_REGION]),
    )
    return ProjectConfig(
        raw=raw,
        revision=d.revision,
        account_id=d.accountId,
        project_id=d.projectId,
        sdk_key=d.sdkKey,
        environment_key=d.environmentKey,
        region=region,
        anonymize_ip=d.anonymizeIP,
        bot_filtering=d.botFiltering,
        send_flag_decisions=bool(d.sendFlagDecisions),
        experiments_by_id=experiments_by_id,
        experiments_by_key=experiments_by_key,
        groups_by_id=groups,
        audiences=audiences,
        events_by_key={e.key: EventInfo(e.id, e.key, tuple(e.experimentIds)) for e in d.events},
        attribute_ids={a.key: a.id for a in d.attributes},
        flags_by_key=flags,
        experiment_flags=experiment_flags,
        variable_usages=variable_usages,
        global_holdouts=global_holdouts,
        rule_holdouts={k: tuple(v) for k, v in rule_holdouts.items()},
        event_context=context,
        odp_integration=next(((i.host, i.publicKey) for i in d.integrations if i.key == "odp"), None),
    )
