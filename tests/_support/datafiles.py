"""Small datafiles several test files share.

``empty_datafile`` is a valid version-4 datafile with nothing in it, for tests where only loading, polling or
the revision matters; ``feature_test_datafile`` has one experiment that is a flag's feature test (everyone in
variation "on"), a rollout flag, one attribute and one event: enough for impressions and conversions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVENT_KEY", "empty_datafile", "feature_test_datafile"]

#: The event of ``feature_test_datafile`` (id "5001", attached to experiment "exp").
EVENT_KEY = "purchase"


def empty_datafile(revision: str = "1", **extra: Any) -> dict[str, Any]:
    """No experiments, flags, events or audiences (account "1", project "2"); ``extra`` adds or replaces keys."""
    return {
        "version": "4",
        "accountId": "1",
        "projectId": "2",
        "revision": revision,
        "experiments": [],
        "events": [],
        "audiences": [],
        "attributes": [],
        "groups": [],
        "featureFlags": [],
        "rollouts": [],
        **extra,
    }


def feature_test_datafile(revision: str = "7") -> dict[str, Any]:
    """An experiment "exp" (everyone in "on") that is the feature test of flag "flag" (variables "size" and
    "label"), a rollout flag "rolled" (everyone on), one attribute and one event."""
    on = {
        "id": "2001",
        "key": "on",
        "featureEnabled": True,
        "variables": [{"id": "7001", "value": "42"}, {"id": "7002", "value": "big"}],
    }
    rolled_on = {"id": "2101", "key": "rolled_on", "featureEnabled": True, "variables": []}
    return {
        "version": "4",
        "accountId": "1001",
        "projectId": "1002",
        "revision": revision,
        "anonymizeIP": False,
        "botFiltering": False,
        "sendFlagDecisions": True,
        "attributes": [{"id": "3001", "key": "browser"}],
        "audiences": [],
        "typedAudiences": [],
        "experiments": [
            {
                "id": "4001",
                "key": "exp",
                "layerId": "4002",
                "status": "Running",
                "variations": [on],
                "trafficAllocation": [{"entityId": "2001", "endOfRange": 10000}],
                "audienceIds": [],
                "forcedVariations": {},
            }
        ],
        "groups": [],
        "events": [{"id": "5001", "key": EVENT_KEY, "experimentIds": ["4001"]}],
        "featureFlags": [
            {
                "id": "6001",
                "key": "flag",
                "experimentIds": ["4001"],
                "rolloutId": "",
                "variables": [
                    {"id": "7001", "key": "size", "type": "integer", "defaultValue": "1"},
                    {"id": "7002", "key": "label", "type": "string", "defaultValue": "small"},
                ],
            },
            {"id": "6002", "key": "rolled", "experimentIds": [], "rolloutId": "8001", "variables": []},
        ],
        "rollouts": [
            {
                "id": "8001",
                "experiments": [
                    {
                        "id": "8101",
                        "key": "everyone",
                        "layerId": "8001",
                        "status": "Running",
                        "variations": [rolled_on],
                        "trafficAllocation": [{"entityId": "2101", "endOfRange": 10000}],
                        "audienceIds": [],
                        "forcedVariations": {},
                    }
                ],
            }
        ],
    }
