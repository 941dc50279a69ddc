"""Typed variable values (config/variables.py): cast once per variation, each call its own copy.

The differential tests compare the values with the official SDK's over generated datafiles; these pin what a
cache could get wrong: shared mutable values, the error logged on every call for a value that does not cast,
and variations that are not the flag's own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from _logcapture import capture
from _support.datafiles import empty_datafile
from optimizely_async.config.project_config import VariationInfo, parse_config
from optimizely_async.config.variables import CAST_FAILED, _copier, _parse_json

VARIABLES = [
    ("1", "flag_on", "boolean", None, "false"),
    ("2", "count", "integer", None, "3"),
    ("3", "ratio", "double", None, "0.5"),
    ("4", "label", "string", None, "plain"),
    ("5", "layout", "string", "json", '{"columns": 1, "steps": ["cart", {"pay": [1, 2.5, null, true]}]}'),
    ("6", "items", "json", None, "[1, [2, 3]]"),
    ("7", "scalar", "json", None, '"text"'),
    ("8", "nothing", "json", None, "null"),
    ("9", "broken", "json", None, "{bad"),
    ("10", "not_int", "integer", None, "1.5"),
]
#: What the enabled variation "on" sets (variable id -> raw value); the others keep their defaults.
ON_VALUES = {"1": "true", "2": "7", "5": '{"columns": 2}', "6": "[]", "10": "8"}


def _variation(vid: str, key: str, enabled: bool, values: dict[str, str]) -> dict[str, Any]:
    return {
        "id": vid,
        "key": key,
        "featureEnabled": enabled,
        "variables": [{"id": i, "value": v} for i, v in values.items()],
    }


def _datafile() -> dict[str, Any]:
    rule = {
        "id": "31",
        "key": "rule",
        "status": "Running",
        "layerId": "L31",
        "variations": [_variation("310", "on", True, ON_VALUES), _variation("311", "off", False, {"2": "9"})],
        "trafficAllocation": [{"entityId": "310", "endOfRange": 10000}],
        "audienceIds": [],
        "forcedVariations": {},
    }
    variables = [
        {"id": i, "key": k, "type": t, "defaultValue": d, **({"subType": s} if s else {})}
        for i, k, t, s, d in VARIABLES
    ]
    return empty_datafile(
        "3",
        rollouts=[{"id": "R", "experiments": [rule]}],
        featureFlags=[{"id": "F", "key": "flag", "experimentIds": [], "rolloutId": "R", "variables": variables}],
    )


def _reference(values: dict[str, str] | None) -> dict[str, Any]:
    """The official reading: each raw value (the variation's, else the default) cast by type; None when the
    cast fails (the official SDK logs an error and returns None)."""
    out: dict[str, Any] = {}
    for vid, key, vtype, subtype, default in VARIABLES:
        raw = values.get(vid, default) if values is not None else None
        kind = "json" if subtype == "json" else vtype
        try:
            if kind == "boolean":
                out[key] = raw == "true"
            elif kind == "integer":
                out[key] = int(raw)  # type: ignore[arg-type]
            elif kind == "double":
                out[key] = float(raw)  # type: ignore[arg-type]
            elif kind == "json":
                out[key] = json.loads(raw)  # type: ignore[arg-type]
            else:
                out[key] = raw
        except (TypeError, ValueError):
            out[key] = None
    return out


def _cast_errors(records: list[tuple[int, str]]) -> int:
    return sum(1 for level, message in records if level == logging.ERROR and message == CAST_FAILED)


def test_values_are_the_official_casts_in_declaration_order() -> None:
    config = parse_config(_datafile())
    flag = config.flags_by_key["flag"]
    on, off = flag.variations_by_id["310"], flag.variations_by_id["311"]
    for _ in range(2):  # the first call casts, the second reads the cache
        for variation, expected in ((on, _reference(ON_VALUES)), (off, _reference({})), (None, _reference({}))):
            values = config.flag_variables(flag, variation)
            assert values == expected
            assert list(values) == [key for _, key, *_ in VARIABLES]


def test_each_call_gets_its_own_mutable_values() -> None:
    config = parse_config(_datafile())
    flag = config.flags_by_key["flag"]
    first = config.flag_variables(flag, None)
    first["layout"]["steps"][1]["pay"].append("changed")
    first["items"][1].clear()
    first["count"] = 99
    second = config.flag_variables(flag, None)
    assert second == _reference({})
    assert second["layout"] is not first["layout"]
    assert second["layout"]["steps"] is not first["layout"]["steps"]


def test_a_value_that_does_not_cast_logs_on_every_call() -> None:
    config = parse_config(_datafile())
    flag = config.flags_by_key["flag"]
    with capture(logging.getLogger("optimizely_async")) as records:
        for calls in (1, 2, 3):
            config.flag_variables(flag, None)  # "broken" and "not_int" do not cast
            assert _cast_errors(records) == 2 * calls
        records.clear()
        config.flag_variables(flag, flag.variations_by_id["310"])  # "not_int" is 8 there
        assert _cast_errors(records) == 1


def test_a_variation_of_another_entity_is_read_but_not_kept() -> None:
    """A holdout's variation is not one of the flag's: its values are read from the datafile every time (its
    id could equal one of the flag's variations' ids in another datafile revision)."""
    config = parse_config(_datafile())
    flag = config.flags_by_key["flag"]
    stranger = VariationInfo("999", "held", True)
    with capture(logging.getLogger("optimizely_async")) as records:
        values = config.flag_variables(flag, stranger)
    # No values in the datafile for that variation: every raw value reads as None, as in the official SDK.
    assert values == _reference(None)
    assert _cast_errors(records) == 8  # None casts as a boolean and a string only
    assert "999" not in flag.typed_variables


def test_a_tree_too_deep_for_marshal_is_parsed_again() -> None:
    tree: list[Any] = []
    for _ in range(3000):
        tree = [tree]
    load, data = _copier(tree, "[[]]")
    assert load is _parse_json and data == "[[]]"
    load, data = _copier({"a": [1]}, '{"a": [1]}')
    assert load(data) == {"a": [1]}
