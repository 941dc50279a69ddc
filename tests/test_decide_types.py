"""Unit tests of decide.py: options, coerce_options, OptimizelyDecision and the decision messages, against the
official SDK's own constants and classes."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from typing import Any

import pytest
from optimizely import optimizely as official_sdk
from optimizely.decision.optimizely_decide_option import OptimizelyDecideOption
from optimizely.decision.optimizely_decision import OptimizelyDecision as OfficialDecision
from optimizely.decision.optimizely_decision_message import OptimizelyDecisionMessage
from optimizely.helpers.sdk_settings import OptimizelySdkSettings

import optimizely_async
from _logcapture import capture
from optimizely_async.decide import DecideOption, DecisionMessage, OptimizelyDecision, coerce_options

LOG = logging.getLogger("optimizely_async")
OFFICIAL_OPTIONS = {name: value for name, value in vars(OptimizelyDecideOption).items() if name.isupper()}
#: Official options that steer the CMAB prediction cache (supported since CMAB landed).
CMAB_ONLY = {"IGNORE_CMAB_CACHE", "RESET_CMAB_CACHE", "INVALIDATE_USER_CMAB_CACHE"}

D = DecideOption


# ------------------------------------------------------------------------------------------ options


def test_option_values_are_the_official_strings() -> None:
    assert len(DecideOption) == 8
    for member in DecideOption:
        assert OFFICIAL_OPTIONS[member.name] == member.value == member.name
        assert member == member.value and isinstance(member, str)
        assert str(member) == f"{member}" == member.value
    assert set(OFFICIAL_OPTIONS) == {m.name for m in DecideOption}
    assert set(OFFICIAL_OPTIONS) >= CMAB_ONLY


def test_every_official_option_string_is_accepted() -> None:
    got = coerce_options(list(OFFICIAL_OPTIONS.values()))
    assert [m.value for m in got] == list(OFFICIAL_OPTIONS.values())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ()),
        ([], ()),
        ((), ()),
        (["INCLUDE_REASONS"], (D.INCLUDE_REASONS,)),
        ([D.EXCLUDE_VARIABLES, "DISABLE_DECISION_EVENT"], (D.EXCLUDE_VARIABLES, D.DISABLE_DECISION_EVENT)),
        (("ENABLED_FLAGS_ONLY", D.IGNORE_USER_PROFILE_SERVICE), (D.ENABLED_FLAGS_ONLY, D.IGNORE_USER_PROFILE_SERVICE)),
        # duplicates, as a string and as a member, count once, at their first place
        (["INCLUDE_REASONS", D.EXCLUDE_VARIABLES, D.INCLUDE_REASONS, "EXCLUDE_VARIABLES"],
         (D.INCLUDE_REASONS, D.EXCLUDE_VARIABLES)),
        # unknown, wrongly cased, non-string and unhashable items are ignored
        (["include_reasons", "NOPE", "", 1, None, b"INCLUDE_REASONS", ["INCLUDE_REASONS"], {"a": 1}, {1}], ()),
        (["NOPE", ["x"], "INCLUDE_REASONS", {}, D.DISABLE_DECISION_EVENT],
         (D.INCLUDE_REASONS, D.DISABLE_DECISION_EVENT)),
        (["IGNORE_CMAB_CACHE", "RESET_CMAB_CACHE", "EXCLUDE_VARIABLES"],
         (D.IGNORE_CMAB_CACHE, D.RESET_CMAB_CACHE, D.EXCLUDE_VARIABLES)),
    ],
)  # fmt: skip
def test_coerce_options(given: Any, expected: tuple[DecideOption, ...]) -> None:
    got = coerce_options(given)
    assert got == expected
    assert isinstance(got, tuple) and all(type(o) is DecideOption for o in got)


def test_coerce_options_takes_any_iterable_and_str_subclasses() -> None:
    class Named(str):
        pass

    given = (o for o in ["EXCLUDE_VARIABLES", "INCLUDE_REASONS"])
    assert coerce_options(given) == (D.EXCLUDE_VARIABLES, D.INCLUDE_REASONS)
    (member,) = coerce_options([Named("INCLUDE_REASONS")])
    assert member is D.INCLUDE_REASONS


def test_unknown_options_are_logged_at_debug_only() -> None:
    with capture(LOG) as logs:
        assert coerce_options(["NOPE", [1], "INCLUDE_REASONS"]) == (D.INCLUDE_REASONS,)
    assert logs == [
        (logging.DEBUG, "Ignoring unknown decide option 'NOPE'."),
        (logging.DEBUG, "Ignoring unknown decide option [1]."),
    ]


# ----------------------------------------------------------------------------------------- decisions


class FakeContext:
    """A user context stand-in: decisions only call its ``as_json()``."""

    def as_json(self) -> dict[str, Any]:
        return {"user_id": "u1", "attributes": {"plan": "gold"}}


def test_decision_fields_and_defaults_match_the_official_class() -> None:
    ours = [f.name for f in dataclasses.fields(OptimizelyDecision)]
    assert ours == list(inspect.signature(OfficialDecision).parameters)
    assert OptimizelyDecision().as_json() == OfficialDecision().as_json()
    assert list(OptimizelyDecision().as_json()) == list(OfficialDecision().as_json())  # key order too
    assert OptimizelyDecision().as_json() == {
        "variation_key": None, "enabled": False, "variables": {}, "rule_key": None, "flag_key": None,
        "user_context": None, "reasons": [],
    }  # fmt: skip


def test_decision_defaults_are_not_shared() -> None:
    first, second = OptimizelyDecision(), OptimizelyDecision()
    first.variables["x"] = 1
    first.reasons.append("r")
    assert (second.variables, second.reasons) == ({}, [])


def test_as_json_matches_the_official_for_a_full_decision() -> None:
    fields: dict[str, Any] = {
        "variation_key": "v1",
        "enabled": True,
        "variables": {"n": 1.5, "j": {"a": [1]}},
        "rule_key": "exp",
        "flag_key": "flag",
        "reasons": ["one", "two"],
    }
    ours = OptimizelyDecision(**fields, user_context=FakeContext()).as_json()  # type: ignore[arg-type]
    assert ours == OfficialDecision(**fields, user_context=FakeContext()).as_json()  # type: ignore[arg-type]
    assert ours["user_context"] == {"user_id": "u1", "attributes": {"plan": "gold"}}


@pytest.mark.parametrize("reasons", [[], ["Optimizely SDK not configured properly yet."], ["a", "b"]])
@pytest.mark.parametrize("key", ["flag", "", None])
def test_new_error_decision_matches_the_official(key: str | None, reasons: list[str]) -> None:
    context = FakeContext()
    ours = OptimizelyDecision.new_error_decision(key, context, reasons)  # type: ignore[arg-type]
    theirs = OfficialDecision.new_error_decision(key, context, reasons)  # type: ignore[arg-type,arg-type]
    assert ours.as_json() == theirs.as_json()
    assert (ours.variation_key, ours.enabled, ours.variables, ours.rule_key) == (None, False, {}, None)
    assert ours.flag_key == key and ours.user_context is context and ours.reasons == reasons
    ours.reasons.append("later")
    assert "later" not in reasons  # the caller's list is copied
    assert OptimizelyDecision.new_error_decision(key, None, reasons).as_json()["user_context"] is None


def test_decision_is_slotted() -> None:
    with pytest.raises(AttributeError):
        OptimizelyDecision().extra = 1  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ messages


def test_decision_messages_are_the_official_templates() -> None:
    official = {name: value for name, value in vars(OptimizelyDecisionMessage).items() if name.isupper()}
    ours = {name: value for name, value in vars(DecisionMessage).items() if name.isupper()}
    assert ours == official
    assert set(ours) == {"SDK_NOT_READY", "FLAG_KEY_INVALID", "VARIABLE_VALUE_INVALID"}
    for name in ("FLAG_KEY_INVALID", "VARIABLE_VALUE_INVALID"):
        assert getattr(DecisionMessage, name).format("k ✓") == getattr(OptimizelyDecisionMessage, name).format("k ✓")
    assert DecisionMessage.FLAG_KEY_INVALID.format("f") == 'No flag was found for key "f".'


def test_messages_equal_what_the_official_decide_reports() -> None:
    # The reasons the official client puts on its error decisions, built from the same templates.
    datafile = (Path(optimizely_async.__file__).parent / "example_datafile.json").read_text()
    for text, key, expected in [
        ("not json", "flag", DecisionMessage.SDK_NOT_READY),
        (datafile, "no_such_flag ✓", DecisionMessage.FLAG_KEY_INVALID.format("no_such_flag ✓")),
    ]:
        client = official_sdk.Optimizely(datafile=text, settings=OptimizelySdkSettings(odp_disabled=True))
        try:
            context = client.create_user_context("u1")
            assert context is not None
            assert context.decide(key, ["INCLUDE_REASONS"]).reasons == [expected]
        finally:
            client.close()
