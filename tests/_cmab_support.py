"""Shared pieces of the CMAB and ODP tests: a small datafile, both SDKs wired to the stand-in server.

The official SDK's prediction timeout is fixed at 10 s; for the timeout cases its CMAB client gets a
``requests.Session`` that lowers the timeout of each request (nothing else changes), so a test waits tenths of
a second, not 20 s.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import requests
from optimizely import optimizely as official_sdk
from optimizely.cmab.cmab_client import CmabRetryConfig, DefaultCmabClient
from optimizely.cmab.cmab_service import DefaultCmabService
from optimizely.event.event_processor import ForwardingEventProcessor
from optimizely.helpers import enums as official_enums
from optimizely.helpers.sdk_settings import OptimizelySdkSettings
from optimizely.odp.lru_cache import LRUCache

from datagen import DUMMY_LEGACY_CONDITIONS
from differential import RecordingDispatcher
from optimizely_async import AsyncOptimizely, DispatchResult, EventRequest, NotificationType

#: Seconds one request may take in these tests (both SDKs).
TIMEOUT = 0.5

FLAG = "cmab_flag"
EXPERIMENT = "cmab_exp"
EXPERIMENT_ID = "3001"
ROLLOUT_RULE = "everyone_else"


def small_datafile(
    *, traffic: int = 10000, attribute_ids: list[str] | None = None, host: str = "http://127.0.0.1:9"
) -> dict[str, Any]:
    """One flag: a CMAB feature test (two variations, attributes "age" and "plan"), then a rollout that is
    enabled for everyone; a second flag gated by the ODP segment "seg_gold"; an ODP integration at ``host``."""
    variables = [{"id": "601", "key": "color", "type": "string", "defaultValue": "grey"}]
    return {
        "version": "4",
        "projectId": "111",
        "accountId": "222",
        "revision": "7",
        "anonymizeIP": False,
        "botFiltering": False,
        "sendFlagDecisions": True,
        "attributes": [{"id": "501", "key": "age"}, {"id": "502", "key": "plan"}, {"id": "503", "key": "country"}],
        "audiences": [
            {
                "id": "701",
                "name": "gold segment",
                "conditions": DUMMY_LEGACY_CONDITIONS,
            }
        ],
        "typedAudiences": [
            {
                "id": "701",
                "name": "gold segment",
                "conditions": [
                    "and",
                    [
                        "or",
                        {
                            "type": "third_party_dimension",
                            "name": "odp.audiences",
                            "match": "qualified",
                            "value": "seg_gold",
                        },
                    ],
                ],
            }
        ],
        "experiments": [
            {
                "id": EXPERIMENT_ID,
                "key": EXPERIMENT,
                "layerId": "3000",
                "status": "Running",
                "variations": [
                    {
                        "id": "4001",
                        "key": "treatment_a",
                        "featureEnabled": True,
                        "variables": [{"id": "601", "value": "red"}],
                    },
                    {
                        "id": "4002",
                        "key": "treatment_b",
                        "featureEnabled": True,
                        "variables": [{"id": "601", "value": "blue"}],
                    },
                ],
                "trafficAllocation": [{"entityId": "4001", "endOfRange": 10000}],
                "audienceIds": [],
                "forcedVariations": {"whitelisted": "treatment_b"},
                "cmab": {
                    "attributeIds": ["501", "502"] if attribute_ids is None else attribute_ids,
                    "trafficAllocation": traffic,
                },
            },
            {
                "id": "3101",
                "key": "odp_exp",
                "layerId": "3100",
                "status": "Running",
                "variations": [{"id": "4101", "key": "odp_on", "featureEnabled": True, "variables": []}],
                "trafficAllocation": [{"entityId": "4101", "endOfRange": 10000}],
                "audienceIds": ["701"],
                "forcedVariations": {},
            },
        ],
        "groups": [],
        "events": [{"id": "801", "key": "purchase", "experimentIds": [EXPERIMENT_ID]}],
        "featureFlags": [
            {"id": "901", "key": FLAG, "experimentIds": [EXPERIMENT_ID], "rolloutId": "1001", "variables": variables},
            {"id": "902", "key": "odp_flag", "experimentIds": ["3101"], "rolloutId": "", "variables": []},
        ],
        "rollouts": [
            {
                "id": "1001",
                "experiments": [
                    {
                        "id": "1101",
                        "key": ROLLOUT_RULE,
                        "layerId": "1001",
                        "status": "Running",
                        "variations": [
                            {
                                "id": "4201",
                                "key": "rollout_on",
                                "featureEnabled": True,
                                "variables": [{"id": "601", "value": "green"}],
                            }
                        ],
                        "trafficAllocation": [{"entityId": "4201", "endOfRange": 10000}],
                        "audienceIds": [],
                        "forcedVariations": {},
                    }
                ],
            }
        ],
        "integrations": [{"key": "odp", "host": host, "publicKey": "odp-key-1"}],
        "sdkKey": "sdk-key-cmab",
        "environmentKey": "production",
    }


class ClampedSession(requests.Session):
    """A requests session whose requests time out after at most ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["timeout"] = min(kwargs.get("timeout") or self.limit, self.limit)
        return super().request(method, url, *args, **kwargs)


