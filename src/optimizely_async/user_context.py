"""OptimizelyUserContext: the decide API, forced decisions and ``track_event``.

A context may be shared by concurrent tasks: every decide call works on a snapshot of the attributes and
forced decisions taken when it starts, so a concurrent ``set_attribute`` never changes a decision midway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._logging import sdk_logger
from ._validation import _plain_value, plain, plain_attributes
from .decide import DecideOption, DecisionMessage, OptimizelyDecision, coerce_options
from .decision.engine import FEATURE_TEST, HOLDOUT, ROLLOUT, Decision, decide_flag, forced_decision_variation
from .decision.quiet import decide_flag_quietly
from .decision.user_profile import UserProfileTracker, load_profile, save_profile
from .notifications import NotificationType
from .odp.user import QualifiedSegments, engine_attributes

if TYPE_CHECKING:
    from .client import AsyncOptimizely
    from .config.project_config import FlagInfo, ProjectConfig
    from .events.models import PendingEvent

__all__ = [
    "OptimizelyDecisionContext",
    "OptimizelyForcedDecision",
    "OptimizelyUserContext",
    "can_decide_now",
    "decide_now",
]

_log = sdk_logger()
_DECISION = NotificationType.DECISION
_ACTIVATE = NotificationType.ACTIVATE


@dataclass(frozen=True)
class OptimizelyDecisionContext:
    """Names a flag (``rule_key=None``) or one of its rules for a forced decision.

    Also reachable as ``OptimizelyUserContext.OptimizelyDecisionContext``, as in the official SDK. Frozen and
    hashable: two contexts with the same keys are equal.
    """

    flag_key: str
    rule_key: str | None = None


@dataclass(frozen=True)
class OptimizelyForcedDecision:
    """The variation a forced decision gives (also ``OptimizelyUserContext.OptimizelyForcedDecision``).

    The key is not validated when it is set: a key the flag does not have is reported in the decide reasons
    and the flag is then decided normally, as in the official SDK.
    """

    variation_key: str | None


_Context = OptimizelyDecisionContext
_Forced = OptimizelyForcedDecision


class OptimizelyUserContext(QualifiedSegments):
    """A user (id and attributes) to decide for. Create it with ``client.create_user_context``.

    The decide methods never raise: a problem is logged and gives an error decision (``enabled`` False,
    no variation) or an empty dict. The methods mirror the official ``OptimizelyUserContext``; ``decide``,
    ``decide_for_keys``, ``decide_all`` and ``track_event`` are coroutines.
    """

    OptimizelyDecisionContext = OptimizelyDecisionContext
    OptimizelyForcedDecision = OptimizelyForcedDecision

    def __init__(
        self, client: AsyncOptimizely | None, user_id: str, user_attributes: dict[str, Any] | None = None
    ) -> None:
        self.client = client
        self.user_id = plain(user_id)
        self._attributes: dict[str, Any] = (
            plain_attributes(user_attributes) if isinstance(user_attributes, dict) else {}
        )
        self._forced: dict[tuple[str, str | None], str | None] = {}

    # ------------------------------------------------------------------ attributes

    def get_user_attributes(self) -> dict[str, Any]:
        """A copy of the attributes."""
        return dict(self._attributes)

    def set_attribute(self, attribute_key: str, attribute_value: Any) -> None:
        """Set or replace one attribute; values are not validated (audiences skip values they cannot use).

        A key that is not a string is kept, as the official SDK keeps it, with a warning: audiences and events
        only read string keys, so it changes no decision. A key that cannot be a dict key (a list, a dict) is
        logged as an error and the call is ignored, where the official SDK raises ``TypeError``.
        """
        attribute_key, attribute_value = plain(attribute_key), plain_attributes({0: attribute_value})[0]
        if not isinstance(attribute_key, str):
            kind = type(attribute_key).__name__
            try:
                hash(attribute_key)
            except Exception:
                _log.error(
                    'Attribute key of type "%s" is invalid: an attribute key must be a string. set_attribute ignored.',
                    kind,
                )
                return
            _log.warning('Attribute key of type "%s" is not a string: audiences and events ignore the attribute.', kind)
        try:
            self._attributes[attribute_key] = attribute_value
        except Exception:  # a key whose __eq__ raises against an existing key
            _log.exception(
                'Attribute key of type "%s" is invalid. set_attribute ignored.', type(attribute_key).__name__
            )

    def as_json(self) -> dict[str, Any]:
        """``{"user_id": ..., "attributes": ...}`` with a copy of the attributes, as the official SDK."""
        return {"user_id": self.user_id, "attributes": self.get_user_attributes()}

    def _clone(self) -> OptimizelyUserContext:
        clone = OptimizelyUserContext.__new__(OptimizelyUserContext)
        clone.client = self.client
        clone.user_id = self.user_id
        clone._attributes = dict(self._attributes)
        # Keys and values are immutable: a shallow copy is a snapshot.
        clone._forced = dict(self._forced) if self._forced else {}
        clone._qualified_segments = self._qualified_segments  # replaced, never changed in place: shared
        return clone

    def __repr__(self) -> str:
        return f"OptimizelyUserContext(user_id={self.user_id!r}, attributes={self._attributes!r})"

    # ------------------------------------------------------------------ forced decisions

    def set_forced_decision(self, decision_context: _Context, decision: _Forced) -> bool:
        """Force a variation for a flag (rule_key None) or a rule of it. True, as the official SDK (False, with
        an error log, when the arguments are not a decision context and a forced decision)."""
        key = _context_key(decision_context)
        variation_key = _field(decision, "variation_key")
        if variation_key is not None and not isinstance(variation_key, str):
            variation_key = _ABSENT
        if key is None or variation_key is _ABSENT:
            _log.error('Provided "decision" or "decision_context" is in an invalid format.')
            return False
        self._forced[key] = plain(variation_key)
        return True

    def get_forced_decision(self, decision_context: _Context) -> _Forced | None:
        """The forced decision set for this flag or rule, or None."""
        key = _context_key(decision_context)
        if key is None or key not in self._forced:
            return None
        return _Forced(self._forced[key])

    def remove_forced_decision(self, decision_context: _Context) -> bool:
        """Remove the forced decision of this flag or rule; False when there was none."""
        key = _context_key(decision_context)
        return key is not None and self._forced.pop(key, _ABSENT) is not _ABSENT

    def remove_all_forced_decisions(self) -> bool:
        """Remove every forced decision of this context. Always True, as the official SDK."""
        self._forced.clear()
        return True

    # ------------------------------------------------------------------ decide

    async def decide(self, key: str, options: Sequence[DecideOption | str] | None = None) -> OptimizelyDecision:
        """Decide one flag; sends its impression unless DISABLE_DECISION_EVENT. Never raises."""
        snapshot = self._clone()
        client = self.client
        if type(key) is not str:
            key = plain(key)
        try:
            if client is None:
                raise ValueError("no client")
            # The official order: the key's type is checked before the config is looked at.
            if not isinstance(key, str):
                _log.error("Key parameter is invalid")
                return OptimizelyDecision(
                    flag_key=key,
                    user_context=snapshot,
                    reasons=[DecisionMessage.FLAG_KEY_INVALID.format(key)],
                )
            config = client._config
            if config is None:
                _log.error('Optimizely SDK is not ready: no datafile loaded yet. Failing "decide".')
                return OptimizelyDecision(flag_key=key, user_context=snapshot, reasons=[DecisionMessage.SDK_NOT_READY])
            flag = config.flags_by_key.get(key)
            if flag is None:
                _log.error("No feature flag was found for key '%s'.", key)
                return OptimizelyDecision(
                    flag_key=key,
                    user_context=snapshot,
                    reasons=[DecisionMessage.FLAG_KEY_INVALID.format(key)],
                )
            # No options (the common call): the merged defaults straight from the cache, without the call.
            merged = client._decide_options_cache.get(_NO_OPTIONS[True]) if options is None else None
            if merged is None:
                merged = _options(client, options, True)
            if can_decide_now(client, snapshot, merged, flag.has_cmab):
                late: list[PendingEvent] = []
                result = decide_now(client, config, snapshot, flag, merged, late)
                if late:
                    await _put_late(client, late)
                return result
            return await _decide_one(client, config, snapshot, flag, merged)
        except Exception:
            _log.exception('Unexpected error in decide("%s").', key)
            return OptimizelyDecision(flag_key=key if isinstance(key, str) else None, user_context=snapshot)

    async def decide_for_keys(
        self, keys: Iterable[str], options: Sequence[DecideOption | str] | None = None
    ) -> dict[str, OptimizelyDecision]:
        """Decide several flags with one user-profile lookup and one save."""
        snapshot = self._clone()
        client = self.client
        try:
            if client is None or client.config is None:
                _log.error('Optimizely SDK is not ready: no datafile loaded yet. Failing "decide_for_keys".')
                return {}
            given = list(keys)
            # Strings become plain strings; numbers, booleans and None stay (the official SDK answers them with
            # "no flag" decisions under the same keys); any other object, whose __hash__ or __eq__ may raise or
            # lie, is skipped.
            given_any: list[Any] = given
            keys = [_plain_value(key) for key in given_any if key is None or isinstance(key, (str, *_KEY_TYPES))]
            if len(keys) != len(given):
                _log.error("Key parameter is invalid: decide_for_keys skips keys that are not strings or numbers.")
            return await _decide_keys(client, client.config, snapshot, keys, _options(client, options))
        except Exception:
            _log.exception("Unexpected error in decide_for_keys.")
            return {}

    async def decide_all(self, options: Sequence[DecideOption | str] | None = None) -> dict[str, OptimizelyDecision]:
        """Decide every flag of the datafile, in datafile order."""
        snapshot = self._clone()
        client = self.client
        try:
            config = client.config if client is not None else None
            if client is None or config is None:
                _log.error('Optimizely SDK is not ready: no datafile loaded yet. Failing "decide_all".')
                return {}
            return await _decide_keys(client, config, snapshot, list(config.flags_by_key), _options(client, options))
        except Exception:
            _log.exception("Unexpected error in decide_all.")
            return {}

    async def track_event(self, event_key: str, event_tags: dict[str, Any] | None = None) -> None:
        """``client.track`` for this user with the current attributes."""
        if self.client is None:
            _log.error('Provided "user_context" is in an invalid format.')
            return
        await self.client.track(event_key, self.user_id, self.get_user_attributes(), event_tags)


_ABSENT: Any = object()
_KEY_TYPES: tuple[type, ...] = (int, float, bool)  # subclasses are copied to the plain type by _plain_value


def _field(value: object, name: str) -> Any:
    """``getattr(value, name)``, or ``_ABSENT`` when it is missing or its ``__getattr__`` raises."""
    try:
        return getattr(value, name, _ABSENT)
    except Exception:
        return _ABSENT


def _context_key(decision_context: object) -> tuple[str, str | None] | None:
    """The (flag key, rule key) a decision context names, as plain strings; None (not a usable context) unless
    the flag key is a string and the rule key a string or None."""
    flag_key = _field(decision_context, "flag_key")
    rule_key = _field(decision_context, "rule_key")
    if not isinstance(flag_key, str) or not (rule_key is None or isinstance(rule_key, str)):
        return None
    return (plain(flag_key), plain(rule_key))


@dataclass(frozen=True, slots=True)
class _Options:
    """Decide options merged with the client's defaults, as booleans."""

    disable_event: bool
    enabled_only: bool
    ignore_ups: bool
    include_reasons: bool
    exclude_variables: bool
    ignore_cmab_cache: bool = False
    reset_cmab_cache: bool = False
    invalidate_user_cmab_cache: bool = False
    #: Whether these options allow :func:`decide_now` for the client they were merged for: no reasons asked
    #: for, and no user profile service in use.
    quick: bool = False

    @classmethod
    def of(cls, options: tuple[DecideOption, ...], has_ups: bool) -> _Options:
        ignore_ups = DecideOption.IGNORE_USER_PROFILE_SERVICE in options
        include_reasons = DecideOption.INCLUDE_REASONS in options
        return cls(
            DecideOption.DISABLE_DECISION_EVENT in options,
            DecideOption.ENABLED_FLAGS_ONLY in options,
            ignore_ups,
            include_reasons,
            DecideOption.EXCLUDE_VARIABLES in options,
            DecideOption.IGNORE_CMAB_CACHE in options,
            DecideOption.RESET_CMAB_CACHE in options,
            DecideOption.INVALIDATE_USER_CMAB_CACHE in options,
            quick=not include_reasons and (ignore_ups or not has_ups),
        )


