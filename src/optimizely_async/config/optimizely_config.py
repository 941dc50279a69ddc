"""OptimizelyConfig: the read-only projection of a datafile that ``get_optimizely_config()`` returns.

The classes carry the official SDK's attribute names, and ``optimizely_config_for`` derives their content
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
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._logging import sdk_logger
from .entities import OptimizelyVariable
from .loader import STEP_BUDGET, Steps, run_at_once
from .project_config import ExperimentInfo, FlagInfo, ProjectConfig, VariationInfo
from .slots import slot_setters

__all__ = [
    "OptimizelyAttribute",
    "OptimizelyAudience",
    "OptimizelyConfig",
    "OptimizelyEvent",
    "OptimizelyExperiment",
    "OptimizelyFeature",
    "OptimizelyVariable",
    "OptimizelyVariation",
    "ProjectionBuild",
    "optimizely_config_for",
]

_log = sdk_logger()

T = TypeVar("T")

DUMMY_AUDIENCE_ID = "$opt_dummy_audience"
_OPERATORS = ("and", "or", "not")
#: How a flat list of audiences joins them, by its operator.
_JOINERS = {"and": " AND ", "or": " OR ", "not": " NOT "}

#: Objects a build step makes at most, about (a step ends after the flag or experiment that passes it).
STEP_OBJECTS = 100


# The classes a projection has thousands of are filled by their slots' setters (see .slots); OptimizelyVariable
# (the config's own variable objects, shown as they are where a variation keeps the defaults) is in .entities.


@dataclass(frozen=True, slots=True, eq=False, init=False)
class OptimizelyVariation:
    id: str
    key: str
    #: ``None`` when the datafile leaves ``featureEnabled`` out (legacy A/B experiments).
    feature_enabled: bool | None
    variables_map: Mapping[str, OptimizelyVariable]

    def __init__(
        self, id: str, key: str, feature_enabled: bool | None, variables_map: Mapping[str, OptimizelyVariable]
    ) -> None:
        set_id, set_key, set_enabled, set_variables = _VARIATION_SETTERS
        set_id(self, id)
        set_key(self, key)
        set_enabled(self, feature_enabled)
        set_variables(self, variables_map)


@dataclass(frozen=True, slots=True, eq=False, init=False)
class OptimizelyExperiment:
    id: str
    key: str
    variations_map: Mapping[str, OptimizelyVariation]
    #: The audience conditions with names, e.g. ``'"us" OR "female"'``; empty without conditions.
    audiences: str = ""

    def __init__(
        self, id: str, key: str, variations_map: Mapping[str, OptimizelyVariation], audiences: str = ""
    ) -> None:
        set_id, set_key, set_variations, set_audiences = _EXPERIMENT_SETTERS
        set_id(self, id)
        set_key(self, key)
        set_variations(self, variations_map)
        set_audiences(self, audiences)


_VARIATION_SETTERS = slot_setters(OptimizelyVariation)
_EXPERIMENT_SETTERS = slot_setters(OptimizelyExperiment)


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
    #: The datafile as the config keeps it (a polled one as bytes: decoded on use, not held twice).
    _datafile: str | bytes = field(default="", repr=False)
    sdk_key: str = ""
    environment_key: str = ""
    attributes: tuple[OptimizelyAttribute, ...] = ()
    events: tuple[OptimizelyEvent, ...] = ()
    audiences: tuple[OptimizelyAudience, ...] = ()

    def get_datafile(self) -> str:
        """The datafile this projection was built from, as the JSON string the SDK received."""
        text = self._datafile
        return text if isinstance(text, str) else text.decode("utf-8")


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
        if isinstance(first, (list, tuple)):  # the official SDK raises TypeError here; render the inner tree
            return _stringify(first, names)
        return "" if _is_operator(first) else _quoted(first, names)
    second = conditions[1]
    if n == 2 and _is_operator(first) and not isinstance(second, (list, tuple)) and not _is_operator(second):
        return ("NOT " if first == "not" else "") + _quoted(second, names)
    out = ""
    operand = "OR"
    for i, item in enumerate(conditions):
        if _is_operator(item):
            operand = item.upper()
        elif isinstance(item, (list, tuple)):
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


def _flat(conditions: Sequence[Any], quoted: Mapping[str, str]) -> str | None:
    """The common shape at a fraction of the cost: an operator, then audience ids (``("or", "1", "2")``). For it
    :func:`_stringify` renders the names quoted and joined by the operator (``NOT`` before a single one); None
    for any other shape. ``quoted``: each audience id's name in double quotes (:func:`_quoted_names`)."""
    if len(conditions) < 2:
        return None
    first = conditions[0]
    joiner = _JOINERS.get(first) if type(first) is str else None
    if joiner is None:
        return None
    parts = []
    for item in conditions[1:]:
        if type(item) is not str or item in _JOINERS:
            return None
        part = quoted.get(item)
        parts.append(f'"{item}"' if part is None else part)
    if len(parts) == 1:
        return "NOT " + parts[0] if first == "not" else parts[0]
    return joiner.join(parts)


