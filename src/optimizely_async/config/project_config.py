"""ProjectConfig: the immutable, indexed view of one datafile revision.

Every index the decision engine and the event builder need is built once here, so a decision is a handful of
dict look-ups. Instances are never mutated after they are built (the caches they carry are filled on first
use and never change a result), so any number of tasks can share one, and a config update is an atomic swap
of the reference.

A config keeps few objects the cyclic collector must track: variations, groups, events and variables are
tuples (named), audience trees are nested tuples, and the models of the datafile are dropped once indexed.
This module imports nothing from ``decision/`` or ``events/``: they read the config, not the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import defaults
from ..errors import InvalidDatafileError
from . import datafile as df
from .depth import MAX_CONDITION_DEPTH, TOO_DEEP, too_deep
from .loader import Steps, run_at_once, run_in_steps, sections, validate_at_once, validate_in_steps
from .variables import VariableSet, typed_value, variable_set

__all__ = [
    "EventInfo",
    "ExperimentInfo",
    "FlagInfo",
    "GroupInfo",
    "HoldoutInfo",
    "ProjectConfig",
    "VariableInfo",
    "VariationInfo",
    "build_config",
    "config_steps",
    "parse_config",
    "typed_value",
]


VARIABLE_TYPES = frozenset({"boolean", "double", "integer", "string", "json"})


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


@dataclass(frozen=True, slots=True, eq=False)
class ExperimentInfo:
    """An A/B experiment, a feature test or a rollout rule, with its look-ups precomputed.

    Compared and hashed by identity: the decision layer keys its compiled audience checks by the rule.
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


#: The official SDK's ``Experiment.get_default()``: what ACTIVATE listeners get for an impression with no rule.
EMPTY_EXPERIMENT: ExperimentInfo


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


class VariableInfo(NamedTuple):
    id: str
    key: str
    #: One of boolean, double, integer, string, json (``string`` + subType ``json`` is ``json``).
    type: str
    default_value: str


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


#: An audience as the OptimizelyConfig projection lists it: (id, name, conditions as JSON text). A plain tuple
#: of strings, which the cyclic collector stops tracking.
AudienceEntry = tuple[str, str, str]


class _WeakReferenceable:
    __slots__ = ("__weakref__",)