_NO_OPTIONS: dict[bool, tuple[tuple[Any, ...], bool]] = {True: ((), True), False: ((), False)}


def _options(client: AsyncOptimizely, options: Sequence[DecideOption | str] | None, single: bool = False) -> _Options:
    """Merge with the defaults (cached per distinct option list); ``decide`` ignores ENABLED_FLAGS_ONLY."""
    if options is not None and not isinstance(options, (list, tuple)):
        _log.debug("Provided decide options is not an array. Using default decide options.")
        options = None
    if options:
        items = tuple(options)
        key: Any = (items, single)
        # Only exact strings and options make a cache key: another item's __hash__ or __eq__ may raise or lie,
        # and a key holding it would break the look-ups of every later call.
        cacheable = all(type(o) is str or type(o) is DecideOption for o in items)
    else:
        key, cacheable = _NO_OPTIONS[single], True
    cache = client._decide_options_cache
    merged = cache.get(key) if cacheable else None
    if merged is None:
        given = coerce_options(options)
        combined = given + tuple(o for o in client._default_decide_options if o not in given)
        if single:
            combined = tuple(o for o in combined if o is not DecideOption.ENABLED_FLAGS_ONLY)
        merged = _Options.of(combined, client._ups is not None)
        if cacheable and len(cache) < 256:
            cache[key] = merged
    return merged


