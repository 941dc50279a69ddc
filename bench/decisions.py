"""get_variation, is_feature_enabled and get_feature_variable: ours against the official SDK, one run.

Run: ``python bench/decisions.py`` (or ``nox -s bench``). Prints ops/s per call for each SDK and the ratio.
"""

from __future__ import annotations

from typing import Any

import anyio
from _common import NullSink, bench_users, compare, datafiles, datagen, official_client, official_settle, row

from optimizely_async import AsyncOptimizely

TARGET = 8.0


async def main() -> None:
    for title, df in datafiles():
        print(f"== {title}")
        await run(df)


async def run(df: dict[str, Any]) -> None:
    users = bench_users(df)
    experiments = [e["key"] for e in datagen.all_experiments(df)]
    flags = [f["key"] for f in df["featureFlags"]]
    variables = [(f["key"], v["key"]) for f in df["featureFlags"] for v in f.get("variables", [])]
    official = official_client(df)
    settle = official_settle(official)
    print(
        f"datafile: {len(experiments)} experiments/rules, {len(flags)} flags, {len(variables)} variables; "
        f"{len(users)} users"
    )

    def off_gv() -> int:
        for user_id, attrs in users:
            for key in experiments:
                official.get_variation(key, user_id, attrs)
        return len(users) * len(experiments)

    def off_fe() -> int:
        for user_id, attrs in users:
            for key in flags:
                official.is_feature_enabled(key, user_id, attrs)
        return len(users) * len(flags)

    def off_fv() -> int:
        for user_id, attrs in users:
            for flag, var in variables:
                official.get_feature_variable(flag, var, user_id, attrs)
        return len(users) * len(variables)

    async with AsyncOptimizely(datafile=df, event_dispatcher=NullSink()) as ours:

        async def our_gv() -> int:
            for user_id, attrs in users:
                for key in experiments:
                    await ours.get_variation(key, user_id, attrs)
            return len(users) * len(experiments)

        async def our_fe() -> int:
            for user_id, attrs in users:
                for key in flags:
                    await ours.is_feature_enabled(key, user_id, attrs)
            return len(users) * len(flags)

        async def our_fv() -> int:
            for user_id, attrs in users:
                for flag, var in variables:
                    await ours.get_feature_variable(flag, var, user_id, attrs)
            return len(users) * len(variables)

        events = {"official_settle": settle, "our_settle": ours.flush}
        results = [
            ("get_variation", *await compare(off_gv, our_gv)),
            ("is_feature_enabled", *await compare(off_fe, our_fe, **events)),
            ("get_feature_variable", *await compare(off_fv, our_fv)),
        ]
        # The same calls with the clock running until their impressions are built, encoded and handed to the
        # sink (ours: flush(); official: its event thread is idle). No target: it shows the whole cost.
        with_events = ("is_feature_enabled + events", *await compare(off_fe, our_fe, include_settle=True, **events))
    official.close()
    for name, off_s, our_s in results:
        print(row(name, off_s, our_s, TARGET))
    print(row(*with_events) + "  (no target: includes building and sending the impressions)")


if __name__ == "__main__":
    anyio.run(main)
