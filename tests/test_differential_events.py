"""Differential test of the event APIs: what our client sends against what the official SDK sends.

For each seed: a generated datafile (tests/datagen.py) with its event knobs set from the seed
(``sendFlagDecisions`` on/off/absent, ``botFiltering`` true/false/absent, ``anonymizeIP``, ``region`` US/EU/
lower-case/unknown/absent, extra events with unicode keys and opaque ids). Both clients get the same calls:
``track()`` of every event (and an unknown one) with generated attributes and event tags, ``activate()``,
``is_feature_enabled()`` and ``get_enabled_features()``, then bad inputs. After each call we compare:

* the events dispatched, event for event and in order: the official ``LogEvent`` from its recording dispatcher
  (``ForwardingEventProcessor``, so one LogEvent per event: ``url``, ``http_verb``, ``headers``, ``params``)
  against our :class:`EventRequest` from an in-memory ``event_dispatcher`` (``url``, ``headers``, ``payload``;
  ``body`` must decode to ``payload``). Everything must be equal, key order included, except ``uuid``,
  ``timestamp``, ``client_name`` and ``client_version``. With ``batch_size=1`` every event is its own request;
  on every fourth seed our client batches (``batch_size=50``, flushed after each call) and each request must
  carry the official events' visitors in order, with the first one's batch-level fields;
* on every other seed, the TRACK and ACTIVATE notifications (listener arguments; our experiment and variation
  objects by ``.key``/``.id``) and that the ``event`` each listener got carries the payload that was
  dispatched, uuid and timestamp included;
* the return values and DECISION notifications (through :class:`differential.Pair`).

Tags on which the official SDK itself crashes (``datagen``-style hazards: a ``datetime``, a ``set``, a tuple key,
``value`` beyond the float range ...) are not compared; instead our client must drop them at ``track()`` with a
log and send nothing.

Environment: DIFF_EVENT_SEEDS (default 180) datafiles on asyncio, DIFF_EVENT_USERS (default 10) users per
datafile, DIFF_EVENT_TRIO_SEEDS (default 6) more on trio. Run with ``-s`` to see the totals compared.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from optimizely import optimizely as official_sdk
from optimizely.event.event_processor import ForwardingEventProcessor
from optimizely.helpers import enums as official_enums
from optimizely.helpers.sdk_settings import OptimizelySdkSettings

import datagen
from differential import Pair, RecordingDispatcher, make_official, same, short
from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest, NotificationType, defaults
from optimizely_async._version import __version__

EVENT_SEEDS = int(os.environ.get("DIFF_EVENT_SEEDS", "180"))
EVENT_USERS = int(os.environ.get("DIFF_EVENT_USERS", "10"))
EVENT_TRIO_SEEDS = int(os.environ.get("DIFF_EVENT_TRIO_SEEDS", "6"))

UNKNOWN_EVENT = "no_such_event"
UNKNOWN_EXPERIMENT = "no_such_experiment"
UNKNOWN_FLAG = "no_such_flag"
JSON_HEADERS = {"Content-Type": "application/json"}

#: Known difference, already reported to the lead (client.py ``_send_impression``): for an impression without
#: a rule (nothing matched, sent with ``sendFlagDecisions``) the official ACTIVATE listener gets
#: ``Experiment.get_default()`` (id "" and key ""), ours gets None. While True, the two compare equal.
ACTIVATE_NONE_EXPERIMENT_IS_DEFAULT = False

TOTALS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_totals() -> Iterator[None]:
    started = time.perf_counter()
    yield
    if TOTALS:
        print(
            f"\ndifferential events: {TOTALS['datafiles']} datafiles, {TOTALS['users']} users, {TOTALS['calls']} "
            f"calls; events compared: {TOTALS['conversions']} conversions, {TOTALS['impressions']} impressions "
            f"({TOTALS['null_impressions']} without a variation, {TOTALS['eu']} to the EU endpoint), "
            f"{TOTALS['batched_requests']} batched requests; {TOTALS['track_notes']} TRACK and "
            f"{TOTALS['activate_notes']} ACTIVATE notifications; tags with revenue {TOTALS['revenue']}, "
            f"with value {TOTALS['value']}; {time.perf_counter() - started:.1f}s"
        )


# ------------------------------------------------------------------------------------------------ inputs


def _set_knobs(datafile: dict[str, Any], seed: int, rng: random.Random) -> dict[str, Any]:
    """The datafile's event settings, chosen so that every combination comes up across seeds."""
    for key, choice in (
        # Besides booleans, values of other JSON types: the official SDK uses them as they are (truthiness,
        # verbatim on the wire, no bot-filtering entry), and so must we.
        ("sendFlagDecisions", (True, False, None, "false", 0, 1)[seed % 6]),
        ("botFiltering", (True, False, None, "true", 1)[(seed // 6) % 5]),
        ("anonymizeIP", (True, False, None, "no", 1)[seed % 5] if seed % 7 else None),
        ("region", rng.choice(["US", "EU", "eu", "APAC", None, "EU"])),
    ):
        if choice is None:
            datafile.pop(key, None)
        else:
            datafile[key] = choice
    events = datafile.setdefault("events", [])
    top = 10**14 + seed * 100
    for i, key in enumerate(("purchase", "événement ✓", "signup")):
        if len(events) >= 5:
            break
        events.append({"id": str(top + i) if i != 1 else f"opaque-id-{seed}", "key": key, "experimentIds": []})
    return datafile


_REVENUES: tuple[Any, ...] = (0, 1, -5, 4200, 2**31, 2**63, 10**30, 10.5, 3.0, "100", "abc", True, False, None)
_VALUES: tuple[Any, ...] = (
    0,
    1,
    -2,
    2**60,
    1.5,
    -0.0,
    1e308,
    1e-300,
    "1.5",
    " 2.5 ",
    "1_000",
    "4e2",
    "abc",
    "",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1e400",
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    [1],
    {"v": 1},
)
_OTHER_TAGS: tuple[tuple[Any, Any], ...] = (
    ("category", "shoes"),
    ("count", 3),
    ("ratio", 0.25),
    ("flag", True),
    ("nothing", None),
    ("unicode", "日本 ✓ \u00e9"),
    ("list", [1, "a", None, 2.5, {"value": None, "k": 1}]),
    ("tuple", (1, "two")),
    ("nested", {"a": {"b": [1, 2]}, "revenue": None, "value": None, "tags": None, "decisions": None, "x": 0}),
    ("nan_tag", math.nan),
    ("inf_tag", -math.inf),
    ("big_int", 2**80),
    ("tags", None),
    ("decisions", None),
    ("empty", {}),
    (1, "int key"),
    (2.5, "float key"),
    (None, "None key"),
    (False, "bool key"),
    ("1", "str key that collides with an int key"),
)


def random_tags(rng: random.Random) -> dict[Any, Any] | None:
    roll = rng.random()
    if roll < 0.12:
        return None
    if roll < 0.2:
        return {}
    tags: dict[Any, Any] = {}
    extras = rng.sample(_OTHER_TAGS, k=rng.randint(0, 4))
    keys = ["revenue", "value", *[key for key, _ in extras]]
    rng.shuffle(keys)
    other = dict(extras)
    for key in keys:
        if key == "revenue":
            if rng.random() < 0.6:
                tags[key] = rng.choice(_REVENUES)
        elif key == "value":
            if rng.random() < 0.6:
                tags[key] = rng.choice(_VALUES)
        else:
            tags[key] = copy.deepcopy(other[key])
    return tags


_ODD_VALUES: tuple[Any, ...] = (
    True,
    False,
    None,
    0,
    0.0,
    -0.0,
    2**53,
    -(2**53),
    2**53 + 1,
    -(2**53) - 1,
    1e300,
    math.nan,
    math.inf,
    -math.inf,
    0.5,
    "",
    "text",
    [1],
    {"a": 1},
)


def vary_attributes(rng: random.Random, attributes: Any, datafile: dict[str, Any]) -> Any:
    """The generated user's attributes, often with event-relevant extras: reserved ``$opt_`` keys, keys that
    are not in the datafile, bool/None values and numbers outside the range the events API takes."""
    if rng.random() < 0.4 or not (attributes is None or isinstance(attributes, dict)):
        return attributes
    out = dict(attributes or {})
    known = [a["key"] for a in datafile.get("attributes", [])]
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.35 and known:
            out[rng.choice(known)] = rng.choice(_ODD_VALUES)
        elif roll < 0.5:
            out["$opt_user_agent"] = rng.choice(["Mozilla/5.0", "", 7, None])
        elif roll < 0.6:
            out["$opt_custom_reserved"] = rng.choice(["x", True, 2**53 + 1, 1.25])
        elif roll < 0.75:
            out[rng.choice(["not_in_datafile", "another_unknown"])] = rng.choice(["v", 1, False])
        elif roll < 0.85:
            out[rng.choice([5, 2.5, ("t",)])] = "a key that is not a string"
        else:
            out["$opt_bucketing_id"] = rng.choice(["bucket-1", "", 42])
    return out


class AttrDict(dict):  # type: ignore[type-arg]
    """A dict subclass: both SDKs refuse attributes and tags whose type is not exactly dict."""


# ------------------------------------------------------------------------------------------------ capture


class EventRecorder:
    """Our ``event_dispatcher``: records every request and delivers it at once."""

    def __init__(self) -> None:
        self.requests: list[EventRequest] = []

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        self.requests.append(request)
        return DispatchResult(delivered=True, status=204)


def scrub(payload: Any) -> Any:
    """A payload with the fields that differ by design blanked: per-event uuid and timestamp, SDK name and
    version. Key order is kept."""
    out = copy.deepcopy(payload)
    out["client_name"] = out["client_version"] = "-"
    for visitor in out.get("visitors", []):
        for snapshot in visitor["snapshots"]:
            for event in snapshot["events"]:
                event["uuid"], event["timestamp"] = "-", 0
    return out


def _ordered(value: Any) -> str:
    """JSON text with the dict key order kept (NaN and infinities allowed), to compare key order."""
    return json.dumps(value, allow_nan=True)


def _entity(entity: Any, *, experiment: bool = False) -> tuple[Any, Any]:
    if entity is None:
        return ("", "") if experiment and ACTIVATE_NONE_EXPERIMENT_IS_DEFAULT else (None, None)
    if isinstance(entity, dict):
        return (entity.get("id"), entity.get("key"))
    return (entity.id, entity.key)


@dataclasses.dataclass
class Note:
    """One TRACK or ACTIVATE notification, with the event dict as the listener got it."""

    kind: str
    args: tuple[Any, ...]
    event: dict[str, Any]


def _listen(center: Any, track_type: Any, activate_type: Any, into: list[Note]) -> None:
    def on_track(event_key: Any, user_id: Any, attributes: Any, event_tags: Any, event: Any) -> None:
        into.append(
            Note(
                "TRACK",
                (event_key, user_id, copy.deepcopy(attributes), copy.deepcopy(event_tags)),
                copy.deepcopy(event),
            )
        )

    def on_activate(experiment: Any, user_id: Any, attributes: Any, variation: Any, event: Any) -> None:
        into.append(
            Note(
                "ACTIVATE",
                (_entity(experiment, experiment=True), user_id, copy.deepcopy(attributes), _entity(variation)),
                copy.deepcopy(event),
            )
        )

    center.add_notification_listener(track_type, on_track)
    center.add_notification_listener(activate_type, on_activate)


# ------------------------------------------------------------------------------------------------ the pair


class EventPair(Pair):
    """A :class:`Pair` whose calls also compare the events dispatched and the TRACK/ACTIVATE notifications."""

    def __init__(self, datafile: dict[str, Any], *, listeners: bool, batched: bool, context: str) -> None:
        official, official_notes, self.official_dispatcher = make_official(datafile)
        self.recorder = EventRecorder()
        ours = AsyncOptimizely(
            datafile=copy.deepcopy(datafile),
            event_dispatcher=self.recorder,
            batch_size=50 if batched else 1,
            max_concurrent_requests=1,  # requests reach the recorder in queue order
        )
        our_notes: list[Any] = []

        def on_decision(kind: Any, user_id: Any, attributes: Any, info: Any) -> None:
            our_notes.append((kind, user_id, copy.deepcopy(attributes), copy.deepcopy(info)))

        ours.notification_center.add_notification_listener(NotificationType.DECISION, on_decision)
        super().__init__(official, ours, official_notes, our_notes, context)
        self.batched = batched
        self.official_event_notes: list[Note] = []
        self.our_event_notes: list[Note] = []
        if listeners:
            _listen(
                official.notification_center,
                official_enums.NotificationTypes.TRACK,
                official_enums.NotificationTypes.ACTIVATE,
                self.official_event_notes,
            )
            _listen(ours.notification_center, NotificationType.TRACK, NotificationType.ACTIVATE, self.our_event_notes)
        self.seen_uuids: set[str] = set()

    async def call(self, method: str, *args: Any) -> Any:
        result = await super().call(method, *args)
        await self.ours.flush()
        self._compare_events(f"{method}{short(args, 300)}")
        return result

    def _compare_events(self, label: str) -> None:
        official_events = list(self.official_dispatcher.events)
        self.official_dispatcher.events.clear()
        requests = list(self.recorder.requests)
        self.recorder.requests.clear()
        for request in requests:
            self._check_request(label, request)
        # our visitors, each with the batch-level fields of the request that carried it
        ours: list[tuple[EventRequest, dict[str, Any]]] = []
        for request in requests:
            payload = dict(request.payload)
            if self.batched:
                TOTALS["batched_requests"] += 1
            elif len(payload["visitors"]) != 1:
                self.mismatch(f"{label}: batch_size=1 but a request carried {len(payload['visitors'])} visitors")
            ours.extend((request, {**payload, "visitors": [visitor]}) for visitor in payload["visitors"])
        if len(official_events) != len(ours):
            self.mismatch(
                f"{label}: official dispatched {len(official_events)} events, ours {len(ours)}: "
                f"official {short([scrub(e.params) for e in official_events], 1500)} / "
                f"ours {short([scrub(p) for _, p in ours], 1500)}"
            )
            return
        for i, (theirs, (request, payload)) in enumerate(zip(official_events, ours, strict=True)):
            self._count(theirs.url, theirs.params)
            if (theirs.url, theirs.http_verb, theirs.headers) != (request.url, "POST", dict(request.headers)):
                self.mismatch(
                    f"{label}: event #{i} request: official {theirs.http_verb} {theirs.url} {theirs.headers} != "
                    f"ours POST {request.url} {dict(request.headers)}"
                )
            expected, got = scrub(theirs.params), scrub(payload)
            if not same(expected, got) or _ordered(expected) != _ordered(got):
                self.mismatch(f"{label}: event #{i}: official {short(expected, 1500)} != ours {short(got, 1500)}")
        self._compare_notes_of_events(label, official_events, requests)

    def _check_request(self, label: str, request: EventRequest) -> None:
        payload = request.payload
        if not same(json.loads(request.body), json.loads(json.dumps(payload))):
            self.mismatch(f"{label}: the request body does not decode to its payload")
        if (payload["client_name"], payload["client_version"]) != (defaults.CLIENT_NAME, __version__):
            self.mismatch(f"{label}: client {payload['client_name']!r} {payload['client_version']!r}")
        if request.event_count != len(payload["visitors"]):
            self.mismatch(f"{label}: event_count {request.event_count} for {len(payload['visitors'])} visitors")
        for visitor in payload["visitors"]:
            event = visitor["snapshots"][0]["events"][0]
            event_uuid, timestamp = event["uuid"], event["timestamp"]
            if uuid.UUID(event_uuid).version != 4 or str(uuid.UUID(event_uuid)) != event_uuid:
                self.mismatch(f"{label}: uuid {event_uuid!r} is not a canonical uuid4")
            if event_uuid in self.seen_uuids:
                self.mismatch(f"{label}: uuid {event_uuid} sent twice")
            self.seen_uuids.add(event_uuid)
            if type(timestamp) is not int or timestamp < 1_600_000_000_000:
                self.mismatch(f"{label}: timestamp {timestamp!r} is not epoch milliseconds")

    def _count(self, url: str, params: dict[str, Any]) -> None:
        TOTALS["eu"] += url == defaults.EVENT_ENDPOINTS["EU"]
        snapshot = params["visitors"][0]["snapshots"][0]
        if "decisions" in snapshot:
            TOTALS["impressions"] += 1
            TOTALS["null_impressions"] += snapshot["decisions"][0]["variation_id"] is None
        else:
            TOTALS["conversions"] += 1
            tags = snapshot["events"][0].get("tags") or {}
            TOTALS["revenue"] += "revenue" in tags
            TOTALS["value"] += "value" in tags

    def _compare_notes_of_events(self, label: str, official_events: list[Any], requests: list[EventRequest]) -> None:
        theirs, ours = list(self.official_event_notes), list(self.our_event_notes)
        self.official_event_notes.clear()
        self.our_event_notes.clear()
        if len(theirs) != len(ours):
            self.mismatch(
                f"{label}: official sent {[n.kind for n in theirs]} notifications, ours {[n.kind for n in ours]}"
            )
            return
        # the event dict each listener got must carry what was dispatched (uuid and timestamp included)
        official_sent = [e.params for e in official_events]
        our_sent = [{**dict(r.payload), "visitors": [v]} for r in requests for v in r.payload["visitors"]]
        for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
            TOTALS["track_notes" if a.kind == "TRACK" else "activate_notes"] += 1
            if a.kind != b.kind or not same(a.args, b.args):
                self.mismatch(
                    f"{label}: notification #{i}: official {a.kind}{short(a.args)} != ours {b.kind}{short(b.args)}"
                )
            a_event = {**a.event, "params": scrub(a.event["params"])}
            b_event = {**b.event, "params": scrub(b.event["params"])}
            if not same(a_event, b_event) or _ordered(a_event) != _ordered(b_event):
                self.mismatch(
                    f"{label}: {a.kind} #{i} event: official {short(a_event, 1200)} != ours {short(b_event, 1200)}"
                )
            if set(b.event) != {"url", "params", "http_verb", "headers"}:
                self.mismatch(f"{label}: {b.kind} #{i} event keys {sorted(b.event)}")
            if i < len(official_sent) and not same(a.event["params"], official_sent[i]):
                self.mismatch(f"{label}: official {a.kind} #{i}: the harness pairs notifications and events wrongly")
            if i >= len(our_sent) or not same(b.event["params"], our_sent[i]):
                self.mismatch(
                    f"{label}: our {b.kind} #{i} listener got {short(b.event['params'], 800)}, but "
                    f"{short(our_sent[i] if i < len(our_sent) else None, 800)} was dispatched"
                )


# ------------------------------------------------------------------------------------------------ phases


async def _user_phase(pair: EventPair, rng: random.Random, datafile: dict[str, Any], user: datagen.User) -> None:
    event_keys = [e["key"] for e in datafile.get("events", [])]
    experiment_keys = datagen.experiment_keys(datafile)
    flags = [f["key"] for f in datafile.get("featureFlags", [])]
    for key in [*event_keys, UNKNOWN_EVENT]:
        attributes = vary_attributes(rng, user.attributes, datafile)
        await pair.call("track", key, user.user_id, attributes, random_tags(rng))
    for key in [*rng.sample(experiment_keys, k=min(3, len(experiment_keys))), UNKNOWN_EXPERIMENT]:
        await pair.call("activate", key, user.user_id, vary_attributes(rng, user.attributes, datafile))
    for flag in [*rng.sample(flags, k=min(3, len(flags))), UNKNOWN_FLAG]:
        await pair.call("is_feature_enabled", flag, user.user_id, vary_attributes(rng, user.attributes, datafile))
    await pair.call("get_enabled_features", user.user_id, vary_attributes(rng, user.attributes, datafile))
    if event_keys:  # the same user and tags again: a second conversion, not merged with the first
        tags = random_tags(rng)
        await pair.call("track", event_keys[0], user.user_id, user.attributes, tags)
        await pair.call("track", event_keys[0], user.user_id, user.attributes, tags)


async def _bad_input_phase(pair: EventPair, datafile: dict[str, Any]) -> None:
    event_keys = [e["key"] for e in datafile.get("events", [])]
    event = event_keys[0] if event_keys else UNKNOWN_EVENT
    for bad_key in ("", None, 42, ["purchase"], UNKNOWN_EVENT):
        await pair.call("track", bad_key, "u", None, None)
    for bad_user in (None, 42, 4.5, b"user", ["user"]):
        await pair.call("track", event, bad_user, None, {"revenue": 1})
    for bad_attributes in (["a"], "attributes", AttrDict(browser="chrome"), collections.OrderedDict(a=1), 1, True):
        await pair.call("track", event, "u", bad_attributes, None)
    falsy: Any
    for falsy in ([], "", 0, False, AttrDict()):  # falsy non-dicts count as no attributes on both
        await pair.call("track", event, "u", falsy, {"revenue": 5})
    for bad_tags in (["revenue", 1], "tags", AttrDict(revenue=1), collections.OrderedDict(value=1.0), 1, True):
        await pair.call("track", event, "u", None, bad_tags)
    await pair.call("track", event, "", None, None)  # the empty user id is accepted by both


async def run_seed(seed: int, n_users: int) -> None:
    rng = random.Random(seed * 65537 + 3)
    holdouts = seed % 5 == 4
    datafile = datagen.generate_datafile(seed, version="4" if holdouts else None, holdouts=holdouts)
    _set_knobs(datafile, seed, rng)
    users = datagen.generate_users(seed, datafile, n_users)
    listeners, batched = seed % 2 == 1, seed % 4 == 3
    context = (
        f"seed {seed}, datafile v{datafile['version']}, sendFlagDecisions {datafile.get('sendFlagDecisions')}, "
        f"botFiltering {datafile.get('botFiltering')}, region {datafile.get('region')}, "
        f"listeners {listeners}, batched {batched}"
    )
    pair = EventPair(datafile, listeners=listeners, batched=batched, context=context)
    try:
        async with pair.ours:
            for user in users:
                pair.context = f"{context}, user {user.user_id!r}"
                await _user_phase(pair, rng, datafile, user)
            pair.context = f"{context}, bad inputs"
            await _bad_input_phase(pair, datafile)
            report = await pair.ours.close()
    finally:
        pair.official.close()
    if report.delivered != report.submitted or report.dropped or report.undelivered:
        pair.mismatch(f"our queue did not deliver everything: {report}")
    TOTALS.update(datafiles=1, users=len(users), calls=pair.calls)
    pair.raise_if_any()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("seed", range(EVENT_SEEDS))
@pytest.mark.anyio
async def test_events_match_official(seed: int) -> None:
    await run_seed(seed, EVENT_USERS)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("seed", range(EVENT_TRIO_SEEDS))
@pytest.mark.anyio
async def test_events_match_official_on_trio(seed: int) -> None:
    await run_seed(20_000 + seed, EVENT_USERS)


# ------------------------------------------------------------------------------------------------ hazards


class WithDict:
    """An object with a ``__dict__``: the official payload encoder sends its attributes."""

    def __init__(self) -> None:
        self.a = 1


def _circular() -> dict[str, Any]:
    tags: dict[str, Any] = {"category": "loop"}
    tags["self"] = tags
    return tags


#: Event tags on which the official ``track()`` raises (its ForwardingEventProcessor builds the payload in the
#: caller; the default BatchEventProcessor's thread dies on them instead, losing every later event).
OFFICIAL_CRASH_TAGS: dict[str, Any] = {
    "datetime": lambda: {"when": datetime.datetime(2024, 1, 2, 3, 4, 5)},
    "date_as_value": lambda: {"value": datetime.date(2024, 1, 2), "revenue": 10},
    "nested_datetime": lambda: {"nested": {"list": [1, datetime.time(12, 0)]}},
    "set": lambda: {"ids": {1, 2}},
    "bytes": lambda: {"raw": b"\x00\x01"},
    "object": lambda: {"thing": object()},
    "complex": lambda: {"z": 1j},
    "tuple_key": lambda: {("a", "b"): 1},
    "circular": _circular,
    "value_beyond_float_range": lambda: {"value": 10**400, "category": "x"},
}

#: Cases our client does not drop at track() yet (reported to the lead); today the event is sent with
#: ``tags.value`` as a 401-digit JSON number. strict xfail: the test fails once the client is fixed.
_NOT_DROPPED_YET: dict[str, str] = {}


def _official_with_recorder(datafile: dict[str, Any]) -> tuple[Any, RecordingDispatcher]:
    dispatcher = RecordingDispatcher()
    client = official_sdk.Optimizely(
        datafile=json.dumps(datafile),
        event_dispatcher=dispatcher,
        event_processor=ForwardingEventProcessor(dispatcher),
        settings=OptimizelySdkSettings(odp_disabled=True),
    )
    return client, dispatcher


def _small_datafile() -> dict[str, Any]:
    datafile = datagen.generate_datafile(3, version="4")
    datafile["events"] = [{"id": "5551", "key": "purchase", "experimentIds": []}]
    return datafile


@pytest.mark.parametrize("case", sorted(OFFICIAL_CRASH_TAGS))
def test_official_sdk_raises_on_these_tags(case: str) -> None:
    """Keeps OFFICIAL_CRASH_TAGS honest: each entry really breaks the official SDK."""
    official, dispatcher = _official_with_recorder(_small_datafile())
    try:
        with pytest.raises((TypeError, ValueError, OverflowError, AttributeError)):
            official.track("purchase", "u1", None, OFFICIAL_CRASH_TAGS[case]())
        assert dispatcher.events == []
    finally:
        official.close()


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=_NOT_DROPPED_YET[c]))
        if c in _NOT_DROPPED_YET
        else c
        for c in sorted(OFFICIAL_CRASH_TAGS)
    ],
)
@pytest.mark.anyio
async def test_ours_drops_tags_the_official_crashes_on(case: str, caplog: pytest.LogCaptureFixture) -> None:
    recorder = EventRecorder()
    tracked: list[Any] = []
    async with AsyncOptimizely(datafile=_small_datafile(), event_dispatcher=recorder, batch_size=1) as ours:
        ours.notification_center.add_notification_listener(NotificationType.TRACK, lambda *args: tracked.append(args))
        with caplog.at_level(logging.ERROR, logger="optimizely_async"):
            await ours.track("purchase", "u1", {"browser": "chrome"}, OFFICIAL_CRASH_TAGS[case]())  # must not raise
        await ours.flush()
        assert recorder.requests == [], "nothing may be sent for tags the official SDK cannot encode"
        assert tracked == [], "no TRACK notification for an event that was not recorded"
        # Counted as this one event's drop (issue 10 item 2), so the totals show it.
        assert (ours.stats().submitted, ours.stats().dropped) == (1, {"invalid_payload": 1})
        assert any(r.levelno >= logging.ERROR and "purchase" in r.getMessage() for r in caplog.records), (
            "the drop must be logged at error level, naming the event"
        )
        # the client keeps working (the official BatchEventProcessor's thread would be dead by now)
        await ours.track("purchase", "u1", None, {"revenue": 1})
        await ours.flush()
        assert len(recorder.requests) == 1