def _quoted_names(names: Mapping[str, str]) -> dict[str, str]:
    return {audience_id: f'"{name}"' for audience_id, name in names.items()}


def _render(conditions: Any, names: Mapping[str, str], quoted: Mapping[str, str]) -> str:
    """An experiment's audiences string: the flat shape quickly (:func:`_flat`), any other by :func:`_stringify`.
    A string is walked character by character, as the official SDK does; other shapes render as ""."""
    if type(conditions) is tuple or type(conditions) is list:
        flat = _flat(conditions, quoted)
        if flat is not None:
            return flat
    return _stringify(conditions, names) if isinstance(conditions, (list, tuple, str)) else ""


def _audiences_string(conditions: Any, names: Mapping[str, str]) -> str:
    """:func:`_render` of one tree, on its own."""
    return _render(conditions, names, _quoted_names(names))


# ------------------------------------------------------------------------------------------------- builder


class _Builder:
    """Builds the projection from the config's indexes: no JSON is parsed or validated again, and what shows
    the same values is shared (a flag's default variables: one map for every variation that shows them; one
    audiences string for identical conditions). The loops are written out (no helper method per variation or
    rule): in a build of thousands of small objects, calls are a large part of the cost."""

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        self.flags = config.flags_by_key
        self.names: dict[str, str] = {}
        self.quoted: dict[str, str] = {}
        # Per flag key: its variables at their default values, by key (the feature's variables_map, shared by
        # every variation that shows the defaults) and, made on first use, by id.
        self.defaults: dict[str, dict[str, OptimizelyVariable]] = {}
        self.defaults_by_id: dict[str, dict[str, OptimizelyVariable]] = {}
        # Per feature-rollout experiment id: the "everyone else" variations of the flags that list it.
        self.extra: dict[str, list[VariationInfo]] = {}
        # The audiences strings of flat conditions (a tuple of strings), by the conditions.
        self.rendered: dict[Any, str] = {}

    def _prepare(self) -> Steps[None]:
        """The look-ups the experiments need: audience names, each flag's default variables, and the
        "everyone else" variation a feature-rollout (``type: "fr"``) experiment also offers."""
        config = self.config
        self.names = {audience_id: name for audience_id, name, _ in config.listed_audiences}
        self.quoted = _quoted_names(self.names)
        experiments = config.experiments_by_id
        defaults = self.defaults
        made = 0
        for key, flag in self.flags.items():
            defaults[key] = dict(flag.variables)  # the config's objects; a map of the projection's own
            for exp_id in flag.experiment_ids:
                exp = experiments.get(exp_id)
                if exp is not None and exp.type == "fr":
                    self._everyone_else(flag, exp_id)
            made += 1  # one map: its variables are the config's, not made here
            if made >= STEP_OBJECTS:
                made = 0
                yield

    def _everyone_else(self, flag: FlagInfo, exp_id: str) -> None:
        rules = flag.rollout_rules
        if rules and rules[-1].variations_by_id:
            ev = next(iter(rules[-1].variations_by_id.values()))
            enabled = bool(ev.feature_enabled)
            self.extra.setdefault(exp_id, []).append(VariationInfo(ev.id, ev.key, enabled, enabled))

    def _variations(self, exp: ExperimentInfo) -> Iterable[VariationInfo]:
        """The variations the projection lists for ``exp``: its own, and a feature rollout's extra ones."""
        variations: Iterable[VariationInfo] = exp.variations_by_id.values()
        if exp.fr_extra:
            variations = tuple(variations)[:-1]
        extra = self.extra.get(exp.id)
        return [*variations, *extra] if extra else variations

    def _audiences(self, exp: ExperimentInfo) -> str:
        """The audiences string of ``exp``, which has ``audienceConditions``; flat ones rendered once each."""
        tree = exp.audience_tree
        try:
            text = self.rendered.get(tree)
        except TypeError:  # a condition dict in the tree: not hashable, and not flat
            return _render(tree, self.names, self.quoted)
        if text is None:
            text = _flat(tree, self.quoted) if type(tree) is tuple else None
            if text is None:  # not flat: not kept either (1, 1.0 and True are equal keys but render apart)
                return _render(tree, self.names, self.quoted)
            self.rendered[tree] = text  # strings only: equal keys render alike
        return text

    def _experiments(self, out_by_key: dict[str, OptimizelyExperiment], out_by_id: dict[str, Any]) -> Steps[None]:
        """The top-level and grouped experiments: a feature test's enabled variations show their own values."""
        config = self.config
        experiments, flag_of, usages_of = config.experiments_by_id, config.experiment_flags, config.variable_usages
        all_defaults, all_by_id, extra = self.defaults, self.defaults_by_id, self.extra
        variable, variation = OptimizelyVariable, OptimizelyVariation
        made = 0
        for exp_id in config.listed_experiment_ids:
            exp = experiments[exp_id]
            flag_key = flag_of.get(exp_id)
            defaults = all_defaults.get(flag_key) if flag_key is not None else None
            variations_map: dict[str, OptimizelyVariation] = {}
            listed = self._variations(exp) if exp.fr_extra or exp_id in extra else exp.variations_by_id.values()
            for v in listed:
                variables: Mapping[str, OptimizelyVariable]
                if defaults is None:
                    variables = {}
                elif v.listed_enabled and (usages := usages_of.get(v.id)):
                    by_id = all_by_id.get(flag_key)  # type: ignore[arg-type]
                    if by_id is None:
                        by_id = all_by_id[flag_key] = {d.id: d for d in defaults.values()}  # type: ignore[index]
                    variables = dict(defaults)
                    for variable_id, value in usages.items():
                        var = by_id.get(variable_id)
                        if var is not None and var.value != value:  # else the (equal) default object
                            variables[var.key] = variable(variable_id, var.key, var.type, value)
                    made += len(usages)
                else:
                    variables = defaults
                variations_map[v.key] = variation(v.id, v.key, v.listed_enabled, variables)
            if exp.key in out_by_key:
                _log.warning("Duplicate experiment keys found in datafile: %s", exp.key)
            audiences = self._audiences(exp) if exp.has_conditions else ""
            out_by_key[exp.key] = out_by_id[exp_id] = OptimizelyExperiment(exp_id, exp.key, variations_map, audiences)
            made += len(variations_map) + 1
            if made >= STEP_OBJECTS:
                made = 0
                yield

    def _features(self, experiments_by_id: Mapping[str, OptimizelyExperiment], out: dict[str, Any]) -> Steps[None]:
        """The flags, with their delivery rules, whose variations always show the flag's default values (as in
        the official SDK)."""
        variation, experiment, audiences = OptimizelyVariation, OptimizelyExperiment, self._audiences
        extra, by_id = self.extra, self.defaults_by_id
        made = 0
        for key, flag in self.flags.items():
            defaults = self.defaults[key]
            delivery = []
            for rule in flag.rollout_rules:
                variations_map = {}
                listed = self._variations(rule) if rule.fr_extra or rule.id in extra else rule.variations_by_id.values()
                for v in listed:
                    variations_map[v.key] = variation(v.id, v.key, v.listed_enabled, defaults)
                text = audiences(rule) if rule.has_conditions else ""
                delivery.append(experiment(rule.id, rule.key, variations_map, text))
            # The official SDK raises KeyError on an id that is not a top-level or grouped experiment.
            rules = []
            experiments_map = {}
            for exp_id in flag.experiment_ids:
                exp = experiments_by_id.get(exp_id)
                if exp is not None:
                    rules.append(exp)
                    experiments_map[exp.key] = exp
            out[key] = OptimizelyFeature(flag.id, key, experiments_map, defaults, tuple(delivery), tuple(rules))
            by_id.pop(key, None)  # only experiments used it: freed a flag at a time, not all in the last step
            made += 2 * len(delivery) + 1
            if made >= STEP_OBJECTS:
                made = 0
                yield

    def build(self) -> OptimizelyConfig:
        return run_at_once(self.steps())

    def steps(self) -> Steps[OptimizelyConfig]:
        """The build: a step ends once it has made about :data:`STEP_OBJECTS` objects and at the end of each
        part; a single flag or experiment is never split."""
        yield from self._prepare()
        yield
        experiments_by_key: dict[str, OptimizelyExperiment] = {}
        experiments_by_id: dict[str, OptimizelyExperiment] = {}
        yield from self._experiments(experiments_by_key, experiments_by_id)
        yield
        features: dict[str, OptimizelyFeature] = {}
        yield from self._features(experiments_by_id, features)
        yield
        # The look-ups are done with: freed here, in a step of their own, not with the projection's last step.
        del experiments_by_id
        self.defaults, self.defaults_by_id, self.rendered = {}, {}, {}
        yield
        config = self.config
        attributes: list[OptimizelyAttribute] = []
        yield from _in_chunks(OptimizelyAttribute, config.listed_attributes, attributes)
        events: list[OptimizelyEvent] = []
        yield from _in_chunks(OptimizelyEvent, config.listed_events, events)
        audiences: list[OptimizelyAudience] = []
        yield from _in_chunks(_audience, config.listed_audiences, audiences)
        return OptimizelyConfig(
            revision=config.revision,
            experiments_map=experiments_by_key,
            features_map=features,
            _datafile=config.raw,
            sdk_key=config.sdk_key or "",
            environment_key=config.environment_key or "",
            attributes=tuple(attributes),
            events=tuple(events),
            audiences=tuple(audiences),
        )


