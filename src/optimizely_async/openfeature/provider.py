"""OptimizelyProvider: Optimizely Feature Experimentation behind the OpenFeature API (extra ``openfeature``).

This is the only module that imports ``openfeature``. The mapping follows the Java and Go providers:

* ``targeting_key`` is the user id; every other context attribute is a user attribute, except
  ``variableKey``, which names the variable that string, integer, float and object evaluations read.
* boolean: the flag's ``enabled``; object: the flag's variables (or the JSON variable named by
  ``variableKey``); string, integer, float: the variable ``value`` (or the one named by ``variableKey``).
  A disabled flag, or a user no rule matched, gives the caller's default for everything but boolean.
* ``variant`` is the variation key; ``flag_metadata`` holds ``flagKey``, ``ruleKey`` and ``variableKey``.
* reason: ``SPLIT`` for experiments and holdouts, ``TARGETING_MATCH`` for targeted deliveries, ``DEFAULT``
  for the "Everyone Else" rule or no rule at all, ``DISABLED`` for a variation with the feature off,
  ``ERROR`` with an error code otherwise. On a type mismatch the caller's default comes back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio.from_thread
import anyio.lowlevel
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata, ProviderStatus
from openfeature.track import TrackingEventDetails

from .._logging import sdk_logger
from ..client import AsyncOptimizely
from ..errors import ConfigurationError
from ._engine import AsyncEngine, Engine, LoopThreadError, LoopUnknownError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from anyio.from_thread import BlockingPortal

    from ..config.project_config import FlagInfo, ProjectConfig
    from ..decide import OptimizelyDecision

__all__ = ["OptimizelyProvider"]

_log = sdk_logger()

#: The context attribute that names the variable a string/integer/float/object evaluation reads.
VARIABLE_KEY_ATTRIBUTE: Final = "variableKey"
#: The variable read when the context names none.
DEFAULT_VARIABLE: Final = "value"

_T = TypeVar("_T")
_Obj = Sequence[FlagValueType] | Mapping[str, FlagValueType]
_MISSING: Any = object()
#: Builds the result of one evaluation type from a decision: (decision, default, variable, reason, variant,
#: metadata) -> details.
_Pick = Callable[..., FlagResolutionDetails[_T]]


class OptimizelyProvider(AbstractProvider):
    """An OpenFeature provider backed by an :class:`~optimizely_async.AsyncOptimizely`.

    Pass the client you run (``async with client:``) or the client's constructor options; with options the
    provider owns its client and runs it on a private event-loop thread between ``initialize`` and
    ``shutdown`` (which OpenFeature calls from ``set_provider`` and ``shutdown``).

    Both resolution styles work. The ``*_async`` methods decide directly on the client's event loop. The
    plain methods work from any other thread while that loop runs: they wait for the decision on the loop.
    Called *on* the client's loop thread, where waiting would deadlock it, they return the caller's default
    with error code ``GENERAL`` and a message naming the ``*_async`` method to use. The provider learns
    the client's loop when it is created on it, at its first async call, or at the first datafile update.

    Args:
        client: the client to decide with (the provider does not start or close it).
        ready_timeout: how long ``initialize`` waits for the first datafile before it reports an error
            (READY follows when the datafile arrives later).
        stale_after_failures: consecutive failed datafile fetches after which the provider reports STALE
            (ERROR before any datafile); a good fetch brings it back to READY.
        health_check_interval: seconds between looks at the datafile poller's state.
        **options: ``AsyncOptimizely`` constructor options, instead of ``client``.
    """

    def __init__(
        self,
        client: AsyncOptimizely | None = None,
        *,
        ready_timeout: float = 10.0,
        stale_after_failures: int = 3,
        health_check_interval: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__()
        if client is not None and options:
            raise ConfigurationError("Pass either an AsyncOptimizely client or its options, not both.")
        if client is not None and not isinstance(client, AsyncOptimizely):
            raise ConfigurationError(f"client must be an AsyncOptimizely, not {type(client).__name__}.")
        if isinstance(stale_after_failures, bool) or not isinstance(stale_after_failures, int):
            raise ConfigurationError("stale_after_failures must be an int.")
        if stale_after_failures < 1:
            raise ConfigurationError("stale_after_failures must be at least 1.")
        for name, value in (("ready_timeout", ready_timeout), ("health_check_interval", health_check_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}.")
        self._owns_client = client is None
        self.client: AsyncOptimizely = client if client is not None else AsyncOptimizely(**options)
        self._engine: Engine = AsyncEngine(self.client)
        self._ready_timeout = float(ready_timeout)
        self._stale_after = stale_after_failures
        self._status = ProviderStatus.NOT_READY
        self._initialized = False
        self._lock = threading.Lock()
        self._revision: str | None = None
        self._rules: tuple[int, str | None, dict[str, dict[str, str]]] = (0, None, {})
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._client_cm: AbstractContextManager[Any] | None = None
        self._warned_loop = False
        self._engine.bind()
        self._engine.watch(self._on_config, self._check_health, float(health_check_interval))

    # ------------------------------------------------------------------ lifecycle

    def get_metadata(self) -> Metadata:
        return Metadata(name="optimizely-async")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Wait (up to ``ready_timeout``) for the first datafile; start an owned client first.

        On the client's own loop thread it cannot wait: it returns if a datafile is loaded, else raises
        ``ProviderNotReadyError`` (READY follows when the datafile arrives).
        """
        if self._owns_client and self._portal_cm is None:
            self._start_owned()
        ready = self._engine.config() is not None
        if not ready and not self._engine.on_loop_thread():
            deadline = time.monotonic() + self._ready_timeout
            while not ready and time.monotonic() < deadline:
                time.sleep(0.02)
                ready = self._engine.config() is not None
        with self._lock:
            self._initialized = True
            if ready:
                self._status = ProviderStatus.READY
                config = self._engine.config()
                self._revision = config.revision if config is not None else None
                return
            self._status = ProviderStatus.ERROR
        raise ProviderNotReadyError("No Optimizely datafile yet; the provider reports READY when one arrives.")

    def shutdown(self) -> None:
        """Stop reporting status; close the client if the provider owns it."""
        self._engine.unwatch()
        client_cm, self._client_cm = self._client_cm, None
        portal_cm, self._portal_cm = self._portal_cm, None
        try:
            if client_cm is not None:
                client_cm.__exit__(None, None, None)
        finally:
            if portal_cm is not None:
                portal_cm.__exit__(None, None, None)
        with self._lock:
            self._status = ProviderStatus.NOT_READY
            self._initialized = False

    def _start_owned(self) -> None:
        portal_cm = anyio.from_thread.start_blocking_portal()
        portal = portal_cm.__enter__()
        try:
            token = portal.call(anyio.lowlevel.current_token)
            thread_id = portal.call(threading.get_ident)
            client_cm = portal.wrap_async_context_manager(self.client)
            client_cm.__enter__()
        except BaseException:
            portal_cm.__exit__(None, None, None)
            raise
        self._portal_cm, self._client_cm = portal_cm, client_cm
        assert isinstance(self._engine, AsyncEngine)
        self._engine.bind_to(token, thread_id)
        portal.call(self._engine.bind)  # starts the health check in the client's task group

    # ------------------------------------------------------------------ status and events

    def _on_config(self) -> None:
        """A new datafile revision (on the client's side)."""
        config = self._engine.config()
        with self._lock:
            if not self._initialized or config is None or config.revision == self._revision:
                return
            self._revision = config.revision
            recovered = self._status is not ProviderStatus.READY
            self._status = ProviderStatus.READY
        details = ProviderEventDetails(message=f"Optimizely datafile revision {config.revision}")
        if recovered:
            self.emit_provider_ready(details)
        else:
            self.emit_provider_configuration_changed(details)

    def _check_health(self) -> None:
        """Report STALE (or ERROR before any datafile) while polling keeps failing, READY once it works."""
        stats = self._engine.polling()
        if stats is None:
            return
        has_config = self._engine.config() is not None
        with self._lock:
            if not self._initialized:
                return
            failing = stats.consecutive_failures >= self._stale_after
            old = self._status
            if failing:
                new = ProviderStatus.STALE if has_config else ProviderStatus.ERROR
            elif stats.consecutive_failures == 0 and has_config:
                new = ProviderStatus.READY
            else:
                new = old
            if new is old:
                return
            self._status = new
            if new is ProviderStatus.READY:
                config = self._engine.config()
                self._revision = config.revision if config is not None else self._revision
        message = f"{stats.consecutive_failures} datafile fetches failed in a row: {stats.last_error}"
        if new is ProviderStatus.STALE:
            self.emit_provider_stale(ProviderEventDetails(message=message))
        elif new is ProviderStatus.ERROR:
            self.emit_provider_error(ProviderEventDetails(message=message, error_code=ErrorCode.GENERAL))
        else:
            self.emit_provider_ready(ProviderEventDetails(message="Datafile fetches work again."))

    # ------------------------------------------------------------------ tracking

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """``client.track``: the event key, the context's user, ``details.attributes`` as event tags and
        ``details.value`` as the ``value`` tag. Never raises; on the client's loop it never waits."""
        try:
            user = _user(evaluation_context)
            if isinstance(user, ErrorCode):
                _log.error('track("%s") through OpenFeature needs a targeting key (the user id).', tracking_event_name)
                return
            tags: dict[str, Any] | None = None
            if tracking_event_details is not None:
                tags = dict(tracking_event_details.attributes or {})
                if tracking_event_details.value is not None:
                    tags["value"] = tracking_event_details.value
            self._engine.track(tracking_event_name, user[0], user[1], tags)
        except Exception:
            _log.exception('Unexpected error in track("%s") through OpenFeature.', tracking_event_name)

    # ------------------------------------------------------------------ resolution (sync)

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._blocking(flag_key, default_value, evaluation_context, _boolean, "resolve_boolean_details")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._blocking(flag_key, default_value, evaluation_context, _string, "resolve_string_details")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._blocking(flag_key, default_value, evaluation_context, _integer, "resolve_integer_details")

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._blocking(flag_key, default_value, evaluation_context, _float, "resolve_float_details")

    def resolve_object_details(
        self, flag_key: str, default_value: _Obj, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[_Obj]:
        return self._blocking(flag_key, default_value, evaluation_context, _object, "resolve_object_details")

    # ------------------------------------------------------------------ resolution (async)

    async def resolve_boolean_details_async(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return await self._resolve(flag_key, default_value, evaluation_context, _boolean)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return await self._resolve(flag_key, default_value, evaluation_context, _string)

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return await self._resolve(flag_key, default_value, evaluation_context, _integer)

    async def resolve_float_details_async(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return await self._resolve(flag_key, default_value, evaluation_context, _float)

    async def resolve_object_details_async(
        self, flag_key: str, default_value: _Obj, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[_Obj]:
        return await self._resolve(flag_key, default_value, evaluation_context, _object)

    # ------------------------------------------------------------------ the shared steps

    async def _resolve(
        self, flag_key: str, default: _T, context: EvaluationContext | None, pick: _Pick[_T]
    ) -> FlagResolutionDetails[_T]:
        try:
            self._engine.bind()
            checked = self._precheck(flag_key, default, context)
            if isinstance(checked, FlagResolutionDetails):
                return checked
            config, flag, user_id, attributes, variable = checked
            decision = await self._engine.decide(flag_key, user_id, attributes)
            return self._details(config, flag, decision, default, variable, pick)
        except Exception as exc:
            _log.exception('Unexpected error resolving "%s" through OpenFeature.', flag_key)
            return _error(default, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")

    def _blocking(
        self, flag_key: str, default: _T, context: EvaluationContext | None, pick: _Pick[_T], method: str
    ) -> FlagResolutionDetails[_T]:
        try:
            checked = self._precheck(flag_key, default, context)
            if isinstance(checked, FlagResolutionDetails):
                return checked
            config, flag, user_id, attributes, variable = checked
            try:
                decision = self._engine.decide_blocking(flag_key, user_id, attributes)
            except LoopThreadError:
                if not self._warned_loop:
                    self._warned_loop = True
                    _log.warning(
                        "OpenFeature's synchronous evaluation was called on the Optimizely client's event loop, "
                        "where it cannot wait: the caller's default is returned. Use the *_async methods there."
                    )
                return _error(
                    default,
                    ErrorCode.GENERAL,
                    f"{method} cannot wait on the client's event loop thread; use {method}_async "
                    "(get_*_value_async / get_*_details_async) there.",
                )
            except LoopUnknownError as exc:
                return _error(
                    default,
                    ErrorCode.PROVIDER_NOT_READY,
                    str(exc)
                    or "The provider has not seen the client's event loop yet: create it on that loop, or make "
                    "one async evaluation first.",
                )
            return self._details(config, flag, decision, default, variable, pick)
        except Exception as exc:
            _log.exception('Unexpected error resolving "%s" through OpenFeature.', flag_key)
            return _error(default, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")

    def _precheck(
        self, flag_key: str, default: _T, context: EvaluationContext | None
    ) -> FlagResolutionDetails[_T] | tuple[ProjectConfig, FlagInfo, str, dict[str, Any], str | None]:
        """The input and readiness checks before any decision; an error result, or what deciding needs."""
        config = self._engine.config()
        if config is None:
            return _error(default, ErrorCode.PROVIDER_NOT_READY, "No Optimizely datafile is loaded yet.")
        user = _user(context)
        if isinstance(user, ErrorCode):
            return _error(default, user, "The evaluation context has no targeting key (the Optimizely user id).")
        flag = config.flags_by_key.get(flag_key) if isinstance(flag_key, str) else None
        if flag is None:
            return _error(
                default, ErrorCode.FLAG_NOT_FOUND, f'No flag "{flag_key}" in datafile revision {config.revision}.'
            )
        return config, flag, user[0], user[1], user[2]

    def _details(
        self,
        config: ProjectConfig,
        flag: FlagInfo,
        decision: OptimizelyDecision,
        default: _T,
        variable: str | None,
        pick: _Pick[_T],
    ) -> FlagResolutionDetails[_T]:
        metadata: dict[str, bool | int | float | str] = {"flagKey": flag.key}
        if decision.rule_key:
            metadata["ruleKey"] = decision.rule_key
        variant = decision.variation_key
        if variant is None:
            reason: str = Reason.DEFAULT
        elif not decision.enabled:
            reason = Reason.DISABLED
        else:
            reason = self._rule_reason(config, flag, decision.rule_key)
        return pick(decision, default, variable, reason, variant, metadata)

    def _rule_reason(self, config: ProjectConfig, flag: FlagInfo, rule_key: str | None) -> str:
        """SPLIT, TARGETING_MATCH or DEFAULT for the rule that decided, from what kind of rule it is."""
        if rule_key is None:
            return Reason.TARGETING_MATCH  # a forced decision for the flag
        config_id, revision, by_flag = self._rules
        if config_id != id(config) or revision != config.revision:
            by_flag = {}
            self._rules = (id(config), config.revision, by_flag)
        rules = by_flag.get(flag.key)
        if rules is None:
            rules = by_flag[flag.key] = _rule_reasons(config, flag)
        return rules.get(rule_key, Reason.SPLIT)


def _rule_reasons(config: ProjectConfig, flag: FlagInfo) -> dict[str, str]:
    """Each rule key of the flag with its reason: experiments SPLIT, targeted deliveries TARGETING_MATCH, the
    last rollout rule ("Everyone Else") DEFAULT. Keys not listed (holdouts) are SPLIT."""
    reasons: dict[str, str] = {}
    rollout = flag.rollout_rules
    for i, rule in enumerate(rollout):
        reasons[rule.key] = Reason.DEFAULT if i == len(rollout) - 1 else Reason.TARGETING_MATCH
    for experiment_id in flag.experiment_ids:
        experiment = config.experiments_by_id.get(experiment_id)
        if experiment is not None:
            reasons[experiment.key] = Reason.SPLIT
    return reasons


def _user(context: EvaluationContext | None) -> tuple[str, dict[str, Any], str | None] | ErrorCode:
    """(user id, user attributes, variable key) from the context, or TARGETING_KEY_MISSING."""
    if context is None or not isinstance(context.targeting_key, str) or not context.targeting_key:
        return ErrorCode.TARGETING_KEY_MISSING
    attributes = dict(context.attributes) if context.attributes else {}
    variable = attributes.pop(VARIABLE_KEY_ATTRIBUTE, None)
    return context.targeting_key, attributes, variable if isinstance(variable, str) else None


def _error(default: _T, code: ErrorCode, message: str) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(value=default, reason=Reason.ERROR, error_code=code, error_message=message)


def _result(
    value: _T, reason: str, variant: str | None, metadata: dict[str, bool | int | float | str]
) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(value=value, reason=reason, variant=variant, flag_metadata=metadata)


def _boolean(
    decision: OptimizelyDecision,
    default: bool,
    variable: str | None,
    reason: str,
    variant: str | None,
    metadata: dict[str, bool | int | float | str],
) -> FlagResolutionDetails[bool]:
    return _result(bool(decision.enabled), reason, variant, metadata)


def _variable(
    decision: OptimizelyDecision,
    default: _T,
    variable: str | None,
    reason: str,
    variant: str | None,
    metadata: dict[str, bool | int | float | str],
    accept: Any,
    kind: str,
) -> FlagResolutionDetails[_T]:
    name = variable or DEFAULT_VARIABLE
    metadata["variableKey"] = name
    if not decision.enabled:
        return _result(default, reason, variant, metadata)
    value = decision.variables.get(name, _MISSING)
    if value is _MISSING:
        return FlagResolutionDetails(
            value=default,
            reason=Reason.ERROR,
            variant=variant,
            flag_metadata=metadata,
            error_code=ErrorCode.FLAG_NOT_FOUND,
            error_message=f'Flag "{decision.flag_key}" has no variable "{name}".',
        )
    converted = accept(value)
    if converted is _MISSING:
        return FlagResolutionDetails(
            value=default,
            reason=Reason.ERROR,
            variant=variant,
            flag_metadata=metadata,
            error_code=ErrorCode.TYPE_MISMATCH,
            error_message=f'Variable "{name}" of flag "{decision.flag_key}" is a {type(value).__name__}, not {kind}.',
        )
    result: FlagResolutionDetails[_T] = _result(converted, reason, variant, metadata)
    return result


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else _MISSING


def _as_int(value: Any) -> Any:
    return value if type(value) is int else _MISSING


def _as_float(value: Any) -> Any:
    return float(value) if type(value) in (float, int) else _MISSING


def _as_object(value: Any) -> Any:
    return value if isinstance(value, (dict, list)) else _MISSING


_Meta = dict[str, bool | int | float | str]


def _string(
    decision: OptimizelyDecision, default: str, variable: str | None, reason: str, variant: str | None, meta: _Meta
) -> FlagResolutionDetails[str]:
    return _variable(decision, default, variable, reason, variant, meta, _as_str, "a string")


def _integer(
    decision: OptimizelyDecision, default: int, variable: str | None, reason: str, variant: str | None, meta: _Meta
) -> FlagResolutionDetails[int]:
    return _variable(decision, default, variable, reason, variant, meta, _as_int, "an integer")


def _float(
    decision: OptimizelyDecision, default: float, variable: str | None, reason: str, variant: str | None, meta: _Meta
) -> FlagResolutionDetails[float]:
    return _variable(decision, default, variable, reason, variant, meta, _as_float, "a number")


def _object(
    decision: OptimizelyDecision,
    default: _Obj,
    variable: str | None,
    reason: str,
    variant: str | None,
    metadata: dict[str, bool | int | float | str],
) -> FlagResolutionDetails[_Obj]:
    if variable is not None:
        return _variable(decision, default, variable, reason, variant, metadata, _as_object, "JSON")
    if not decision.enabled:
        return _result(default, reason, variant, metadata)
    return _result(dict(decision.variables), reason, variant, metadata)
