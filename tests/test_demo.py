"""The README's demo runs end to end: decisions for simulated users, every event delivered to the local sink,
and a report whose sections agree with the datafile and with each other (no numbers copied from a run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from optimizely_async.__main__ import SHOWCASE

USERS = 300
NOT_IN_EXPERIMENT = "(not in experiment)"
NO_VARIATION = "(none)"
SECTION_TITLES = (
    "Experiments: users per variation",
    "Mutual-exclusion groups",
    "Feature flags",
    "Decisions explained",
    "Event delivery",
)


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimizely_async", *args], capture_output=True, text=True, timeout=120, check=False
    )


def example_datafile() -> dict[str, Any]:
    text = resources.files("optimizely_async").joinpath("example_datafile.json").read_text("utf-8")
    return dict(json.loads(text))


@dataclass
class Datafile:
    """What the checks need from the bundled datafile: experiments (top level and grouped, in demo order),
    groups, flags and their rules."""

    raw: dict[str, Any]
    experiments: dict[str, dict[str, Any]] = field(init=False)
    grouped: set[str] = field(init=False)
    groups: list[list[str]] = field(init=False)
    flags: dict[str, dict[str, Any]] = field(init=False)
    flag_tests: set[str] = field(init=False)
    rollout_rules: dict[str, list[dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        grouped = [e for g in self.raw["groups"] for e in g["experiments"]]
        self.experiments = {e["key"]: e for e in [*self.raw["experiments"], *grouped]}
        self.grouped = {e["key"] for e in grouped}
        self.groups = [[e["key"] for e in g["experiments"]] for g in self.raw["groups"]]
        self.flags = {f["key"]: f for f in self.raw["featureFlags"]}
        by_id = {e["id"]: e for e in self.experiments.values()}
        self.flag_tests = {by_id[i]["key"] for f in self.flags.values() for i in f["experimentIds"]}
        rollouts = {r["id"]: r["experiments"] for r in self.raw["rollouts"]}
        self.rollout_rules = {key: rollouts.get(f["rolloutId"], []) for key, f in self.flags.items()}

    def variations(self, experiment_key: str) -> dict[str, dict[str, Any]]:
        return {v["key"]: v for v in self.experiments[experiment_key]["variations"]}

    def flag_experiments(self, flag_key: str) -> list[str]:
        by_id = {e["id"]: key for key, e in self.experiments.items()}
        return [by_id[i] for i in self.flags[flag_key]["experimentIds"]]


def split_sections(out: str) -> tuple[str, dict[str, list[str]]]:
    """The first line and each section's indented lines, by title prefix."""
    header, *rest = out.splitlines()
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in rest:
        if not line.strip():
            continue
        if not line.startswith(" "):
            title = next((t for t in SECTION_TITLES if line.startswith(t)), None)
            assert title is not None, f"unexpected section {line!r}"
            assert title not in sections, f"section {title!r} twice"
            current = sections[title] = []
        else:
            assert current is not None, f"line before the first section: {line!r}"
            current.append(line)
    assert list(sections) == list(SECTION_TITLES), list(sections)
    return header, sections


def parse_table(lines: list[str]) -> dict[str, tuple[str, dict[str, tuple[int, float]]]]:
    """experiment key -> (its bracketed description, variation -> (count, percent))."""
    table: dict[str, tuple[str, dict[str, tuple[int, float]]]] = {}
    rows: dict[str, tuple[int, float]] = {}
    for line in lines:
        head = re.fullmatch(r"  (\S+)  \[(.+)\]", line)
        if head:
            assert head.group(1) not in table, line
            rows = {}
            table[head.group(1)] = (head.group(2), rows)
            continue
        row = re.fullmatch(r"    (.+?) +(\d+) +(\d+\.\d)%", line)
        assert row and table, f"unexpected line in the variation table: {line!r}"
        assert row.group(1) not in rows, line
        rows[row.group(1)] = (int(row.group(2)), float(row.group(3)))
    return table


@dataclass
class Explained:
    kind: str
    key: str
    result: str
    detail: str
    reasons: list[str]
    variables: dict[str, Any] | None = None