def _audience(audience_id: str, name: str, conditions: Any) -> OptimizelyAudience:
    """A typed audience is listed with its condition tree, written as JSON text here (only when the projection
    is built, not at every load); a legacy one with its text as the datafile gives it."""
    return OptimizelyAudience(audience_id, name, conditions if type(conditions) is str else json.dumps(conditions))


def _in_chunks(make: Callable[..., T], items: Sequence[Sequence[Any]], out: list[T]) -> Steps[None]:
    """Append ``make(*item)`` for each of ``items`` to ``out``, :data:`STEP_OBJECTS` items per step."""
    for start in range(0, len(items), STEP_OBJECTS):
        out.extend([make(*item) for item in items[start : start + STEP_OBJECTS]])
        yield


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
    """The projection of ``config``, built at once on first use and then returned as the same object."""
    return ProjectionBuild(config).finish()


class ProjectionBuild:
    """The projection of one config, built a step at a time by whoever needs it first.

    A client makes one for each config it uses and runs the steps on the event loop, about 0.5 ms of them
    between two checkpoints (:meth:`run_in_steps`): a static datafile's while the client is entered, a polled
    revision's before the switch. A caller that needs the projection before that is over (:meth:`finish`: a
    client not started yet) runs only the steps that are left. Either way each step runs once, and the
    result is the one object :func:`optimizely_config_for` also returns for this config. A build of a config
    the client has replaced is simply dropped, with whatever it had done.

    Thread-safe: ``SyncOptimizely`` calls :meth:`finish` in its callers' threads while its loop thread may be
    running the steps. Steps run under the build's lock, and the loop never waits for it: when a caller holds
    it, the loop leaves the rest to that caller.
    """

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        #: Steps run so far by either path (tests and the bench read it).
        self.steps_run = 0
        self._steps: Steps[OptimizelyConfig] | None = None
        self._result: OptimizelyConfig | None = None
        # Reentrant: a log handler that asks for the projection inside a step gets an error, not a deadlock.
        self._lock = threading.RLock()

    @property
    def done(self) -> bool:
        return self._result is not None

    def finish(self) -> OptimizelyConfig:
        """The projection, after running the steps not run yet (none once the build is done)."""
        with self._lock:
            result = self._step()
            while result is None:
                result = self._step()
            return result

    async def run_in_steps(self, keep_going: Callable[[], bool] = lambda: True, budget: float = STEP_BUDGET) -> None:
        """Run the steps on the event loop, a checkpoint after every ``budget`` seconds of them, while
        ``keep_going()`` holds. A cancellation keeps what is done for :meth:`finish`."""
        from anyio.lowlevel import checkpoint  # config/ stays importable without the async shell

        clock = time.perf_counter
        while self._result is None and keep_going():
            if not self._lock.acquire(blocking=False):
                return  # another thread is finishing the build
            try:
                deadline = clock() + budget
                while self._step() is None and clock() < deadline:
                    pass
            finally:
                self._lock.release()
            if self._result is None:
                await checkpoint()

    def _step(self) -> OptimizelyConfig | None:
        """One step (call it with the lock held); the projection once it is complete."""
        if self._result is not None:
            return self._result
        if self._steps is None:
            with _lock:
                self._result = _cached(self.config)
            if self._result is not None:
                return self._result
            self._steps = _Builder(self.config).steps()
        self.steps_run += 1
        try:
            next(self._steps)
        except StopIteration as stop:
            self._steps = None
            with _lock:
                cached = _cached(self.config)
                self._result = cached if cached is not None else _store(self.config, stop.value)
            return self._result
        except BaseException:
            self._steps = None  # a generator that raised cannot go on: the next attempt starts over
            raise
        return None


def _cached(config: ProjectConfig) -> OptimizelyConfig | None:
    entry = _cache.get(id(config))
    return entry[1] if entry is not None and entry[0]() is config else None


def _store(config: ProjectConfig, result: OptimizelyConfig) -> OptimizelyConfig:
    """Cache ``result`` as the projection of ``config`` (call with ``_lock`` held)."""
    key = id(config)
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
