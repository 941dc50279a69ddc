"""decide and decide_all: ours against the official SDK, in one run, per flag decided.

Run: ``python bench/decide.py`` (or ``nox -s bench``). Impressions go to a sink that accepts everything, on
both sides, so the comparison includes building and queueing the decision events.
"""

from __future__ import annotations

from typing import Any

import anyio
from _common import bench_users, datafiles, official_client, row, time_async, time_sync

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
            ("decide (per flag)", time_sync(off_decide), await time_async(our_decide)),
            ("decide_all (per flag)", time_sync(off_decide_all), await time_async(our_decide_all)),
        ]
    official.close()
    for name, off_s, our_s in results:
        print(row(name, off_s, our_s, TARGET))


if __name__ == "__main__":
    anyio.run(main)