class Official:
    """The official client with its CMAB and ODP endpoints on the stand-in server; records DECISION
    notifications and impressions."""

    def __init__(
        self,
        datafile: dict[str, Any],
        predict_url: str,
        *,
        default_decide_options: list[str] | None = None,
        logger: logging.Logger | None = None,
        user_profile_service: Any = None,
    ) -> None:
        self.dispatcher = RecordingDispatcher()
        cmab_client = DefaultCmabClient(
            http_client=ClampedSession(TIMEOUT),
            retry_config=CmabRetryConfig(),
            prediction_endpoint=predict_url,
            logger=logger,
        )
        service = DefaultCmabService(cmab_cache=LRUCache(10000, 1800), cmab_client=cmab_client, logger=logger)
        self.client = official_sdk.Optimizely(
            datafile=json.dumps(datafile),
            event_dispatcher=self.dispatcher,
            event_processor=ForwardingEventProcessor(self.dispatcher),
            settings=OptimizelySdkSettings(odp_segment_request_timeout=TIMEOUT, odp_event_flush_interval=0),  # type: ignore[arg-type]
            cmab_service=service,
            default_decide_options=default_decide_options,
            logger=logger,
            user_profile_service=user_profile_service,
        )
        self.notes: list[tuple[Any, ...]] = []
        self.client.notification_center.add_notification_listener(
            official_enums.NotificationTypes.DECISION,
            lambda *args: self.notes.append(copy.deepcopy(args)),
        )

    def impressions(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(event.params) for event in self.dispatcher.events]

    def close(self) -> None:
        self.client.close()


class Recorder:
    """Our ``event_dispatcher``: keeps each payload, delivers at once."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    async def dispatch(self, request: EventRequest) -> DispatchResult:
        payload = copy.deepcopy(dict(request.payload))
        for visitor in payload.get("visitors", []):
            self.payloads.append({**payload, "visitors": [visitor]})
        return DispatchResult(delivered=True, status=204)


def ours(datafile: dict[str, Any], predict_url: str, **options: Any) -> tuple[AsyncOptimizely, Recorder, list[Any]]:
    """Our client on the stand-in server, its impressions recorded, DECISION notifications kept."""
    recorder = Recorder()
    options.setdefault("cmab_request_timeout", TIMEOUT)
    options.setdefault("odp_segment_request_timeout", TIMEOUT)
    options.setdefault("odp_event_flush_interval", 0)
    client = AsyncOptimizely(
        datafile=copy.deepcopy(datafile),
        cmab_prediction_endpoint=predict_url,
        event_dispatcher=recorder,
        batch_size=1,
        **options,
    )
    notes: list[Any] = []
    client.notification_center.add_notification_listener(
        NotificationType.DECISION, lambda *args: notes.append(copy.deepcopy(args))
    )
    return client, recorder, notes


def scrub_impression(payload: dict[str, Any]) -> dict[str, Any]:
    """An impression payload without what differs by design; a ``cmab_uuid`` becomes ``"<uuid>"`` (each SDK
    makes its own), so its presence is still compared."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("uuid", "timestamp", "client_name", "client_version"):
                    continue
                out[key] = "<uuid>" if key == "cmab_uuid" and value else walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(payload)  # type: ignore[no-any-return]