def parse_explanations(lines: list[str]) -> dict[str, list[Explained]]:
    users: dict[str, list[Explained]] = {}
    items: list[Explained] = []
    for line in lines:
        user = re.fullmatch(r"  (\S+)  attributes: (.+)", line)
        if user:
            attributes = {} if user.group(2) == "(none)" else json.loads(user.group(2))
            assert SHOWCASE.get(user.group(1)) == attributes, line
            items = users[user.group(1)] = []
            continue
        item = re.fullmatch(r"    (A/B test|flag test|flag) +(\S+) +-> (\S+) +(.+)", line)
        if item:
            items.append(Explained(item.group(1), item.group(2), item.group(3), item.group(4), []))
            continue
        assert line.startswith(" " * 8) and items, f"unexpected line in the explanations: {line!r}"
        text = line.strip()
        if text.startswith("variables "):
            assert items[-1].kind == "flag" and items[-1].variables is None, line
            items[-1].variables = json.loads(text.removeprefix("variables "))
        else:
            assert items[-1].variables is None, f"a reason after the variables: {line!r}"
            items[-1].reasons.append(text)
    return users


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def demo(request: pytest.FixtureRequest) -> str:
    result = run_demo("--users", str(USERS), "--seed", "5", "--backend", request.param)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_delivers_every_event(demo: str) -> None:
    submitted = int(re.search(r"events submitted\s+(\d+)", demo).group(1))  # type: ignore[union-attr]
    delivered = int(re.search(r"events delivered\s+(\d+)", demo).group(1))  # type: ignore[union-attr]
    assert submitted > USERS and delivered == submitted
    assert re.search(r"dropped\s+0\b", demo) and re.search(r"undelivered\s+0\b", demo)


def test_demo_variation_table_accounts_for_every_user(demo: str) -> None:
    header, sections = split_sections(demo)
    total = USERS + len(SHOWCASE)
    assert header.split(": ", 1)[1].startswith(f"{total} users ({USERS} random + {len(SHOWCASE)} showcase)")
    data = Datafile(example_datafile())
    table = parse_table(sections["Experiments: users per variation"])
    assert list(table) == list(data.experiments)
    for key, (description, rows) in table.items():
        experiment = data.experiments[key]
        kind = "flag test" if key in data.flag_tests else "A/B test" + (", grouped" if key in data.grouped else "")
        assert description.startswith(f"{kind}, {experiment['status']}, targets: "), (key, description)
        assert set(rows) <= {*data.variations(key), NOT_IN_EXPERIMENT}, (key, rows)
        assert sum(count for count, _ in rows.values()) == total, (key, rows)
        assert all(count > 0 for count, _ in rows.values()), (key, rows)  # rows are only printed when seen
        for variation, (count, percent) in rows.items():
            assert abs(percent - 100 * count / total) <= 0.05, (key, variation, count, percent)
        if experiment["status"] != "Running":
            assert rows == {NOT_IN_EXPERIMENT: (total, 100.0)}, (key, rows)
        full_traffic = experiment["trafficAllocation"] and experiment["trafficAllocation"][-1]["endOfRange"] == 10000
        if (
            experiment["status"] == "Running"
            and full_traffic
            and not experiment["audienceIds"]
            and key not in data.grouped
        ):
            assert NOT_IN_EXPERIMENT not in rows, (key, rows)  # everyone is bucketed
        if key in data.grouped:
            assert NOT_IN_EXPERIMENT in rows, (key, rows)  # a group shares out its traffic

    groups = sections["Mutual-exclusion groups"]
    assert [line.strip() for line in groups[:-1]] == [" / ".join(keys) for keys in data.groups]
    assert re.fullmatch(r"  users in more than one experiment of a group: 0 \(OK, exclusive\)", groups[-1])
    for keys in data.groups:  # exclusive: nobody counted in two of them
        in_group = sum(c for key in keys for v, (c, _) in table[key][1].items() if v != NOT_IN_EXPERIMENT)
        assert 0 < in_group <= total, (keys, in_group)


def test_demo_flags_agree_with_their_flag_tests(demo: str) -> None:
    _, sections = split_sections(demo)
    total = USERS + len(SHOWCASE)
    data = Datafile(example_datafile())
    table = parse_table(sections["Experiments: users per variation"])
    enabled: dict[str, int] = {}
    for line in sections["Feature flags"]:
        match = re.fullmatch(r"  (\S+) +enabled for +(\d+) users +(\d+\.\d)%", line)
        assert match, line
        count = int(match.group(2))
        assert 0 <= count <= total and abs(float(match.group(3)) - 100 * count / total) <= 0.05, line
        enabled[match.group(1)] = count
    assert list(enabled) == list(data.flags)
    for flag in data.flags:
        # a flag test that returns a variation decides the flag: its "on" users are enabled, its "off" users not
        on = off = 0
        for key in data.flag_experiments(flag):
            for variation, (count, _) in table[key][1].items():
                if variation != NOT_IN_EXPERIMENT:
                    if data.variations(key)[variation]["featureEnabled"]:
                        on += count
                    else:
                        off += count
        assert on <= enabled[flag] <= total - off, (flag, on, off, enabled[flag])
        rules = data.rollout_rules[flag]
        if not data.flag_experiments(flag) and rules:
            everyone_else = rules[-1]
            variations = {v["id"]: v for r in rules for v in r["variations"]}
            full = everyone_else["trafficAllocation"] and everyone_else["trafficAllocation"][-1]["endOfRange"] == 10000
            if not everyone_else["audienceIds"] and full and all(v["featureEnabled"] for v in variations.values()):
                assert enabled[flag] == total, flag  # every rule gives an enabled variation to whoever it takes


