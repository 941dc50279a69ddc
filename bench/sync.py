"""SyncOptimizely against the official SDK, per call, in one process; and the cost of handing an event to the
loop thread.

Run: ``python bench/sync.py``. Rounds alternate (official, ours, official, ...) and the best round of each
counts; both SDKs send their events to a sink that does nothing (ours: an async dispatcher on its loop
thread; the official: its default batch event processor thread with a no-op dispatcher). Each SDK's event
thread is left to settle, untimed, between rounds so that neither competes with the other's round.

Rows marked "+ events" keep the clock running until the SDK's event thread has handled the round's events:
the whole cost, not just the calling thread's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from _common import NullSink, bench_users, datafiles, official_client, official_settle, row

from optimizely_async import SyncOptimizely
from optimizely_async.events.factory import now_ms

TARGET = 1.0  # "a sync call must cost no more than the official SDK's"
THREADS = 4


def compare(
    official_fn: Callable[[], int],
    our_fn: Callable[[], int],
    official_settle: Callable[[], object],
    our_settle: Callable[[], object],
    *,
    include_settle: bool = False,
    repeat: int = 7,
) -> tuple[float, float]:
    """Best seconds per operation for each SDK, rounds alternating."""
    official_samples: list[float] = []
    our_samples: list[float] = []
    for _ in range(repeat):
        for fn, settle, samples in (
            (official_fn, official_settle, official_samples),
            (our_fn, our_settle, our_samples),
        ):
            settle()
            start = time.perf_counter()
            count = fn()
            if include_settle:
                settle()
            samples.append((time.perf_counter() - start) / count)
            settle()
    return min(official_samples), min(our_samples)


def in_threads(fn: Callable[[], int], threads: int = THREADS) -> Callable[[], int]:
    """``fn`` run by ``threads`` threads at once; the total operation count."""

    def run() -> int:
        counts = [0] * threads

        def work(i: int) -> None:
            counts[i] = fn()

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return sum(counts)

    return run


def run(df: dict[str, Any]) -> None:
    users = bench_users(df, n=300)
    experiments = [e["key"] for e in df["experiments"]]
    flags = [f["key"] for f in df["featureFlags"]]
    variables = [(f["key"], v["key"]) for f in df["featureFlags"] for v in f.get("variables", [])]
    events = [e["key"] for e in df["events"]]
    official = official_client(df)
    ours = SyncOptimizely(df, event_dispatcher=NullSink(), batch_size=10)
    settle_official = official_settle(official)
    print(
        f"datafile: {len(experiments)} experiments, {len(flags)} flags, {len(variables)} variables; {len(users)} users"
    )

    def each(client: Any, method: str, keys: list[Any]) -> Callable[[], int]:
        def calls() -> int:
            call = getattr(client, method)
            for user_id, attrs in users:
                for key in keys:
                    if isinstance(key, tuple):
                        call(*key, user_id, attrs)
                    else:
                        call(key, user_id, attrs)
            return len(users) * len(keys)

        return calls

    def decide_all(client: Any) -> Callable[[], int]:
        def calls() -> int:
            for user_id, attrs in users:
                user = client.create_user_context(user_id, attrs)
                for key in flags:
                    user.decide(key)
            return len(users) * len(flags)

        return calls

    cases: list[tuple[str, Callable[[], int], Callable[[], int]]] = [
        ("get_variation", each(official, "get_variation", experiments), each(ours, "get_variation", experiments)),
        ("activate", each(official, "activate", experiments), each(ours, "activate", experiments)),
        ("is_feature_enabled", each(official, "is_feature_enabled", flags), each(ours, "is_feature_enabled", flags)),
        (
            "get_feature_variable",
            each(official, "get_feature_variable", variables),
            each(ours, "get_feature_variable", variables),
        ),
        ("track", each(official, "track", events), each(ours, "track", events)),
        ("user context + decide", decide_all(official), decide_all(ours)),
    ]
    cases = [case for case in cases if case[1]() > 0]  # (a generated datafile may have no events); warms up
    results = []
    for name, official_fn, our_fn in cases:
        results.append((name, *compare(official_fn, our_fn, settle_official, ours.flush)))
    for name in ("activate", "track"):
        found = [(o, u) for n, o, u in cases if n == name]
        if not found:
            continue
        official_fn, our_fn = found[0]
        results.append(
            (f"{name} + events", *compare(official_fn, our_fn, settle_official, ours.flush, include_settle=True))
        )
        results.append(
            (
                f"{name}, {THREADS} threads + events",
                *compare(in_threads(official_fn), in_threads(our_fn), settle_official, ours.flush, include_settle=True),
            )
        )
    official.close()
    report = ours.close()
    for name, off_s, our_s in results:
        print(row(name, off_s, our_s, TARGET))
    print(f"our events: {report.delivered} delivered, {sum(report.dropped.values())} dropped")


def hand_off_cost(n: int = 50_000, repeat: int = 5) -> None:
    """The calling thread's cost of giving one event to the loop thread: the client's deque with one wake-up
    per batch, against one ``call_soon_threadsafe`` per event (each writes to the loop's self-pipe)."""
    client = SyncOptimizely(_common_datafile(), event_dispatcher=NullSink(), batch_size=100, max_queue_size=10 * n)
    live = client._live()
    config = live.config
    assert config is not None
    event = live._prepare_conversion(config, "purchase", "u", None, None, now_ms())
    assert not isinstance(event, str)
    runner = client._runner
    runner.start(wait=True)
    loop = runner._loop
    assert loop is not None
    offer = live._offer  # on the loop thread: straight into the queue

    def via_deque() -> None:
        for _ in range(n):
            runner.hand_off(event)

    def via_call_soon() -> None:
        for _ in range(n):
            loop.call_soon_threadsafe(offer, event)

    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, fn in (
            ("deque + one wake-up per batch", via_deque),
            ("call_soon_threadsafe per event", via_call_soon),
        ):
            client.flush()
            start = time.perf_counter()
            fn()
            handed = time.perf_counter() - start
            client.flush()
            total = time.perf_counter() - start
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], handed / n), min(old[1], total / n))
    for name, (handed, total) in best.items():
        print(
            f"hand-off, {name:<32} calling thread {handed * 1e6:6.2f} us/event   "
            f"until delivered {total * 1e6:6.2f} us/event"
        )
    client.close()


def _common_datafile() -> dict[str, Any]:
    from _common import example_datafile

    return example_datafile()


def main() -> None:
    for title, df in datafiles():
        print(f"== {title}")
        run(df)
    print("== handing events to the loop thread (example datafile)")
    hand_off_cost()


if __name__ == "__main__":
    main()
