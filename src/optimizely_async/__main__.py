"""``python -m optimizely_async``: decide for thousands of simulated users, offline.

The demo loads the bundled example datafile (or ``--datafile``), runs every kind of decision for random
users, activates and tracks them, and delivers the events to an in-process sink: no network at all. It then
prints how users spread over variations, that the mutual-exclusion group held, how many flags were on, why a
few users got what they got, and what the event queue delivered.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

from . import AsyncOptimizely, DispatchResult, EventRequest, NotificationType, OptimizelyError, __version__

DESCRIPTION = "Decide for simulated users against a datafile, offline, and summarise what happened."

#: Users whose decisions are explained at the end (the first one is whitelisted in the example datafile).
SHOWCASE: dict[str, dict[str, Any]] = {
    "qa_user_orange": {"country": "US", "device": "desktop"},
    "alice": {
        "country": "US",
        "device": "iphone",
        "age": 34,
        "plan": "premium",
        "app_version": "2.4.1",
        "email": "alice@example.com",
        "beta_tester": True,
        "lifetime_value": 812.5,
    },
    "bob": {},
}


class LocalSink:
    """A :class:`~optimizely_async.Dispatcher` that accepts every request in memory and counts it."""

    def __init__(self) -> None:
        self.requests = 0
        self.events: Counter[str] = Counter()
        self.bytes = 0

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.requests += 1
        self.bytes += len(request.body)
        for visitor in request.payload["visitors"]:
            for snapshot in visitor["snapshots"]:
                for event in snapshot["events"]:
                    self.events["impression" if event["key"] == "campaign_activated" else "conversion"] += 1
        return DispatchResult(delivered=True, status=204)


def random_attributes(rng: random.Random) -> dict[str, Any]:
    """Attributes with realistic gaps: each one is missing for some users."""
    attrs: dict[str, Any] = {}
    pick = rng.random
    if pick() < 0.95:
        attrs["country"] = rng.choices(["US", "DE", "FR", "GB", "JP", "BR"], [40, 15, 10, 15, 10, 10])[0]
    if pick() < 0.9:
        attrs["device"] = rng.choice(["iphone", "android", "desktop"])
    if pick() < 0.6:
        attrs["plan"] = rng.choices(["free", "pro", "premium"], [60, 25, 15])[0]
    if pick() < 0.85:
        attrs["age"] = rng.randint(13, 80)
    if pick() < 0.8:
        attrs["app_version"] = rng.choice(["1.9.3", "2.0.0", "2.4.1", "3.0.0-beta.1", "1.0"])
    if pick() < 0.7:
        attrs["email"] = f"u{rng.randint(1, 9999)}@" + rng.choices(["example.com", "gmail.com"], [5, 95])[0]
    if pick() < 0.5:
        attrs["beta_tester"] = pick() < 0.2
    if pick() < 0.7:
        attrs["lifetime_value"] = round(rng.uniform(0, 2000), 2)
    return attrs


def audience_text(experiment: dict[str, Any], names: dict[str, str]) -> str:
    """An experiment's audience conditions in words, e.g. ``Adults and (App 2.x or Mobile devices)``."""

    def words(node: Any, top: bool = False) -> str:
        if isinstance(node, str):
            return names.get(node, node)
        op, *rest = node if node and node[0] in ("and", "or", "not") else ["or", *node]
        if op == "not":
            return "not " + words(rest[0]) if rest else "?"
        text = f" {op} ".join(words(child) for child in rest)
        return text if top or len(rest) < 2 else f"({text})"

    conditions = experiment.get("audienceConditions", experiment["audienceIds"])
    return words(conditions, top=True) if conditions else "everyone"


