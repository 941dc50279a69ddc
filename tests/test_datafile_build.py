"""How a datafile becomes a config: at once (static) or in steps on the event loop (updates).

The two paths must give the same config and the same errors; the stepped one must let other tasks run while it
builds, start no thread and change no process-wide interpreter setting, during or after a build. The layering
rule (``config/`` imports nothing from ``decision/`` or ``events/``) is checked on the source. Soaks (marked
slow) apply hundreds of revisions of a large datafile through a real polling client and check that memory and
the collector's object count stay bounded, also with ``fork()`` in the middle of builds.
"""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import datagen
import optimizely_async
from _support.datafiles import empty_datafile
from bigdatafile import build_datafile
from optimizely_async.config.loader import run_at_once
from optimizely_async.config.project_config import ProjectConfig, build_config, config_steps, parse_config
from optimizely_async.errors import InvalidDatafileError

PACKAGE = Path(optimizely_async.__file__).parent
TESTS = Path(__file__).parent


def shape(config: ProjectConfig) -> Any:
    """Everything a config holds, as plain comparable values."""
    experiments = {
        k: (
            e.id,
            e.key,
            e.status,
            e.layer_id,
            e.type,
            list(e.variations_by_id.items()),
            e.allocation,
            e.audience_tree,
            dict(e.forced_variations),
            e.group,
            e.cmab,
            e.has_conditions,
            e.fr_extra,
        )
        for k, e in config.experiments_by_id.items()
    }
    flags = {
        k: (
            f.id,
            f.experiment_ids,
            f.rollout_id,
            list(f.variables.items()),
            [r.id for r in f.rollout_rules],
            list(f.variations_by_id.items()),
        )
        for k, f in config.flags_by_key.items()
    }
    holdouts = [(h.id, h.key, h.allocation, h.audience_tree, h.included_rules) for h in config.global_holdouts]
    return (
        config.revision,
        config.account_id,
        config.project_id,
        config.sdk_key,
        config.environment_key,
        config.region,
        config.anonymize_ip,
        config.bot_filtering,
        config.send_flag_decisions,
        config.event_endpoint,
        experiments,
        list(config.experiments_by_key),
        config.groups_by_id,
        config.audiences,
        config.events_by_key,
        config.attribute_ids,
        flags,
        config.experiment_flags,
        config.variable_usages,
        holdouts,
        {k: [h.id for h in v] for k, v in config.rule_holdouts.items()},
        config.listed_experiment_ids,
        config.listed_attributes,
        config.listed_events,
        config.listed_audiences,
    )


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_both_paths_build_the_same_config(seed: int) -> None:
    body = json.dumps(datagen.generate_datafile(seed, holdouts=seed % 2 == 0))
    assert shape(run_at_once(config_steps(body))) == shape(parse_config(body))


def test_both_paths_build_the_same_config_from_a_large_datafile() -> None:
    body = json.dumps(build_datafile("1", flags=40)).encode()
    assert shape(run_at_once(config_steps(body))) == shape(parse_config(body))


def _minimal(**extra: Any) -> dict[str, Any]:
    return empty_datafile(**{"revision": "3", **extra})


BAD_EXPERIMENT = {"id": "e1", "key": "k", "status": "Running", "layerId": "l"}


@pytest.mark.parametrize(
    "body",
    [
        '{"version": "4",',
        "[1, 2]",
        '"text"',
        json.dumps(_minimal(version="1")),
        json.dumps(_minimal(version="9", revision=None)),
        json.dumps(_minimal(revision=None)),
        json.dumps(_minimal(experiments=[BAD_EXPERIMENT])),
        json.dumps(_minimal(experiments=[BAD_EXPERIMENT], accountId=None)),
        json.dumps(_minimal(events=[{"id": 1, "key": "e"}, {"id": "2"}])),
        json.dumps(_minimal()) + " x",
    ],
)
def test_both_paths_report_the_same_problem(body: str) -> None:
    with pytest.raises(InvalidDatafileError) as at_once:
        parse_config(body)
    with pytest.raises(InvalidDatafileError) as stepped:
        run_at_once(config_steps(body))
    if "valid JSON" in str(at_once.value):  # the two JSON parsers word their errors differently
        assert "valid JSON" in str(stepped.value)
    else:  # the same problems (the stepped path lists the elements' before the top level's)
        problems = [sorted(str(e.value).removeprefix("invalid datafile: ").split("; ")) for e in (stepped, at_once)]
        assert problems[0] == problems[1]


def _settings() -> tuple[Any, ...]:
    return (
        gc.isenabled(),
        gc.get_freeze_count(),
        gc.get_threshold(),
        sys.getswitchinterval(),
        sys.getrecursionlimit(),
    )


@pytest.mark.anyio
async def test_a_build_on_the_loop_lets_other_tasks_run_and_touches_no_process_wide_setting() -> None:
    body = json.dumps(build_datafile("1", flags=40)).encode()
    before = _settings()
    threads = threading.active_count()
    seen: list[tuple[Any, ...]] = []
    thread_counts: list[int] = []
    done = anyio.Event()

    async def watcher() -> None:
        while not done.is_set():
            seen.append(_settings())
            thread_counts.append(threading.active_count())
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.lowlevel.checkpoint()
        config = await build_config(body)
        done.set()
    assert config.revision == "1"
    assert len(seen) > 5  # the watcher ran again and again while the build was under way
    assert set(seen) == {before}
    assert set(thread_counts) == {threads}  # no worker thread
    assert _settings() == before


