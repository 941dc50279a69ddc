"""Cases that could crash the interpreter (SIGSEGV in a C extension), run by tests/test_hostile_inputs.py in a
child pytest process, so that a crash fails one test there instead of ending the whole run.

Not collected by the main run (the file name does not start with ``test_``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from _sink_server import serve_sink
from differential import make_official
from optimizely_async import AsyncOptimizely
from optimizely_async.decision.bucketing import bucket_value, find_bucket, hash_key

pytestmark = pytest.mark.anyio

DATAFILE = json.loads(
    (Path(__file__).parent.parent / "src" / "optimizely_async" / "example_datafile.json").read_text("utf-8")
)
FLAGS = [f["key"] for f in DATAFILE["featureFlags"]]
EXPERIMENTS = [e["key"] for e in DATAFILE["experiments"]]

#: What json.loads makes of request bodies holding lone surrogates.
LONE = [json.loads(text) for text in ('"\\ud800"', '"a\\udfffb"', '"\\udc00\\ud800"', '"user-\\ud83d"')]


def replaced(text: str) -> str:
    """The documented reading of a lone surrogate: U+FFFD."""
    return hash_key(text).decode("utf-8")


def test_hash_key_reads_lone_surrogates_as_replacement_characters() -> None:
    assert hash_key("\ud800") == "\ufffd".encode()
    assert hash_key("a\udfffb") == "a\ufffdb".encode()
    assert hash_key("\ud83d\ude00") == "\U0001f600".encode()  # a high + low pair is the character they encode
    assert hash_key("\udc00\ud800") == "\ufffd\ufffd".encode()
    assert hash_key("plain-id") == b"plain-id"


@pytest.mark.parametrize("text", LONE)
def test_bucketing_a_lone_surrogate_does_not_crash(text: str) -> None:
    assert bucket_value(text + "1886780721") == bucket_value(replaced(text) + "1886780721")
    value, entity = find_bucket(text, "123", [("a", 10000)])
    assert entity == "a" and 0 <= value < 10000


async def every_decision(client: AsyncOptimizely, user_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """Every decision and decide path of the client for one user."""
    out: dict[str, Any] = {}
    for key in EXPERIMENTS:
        out[f"get_variation:{key}"] = await client.get_variation(key, user_id, attributes)
        out[f"activate:{key}"] = await client.activate(key, user_id, attributes)
    for key in FLAGS:
        out[f"is_feature_enabled:{key}"] = await client.is_feature_enabled(key, user_id, attributes)
        out[f"get_all_feature_variables:{key}"] = await client.get_all_feature_variables(key, user_id, attributes)
    out["get_enabled_features"] = await client.get_enabled_features(user_id, attributes)
    user = client.create_user_context(user_id, attributes)
    assert user is not None
    for key in FLAGS:
        out[f"decide:{key}"] = (await user.decide(key)).variation_key
    out["decide_all"] = {k: d.variation_key for k, d in (await user.decide_all()).items()}
    out["decide_for_keys"] = {k: d.variation_key for k, d in (await user.decide_for_keys(FLAGS)).items()}
    await client.track("purchase", user_id, attributes, {"revenue": 1})
    await user.track_event("purchase")
    return out


def official_decisions(user_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
    sdk, _, _ = make_official(DATAFILE)  # its events are recorded, never sent
    try:
        out: dict[str, Any] = {}
        for key in EXPERIMENTS:
            out[f"get_variation:{key}"] = sdk.get_variation(key, user_id, attributes)
            out[f"activate:{key}"] = sdk.activate(key, user_id, attributes)
        for key in FLAGS:
            out[f"is_feature_enabled:{key}"] = sdk.is_feature_enabled(key, user_id, attributes)
            out[f"get_all_feature_variables:{key}"] = sdk.get_all_feature_variables(key, user_id, attributes)
        out["get_enabled_features"] = sdk.get_enabled_features(user_id, attributes)
        user = sdk.create_user_context(user_id, attributes)
        for key in FLAGS:
            out[f"decide:{key}"] = user.decide(key).variation_key
        out["decide_all"] = {k: d.variation_key for k, d in user.decide_all().items()}
        out["decide_for_keys"] = {k: d.variation_key for k, d in user.decide_for_keys(FLAGS).items()}
        return out
    finally:
        sdk.close()


@pytest.mark.parametrize("text", LONE)
async def test_a_lone_surrogate_user_id_decides_as_its_replacement_and_events_go_out(text: str) -> None:
    """issue 10 item 1: ``is_feature_enabled("new_checkout", json.loads('"\\ud800"'))`` ended the process."""
    attributes = {"country": "US", "age": 30}
    async with serve_sink() as sink:
        async with AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url, batch_size=50) as client:
            ours = await every_decision(client, text, attributes)
            # The official SDK raises UnicodeEncodeError for this id; it decides the replaced id.
            expected = official_decisions(replaced(text), attributes)
            assert {k: v for k, v in ours.items() if k in expected} == expected
            # The client still decides and delivers for an ordinary user afterwards.
            assert await client.is_feature_enabled("new_checkout", "someone", attributes) in (True, False)
            await client.flush()
            assert client.stats().dropped == {}, client.stats()
        visitors = [v["visitor_id"] for r in sink.received for v in r.payload["visitors"]]
        assert text in visitors and "someone" in visitors


@pytest.mark.parametrize("text", LONE)
async def test_a_lone_surrogate_bucketing_id_decides_as_its_replacement(text: str) -> None:
    """The same for ``$opt_bucketing_id``."""
    attributes = {"country": "US", "$opt_bucketing_id": text}
    async with (
        serve_sink() as sink,
        AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url, batch_size=50) as client,
    ):
        ours = await every_decision(client, "user-1", attributes)
        expected = official_decisions("user-1", {**attributes, "$opt_bucketing_id": replaced(text)})
        assert {k: v for k, v in ours.items() if k in expected} == expected
        await client.flush()
        assert client.stats().delivered > 0 and client.stats().dropped == {}, client.stats()


async def test_a_fastapi_app_survives_a_json_body_with_a_lone_surrogate_user_id() -> None:
    """The reproducer of item 1: one POST to a FastAPI app built as the README shows ended the server process."""
    async with serve_sink() as sink:
        optimizely = AsyncOptimizely(datafile=DATAFILE, event_endpoint=sink.url)
        app = FastAPI()

        @app.post("/checkout")
        async def checkout(request: Request) -> dict[str, object]:
            user_id = (await request.json())["user_id"]  # json.loads keeps "\ud800" as a lone surrogate
            attributes = {"country": "US", "plan": "premium"}
            enabled = await optimizely.is_feature_enabled("new_checkout", user_id, attributes)
            button = await optimizely.activate("checkout_button_color", user_id, attributes)
            await optimizely.track("purchase", user_id, attributes, {"revenue": 4999})
            return {"new_checkout": enabled, "button": button}

        async with optimizely:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                for body in (b'{"user_id": "\\ud800"}', b'{"user_id": "ok-user"}'):
                    response = await http.post("/checkout", content=body, headers={"content-type": "application/json"})
                    assert response.status_code == 200, response.text
                    assert response.json()["button"] in {"control", "green", "orange"}
            await optimizely.flush()
            assert optimizely.stats().dropped == {}, optimizely.stats()
        visitors = [v["visitor_id"] for r in sink.received for v in r.payload["visitors"]]
        assert visitors.count("\ud800") >= 2 and visitors.count("ok-user") >= 2, visitors
