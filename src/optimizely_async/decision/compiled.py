"""Audience trees compiled once per config into plain closures, for the fast decision path.

:func:`~optimizely_async.decision.audiences.audience_check` walks the trees and writes the official
messages; it runs whenever reasons are asked for or the logger wants INFO. Otherwise the engine calls the
matcher compiled here, which gives the same answer (same three-valued rules, same leaf order, the same
leaf warnings) without walking lists or formatting anything.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from .conditions import evaluate_leaf

__all__ = ["LazyMatcher", "Matcher", "compile_audience_check"]

_log: Final = logging.getLogger("optimizely_async")

Attributes = Mapping[str, Any]
_Node = Callable[[Attributes], "bool | None"]
Matcher = Callable[[Attributes], bool]
_OPERATORS: Final = ("and", "or", "not")


def _unknown(attributes: Attributes) -> bool | None:
    return None


def _everyone(attributes: Attributes) -> bool:
    return True


def _and(children: tuple[_Node, ...]) -> _Node:
    if len(children) == 1:
        return children[0]

    def run(attributes: Attributes) -> bool | None:
        unknown = False
        for child in children:
            result = child(attributes)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True

    return run


def _or(children: tuple[_Node, ...]) -> _Node:
    if len(children) == 1:
        return children[0]

    def run(attributes: Attributes) -> bool | None:
        unknown = False
        for child in children:
            result = child(attributes)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return run


def _not(child: _Node) -> _Node:
    def run(attributes: Attributes) -> bool | None:
        result = child(attributes)
        return None if result is None else not result

    return run


def _compile(tree: Any, leaf: Callable[[Any], _Node]) -> _Node:
    if not isinstance(tree, (list, tuple)):
        return leaf(tree)
    if not tree:
        return _unknown
    head = tree[0]
    if isinstance(head, str) and head in _OPERATORS:
        operands = tree[1:]
        if head == "not":
            return _not(_compile(operands[0], leaf)) if operands else _unknown
        children = tuple(_compile(node, leaf) for node in operands)
        if not children:
            return _everyone if head == "and" else _false  # the tree walk gives True / False here too
        return _and(children) if head == "and" else _or(children)
    return _or(tuple(_compile(node, leaf) for node in tree))


def _false(attributes: Attributes) -> bool:
    return False


def _condition_leaf(node: Any) -> _Node:
    if isinstance(node, Mapping):
        return functools.partial(evaluate_leaf, node)
    return _unknown


def compile_audience_check(
    audience_tree: Any, audiences: Mapping[str, Any], compiled_audiences: dict[str, Any] | None = None
) -> Matcher:
    """A function ``attributes -> bool`` equal to ``audience_check(audience_tree, audiences, ...)``.

    ``compiled_audiences`` may be shared by every call for one config, so each audience compiles once.
    """
    if audience_tree is None or (isinstance(audience_tree, (list, tuple)) and not audience_tree):
        return _everyone
    if compiled_audiences is None:
        compiled_audiences = {}

    def audience_leaf(audience_id: Any) -> _Node:
        try:
            conditions = audiences[audience_id]
        except (KeyError, TypeError):

            def missing(attributes: Attributes) -> bool | None:
                _log.error(f'Audience ID "{audience_id}" is not in datafile.')
                return None

            return missing
        node = compiled_audiences.get(audience_id)
        if node is None:
            node = compiled_audiences[audience_id] = _compile(conditions, _condition_leaf)
        return node

    root = _compile(audience_tree, audience_leaf)

    def matcher(attributes: Attributes) -> bool:
        return root(attributes) is True

    return matcher


class LazyMatcher:
    """Compiles its audience check on first use, so building a config does not pay for rules never decided.

    Use ``(matcher.fn or matcher.compile())(attributes)``. No reference cycle is made (a bound method stored on
    the instance would make one), so a replaced config is freed at once, without the cyclic collector.
    """

    __slots__ = ("_audiences", "_shared", "_tree", "fn")

    def __init__(self, audience_tree: Any, audiences: Mapping[str, Any], shared: dict[str, Any]) -> None:
        self._tree = audience_tree
        self._audiences = audiences
        self._shared = shared
        self.fn: Matcher | None = None
        if audience_tree is None or (isinstance(audience_tree, (list, tuple)) and not audience_tree):
            self.fn = _everyone

    def compile(self) -> Matcher:
        fn = self.fn = compile_audience_check(self._tree, self._audiences, self._shared)
        return fn