def _says_variation(reasons: list[str], variation: str) -> bool:
    return any(f'in variation "{variation}"' in r or f'Variation "{variation}" is mapped' in r for r in reasons)


def test_demo_explanations_follow_the_decision_reasons(demo: str) -> None:
    _, sections = split_sections(demo)
    data = Datafile(example_datafile())
    table = parse_table(sections["Experiments: users per variation"])
    enabled = {
        line.split()[0]: int(line.split()[3]) for line in sections["Feature flags"]
    }  # "  flag  enabled for N users  P%"
    total = USERS + len(SHOWCASE)
    users = parse_explanations(sections["Decisions explained"])
    assert list(users) == list(SHOWCASE)
    for user_id, items in users.items():
        assert [i.key for i in items] == [*data.experiments, *data.flags], user_id
        got: dict[str, str] = {}
        for item in items:
            where = f"{user_id} / {item.key}"
            assert item.reasons, f"{where}: no reason given"
            assert not any("re-deciding gave" in r for r in item.reasons), f"{where}: {item.reasons}"
            assert not any(r.startswith("Evaluating audiences for ") for r in item.reasons), where
            if item.kind != "flag":
                assert item.kind == ("flag test" if item.key in data.flag_tests else "A/B test"), where
                got[item.key] = item.result
                experiment = data.experiments[item.key]
                if item.result == NO_VARIATION:
                    # the last reason says why not, and nothing claims a variation
                    assert not any(" in variation " in r or "is mapped to" in r for r in item.reasons), where
                    assert item.reasons[-1].endswith(
                        (
                            "is not running.",
                            f'does not meet conditions to be in experiment "{item.key}".',
                            "is in no variation.",
                        )
                    ), f"{where}: {item.reasons}"
                    if experiment["status"] != "Running":
                        assert item.reasons == [f'Experiment "{item.key}" is not running.'], where
                    assert table[item.key][1][NOT_IN_EXPERIMENT][0] >= 1, where
                else:
                    assert item.result in data.variations(item.key), where
                    assert _says_variation(item.reasons, item.result), f"{where}: {item.reasons}"
                    assert table[item.key][1][item.result][0] >= 1, where  # the showcase user is counted
                    if user_id in experiment["forcedVariations"]:
                        assert experiment["forcedVariations"][user_id] == item.result, where
                        assert item.reasons == [f'User "{user_id}" is forced in variation "{item.result}".'], where
                if item.key in data.grouped and item.result == NO_VARIATION:
                    passed = not any("does not meet conditions" in r or "not running" in r for r in item.reasons)
                    if passed:  # audiences passed: the group or the traffic allocation left the user out
                        assert any("of group" in r or "is in no experiment" in r for r in item.reasons) or any(
                            "empty traffic range" in r for r in item.reasons
                        ), f"{where}: {item.reasons}"
                continue
            # a flag
            assert item.result in ("on", "off") and item.variables is not None, where
            assert list(item.variables) == [v["key"] for v in data.flags[item.key]["variables"]], where
            assert (enabled[item.key] >= 1) if item.result == "on" else (enabled[item.key] <= total - 1), where
            rule = re.fullmatch(r"rule (\S+) -> variation (\S+)", item.detail)
            if rule is None:
                assert item.detail.startswith("no rule gave a variation"), where
                assert item.result == "off", where
                assert not any("bucketed into a targeting rule" in r for r in item.reasons), where
                continue
            rule_key, variation_key = rule.groups()
            if rule_key in data.flag_experiments(item.key):  # an experiment rule: it must be what get_variation gave
                assert got[rule_key] == variation_key, where
                assert _says_variation(item.reasons, variation_key), f"{where}: {item.reasons}"
                assert (item.result == "on") == data.variations(rule_key)[variation_key]["featureEnabled"], where
            else:
                rules = {r["key"]: r for r in data.rollout_rules[item.key]}
                assert rule_key in rules, where
                variations = {v["key"]: v for v in rules[rule_key]["variations"]}
                assert (item.result == "on") == variations[variation_key]["featureEnabled"], where
                assert "bucketed into a targeting rule" in item.reasons[-1], f"{where}: {item.reasons}"
                for key in data.flag_experiments(item.key):  # experiment rules come first: none gave a variation
                    assert got[key] == NO_VARIATION, where
        for keys in data.groups:
            assert sum(got[key] != NO_VARIATION for key in keys) <= 1, (user_id, keys)


def test_demo_rejects_a_bad_datafile(tmp_path: Path) -> None:
    bad = tmp_path / "datafile.json"
    bad.write_text('{"version": "4"}')
    result = run_demo("--users", "10", "--datafile", str(bad))
    assert result.returncode == 1
    assert "datafile" in (result.stderr + result.stdout).lower()
