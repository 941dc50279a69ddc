"""decide and decide_all: ours against the official SDK, in one run, per flag decided.

Run: ``python bench/decide.py`` (or ``nox -s bench``). Impressions go to a sink that accepts everything, on
both sides, so the comparison includes building and queueing the decision events.
"""

from __future__ import annotations

from typing import Any

import anyio
from _common import NullSink, bench_users, compare, datafiles, official_client, official_settle, row

from optimizely_async import AsyncOptimizely

TARGET = 15.0


async def main() -> None:
    for title, df in datafiles():
        print(f"== {title}")
        await run(df)


async def run(df: dict[str, Any]) -> None:
    users = bench_users(df, n=300)
    flags = [f["key"] for f in df["featureFlags"]]
    official = official_client(df)
    settle = official_settle(official)
    official_users = [official.create_user_context(uid, attrs) for uid, attrs in users]
    print(f"datafile: {len(flags)} flags; {len(users)} users")

    def off_decide() -> int:
        for user in official_users:
            for key in flags:
                user.decide(key)
        return len(official_users) * len(flags)

    def off_decide_all() -> int:
        for user in official_users:
            user.decide_all()
        return len(official_users) * len(flags)

    async with AsyncOptimizely(datafile=df, event_dispatcher=NullSink()) as ours:
        our_users = [ours.create_user_context(uid, attrs) for uid, attrs in users]

        async def our_decide() -> int:
            for user in our_users:
                assert user is not None
                for key in flags:
                    await user.decide(key)
            return len(our_users) * len(flags)

        async def our_decide_all() -> int:
            for user in our_users:
                assert user is not None
                await user.decide_all()
            return len(our_users) * len(flags)

        events = {"official_settle": settle, "our_settle": ours.flush}
        results = [
            ("decide (per flag)", *await compare(off_decide, our_decide, **events)),
            ("decide_all (per flag)", *await compare(off_decide_all, our_decide_all, **events)),
        ]
        # The clock runs until the impressions are built, encoded and handed to the sink. No target.
        with_events = [
            ("decide + events", *await compare(off_decide, our_decide, include_settle=True, **events)),
            ("decide_all + events", *await compare(off_decide_all, our_decide_all, include_settle=True, **events)),
        ]
    official.close()
    for name, off_s, our_s in results:
        print(row(name, off_s, our_s, TARGET))
    for name, off_s, our_s in with_events:
        print(row(name, off_s, our_s) + "  (no target: includes building and sending the impressions)")


if __name__ == "__main__":
    anyio.run(main)