@pytest.mark.anyio
async def test_known_tag_divergences_from_the_official_sdk() -> None:
    """Two deliberate differences, pinned so that a change on either side is noticed:

    * falsy tags that are not a dict (``[]``, ``""``, ``0``, ``False``) pass both SDKs' check; the official
      sends them as ``"tags"`` verbatim, ours sends ``"tags": {}``;
    * a tag value that is an object with a ``__dict__``: the official encoder sends its attributes, ours
      refuses the event at ``track()`` (only JSON types are accepted).
    """
    datafile = _small_datafile()
    official, dispatcher = _official_with_recorder(datafile)
    recorder = EventRecorder()
    try:
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=recorder, batch_size=1) as ours:
            falsy: Any
            for falsy in ([], "", 0, False):
                official.track("purchase", "u1", None, falsy)
                await ours.track("purchase", "u1", None, falsy)
                await ours.flush()
                theirs = dispatcher.events.pop().params["visitors"][0]["snapshots"][0]["events"][0]
                mine = recorder.requests.pop().payload["visitors"][0]["snapshots"][0]["events"][0]
                assert same(theirs["tags"], falsy)
                assert mine["tags"] == {}
            official.track("purchase", "u1", None, {"thing": WithDict()})
            await ours.track("purchase", "u1", None, {"thing": WithDict()})
            await ours.flush()
            assert dispatcher.events.pop().params["visitors"][0]["snapshots"][0]["events"][0]["tags"] == {
                "thing": {"a": 1}
            }
            assert recorder.requests == []
    finally:
        official.close()


@pytest.mark.anyio
async def test_equal_but_different_attribute_values_are_sent_as_given() -> None:
    """Values that are equal in Python but not on the wire (0.0 and -0.0; 1, 1.0 and True) are each sent as
    the caller gave them, as the official SDK sends them, however often they repeat."""
    datafile = _small_datafile()
    key = datafile["attributes"][0]["key"]
    official, dispatcher = _official_with_recorder(datafile)
    recorder = EventRecorder()
    values: list[Any] = [0.0, -0.0, 0, False, 1, 1.0, True, -0.0, 0.0, 1.0, 1]
    try:
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=recorder, batch_size=1) as ours:
            for value in values:
                official.track("purchase", "u1", {key: value}, None)
                await ours.track("purchase", "u1", {key: value}, None)
            await ours.flush()
        theirs = [_ordered(e.params["visitors"][0]["attributes"]) for e in dispatcher.events]
        mine = [_ordered(r.payload["visitors"][0]["attributes"]) for r in recorder.requests]
        assert mine == theirs
        assert len(set(theirs)) == 7
    finally:
        official.close()
