"""What OpenTelemetry metrics cost per decision: decide with no metrics (today), with a no-op meter, with the
OpenTelemetry SDK recording, and the official SDK as the usual reference; rounds alternate between them.

Run: ``python bench/metrics.py`` (or ``nox -s bench``). Target: with a no-op meter (the OpenTelemetry API
installed, no meter provider set, or a no-op one) a decision costs within 5 % of today's. "today again" is a
second client exactly like today's: how far it lands from 1.000 is the noise of the run (a busy machine
moves these figures by several per cent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import (
    NullSink,
    bench_users,
    datafiles,
    official_client,
    official_decide_round,
    official_settle,
    our_decide_round,
)
from _rounds import alternate, ratio
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from optimizely_async import AsyncOptimizely
from optimizely_async.metrics import attach, instrument

TARGET = 1.05  # a no-op meter's cost per decision, at most this times today's
ROUNDS = 21


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
    reader = InMemoryMetricReader()
    sdk_provider = MeterProvider(metric_readers=[reader])

    today = AsyncOptimizely(datafile=df, event_dispatcher=NullSink())
    today_again = AsyncOptimizely(datafile=df, event_dispatcher=NullSink())  # A/A: the measurement's noise
    unset = AsyncOptimizely(datafile=df, event_dispatcher=NullSink())  # attach() ran: no global provider set
    noop = AsyncOptimizely(datafile=df, event_dispatcher=NullSink())
    recording = AsyncOptimizely(datafile=df, event_dispatcher=NullSink())
    assert today._metrics is None and unset._metrics is None and attach(unset) is None
    noop_metrics = instrument(noop, NoOpMeterProvider())
    assert instrument(recording, sdk_provider) is not None
    print(
        f"datafile: {len(flags)} flags; {len(users)} users; "
        f"the no-op meter provider instruments the client: {noop_metrics is not None}"
    )

    official_round = official_decide_round(official_users, flags, after=settle)

    def ours(client: AsyncOptimizely) -> Callable[[], Awaitable[int]]:
        contexts = [client.create_user_context(uid, attrs) for uid, attrs in users]
        return our_decide_round(contexts, flags, after=client.flush)

    async with today, today_again, unset, noop, recording:
        variants: list[tuple[str, Callable[[], Any]]] = [
            ("official SDK", official_round),
            ("today (no metrics)", ours(today)),
            ("today again (noise)", ours(today_again)),
            ("API, no provider set", ours(unset)),
            ("no-op meter provider", ours(noop)),
            ("SDK meter, recording", ours(recording)),
        ]
        samples = await alternate(variants, ROUNDS)
    official.close()
    sdk_provider.shutdown()
    base = "today (no metrics)"
    for name, _ in variants:
        seconds = min(samples[name])
        times = ratio(samples, name, base)
        verdict = ""
        if name in ("API, no provider set", "no-op meter provider"):
            verdict = "  ok" if times <= TARGET else f"  above the {TARGET:g}x target"
        print(
            f"{name:<24} best {seconds * 1e6:7.2f} us per decision (incl. its event)   x{times:5.3f} of today{verdict}"
        )
    print("(x: the median over rounds of the time against today's in the same round)")


if __name__ == "__main__":
    anyio.run(main)
