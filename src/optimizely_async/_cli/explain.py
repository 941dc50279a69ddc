"""``explain``: which of a flag's rules were tried for a user, in order, and why each one gave what it gave.

The decision itself is the SDK's (``decide`` with ``INCLUDE_REASONS``); the trace around it is built from the
same engine functions the decision uses (the audience conditions, the bucketing), one rule at a time, so
that it can show what the terse reasons leave out: each audience's conditions with the user's values, the
user's bucket, the traffic ranges. The rule the trace finds deciding is checked against the SDK's decision;
were they ever to differ, the trace says so instead of hiding it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config.project_config import ExperimentInfo, FlagInfo, ProjectConfig
from ..decide import OptimizelyDecision
from ..decision.audiences import evaluate_tree
from ..decision.bucketing import find_bucket
from ..decision.conditions import evaluate_leaf
from ..decision.engine import bucket, bucketing_id_for
from .text import audience_words, condition_words, value_words

__all__ = ["AudienceTrace", "FlagTrace", "RuleTrace", "audience_names", "trace_flag"]

_MISSING: Any = object()


def _tri(value: bool | None) -> str:
    return "UNKNOWN" if value is None else str(value).upper()


@dataclass
class AudienceTrace:
    id: str
    name: str
    result: bool | None
    #: (condition in words, the user's value in words, TRUE/FALSE/UNKNOWN)
    conditions: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class RuleTrace:
    position: int
    kind: str  # "A/B test", "delivery", "Everyone Else"
    key: str
    audiences: str
    matched: bool | None
    audience_details: list[AudienceTrace]
    bucket: int | None
    traffic: str
    variation: str | None
    #: decided | not running | allowlisted | audiences not met | outside traffic | skipped | not reached
    status: str
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "kind": self.kind,
            "rule_key": self.key,
            "audiences": self.audiences,
            "audiences_matched": self.matched,
            "audience_results": [
                {
                    "id": a.id,
                    "name": a.name,
                    "result": _tri(a.result),
                    "conditions": [{"condition": c, "user_value": u, "result": r} for c, u, r in a.conditions],
                }
                for a in self.audience_details
            ],
            "bucket": self.bucket,
            "traffic": self.traffic,
            "variation_key": self.variation,
            "status": self.status,
            "note": self.note,
        }


def audience_names(config: ProjectConfig) -> dict[str, str]:
    raw = json.loads(config.raw)
    return {a["id"]: a.get("name") or a["id"] for a in [*raw.get("audiences", []), *raw.get("typedAudiences", [])]}


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, (list, tuple)):
        return [leaf for node in tree if node not in ("and", "or", "not") for leaf in _leaves(node)]
    return [tree]


def _audience(
    config: ProjectConfig, names: Mapping[str, str], audience_id: str, attrs: Mapping[str, Any]
) -> AudienceTrace:
    conditions = config.audiences.get(audience_id, _MISSING)
    name = names.get(audience_id, audience_id)
    if conditions is _MISSING:
        return AudienceTrace(audience_id, name, None, [("(not defined in the datafile)", "", "UNKNOWN")])

    def leaf(node: Any) -> bool | None:
        return evaluate_leaf(node, attrs) if isinstance(node, Mapping) else None

    trace = AudienceTrace(audience_id, name, evaluate_tree(conditions, leaf))
    for node in _leaves(conditions):
        attribute = node.get("name") if isinstance(node, Mapping) else None
        user = attrs.get(attribute, _MISSING) if isinstance(attribute, str) else _MISSING
        shown = "no value" if user is _MISSING else value_words(user)
        trace.conditions.append((condition_words(node), shown, _tri(leaf(node))))
    return trace


def _ranges(rule: ExperimentInfo) -> str:
    parts, start = [], 0
    for entity_id, end in rule.allocation:
        if end is None:
            continue
        variation = rule.variations_by_id.get(entity_id)
        label = variation.key if variation is not None else f"(unknown {entity_id})"
        if end > start:
            parts.append(f"{label} {start}-{end - 1}")
        start = max(start, end)
    share = start / 100
    return (", ".join(parts) or "nobody") + f" ({share:g} % of users)"


def _rule_trace(
    config: ProjectConfig,
    names: Mapping[str, str],
    rule: ExperimentInfo,
    kind: str,
    position: int,
    user_id: str,
    attrs: Mapping[str, Any],
) -> RuleTrace:
    tree = rule.audience_tree
    ids = list(dict.fromkeys(a for a in _leaves(tree) if isinstance(a, str))) if tree else []
    details = [_audience(config, names, a, attrs) for a in ids]
    results = {d.id: d.result for d in details}
    matched = evaluate_tree(tree, lambda node: results.get(node)) if tree else True
    bucketing_id = bucketing_id_for(user_id, attrs, None)
    value, _ = find_bucket(bucketing_id, rule.id, rule.allocation)
    trace = RuleTrace(
        position, kind, rule.key, audience_words(tree, names), matched, details, value, _ranges(rule), None, ""
    )
    if kind == "A/B test" and not rule.running:
        trace.status = "not running"
        return trace
    allowed = rule.forced_variations.get(user_id) if kind == "A/B test" else None
    if allowed is not None and allowed in rule.variations_by_key:
        trace.variation, trace.status = allowed, "allowlisted"
        return trace
    if matched is not True:
        trace.status = "audiences not met"
        return trace
    if rule.cmab is not None:
        trace.status, trace.note = "outside traffic", "a contextual bandit: this SDK gives no variation for it"
        return trace
    variation = bucket(rule, user_id, bucketing_id, None)
    trace.variation = variation.key if variation is not None else None
    trace.status = "in traffic" if variation is not None else "outside traffic"
    if variation is None and rule.group is not None:
        trace.note = f"mutually exclusive group {rule.group.id}: the user may have been given another experiment"
    return trace


@dataclass
class FlagTrace:
    rules: list[RuleTrace]
    #: Set when the SDK's decision did not come from the rules (a holdout), or the trace disagrees with it.
    note: str = ""


def _holdout_keys(config: ProjectConfig) -> set[str]:
    keys = {h.key for h in config.global_holdouts}
    keys.update(h.key for holdouts in config.rule_holdouts.values() for h in holdouts)
    return keys


def trace_flag(
    config: ProjectConfig, flag: FlagInfo, user_id: str, attrs: Mapping[str, Any], decision: OptimizelyDecision
) -> FlagTrace:
    """Every rule of the flag in evaluation order, with what it gave this user and whether it was reached."""
    names = audience_names(config)
    rules: list[tuple[str, ExperimentInfo]] = [("A/B test", config.experiments_by_id[i]) for i in flag.experiment_ids]
    last = len(flag.rollout_rules) - 1
    rules += [("Everyone Else" if i == last else "delivery", rule) for i, rule in enumerate(flag.rollout_rules)]
    # Numbered as the SDK's reasons number them: A/B tests among themselves, rollout rules among themselves.
    positions = [n + 1 for n in range(len(flag.experiment_ids))] + [n + 1 for n in range(len(flag.rollout_rules))]
    traces = [
        _rule_trace(config, names, rule, kind, position, user_id, attrs)
        for position, (kind, rule) in zip(positions, rules, strict=True)
    ]
    decided = skipping = False
    for trace in traces:
        if decided:
            trace.status = "not reached"
        elif skipping and trace.kind == "delivery":
            trace.status, trace.note = "skipped", "an earlier delivery matched the audiences but not the traffic"
        elif trace.variation is not None and trace.status in ("allowlisted", "in traffic"):
            decided = True
            if trace.status == "allowlisted":
                trace.note = "the user is on this A/B test's allowlist: no audience or traffic check"
            trace.status = "decided"
        elif trace.kind == "delivery" and trace.status == "outside traffic":
            skipping = True  # Optimizely goes straight to "Everyone Else"
    found = next(((t.key, t.variation) for t in traces if t.status == "decided"), (None, None))
    if found == (decision.rule_key, decision.variation_key):
        return FlagTrace(traces)
    if decision.rule_key in _holdout_keys(config):
        for trace in traces:
            trace.status = "not reached"
        return FlagTrace(traces, f"decided by holdout {decision.rule_key!r} before any rule")
    return FlagTrace(
        traces,
        f"this trace found rule {found[0]!r} / variation {found[1]!r}, the SDK decided rule "
        f"{decision.rule_key!r} / variation {decision.variation_key!r}: its reasons are authoritative",
    )