def can_decide_now(client: AsyncOptimizely, user: OptimizelyUserContext, options: _Options, cmab: bool) -> bool:
    """Whether :func:`decide_now` may decide for ``user``: nothing to await and nothing to explain (the options
    ask for no reasons and no user profile service is in use, no forced decision, no DECISION or ACTIVATE
    listener, and ``cmab`` False: no CMAB experiment among the flags to decide, whose prediction may have to be
    fetched)."""
    return options.quick and not user._forced and not cmab and client.notification_center.decisions_unheard


def decide_now(
    client: AsyncOptimizely,
    config: ProjectConfig,
    user: OptimizelyUserContext,
    flag: FlagInfo,
    options: _Options,
    late: list[PendingEvent],
) -> OptimizelyDecision:
    """Decide one flag synchronously, queueing its impressions directly: the fast path of ``decide``,
    ``decide_for_keys`` and ``decide_all`` (and of a synchronous client) when :func:`can_decide_now` says so.

    ``user`` is the snapshot the decision refers to. Impressions the queue has no room for right now are
    appended to ``late``; the caller must hand each to ``await client._put(...)`` (which waits for room
    or counts the drop), as the coroutine path does.
    """
    attributes = user._attributes
    if user._qualified_segments is not None:  # the engine sees the user's ODP segments too
        attributes = engine_attributes(user, attributes)
    # The engine's quiet path first: decide_flag tries it too, after checks that are settled here.
    decision = decide_flag_quietly(config, flag, user.user_id, attributes, client._forced)
    if decision is None:
        decision = decide_flag(config, flag, user.user_id, attributes, client._forced, None)
    # A rollout decision outside any holdout sends nothing unless the datafile sends flag decisions (see
    # _impressions): the common case on most datafiles, settled without building the list.
    sends = decision.source != ROLLOUT or decision.holdout is not None or config.send_flag_decisions
    if sends and not options.disable_event:
        for args in _impressions(config, user, flag, decision):
            pending = client._impression(*args)
            if not client._offer(pending):
                late.append(pending)
    variation = decision.variation
    experiment = decision.experiment
    return OptimizelyDecision(
        variation.key if variation is not None else None,
        variation is not None and bool(variation.feature_enabled),
        {} if options.exclude_variables else config.flag_variables(flag, variation),
        experiment.key if experiment is not None else None,
        flag.key,
        user,
        [],
    )


