"""OptimizelyConfig: the read-only projection of a datafile that ``get_optimizely_config()`` returns.

The classes carry the official SDK's attribute names, and :func:`optimizely_config_for` derives their content
with the official rules, quirks included, so code written against the official SDK reads the same values:

* ``experiments_map`` holds top-level and grouped experiments, not rollout rules; on a duplicate key the later
  experiment wins (a warning is logged).
* An experiment's ``audiences`` string is rendered from ``audienceConditions`` only (never ``audienceIds``),
  with audience ids replaced by names, e.g. ``'"us" OR ("female" AND "adult")'``.
* ``audiences`` lists the typed audiences first (conditions re-encoded with ``json.dumps``), then the legacy
  ones that no typed audience replaces, leaving out ``$opt_dummy_audience``.
* A variation's ``variables_map`` holds every flag variable: the default values, overridden by the
  variation's own values when it is a feature test's variation with ``featureEnabled`` true. Delivery-rule
  (rollout) variations always show the defaults, as in the official SDK.
* A ``string`` variable with subType ``json`` has type ``json``; a feature-rollout (``type: "fr"``)
  experiment also lists the flag's "everyone else" variation.

Differences from the official classes: the objects are frozen (slotted dataclasses), lists are tuples, and
maps are plain dicts that must be treated as read-only, since one projection is shared by every caller.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from .._logging import sdk_logger
from . import datafile as df
from .project_config import ProjectConfig

__all__ = [
    "OptimizelyAttribute",
    "OptimizelyAudience",
    "OptimizelyConfig",
    "OptimizelyEvent",
    "OptimizelyExperiment",
    "OptimizelyFeature",
    "OptimizelyVariable",
    "OptimizelyVariation",
    "optimizely_config_for",
]

_log = sdk_logger()

DUMMY_AUDIENCE_ID = "$opt_dummy_audience"
_OPERATORS = ("and", "or", "not")


@dataclass(frozen=True, slots=True)
class OptimizelyVariable:
    id: str
    key: str
    #: boolean, double, integer, string or json.
    type: str
    #: The value as the datafile writes it (a string).
    value: str


@dataclass(frozen=True, slots=True, eq=False)
class OptimizelyVariation:
    id: str
    key: str
    #: ``None`` when the datafile leaves ``featureEnabled`` out (legacy A/B experiments).
    feature_enabled: bool | None
    variables_map: Mapping[str, OptimizelyVariable]


@dataclass(frozen=True, slots=True, eq=False)
class OptimizelyExperiment:
    id: str
    key: str
    variations_map: Mapping[str, OptimizelyVariation]
    #: The audience conditions with names, e.g. ``'"us" OR "female"'``; empty without conditions.
    audiences: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class OptimizelyFeature:
    id: str
    key: str
    #: Deprecated in the official SDK: use ``experiment_rules`` and ``delivery_rules``.
    experiments_map: Mapping[str, OptimizelyExperiment]
    variables_map: Mapping[str, OptimizelyVariable]
    delivery_rules: tuple[OptimizelyExperiment, ...] = ()
    experiment_rules: tuple[OptimizelyExperiment, ...] = ()


@dataclass(frozen=True, slots=True)
class OptimizelyAttribute:
    id: str
    key: str


@dataclass(frozen=True, slots=True)
class OptimizelyEvent:
    id: str
    key: str
    experiment_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OptimizelyAudience:
    id: str
    name: str
    #: The condition tree as a JSON string.
    conditions: str


@dataclass(frozen=True, slots=True, eq=False)
class OptimizelyConfig:
    revision: str
    #: Experiments of legacy projects by key; with flags, keys may repeat across flags and the last one wins.
    experiments_map: Mapping[str, OptimizelyExperiment]
    features_map: Mapping[str, OptimizelyFeature]
    _datafile: str = field(default="", repr=False)
    sdk_key: str = ""
    environment_key: str = ""
    attributes: tuple[OptimizelyAttribute, ...] = ()
    events: tuple[OptimizelyEvent, ...] = ()
    audiences: tuple[OptimizelyAudience, ...] = ()

    def get_datafile(self) -> str:
        """The datafile this projection was built from, as the JSON string the SDK received."""
        return self._datafile


# ------------------------------------------------------------------------------------------ audiences string


def _is_operator(item: object) -> bool:
    return isinstance(item, str) and item in _OPERATORS


def _name(item: object, names: Mapping[str, str]) -> str | None:
    if isinstance(item, str):
        return names.get(item, item)
    return None if item is None else json.dumps(item)


def _quoted(item: object, names: Mapping[str, str]) -> str:
    return f'"{_name(item, names) or ""}"'


def _stringify(conditions: Sequence[Any], names: Mapping[str, str]) -> str:
    """Render an audienceConditions tree with names, following the official layout rules exactly."""
    n = len(conditions)
    if n == 0:
        return ""
    first = conditions[0]
    if n == 1:
        if isinstance(first, list):  # the official SDK raises TypeError here; render the inner tree
            return _stringify(first, names)
        return "" if _is_operator(first) else _quoted(first, names)
    second = conditions[1]
    if n == 2 and _is_operator(first) and not isinstance(second, list) and not _is_operator(second):
        return ("NOT " if first == "not" else "") + _quoted(second, names)
    out = ""
    operand = "OR"
    for i, item in enumerate(conditions):
        if _is_operator(item):
            operand = item.upper()
        elif isinstance(item, list):
            inner = _stringify(item, names)
            out += f"({inner}) " if i + 1 < n else f"{operand} ({inner})"
        else:
            name = _name(item, names)
            if name is None:
                continue
            if i + 1 < n - 1:
                out += f'"{name}" {operand} '
            elif i + 1 == n:
                out += f'{operand} "{name}"'
            else:
                out += f'"{name}" '
    return out


def _audiences_string(conditions: Any, names: Mapping[str, str]) -> str:
    # A string is walked character by character, as the official SDK does; other shapes render as "".
    return _stringify(conditions, names) if isinstance(conditions, (list, str)) else ""


# ------------------------------------------------------------------------------------------------- builder


class _Variation(NamedTuple):
    id: str
    key: str
    feature_enabled: bool | None
    usages: Sequence[df.VariableUsage]


class _Builder:
    def __init__(self, config: ProjectConfig) -> None:
        d = self.d = config.datafile
        self.config = config
        self.audiences = self._audiences()
        self.names = {a.id: a.name for a in self.audiences}

        # Only the last flag of each key has its json variables retyped (the official SDK mutates those).
        last_by_key = {f.key: f for f in d.featureFlags}
        retyped = {id(f) for f in last_by_key.values()}
        self.vars_by_flag_key: dict[str, dict[str, OptimizelyVariable]] = {}
        self.vars_by_flag_key_id: dict[str, dict[str, OptimizelyVariable]] = {}
        self.vars_by_flag_id: dict[str, dict[str, OptimizelyVariable]] = {}
        self.flag_of_experiment: dict[str, df.FeatureFlag] = {}
        for f in d.featureFlags:
            for exp_id in f.experimentIds:
                self.flag_of_experiment[exp_id] = f
            by_key: dict[str, OptimizelyVariable] = {}
            by_id: dict[str, OptimizelyVariable] = {}
            for v in f.variables:
                is_json = id(f) in retyped and v.type == "string" and v.subType == "json"
                var = OptimizelyVariable(v.id, v.key, "json" if is_json else v.type, v.defaultValue)
                by_key[v.key] = var
                by_id[v.id] = var
            self.vars_by_flag_id[f.id] = by_key
            self.vars_by_flag_key[f.key] = by_key
            self.vars_by_flag_key_id[f.key] = by_id

        # A feature-rollout experiment also offers the flag's "everyone else" variation.
        by_id_exp: dict[str, df.Experiment] = {e.id: e for e in d.experiments}
        rollouts = {r.id: r for r in d.rollouts}
        for r in rollouts.values():
            by_id_exp.update((e.id, e) for e in r.experiments)
        for g in {g.id: g for g in d.groups}.values():
            by_id_exp.update((e.id, e) for e in g.experiments)
        self.extra: dict[int, list[_Variation]] = {}
        for f in last_by_key.values():
            rollout = rollouts.get(f.rolloutId) if f.rolloutId else None
            if rollout is None or not rollout.experiments or not rollout.experiments[-1].variations:
                continue
            ev = rollout.experiments[-1].variations[0]
            everyone_else = _Variation(ev.id, ev.key, bool(ev.featureEnabled), ev.variables)
            for exp_id in f.experimentIds:
                exp = by_id_exp.get(exp_id)
                if exp is not None and exp.type == "fr":
                    self.extra.setdefault(id(exp), []).append(everyone_else)

    def _audiences(self) -> tuple[OptimizelyAudience, ...]:
        out = [OptimizelyAudience(a.id, a.name, json.dumps(a.conditions)) for a in self.d.typedAudiences]
        typed = {a.id for a in self.d.typedAudiences}
        out.extend(
            OptimizelyAudience(a.id, a.name, a.conditions)
            for a in self.d.audiences
            if a.id not in typed and a.id != DUMMY_AUDIENCE_ID
        )
        return tuple(out)

    def _variables(
        self, exp: df.Experiment, variation: _Variation, feature_id: str | None
    ) -> dict[str, OptimizelyVariable]:
        flag = self.flag_of_experiment.get(exp.id)
        if feature_id:
            return dict(self.vars_by_flag_id[feature_id])
        if flag is None:
            return {}
        out = dict(self.vars_by_flag_key[flag.key])
        if variation.feature_enabled:
            by_id = self.vars_by_flag_key_id[flag.key]
            for usage in variation.usages:
                var = by_id.get(usage.id)
                if var is not None:
                    out[var.key] = replace(out[var.key], value=usage.value)
        return out

    def experiment(self, exp: df.Experiment, feature_id: str | None = None) -> OptimizelyExperiment:
        variations = [
            _Variation(v.id, v.key, v.featureEnabled if "featureEnabled" in v.model_fields_set else None, v.variables)
            for v in exp.variations
        ]
        variations.extend(self.extra.get(id(exp), ()))
        variations_map = {
            v.key: OptimizelyVariation(v.id, v.key, v.feature_enabled, self._variables(exp, v, feature_id))
            for v in variations
        }
        return OptimizelyExperiment(
            exp.id, exp.key, variations_map, _audiences_string(exp.audienceConditions, self.names)
        )

    def build(self) -> OptimizelyConfig:
        d = self.d
        experiments_by_key: dict[str, OptimizelyExperiment] = {}
        experiments_by_id: dict[str, OptimizelyExperiment] = {}
        for exp in [*d.experiments, *(e for g in d.groups for e in g.experiments)]:
            if exp.key in experiments_by_key:
                _log.warning("Duplicate experiment keys found in datafile: %s", exp.key)
            experiments_by_key[exp.key] = experiments_by_id[exp.id] = self.experiment(exp)

        features: dict[str, OptimizelyFeature] = {}
        for f in d.featureFlags:
            rollout = next((r for r in d.rollouts if r.id == f.rolloutId), None)
            delivery = tuple(self.experiment(e, f.id) for e in rollout.experiments) if rollout else ()
            # The official SDK raises KeyError on an id that is not a top-level or grouped experiment.
            rules = tuple(experiments_by_id[i] for i in f.experimentIds if i in experiments_by_id)
            features[f.key] = OptimizelyFeature(
                id=f.id,
                key=f.key,
                experiments_map={e.key: e for e in rules},
                variables_map=self.vars_by_flag_key[f.key],
                delivery_rules=delivery,
                experiment_rules=rules,
            )

        config = self.config
        return OptimizelyConfig(
            revision=config.revision,
            experiments_map=experiments_by_key,
            features_map=features,
            _datafile=config.raw.decode("utf-8"),
            sdk_key=config.sdk_key or "",
            environment_key=config.environment_key or "",
            attributes=tuple(OptimizelyAttribute(a.id, a.key) for a in d.attributes),
            events=tuple(OptimizelyEvent(e.id, e.key, tuple(e.experimentIds)) for e in d.events),
            audiences=self.audiences,
        )


# --------------------------------------------------------------------------------------------------- cache

#: id(config) -> (a callable returning the config while it lives, its projection)
_cache: dict[int, tuple[Callable[[], ProjectConfig | None], OptimizelyConfig]] = {}
#: How many projections of configs that cannot be weakly referenced are kept (strongly) at most.
_STRONG_MAX = 4
_strong_keys: list[int] = []
_lock = threading.Lock()


def _forgetter(key: int) -> Callable[[weakref.ref[ProjectConfig]], None]:
    def forget(ref: weakref.ref[ProjectConfig]) -> None:  # runs when the config is collected; takes no lock
        entry = _cache.get(key)
        if entry is not None and entry[0] is ref:
            _cache.pop(key, None)

    return forget


def optimizely_config_for(config: ProjectConfig) -> OptimizelyConfig:
    """The projection of ``config``, built on first use and then returned as the same object."""
    key = id(config)
    with _lock:
        entry = _cache.get(key)
        if entry is not None and entry[0]() is config:
            return entry[1]
        result = _Builder(config).build()
        holder: Callable[[], ProjectConfig | None]
        try:
            holder = weakref.ref(config, _forgetter(key))
        except TypeError:  # not weakly referenceable: keep the last few strongly, in a bounded list
            holder = (lambda c: lambda: c)(config)
            if key in _strong_keys:
                _strong_keys.remove(key)
            _strong_keys.append(key)
            while len(_strong_keys) > _STRONG_MAX:
                _cache.pop(_strong_keys.pop(0), None)
        _cache[key] = (holder, result)
        return result
