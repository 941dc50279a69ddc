"""ProjectConfig: the immutable, indexed view of one datafile revision.

Every index the decision engine and the event builder need is built once here, so a decision is a handful of
dict look-ups. Instances are never mutated after they are built (the caches they carry are filled on first
use and never change a result), so any number of tasks can share one, and a config update is an atomic swap
of the reference.

A config keeps few objects the cyclic collector must track: variations, groups, events and variables are
tuples (named), audience trees are nested tuples, and the validated datafile is dropped once indexed. The
pieces (:mod:`.entities`) are re-exported here.
This module imports nothing from ``decision/`` or ``events/``: they read the config, not the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import defaults
from ..errors import InvalidDatafileError
from . import datafile as df
from .depth import MAX_CONDITION_DEPTH, TOO_DEEP, bounded_tree, too_deep
from .entities import (
    EMPTY_EXPERIMENT,
    AudienceEntry,
    EventInfo,
    ExperimentInfo,
    FlagInfo,
    GroupInfo,
    HoldoutInfo,
    RuleEntry,
    VariableInfo,
    VariationInfo,
    allocation,
    placed,
    variation,
)
from .loader import Steps, run_at_once, run_in_steps, sections, validate_at_once, validate_in_steps
from .variables import typed_value, variable_set

__all__ = [
    "EMPTY_EXPERIMENT",
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
        return usages.get(variable.id, variable.value)


def _holdout(h: df.Holdout, *, local: bool) -> HoldoutInfo:
    variations = [variation(v) for v in h.get("variations", ())]
    conditions = h.get("audienceConditions")
    return HoldoutInfo(
        id=h["id"],
        key=h["key"],
        status=h["status"],
        variations_by_id={v.id: v for v in variations},
        allocation=allocation(h.get("trafficAllocation", [])),
        audience_tree=conditions if conditions is not None else tuple(h.get("audienceIds", ())),
        included_rules=tuple(h.get("includedRules") or ()) if local else (),
        exclude_targeted_deliveries=h.get("excludeTargetedDeliveries", False),
    )


def _load_conditions(audience: df.Audience, index: int) -> Any:
    """A legacy audience's conditions: JSON text, parsed and checked here."""
    conditions = audience["conditions"]
    if not isinstance(conditions, str):
        where = f"audiences[{index}].conditions"
        raise InvalidDatafileError(f"{where}: expected a JSON string, got {type(conditions).__name__}")
    try:
        tree = json.loads(conditions)
    except RecursionError:
        raise InvalidDatafileError(f"audiences[{index}].conditions: {TOO_DEEP}") from None
    except ValueError as exc:
        raise InvalidDatafileError(f"audiences[{index}].conditions: invalid JSON ({exc})") from exc
    try:
        return bounded_tree(tree)
    except ValueError:
        raise InvalidDatafileError(f"audiences[{index}].conditions: {TOO_DEEP}") from None


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
        if str.isascii(data):  # nothing to check (and no copy of a megabyte made to find that out)
            return data
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
    for a in typed_audiences:
        tree = audiences[a["id"]] = a["conditions"]  # lists made tuples by its shape (df.TypedAudience)
        # Listed with the tree: the projection writes it as JSON text when it is built (a string is written now).
        listed_audiences.append((a["id"], a.get("name", ""), json.dumps(tree) if type(tree) is str else tree))
        yield
    for index, a in enumerate(d["audiences"]):
        if a["id"] not in typed_ids:
            audiences[a["id"]] = _load_conditions(a, index)
            if a["id"] != "$opt_dummy_audience":
                listed_audiences.append((a["id"], a.get("name", ""), a["conditions"]))
        # One that a typed audience replaces is never read, as in the official SDK (which accepts any value there).
        yield

    groups = {g["id"]: GroupInfo(g["id"], g["policy"], allocation(g["trafficAllocation"])) for g in d["groups"]}

    # Rollout rules that belong to flags with a feature-rollout ("fr") experiment need the flag's
    # "everyone else" variation appended; find those first.
    feature_flags = d.get("featureFlags", [])
    rollouts = {r["id"]: r for r in d.get("rollouts", [])}
    fr_extra: dict[str, VariationInfo] = {}
    for flag in feature_flags:
        rollout = rollouts.get(flag.get("rolloutId", "")) if flag.get("rolloutId") else None
        last = rollout.get("experiments") if rollout is not None else None
        ev = last[-1][2] if last else None
        if ev is None:
            continue
        enabled = bool(ev.feature_enabled)
        fr_extra_var = VariationInfo(ev.id, ev.key, enabled, enabled)
        for exp_id in flag.get("experimentIds", ()):
            fr_extra[exp_id] = fr_extra_var
    yield

    # The same overwrite order as the official config: top-level experiments, rollout rules, group members.
    raw_experiments: dict[str, tuple[RuleEntry, GroupInfo | None]] = {}
    for e in d["experiments"]:
        raw_experiments[e[0].id] = (e, None)
    for r in d.get("rollouts", []):
        for e in r.get("experiments", ()):
            raw_experiments[e[0].id] = (e, None)
    listed_experiment_ids = [e[0].id for e in d["experiments"]]
    for g in d["groups"]:
        for e in g["experiments"]:
            raw_experiments[e[0].id] = (e, groups[g["id"]])
            listed_experiment_ids.append(e[0].id)
    yield

    experiments_by_id: dict[str, ExperimentInfo] = {}
    #: variation id -> {variable id: value}, the last rule of an id winning as in ``experiments_by_id``
    variable_usages: dict[str, dict[str, str]] = {}
    for exp_id, ((rule, usages, _), group) in raw_experiments.items():
        extra = fr_extra.get(exp_id) if rule.type == "fr" else None
        experiments_by_id[exp_id] = rule if group is None and extra is None else placed(rule, group, extra)
        variable_usages.update(usages)
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
        variables: dict[str, VariableInfo] = flag.get("variables", {})
        rules: list[ExperimentInfo] = []
        experiment_ids = flag.get("experimentIds", [])
        has_cmab = False
        for exp_id in experiment_ids:
            experiment_flags[exp_id] = flag_key
            test = experiments_by_id.get(exp_id)
            if test is None:
                raise InvalidDatafileError(
                    f'featureFlags[key={flag_key}].experimentIds: experiment "{exp_id}" is not in the datafile'
                )
            rules.append(test)
            has_cmab = has_cmab or bool(test.cmab)
        rollout_rules: tuple[ExperimentInfo, ...] = ()
        rollout_id = flag.get("rolloutId", "")
        if rollout_id:
            rollout = rollouts.get(rollout_id)
            if rollout is None:
                raise InvalidDatafileError(
                    f'featureFlags[key={flag_key}].rolloutId: rollout "{rollout_id}" is not in the datafile'
                )
            rollout_rules = tuple([experiments_by_id[e[0].id] for e in rollout.get("experiments", ())])
            rules.extend(rollout_rules)
        by_id: dict[str, VariationInfo] = {}
        for rule in rules:
            for variation_id, info in rule.variations_by_id.items():  # keyed by their ids
                if variation_id not in by_id:
                    by_id[variation_id] = info
        flags[flag_key] = FlagInfo(
            id=flag["id"],
            key=flag_key,
            experiment_ids=tuple(experiment_ids),
            rollout_id=rollout_id,
            variables=variables,
            rollout_rules=rollout_rules,
            variations_by_id=by_id,
            has_cmab=has_cmab,
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