@dataclass(frozen=True, slots=True, eq=False)
class ProjectConfig(_WeakReferenceable):
    """One datafile revision, parsed and indexed. Build it with :func:`parse_config` or :func:`build_config`."""

    #: The datafile text as given (a str, or UTF-8 bytes; a dict given is encoded once), not copied.
    raw: str | bytes = field(repr=False)
    revision: str
    account_id: str
    project_id: str
    sdk_key: str | None
    environment_key: str | None
    region: str
    anonymize_ip: Any  # the datafile's value, sent verbatim
    bot_filtering: Any  # the datafile's value; only a bool adds the bot-filtering attribute
    send_flag_decisions: bool
    #: The events endpoint of the datafile's region.
    event_endpoint: str
    experiments_by_id: Mapping[str, ExperimentInfo]
    experiments_by_key: Mapping[str, ExperimentInfo]
    groups_by_id: Mapping[str, GroupInfo]
    audiences: Mapping[str, Any]
    events_by_key: Mapping[str, EventInfo]
    attribute_ids: Mapping[str, str]
    flags_by_key: Mapping[str, FlagInfo]
    #: experiment id -> the key of the (last) flag it is a feature test of
    experiment_flags: Mapping[str, str]
    #: variation id -> {variable id: value}
    variable_usages: Mapping[str, Mapping[str, str]]
    global_holdouts: tuple[HoldoutInfo, ...]
    rule_holdouts: Mapping[str, tuple[HoldoutInfo, ...]]
    #: What the OptimizelyConfig projection lists, in datafile order: the top-level and grouped experiments'
    #: ids, the attributes (id, key), the events and the audiences.
    listed_experiment_ids: tuple[str, ...] = ()
    listed_attributes: tuple[tuple[str, str], ...] = ()
    listed_events: tuple[EventInfo, ...] = ()
    listed_audiences: tuple[AudienceEntry, ...] = ()
    #: Filled by the decision layer on first use: each rule's compiled audience check (keyed by the rule),
    #: and each audience's compiled conditions (keyed by audience id).
    matchers: dict[Any, Any] = field(default_factory=dict, repr=False)
    compiled_audiences: dict[str, Any] = field(default_factory=dict, repr=False)
    #: (host, publicKey) of the first ``integrations`` entry with key "odp"; None when there is none.
    odp_integration: tuple[str | None, str | None] | None = None
    #: Whether any experiment is a CMAB one (its decisions may need an awaited prediction).
    has_cmab: bool = False

    def is_feature_experiment(self, experiment_id: str) -> bool:
        return experiment_id in self.experiment_flags

    def flag_variables(self, flag: FlagInfo, variation: VariationInfo | None) -> dict[str, Any]:
        """Every variable of the flag, typed: the variation's values when it is enabled, else the defaults.

        Cast once per variation and kept in the flag (see :mod:`.variables`); each call gets its own dict.
        """
        enabled = variation is not None and bool(variation.feature_enabled)
        source = variation.id if enabled and variation is not None else None
        cache = flag.typed_variables
        entry = cache.get(source)
        if entry is None:
            entry = variable_set(flag.variables, {} if source is None else self.variable_usages.get(source))
            # A variation that is not the flag's own (a holdout's) is not kept: its id could be one of the flag's.
            if (source is None or source in flag.variations_by_id) and len(cache) < 1024:
                cache[source] = entry
        return entry.values()

    def variable_value(self, variable: VariableInfo, variation: VariationInfo) -> str | None:
        """The variation's value of a variable, else its default (None when the variation has no usages)."""
        usages = self.variable_usages.get(variation.id)
        if usages is None:
            return None
        return usages.get(variable.id, variable.default_value)


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


def _tuples(tree: Any) -> Any:
    """An audience tree with its lists made tuples (leaves, the condition dicts, are kept as they are)."""
    if type(tree) is list:
        return tuple([_tuples(node) if type(node) is list else node for node in tree])
    return tree


def _allocation(items: list[df.TrafficAllocation]) -> tuple[tuple[str, int | None], ...]:
    return tuple([(t["entityId"], t["endOfRange"]) for t in items])


def _variation(v: df.Variation) -> VariationInfo:
    listed = v.get("featureEnabled")  # None when absent: the projection does not list it
    return VariationInfo(v["id"], v["key"], v.get("featureEnabled", False), listed)


def _experiment(
    e: df.Experiment,
    usages: dict[str, dict[str, str]],
    group: GroupInfo | None = None,
    extra: VariationInfo | None = None,
) -> ExperimentInfo:
    """The rule's info; its variations' variable values are added to ``usages`` (variation id -> values)."""
    by_id: dict[str, VariationInfo] = {}
    for v in e["variations"]:
        variation_id = v["id"]
        listed = v.get("featureEnabled")  # None when absent (the projection does not list it); the same when null
        by_id[variation_id] = VariationInfo(variation_id, v["key"], listed if "featureEnabled" in v else False, listed)
        usages[variation_id] = {u["id"]: u["value"] for u in v.get("variables", ())}
    allocation = tuple([(t["entityId"], t["endOfRange"]) for t in e["trafficAllocation"]])
    if extra is not None:
        by_id[extra.id] = extra
        allocation = (*allocation, (extra.id, defaults.MAX_TRAFFIC_VALUE))
    conditions = e.get("audienceConditions")
    has_conditions = conditions is not None
    if not has_conditions:
        conditions = e["audienceIds"]
    return ExperimentInfo(
        e["id"],
        e["key"],
        e["status"],
        e["layerId"],
        e.get("type"),
        by_id,
        allocation,
        _tuples(conditions) if type(conditions) is list else conditions,
        e["forcedVariations"],
        group,
        e.get("cmab"),
        has_conditions,
        extra is not None,
    )


