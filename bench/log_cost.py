"""What ``logger=`` costs on the decision path: decide per flag, and create_user_context + decide.

Run: ``python bench/log_cost.py``. Three measurements, on the example datafile, with the SDK's loggers (and
the custom one, which has a handler) at CRITICAL, so that only the level checks are measured:

1. before any client with ``logger=`` exists ("direct": the library logger's own methods);
2. then, in alternating rounds, a client without ``logger=`` ("routed, no logger": every log call and level
   check looks the context variable up) and a client with ``logger=``.

Before/after for the code without ``logger=`` is measured across checkouts with bench/decide.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from _common import NullSink, bench_users, example_datafile, median

from optimizely_async import AsyncOptimizely

ROUNDS = 15


Round = Callable[[], Awaitable[int]]


async def timed(fn: Round) -> float:
    start = time.perf_counter()
    count = await fn()
    return (time.perf_counter() - start) / count


Users = list[tuple[str, dict[str, object] | None]]


def rounds_for(client: AsyncOptimizely, users: Users, flags: list[str]) -> tuple[Round, Round]:
    contexts = [client.create_user_context(uid, attrs) for uid, attrs in users]

    async def decide() -> int:
        for user in contexts:
            assert user is not None
            for key in flags:
                await user.decide(key)
        return len(contexts) * len(flags)

    async def create_and_decide() -> int:
        for uid, attrs in users:
            user = client.create_user_context(uid, attrs)
            assert user is not None
            await user.decide(flags[0])
        return len(users)

    return decide, create_and_decide


async def main() -> None:
    df = example_datafile()
    users = bench_users(df, n=300)
    flags = [f["key"] for f in df["featureFlags"]]
    library = logging.getLogger("optimizely_async")
    # Above every level the SDK logs at (the generated users' odd attribute types are logged at WARNING and
    # ERROR): what is measured is the level checks on the decision path, the cost logger= adds to every call.
    library.setLevel(logging.CRITICAL)
    library.addHandler(logging.NullHandler())
    library.propagate = False
    custom = logging.getLogger("bench.flags")
    custom.setLevel(logging.CRITICAL)
    custom.addHandler(logging.NullHandler())
    custom.propagate = False

    async with AsyncOptimizely(datafile=df, event_dispatcher=NullSink()) as plain:
        plain_decide, plain_create = rounds_for(plain, users, flags)
        await plain_decide()  # warm-up: audiences are compiled on first use
        direct = [await timed(plain_decide) for _ in range(ROUNDS)]
        direct_create = [await timed(plain_create) for _ in range(ROUNDS)]
        await plain.flush()
        async with AsyncOptimizely(datafile=df, event_dispatcher=NullSink(), logger=custom) as routed:
            routed_decide, routed_create = rounds_for(routed, users, flags)
            samples: dict[str, list[float]] = {"plain": [], "custom": [], "plain_create": [], "custom_create": []}
            for _ in range(ROUNDS):  # alternating rounds: both clients see the same machine
                samples["plain"].append(await timed(plain_decide))
                samples["custom"].append(await timed(routed_decide))
                samples["plain_create"].append(await timed(plain_create))
                samples["custom_create"].append(await timed(routed_create))
                await plain.flush()
                await routed.flush()

    def us(values: list[float]) -> str:
        return f"best {min(values) * 1e6:7.2f} us  median {median(values) * 1e6:7.2f} us"

    print(f"example datafile: {len(flags)} flags, {len(users)} users, {ROUNDS} rounds each")
    print(f"decide per flag, direct (no logger= client yet)     {us(direct)}")
    print(f"decide per flag, routed, client without logger=     {us(samples['plain'])}")
    print(f"decide per flag, routed, client with logger=        {us(samples['custom'])}")
    print(f"create_user_context + decide, direct                {us(direct_create)}")
    print(f"create_user_context + decide, routed, no logger=    {us(samples['plain_create'])}")
    print(f"create_user_context + decide, routed, with logger=  {us(samples['custom_create'])}")


if __name__ == "__main__":
    anyio.run(main)
