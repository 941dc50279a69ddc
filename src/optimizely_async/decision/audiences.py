"""The rule-level audience check with the official messages, over the one evaluator in :mod:`.compiled`.

A tree is either a leaf or a list. A list headed by ``"and"``, ``"or"`` or ``"not"`` applies that operator to
the rest of the list; a list without an operator is an implicit OR. Results are three-valued (``True``,
``False``, ``None`` for UNKNOWN) with the official SDK's rules (see :mod:`.compiled`). Operands are evaluated
left to right and evaluation stops at the first deciding operand, so leaf callbacks (and their log messages)
run in the same order as in the official SDK.

Difference from the official SDK: an empty list anywhere in a tree evaluates to UNKNOWN, where the
official SDK raises ``IndexError``. Tuples are accepted wherever lists are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._logging import sdk_logger
from .compiled import Matcher, compile_audience_check, compile_tree

logger: Final = sdk_logger()

__all__ = ["audience_check", "evaluate_tree"]

LeafEvaluator = Callable[[Any], "bool | None"]

_DEBUG: Final = logging.DEBUG
#: The official SDK logs the audience results at INFO; per-call lines are DEBUG here.
_INFO: Final = logging.DEBUG


def evaluate_tree(tree: Any, leaf: LeafEvaluator) -> bool | None:
    """Evaluate a condition tree with three-valued logic (the evaluator of :mod:`.compiled`).

    Args:
        tree: a list (or tuple) headed by ``"and"``, ``"or"`` or ``"not"``; a list without an operator,
            which is an implicit OR; or anything else, which is a leaf.
        leaf: called with each leaf that needs evaluating, left to right, stopping as soon as the result
            is decided.

    Returns:
        True, False, or None (UNKNOWN). An empty list is UNKNOWN.
    """

    def leaf_node(node: Any) -> Callable[[Any], bool | None]:
        return lambda _: leaf(node)

    return compile_tree(tree, leaf_node)(None)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=repr)


def audience_check(
    audience_tree: Any,
    audiences: Mapping[str, Any],
    attributes: Mapping[str, Any],
    label: str,
    reasons: list[str] | None,
    matcher: Matcher | None = None,
    compiled_audiences: dict[Any, Any] | None = None,
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
        matcher: the entity's compiled check of ``audience_tree`` (compiled here when not given).
        compiled_audiences: the config's compiled audiences, shared so that each audience compiles once.

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

    # The same compiled check as the fast path; at DEBUG, with the per-audience messages around each audience.
    if debug:
        check = compile_audience_check(audience_tree, audiences, compiled_audiences, verbose=True)
    else:
        check = matcher or compile_audience_check(audience_tree, audiences, compiled_audiences)
    matched = check(attributes) is True

    if info or reasons is not None:
        message = f"Audiences for {label} collectively evaluated to {'TRUE' if matched else 'FALSE'}."
        if info:
            logger.debug(message)
        if reasons is not None:
            reasons.append(message)
    return matched