def _holdout(h: df.Holdout, *, local: bool) -> HoldoutInfo:
    variations = [_variation(v) for v in h.get("variations", ())]
    conditions = h.get("audienceConditions")
    return HoldoutInfo(
        id=h["id"],
        key=h["key"],
        status=h["status"],
        variations_by_id={v.id: v for v in variations},
        allocation=_allocation(h.get("trafficAllocation", [])),
        audience_tree=_tuples(conditions if conditions is not None else h.get("audienceIds", [])),
        included_rules=tuple(h.get("includedRules") or ()) if local else (),
        exclude_targeted_deliveries=h.get("excludeTargetedDeliveries", False),
    )


def _load_conditions(audience: df.Audience, index: int, *, typed: bool) -> Any:
    conditions = audience["conditions"]
    if typed:
        return _tuples(conditions) if type(conditions) is list else conditions
    where = f"audiences[{index}].conditions"
    if not isinstance(conditions, str):
        raise InvalidDatafileError(f"{where}: expected a JSON string, got {type(conditions).__name__}")
    try:
        tree = json.loads(conditions)
    except RecursionError:
        raise InvalidDatafileError(f"{where}: {TOO_DEEP}") from None
    except ValueError as exc:
        raise InvalidDatafileError(f"{where}: invalid JSON ({exc})") from exc
    if too_deep(tree):
        raise InvalidDatafileError(f"{where}: {TOO_DEEP}")
    return _tuples(tree) if type(tree) is list else tree


def _raw(data: str | bytes | bytearray | Mapping[str, Any]) -> str | bytes:
    """The datafile's text, kept as given where it is immutable (no copy of a large str or bytes)."""
    if isinstance(data, Mapping):
        try:
            return json.dumps(data)
        except (TypeError, ValueError, RecursionError) as exc:
            deep = [str(k) for k, v in data.items() if too_deep(v, MAX_CONDITION_DEPTH)]
            at = f" ({', '.join(deep)} nested too deep)" if isinstance(exc, RecursionError) and deep else ""
            raise InvalidDatafileError(f"datafile dict is not JSON-serialisable{at}: {exc}") from None
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray):
        return bytes(data)
    if isinstance(data, str):
        try:
            str.encode(data, "utf-8")  # a lone surrogate cannot be sent or hashed: refused here, not later
        except UnicodeEncodeError as exc:
            raise InvalidDatafileError(f"datafile text cannot be encoded as UTF-8: {exc}") from None
        return data
    raise InvalidDatafileError(f"datafile must be str, bytes or dict, not {type(data).__name__}")


def parse_config(data: str | bytes | bytearray | Mapping[str, Any]) -> ProjectConfig:
    """Parse, validate and index a datafile at once (one validation call): for a static datafile, where nothing
    else waits.

    Raises :class:`~optimizely_async.errors.InvalidDatafileError` naming the problem (and the path of a bad
    field).
    """
    raw = _raw(data)
    return run_at_once(_index(validate_at_once(raw), raw))


def config_steps(data: str | bytes | bytearray | Mapping[str, Any]) -> Steps[ProjectConfig]:
    """:func:`parse_config` as a generator of small steps (one datafile element or so each)."""
    raw = _raw(data)
    model = yield from validate_in_steps(raw)
    return (yield from _index(model, raw))


async def build_config(data: str | bytes | bytearray | Mapping[str, Any]) -> ProjectConfig:
    """:func:`parse_config` on the event loop, in steps of about 0.5 ms with a checkpoint between them: for a
    polled update, while the application's tasks run."""
    return await run_in_steps(config_steps(data))


