"""Datafile benchmarks: config build time against the official SDK, and event-loop stalls during live updates.

Run from the repository root::

    python bench/datafile.py            # about 5 minutes
    python bench/datafile.py --quick    # fewer runs, about 2 minutes

1. **Parse stall.** The longest lateness of a 1 ms ticker while a worker thread (``anyio.to_thread``) parses
   the datafile and nothing else runs: ``json.loads`` alone (the floor: one C call holding the GIL), our
   ``parse_config`` and the official ``ProjectConfig``.
2. **Event-loop stalls under load.** A client polls a local HTTP server (a child process) every 50 ms; four
   decision tasks run, either paced (1 ms sleep after each decision: a busy service) or flat out (the loop never
   idles); a ticker task sleeps 1 ms in a loop and records how late it wakes, so the longest lateness is the
   longest stall of the event loop. Quiet windows alternate with update windows (the server switches between
   two ~1 MB revisions; the window lasts until the new config is in use and the old one is gone) of the same
   total length, so the machine's own hiccups weigh on both phases alike; the idle ticker, before the client
   exists, gives the machine's floor. Collector pauses are shown next to the stalls, because a collection holds
   the GIL and stops the loop. Each run is a fresh process; asyncio and trio; the paced load is run several
   times, because this machine's speed comes and goes in bursts of tens of milliseconds.

   **The machine's speed, probed.** In those bursts the CPU runs the loop's thread 10-30 times slower (a fixed
   bit of Python, on the CPU the whole time), with nothing of ours running too, and a loop that is busy at all
   falls behind by several milliseconds, whatever runs on it. So each wake-up of the ticker also times a fixed
   pure-Python probe in CPU time (which leaves out waits for the GIL: a worker thread that holds it still shows
   as a stall), and the ``normal`` column gives the longest stall of the ticks whose probes on both sides
   (before the sleep and after the wake-up) ran at most 3x the run's median. ``injected`` is its positive
   control: stalls of 8 ms made on purpose (the loop blocked, the loop busy, a worker thread holding the GIL)
   must show there, but for the few that meet a slow probe by chance.
3. **Config build.** A generated ~1 MB datafile (hundreds of flags with feature tests and multi-rule rollouts,
   variables of every type, typed and legacy audiences, mutual-exclusion groups, events) is turned into a config
   by ``optimizely_async.config.project_config.parse_config(bytes)`` and by the official SDK 5.x:
   ``ProjectConfig(datafile_str, logger, error_handler)`` (no JSON-schema validation), its
   ``StaticConfigManager`` (JSON-schema validation, ``ProjectConfig`` and the ``OptimizelyConfig`` projection)
   and the whole ``Optimizely(datafile=...)`` constructor. Medians of rounds that alternate between the first
   three, in one process. The whole client runs on its own and last, because the official ``Optimizely`` keeps
   ~40k objects alive per instance even after ``close()``.

Nothing here asserts: it prints tables. Targets: parse at least 3x faster than the official config build; the
longest stall while updates are applied under 5 ms (both the raw figure and the one at the machine's usual speed
are printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import itertools
import json
import logging
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest, NotificationType  # noqa: E402
from optimizely_async.config.project_config import parse_config  # noqa: E402

Json = Any

# ---------------------------------------------------------------------------------------------- the datafile

COUNTRIES = ("US", "GB", "DE", "FR", "JP", "BR", "IN", "CA", "AU", "ES")
PLANS = ("free", "basic", "pro", "enterprise")
DEVICES = ("iphone", "android", "desktop", "tablet")
VARIABLE_TYPES = ("boolean", "integer", "double", "string", "json")


class _Ids:
    """Numeric string ids, as real datafiles have."""

    def __init__(self) -> None:
        self._next = 10_000_000

    def __call__(self) -> str:
        self._next += 1
        return str(self._next)


def _leaf(rng: random.Random, attributes: list[str]) -> dict[str, Json]:
    kind = rng.randrange(8)
    if kind == 0:
        return {"type": "custom_attribute", "name": "country", "match": "exact", "value": rng.choice(COUNTRIES)}
    if kind == 1:
        return {"type": "custom_attribute", "name": "plan", "match": "exact", "value": rng.choice(PLANS)}
    if kind == 2:
        return {
            "type": "custom_attribute",
            "name": "age",
            "match": rng.choice(("gt", "ge", "lt", "le")),
            "value": rng.randrange(13, 70),
        }
    if kind == 3:
        return {
            "type": "custom_attribute",
            "name": "app_version",
            "match": rng.choice(("semver_ge", "semver_lt")),
            "value": f"{rng.randrange(1, 6)}.{rng.randrange(0, 10)}.{rng.randrange(0, 20)}",
        }
    if kind == 4:
        return {
            "type": "custom_attribute",
            "name": "email",
            "match": "substring",
            "value": rng.choice(("@example.com", "@corp.example", ".edu")),
        }
    if kind == 5:
        return {"type": "custom_attribute", "name": "beta_tester", "match": "exact", "value": rng.random() < 0.5}
    if kind == 6:
        return {"type": "custom_attribute", "name": rng.choice(attributes), "match": "exists"}
    return {"type": "custom_attribute", "name": "lifetime_value", "match": "gt", "value": round(rng.uniform(0, 500), 2)}


def _tree(rng: random.Random, attributes: list[str], depth: int) -> list[Json]:
    op = rng.choice(("and", "or", "or", "not"))
    count = 1 if op == "not" else rng.randrange(1, 4)
    children: list[Json] = [
        _tree(rng, attributes, depth - 1) if depth > 0 and rng.random() < 0.3 else _leaf(rng, attributes)
        for _ in range(count)
    ]
    return [op, *children]


def _variable_value(rng: random.Random, var_type: str) -> str:
    if var_type == "boolean":
        return rng.choice(("true", "false"))
    if var_type == "integer":
        return str(rng.randrange(-1000, 100_000))
    if var_type == "double":
        return repr(round(rng.uniform(-100, 100), 4))
    if var_type == "json":
        return json.dumps(
            {
                "title": f"Title {rng.randrange(1000)}",
                "items": [rng.randrange(100) for _ in range(4)],
                "style": {"color": rng.choice(("red", "blue", "green")), "size": rng.randrange(8, 32)},
            }
        )
    return f"text-{rng.randrange(1_000_000)}"


def _allocation(rng: random.Random, ids: list[str], total: int = 10_000) -> list[dict[str, Json]]:
    cuts = sorted(rng.sample(range(1, total), len(ids) - 1)) if len(ids) > 1 else []
    return [{"entityId": entity, "endOfRange": end} for entity, end in zip(ids, [*cuts, total], strict=True)]


def build_datafile(revision: str, *, flags: int = 170, seed: int = 20240101) -> dict[str, Json]:
    """A large, valid datafile. The same ``seed`` gives the same structure; ``revision`` also reshuffles the
    traffic splits, so two revisions decide differently."""
    rng = random.Random(seed)
    traffic = random.Random(f"{seed}-{revision}")
    new_id = _Ids()

    attribute_keys = ["country", "plan", "age", "app_version", "email", "beta_tester", "lifetime_value", "device"]
    attribute_keys += [f"custom_attr_{i}" for i in range(24)]
    attributes = [{"id": new_id(), "key": key} for key in attribute_keys]

    typed_audiences: list[dict[str, Json]] = []
    audiences: list[dict[str, Json]] = []
    dummy = json.dumps(
        [
            "or",
            {"match": "exact", "name": "$opt_dummy_attribute", "type": "custom_attribute", "value": "$opt_dummy_value"},
        ]
    )
    for i in range(120):
        audience_id = new_id()
        name = f"Audience {i}"
        conditions = ["and", ["or", _tree(rng, attribute_keys, 2)]]
        typed_audiences.append({"id": audience_id, "name": name, "conditions": conditions})
        audiences.append({"id": audience_id, "name": name, "conditions": dummy})
    for i in range(30):  # legacy audiences with string conditions
        leaf = {"name": "device", "type": "custom_attribute", "value": rng.choice(DEVICES)}
        audiences.append(
            {"id": new_id(), "name": f"Legacy {i}", "conditions": json.dumps(["and", ["or", ["or", leaf]]])}
        )
    audience_ids = [a["id"] for a in typed_audiences]

    def audience_conditions() -> list[Json]:
        picked = rng.sample(audience_ids, rng.randrange(1, 4))
        return [rng.choice(("or", "and")), *picked] if len(picked) > 1 else ["or", *picked]

    experiments: list[dict[str, Json]] = []
    grouped: list[dict[str, Json]] = []
    feature_flags: list[dict[str, Json]] = []
    rollouts: list[dict[str, Json]] = []
    for f in range(flags):
        variables = []
        for t, var_type in enumerate(VARIABLE_TYPES * (1 + f % 2)):
            variable: dict[str, Json] = {
                "id": new_id(),
                "key": f"var_{t}_{var_type}",
                "type": "string" if var_type == "json" else var_type,
                "defaultValue": _variable_value(rng, var_type),
            }
            if var_type == "json":
                variable["subType"] = "json"
            variables.append(variable)

        def variations(count: int, prefix: str, flag_vars: list[dict[str, Json]] = variables) -> list[dict[str, Json]]:
            out: list[dict[str, Json]] = []
            for v in range(count):
                out.append(
                    {
                        "id": new_id(),
                        "key": f"{prefix}_{v}",
                        "featureEnabled": v > 0 or rng.random() < 0.3,
                        "variables": [
                            {"id": var["id"], "value": _variable_value(rng, str(var.get("subType") or var["type"]))}
                            for var in flag_vars
                            if rng.random() < 0.8
                        ],
                    }
                )
            return out

        experiment_ids: list[str] = []
        layer = new_id()
        exp_variations = variations(rng.randrange(2, 5), f"flag{f}_var")
        experiment: dict[str, Json] = {
            "id": new_id(),
            "key": f"flag_{f}_test",
            "status": "Running" if rng.random() < 0.9 else "Paused",
            "layerId": layer,
            "audienceIds": [],
            "audienceConditions": audience_conditions(),
            "variations": exp_variations,
            "trafficAllocation": _allocation(
                traffic, [v["id"] for v in exp_variations], traffic.randrange(2000, 10_001)
            ),
            "forcedVariations": {f"qa_user_{f}": exp_variations[0]["key"]},
        }
        experiment_ids.append(experiment["id"])
        (grouped if f % 8 == 0 else experiments).append(experiment)

        rules = []
        rollout_id = new_id()
        for r in range(4):
            rule_variations = variations(1, f"flag{f}_rule{r}")
            everyone_else = r == 3
            rules.append(
                {
                    "id": new_id(),
                    "key": "everyone_else" if everyone_else else f"flag_{f}_rule_{r}",
                    "status": "Running",
                    "layerId": rollout_id,
                    "audienceIds": [] if everyone_else else [rng.choice(audience_ids)],
                    **({} if everyone_else else {"audienceConditions": audience_conditions()}),
                    "variations": rule_variations,
                    "trafficAllocation": [
                        {"entityId": rule_variations[0]["id"], "endOfRange": traffic.randrange(1000, 10_001)}
                    ],
                    "forcedVariations": {},
                }
            )
        rollouts.append({"id": rollout_id, "experiments": rules})
        feature_flags.append(
            {
                "id": new_id(),
                "key": f"flag_{f}",
                "rolloutId": rollout_id,
                "experimentIds": experiment_ids,
                "variables": variables,
            }
        )

    groups = []
    for g in range(0, len(grouped), 5):
        members = grouped[g : g + 5]
        groups.append(
            {
                "id": new_id(),
                "policy": "random",
                "trafficAllocation": _allocation(traffic, [e["id"] for e in members]),
                "experiments": members,
            }
        )

    all_experiment_ids = [e["id"] for e in experiments] + [e["id"] for e in grouped]
    events = [
        {"id": new_id(), "key": f"event_{i}", "experimentIds": rng.sample(all_experiment_ids, rng.randrange(0, 6))}
        for i in range(150)
    ]
    return {
        "version": "4",
        "accountId": "12133785640",
        "projectId": "6460519658291200",
        "revision": revision,
        "sdkKey": "BenchSdkKey",
        "environmentKey": "production",
        "anonymizeIP": True,
        "botFiltering": False,
        "sendFlagDecisions": True,
        "attributes": attributes,
        "audiences": audiences,
        "typedAudiences": typed_audiences,
        "experiments": experiments,
        "groups": groups,
        "featureFlags": feature_flags,
        "rollouts": rollouts,
        "events": events,
        "integrations": [],
    }


def describe(datafile: dict[str, Json], size: int) -> str:
    rules = sum(len(r["experiments"]) for r in datafile["rollouts"])
    grouped = sum(len(g["experiments"]) for g in datafile["groups"])
    variables = sum(len(f["variables"]) for f in datafile["featureFlags"])
    return (
        f"{size / 1e6:.2f} MB: {len(datafile['featureFlags'])} flags, {len(datafile['experiments']) + grouped} "
        f"experiments ({grouped} in {len(datafile['groups'])} groups), {rules} rollout rules, {variables} variables, "
        f"{len(datafile['typedAudiences'])} typed + {len(datafile['audiences'])} legacy audiences, "
        f"{len(datafile['events'])} events"
    )


# ---------------------------------------------------------------------------------------------- config build


def median_ms(fn: Callable[[], object], *, runs: int, budget: float) -> tuple[float, int]:
    """Median wall time of ``fn`` in ms: one warm-up, then up to ``runs`` runs (at least 3) within ``budget`` s."""
    fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < runs and (len(times) < 3 or time.perf_counter() - started < budget):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(times)


def bench_parse(body: bytes, *, runs: int, budget: float) -> list[tuple[str, float, int, float | None]]:
    """(name, median ms, runs, median ms with the garbage collector off or None) per contestant."""
    from optimizely import optimizely as official
    from optimizely import project_config
    from optimizely.config_manager import StaticConfigManager
    from optimizely.error_handler import NoOpErrorHandler
    from optimizely.logger import NoOpLogger

    text = body.decode()
    logger, error_handler = NoOpLogger(), NoOpErrorHandler()

    # Check that both sides accept the datafile before timing anything.
    ours = parse_config(body)
    theirs = project_config.ProjectConfig(text, logger, error_handler)
    assert ours.revision == theirs.revision
    manager = StaticConfigManager(datafile=text, logger=logger, error_handler=error_handler)
    if manager.get_config() is None:
        raise SystemExit("the official SDK rejected the generated datafile (JSON schema)")

    def official_client() -> None:
        client = official.Optimizely(datafile=text, logger=logger)
        if not client.is_valid:
            raise SystemExit("the official SDK rejected the generated datafile")
        client.close()

    del ours, theirs, manager
    # The three builds are timed in alternating rounds (rotating which goes first), so that a drift of this
    # machine's speed during the run weighs on all of them alike. The whole official client runs on its own,
    # last: each instance leaves objects behind that would slow every later build's garbage collections.
    contestants: list[tuple[str, Callable[[], object]]] = [
        ("ours: parse_config(bytes)", lambda: parse_config(body)),
        ("official: ProjectConfig(str)", lambda: project_config.ProjectConfig(text, logger, error_handler)),
        (
            "official: StaticConfigManager (schema)",
            lambda: StaticConfigManager(datafile=text, logger=logger, error_handler=error_handler),
        ),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in contestants}
    for _, fn in contestants:
        fn()  # warm-up
    started = time.perf_counter()
    rounds = 0
    while rounds < runs and (rounds < 3 or time.perf_counter() - started < budget * 3):
        gc.collect()
        for i in range(len(contestants)):
            name, fn = contestants[(rounds + i) % len(contestants)]
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
        rounds += 1
    results: list[tuple[str, float, int, float | None]] = []
    for index, (name, fn) in enumerate(contestants):
        no_gc: float | None = None
        if index < 2:  # the compared pair: how much of it is garbage collection?
            gc.collect()
            gc.disable()
            try:
                no_gc, _ = median_ms(fn, runs=max(3, runs // 2), budget=budget / 2)
            finally:
                gc.enable()
        results.append((name, statistics.median(times[name]), len(times[name]), no_gc))
    gc.collect()
    ms, n = median_ms(official_client, runs=runs, budget=budget)
    results.append(("official: Optimizely(datafile=...)", ms, n, None))
    return results


# ---------------------------------------------------------------------------------------------- the server


def serve_datafiles(paths: list[str]) -> None:
    """The child process: serve the datafile files in ``paths`` (GET /datafiles/<key>.json, with an ETag and
    304s); ``GET /select/<i>`` makes the i-th the current one. Prints its port, serves until killed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = [Path(path).read_bytes() for path in paths]
    current = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.startswith("/select/"):
                current[0] = int(self.path.rsplit("/", 1)[1])
                self._reply(200, b"", {})
                return
            index = current[0]
            etag = f'"revision-{index}"'
            if self.headers.get("If-None-Match") == etag:
                self._reply(304, b"", {"ETag": etag})
            else:
                self._reply(200, bodies[index], {"ETag": etag, "Content-Type": "application/json"})

        def _reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class ChildDatafileServer:
    """The datafile server in a child process, so that its work never competes with the measured loop for
    the GIL (an in-process server thread would stall the loop the SDK is measured on)."""

    def __init__(self, paths: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-datafiles", *paths], stdout=subprocess.PIPE, text=True, cwd=str(ROOT)
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def select(self, index: int) -> None:
        with urllib.request.urlopen(f"{self.url}/select/{index}", timeout=10) as response:
            response.read()

    def __enter__(self) -> ChildDatafileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()


# ---------------------------------------------------------------------------------------------- stalls


class NullDispatcher:
    """Accepts every event request without sending it anywhere."""

    def __init__(self) -> None:
        self.events = 0

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.events += request.event_count
        return DispatchResult(delivered=True, status=204)


@dataclass
class PhaseStats:
    """1 ms ticker lateness in one phase (times in ms)."""

    seconds: float = 0.0
    ticks: int = 0
    max_ms: float = float("nan")
    p99_ms: float = float("nan")
    p999_ms: float = float("nan")
    #: Ticks more than 5 ms late.
    over_5ms: int = 0
    #: Longest collector pause in the phase.
    gc_ms: float = 0.0
    #: Longest lateness of a tick that no collector pause overlapped.
    no_gc_max_ms: float = float("nan")
    #: Longest lateness of a tick during which the machine ran at its usual speed: the speed probe run just
    #: before the tick's sleep and the one run just after its wake-up both took at most SLOW_PROBE times the
    #: run's median probe time.
    normal_speed_max_ms: float = float("nan")
    #: Ticks left out of ``normal_speed_max_ms`` because a probe next to them ran over SLOW_PROBE times slower.
    slow_ticks: int = 0
    #: Ticks more than 5 ms late among those not left out.
    normal_speed_over_5ms: int = 0
    #: Ticks more than 5 ms late among those left out, and the smallest slow-down of the slower probe next to
    #: them (its time over the run's median).
    slow_over_5ms: int = 0
    slow_over_5ms_least_factor: float = float("nan")


@dataclass
class StallResult:
    backend: str
    #: The ticker alone, before the client exists: how late this machine wakes a sleeping loop anyway.
    idle: PhaseStats = dataclasses.field(default_factory=PhaseStats)
    #: Four tasks doing plain Python work (no SDK, no threads) at the decision tasks' pace: what this machine
    #: does to a loop that is about as busy, with nothing of ours in it.
    plain: PhaseStats = dataclasses.field(default_factory=PhaseStats)
    #: The positive control: the ticker next to stalls of INJECTED_MS made on purpose (see injected_stalls).
    injected: PhaseStats = dataclasses.field(default_factory=PhaseStats)
    injected_count: int = 0
    #: The decision load, no update (windows interleaved with the update windows, of the same total length).
    baseline: PhaseStats = dataclasses.field(default_factory=PhaseStats)
    #: The decision load while a new revision is fetched, parsed, swapped in and the old one freed.
    updates: PhaseStats = dataclasses.field(default_factory=PhaseStats)
    updates_applied: int = 0
    #: Seconds from the server's switch to the new revision in use, per update (polls every 50 ms).
    apply_seconds: list[float] = dataclasses.field(default_factory=list)
    decisions: int = 0
    events: int = 0


class GcTimer:
    """Collector pauses (in any thread; a collection holds the GIL), while installed."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._start = 0.0

    def __call__(self, event: str, info: dict[str, int]) -> None:
        if event == "start":
            self._start = time.perf_counter()
        else:
            self.intervals.append((self._start, time.perf_counter()))

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


#: (start, end, lateness in s, the slower of the speed probes run just before and just after, in s)
Tick = tuple[float, float, float, float]

#: A tick counts as run at the machine's usual speed when neither speed probe next to it (the one before its sleep,
#: the one after its wake-up) took more than this many times the run's median probe time. Here about 1 tick in 30
#: has a slow probe next to it, so a stall of ours that came with every update could not hide: the injected
#: phase shows how many real stalls are left out by chance.
SLOW_PROBE = 3.0


def speed_probe() -> float:
    """The loop thread's CPU time for a fixed bit of pure Python that allocates nothing: the fastest of three
    runs of about 4 us each (here).

    It measures how fast this machine runs the loop's thread at that moment, and nothing of the SDK: CPU time
    leaves out waiting for the GIL (held by a worker thread or a collection in it), a loop that allocates
    nothing can't start a collection, and the fastest of three leaves out a one-off cost such as the system
    calls of one GIL hand-over. On this virtual machine the CPU now and then runs 10-30 times slower for tens of
    milliseconds (the idle and plain phases show it too); the probe shows those bursts. The ``injected`` phase
    checks that real stalls are not mistaken for them.
    """
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        for _ in itertools.repeat(None, 400):
            pass
        best = min(best, time.thread_time() - start)
    return best


def phase_stats(
    ticks: list[Tick], seconds: float, pauses: list[tuple[float, float]], probe_median: float
) -> PhaseStats:
    late = sorted(t[2] for t in ticks)
    if not late:
        return PhaseStats(seconds=seconds)
    in_phase = [(a, b) for a, b in pauses if any(a < t1 and b > t0 for t0, t1, _, _ in ticks)]
    clean = [x for t0, t1, x, _ in ticks if not any(a < t1 and b > t0 for a, b in in_phase)]
    normal = [x for _, _, x, probe in ticks if probe <= SLOW_PROBE * probe_median]
    slow_late = [probe for _, _, x, probe in ticks if probe > SLOW_PROBE * probe_median and x > 0.005]
    return PhaseStats(
        seconds=seconds,
        ticks=len(late),
        max_ms=late[-1] * 1000,
        p99_ms=late[int(len(late) * 0.99)] * 1000,
        p999_ms=late[int(len(late) * 0.999)] * 1000,
        over_5ms=sum(x > 0.005 for x in late),
        gc_ms=max((b - a for a, b in in_phase), default=0.0) * 1000,
        no_gc_max_ms=max(clean) * 1000 if clean else float("nan"),
        normal_speed_max_ms=max(normal) * 1000 if normal else float("nan"),
        slow_ticks=len(ticks) - len(normal),
        normal_speed_over_5ms=sum(x > 0.005 for x in normal),
        slow_over_5ms=len(slow_late),
        slow_over_5ms_least_factor=min(slow_late) / probe_median if slow_late else float("nan"),
    )


async def ticker(ticks: Callable[[], list[Tick]], stop: anyio.Event) -> None:
    """Sleep 1 ms in a loop and record how late each wake-up is (into the list ``ticks()`` returns at that
    moment): the longest lateness is the longest stall. Each wake-up also runs the speed probe."""
    before = speed_probe()
    while not stop.is_set():
        t0 = time.perf_counter()
        await anyio.sleep(0.001)
        t1 = time.perf_counter()
        after = speed_probe()
        ticks().append((t0, t1, t1 - t0 - 0.001, max(before, after)))
        before = after


async def idle_floor(seconds: float, *, workers: int = 0, pace: float = 0.0) -> list[Tick]:
    """The ticker alone, or next to ``workers`` tasks that each do ~50 us of plain Python work and then sleep
    ``pace`` seconds, in a loop."""
    ticks: list[Tick] = []
    stop = anyio.Event()

    async def work() -> None:
        while not stop.is_set():
            total = 0
            for i in range(1500):
                total += i
            await anyio.sleep(pace)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, lambda: ticks, stop)
        for _ in range(workers):
            tg.start_soon(work)
        await anyio.sleep(seconds)
        stop.set()
    return ticks


INJECTED_MS = 8.0


async def injected_stalls(rounds: int) -> tuple[list[Tick], int]:
    """The positive control for the speed probe: the ticker next to stalls of INJECTED_MS made on purpose, in
    three ways, each ``rounds`` times: the loop thread blocked in ``time.sleep`` (off the CPU), the loop thread
    busy in Python, and a worker thread holding the GIL in one C call (``sum`` over a range). Each should show
    as one tick over 5 ms late at the machine's usual speed; one the probe took for a slow machine would go
    missing. Returns the ticks and the number of stalls injected."""
    length = INJECTED_MS / 1000
    per_item = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        sum(range(200_000))
        per_item = min(per_item, (time.perf_counter() - start) / 200_000)
    items = int(length / per_item)

    def busy() -> None:
        end = time.perf_counter() + length
        while time.perf_counter() < end:
            pass

    ticks: list[Tick] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, lambda: ticks, stop)
        for _ in range(rounds):
            for stall in (functools.partial(time.sleep, length), busy):
                await anyio.sleep(0.05)
                stall()
            await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(sum, range(items))
        await anyio.sleep(0.05)
        stop.set()
    return ticks, 3 * rounds


async def measure_stalls(
    backend: str, paths: list[str], revisions: tuple[str, str], *, flips: int, pace: float, idle: float = 3.0
) -> StallResult:
    """The decision load with and without updates, in alternating windows of equal length.

    Four tasks decide flags in a loop; each sleeps ``pace`` seconds after a decision (0: flat out, so the loop
    never idles and every stall of the load itself shows; 0.001: a busy service that leaves the loop room).

    Each update window starts with the server switching revision and lasts until the client has swapped the
    new config in and the old one is gone (freed, or taken apart in a worker thread), plus 50 ms. Each quiet
    window that follows lasts as long as the update window before it, so both phases cover the same time and
    the same drift of the machine. The first (and warm-up) load is not counted.
    """
    result = StallResult(backend)
    gc_timer = GcTimer()
    with gc_timer:
        idle_ticks = await idle_floor(idle)
        plain_ticks = await idle_floor(idle, workers=4, pace=pace)
        injected_ticks, result.injected_count = await injected_stalls(5)
    flag_keys = [f"flag_{i}" for i in range(0, 170, 5)]
    dispatcher = NullDispatcher()
    with ChildDatafileServer(paths) as server:
        server.select(0)
        client = AsyncOptimizely(
            sdk_key="BenchSdkKey",
            datafile_url_template=server.url + "/datafiles/{sdk_key}.json",
            update_interval=0.05,
            event_dispatcher=dispatcher,
            batch_size=50,
        )
        updates = 0

        def on_update() -> None:
            nonlocal updates
            updates += 1

        client.notification_center.add_notification_listener(NotificationType.OPTIMIZELY_CONFIG_UPDATE, on_update)
        ticks: dict[str, list[Tick]] = {"warmup": [], "baseline": [], "updates": []}
        seconds = {"baseline": 0.0, "updates": 0.0}
        phase = ["warmup"]
        stop = anyio.Event()

        async def decider(worker: int) -> None:
            rng = random.Random(worker)
            user = 0
            while not stop.is_set():
                user += 1
                user_id = f"user-{worker}-{user}"
                attrs = {
                    "country": rng.choice(COUNTRIES),
                    "plan": rng.choice(PLANS),
                    "age": rng.randrange(13, 80),
                    "app_version": f"{rng.randrange(1, 6)}.{rng.randrange(10)}.0",
                }
                flag = rng.choice(flag_keys)
                if user % 2:
                    await client.is_feature_enabled(flag, user_id, attrs)
                else:
                    context = client.create_user_context(user_id, attrs)
                    if context is not None:
                        await context.decide(flag)
                result.decisions += 1
                await anyio.sleep(pace)

        async with client:
            if not await client.wait_until_ready(10):
                raise SystemExit("the client never loaded the datafile")
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker, lambda: ticks[phase[0]], stop)
                for worker in range(4):
                    tg.start_soon(decider, worker)
                await anyio.sleep(0.5)
                window = 1.0
                with gc_timer:
                    for flip in range(flips):
                        phase[0] = "baseline"
                        await anyio.sleep(window)
                        seconds["baseline"] += window
                        phase[0] = "updates"
                        started = time.perf_counter()
                        index = (flip + 1) % 2
                        assert client.config is not None
                        old = weakref.ref(client.config)
                        await anyio.to_thread.run_sync(server.select, index)
                        with anyio.fail_after(30):
                            while client.config is None or client.config.revision != revisions[index]:
                                await anyio.sleep(0.005)
                            result.apply_seconds.append(time.perf_counter() - started)
                            while old() is not None:
                                await anyio.sleep(0.005)
                        await anyio.sleep(0.05)
                        window = time.perf_counter() - started
                        seconds["updates"] += window
                        result.updates_applied += 1
                stop.set()
            await client.flush()
        result.events = dispatcher.events
    if updates - 1 != result.updates_applied:  # the first load is not an update
        raise SystemExit(f"expected {result.updates_applied} config updates, saw {updates - 1}")
    # One reference speed for the whole run: the median probe over every phase of it.
    everything = idle_ticks + plain_ticks + injected_ticks + ticks["warmup"] + ticks["baseline"] + ticks["updates"]
    probe_median = statistics.median(t[3] for t in everything)
    result.idle = phase_stats(idle_ticks, idle, gc_timer.intervals, probe_median)
    result.plain = phase_stats(plain_ticks, idle, gc_timer.intervals, probe_median)
    injected_seconds = injected_ticks[-1][1] - injected_ticks[0][0]
    result.injected = phase_stats(injected_ticks, injected_seconds, gc_timer.intervals, probe_median)
    for name in ("baseline", "updates"):
        setattr(result, name, phase_stats(ticks[name], seconds[name], gc_timer.intervals, probe_median))
    return result


async def thread_parse_stall(body: bytes, parse: Callable[[bytes], object], *, runs: int) -> float:
    """Longest lateness (ms) of a 1 ms ticker while ``parse(body)`` runs ``runs`` times in a worker thread, with
    nothing else going on: the part of a stall that comes from the parse itself (GIL and GC)."""
    warmup: list[Tick] = []
    measured: list[Tick] = []
    current = [warmup]
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, lambda: current[0], done)
        await anyio.sleep(0.02)
        current[0] = measured
        for _ in range(runs):
            await anyio.to_thread.run_sync(parse, body)
            await anyio.sleep(0.01)
        done.set()
    return max((late for _, _, late, _ in measured), default=0.0) * 1000


def _sdk_parse(body: bytes) -> object:
    from optimizely_async.config.loader import Pacer

    return parse_config(body, Pacer())


def bench_thread_stalls(body: bytes, *, runs: int) -> list[tuple[str, float]]:
    from optimizely import project_config
    from optimizely.error_handler import NoOpErrorHandler
    from optimizely.logger import NoOpLogger

    def official(data: bytes) -> object:
        return project_config.ProjectConfig(data.decode(), NoOpLogger(), NoOpErrorHandler())

    rows = []
    for name, parse in (
        ("json.loads only (the floor)", json.loads),
        ("ours: parse_config, paced (what the SDK runs)", _sdk_parse),
        ("official: ProjectConfig", official),
    ):
        gc.collect()
        rows.append((name, anyio.run(functools.partial(thread_parse_stall, body, parse, runs=runs))))
    return rows


def run_stalls_child(
    backend: str, paths: list[str], revisions: tuple[str, str], *, flips: int, pace: float
) -> StallResult:
    """:func:`measure_stalls` in a fresh process; its result comes back as one JSON line."""
    command = [sys.executable, __file__, "--stalls", backend, *paths, *revisions, str(flips), str(pace)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=str(ROOT)).stdout
    data = json.loads(output.strip().splitlines()[-1])
    for name in ("idle", "plain", "injected", "baseline", "updates"):
        data[name] = PhaseStats(**data[name])
    return StallResult(**data)


def stalls_child(argv: list[str]) -> None:
    backend, path0, path1, rev0, rev1, flips, pace = argv
    logging.getLogger("optimizely_async").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import httpx  # noqa: F401  (imported before the freeze, as an application would have it)

    gc.collect()
    run = functools.partial(measure_stalls, backend, [path0, path1], (rev0, rev1), flips=int(flips), pace=float(pace))
    result = anyio.run(run, backend=backend)
    print(json.dumps(dataclasses.asdict(result)))


def _ms_list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def print_stalls(mode: str, results: list[StallResult]) -> None:
    print(f"event-loop stalls, {mode}: lateness of a 1 ms ticker, in ms")
    print(
        f"{'backend':<9}{'phase':<10}{'seconds':>8}{'ticks':>7}{'max':>7}{'no-GC':>7}{'p99':>6}{'p99.9':>7}"
        f"{'>5ms':>6}{'GC':>7}{'normal':>8}{'>5ms':>6}{'slow':>6}"
    )
    for r in results:
        for name in ("idle", "plain", "injected", "baseline", "updates"):
            st: PhaseStats = getattr(r, name)
            print(
                f"{r.backend:<9}{name:<10}{st.seconds:>8.1f}{st.ticks:>7}{st.max_ms:>7.1f}{st.no_gc_max_ms:>7.1f}"
                f"{st.p99_ms:>6.1f}{st.p999_ms:>7.1f}{st.over_5ms:>6}{st.gc_ms:>7.1f}"
                f"{st.normal_speed_max_ms:>8.1f}{st.normal_speed_over_5ms:>6}{st.slow_ticks:>6}"
            )
        print(
            f"{'':<9}({r.updates_applied} updates applied, in {statistics.median(r.apply_seconds) * 1000:.0f} ms "
            f"(median; longest {max(r.apply_seconds) * 1000:.0f} ms); {r.decisions} decisions, {r.events} events "
            "delivered)"
        )
    print(
        "idle = the ticker alone, before the client exists (this machine's floor); plain = next to four tasks of\n"
        "plain Python work at the same pace (no SDK, no threads); injected = the ticker next to stalls of\n"
        f"{INJECTED_MS:g} ms made on purpose (the positive control for 'normal'); baseline = the decision load\n"
        "without updates; updates = the same load while a revision is fetched, parsed, swapped in and the old one\n"
        "freed (alternating windows, same total time); no-GC = the longest stall no collector pause overlapped;\n"
        "GC = the longest collector pause in the phase; normal = the longest stall of a tick during which the\n"
        f"machine ran at its usual speed (neither speed probe next to it over {SLOW_PROBE:g}x the run's median);\n"
        "the >5ms after it counts those ticks over 5 ms; slow = ticks left out of 'normal'."
    )
    print()


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and flips (a smoke test)")
    parser.add_argument("--flags", type=int, default=170, help="flags in the generated datafile")
    args = parser.parse_args()
    logging.getLogger("optimizely_async").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    started = time.perf_counter()
    revisions = ("101", "102")
    datafiles = [build_datafile(rev, flags=args.flags) for rev in revisions]
    bodies = (json.dumps(datafiles[0]).encode(), json.dumps(datafiles[1]).encode())
    print(f"optimizely-async datafile bench: Python {platform.python_version()}, {platform.machine()}")
    print(f"datafile {describe(datafiles[0], len(bodies[0]))}")
    print()
    del datafiles  # keep the heap small: a big live heap makes every gen-2 collection dearer
    gc.collect()

    print(f"heap before: {len(gc.get_objects())} gc-tracked objects")
    print("event-loop stall while a worker thread parses the datafile, no other load (asyncio)")
    print(f"{'parse in anyio.to_thread':<42}{'max ms':>9}")
    for name, ms in bench_thread_stalls(bodies[0], runs=3 if args.quick else 8):
        print(f"{name:<42}{ms:>9.1f}")
    print()

    flips = 4 if args.quick else 8
    repeats = 2 if args.quick else 4
    summary: list[tuple[str, list[StallResult]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, body in enumerate(bodies):
            paths.append(str(Path(tmp) / f"datafile-{i}.json"))
            Path(paths[-1]).write_bytes(body)
        for load, pace, runs in (("paced load", 0.001, repeats), ("saturated load", 0.0, 1)):
            # Each run is a fresh process that imports only this SDK (the official one, loaded for the other
            # measurements, would double the heap every full collection walks); the server is a process too.
            # This machine's speed comes and goes in bursts, so the paced load is measured several times.
            results = [
                run_stalls_child(backend, paths, revisions, flips=flips, pace=pace)
                for _ in range(runs)
                for backend in ("asyncio", "trio")
            ]
            print_stalls(f"{load} (decision tasks sleep {pace * 1000:g} ms between decisions)", results)
            summary.append((load, results))
    for load, results in summary:
        for label, field in (("", "max_ms"), (" at the machine's usual speed", "normal_speed_max_ms")):
            worst = [getattr(r.updates, field) for r in results]
            base = [getattr(r.baseline, field) for r in results]
            idle = [getattr(r.idle, field) for r in results]
            plain = [getattr(r.plain, field) for r in results]
            met = sum(w < 5 for w in worst)
            print(
                f"-> {load}: longest stall{label} while updates were applied, per run: {_ms_list(worst)} ms "
                f"(median {statistics.median(worst):.1f}; target < 5 ms: met in {met} of {len(worst)} runs)"
            )
            print(
                f"   the same load without updates: {_ms_list(base)} ms (median {statistics.median(base):.1f}); "
                f"the idle loop: {_ms_list(idle)} ms"
            )
            print(f"   plain Python tasks at the same pace, no SDK: {_ms_list(plain)} ms")
        caught = sum(r.injected.normal_speed_over_5ms for r in results)
        seen = sum(r.injected.over_5ms for r in results)
        injected = sum(r.injected_count for r in results)
        print(
            f"   positive control: {injected} stalls of {INJECTED_MS:g} ms injected, {seen} seen in all, {caught} at "
            f"the usual speed (longest per run: {_ms_list([r.injected.normal_speed_max_ms for r in results])} ms)"
        )
        for phase in ("updates", "baseline"):
            share = [getattr(r, phase).slow_ticks / max(getattr(r, phase).ticks, 1) * 100 for r in results]
            print(f"   {phase} ticks next to a slow probe, per run: {', '.join(f'{v:.1f}%' for v in share)}")
        left_out = [(r.updates.slow_over_5ms, r.updates.slow_over_5ms_least_factor) for r in results]
        print(
            "   update-window stalls over 5 ms left out, per run (the least slow-down of the probe next to them): "
            + ", ".join(f"{n}" + (f" ({f:.0f}x)" if n else "") for n, f in left_out)
        )
    print()

    # Last: the official Optimizely() keeps ~40k objects alive per instance even after close(), which would make
    # every later garbage collection (and so every measurement after it) slower.
    runs, budget = (5, 2.0) if args.quick else (25, 6.0)
    gc.collect()
    print(f"heap before: {len(gc.get_objects())} gc-tracked objects")
    rows = bench_parse(bodies[0], runs=runs, budget=budget)
    ours = rows[0][1]
    print(f"{'config build (median)':<42}{'ms':>9}{'runs':>6}{'/ ours':>10}{'gc off':>9}")
    for name, ms, n, no_gc in rows:
        print(f"{name:<42}{ms:>9.1f}{n:>6}{ms / ours:>9.1f}x{'-' if no_gc is None else f'{no_gc:.1f}':>9}")
    for index, what in (
        (2, "the official config build (schema check + ProjectConfig, its default)"),
        (1, "the official ProjectConfig alone (no schema check)"),
    ):
        ratio = rows[index][1] / ours
        speed = f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"
        verdict = "OK" if ratio >= 3 else "MISSED"
        print(f"-> parse_config is {speed} {what} (target: at least 3x faster): {verdict}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-datafiles"]:
        serve_datafiles(sys.argv[2:])
    elif sys.argv[1:2] == ["--stalls"]:
        stalls_child(sys.argv[2:])
    else:
        main()
