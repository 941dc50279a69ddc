"""A small datafile for the OpenFeature provider tests: one flag per reason the provider can give.

* ``of_flag``: a feature test for users with a ``plan`` (SPLIT, variation ``treat``), a targeted delivery for
  ``country`` DE (TARGETING_MATCH, ``de_on``) and an enabled "Everyone Else" rule (DEFAULT, ``everyone_on``).
  Variables: ``value`` (string), ``count`` (integer), ``ratio`` (double), ``cfg`` (json), ``flag`` (boolean).
* ``off_flag``: "Everyone Else" gives a variation with the feature off (DISABLED).
* ``empty_flag``: no rules at all (DEFAULT, no variation).
"""

from __future__ import annotations

import json
from typing import Any

EVENT_KEY = "purchase"

_VARIABLES = [
    {"id": "701", "key": "value", "type": "string", "defaultValue": "base"},
    {"id": "702", "key": "count", "type": "integer", "defaultValue": "1"},
    {"id": "703", "key": "ratio", "type": "double", "defaultValue": "0.5"},
    {"id": "704", "key": "cfg", "type": "json", "defaultValue": '{"a": 1}'},
    {"id": "705", "key": "flag", "type": "boolean", "defaultValue": "false"},
]


def _variation(vid: str, key: str, enabled: bool, value: str, count: int, ratio: float, cfg: Any) -> dict[str, Any]:
    return {
        "id": vid,
        "key": key,
        "featureEnabled": enabled,
        "variables": [
            {"id": "701", "value": value},
            {"id": "702", "value": str(count)},
            {"id": "703", "value": str(ratio)},
            {"id": "704", "value": json.dumps(cfg)},
            {"id": "705", "value": "true"},
        ],
    }


def _rule(rid: str, key: str, layer: str, audiences: list[str], variation: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "key": key,
        "layerId": layer,
        "status": "Running",
        "variations": [variation],
        "trafficAllocation": [{"entityId": variation["id"], "endOfRange": 10000}],
        "audienceIds": audiences,
        "forcedVariations": {},
    }


def datafile(revision: str = "1", value: str = "treat-v") -> dict[str, Any]:
    """The datafile; ``value`` is the ``value`` variable of the feature test's variation (to see updates)."""
    return {
        "version": "4",
        "accountId": "9001",
        "projectId": "9002",
        "revision": revision,
        "anonymizeIP": True,
        "botFiltering": False,
        "sendFlagDecisions": True,
        "attributes": [{"id": "801", "key": "plan"}, {"id": "802", "key": "country"}],
        "audiences": [
            {
                "id": "901",
                "name": "has plan",
                "conditions": '["or", {"name": "plan", "type": "custom_attribute", "match": "exists"}]',
            },
            {
                "id": "902",
                "name": "germany",
                "conditions": json.dumps(
                    ["or", {"name": "country", "type": "custom_attribute", "match": "exact", "value": "DE"}]
                ),
            },
        ],
        "typedAudiences": [],
        "experiments": [
            _rule("501", "of_test", "511", ["901"], _variation("521", "treat", True, value, 7, 2.5, {"a": 2}))
        ],
        "groups": [],
        "events": [{"id": "601", "key": EVENT_KEY, "experimentIds": ["501"]}],
        "featureFlags": [
            {"id": "401", "key": "of_flag", "experimentIds": ["501"], "rolloutId": "301", "variables": _VARIABLES},
            {"id": "402", "key": "off_flag", "experimentIds": [], "rolloutId": "302", "variables": _VARIABLES},
            {"id": "403", "key": "empty_flag", "experimentIds": [], "rolloutId": "303", "variables": _VARIABLES},
        ],
        "rollouts": [
            {
                "id": "301",
                "experiments": [
                    _rule("531", "de_rule", "531", ["902"], _variation("541", "de_on", True, "de", 3, 1.5, {"a": 3})),
                    _rule(
                        "532",
                        "default-rollout-301",
                        "532",
                        [],
                        _variation("542", "everyone_on", True, "everyone", 4, 4.0, {"a": 4}),
                    ),
                ],
            },
            {
                "id": "302",
                "experiments": [
                    _rule("533", "default-rollout-302", "533", [], _variation("543", "off", False, "x", 5, 5.5, [1])),
                ],
            },
            {"id": "303", "experiments": []},
        ],
    }
