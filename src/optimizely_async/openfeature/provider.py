"""OptimizelyProvider: Optimizely Feature Experimentation behind the OpenFeature API (extra ``openfeature``).

This is the only module that imports ``openfeature``; the mapping itself is in :mod:`._mapping` and the
client adapter in :mod:`._engine`. The mapping follows the Java and Go providers:

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

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata, ProviderStatus
from openfeature.track import TrackingEventDetails

from .._logging import sdk_logger
from ..client import AsyncOptimizely
from ..errors import ConfigurationError
from ._engine import AsyncEngine, Engine, LoopThreadError, LoopUnknownError, SyncEngine, loop_running
from ._mapping import PICKERS, Outcome, RuleReasons, error, metadata_of, user_of

if TYPE_CHECKING:
    from ..config.project_config import FlagInfo, ProjectConfig
    from ..decide import OptimizelyDecision
    from ..sync import SyncOptimizely

__all__ = ["OptimizelyProvider"]

_log = sdk_logger()

_T = TypeVar("_T")
_Obj = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class OptimizelyProvider(AbstractProvider):
    """An OpenFeature provider backed by an ``AsyncOptimizely`` or a
    ``SyncOptimizely``.

    Pass the client you run, or the client's constructor options: with options the provider owns a
    ``SyncOptimizely`` built from them (created with the provider, closed by ``shutdown``, which OpenFeature
    calls from ``api.shutdown`` or when the provider is replaced).

    Both resolution styles work. With a ``SyncOptimizely`` (borrowed or owned) every resolution decides in
    the calling thread, from any thread or event loop. With an ``AsyncOptimizely``, the ``*_async`` methods
    decide directly on the client's event loop, and the plain methods work from any other thread while that
    loop runs: they wait for the decision on the loop. Called *on* the client's loop thread, where waiting
    would deadlock it, they return the caller's default with error code ``GENERAL`` and a message naming the
    ``*_async`` method to use. The provider learns the client's loop once the client is entered, even when
    it was created before that (at import time) and is used only from worker threads.

    Args:
        client: the client to decide with (the provider does not start or close it).
        ready_timeout: how long ``initialize`` waits for the first datafile before it reports an error
            (READY follows when the datafile arrives later).
        stale_after_failures: consecutive failed datafile fetches after which the provider reports STALE
            (ERROR before any datafile); a good fetch brings it back to READY.
        health_check_interval: seconds between looks at the datafile poller's state.
        **options: ``SyncOptimizely`` constructor options, instead of ``client``.
    """

    def __init__(
        self,
        client: AsyncOptimizely | SyncOptimizely | None = None,
        *,
        ready_timeout: float = 10.0,
        stale_after_failures: int = 3,
        health_check_interval: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__()
        if client is not None and options:
            raise ConfigurationError("Pass either a client or the options to build one, not both.")
        if isinstance(stale_after_failures, bool) or not isinstance(stale_after_failures, int):
            raise ConfigurationError("stale_after_failures must be an int.")
        if stale_after_failures < 1:
            raise ConfigurationError("stale_after_failures must be at least 1.")
        for name, value in (("ready_timeout", ready_timeout), ("health_check_interval", health_check_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}.")
        self._owned: SyncOptimizely | None = None
        if client is None:
            client = self._owned = _owned(options)
        self.client: AsyncOptimizely | SyncOptimizely = client
        self._engine: Engine = _engine_for(self.client)
        self._ready_timeout = float(ready_timeout)
        self._stale_after = stale_after_failures
        self._status = ProviderStatus.NOT_READY
        self._initialized = False
        self._lock = threading.Lock()
        self._revision: str | None = None
        self._reasons = RuleReasons()
        self._warned_loop = False
        self._datafile = threading.Event()  # set once the client has a datafile (_on_config)
        self._engine.bind()
        self._engine.watch(self._on_config, self._check_health, float(health_check_interval))

    # ------------------------------------------------------------------ lifecycle

    def get_metadata(self) -> Metadata:
        return Metadata(name="optimizely-async")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Wait (up to ``ready_timeout``) for the first datafile: until the client's OPTIMIZELY_CONFIG_UPDATE
        reaches the provider.

        In a thread that runs an event loop it does not wait: the wait would stall that loop (and on an
        ``AsyncOptimizely``'s own loop it could never end, since the datafile comes through that loop). There it
        returns if a datafile is loaded, else raises ``ProviderNotReadyError``; READY follows when the datafile
        arrives.
        OpenFeature's ``set_provider`` runs ``initialize`` in a thread of its own; from async code, use it (and
        the READY event) rather than ``set_provider_and_wait``, or call the latter through
        ``anyio.to_thread.run_sync``.
        """
        ready = self._engine.config() is not None
        if not ready and not self._engine.on_loop_thread() and not loop_running():
            ready = self._datafile.wait(self._ready_timeout) or self._engine.config() is not None
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
        if self._owned is not None:
            self._owned.close()  # delivers what is queued (within close_timeout), then stops its loop thread
        with self._lock:
            self._status = ProviderStatus.NOT_READY
            self._initialized = False

    # ------------------------------------------------------------------ status and events

    def _on_config(self) -> None:
        """A new datafile revision (on the client's side)."""
        config = self._engine.config()
        if config is not None:
            self._datafile.set()  # wakes initialize()
        with self._lock:
            if not self._initialized or config is None or config.revision == self._revision:
                return
            previous, self._revision = self._revision, config.revision
            recovered = self._status is not ProviderStatus.READY
            self._status = ProviderStatus.READY
        details = ProviderEventDetails(message=f"Optimizely datafile revision {config.revision}")
        if recovered:  # the first datafile after a failed initialize, or a new one while STALE
            self.emit_provider_ready(details)
        if previous is not None:
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
            self._status = new  # revisions are _on_config's: it reports a new one even if READY came first
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
            context = evaluation_context
            user = user_of(context.targeting_key, context.attributes) if context is not None else None
            if user is None:
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
        return self._blocking(flag_key, default_value, evaluation_context, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._blocking(flag_key, default_value, evaluation_context, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._blocking(flag_key, default_value, evaluation_context, "integer")

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._blocking(flag_key, default_value, evaluation_context, "float")

    def resolve_object_details(
        self, flag_key: str, default_value: _Obj, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[_Obj]:
        return self._blocking(flag_key, default_value, evaluation_context, "object")

    # ------------------------------------------------------------------ resolution (async)

    async def resolve_boolean_details_async(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return await self._resolve(flag_key, default_value, evaluation_context, "boolean")

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return await self._resolve(flag_key, default_value, evaluation_context, "string")

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return await self._resolve(flag_key, default_value, evaluation_context, "integer")

    async def resolve_float_details_async(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return await self._resolve(flag_key, default_value, evaluation_context, "float")

    async def resolve_object_details_async(
        self, flag_key: str, default_value: _Obj, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[_Obj]:
        return await self._resolve(flag_key, default_value, evaluation_context, "object")

    # ------------------------------------------------------------------ the shared steps

    async def _resolve(
        self, flag_key: str, default: _T, context: EvaluationContext | None, kind: str
    ) -> FlagResolutionDetails[_T]:
        try:
            self._engine.bind()
            checked = self._precheck(flag_key, default, context)
            if isinstance(checked, Outcome):
                return _details(checked)
            config, flag, user_id, attributes, variable = checked
            decision = await self._engine.decide(flag_key, user_id, attributes)
            return _details(self._outcome(config, flag, decision, default, variable, kind))
        except Exception as exc:
            _log.exception('Unexpected error resolving "%s" through OpenFeature.', flag_key)
            return _details(error(default, "GENERAL", f"{type(exc).__name__}: {exc}"))

    def _blocking(
        self, flag_key: str, default: _T, context: EvaluationContext | None, kind: str
    ) -> FlagResolutionDetails[_T]:
        try:
            checked = self._precheck(flag_key, default, context)
            if isinstance(checked, Outcome):
                return _details(checked)
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
                method = f"resolve_{kind}_details"
                message = (
                    f"{method} cannot wait on the client's event loop thread; use {method}_async "
                    "(get_*_value_async / get_*_details_async) there."
                )
                return _details(error(default, "GENERAL", message))
            except LoopUnknownError as exc:
                message = str(exc) or (
                    "The provider has not seen the client's event loop yet: create it on that loop, or make one "
                    "async evaluation first."
                )
                return _details(error(default, "PROVIDER_NOT_READY", message))
            return _details(self._outcome(config, flag, decision, default, variable, kind))
        except Exception as exc:
            _log.exception('Unexpected error resolving "%s" through OpenFeature.', flag_key)
            return _details(error(default, "GENERAL", f"{type(exc).__name__}: {exc}"))

    def _precheck(
        self, flag_key: str, default: Any, context: EvaluationContext | None
    ) -> Outcome | tuple[ProjectConfig, FlagInfo, str, dict[str, Any], str | None]:
        """The input and readiness checks before any decision; an error outcome, or what deciding needs."""
        config = self._engine.config()
        if config is None:
            return error(default, "PROVIDER_NOT_READY", "No Optimizely datafile is loaded yet.")
        user = user_of(context.targeting_key, context.attributes) if context is not None else None
        if user is None:
            return error(default, "TARGETING_KEY_MISSING", "The evaluation context has no targeting key (the user id).")
        flag = config.flags_by_key.get(flag_key) if isinstance(flag_key, str) else None
        if flag is None:
            message = f'No flag "{flag_key}" in datafile revision {config.revision}.'
            return error(default, "FLAG_NOT_FOUND", message)
        return config, flag, user[0], user[1], user[2]

    def _outcome(
        self,
        config: ProjectConfig,
        flag: FlagInfo,
        decision: OptimizelyDecision,
        default: Any,
        variable: str | None,
        kind: str,
    ) -> Outcome:
        reason = self._reasons.reason(config, flag, decision)
        return PICKERS[kind](decision, default, variable, reason, metadata_of(flag.key, decision))


def _engine_for(client: object) -> Engine:
    """The adapter for this kind of client."""
    if isinstance(client, AsyncOptimizely):
        return AsyncEngine(client)
    sync = sys.modules.get("optimizely_async.sync")  # not imported yet: no SyncOptimizely exists
    if sync is not None and isinstance(client, sync.SyncOptimizely):
        return SyncEngine(client)
    raise ConfigurationError(f"client must be an AsyncOptimizely or a SyncOptimizely, not {type(client).__name__}.")


def _owned(options: dict[str, Any]) -> SyncOptimizely:
    """The provider's own client: a ``SyncOptimizely`` (decisions in the calling thread, no hop to a loop)."""
    from ..sync import SyncOptimizely

    try:
        return SyncOptimizely(**options)
    except TypeError as exc:  # an option SyncOptimizely does not take (http_client, enqueue_timeout, a typo)
        raise ConfigurationError(f"OptimizelyProvider options are SyncOptimizely's: {exc}") from None


def _details(outcome: Outcome) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=outcome.value,
        reason=outcome.reason,
        variant=outcome.variant,
        flag_metadata=outcome.metadata or {},
        error_code=ErrorCode(outcome.error) if outcome.error is not None else None,
        error_message=outcome.message,
    )
