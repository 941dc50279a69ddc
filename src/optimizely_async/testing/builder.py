"""DatafileBuilder: an Optimizely datafile (version 4, as the CDN serves it) in a few chained calls."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError
from ._audiences import audience_conditions
from ._values import (
    DUMMY_AUDIENCE,
    DUMMY_CONDITIONS,
    AudienceRef,
    FlagSpec,
    RuleSpec,
    VariableSpec,
    VariationSpec,
    encode,
    percent,
    stable_id,
    variable_type,
)
from ._write import experiment_json, groups_json, variables_json

__all__ = ["DatafileBuilder"]


class DatafileBuilder:
    """Build an Optimizely datafile (JSON-ready dict) in a few chained calls.

    ``flag()`` opens a flag; ``rollout()``, ``experiment()``, ``for_users()`` and ``everyone_else()`` add
    rules to the flag opened last. ``audience()``, ``event()``, ``attribute()``, ``ab_test()`` (an experiment
    outside any flag, for ``activate``/``get_variation``) and ``exclusion_group()`` can come anywhere.
    ``build()`` returns a new dict each time.

    Every flag gets what the Optimizely app gives it: an ``off`` variation (disabled, default values), an
    ``on`` one (enabled, default values), and a rollout whose last rule, "Everyone Else", serves ``off``
    unless ``everyone_else`` says otherwise. Rules are evaluated in the order they were added: A/B tests
    (``experiment``) before deliveries (``rollout``), as Optimizely does.

    Mistakes (an unknown audience or variation, a variable of the wrong type) raise
    ``ConfigurationError`` at the call that made them, or at ``build()`` for names
    that may still be defined later (audiences).

    Args:
        revision: the datafile revision; by default ``"1"`` for the first ``build()``, ``"2"`` for the
            next and so on, so a polling client sees each build as new.
        account_id: the datafile's ``accountId`` (sent with every event).
        project_id: the datafile's ``projectId``.
        environment_key: the datafile's ``environmentKey``.
        sdk_key: the datafile's ``sdkKey``.
        region: ``"US"`` or ``"EU"`` (which events endpoint the client picks); omitted by default (US).
        anonymize_ip: the datafile's ``anonymizeIP`` (Optimizely's default for a new project: on).
        bot_filtering: the datafile's ``botFiltering``.
        send_flag_decisions: the datafile's ``sendFlagDecisions``: ``decide`` sends an impression even
            when no rule gave a variation.
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
        self._environment_id = stable_id("environment", project_id, environment_key)
        self._flags: dict[str, FlagSpec] = {}
        self._current: FlagSpec | None = None
        self._audiences: dict[str, tuple[str, list[Any]]] = {}  # name -> (id, typed conditions)
        self._attributes: dict[str, str] = {}  # key -> id
        self._events: dict[str, list[str]] = {}  # key -> experiment ids
        self._ab_tests: list[tuple[RuleSpec, dict[str, VariationSpec]]] = []
        self._groups: list[tuple[str, list[tuple[str, float]]]] = []

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
        tree, used = audience_conditions(name, conditions, attributes)
        self.attribute(*used)
        self._audiences[name] = (stable_id("audience", name), tree)
        return self

    def attribute(self, *keys: str) -> DatafileBuilder:
        """Declare attributes. Events carry only the attributes the datafile declares; those used in an
        audience are declared for you."""
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"an attribute key must be a non-empty string, got {key!r}")
            self._attributes.setdefault(key, stable_id("attribute", key))
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
        flag_id = stable_id("flag", key)
        declared: dict[str, VariableSpec] = {}
        for name, value in (variables or {}).items():
            kind, sub = variable_type(name, value)
            declared[name] = VariableSpec(
                stable_id("variable", key, name), name, "json" if sub else kind, encode(name, sub or kind, value)
            )
        flag = FlagSpec(flag_id, key, declared, {})
        self._flags[key] = self._current = flag
        self._variation(flag, "off", False, None)
        self._variation(flag, "on", True, None)
        for name, values in (variations or {}).items():
            self._variation(flag, name, True, values)
        return self

    def _open_flag(self, what: str) -> FlagSpec:
        if self._current is None:
            raise ConfigurationError(f"{what}() adds a rule to a flag: call flag(key) first")
        return self._current

    def _variation(self, flag: FlagSpec, key: str, enabled: bool, values: Mapping[str, Any] | None) -> VariationSpec:
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
            encoded[name] = encode(name, variable.kind, value)
        existing = flag.variations.get(key)
        if existing is not None:
            if values is not None and (encoded != existing.values or enabled != existing.enabled):
                raise ConfigurationError(f"flag {flag.key!r}: variation {key!r} is already defined differently")
            return existing
        if not enabled and encoded:
            raise ConfigurationError(
                f"flag {flag.key!r}: variation {key!r} is disabled, so it always serves the default values"
            )
        variation = VariationSpec(stable_id("variation", flag.key, key), key, enabled, encoded)
        flag.variations[key] = variation
        return variation

    def _serve(
        self,
        flag: FlagSpec,
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
            RuleSpec(
                id=stable_id("rule", flag.key, rule_key),
                key=rule_key,
                layer_id="",
                audience=audience,
                allocation=[(served, 1.0)],
                traffic=percent("percentage", percentage),
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
            stable_id("rule", flag.key, key),
            key,
            keys,
            split,
            traffic,
            audience,
            allowlist,
            metrics,
            status,
        )
        rule.layer_id = stable_id("layer", flag.key, key)
        flag.experiments.append(rule)
        return self

    def for_users(self, users: Mapping[str, str]) -> DatafileBuilder:
        """Serve these users a variation of the open flag (user id -> variation key) before any other rule.

        Optimizely targets single users with an A/B test's allowlist; this adds such a test, first among the
        flag's rules, that takes no traffic of its own (key ``<flag>_users``). Everyone else goes on to the
        flag's other rules.
        """
        flag = self._open_flag("for_users")
        key = f"{flag.key}_users"
        if any(rule.key == key for rule in flag.experiments):
            raise ConfigurationError(f"flag {flag.key!r}: call for_users() once, with every user")
        unknown = sorted({v for v in users.values() if v not in flag.variations})
        if not users or unknown:
            raise ConfigurationError(f"flag {flag.key!r}: for_users() needs users and known variations {unknown}")
        keys = list(dict.fromkeys(users.values()))
        rule = self._rule(
            f"flag {flag.key!r}", stable_id("rule", flag.key, key), key, keys, None, 0, None, users, (), "Running"
        )
        rule.layer_id = stable_id("layer", flag.key, key)
        flag.experiments.insert(0, rule)
        return self

    def exclusion_group(
        self, key: str, experiments: Iterable[str], *, split: Mapping[str, float] | Sequence[float] | None = None
    ) -> DatafileBuilder:
        """Make experiments mutually exclusive: each user takes part in at most one of them.

        ``experiments`` are keys of A/B tests (``experiment``, of any flags) or of ``ab_test``
        experiments, defined before or after this call. ``split`` shares the users out among them (weights per
        key, or a list in order; even by default); within its share, each experiment's own traffic applies.
        """
        names = list(experiments)
        if not isinstance(key, str) or not key or len(names) < 1 or len(set(names)) != len(names):
            raise ConfigurationError("an exclusion group needs a key and one or more distinct experiment keys")
        if isinstance(split, Mapping):
            weights = [float(split.get(name, 0)) for name in names]
        else:
            weights = [float(w) for w in split] if split is not None else [1.0] * len(names)
        if len(weights) != len(names) or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ConfigurationError(f"exclusion group {key!r}: one finite, non-negative weight per experiment")
        self._groups.append((key, list(zip(names, weights, strict=True))))
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
        ``experiment``; its variations carry no variables)."""
        if not isinstance(key, str) or not key:
            raise ConfigurationError("an experiment needs a non-empty key")
        if any(rule.key == key for rule, _ in self._ab_tests):
            raise ConfigurationError(f"experiment {key!r} is defined twice")
        names = list(variations)
        if not names or any(not isinstance(name, str) or not name for name in names):
            raise ConfigurationError(f"experiment {key!r}: variations must be non-empty strings")
        own = {name: VariationSpec(stable_id("variation", key, name), name, False, {}) for name in names}
        rule = self._rule(
            f"experiment {key!r}",
            stable_id("experiment", key),
            key,
            names,
            split,
            traffic,
            audience,
            allowlist,
            metrics,
            status,
        )
        rule.layer_id = stable_id("layer", key)
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
    ) -> RuleSpec:
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
        return RuleSpec(
            id=rule_id,
            key=key,
            layer_id="",
            audience=audience,
            allocation=list(zip(keys, weights, strict=True)),
            traffic=percent("traffic", traffic),
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
        names = {name: audience_id for name, (audience_id, _) in self._audiences.items()}
        experiments: list[dict[str, Any]] = []
        for rule, own in self._ab_tests:
            experiments.append(experiment_json(rule, own, {}, rule.layer_id, names))
            for metric in rule.metrics:
                events[metric].append(rule.id)
        flags: list[dict[str, Any]] = []
        rollouts: list[dict[str, Any]] = []
        for flag in self._flags.values():
            rollout_id = f"rollout-{flag.id}-{self._environment_id}"
            for rule in flag.experiments:
                experiments.append(experiment_json(rule, flag.variations, flag.variables, rule.layer_id, names))
                for metric in rule.metrics:
                    events[metric].append(rule.id)
            default_key = f"default-rollout-{flag.id}-{self._environment_id}"
            everyone = RuleSpec(default_key, default_key, rollout_id, None, [(flag.everyone_else, 1.0)], 100.0)
            rules = [*flag.deliveries, everyone]
            rollouts.append(
                {
                    "id": rollout_id,
                    "experiments": [
                        experiment_json(rule, flag.variations, flag.variables, rollout_id, names) for rule in rules
                    ],
                }
            )
            flags.append(
                {
                    "id": flag.id,
                    "key": flag.key,
                    "rolloutId": rollout_id,
                    "experimentIds": [rule.id for rule in flag.experiments],
                    "variables": variables_json(flag.variables),
                }
            )
        groups, grouped = groups_json(self._groups, experiments)
        typed = [
            {"id": aid, "name": name, "conditions": copy.deepcopy(tree)}
            for name, (aid, tree) in self._audiences.items()
        ]
        legacy = [{"id": a["id"], "name": a["name"], "conditions": DUMMY_CONDITIONS} for a in typed]
        return {
            "version": "4",
            "revision": revision,
            **self._identity,
            "attributes": [{"id": aid, "key": key} for key, aid in self._attributes.items()],
            "audiences": [*legacy, dict(DUMMY_AUDIENCE)],
            "typedAudiences": typed,
            "events": [
                {"id": stable_id("event", key), "key": key, "experimentIds": ids} for key, ids in events.items()
            ],
            "experiments": [e for e in experiments if e["id"] not in grouped],
            "groups": groups,
            "featureFlags": flags,
            "rollouts": rollouts,
            "integrations": [],
            "variables": [],
        }

    def build_json(self) -> str:
        """``build`` encoded as JSON text (what the CDN sends)."""
        return json.dumps(self.build())
