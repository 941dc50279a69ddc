"""Differential test on generated datafiles with CMAB experiments and ODP ``qualified`` audiences.

For each seed: a datafile from ``tests/datagen.py`` (holdouts and rule types included) with
:func:`datagen.add_cmab` and :func:`datagen.add_qualified_audiences`; both SDKs, each with its own stand-in
server answering the same way: predictions chosen by (rule, visitor), now and then a variation the experiment
does not have, a failing first attempt, or a failure of both attempts (500, a malformed body, a dropped
connection); segments chosen by user. For every generated user: ``fetch_qualified_segments``, then ``decide``
of every flag with several option sets (the CMAB cache options among them), ``decide_for_keys``,
``decide_all``, and the legacy methods on the CMAB experiments and their flags. Compared after each call: every
decision field (reasons with the official duplication undone, UUIDs masked), the DECISION notifications, the
impressions (``cmab_uuid`` present or absent alike) and the prediction requests (bodies without the UUID).

Environment: CMAB_SEEDS (default 16) datafiles on asyncio, CMAB_TRIO_SEEDS (default 3) on trio, CMAB_USERS
(default 5) users per datafile.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

import datagen
from _cmab_odp_server import Reply, StandIn, serve_stand_in
from _cmab_support import Official, ours, scrub_impression
from differential import same, short
from test_cmab_decide import no_uuids, request_view
from test_cmab_decide import view as decision_view
from test_differential_decide import DuplicationProbe, undo_official_duplication

CMAB_SEEDS = int(os.environ.get("CMAB_SEEDS", "16"))
CMAB_TRIO_SEEDS = int(os.environ.get("CMAB_TRIO_SEEDS", "3"))
CMAB_USERS = int(os.environ.get("CMAB_USERS", "5"))

OPTION_SETS: tuple[list[str], ...] = (
    [],
    ["INCLUDE_REASONS"],
    ["INCLUDE_REASONS", "IGNORE_CMAB_CACHE"],
    ["INCLUDE_REASONS", "INVALIDATE_USER_CMAB_CACHE"],
    ["INCLUDE_REASONS", "RESET_CMAB_CACHE", "ENABLED_FLAGS_ONLY"],
    ["EXCLUDE_VARIABLES", "DISABLE_DECISION_EVENT"],
)


def _roll(*parts: Any) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def predictor(datafile: dict[str, Any]) -> Any:
    variations = {e["id"]: [v["id"] for v in e["variations"]] for e in datagen.all_experiments(datafile)}

    def predict(rule_id: str, body: Any, attempt: int) -> Reply:
        visitor = body["instances"][0]["visitorId"]
        roll = _roll(rule_id, visitor)
        if roll < 0.06:
            return Reply(500)
        if roll < 0.09:
            return Reply(200, b"{not json")
        if roll < 0.11:
            return Reply(close=True)
        if roll < 0.16 and attempt == 1:
            return Reply(502)
        choices = variations.get(rule_id) or []
        if roll > 0.93 or not choices:
            return Reply.json({"predictions": [{"variation_id": "999999999"}]})
        pick = choices[int(_roll(rule_id, visitor, "v") * len(choices))]
        return Reply.json({"predictions": [{"variation_id": int(pick) if roll > 0.85 else pick, "extra": 1}]})

    return predict


def graphql(body: Any) -> Reply:
    user = body["variables"]["userId"]
    asked = body["variables"]["audiences"]
    edges = [{"node": {"name": s, "state": "qualified" if _roll(user, s) < 0.5 else "no"}} for s in sorted(set(asked))]
    return Reply.json({"data": {"customer": {"audiences": {"edges": edges}}}})


@pytest.fixture
def servers() -> Iterator[tuple[StandIn, StandIn]]:
    with serve_stand_in() as official, serve_stand_in() as mine:
        yield official, mine


def first_difference(expected: Any, got: Any, path: str = "") -> str:
    """Where two values first differ, and how (short enough to read in a failure report)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        if list(expected) != list(got):
            return f"{path}: keys {list(expected)} != {list(got)}"
        for key in expected:
            if not same(expected[key], got[key]):
                return first_difference(expected[key], got[key], f"{path}.{key}")
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for i, (a, b) in enumerate(zip(expected, got, strict=False)):
            if not same(a, b):
                return first_difference(a, b, f"{path}[{i}]")
        if len(expected) != len(got):
            extra = expected[len(got) :] or got[len(expected) :]
            return f"{path}: length {len(expected)} != {len(got)}; extra {short(extra)}"
    return f"{path}: official {short(expected, 600)} != ours {short(got, 600)}"