async def _put_late(client: AsyncOptimizely, late: list[PendingEvent]) -> None:
    for pending in late:
        await client._put(pending)


def _impressions(
    config: ProjectConfig, user: OptimizelyUserContext, flag: FlagInfo, decision: Decision
) -> list[tuple[Any, ...]]:
    """The arguments of ``_send_impression`` for each impression a decide sends (unless disabled): a global
    holdout's that excludes targeted deliveries, then the decision's own when the official SDK sends one."""
    out: list[tuple[Any, ...]] = []
    holdout = decision.holdout
    if holdout is not None and decision.source != HOLDOUT:
        held = holdout.variation
        out.append(
            (
                config,
                holdout.experiment,
                held,
                flag.key,
                holdout.experiment.key if holdout.experiment else "",
                HOLDOUT,
                held is not None and bool(held.feature_enabled),
                user.user_id,
                user._attributes,
            )
        )
    if decision.source in (FEATURE_TEST, HOLDOUT) or config.send_flag_decisions:
        variation = decision.variation
        experiment = decision.experiment
        out.append(
            (
                config,
                experiment,
                variation,
                flag.key,
                experiment.key if experiment is not None else "",
                decision.source,
                variation is not None and bool(variation.feature_enabled),
                user.user_id,
                user._attributes,
                decision.cmab_uuid,
            )
        )
    return out


