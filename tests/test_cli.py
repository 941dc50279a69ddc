"""``python -m optimizely_async validate | decide | explain``, run as a user runs them: in a subprocess.

What the commands print is checked against what the SDKs decide in this process (ours and the official one),
never against copied output. The ``explain`` trace is also checked in-process, over generated datafiles and
users: the rule it finds deciding must be the rule ``decide`` reports, every time.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import optimizely_async
from _datafile_server import DatafileServer, Status
from differential import make_official
from optimizely_async import AsyncOptimizely, DecideOption
from optimizely_async._cli.attributes import parse_attributes, parse_value
from optimizely_async._cli.explain import trace_flag
from optimizely_async.testing import DatafileBuilder, RecordingDispatcher
from test_testing_kit import KIT_USERS, random_attributes, random_builder

SRC = str(Path(optimizely_async.__file__).resolve().parents[1])


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimizely_async", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
        env={**os.environ, "PYTHONPATH": SRC},
    )


def example() -> dict[str, Any]:
    return dict(json.loads(resources.files("optimizely_async").joinpath("example_datafile.json").read_text("utf-8")))


def write(tmp_path: Path, datafile: dict[str, Any] | str, name: str = "datafile.json") -> str:
    path = tmp_path / name
    path.write_text(datafile if isinstance(datafile, str) else json.dumps(datafile))
    return str(path)


def shop() -> DatafileBuilder:
    return (
        DatafileBuilder()
        .audience("adults", age=("ge", 18))
        .audience("beta", beta=True)
        .audience("boston", zip="02134")
        .flag("checkout", variables={"headline": "Checkout", "steps": 3})
        .rollout(audience="adults", variables={"headline": "Adult checkout"}, key="adults_only")
        .flag("beta_banner", variables={"ratio": 0.5})
        .rollout(audience="beta", key="beta_rule")
        .flag("local_offer")
        .rollout(audience="boston")
    )


# ------------------------------------------------------------------------------------------------ help


def test_help_lists_the_commands_and_the_exit_codes() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for word in ("validate", "decide", "explain", "demo", "exit codes"):
        assert word in top.stdout, word
    for command in ("validate", "decide", "explain"):
        result = cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert re.search(r"^\s+3\s+decide/explain: a flag key", result.stdout, re.MULTILINE), result.stdout
        if command != "validate":
            assert "double-quoted JSON string is a string" in " ".join(result.stdout.split())


def test_the_demo_still_runs_with_or_without_its_name() -> None:
    for args in (("--users", "20"), ("demo", "--users", "20", "--backend", "trio")):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        assert "Event delivery" in result.stdout


# -------------------------------------------------------------------------------------------- validate


def test_validate_accepts_a_good_datafile_and_sums_it_up(tmp_path: Path) -> None:
    data = example()
    result = cli("validate", write(tmp_path, data))
    assert result.returncode == 0, result.stderr
    flags, rollouts, events = len(data["featureFlags"]), len(data["rollouts"]), len(data["events"])
    assert f"revision {data['revision']}): {flags} flags" in result.stdout
    assert f"{rollouts} rollouts" in result.stdout and f"{events} events" in result.stdout
    built = cli("validate", "-", stdin=shop().build_json())
    assert built.returncode == 0 and "warning" not in built.stdout, built.stdout


@pytest.mark.parametrize(
    ("break_it", "field"),
    [
        (lambda d: d["experiments"][1]["variations"][0].pop("key"), "experiments[1].variations[0].key"),
        (lambda d: d["featureFlags"][0].update(rolloutId="nowhere"), "featureFlags[key=new_checkout].rolloutId"),
        (lambda d: d.update(version="9"), "unsupported datafile version '9'"),
        (lambda d: d["audiences"][0].update(conditions="[not json"), "audiences[0].conditions"),
        (lambda d: d.pop("revision"), "revision: Field required"),
    ],
)
def test_validate_names_the_field_at_fault(tmp_path: Path, break_it: Any, field: str) -> None:
    data = example()
    break_it(data)
    result = cli("validate", write(tmp_path, data))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "INVALID" in result.stdout and field in result.stdout, result.stdout
    as_json = json.loads(cli("validate", "--json", write(tmp_path, data)).stdout)
    assert as_json["valid"] is False and field in as_json["error"]


def test_validate_rejects_text_that_is_not_json(tmp_path: Path) -> None:
    result = cli("validate", write(tmp_path, '{"version": "4",'))
    assert result.returncode == 1 and "not valid JSON" in result.stdout


def test_validate_warns_about_what_the_sdk_accepts_but_cannot_be_meant(tmp_path: Path) -> None:
    data = shop().build()
    data["rollouts"][0]["experiments"][0]["audienceConditions"] = ["or", "404"]
    data["rollouts"][1]["experiments"][0]["trafficAllocation"][0]["entityId"] = "999"
    data["featureFlags"][1]["variables"][0]["defaultValue"] = "half"
    path = write(tmp_path, data)
    result = cli("validate", path)
    assert result.returncode == 0, result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith("  warning: ")]
    assert len(warnings) == 3, result.stdout
    assert "rollouts[0].experiments[0].audienceConditions: audience '404' is not defined" in warnings[0] + warnings[1]
    assert any("rollouts[1].experiments[0].trafficAllocation[0].entityId: '999'" in w for w in warnings)
    assert any("featureFlags[1].variables[0].defaultValue: 'half' is not a double" in w for w in warnings)
    assert cli("validate", "--strict", path).returncode == 1
    report = json.loads(cli("validate", "--json", path).stdout)
    assert report["valid"] is True and len(report["warnings"]) == 3 and report["summary"]["flags"] == 3


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "cannot read" in result.stderr


# ---------------------------------------------------------------------------------------------- decide


def test_attribute_values_are_typed_by_the_documented_rule() -> None:
    cases = {
        "34": 34,
        "-2": -2,
        "812.5": 812.5,
        "1e3": 1000.0,
        "true": True,
        "false": False,
        "null": None,
        "premium": "premium",
        '"02134"': "02134",
        "02134": "02134",  # not a JSON number (leading zero): the text
        "NaN": "NaN",
        "1e999": "1e999",
        "[1, 2]": "[1, 2]",
        "": "",
        "a=b": "a=b",
    }
    for text, expected in cases.items():
        got = parse_value(text)
        assert got == expected and type(got) is type(expected), (text, got)
    assert parse_attributes(["x=1", "x=2", "y=a=b"]) == {"x": 2, "y": "a=b"}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_attributes(["novalue"])


async def _ours(datafile: dict[str, Any], user: str, attrs: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
        context = client.create_user_context(user, attrs)
        assert context is not None
        decisions = await context.decide_all()
    return {k: (d.enabled, d.variation_key, d.rule_key, d.variables) for k, d in decisions.items()}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("attr_args", "attrs"),
    [
        ([], {}),
        (["age=34", "beta=true", 'zip="02134"'], {"age": 34, "beta": True, "zip": "02134"}),
        (["age=17", "beta=false", "zip=02134"], {"age": 17, "beta": False, "zip": "02134"}),
        (["age=18.0", "beta=True"], {"age": 18.0, "beta": "True"}),
    ],
)
async def test_decide_json_matches_both_sdks(tmp_path: Path, attr_args: list[str], attrs: dict[str, Any]) -> None:
    datafile = shop().build()
    args = ["decide", "--json", "--datafile", write(tmp_path, datafile), "--user", "dana"]
    for item in attr_args:
        args += ["--attr", item]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["user_id"], out["attributes"], out["revision"]) == ("dana", attrs, "1")
    got = {d["flag_key"]: (d["enabled"], d["variation_key"], d["rule_key"], d["variables"]) for d in out["decisions"]}
    assert got == await _ours(copy.deepcopy(datafile), "dana", attrs)
    official, _, _ = make_official(datafile)
    try:
        theirs = official.create_user_context("dana", dict(attrs)).decide_all()
        assert got == {k: (d.enabled, d.variation_key, d.rule_key, d.variables) for k, d in theirs.items()}
    finally:
        official.close()
    assert all(d["reasons"] for d in out["decisions"])


def test_decide_prints_each_decision_in_plain_words(tmp_path: Path) -> None:
    path = write(tmp_path, shop().build())
    result = cli("decide", "--datafile", path, "--user", "erin", "--attr", "age=40", "checkout", "beta_banner")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "user 'erin' with attributes {\"age\": 40}" in text
    assert "checkout: ON, variation 'adults_only' from delivery rule 1 'adults_only'" in text
    assert 'variables: {"headline": "Adult checkout", "steps": 3}' in text
    assert "beta_banner: OFF, variation 'off' from the Everyone Else rule 'default-rollout-" in text
    assert 'User "erin" does not meet audience conditions for targeting rule 1.' in text
    assert "local_offer" not in text  # only the flags asked for


def test_an_unknown_flag_exits_3_and_still_shows_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, shop().build())
    result = cli("decide", "--datafile", path, "--user", "u", "nope", "checkout")
    assert result.returncode == 3
    assert "nope: NOT IN THE DATAFILE" in result.stdout and "checkout: OFF" in result.stdout
    as_json = json.loads(cli("decide", "--json", "--datafile", path, "--user", "u", "nope").stdout)
    assert as_json["decisions"][0]["in_datafile"] is False and as_json["decisions"][0]["enabled"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["decide", "--user", "u"], "one of the arguments --datafile --sdk-key is required"),
        (["decide", "--datafile", "x.json"], "--user"),
        (["decide", "--datafile", "x.json", "--user", "u", "--attr", "oops"], "expected key=value"),
        (["explain", "--datafile", "/nonexistent/d.json", "--user", "u"], "cannot read"),
        (["validate"], "file"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr


def test_an_invalid_datafile_for_decide_exits_1(tmp_path: Path) -> None:
    result = cli("decide", "--datafile", write(tmp_path, '{"version": "4"}'), "--user", "u")
    assert result.returncode == 1 and "InvalidDatafileError" in result.stderr, result.stderr


def test_decide_with_an_sdk_key_fetches_the_datafile() -> None:
    datafile = shop().build()
    with DatafileServer() as server:
        server.set_datafile(datafile)
        template = f"http://127.0.0.1:{server.port}/datafiles/{{sdk_key}}.json"
        result = cli("decide", "--json", "--sdk-key", "KitKey", "--datafile-url-template", template, "--user", "u")
        assert result.returncode == 0, result.stderr
        assert {d["flag_key"] for d in json.loads(result.stdout)["decisions"]} == {
            "checkout",
            "beta_banner",
            "local_offer",
        }
        assert [r.path for r in server.requests] == ["/datafiles/KitKey.json"]
        server.enqueue(*[Status(404)] * 50)
        failed = cli(
            "decide", "--sdk-key", "Gone", "--datafile-url-template", template, "--user", "u", "--timeout", "1"
        )
    assert failed.returncode == 1 and "no datafile for the SDK key within 1 s" in failed.stderr


# --------------------------------------------------------------------------------------------- explain


def test_explain_traces_rules_audiences_conditions_and_buckets(tmp_path: Path) -> None:
    path = write(tmp_path, example())
    args = ["explain", "--datafile", path, "--user", "alice", "--attr", "beta_tester=true", "--attr", "country=US"]
    result = cli(*args, "new_checkout")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rules = [line.strip() for line in lines if re.match(r"    (A/B test \d|delivery rule \d|Everyone Else) ", line)]
    assert rules[0].startswith("A/B test 1 'new_checkout_test': audiences not met")
    assert rules[1].startswith("delivery rule 1 'staff_dogfood': audiences not met")
    assert rules[2] == "delivery rule 2 'beta_half': DECIDED: variation 'on'"
    assert rules[3].startswith("Everyone Else 'default-rollout-") and rules[3].endswith("not reached")
    assert "plan exists (user: no value) -> FALSE" in result.stdout
    assert "beta_tester = true (user: true) -> TRUE" in result.stdout
    assert re.search(r"bucket \d+ of 0-9999; traffic: on 0-4999 \(50 % of users\)", result.stdout)
    assert "the SDK's reasons:" in result.stdout and "bucketed into a targeting rule 2." in result.stdout
    as_json = json.loads(cli(*args, "--json", "new_checkout").stdout)
    trace = as_json["decisions"][0]["trace"]
    assert [t["status"] for t in trace] == ["audiences not met", "audiences not met", "decided", "not reached"]
    assert as_json["decisions"][0]["rule_key"] == "beta_half" and as_json["decisions"][0]["trace_note"] == ""


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(0, 40, 4))
async def test_the_trace_finds_the_rule_decide_decided(seed: int) -> None:
    builder, made = random_builder(seed)
    datafiles = [builder.build(), example()] if seed == 0 else [builder.build()]
    rng = random.Random(seed)
    checked = 0
    for datafile in datafiles:
        async with AsyncOptimizely(datafile=datafile, event_dispatcher=RecordingDispatcher()) as client:
            config = client.config
            assert config is not None
            for index in range(KIT_USERS * 4):
                attrs = random_attributes(rng)
                if datafile is not datafiles[0]:
                    attrs.update({"plan": rng.choice(["free", "pro", "premium"]), "beta_tester": rng.random() < 0.5})
                user_id = f"user-{index}"
                user = client.create_user_context(user_id, attrs)
                assert user is not None
                for key, flag in config.flags_by_key.items():
                    decision = await user.decide(key, [DecideOption.DISABLE_DECISION_EVENT])
                    trace = trace_flag(config, flag, user_id, attrs, decision)
                    decided = [(t.key, t.variation) for t in trace.rules if t.status == "decided"]
                    expected = [(decision.rule_key, decision.variation_key)] if decision.rule_key else []
                    assert (decided, trace.note) == (expected, ""), (key, user_id, attrs, decision)
                    checked += 1
    assert checked > 0 and made["flags"]