class Run:
    def __init__(self, servers: tuple[StandIn, StandIn], datafile: dict[str, Any], context: str) -> None:
        self.servers = servers
        self.context = context
        official_df, our_df = copy.deepcopy(datafile), copy.deepcopy(datafile)
        official_df["integrations"][0]["host"] = servers[0].url
        our_df["integrations"][0]["host"] = servers[1].url
        for server in servers:
            server.predict = predictor(datafile)
            server.graphql = graphql
        self.official = Official(official_df, servers[0].url + "/predict/{}")
        self.probe = DuplicationProbe(self.official.client.decision_service)
        self.ours, self.recorder, self.notes = ours(our_df, servers[1].url + "/predict/{}")
        self.mismatches: list[str] = []
        self.calls = 0

    def check(self, label: str, expected: Any, got: Any) -> None:
        if not same(expected, got) and len(self.mismatches) < 20:
            self.mismatches.append(f"[{self.context}] {label}: {first_difference(expected, got)}")

    def side_effects(self, label: str, before: tuple[int, int], records: dict[str, Any] | None = None) -> None:
        official_events = [scrub_impression(e) for e in self.official.impressions()[before[0] :]]
        our_events = [scrub_impression(e) for e in self.recorder.payloads[before[1] :]]
        self.check(label + " impressions", official_events, our_events)
        official_notes = no_uuids(self.official.notes)
        for note in official_notes:  # the flag's reasons, with the official duplication undone
            info = note[3]
            if records is not None and isinstance(info, dict) and info.get("reasons"):
                info["reasons"], _ = undo_official_duplication(info["reasons"], records.get(info["flag_key"]))
        self.check(label + " DECISION notifications", official_notes, no_uuids(self.notes))
        self.official.notes.clear()
        self.notes.clear()
        self.check(label + " prediction requests", request_view(self.servers[0]), request_view(self.servers[1]))
        for server in self.servers:
            server.clear()

    async def decide(self, official_user: Any, our_user: Any, method: str, *args: Any) -> None:
        label = f"{method}{short(args)} for {official_user.user_id!r}"
        before = len(self.official.dispatcher.events), len(self.recorder.payloads)
        self.probe.take()
        expected = getattr(official_user, method)(*copy.deepcopy(args))
        records = self.probe.take()
        got = await getattr(our_user, method)(*copy.deepcopy(args))
        await self.ours.flush()
        self.calls += 1

        def fixed(flag_key: str, decision: Any) -> dict[str, Any]:
            view = decision_view(decision)
            if view["reasons"]:  # reasons were asked for, or an error decision carries them
                view["reasons"], _ = undo_official_duplication(view["reasons"], records.get(flag_key))
            return view

        if isinstance(expected, dict):
            self.check(label + " keys", list(expected), list(got))
            for key in expected:
                if key in got:
                    self.check(f"{label}[{key}]", fixed(key, expected[key]), decision_view(got[key]))
        else:
            self.check(label, fixed(args[0], expected), decision_view(got))
        self.side_effects(label, before, records)

    async def legacy(self, method: str, *args: Any) -> None:
        label = f"{method}{short(args)}"
        before = len(self.official.dispatcher.events), len(self.recorder.payloads)
        expected = getattr(self.official.client, method)(*copy.deepcopy(args))
        got = await getattr(self.ours, method)(*copy.deepcopy(args))
        await self.ours.flush()
        self.calls += 1
        self.check(label, expected, got)
        self.side_effects(label, before)


async def run_seed(servers: tuple[StandIn, StandIn], seed: int) -> int:
    rng = random.Random(seed)
    datafile = datagen.generate_datafile(rng, version="4", holdouts=True, rule_types=True)
    cmab_ids = datagen.add_cmab(datafile, random.Random(seed * 7 + 1))
    datagen.add_qualified_audiences(datafile, random.Random(seed * 7 + 2))
    run = Run(servers, datafile, f"seed {seed}")
    by_id = {e["id"]: e for e in datagen.all_experiments(datafile)}
    cmab_keys = [by_id[i]["key"] for i in cmab_ids]
    cmab_flags = [f["key"] for f in datafile["featureFlags"] if set(f["experimentIds"]) & set(cmab_ids)]
    flags = [f["key"] for f in datafile["featureFlags"]]
    users = datagen.generate_users(random.Random(seed * 7 + 3), datafile, CMAB_USERS)
    async with run.ours:
        for user in users:
            attributes = user.attributes if isinstance(user.attributes, dict) or user.attributes is None else None
            official_user = run.official.client.create_user_context(user.user_id, copy.deepcopy(attributes))
            our_user = run.ours.create_user_context(user.user_id, copy.deepcopy(attributes))
            if official_user is None or our_user is None:
                run.check(f"create_user_context({user.user_id!r})", official_user is None, our_user is None)
                continue
            if rng.random() < 0.7:
                fetched = official_user.fetch_qualified_segments()
                run.check("fetch_qualified_segments", fetched, await our_user.fetch_qualified_segments())
                run.check("segments", official_user.get_qualified_segments(), our_user.get_qualified_segments())
                for server in servers:
                    server.clear()
            for options in OPTION_SETS:
                for key in cmab_flags or flags[:1]:
                    await run.decide(official_user, our_user, "decide", key, options)
            await run.decide(official_user, our_user, "decide_all", ["INCLUDE_REASONS"])
            await run.decide(official_user, our_user, "decide_all", ["ENABLED_FLAGS_ONLY"])
            await run.decide(official_user, our_user, "decide_for_keys", [*cmab_flags, "unknown_flag"], [])
            for key in cmab_keys:
                await run.legacy("activate", key, user.user_id, copy.deepcopy(attributes))
                await run.legacy("get_variation", key, user.user_id, copy.deepcopy(attributes))
            for key in cmab_flags:
                await run.legacy("is_feature_enabled", key, user.user_id, copy.deepcopy(attributes))
                await run.legacy("get_all_feature_variables", key, user.user_id, copy.deepcopy(attributes))
    run.official.close()
    if run.mismatches:
        raise AssertionError(f"{len(run.mismatches)} difference(s):\n" + "\n".join(run.mismatches))
    return run.calls


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("seed", range(CMAB_SEEDS))
async def test_generated_cmab_and_odp_datafiles(servers: tuple[StandIn, StandIn], seed: int) -> None:
    assert await run_seed(servers, seed) > 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("seed", range(1000, 1000 + CMAB_TRIO_SEEDS))
async def test_generated_cmab_and_odp_datafiles_on_trio(servers: tuple[StandIn, StandIn], seed: int) -> None:
    assert await run_seed(servers, seed) > 0