async def _decide_keys(
    client: AsyncOptimizely,
    config: ProjectConfig,
    user: OptimizelyUserContext,
    keys: list[str],
    options: _Options,
) -> dict[str, OptimizelyDecision]:
    """``decide_for_keys`` / ``decide_all``: the fast path when :func:`can_decide_now`, else the coroutines."""
    if not can_decide_now(client, user, options, config.has_cmab):
        return await _decide_for_keys(client, config, user, keys, options)
    results: dict[str, OptimizelyDecision] = {}
    late: list[PendingEvent] = []
    flags = config.flags_by_key
    enabled_only = options.enabled_only
    for key in keys:
        flag = flags.get(key)
        if flag is None:
            results[key] = OptimizelyDecision(flag_key=key, user_context=user)
            continue
        result = decide_now(client, config, user, flag, options, late)
        if not enabled_only or result.enabled:
            results[key] = result
    if late:
        await _put_late(client, late)
    return results


def _forced_flag_decision(user: OptimizelyUserContext, flag: FlagInfo, reasons: list[str] | None) -> Decision | None:
    if not user._forced:
        return None
    variation = forced_decision_variation(flag, None, user.user_id, user._forced, reasons)
    return Decision(None, variation, FEATURE_TEST) if variation is not None else None


async def _decide_one(
    client: AsyncOptimizely, config: ProjectConfig, user: OptimizelyUserContext, flag: FlagInfo, options: _Options
) -> OptimizelyDecision:
    reasons: list[str] | None = [] if options.include_reasons else None
    decision = _forced_flag_decision(user, flag, reasons)
    # The profile is looked up even when a flag-level forced decision settles the flag, as the official SDK
    # (and our decide_for_keys) does: one lookup per decide call whenever a service is in use.
    ups = None if options.ignore_ups else client._ups
    tracker = await load_profile(ups, user.user_id) if ups is not None else None
    if decision is None:
        attributes = engine_attributes(user, user._attributes)
        decision = await _decide_flag(client, config, user, flag, attributes, tracker, reasons, options)
    if tracker is not None:
        await save_profile(ups, tracker)
    return await _finish(client, config, user, flag, decision, reasons, options)


