"""``python -m optimizely_async``: decide for thousands of simulated users, offline.

The demo loads the bundled example datafile (or ``--datafile``), runs every kind of decision for random
users, activates and tracks them, and delivers the events to an in-process sink: no network at all. It then
prints how users spread over variations, that the mutual-exclusion group held, how many flags were on, why a
few users got what they got (from the decision reasons: ``decide`` with ``INCLUDE_REASONS`` for flags, the same
reasons from the decision engine for experiments) and what the event queue delivered.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

from . import AsyncOptimizely, DecideOption, DispatchResult, EventRequest, OptimizelyError, __version__
from ._cli import COMMANDS, EXIT_CODES
from ._cli import run as run_command
from ._cli.text import audience_words, reason_lines
from .decision.engine import decide_experiment

DESCRIPTION = "Decide for simulated users against a datafile, offline, and summarise what happened."
COMMANDS_HELP = f"""commands:
  demo       this demo (the default)
  validate   check that the SDK can use a datafile: python -m optimizely_async validate FILE
  decide     decide flags for a user and print the decisions with their reasons
  explain    trace which rules and audiences were tried for a user, and why

{EXIT_CODES}"""

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
    conditions = experiment.get("audienceConditions", experiment["audienceIds"])
    return audience_words(conditions, names)


async def explain(
    client: AsyncOptimizely,
    experiments: dict[str, dict[str, Any]],
    flag_tests: set[str],
    flags: list[str],
    audience_names: dict[str, str],
    seen: dict[str, dict[str, str | bool | None]],
) -> list[str]:
    """Why each showcase user got what the run gave them, from the decision reasons.

    Flags are decided again with ``decide(INCLUDE_REASONS, DISABLE_DECISION_EVENT)`` (no extra impression).
    ``decide`` covers flags only, so an experiment's reasons come from the engine call that ``get_variation``
    makes, with a list to collect them. Each line shows what the run returned; a re-decision that disagrees
    with it (it never should: nothing here is random or stored) is flagged instead of hidden.
    """
    config = client.config
    if config is None:
        return ["  (no datafile loaded)"]
    options = [DecideOption.INCLUDE_REASONS, DecideOption.DISABLE_DECISION_EVENT]
    lines: list[str] = []
    for user_id, attrs in SHOWCASE.items():
        lines.append(f"  {user_id}  attributes: {json.dumps(attrs) if attrs else '(none)'}")
        for key, exp in experiments.items():
            reasons: list[str] = []
            experiment = config.experiments_by_key.get(key)
            variation = (
                decide_experiment(config, experiment, user_id, attrs, client._forced, None, reasons)
                if experiment is not None
                else None
            )
            result = seen[user_id].get(key)
            kind = "flag test" if exp["id"] in flag_tests else "A/B test"
            lines.append(
                f"    {kind:<10} {key:<22} -> {result or '(none)':<14} targets: {audience_text(exp, audience_names)}"
            )
            lines += reason_lines(reasons)
            if (variation.key if variation is not None else None) != result:
                lines.append(f"{'':8}(re-deciding gave {variation.key if variation else '(none)'})")
        user = client.create_user_context(user_id, attrs)
        if user is None:
            continue
        for flag in flags:
            decision = await user.decide(flag, options)
            enabled = seen[user_id].get(flag, decision.enabled)
            detail = (
                f"rule {decision.rule_key} -> variation {decision.variation_key}"
                if decision.variation_key is not None
                else "no rule gave a variation: the variables' default values"
            )
            lines.append(f"    {'flag':<10} {flag:<22} -> {'on' if enabled else 'off':<14} {detail}")
            lines += reason_lines(decision.reasons)
            if decision.enabled != enabled:
                lines.append(f"{'':8}(re-deciding gave {'on' if decision.enabled else 'off'})")
            lines.append(f"{'':8}variables {json.dumps(decision.variables)}")
    return lines


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
    #: What the run itself returned to the showcase users: the explanations must tell the same story.
    seen: dict[str, dict[str, str | bool | None]] = {user_id: {} for user_id in SHOWCASE}

    started = time.perf_counter()
    async with client:
        for user_id, attrs in population:
            got = {key: await client.get_variation(key, user_id, attrs) for key in experiments}
            if user_id in seen:
                seen[user_id].update(got)
            for key, variation in got.items():
                tally[key][variation or "(not in experiment)"] += 1
                if variation is not None and experiments[key]["id"] not in flag_tests:
                    await client.activate(key, user_id, attrs)  # the impression
                    calls += 1
            group_violations += sum(sum(got[k] is not None for k in keys) > 1 for keys in group_keys)
            for flag in flags:
                enabled = await client.is_feature_enabled(flag, user_id, attrs)
                tally[flag]["enabled" if enabled else "disabled"] += 1
                if user_id in seen:
                    seen[user_id][flag] = enabled
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
        explained = await explain(client, experiments, flag_tests, flags, audience_names, seen)
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
    print(
        "\nDecisions explained (decision reasons: decide with INCLUDE_REASONS for flags, "
        "the same engine's reasons for experiments)"
    )
    for line in explained:
        print(line)
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
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in COMMANDS:
        sys.exit(run_command(args_list))
    if args_list and args_list[0] == "demo":
        args_list = args_list[1:]
    parser = argparse.ArgumentParser(
        prog="python -m optimizely_async",
        description=DESCRIPTION,
        usage="%(prog)s [demo] [options]\n       %(prog)s {validate,decide,explain} ... (see %(prog)s COMMAND --help)",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=5000, help="random users to simulate (default 5000)")
    parser.add_argument("--datafile", type=Path, help="a datafile JSON (default: the bundled example)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for user attributes (default 7)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop")
    args = parser.parse_args(args_list)
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
