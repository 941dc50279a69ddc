"""Argument parsing, loading the datafile, and the output of ``validate``, ``decide`` and ``explain``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from ..client import AsyncOptimizely
from ..config.project_config import ProjectConfig
from ..decide import DecideOption, OptimizelyDecision
from ..errors import OptimizelyError
from ..testing import RecordingDispatcher
from .attributes import BadAttribute, parse_attributes
from .explain import FlagTrace, RuleTrace, trace_flag
from .text import reason_lines
from .validate import validate

__all__ = ["COMMANDS", "EXIT_CODES", "run"]

COMMANDS = ("validate", "decide", "explain")
OK, INVALID, USAGE, UNKNOWN_FLAG = 0, 1, 2, 3
EXIT_CODES = f"""exit codes:
  {OK}  done (validate: the datafile is usable; warnings do not change this)
  {INVALID}  the datafile is invalid (the message names the field at fault) or could not be fetched
  {USAGE}  usage error: bad option, malformed --attr, unreadable file
  {UNKNOWN_FLAG}  decide/explain: a flag key given is not in the datafile (the others are still shown)"""
ATTR_RULE = (
    "--attr values are typed: a JSON number is a number (34, 812.5), true/false are booleans, null is null, "
    "a double-quoted JSON string is a string (zip='\"02134\"'); anything else is the text as written."
)
_OPTIONS = [DecideOption.INCLUDE_REASONS, DecideOption.DISABLE_DECISION_EVENT]


class _Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m optimizely_async",
        description="Check a datafile, and see what it decides for a user and why. Without a command: the demo.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{validate,decide,explain}")
    check = commands.add_parser(
        "validate",
        help="check that the SDK can use a datafile",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Exit 1 with the field at fault if the SDK rejects the datafile; warn about references "
        "it accepts but that cannot be what was meant (an undefined audience, a traffic range to no variation).",
    )
    check.add_argument("file", type=Path, help="the datafile JSON ('-' for standard input)")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    check.add_argument("--json", action="store_true", help="print one JSON object: valid, error, warnings, summary")
    for name, text in (
        ("decide", "decide flags for a user and print each decision with its reasons"),
        ("explain", "trace which rules and audiences were tried for a user, and why"),
    ):
        sub = commands.add_parser(
            name,
            help=text,
            description=textwrap.fill(text[0].upper() + text[1:] + ". " + ATTR_RULE, 100),
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        source = sub.add_mutually_exclusive_group(required=True)
        source.add_argument("--datafile", type=Path, help="a datafile JSON ('-' for standard input)")
        source.add_argument("--sdk-key", help="fetch the datafile of this SDK key")
        sub.add_argument(
            "--datafile-url-template", help="URL with {sdk_key} to fetch from (default: the Optimizely CDN)"
        )
        sub.add_argument(
            "--timeout", type=float, default=10.0, help="seconds to wait for --sdk-key's datafile (default 10)"
        )
        sub.add_argument("--user", required=True, help="the user id")
        sub.add_argument(
            "--attr", action="append", default=[], metavar="KEY=VALUE", help="a user attribute (repeatable)"
        )
        sub.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        sub.add_argument("flags", nargs="*", metavar="FLAG", help="flag keys (default: every flag)")
    return parser


def _read(path: Path) -> bytes:
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise _Failure(USAGE, f"cannot read {path}: {exc.strerror or exc}") from None


def run(argv: Sequence[str], out: TextIO | None = None) -> int:
    """Run one command; returns the exit code. Output goes to ``out`` (stdout), problems to stderr."""
    out = out or sys.stdout
    logging.getLogger("optimizely_async").addHandler(logging.NullHandler())  # the SDK's warnings: not here
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args, out)
        attrs = parse_attributes(args.attr)
        result: int = anyio.run(_decide, args, attrs, out)
        return result
    except BadAttribute as exc:
        parser.error(str(exc))
    except _Failure as exc:
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `... | head`: the reader left; stop quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return INVALID
    return OK  # not reached: parser.error exits


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    result = validate(_read(args.file))
    failed = not result.valid or (args.strict and bool(result.warnings))
    if args.json:
        out.write(
            json.dumps(
                {"valid": result.valid, "error": result.error, "warnings": result.warnings, "summary": result.summary},
                indent=2,
            )
            + "\n"
        )
        return INVALID if failed else OK
    if result.error is not None:
        print(f"{args.file}: INVALID: {result.error}", file=out)
        return INVALID
    s = result.summary
    print(
        f"{args.file}: valid datafile (version {s['version']}, revision {s['revision']}): {s['flags']} flags, "
        f"{s['experiments']} experiments, {s['rollouts']} rollouts, {s['audiences']} audiences, "
        f"{s['events']} events, {s['attributes']} attributes",
        file=out,
    )
    for warning in result.warnings:
        print(f"  warning: {warning}", file=out)
    return INVALID if failed else OK


async def _client(args: argparse.Namespace) -> AsyncOptimizely:
    recorder = RecordingDispatcher()  # nothing is sent: decisions run with DISABLE_DECISION_EVENT anyway
    try:
        if args.datafile is not None:
            return AsyncOptimizely(datafile=_read(args.datafile), event_dispatcher=recorder)
        return AsyncOptimizely(
            sdk_key=args.sdk_key, datafile_url_template=args.datafile_url_template, event_dispatcher=recorder
        )
    except OptimizelyError as exc:
        raise _Failure(INVALID, f"{type(exc).__name__}: {exc}") from None


async def _decide(args: argparse.Namespace, attrs: dict[str, Any], out: TextIO) -> int:
    client = await _client(args)
    async with client:
        if not await client.wait_until_ready(timeout=args.timeout):
            raise _Failure(INVALID, f"no datafile for the SDK key within {args.timeout:g} s")
        config = client.config
        assert config is not None
        user = client.create_user_context(args.user, attrs)
        if user is None:
            raise _Failure(USAGE, "the user id or the attributes are not usable")
        keys = list(args.flags) or list(config.flags_by_key)
        decisions = [(key, await user.decide(key, _OPTIONS)) for key in keys]
    unknown = [key for key in keys if key not in config.flags_by_key]
    traces = {
        key: trace_flag(config, config.flags_by_key[key], args.user, attrs, d)
        for key, d in decisions
        if args.command == "explain" and key in config.flags_by_key
    }
    if args.json:
        out.write(json.dumps(_as_json(config, args.user, attrs, decisions, traces), indent=2, default=repr) + "\n")
    else:
        print(
            f"user {args.user!r} with attributes {json.dumps(attrs) if attrs else '(none)'}, "
            f"datafile revision {config.revision}",
            file=out,
        )
        for key, decision in decisions:
            _print_decision(config, key, decision, traces.get(key), out)
    return UNKNOWN_FLAG if unknown else OK


def _as_json(
    config: ProjectConfig,
    user_id: str,
    attrs: dict[str, Any],
    decisions: list[tuple[str, OptimizelyDecision]],
    traces: dict[str, FlagTrace],
) -> dict[str, Any]:
    items = []
    for key, d in decisions:
        item: dict[str, Any] = {
            "flag_key": key,
            "enabled": d.enabled,
            "variation_key": d.variation_key,
            "rule_key": d.rule_key,
            "variables": d.variables,
            "reasons": list(d.reasons),
            "in_datafile": key in config.flags_by_key,
        }
        trace = traces.get(key)
        if trace is not None:
            item["trace"] = [rule.as_json() for rule in trace.rules]
            item["trace_note"] = trace.note
        items.append(item)
    return {"user_id": user_id, "attributes": attrs, "revision": config.revision, "decisions": items}


def _rule_kind(config: ProjectConfig, key: str, decision: OptimizelyDecision) -> str:
    flag = config.flags_by_key[key]
    for position, rule in enumerate(flag.rollout_rules, 1):
        if rule.key == decision.rule_key:
            return "the Everyone Else rule" if position == len(flag.rollout_rules) else f"delivery rule {position}"
    if any(config.experiments_by_id[i].key == decision.rule_key for i in flag.experiment_ids):
        return "A/B test"
    return "holdout"


def _print_decision(
    config: ProjectConfig, key: str, decision: OptimizelyDecision, trace: FlagTrace | None, out: TextIO
) -> None:
    if key not in config.flags_by_key:
        print(f"\n{key}: NOT IN THE DATAFILE", file=out)
        for line in reason_lines(decision.reasons, 4):
            print(line, file=out)
        return
    state = "ON" if decision.enabled else "OFF"
    if decision.variation_key is None:
        how = "no rule gave a variation, so the flag is off with its default variable values"
    else:
        how = f"variation {decision.variation_key!r} from {_rule_kind(config, key, decision)} {decision.rule_key!r}"
    print(f"\n{key}: {state}, {how}", file=out)
    if decision.variables:
        print(f"    variables: {json.dumps(decision.variables)}", file=out)
    if trace is not None:
        for rule in trace.rules:
            _print_rule(rule, out)
        if trace.note:
            print(f"    note: {trace.note}", file=out)
        print("    the SDK's reasons:", file=out)
    else:
        print("    why:", file=out)
    for line in reason_lines(decision.reasons, 6):
        print(line, file=out)


_STATUS_WORDS = {
    "decided": "DECIDED",
    "not running": "not running: skipped",
    "allowlisted": "allowlisted",
    "audiences not met": "audiences not met: next rule",
    "outside traffic": "outside the traffic: next rule",
    "skipped": "skipped",
    "not reached": "not reached",
    "in traffic": "in traffic",
}


def _print_rule(rule: RuleTrace, out: TextIO) -> None:
    status = _STATUS_WORDS.get(rule.status, rule.status)
    if rule.status == "outside traffic" and rule.kind == "delivery":
        status = 'outside the traffic: straight to "Everyone Else"'
    if rule.status == "decided":
        status = f"DECIDED: variation {rule.variation!r}"
    label = {"A/B test": f"A/B test {rule.position}", "delivery": f"delivery rule {rule.position}"}.get(
        rule.kind, rule.kind
    )
    print(f"    {label} {rule.key!r}: {status}", file=out)
    if rule.status in ("not reached", "skipped", "not running") and not rule.note:
        return
    result = "UNKNOWN" if rule.matched is None else str(rule.matched).upper()
    print(f"         audiences: {rule.audiences} -> {result}", file=out)
    single = len(rule.audience_details) == 1 and rule.audience_details[0].name == rule.audiences
    for audience in rule.audience_details:
        if not single:
            result = "UNKNOWN" if audience.result is None else str(audience.result).upper()
            print(f"           {audience.name} -> {result}", file=out)
        for condition, user_value, leaf in audience.conditions:
            print(f"{'':{11 if single else 13}}{condition} (user: {user_value}) -> {leaf}", file=out)
    if rule.bucket is not None:
        print(f"         bucket {rule.bucket} of 0-9999; traffic: {rule.traffic}", file=out)
    if rule.note:
        print(f"         note: {rule.note}", file=out)
