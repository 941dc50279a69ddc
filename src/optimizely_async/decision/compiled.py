"""The audience evaluator: condition trees compiled once per config into plain closures.

This is the only evaluator of and/or/not trees. :func:`~optimizely_async.decision.audiences.audience_check`
writes the official messages around it when reasons are asked for or the logger wants INFO; the fast path
calls the matcher directly. Both run the same closures, so a decision never depends on the log level. The
matchers run only while the logger does not want DEBUG, so their leaves are compiled quiet (a missing
attribute's DEBUG line is not asked for; see :mod:`.leaves`). At DEBUG :func:`audience_check` compiles each
audience a second time (kept apart in the same cache), with leaves that write their DEBUG lines, wrapped in
the official per-audience messages.

Rules (the official SDK's): a list headed by ``"and"``, ``"or"`` or ``"not"`` applies that operator to the rest;
a list without an operator is an implicit OR; anything else is a leaf. ``and``: any False gives False, otherwise
any UNKNOWN (None) gives UNKNOWN, otherwise True. ``or``: any True gives True, otherwise any UNKNOWN gives
UNKNOWN, otherwise False. ``not`` negates its first operand only; none, or an UNKNOWN one, gives UNKNOWN.
Operands run left to right and stop at the first deciding one, so leaves (and their log messages) run in the
official order. An empty list is UNKNOWN (the official SDK raises ``IndexError``).

Trees nested deeper than :data:`MAX_CONDITION_DEPTH` are refused when the datafile is loaded
(:mod:`optimizely_async.config.datafile`), so compiling and evaluating one never runs out of stack.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .._logging import sdk_logger
from ..config.depth import MAX_CONDITION_DEPTH, too_deep
from .leaves import compile_leaf

if TYPE_CHECKING:
    from ..config.project_config import ExperimentInfo, HoldoutInfo, ProjectConfig

__all__ = ["MAX_CONDITION_DEPTH", "Matcher", "compile_audience_check", "compile_tree", "matcher_for", "too_deep"]

_log: Final = sdk_logger()

Attributes = Mapping[str, Any]
Node = Callable[[Any], "bool | None"]
#: An audience check: True when the user meets the conditions; False, or None (UNKNOWN), when not. Callers test
#: its answer for truth (returning the tree's answer as it is saves a call per rule on the hot path).
Matcher = Callable[[Attributes], "bool | None"]
LeafFactory = Callable[[Any], Node]
_OPERATORS: Final = ("and", "or", "not")
_SEQUENCES: Final = (list, tuple)


def _unknown(context: Any) -> bool | None:
    return None


def _true(context: Any) -> bool:
    return True


def _false(context: Any) -> bool:
    return False


def _and(children: tuple[Node, ...]) -> Node:
    if len(children) == 1:
        return children[0]

    def run(context: Any) -> bool | None:
        unknown = False
        for child in children:
            result = child(context)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True

    return run


def _or(children: tuple[Node, ...]) -> Node:
    if len(children) == 1:
        return children[0]

    def run(context: Any) -> bool | None:
        unknown = False
        for child in children:
            result = child(context)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return run


def _not(child: Node) -> Node:
    def run(context: Any) -> bool | None:
        result = child(context)
        return None if result is None else not result

    return run


def compile_tree(tree: Any, leaf: LeafFactory) -> Node:
    """A function ``context -> True | False | None`` evaluating ``tree``; ``leaf(node)`` makes the function of
    one leaf. One stack frame per nesting level (plain loops, no comprehensions)."""
    if not isinstance(tree, _SEQUENCES):
        return leaf(tree)
    if not tree:
        return _unknown
    head = tree[0]
    if isinstance(head, str) and head in _OPERATORS:
        if head == "not":
            return _not(compile_tree(tree[1], leaf)) if len(tree) > 1 else _unknown
        children: list[Node] = []
        for node in tree[1:]:
            children.append(compile_tree(node, leaf))
        if not children:
            return _true if head == "and" else _false
        return _and(tuple(children)) if head == "and" else _or(tuple(children))
    operands: list[Node] = []
    for node in tree:
        operands.append(compile_tree(node, leaf))
    return _or(tuple(operands))


def _condition_leaf(node: Any) -> Node:
    if isinstance(node, Mapping):
        return compile_leaf(node, quiet=True)
    return _unknown


def _verbose_condition_leaf(node: Any) -> Node:
    if isinstance(node, Mapping):
        return compile_leaf(node)
    return _unknown


def _dumps(value: Any) -> str:
    return json.dumps(value, default=repr)


def _missing_audience(audience_id: Any) -> Node:
    def missing(attributes: Attributes) -> bool | None:
        _log.error(f'Audience ID "{audience_id}" is not in datafile.')
        return None

    return missing


def _with_debug_messages(audience_id: Any, conditions: Any, body: Node) -> Node:
    def explained(attributes: Attributes) -> bool | None:
        _log.debug(f'Starting to evaluate audience "{audience_id}" with conditions: {_dumps(conditions)}.')
        result = body(attributes)
        _log.debug(f'Audience "{audience_id}" evaluated to {"UNKNOWN" if result is None else str(result).upper()}.')
        return result

    return explained


def compile_audience_check(
    audience_tree: Any,
    audiences: Mapping[str, Any],
    compiled_audiences: dict[Any, Node] | None = None,
    *,
    verbose: bool = False,
) -> Matcher:
    """A :data:`Matcher`: ``attributes -> True`` when ``audience_tree`` (whose leaves are audience ids) evaluates
    to True, each audience id through its own condition tree in ``audiences``; False or None otherwise.

    ``compiled_audiences`` may be shared by every call for one config, so each audience compiles once (twice
    with ``verbose``). Without ``verbose`` the check must run only while the logger does not want DEBUG; with
    it, each audience writes the official per-audience debug messages, and its leaves theirs.
    """
    if audience_tree is None or (isinstance(audience_tree, _SEQUENCES) and not audience_tree):
        return _true
    if compiled_audiences is None:
        compiled_audiences = {}

    def audience_leaf(audience_id: Any) -> Node:
        try:
            conditions = audiences[audience_id]
        except (KeyError, TypeError):  # an unhashable leaf cannot be an audience id
            return _missing_audience(audience_id)
        if not verbose:
            body = compiled_audiences.get(audience_id)
            if body is None:
                body = compiled_audiences[audience_id] = compile_tree(conditions, _condition_leaf)
            return body
        key = ("verbose", audience_id)
        body = compiled_audiences.get(key)
        if body is None:
            body = compiled_audiences[key] = compile_tree(conditions, _verbose_condition_leaf)
        return _with_debug_messages(audience_id, conditions, body)

    return compile_tree(audience_tree, audience_leaf)


def matcher_for(config: ProjectConfig, entity: ExperimentInfo | HoldoutInfo) -> Matcher:
    """The compiled audience check of a rule or holdout, compiled on first use and kept in the config (each
    audience compiles once per config). Concurrent first uses may both compile: the results are equal."""
    matcher = config.matchers.get(entity)
    if matcher is None:
        matcher = compile_audience_check(entity.audience_tree, config.audiences, config.compiled_audiences)
        config.matchers[entity] = matcher
    return matcher
