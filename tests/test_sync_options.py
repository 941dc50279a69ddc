"""SyncOptimizely's options come from AsyncOptimizely's constructor, and the CMAB and ODP ones work.

The option names are checked against ``AsyncOptimizely.__init__`` (``SyncOptions``, the typed list, is compared
with it here); then CMAB and ODP through a ``SyncOptimizely``: a sync decide against a CMAB rule fetches a
prediction from the stand-in server (on the client's loop thread), a segments fetch qualifies the user for an
audience, and ``send_odp_event`` reaches the ODP events endpoint.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from _cmab_odp_server import Reply, StandIn, serve_stand_in
from _cmab_support import EXPERIMENT, FLAG, TIMEOUT, Recorder, small_datafile
from optimizely_async import AsyncOptimizely, ConfigurationError, DecideOption, NotificationType, SyncOptimizely
from optimizely_async.sync_options import NOT_SYNC, SyncOptions

PREDICTED = Reply.json({"predictions": [{"variation_id": "4002"}]})  # treatment_b
GOLD = Reply.json(
    {"data": {"customer": {"audiences": {"edges": [{"node": {"name": "seg_gold", "state": "qualified"}}]}}}}
)


def async_options() -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(AsyncOptimizely.__init__).parameters.values()
    return {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_sync_options_are_the_async_ones_less_two() -> None:
    typed = {name: hint.__forward_arg__ for name, hint in SyncOptions.__annotations__.items()}
    expected = {name: p.annotation for name, p in async_options().items() if name not in NOT_SYNC}
    assert set(NOT_SYNC) <= set(async_options())
    assert typed == expected
    assert not SyncOptions.__required_keys__


def test_the_signature_shows_every_option_with_its_default() -> None:
    shown = inspect.signature(SyncOptimizely).parameters
    assert list(shown) == ["datafile", "sdk_key", *(name for name in async_options() if name not in NOT_SYNC)]
    for name, parameter in async_options().items():
        if name not in NOT_SYNC:
            assert shown[name].default == parameter.default, name
    # What type checkers see: the same options, typed (checked by mypy where LoopClient forwards them).
    assert SyncOptimizely.__init__.__annotations__["options"] == "Unpack[SyncOptions]"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_sise": 3}, "unknown option batch_sise=. Did you mean batch_size="),
        ({"nonsense": 1}, "unknown option nonsense=. See SyncOptions"),
        ({"http_client": object()}, "does not take http_client=: an httpx.AsyncClient belongs to one event loop"),
        ({"enqueue_timeout": 1.0}, "does not take enqueue_timeout=: a calling thread never waits"),
        ({"cmab_cache_size": -1}, "cmab_cache_size"),  # values: checked by AsyncOptimizely
        ({"odp_disabled": "yes"}, "odp_disabled must be True or False"),
        ({"cmab_prediction_endpoint": "ftp://x"}, "cmab_prediction_endpoint must be an http"),
    ],
)
def test_options_it_cannot_use_raise_configuration_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        SyncOptimizely(small_datafile(), **options)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with serve_stand_in() as server:
        yield server


def sync_client(server: StandIn, **options: Any) -> tuple[SyncOptimizely, Recorder]:
    recorder = Recorder()
    client = SyncOptimizely(
        small_datafile(host=server.url),
        event_dispatcher=recorder,
        batch_size=1,
        cmab_prediction_endpoint=server.url + "/predict/{}",
        cmab_request_timeout=TIMEOUT,
        odp_segment_request_timeout=TIMEOUT,
        odp_event_flush_interval=0,
        **options,
    )
    return client, recorder


def test_a_sync_decide_fetches_a_cmab_prediction(stand_in: StandIn) -> None:
    stand_in.predict = lambda rule_id, body, attempt: PREDICTED
    decided_in: list[str] = []
    client, recorder = sync_client(stand_in)
    client.notification_center.add_notification_listener(
        NotificationType.DECISION, lambda *args: decided_in.append(threading.current_thread().name)
    )
    with client:
        user = client.create_user_context("user-1", {"age": 30, "plan": "gold"})
        assert user is not None
        decision = user.decide(FLAG, [DecideOption.INCLUDE_REASONS])
        assert (decision.variation_key, decision.enabled, decision.rule_key) == ("treatment_b", True, EXPERIMENT)
        assert decision.variables == {"color": "blue"}
        again = user.decide(FLAG)  # from the cache
        assert again.variation_key == "treatment_b"
        assert client.is_feature_enabled(FLAG, "user-1", {"age": 30, "plan": "gold"}) is True  # legacy: cached
        predictions = stand_in.requests("/predict/")
        assert len(predictions) == 1
        instance = predictions[0].json["instances"][0]
        assert (instance["visitorId"], instance["experimentId"]) == ("user-1", "3001")
        assert sorted(a["id"] for a in instance["attributes"]) == ["501", "502"]
        client.flush()
    assert decided_in and all(name == "optimizely-async" for name in decided_in)  # the loop thread decided
    visitors = [visitor for payload in recorder.payloads for visitor in payload["visitors"]]
    metadata = [visitor["snapshots"][0]["decisions"][0]["metadata"] for visitor in visitors]
    assert len(metadata) == 3  # two decides and is_feature_enabled, each with its impression
    assert metadata[0]["cmab_uuid"] and metadata[1]["cmab_uuid"] == metadata[0]["cmab_uuid"]  # the cached one
    assert metadata[0]["variation_key"] == "treatment_b"


def test_a_failed_prediction_gives_the_error_decision(stand_in: StandIn) -> None:
    stand_in.predict = lambda rule_id, body, attempt: Reply(500)
    client, _ = sync_client(stand_in)
    with client:
        user = client.create_user_context("user-1", {"age": 30})
        assert user is not None
        decision = user.decide(FLAG)
        assert (decision.variation_key, decision.enabled) == (None, False)
        assert decision.reasons[-1] == f"Failed to fetch CMAB data for experiment {EXPERIMENT}."
        assert len(stand_in.requests("/predict/")) == 2  # two attempts
        assert user.decide("odp_flag").variation_key is None  # a flag without CMAB, decided as usual


def test_segments_fetched_through_the_sync_client_qualify_the_user(stand_in: StandIn) -> None:
    stand_in.graphql = lambda body: GOLD
    results: list[bool] = []
    client, _ = sync_client(stand_in)
    with client:
        user = client.create_user_context("user-1")
        assert user is not None
        assert user.decide("odp_flag").variation_key is None  # no segments yet
        assert user.fetch_qualified_segments(results.append) is True
        assert results == [True]
        assert user.get_qualified_segments() == ["seg_gold"]
        assert user.is_qualified_for("seg_gold")
        assert user.decide("odp_flag").variation_key == "odp_on"
        [request] = stand_in.requests("/v3/graphql")
        assert request.headers["x-api-key"] == "odp-key-1"
        assert "user-1" in request.body.decode()
        stand_in.graphql = lambda body: Reply(500)
        assert user.fetch_qualified_segments(options=["IGNORE_CACHE"]) is False
        assert user.get_qualified_segments() is None  # replaced on failure, as officially


def test_send_odp_event_through_the_sync_client(stand_in: StandIn) -> None:
    client, _ = sync_client(stand_in)
    with client:
        client.send_odp_event("purchase", {"fs-user-id": "user-1"}, data={"price": 9.5})
        client.send_odp_event("", {"fs_user_id": "user-1"})  # refused (logged), never raised
        client.flush()
        [request] = stand_in.requests("/v3/events")
        [event] = request.json
        assert (event["action"], event["identifiers"], event["data"]["price"]) == (
            "purchase",
            {"fs_user_id": "user-1"},
            9.5,
        )
        assert client.stats().odp.delivered == 1
    report = client.close()
    assert report.dropped == {}
