"""A test kit for your own tests: build datafiles in a few lines, record events instead of sending them.

* :class:`DatafileBuilder` writes the datafile JSON the Optimizely CDN serves for a Feature Experimentation
  project (version 4: flags with variables, A/B tests and targeted deliveries as flag rules, typed audiences,
  events), so the client, and the official SDK, read it like a real one::

      datafile = (
          DatafileBuilder()
          .audience("beta", plan="premium")
          .flag("kit_flag", variables={"title": "Hello", "limit": 3})
          .rollout(enabled=True, variables={"title": "Welcome"}, audience="beta")
          .build()
      )

* :class:`RecordingDispatcher` is an ``event_dispatcher=`` that keeps every request it is given, reports it
  delivered, and reads the impressions and conversions back out as :class:`RecordedEvent` values.
* :func:`update_datafile` swaps the datafile of a running client (the way a new revision from the CDN
  would), so a long-lived client (an app's) can be steered from one test to the next.

Nothing here touches the network. Ids are derived from keys (a flag's id from its key, a rule's from its flag
and key ...), so adding a flag does not move users between the variations of another: a given user lands in
the same variation of a rule every time the same builder calls are made.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .errors import ConfigurationError
from .events.dispatcher import DispatchResult, EventRequest

if TYPE_CHECKING:
    from .client import AsyncOptimizely

__all__ = ["DatafileBuilder", "RecordedEvent", "RecordingDispatcher", "update_datafile"]

#: The match types an audience condition can use (``("gt", 17)``); a plain value means ``exact``.
MATCH_TYPES: Final = frozenset(
    {"exact", "exists", "substring", "gt", "ge", "lt", "le"} | {f"semver_{op}" for op in ("eq", "lt", "le", "gt", "ge")}
)
_DUMMY_CONDITIONS: Final = json.dumps(
    ["or", {"match": "exact", "name": "$opt_dummy_attribute", "type": "custom_attribute", "value": "$opt_dummy_value"}]
)
_DUMMY_AUDIENCE: Final = {
    "id": "$opt_dummy_audience",
    "name": "Optimizely-Generated Audience for Backwards Compatibility",
    "conditions": _DUMMY_CONDITIONS,
}
_TREE_OPERATORS: Final = ("and", "or", "not")

AudienceRef = str | Sequence[Any] | None


def _id(*parts: str) -> str:
    """A stable 11-digit id for an entity, from its kind and keys (the CDN's ids are digit strings too)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return str(10_000_000_000 + int.from_bytes(digest[:8], "big") % 90_000_000_000)


def _variable_type(name: str, value: Any) -> tuple[str, str | None]:
    """The datafile type (and subType) of a variable, from its Python default value."""
    if isinstance(value, bool):
        return "boolean", None
    if isinstance(value, int):
        return "integer", None
    if isinstance(value, float):
        return "double", None
    if isinstance(value, str):
        return "string", None
    if isinstance(value, Mapping):
        return "string", "json"
    raise ConfigurationError(
        f"variable {name!r}: a default of type {type(value).__name__} has no datafile type; use str, int, "
        "float, bool or dict (json)"
    )


def _encode(name: str, kind: str, value: Any) -> str:
    """A variable value as the datafile writes it (always a string), checked against the variable's type."""
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind == "double" and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ConfigurationError(f"variable {name!r}: {value!r} is not a finite number")
        return repr(number)
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "json" and isinstance(value, Mapping):
        try:
            return json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"variable {name!r}: not JSON-serialisable ({exc})") from None
    raise ConfigurationError(f"variable {name!r} is a {kind} variable; {value!r} is not a {kind}")


