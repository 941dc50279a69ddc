"""What an evaluation through the OpenFeature provider costs against a direct ``decide``, with the official
SDK's ``decide`` as the usual reference; rounds alternate between all of them.

Run: ``python bench/openfeature.py`` (or ``nox -s bench``). Target: the provider's resolution costs at most
2x a direct ``create_user_context`` + ``decide`` on the same kind of client (measured at the provider; the
OpenFeature client's hooks and context merging come on top and are shown separately). Two groups: a provider
over an ``AsyncOptimizely`` against its ``await user.decide``, and a provider over a ``SyncOptimizely``
against its ``user.decide`` in the calling thread.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This script is named like the openfeature package: import the package with bench/ off the path.
_HERE = Path(__file__).resolve().parent
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
from openfeature import api  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402

sys.path[:] = _saved

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
from _common import NullSink, bench_users, datafiles, official_client, official_settle  # noqa: E402
from _rounds import alternate, ratio  # noqa: E402

from optimizely_async import AsyncOptimizely, SyncOptimizely  # noqa: E402
from optimizely_async.openfeature import OptimizelyProvider  # noqa: E402

TARGET = 2.0
ROUNDS = 11


async def main() -> None:
    for title, df in datafiles():
        print(f"== {title}")
        await run(df)


async def run(df: dict[str, Any]) -> None:
    await run_async(df)
    await run_sync(df)


async def run_async(df: dict[str, Any]) -> None:
    users = bench_users(df, n=200)
    flags = [f["key"] for f in df["featureFlags"]]
    ops = len(users) * len(flags)
    official = official_client(df)
    settle = official_settle(official)
    official_users = [official.create_user_context(uid, attrs) for uid, attrs in users]
    contexts = [EvaluationContext(uid, dict(attrs or {})) for uid, attrs in users]

    def official_round() -> int:
        for user in official_users:
            for key in flags:
                user.decide(key)
        settle()
        return ops

    async with AsyncOptimizely(datafile=df, event_dispatcher=NullSink()) as client:
        provider = OptimizelyProvider(client)
        domain = f"bench-{uuid.uuid4().hex}"
        api.set_provider_and_wait(provider, domain)
        of = api.get_client(domain)
        reused = [client.create_user_context(uid, attrs) for uid, attrs in users]

        async def direct_round() -> int:
            for uid, attrs in users:
                user = client.create_user_context(uid, attrs)
                assert user is not None
                for key in flags:
                    await user.decide(key)
            await client.flush()
            return ops

        async def direct_reused_round() -> int:
            for user in reused:
                assert user is not None
                for key in flags:
                    await user.decide(key)
            await client.flush()
            return ops

        async def provider_bool_round() -> int:
            for context in contexts:
                for key in flags:
                    await provider.resolve_boolean_details_async(key, False, context)
            await client.flush()
            return ops

        async def provider_object_round() -> int:
            for context in contexts:
                for key in flags:
                    await provider.resolve_object_details_async(key, {}, context)
            await client.flush()
            return ops

        async def of_client_round() -> int:
            for context in contexts:
                for key in flags:
                    await of.get_boolean_details_async(key, False, context)
            await client.flush()
            return ops

        def sync_in_thread() -> int:
            for context in contexts:
                for key in flags:
                    provider.resolve_boolean_details(key, False, context)
            return ops

        async def provider_sync_round() -> int:
            count = await anyio.to_thread.run_sync(sync_in_thread)
            await client.flush()
            return count

        variants: list[tuple[str, Callable[[], Any]]] = [
            ("official SDK decide", official_round),
            ("direct decide", direct_round),
            ("direct decide, reused ctx", direct_reused_round),
            ("provider boolean async", provider_bool_round),
            ("provider object async", provider_object_round),
            ("OpenFeature client async", of_client_round),
            ("provider boolean sync*", provider_sync_round),
        ]
        samples = await alternate(variants, ROUNDS)
        api.clear_providers()
    official.close()
    base = "direct decide"
    print(f"datafile: {len(flags)} flags; {len(users)} users; each evaluation sends its impression")
    for name, _ in variants:
        seconds = min(samples[name])
        times = ratio(samples, name, base)
        verdict = ""
        if name.startswith("provider") and name.endswith("async"):
            verdict = "  ok" if times <= TARGET else f"  above the {TARGET:g}x target"
        print(f"{name:<28} best {seconds * 1e6:8.2f} us   x{times:5.2f} of a direct decide{verdict}")
    print("(x: the median over rounds of the time against a direct decide's in the same round)")
    print("* from a worker thread, each call waiting for the client's event loop (anyio.from_thread.run)")


async def run_sync(df: dict[str, Any]) -> None:
    """A provider over a SyncOptimizely: every resolution decides in the calling thread."""
    users = bench_users(df, n=200)
    flags = [f["key"] for f in df["featureFlags"]]
    ops = len(users) * len(flags)
    contexts = [EvaluationContext(uid, dict(attrs or {})) for uid, attrs in users]
    # Built off the event loop, as a WSGI app or a script builds it.
    client = await anyio.to_thread.run_sync(lambda: SyncOptimizely(datafile=df, event_dispatcher=NullSink()))
    provider = OptimizelyProvider(client)
    domain = f"bench-sync-{uuid.uuid4().hex}"
    api.set_provider_and_wait(provider, domain)
    of = api.get_client(domain)

    def direct_round() -> int:
        for uid, attrs in users:
            user = client.create_user_context(uid, attrs)
            assert user is not None
            for key in flags:
                user.decide(key)
        client.flush()
        return ops

    def provider_bool_round() -> int:
        for context in contexts:
            for key in flags:
                provider.resolve_boolean_details(key, False, context)
        client.flush()
        return ops

    def provider_object_round() -> int:
        for context in contexts:
            for key in flags:
                provider.resolve_object_details(key, {}, context)
        client.flush()
        return ops

    async def provider_async_round() -> int:
        for context in contexts:
            for key in flags:
                await provider.resolve_boolean_details_async(key, False, context)
        client.flush()
        return ops

    def of_client_round() -> int:
        for context in contexts:
            for key in flags:
                of.get_boolean_details(key, False, context)
        client.flush()
        return ops

    variants: list[tuple[str, Callable[[], Any]]] = [
        ("sync direct decide", direct_round),
        ("sync provider boolean", provider_bool_round),
        ("sync provider object", provider_object_round),
        ("sync provider boolean async", provider_async_round),
        ("sync OpenFeature client", of_client_round),
    ]
    samples = await alternate(variants, ROUNDS)
    api.clear_providers()
    await anyio.to_thread.run_sync(client.close)
    base = "sync direct decide"
    print("SyncOptimizely: decisions in the calling thread")
    for name, _ in variants:
        times = ratio(samples, name, base)
        verdict = ""
        if name.startswith("sync provider"):
            verdict = "  ok" if times <= TARGET else f"  above the {TARGET:g}x target"
        print(f"{name:<28} best {min(samples[name]) * 1e6:8.2f} us   x{times:5.2f} of a direct decide{verdict}")


if __name__ == "__main__":
    anyio.run(main)
