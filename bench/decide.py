"""decide and decide_all: ours against the official SDK, in one run, per flag decided.

Run: ``python bench/decide.py`` (or ``nox -s bench``). Impressions go to a sink that accepts everything, on
both sides, so the comparison includes building and queueing the decision events.
"""

from __future__ import annotations

from typing import Any

import anyio
from _common import (
    bench_users,
    datafiles,
    official_client,
    official_settle,
    row,
    time_async,
    time_async_settled,
    time_sync,
    time_sync_settled,
)

from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest

TARGET = 8.0


class NullSink:
    async def dispatch(self, request: EventRequest) -> DispatchResult:
        return DispatchResult(delivered=True, status=200)


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

        results = [
            (
                "decide (per flag)",
                time_sync(off_decide, settle=settle),
                await time_async(our_decide, settle=ours.flush),
            ),
            (
                "decide_all (per flag)",
                time_sync(off_decide_all, settle=settle),
                await time_async(our_decide_all, settle=ours.flush),
            ),
        ]
        # The clock runs until the impressions are built, encoded and handed to the sink. No target.
        with_events = [
            (
                "decide + events",
                time_sync_settled(off_decide, settle),
                await time_async_settled(our_decide, ours.flush),
            ),
            (
                "decide_all + events",
                time_sync_settled(off_decide_all, settle),
                await time_async_settled(our_decide_all, ours.flush),
            ),
        ]
    official.close()
    for name, off_s, our_s in results:
        print(row(name, off_s, our_s, TARGET))
    for name, off_s, our_s in with_events:
        print(row(name, off_s, our_s) + "  (no target: includes building and sending the impressions)")


if __name__ == "__main__":
    anyio.run(main)