def _percent(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigurationError(f"{name} must be a percentage from 0 to 100, got {value!r}")
    return float(value)


def _allocation(entries: Sequence[tuple[str, float]], traffic: float) -> list[dict[str, Any]]:
    """``trafficAllocation`` for variation weights, scaled to ``traffic`` percent of the 10,000 buckets."""
    total = sum(weight for _, weight in entries)
    if total <= 0:
        raise ConfigurationError("a traffic split needs at least one variation with a positive weight")
    allocation = []
    running = 0.0
    for variation_id, weight in entries:
        running += weight
        allocation.append({"entityId": variation_id, "endOfRange": round(traffic * 100 * running / total)})
    return allocation


@dataclass
class _Variable:
    id: str
    key: str
    kind: str  # boolean, integer, double, string, json
    default: str


@dataclass
class _Variation:
    id: str
    key: str
    enabled: bool
    values: dict[str, str]  # variable key -> encoded value, only those that differ from the default


@dataclass
class _Rule:
    id: str
    key: str
    layer_id: str
    audience: AudienceRef
    allocation: list[tuple[str, float]]  # variation key, weight
    traffic: float
    allowlist: dict[str, str] = field(default_factory=dict)
    status: str = "Running"
    metrics: tuple[str, ...] = ()


@dataclass
class _Flag:
    id: str
    key: str
    variables: dict[str, _Variable]
    variations: dict[str, _Variation]
    experiments: list[_Rule] = field(default_factory=list)
    deliveries: list[_Rule] = field(default_factory=list)
    everyone_else: str = "off"


class DatafileBuilder:
    """Build an Optimizely datafile (JSON-ready dict) in a few chained calls.

    ``flag()`` opens a flag; ``rollout()``, ``experiment()`` and ``everyone_else()`` add rules to the flag
    opened last. ``audience()``, ``event()``, ``attribute()`` and ``ab_test()`` (an experiment outside any
    flag, for ``activate``/``get_variation``) can come anywhere. ``build()`` returns a new dict each time.

    Every flag gets what the Optimizely app gives it: an ``off`` variation (disabled, default values), an
    ``on`` one (enabled, default values), and a rollout whose last rule, "Everyone Else", serves ``off``
    unless :meth:`everyone_else` says otherwise. Rules are evaluated in the order they were added: A/B tests
    (:meth:`experiment`) before deliveries (:meth:`rollout`), as Optimizely does.

    Mistakes (an unknown audience or variation, a variable of the wrong type) raise
    :class:`~optimizely_async.ConfigurationError` at the call that made them, or at ``build()`` for names
    that may still be defined later (audiences).

    Args:
        revision: the datafile revision; by default ``"1"`` for the first ``build()``, ``"2"`` for the
            next and so on, so a polling client sees each build as new.
        account_id, project_id, environment_key, sdk_key: the datafile's identity fields.
        region: ``"US"`` or ``"EU"`` (which events endpoint the client picks); omitted by default (US).
        anonymize_ip, bot_filtering, send_flag_decisions: the datafile's event switches (Optimizely's
            defaults for a new project).
    """

    def __init__(
        self,
        *,
        revision: str | None = None,
        account_id: str = "10000000001",
        project_id: str = "20000000001",
        environment_key: str = "production",
        sdk_key: str = "TestDatafileBuilder",
        region: str | None = None,
        anonymize_ip: bool = True,
        bot_filtering: bool = False,
        send_flag_decisions: bool = True,
    ) -> None:
        self._revision = revision
        self._builds = 0
        self._identity: dict[str, Any] = {
            "accountId": account_id,
            "projectId": project_id,
            "environmentKey": environment_key,
            "sdkKey": sdk_key,
            "anonymizeIP": anonymize_ip,
            "botFiltering": bot_filtering,
            "sendFlagDecisions": send_flag_decisions,
        }
        if region is not None:
            self._identity["region"] = region
        self._environment_id = _id("environment", project_id, environment_key)
        self._flags: dict[str, _Flag] = {}
        self._current: _Flag | None = None
        self._audiences: dict[str, tuple[str, list[Any]]] = {}  # name -> (id, typed conditions)
        self._attributes: dict[str, str] = {}  # key -> id
        self._events: dict[str, list[str]] = {}  # key -> experiment ids
        self._ab_tests: list[tuple[_Rule, dict[str, _Variation]]] = []

    # ------------------------------------------------------------------ audiences, attributes, events

    def audience(
        self, name: str, conditions: Mapping[str, Any] | Sequence[Any] | None = None, /, **attributes: Any
    ) -> DatafileBuilder:
        """Define an audience that rules can name; all its conditions must hold (AND).

        Each keyword is an attribute: a plain value matches exactly (``plan="premium"``, ``beta=True``,
        ``age=30``); a tuple picks another match type: ``age=("gt", 17)``, ``email=("substring", "@acme")``,
        ``app_version=("semver_ge", "2.0")``, ``country=("exists",)``. Attribute names that are not Python
        identifiers go in a mapping: ``audience("eu", {"geo-region": "EU"})``. A list instead is used as the
        audience's raw condition tree (leaves are condition dicts), for ORs and NOTs.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError("an audience needs a non-empty name")
        if isinstance(conditions, (str, bytes)):
            raise ConfigurationError(f"audience {name!r}: conditions must be a mapping or a list, not a string")
        if conditions is not None and not isinstance(conditions, Mapping):
            tree = copy.deepcopy(list(conditions))
            if attributes:
                raise ConfigurationError(f"audience {name!r}: give a raw condition list or attributes, not both")
            self._note_attributes(tree)
        else:
            specs = {**(conditions or {}), **attributes}
            if not specs:
                raise ConfigurationError(f"audience {name!r} has no conditions")
            tree = ["and", *(["or", ["or", self._leaf(name, attr, spec)]] for attr, spec in specs.items())]
        self._audiences[name] = (_id("audience", name), tree)
        return self

    def _leaf(self, audience: str, attribute: str, spec: Any) -> dict[str, Any]:
        if isinstance(spec, tuple):
            if not spec or spec[0] not in MATCH_TYPES:
                raise ConfigurationError(
                    f"audience {audience!r}, attribute {attribute!r}: {spec!r} must start with one of "
                    f"{sorted(MATCH_TYPES)}"
                )
            match = spec[0]
            if match == "exists":
                value = None
            elif len(spec) == 2:
                value = spec[1]
            else:
                raise ConfigurationError(f"audience {audience!r}, attribute {attribute!r}: use ({match!r}, value)")
        else:
            match, value = "exact", spec
        if match != "exists" and not isinstance(value, (str, int, float, bool)):
            raise ConfigurationError(
                f"audience {audience!r}, attribute {attribute!r}: {value!r} is not a string, number or boolean"
            )
        self.attribute(attribute)
        return {"match": match, "name": attribute, "type": "custom_attribute", "value": value}

    def _note_attributes(self, tree: Any) -> None:
        if isinstance(tree, Mapping):
            name = tree.get("name")
            if isinstance(name, str) and tree.get("type") == "custom_attribute":
                self.attribute(name)
        elif isinstance(tree, list):
            for node in tree:
                self._note_attributes(node)

    def attribute(self, *keys: str) -> DatafileBuilder:
        """Declare attributes. Events carry only the attributes the datafile declares; those used in an
        audience are declared for you."""
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"an attribute key must be a non-empty string, got {key!r}")
            self._attributes.setdefault(key, _id("attribute", key))
        return self

    def event(self, *keys: str) -> DatafileBuilder:
        """Declare events that ``track()`` can send (an unknown event key sends nothing)."""
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"an event key must be a non-empty string, got {key!r}")
            self._events.setdefault(key, [])
        return self

    # ------------------------------------------------------------------ flags and their rules

    def flag(
        self,
        key: str,
        *,
        variables: Mapping[str, Any] | None = None,
        variations: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> DatafileBuilder:
        """Add a flag and make it the one later rules attach to.

        Args:
            variables: variable key -> default value; the type follows the value (str, int, float, bool,
                dict for json).
            variations: more enabled variations besides ``on`` and ``off``: key -> the variables it changes.
        """
        if not isinstance(key, str) or not key:
            raise ConfigurationError("a flag needs a non-empty key")
        if key in self._flags:
            raise ConfigurationError(f"flag {key!r} is defined twice")
        flag_id = _id("flag", key)
        declared: dict[str, _Variable] = {}
        for name, value in (variables or {}).items():
            kind, sub = _variable_type(name, value)
            declared[name] = _Variable(
                _id("variable", key, name), name, "json" if sub else kind, _encode(name, sub or kind, value)
            )
        flag = _Flag(flag_id, key, declared, {})
        self._flags[key] = self._current = flag
        self._variation(flag, "off", False, None)
        self._variation(flag, "on", True, None)
        for name, values in (variations or {}).items():
            self._variation(flag, name, True, values)
        return self

    def _open_flag(self, what: str) -> _Flag:
        if self._current is None:
            raise ConfigurationError(f"{what}() adds a rule to a flag: call flag(key) first")
        return self._current

    def _variation(self, flag: _Flag, key: str, enabled: bool, values: Mapping[str, Any] | None) -> _Variation:
        """Define (or look up, when nothing new is asked of it) a variation of the flag."""
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"flag {flag.key!r}: a variation key must be a non-empty string")
        encoded: dict[str, str] = {}
        for name, value in (values or {}).items():
            variable = flag.variables.get(name)
            if variable is None:
                raise ConfigurationError(
                    f"flag {flag.key!r} has no variable {name!r} (declare it in flag(..., variables=...))"
                )
            encoded[name] = _encode(name, variable.kind, value)
        existing = flag.variations.get(key)
        if existing is not None:
            if values is not None and (encoded != existing.values or enabled != existing.enabled):
                raise ConfigurationError(f"flag {flag.key!r}: variation {key!r} is already defined differently")
            return existing
        if not enabled and encoded:
            raise ConfigurationError(
                f"flag {flag.key!r}: variation {key!r} is disabled, so it always serves the default values"
            )
        variation = _Variation(_id("variation", flag.key, key), key, enabled, encoded)
        flag.variations[key] = variation
        return variation

    def _serve(
        self,
        flag: _Flag,
        default_key: str,
        enabled: bool | None,
        variables: Mapping[str, Any] | None,
        variation: str | None,
    ) -> str:
        """The variation a rule serves: a named one, one made for the rule's variables, or ``on``/``off``."""
        if variation is not None:
            if variation not in flag.variations and variables is None and enabled is None:
                raise ConfigurationError(f"flag {flag.key!r} has no variation {variation!r}")
            on = enabled if enabled is not None else (variation != "off")
            return self._variation(flag, variation, on, variables).key
        on = True if enabled is None else enabled
        if variables:
            return self._variation(flag, default_key, on, variables).key
        return "on" if on else "off"

    def rollout(
        self,
        *,
        enabled: bool | None = None,
        variables: Mapping[str, Any] | None = None,
        variation: str | None = None,
        audience: AudienceRef = None,
        percentage: float = 100,
        key: str | None = None,
    ) -> DatafileBuilder:
        """Add a targeted delivery rule to the open flag (before "Everyone Else").

        By default it serves ``on`` to everyone (100 %). ``enabled=False`` serves ``off``; ``variables``
        serve a variation made for this rule (named after the rule) with those values; ``variation`` names
        one of the flag's variations. ``audience`` is an audience name, a list of names (any of them), or a
        tree such as ``["and", "beta", ["not", "eu"]]``. Users in the audience but outside ``percentage``
        go straight to "Everyone Else", as in Optimizely.
        """
        flag = self._open_flag("rollout")
        index = len(flag.deliveries) + 1
        rule_key = key or f"{flag.key}_delivery_{index}"
        served = self._serve(flag, rule_key, enabled, variables, variation)
        flag.deliveries.append(
            _Rule(
                id=_id("rule", flag.key, rule_key),
                key=rule_key,
                layer_id="",
                audience=audience,
                allocation=[(served, 1.0)],
                traffic=_percent("percentage", percentage),
            )
        )
        return self

    def everyone_else(
        self, *, enabled: bool | None = None, variables: Mapping[str, Any] | None = None, variation: str | None = None
    ) -> DatafileBuilder:
        """What the open flag's last rule, "Everyone Else", serves (``off`` unless set here)."""
        flag = self._open_flag("everyone_else")
        flag.everyone_else = self._serve(flag, f"{flag.key}_everyone_else", enabled, variables, variation)
        return self

    def experiment(
        self,
        key: str,
        variations: Iterable[str] | Mapping[str, Mapping[str, Any]] = ("off", "on"),
        *,
        split: Mapping[str, float] | Sequence[float] | None = None,
        traffic: float = 100,
        audience: AudienceRef = None,
        allowlist: Mapping[str, str] | None = None,
        metrics: Iterable[str] = (),
        status: str = "Running",
    ) -> DatafileBuilder:
        """Add an A/B test rule to the open flag (after its other A/B tests, before its deliveries).

        Args:
            variations: variation keys (the flag's own, or new enabled ones with the default values), or a
                mapping of new variation keys to the variables they change.
            split: weights per variation (a mapping, or a list in ``variations`` order); even by default.
            traffic: the percentage of the audience that takes part; the rest goes on to the next rule.
            allowlist: user id -> variation key, served before audiences and bucketing.
            metrics: events this test measures (declared for you); they list the test in the datafile.
            status: ``"Running"``, or e.g. ``"Paused"`` to see a stopped test skipped.
        """
        flag = self._open_flag("experiment")
        if not isinstance(key, str) or not key:
            raise ConfigurationError("an experiment needs a non-empty key")
        if any(rule.key == key for rule in flag.experiments):
            raise ConfigurationError(f"flag {flag.key!r} already has an experiment {key!r}")
        if isinstance(variations, Mapping):
            keys = [self._variation(flag, name, name != "off", values).key for name, values in variations.items()]
        else:
            keys = [self._variation(flag, name, name != "off", None).key for name in variations]
        rule = self._rule(
            f"flag {flag.key!r}",
            _id("rule", flag.key, key),
            key,
            keys,
            split,
            traffic,
            audience,
            allowlist,
            metrics,
            status,
        )
        rule.layer_id = _id("layer", flag.key, key)
        flag.experiments.append(rule)
        return self

    def ab_test(
        self,
        key: str,
        variations: Iterable[str] = ("control", "treatment"),
        *,
        split: Mapping[str, float] | Sequence[float] | None = None,
        traffic: float = 100,
        audience: AudienceRef = None,
        allowlist: Mapping[str, str] | None = None,
        metrics: Iterable[str] = (),
        status: str = "Running",
    ) -> DatafileBuilder:
        """Add an experiment outside any flag, for ``activate()`` / ``get_variation()`` (arguments as in
        :meth:`experiment`; its variations carry no variables)."""
        if not isinstance(key, str) or not key:
            raise ConfigurationError("an experiment needs a non-empty key")
        if any(rule.key == key for rule, _ in self._ab_tests):
            raise ConfigurationError(f"experiment {key!r} is defined twice")
        names = list(variations)
        if not names or any(not isinstance(name, str) or not name for name in names):
            raise ConfigurationError(f"experiment {key!r}: variations must be non-empty strings")
        own = {name: _Variation(_id("variation", key, name), name, False, {}) for name in names}
        rule = self._rule(
            f"experiment {key!r}",
            _id("experiment", key),
            key,
            names,
            split,
            traffic,
            audience,
            allowlist,
            metrics,
            status,
        )
        rule.layer_id = _id("layer", key)
        self._ab_tests.append((rule, own))
        return self

    def _rule(
        self,
        where: str,
        rule_id: str,
        key: str,
        keys: list[str],
        split: Mapping[str, float] | Sequence[float] | None,
        traffic: float,
        audience: AudienceRef,
        allowlist: Mapping[str, str] | None,
        metrics: Iterable[str],
        status: str,
    ) -> _Rule:
        if not keys or len(set(keys)) != len(keys):
            raise ConfigurationError(f"{where}, experiment {key!r}: give one or more distinct variations")
        if split is None:
            weights = [1.0] * len(keys)
        elif isinstance(split, Mapping):
            unknown = set(split) - set(keys)
            if unknown:
                raise ConfigurationError(
                    f"{where}, experiment {key!r}: split names unknown variations {sorted(unknown)}"
                )
            weights = [float(split.get(name, 0)) for name in keys]
        else:
            weights = [float(weight) for weight in split]
            if len(weights) != len(keys):
                raise ConfigurationError(
                    f"{where}, experiment {key!r}: {len(weights)} weights for {len(keys)} variations"
                )
        if any(not math.isfinite(weight) or weight < 0 for weight in weights):
            raise ConfigurationError(f"{where}, experiment {key!r}: weights must be finite and not negative")
        forced = dict(allowlist or {})
        for user, variation in forced.items():
            if variation not in keys:
                raise ConfigurationError(
                    f"{where}, experiment {key!r}: allowlist sends {user!r} to unknown {variation!r}"
                )
        metric_keys = tuple(metrics)
        self.event(*metric_keys)
        return _Rule(
            id=rule_id,
            key=key,
            layer_id="",
            audience=audience,
            allocation=list(zip(keys, weights, strict=True)),
            traffic=_percent("traffic", traffic),
            allowlist=forced,
            status=status,
            metrics=metric_keys,
        )

    # ------------------------------------------------------------------ output

    def build(self) -> dict[str, Any]:
        """The datafile as a JSON-ready dict (a new one on every call)."""
        self._builds += 1
        revision = self._revision if self._revision is not None else str(self._builds)
        events = {key: list(ids) for key, ids in self._events.items()}
        experiments: list[dict[str, Any]] = []
        for rule, own in self._ab_tests:
            experiments.append(self._experiment_json(rule, own, {}, rule.layer_id))
            for metric in rule.metrics:
                events[metric].append(rule.id)
        flags: list[dict[str, Any]] = []
        rollouts: list[dict[str, Any]] = []
        for flag in self._flags.values():
            rollout_id = f"rollout-{flag.id}-{self._environment_id}"
            for rule in flag.experiments:
                experiments.append(self._experiment_json(rule, flag.variations, flag.variables, rule.layer_id))
                for metric in rule.metrics:
                    events[metric].append(rule.id)
            default_key = f"default-rollout-{flag.id}-{self._environment_id}"
            everyone = _Rule(default_key, default_key, rollout_id, None, [(flag.everyone_else, 1.0)], 100.0)
            rules = [*flag.deliveries, everyone]
            rollouts.append(
                {
                    "id": rollout_id,
                    "experiments": [
                        self._experiment_json(rule, flag.variations, flag.variables, rollout_id) for rule in rules
                    ],
                }
            )
            variables = []
            for variable in flag.variables.values():
                entry: dict[str, Any] = {"id": variable.id, "key": variable.key, "defaultValue": variable.default}
                entry["type"] = "string" if variable.kind == "json" else variable.kind
                if variable.kind == "json":
                    entry["subType"] = "json"
                variables.append(entry)
            flags.append(
                {
                    "id": flag.id,
                    "key": flag.key,
                    "rolloutId": rollout_id,
                    "experimentIds": [rule.id for rule in flag.experiments],
                    "variables": variables,
                }
            )
        typed = [
            {"id": aid, "name": name, "conditions": copy.deepcopy(tree)}
            for name, (aid, tree) in self._audiences.items()
        ]
        legacy = [{"id": a["id"], "name": a["name"], "conditions": _DUMMY_CONDITIONS} for a in typed]
        return {
            "version": "4",
            "revision": revision,
            **self._identity,
            "attributes": [{"id": aid, "key": key} for key, aid in self._attributes.items()],
            "audiences": [*legacy, dict(_DUMMY_AUDIENCE)],
            "typedAudiences": typed,
            "events": [{"id": _id("event", key), "key": key, "experimentIds": ids} for key, ids in events.items()],
            "experiments": experiments,
            "groups": [],
            "featureFlags": flags,
            "rollouts": rollouts,
            "integrations": [],
            "variables": [],
        }

    def build_json(self) -> str:
        """:meth:`build` encoded as JSON text (what the CDN sends)."""
        return json.dumps(self.build())

    def _experiment_json(
        self, rule: _Rule, variations: Mapping[str, _Variation], variables: Mapping[str, _Variable], layer_id: str
    ) -> dict[str, Any]:
        used = [variations[key] for key, _ in rule.allocation]
        audience_ids, conditions = self._audience_refs(rule)
        return {
            "id": rule.id,
            "key": rule.key,
            "status": rule.status,
            "layerId": layer_id,
            "variations": [
                {
                    "id": variation.id,
                    "key": variation.key,
                    "featureEnabled": variation.enabled,
                    "variables": [
                        {"id": variable.id, "value": variation.values.get(variable.key, variable.default)}
                        for variable in variables.values()
                    ],
                }
                for variation in used
            ],
            "trafficAllocation": _allocation(
                [(variations[key].id, weight) for key, weight in rule.allocation], rule.traffic
            ),
            "audienceIds": audience_ids,
            "audienceConditions": conditions,
            "forcedVariations": dict(rule.allowlist),
        }

    def _audience_refs(self, rule: _Rule) -> tuple[list[str], list[Any]]:
        """``audienceIds`` and ``audienceConditions`` of a rule, audience names replaced by ids."""
        ref = rule.audience
        if ref is None:
            return [], []
        ids: list[str] = []

        def resolve(node: Any) -> Any:
            if isinstance(node, str):
                if node in _TREE_OPERATORS:
                    return node
                if node not in self._audiences:
                    raise ConfigurationError(f"rule {rule.key!r} names audience {node!r}, which is not defined")
                audience_id = self._audiences[node][0]
                if audience_id not in ids:
                    ids.append(audience_id)
                return audience_id
            if isinstance(node, Sequence):
                return [resolve(child) for child in node]
            raise ConfigurationError(f"rule {rule.key!r}: {node!r} is not an audience name or a list of them")

        if isinstance(ref, str):
            return [resolve(ref)], ["or", ids[0]]
        tree = resolve(list(ref))
        if not tree or tree[0] not in _TREE_OPERATORS:
            tree = ["or", *tree]
        return ids, tree


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class RecordedEvent:
    """One event from a recorded request, with its visitor's details beside it."""

    #: ``"impression"`` (a decision was shown) or ``"conversion"`` (``track``).
    kind: str
    #: The conversion's event key; ``"campaign_activated"`` for an impression.
    key: str
    user_id: str
    #: The visitor's attributes as sent: attribute key -> value (``$opt_...`` ones included).
    attributes: dict[str, Any]
    #: Impressions: the decision's flag, rule, rule type (``feature-test``, ``rollout``, ``experiment``) and
    #: variation keys, and whether the flag was enabled. None for conversions.
    flag_key: str | None = None
    rule_key: str | None = None
    rule_type: str | None = None
    variation_key: str | None = None
    enabled: bool | None = None
    #: Conversions: the event tags as sent, and the ``revenue`` / ``value`` read from them.
    tags: dict[str, Any] = field(default_factory=dict)
    revenue: int | None = None
    value: float | None = None
    #: The event and the visitor exactly as they are in the payload.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    visitor: dict[str, Any] = field(default_factory=dict, repr=False)


def _records(request: EventRequest) -> list[RecordedEvent]:
    records = []
    for visitor in request.payload.get("visitors", []):
        attributes = {a.get("key"): a.get("value") for a in visitor.get("attributes", [])}
        for snapshot in visitor.get("snapshots", []):
            decisions = snapshot.get("decisions") or []
            for event in snapshot.get("events", []):
                base = {
                    "user_id": visitor.get("visitor_id"),
                    "attributes": attributes,
                    "raw": event,
                    "visitor": visitor,
                }
                if event.get("key") == "campaign_activated" and decisions:
                    meta = decisions[0].get("metadata", {})
                    records.append(
                        RecordedEvent(
                            kind="impression",
                            key="campaign_activated",
                            flag_key=meta.get("flag_key"),
                            rule_key=meta.get("rule_key"),
                            rule_type=meta.get("rule_type"),
                            variation_key=meta.get("variation_key"),
                            enabled=meta.get("enabled"),
                            **base,
                        )
                    )
                else:
                    records.append(
                        RecordedEvent(
                            kind="conversion",
                            key=event.get("key", ""),
                            tags=dict(event.get("tags") or {}),
                            revenue=event.get("revenue"),
                            value=event.get("value"),
                            **base,
                        )
                    )
    return records


Responder = Callable[[EventRequest], DispatchResult]


class RecordingDispatcher:
    """An ``event_dispatcher=`` that keeps every request instead of sending it.

    Every request is appended to :attr:`requests` and answered with ``respond(request)`` (by default:
    delivered, HTTP 204). Call ``await client.flush()`` before reading: events are batched in the
    background. :attr:`events`, :attr:`impressions` and :attr:`conversions` read the requests back as
    :class:`RecordedEvent` values, in the order they were sent.

    Args:
        respond: decides the outcome of each request, e.g.
            ``lambda request: DispatchResult(delivered=False, retryable=True, status=503, reason="http_503")``
            to see the client retry. Failed requests are recorded too, one entry per attempt.
    """

    def __init__(self, respond: Responder | None = None) -> None:
        #: Every request the client handed over, in order (retries included).
        self.requests: list[EventRequest] = []
        self._respond = respond

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.requests.append(request)
        if self._respond is not None:
            return self._respond(request)
        return DispatchResult(delivered=True, status=204)

    @property
    def events(self) -> list[RecordedEvent]:
        """Every event of every recorded request."""
        return [record for request in self.requests for record in _records(request)]

    @property
    def impressions(self) -> list[RecordedEvent]:
        return [record for record in self.events if record.kind == "impression"]

    @property
    def conversions(self) -> list[RecordedEvent]:
        return [record for record in self.events if record.kind == "conversion"]

    @property
    def payloads(self) -> list[Mapping[str, Any]]:
        """The requests' payloads (the JSON sent to the events API, as dicts)."""
        return [request.payload for request in self.requests]

    def clear(self) -> None:
        """Forget what was recorded (between two tests that share a client)."""
        self.requests.clear()


async def update_datafile(client: AsyncOptimizely, datafile: str | bytes | Mapping[str, Any]) -> None:
    """Give a running client a new datafile, as if its poller had fetched a new revision: later decisions
    use it, and ``OPTIMIZELY_CONFIG_UPDATE`` listeners are told. Raises
    :class:`~optimizely_async.InvalidDatafileError` for a datafile the client cannot use (it keeps the old)."""
    from .config.project_config import parse_config

    config = parse_config(datafile)
    await client._on_new_config(config)