async def run(datafile: str, users: int, seed: int) -> None:
    sink = LocalSink()
    client = AsyncOptimizely(datafile=datafile, event_dispatcher=sink, batch_size=50, flush_interval=1.0)
    data = json.loads(datafile)
    flag_tests = {eid for flag in data.get("featureFlags", []) for eid in flag["experimentIds"]}
    grouped = [e for group in data["groups"] for e in group["experiments"]]
    experiments = {e["key"]: e for e in [*data["experiments"], *grouped]}
    group_keys = [[e["key"] for e in group["experiments"]] for group in data["groups"]]
    flags = [flag["key"] for flag in data.get("featureFlags", [])]
    audience_names = {a["id"]: a["name"] for a in [*data["audiences"], *data.get("typedAudiences", [])]}

    rng = random.Random(seed)
    population = [*SHOWCASE.items(), *((f"user-{i}", random_attributes(rng)) for i in range(users))]
    tally: dict[str, Counter[str]] = {key: Counter() for key in [*experiments, *flags]}
    group_violations = calls = 0
    explained: dict[str, dict[str, str]] = {user_id: {} for user_id in SHOWCASE}
    kinds = {"ab-test": "A/B test", "feature-test": "flag test", "all-feature-variables": "flag"}

    def on_decision(kind: str, user_id: str, attributes: dict[str, Any], info: dict[str, Any]) -> None:
        if user_id not in explained or kind not in kinds:
            return
        if "variable_values" in info:
            via = info.get("source_info") or {}
            source = info.get("source") or "no rule matched"
            detail = f" ({via['experiment_key']} -> {via['variation_key']})" if via else ""
            key, result = info["feature_key"], "on" if info["feature_enabled"] else "off"
            why = f"via {source}{detail}\n{'':<52}variables {json.dumps(info['variable_values'])}"
        else:
            exp = experiments[info["experiment_key"]]
            key, result = exp["key"], info["variation_key"] or "(none)"
            if user_id in exp.get("forcedVariations", {}):
                why = "whitelisted (forcedVariations)"
            elif exp["status"] != "Running":
                why = f"experiment is {exp['status']}"
            else:
                why = f"targets: {audience_text(exp, audience_names)}"
        explained[user_id][key] = f"{kinds[kind]:<10} {key:<22} -> {result:<14} {why}"

    client.notification_center.add_notification_listener(NotificationType.DECISION, on_decision)
    started = time.perf_counter()
    async with client:
        for user_id, attrs in population:
            got = {key: await client.get_variation(key, user_id, attrs) for key in experiments}
            for key, variation in got.items():
                tally[key][variation or "(not in experiment)"] += 1
                if variation is not None and experiments[key]["id"] not in flag_tests:
                    await client.activate(key, user_id, attrs)  # the impression
                    calls += 1
            group_violations += sum(sum(got[k] is not None for k in keys) > 1 for keys in group_keys)
            for flag in flags:
                enabled = await client.is_feature_enabled(flag, user_id, attrs)
                tally[flag]["enabled" if enabled else "disabled"] += 1
                await client.get_all_feature_variables(flag, user_id, attrs)
            conversions: list[tuple[str, dict[str, Any] | None]] = [("page_view", None)]
            if rng.random() < 0.25:
                conversions.append(("purchase", {"revenue": rng.randint(500, 20000), "value": 1.0}))
            if rng.random() < 0.1:
                conversions.append(("signup", None))
            for event_key, tags in conversions:
                await client.track(event_key, user_id, attrs, tags)
            calls += len(experiments) + 2 * len(flags) + len(conversions)
        decided = time.perf_counter() - started
        report = await client.close()
    elapsed = time.perf_counter() - started

    total = len(population)
    print(
        f"optimizely-async {__version__} demo: {total} users ({users} random + {len(SHOWCASE)} showcase), "
        f"seed {seed}, datafile revision {data['revision']}\n"
    )
    print("Experiments: users per variation")
    for key, exp in experiments.items():
        kind = "flag test" if exp["id"] in flag_tests else "A/B test" + (", grouped" if exp in grouped else "")
        print(f"  {key}  [{kind}, {exp['status']}, targets: {audience_text(exp, audience_names)}]")
        for variation, count in sorted(tally[key].items()):
            print(f"    {variation:<22} {count:>7}  {100 * count / total:5.1f}%")
    print("\nMutual-exclusion groups")
    for keys in group_keys:
        print(f"  {' / '.join(keys)}")
    print(
        f"  users in more than one experiment of a group: {group_violations} "
        f"({'OK, exclusive' if group_violations == 0 else 'VIOLATED'})"
    )
    print("\nFeature flags")
    for flag in flags:
        on = tally[flag]["enabled"]
        print(f"  {flag:<20} enabled for {on:>7} users  {100 * on / total:5.1f}%")
    print("\nDecisions explained (from DECISION notifications)")
    for user_id, lines in explained.items():
        print(f"  {user_id}  attributes: {json.dumps(SHOWCASE[user_id]) if SHOWCASE[user_id] else '(none)'}")
        for line in lines.values():
            print(f"    {line}")
    dropped = sum(report.dropped.values())
    print("\nEvent delivery (in-process sink, no network)")
    print(
        f"  events submitted   {report.submitted:>9}  ({sink.events['impression']} impressions, "
        f"{sink.events['conversion']} conversions received)"
    )
    print(
        f"  events delivered   {report.delivered:>9}  in {sink.requests} requests ({report.requests} tries, "
        f"{report.retries} retries), {sink.bytes / 1e6:.1f} MB of JSON"
    )
    print(f"  dropped            {dropped:>9}  {dict(report.dropped) if dropped else ''}".rstrip())
    print(f"  undelivered        {report.undelivered:>9}  (close timed out: {report.timed_out})")
    print(
        f"  throughput         {report.delivered / elapsed:>9.0f}  events/s; {calls} API calls in "
        f"{decided:.2f} s ({calls / decided:.0f}/s), all delivered {elapsed:.2f} s after the start"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m optimizely_async", description=DESCRIPTION)
    parser.add_argument("--users", type=int, default=5000, help="random users to simulate (default 5000)")
    parser.add_argument("--datafile", type=Path, help="a datafile JSON (default: the bundled example)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for user attributes (default 7)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop")
    args = parser.parse_args(argv)
    if args.users < 0:
        parser.error("--users must be >= 0")
    if args.datafile is not None:
        datafile = args.datafile.read_text(encoding="utf-8")
    else:
        datafile = resources.files("optimizely_async").joinpath("example_datafile.json").read_text("utf-8")
    try:
        anyio.run(run, datafile, args.users, args.seed, backend=args.backend)
    except OptimizelyError as exc:
        parser.exit(1, f"{parser.prog}: {type(exc).__name__}: {exc}\n")


if __name__ == "__main__":
    main()