def test_an_application_s_own_collector_settings_are_left_alone() -> None:
    body = json.dumps(datagen.generate_datafile(5))
    gc.disable()
    try:
        run_at_once(config_steps(body))
        parse_config(body)
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        run_at_once(config_steps(body))
        parse_config(body)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def _imports(path: Path) -> list[str]:
    """The modules a source file imports, as absolute dotted names (relative ones resolved)."""
    package = "optimizely_async." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts[:-1])
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_config_imports_nothing_from_decision_or_events() -> None:
    files = sorted((PACKAGE / "config").glob("*.py"))
    assert len(files) >= 5
    offending = {
        f.name: [m for m in _imports(f) if m.startswith(("optimizely_async.decision", "optimizely_async.events"))]
        for f in files
    }
    assert {k: v for k, v in offending.items() if v} == {}
    # The check itself can fail: the decision engine does import the config.
    assert any(m.startswith("optimizely_async.config") for m in _imports(PACKAGE / "decision" / "engine.py"))


def test_importing_the_config_loads_neither_decision_nor_events() -> None:
    code = (
        "import sys, optimizely_async.config.project_config, optimizely_async.config.optimizely_config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('optimizely_async.decision', "
        "'optimizely_async.events', 'optimizely_async.client'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------- soaks

SOAK = r"""
import gc, json, os, sys
import anyio
sys.path.insert(0, sys.argv[1])
from _datafile_server import DatafileServer
from _support.datafiles import empty_datafile
from bigdatafile import build_datafile
from optimizely_async import AsyncOptimizely, DispatchResult
import optimizely_async.config.project_config as pc

REVISIONS, FORK = int(sys.argv[2]), sys.argv[3] == "fork"

def settings():
    return (gc.isenabled(), gc.get_freeze_count(), gc.get_threshold(), sys.getswitchinterval(),
            sys.getrecursionlimit())

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

building = [False]
real_steps = pc.config_steps
def watched_steps(data):
    building[0] = True
    try:
        return (yield from real_steps(data))
    finally:
        building[0] = False
pc.config_steps = watched_steps

class Sink:
    async def dispatch(self, request):
        return DispatchResult(delivered=True, status=200)

base = build_datafile("0", flags=80)
bodies = [json.dumps(dict(base, revision=str(r))).encode() for r in range(2)]
before = settings()
report = {"forks": 0, "children_differing": 0, "samples": []}

async def forker(stop):
    while not stop.is_set():
        if building[0]:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if settings() == before else 1)
            _, status = os.waitpid(pid, 0)
            report["forks"] += 1
            report["children_differing"] += os.waitstatus_to_exitcode(status) != 0
        await anyio.sleep(0.003)

async def main():
    with DatafileServer() as server:
        server.set_datafile(bodies[0])
        client = AsyncOptimizely(sdk_key="SoakKey", update_interval=0.01, event_dispatcher=Sink(),
                                 datafile_url_template=server.url + "/datafiles/{sdk_key}.json")
        stop = anyio.Event()
        async with client, anyio.create_task_group() as tg:
            if FORK:
                tg.start_soon(forker, stop)
            for r in range(1, REVISIONS + 1):
                body = json.dumps(dict(base, revision=str(r))).encode()
                server.set_datafile(body)
                with anyio.fail_after(30):
                    while client.config is None or client.config.revision != str(r):
                        await anyio.sleep(0.002)
                user = client.create_user_context("u%d" % r, {"country": "US"})
                await user.decide_all()
                if r % 25 == 0:
                    gc.collect()
                    report["samples"].append((r, rss_mb(), len(gc.get_objects())))
            stop.set()
    report["after"] = settings() == before
    print(json.dumps(report))

anyio.run(main)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "fork"])
def test_soak_hundreds_of_revisions_keep_memory_and_objects_bounded(mode: str) -> None:
    if mode == "fork" and not hasattr(__import__("os"), "fork"):
        pytest.skip("no fork() here")
    revisions = 300
    out = subprocess.run(
        [sys.executable, "-c", SOAK, str(TESTS), str(revisions), mode],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    samples = report["samples"]
    assert len(samples) == revisions // 25
    _, first_rss, first_objects = samples[1]  # after 50 revisions: caches and arenas have settled
    last_rss = max(rss for _, rss, _ in samples[1:])
    last_objects = max(objects for _, _, objects in samples[1:])
    assert last_rss - first_rss < 25, samples  # the leak this replaces grew by hundreds of MB
    assert last_objects - first_objects < 2_000, samples
    assert report["after"]
    if mode == "fork":
        assert report["forks"] >= 20, report
        assert report["children_differing"] == 0, report


@pytest.mark.anyio
async def test_the_projection_of_an_update_can_be_built_in_steps_on_the_loop() -> None:
    import dataclasses

    from optimizely_async.config import optimizely_config as oc

    config = parse_config(json.dumps(build_datafile("1", flags=400)))
    runs = 0
    done = anyio.Event()

    async def watcher() -> None:
        nonlocal runs
        while not done.is_set():
            runs += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        await anyio.lowlevel.checkpoint()
        await oc.ProjectionBuild(config).run_in_steps()
        done.set()
    assert runs > 2  # other tasks ran while it was built (400 flags: many 0.5 ms steps even on a fast machine)
    prepared = oc.optimizely_config_for(config)  # returned from the cache, not built again
    assert oc.optimizely_config_for(config) is prepared
    assert dataclasses.asdict(prepared) == dataclasses.asdict(oc._Builder(config).build())