async def _decide_flag(
    client: AsyncOptimizely,
    config: ProjectConfig,
    user: OptimizelyUserContext,
    flag: FlagInfo,
    attributes: dict[str, Any],
    tracker: UserProfileTracker | None,
    reasons: list[str] | None,
    options: _Options,
) -> Decision:
    """The engine's decision of ``flag`` for ``user`` (its rule-level forced decisions included), with the
    prediction fetched when the engine stopped at a CMAB rule the user is in."""
    forced_decisions = user._forced or None
    decision = decide_flag(config, flag, user.user_id, attributes, client._forced, tracker, reasons, forced_decisions)
    if not decision.pending:
        return decision
    return await client._cmab.resolve_flag(
        config, flag, decision, user.user_id, attributes, client._forced, tracker, reasons, forced_decisions, options
    )


async def _decide_for_keys(
    client: AsyncOptimizely,
    config: ProjectConfig,
    user: OptimizelyUserContext,
    keys: list[str],
    options: _Options,
) -> dict[str, OptimizelyDecision]:
    results: dict[str, OptimizelyDecision] = {}
    todo: list[tuple[str, FlagInfo, Decision | None, list[str] | None]] = []
    for key in keys:
        flag = config.flags_by_key.get(key)
        if flag is None:
            results[key] = OptimizelyDecision(flag_key=key, user_context=user)
            continue
        reasons: list[str] | None = [] if options.include_reasons else None
        todo.append((key, flag, _forced_flag_decision(user, flag, reasons), reasons))

    # One user-profile lookup and one save for the whole call.
    ups = None if options.ignore_ups else client._ups
    tracker = await load_profile(ups, user.user_id) if ups is not None else None
    attributes = engine_attributes(user, user._attributes)
    decided: list[tuple[str, FlagInfo, Decision, list[str] | None]] = []
    for key, flag, forced, reasons in todo:
        decision = forced or await _decide_flag(client, config, user, flag, attributes, tracker, reasons, options)
        decided.append((key, flag, decision, reasons))
    if tracker is not None:
        await save_profile(ups, tracker)

    for key, flag, decision, reasons in decided:  # error decisions first, as in the official SDK
        if decision.error_reasons is not None:
            results[key] = await _finish(client, config, user, flag, decision, reasons, options)
    for key, flag, decision, reasons in decided:
        if decision.error_reasons is not None:
            continue
        result = await _finish(client, config, user, flag, decision, reasons, options)
        if not options.enabled_only or result.enabled:
            results[key] = result
    return results


async def _finish(
    client: AsyncOptimizely,
    config: ProjectConfig,
    user: OptimizelyUserContext,
    flag: FlagInfo,
    decision: Decision,
    reasons: list[str] | None,
    options: _Options,
) -> OptimizelyDecision:
    if decision.error_reasons is not None:  # no prediction for a CMAB rule: the flag's error decision
        return OptimizelyDecision.new_error_decision(flag.key, user, list(decision.error_reasons))
    variation = decision.variation
    experiment = decision.experiment
    enabled = variation is not None and bool(variation.feature_enabled)
    rule_key = experiment.key if experiment is not None else None
    attributes = user._attributes
    dispatched = False
    if not options.disable_event:
        for args in _impressions(config, user, flag, decision):
            await client._send_impression(*args)
            dispatched = True
    variables: dict[str, Any] = {} if options.exclude_variables else config.flag_variables(flag, variation)
    shown_reasons = reasons if reasons is not None else []
    variation_key = variation.key if variation is not None else None
    center = client.notification_center
    if center.has_listeners(NotificationType.DECISION):
        await center.send_notifications(
            NotificationType.DECISION,
            "flag",
            user.user_id,
            attributes,
            {
                "flag_key": flag.key,
                "enabled": enabled,
                "variables": variables,
                "variation_key": variation_key,
                "rule_key": rule_key,
                "reasons": shown_reasons,
                "decision_event_dispatched": dispatched,
                "experiment_id": experiment.id if experiment is not None else None,
                "variation_id": variation.id if variation is not None else None,
            },
        )
    return OptimizelyDecision(
        variation_key=variation_key,
        enabled=enabled,
        variables=variables,
        rule_key=rule_key,
        flag_key=flag.key,
        user_context=user,
        reasons=shown_reasons,
    )
