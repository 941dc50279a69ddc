"""Audience condition trees: three-valued and/or/not evaluation and the rule-level audience check.

A tree is either a leaf or a list. A list headed by ``"and"``, ``"or"`` or ``"not"`` applies that operator to
the rest of the list; a list without an operator is an implicit OR. Results are three-valued (``True``,
``False``, ``None`` for UNKNOWN) with the official SDK's rules:

* ``and``: any False gives False; otherwise any UNKNOWN gives UNKNOWN; otherwise True.
* ``or``: any True gives True; otherwise any UNKNOWN gives UNKNOWN; otherwise False.
* ``not``: negates its first operand only; no operand, or an UNKNOWN one, gives UNKNOWN.

Operands are evaluated left to right and evaluation stops at the first deciding operand, so leaf callbacks
(and their log messages) run in the same order as in the official SDK.

Difference from the official SDK: an empty list anywhere in a tree evaluates to UNKNOWN, where the
official SDK raises ``IndexError``. Tuples are accepted wherever lists are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from .conditions import evaluate_leaf

logger: Final = logging.getLogger("optimizely_async")

__all__ = ["audience_check", "evaluate_tree"]

LeafEvaluator = Callable[[Any], "bool | None"]
_ContextLeaf = Callable[[Any, Any], "bool | None"]

_DEBUG: Final = logging.DEBUG
_INFO: Final = logging.INFO
_MISSING: Final[Any] = object()
_SEQUENCES: Final = (list, tuple)
_AND: Final = 0
_OR: Final = 1
_NOT: Final = 2
_OPERATORS: Final[dict[str, int]] = {"and": _AND, "or": _OR, "not": _NOT}


def _evaluate(tree: Any, leaf: _ContextLeaf, context: Any) -> bool | None:
    """The tree walk behind :func:`evaluate_tree`; leaves are evaluated as ``leaf(node, context)``.

    Passing the context through (rather than closing over it) keeps the hot path free of per-call closures.
    """
    kind = type(tree)
    if kind is not list and kind is not tuple and not isinstance(tree, _SEQUENCES):
        return leaf(tree, context)
    if not tree:
        return None  # the official SDK raises IndexError here
    head = tree[0]
    operator = _OPERATORS.get(head) if isinstance(head, str) else None
    operands = iter(tree)
    if operator is None:
        operator = _OR  # no operator: an implicit OR over the whole list
    else:
        next(operands)
        if operator is _NOT:
            node = next(operands, _MISSING)
            if node is _MISSING:
                return None
            result = _evaluate(node, leaf, context)
            return None if result is None else not result
    # Leaves are evaluated in place rather than through a recursive call: this is the hot path.
    unknown = False
    if operator is _AND:
        for node in operands:
            kind = type(node)
            if kind is list or kind is tuple or isinstance(node, _SEQUENCES):
                result = _evaluate(node, leaf, context)
            else:
                result = leaf(node, context)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True
    for node in operands:
        kind = type(node)
        if kind is list or kind is tuple or isinstance(node, _SEQUENCES):
            result = _evaluate(node, leaf, context)
        else:
            result = leaf(node, context)
        if result is True:
            return True
        if result is None:
            unknown = True
    return None if unknown else False


def _call(node: Any, leaf: LeafEvaluator) -> bool | None:
    return leaf(node)


def evaluate_tree(tree: Any, leaf: LeafEvaluator) -> bool | None:
    """Evaluate a condition tree with three-valued logic.

    Args:
        tree: a list (or tuple) headed by ``"and"``, ``"or"`` or ``"not"``; a list without an operator,
            which is an implicit OR; or anything else, which is a leaf.
        leaf: called with each leaf that needs evaluating, left to right, stopping as soon as the result
            is decided.

    Returns:
        True, False, or None (UNKNOWN). An empty list is UNKNOWN.
    """
    return _evaluate(tree, _call, leaf)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=repr)


def _condition_leaf(node: Any, attributes: Mapping[str, Any]) -> bool | None:
    """One leaf of an audience's own tree: a typed condition dict; anything else is UNKNOWN."""
    if type(node) is dict or isinstance(node, Mapping):
        return evaluate_leaf(node, attributes)
    return None


def _audience_leaf(audience_id: Any, context: tuple[Mapping[str, Any], Mapping[str, Any], bool]) -> bool | None:
    """One leaf of an experiment's audience tree: an audience id, evaluated through that audience's tree."""
    audiences, attributes, debug = context
    try:
        conditions = audiences.get(audience_id, _MISSING)
    except TypeError:  # an unhashable leaf cannot be an audience id
        conditions = _MISSING
    if conditions is _MISSING:
        logger.error(f'Audience ID "{audience_id}" is not in datafile.')
        return None
    if not debug:
        return _evaluate(conditions, _condition_leaf, attributes)
    logger.debug(f'Starting to evaluate audience "{audience_id}" with conditions: {_dumps(conditions)}.')
    result = _evaluate(conditions, _condition_leaf, attributes)
    logger.debug(f'Audience "{audience_id}" evaluated to {"UNKNOWN" if result is None else str(result).upper()}.')
    return result


def audience_check(
    audience_tree: Any,
    audiences: Mapping[str, Any],
    attributes: Mapping[str, Any],
    label: str,
    reasons: list[str] | None,
) -> bool:
    """Decide whether a user meets an experiment's or a rule's audience conditions.

    Args:
        audience_tree: the experiment's ``audienceConditions`` if not None, else its ``audienceIds``. Its
            leaves are audience ids. None or an empty list lets everyone in.
        audiences: audience id -> that audience's parsed condition tree, whose leaves are typed
            condition dicts.
        attributes: the user's attributes.
        label: names the experiment or rule in messages: ``'experiment "my_exp"'``, ``'rule 1'`` or
            ``'rule Everyone Else'``.
        reasons: when not None, the decision reasons (the official texts) are appended to it.

    Returns:
        True if the conditions evaluate to True; False if they evaluate to False or UNKNOWN. An audience
        id missing from ``audiences`` is logged as an error and counts as UNKNOWN.
    """
    # DEBUG enabled implies INFO enabled, so the common case (neither) costs one level check.
    info = logger.isEnabledFor(_INFO)
    debug = info and logger.isEnabledFor(_DEBUG)
    if debug or reasons is not None:
        message = f"Evaluating audiences for {label}: {_dumps(audience_tree)}."
        if debug:
            logger.debug(message)
        if reasons is not None:
            reasons.append(message)

    if audience_tree is None or (isinstance(audience_tree, _SEQUENCES) and not audience_tree):
        matched = True
    else:
        context = (audiences, attributes, debug)
        matched = _evaluate(audience_tree, _audience_leaf, context) is True

    if info or reasons is not None:
        message = f"Audiences for {label} collectively evaluated to {'TRUE' if matched else 'FALSE'}."
        logger.info(message)
        if reasons is not None:
            reasons.append(message)
    return matched