def _index(d: df.Datafile, raw: str | bytes) -> Steps[ProjectConfig]:
    try:
        return (yield from _build(d, raw))
    finally:
        # Free the datafile's dicts a few at a time: dropping the whole tree at once is one long hold.
        for name in sections():
            items: list[Any] = d.get(name) or []  # type: ignore[assignment]
            while items:
                del items[-8:]
                yield


def _build(d: df.Datafile, raw: str | bytes) -> Steps[ProjectConfig]:
    audiences: dict[str, Any] = {}
    listed_audiences: list[AudienceEntry] = []
    typed_audiences = d.get("typedAudiences", [])
    typed_ids = {a["id"] for a in typed_audiences}
    for index, a in enumerate(typed_audiences):
        audiences[a["id"]] = _load_conditions(a, index, typed=True)
        listed_audiences.append((a["id"], a.get("name", ""), json.dumps(a["conditions"])))
        yield
    for index, a in enumerate(d["audiences"]):
        if a["id"] not in typed_ids:
            audiences[a["id"]] = _load_conditions(a, index, typed=False)
            if a["id"] != "$opt_dummy_audience":
                listed_audiences.append((a["id"], a.get("name", ""), a["conditions"]))
        else:
            _load_conditions(a, index, typed=False)  # still checked, as every legacy audience is
        yield

    groups = {g["id"]: GroupInfo(g["id"], g["policy"], _allocation(g["trafficAllocation"])) for g in d["groups"]}

    # Rollout rules that belong to flags with a feature-rollout ("fr") experiment need the flag's
    # "everyone else" variation appended; find those first.
    feature_flags = d.get("featureFlags", [])
    rollouts = {r["id"]: r for r in d.get("rollouts", [])}
    fr_extra: dict[str, VariationInfo] = {}
    for flag in feature_flags:
        rollout = rollouts.get(flag.get("rolloutId", "")) if flag.get("rolloutId") else None
        last = rollout.get("experiments") if rollout is not None else None
        if not last or not last[-1]["variations"]:
            continue
        ev = last[-1]["variations"][0]
        enabled = bool(ev.get("featureEnabled", False))
        fr_extra_var = VariationInfo(ev["id"], ev["key"], enabled, enabled)
        for exp_id in flag.get("experimentIds", ()):
            fr_extra[exp_id] = fr_extra_var
    yield

    # The same overwrite order as the official config: top-level experiments, rollout rules, group members.
    raw_experiments: dict[str, tuple[df.Experiment, GroupInfo | None]] = {}
    for e in d["experiments"]:
        raw_experiments[e["id"]] = (e, None)
    for r in d.get("rollouts", []):
        for e in r.get("experiments", ()):
            raw_experiments[e["id"]] = (e, None)
    listed_experiment_ids = [e["id"] for e in d["experiments"]]
    for g in d["groups"]:
        for e in g["experiments"]:
            raw_experiments[e["id"]] = (e, groups[g["id"]])
            listed_experiment_ids.append(e["id"])
    yield

    experiments_by_id: dict[str, ExperimentInfo] = {}
    variable_usages: dict[str, dict[str, str]] = {}
    for exp_id, (e, group) in raw_experiments.items():
        extra = fr_extra.get(exp_id) if e.get("type") == "fr" else None
        experiments_by_id[exp_id] = _experiment(e, variable_usages, group, extra)
        yield
    experiments_by_key = {e.key: e for e in experiments_by_id.values()}
    for exp_id, extra in fr_extra.items():
        info2 = experiments_by_id.get(exp_id)
        if info2 is not None and info2.type == "fr":
            variable_usages.setdefault(extra.id, {})
    yield

    flags: dict[str, FlagInfo] = {}
    experiment_flags: dict[str, str] = {}
    for flag in feature_flags:
        flag_key = flag["key"]
        variables: dict[str, VariableInfo] = {}
        for var in flag.get("variables", ()):
            vtype = var["type"]
            if vtype == "string" and var.get("subType") == "json":
                vtype = "json"
            variables[var["key"]] = VariableInfo(var["id"], var["key"], vtype, var["defaultValue"])
        rules: list[ExperimentInfo] = []
        experiment_ids = flag.get("experimentIds", [])
        for exp_id in experiment_ids:
            experiment_flags[exp_id] = flag_key
            if exp_id not in experiments_by_id:
                raise InvalidDatafileError(
                    f'featureFlags[key={flag_key}].experimentIds: experiment "{exp_id}" is not in the datafile'
                )
            rules.append(experiments_by_id[exp_id])
        rollout_rules: tuple[ExperimentInfo, ...] = ()
        rollout_id = flag.get("rolloutId", "")
        if rollout_id:
            rollout = rollouts.get(rollout_id)
            if rollout is None:
                raise InvalidDatafileError(
                    f'featureFlags[key={flag_key}].rolloutId: rollout "{rollout_id}" is not in the datafile'
                )
            rollout_rules = tuple([experiments_by_id[e["id"]] for e in rollout.get("experiments", ())])
            rules.extend(rollout_rules)
        by_id: dict[str, VariationInfo] = {}
        for rule in rules:
            for info in rule.variations_by_id.values():
                by_id.setdefault(info.id, info)
        flags[flag_key] = FlagInfo(
            id=flag["id"],
            key=flag_key,
            experiment_ids=tuple(experiment_ids),
            rollout_id=rollout_id,
            variables=variables,
            rollout_rules=rollout_rules,
            variations_by_id=by_id,
            has_cmab=any(experiments_by_id[exp_id].cmab for exp_id in experiment_ids),
        )
        yield

    global_holdouts = tuple(h for h in (_holdout(x, local=False) for x in d.get("holdouts", ())) if h.running)
    rule_holdouts: dict[str, list[HoldoutInfo]] = {}
    for x in d.get("localHoldouts", ()):
        if x.get("includedRules") is None:
            continue
        h = _holdout(x, local=True)
        if not h.running:
            continue
        for rule_id in h.included_rules:
            rule_holdouts.setdefault(rule_id, []).append(h)
    yield

    region = (d.get("region") or defaults.DEFAULT_REGION).upper()
    events = tuple([EventInfo(e["id"], e["key"], tuple(e.get("experimentIds", ()))) for e in d["events"]])
    attributes = tuple([(a["id"], a["key"]) for a in d["attributes"]])
    return ProjectConfig(
        raw=raw,
        revision=d["revision"],
        account_id=d["accountId"],
        project_id=d["projectId"],
        sdk_key=d.get("sdkKey"),
        environment_key=d.get("environmentKey"),
        region=region,
        anonymize_ip=d.get("anonymizeIP", False),
        bot_filtering=d.get("botFiltering"),
        send_flag_decisions=bool(d.get("sendFlagDecisions", False)),
        event_endpoint=defaults.EVENT_ENDPOINTS.get(region, defaults.EVENT_ENDPOINTS[defaults.DEFAULT_REGION]),
        experiments_by_id=experiments_by_id,
        experiments_by_key=experiments_by_key,
        groups_by_id=groups,
        audiences=audiences,
        events_by_key={e.key: e for e in events},
        attribute_ids={key: attribute_id for attribute_id, key in attributes},
        flags_by_key=flags,
        experiment_flags=experiment_flags,
        variable_usages=variable_usages,
        global_holdouts=global_holdouts,
        rule_holdouts={k: tuple(v) for k, v in rule_holdouts.items()},
        listed_experiment_ids=tuple(listed_experiment_ids),
        listed_attributes=attributes,
        listed_events=events,
        listed_audiences=tuple(listed_audiences),
        odp_integration=next(
            ((i.get("host"), i.get("publicKey")) for i in d.get("integrations") or () if i.get("key") == "odp"), None
        ),
        has_cmab=any(e.cmab for e in experiments_by_id.values()),
    )
