"""CMAB predictions for the async shell: the cache, the decide options, single flight, and resuming the engine.

The pure engine stops at a CMAB rule the user is in (a ``pending`` :class:`Decision`, or :class:`CmabPending`
for an experiment); :class:`CmabService` gets the prediction (from its cache or the endpoint) and resumes the
engine with it. The cache has the official key, value, size and TTL; the decide options are applied in the
official order with the official reasons. Concurrent decides for the same user and rule take turns on one lock
per (user, rule), so the first fetches and the others hit the cache: one request, as in the official SDK. A
decide that hits the cache takes no lock and makes no await.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio

from .._logging import sdk_logger
from .._ttl_cache import TtlLruCache
from ..config.project_config import ExperimentInfo, FlagInfo, ProjectConfig, VariationInfo
from ..decision.engine import (
    CMAB_FAILED,
    FEATURE_TEST,
    CmabState,
    Decision,
    ForcedDecisions,
    ForcedVariations,
    decide_flag,
    finish_cmab,
)
from ..decision.user_profile import UserProfileTracker
from .client import PredictionClient

__all__ = ["NO_CMAB_OPTIONS", "CmabOptions", "CmabService", "Prediction"]

_log = sdk_logger()


class CmabOptions(Protocol):
    """The CMAB decide options of one call, as booleans."""

    @property
    def ignore_cmab_cache(self) -> bool: ...
    @property
    def reset_cmab_cache(self) -> bool: ...
    @property
    def invalidate_user_cmab_cache(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class _NoOptions:
    ignore_cmab_cache: bool = False
    reset_cmab_cache: bool = False
    invalidate_user_cmab_cache: bool = False


#: What the legacy methods use: they take no decide options.
NO_CMAB_OPTIONS: Final = _NoOptions()


@dataclass(slots=True)
class Prediction:
    """One prediction for (user, rule): the variation id and its uuid, or the error that stopped it.

    (Not frozen: it is made on every CMAB decide, and a frozen dataclass costs more to build.)
    """

    variation_id: str | None
    cmab_uuid: str | None
    #: The official cache reasons, in order (for a quiet cache hit: none, see ``reasons_for``).
    reasons: tuple[str, ...] = ()
    #: Why no prediction could be had (the official error text); None on success.
    error: str | None = None
    #: Taken from the cache without a lock (the hot path formats no reason).
    cache_hit: bool = False
    #: The decision's CMAB state for this prediction, made once per cache entry.
    state: CmabState | None = None

    def reasons_for(self, user_id: str, rule_id: str) -> tuple[str, ...]:
        """The official reasons of this prediction."""
        if self.cache_hit:
            return (f"CMAB cache hit for user '{user_id}' and rule '{rule_id}'",)
        return self.reasons


@dataclass(frozen=True, slots=True)
class _Entry:
    attributes_hash: str
    variation_id: str
    cmab_uuid: str
    #: :func:`_fingerprint` of the attributes it was fetched for (None: compare ``attributes_hash``).
    fingerprint: tuple[Any, ...] | None
    state: CmabState


class _Slot:
    """The lock of one (user, rule) key, kept while anyone holds or waits for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


def _attribute_filter(config: ProjectConfig, experiment: ExperimentInfo) -> tuple[tuple[str, str], ...]:
    """((attribute id, attribute key), ...) for the ids the rule's ``cmab.attributeIds`` names that the datafile
    has, in that order."""
    keys_by_id = {attribute_id: key for key, attribute_id in config.attribute_ids.items()}
    ids = (experiment.cmab or {}).get("attributeIds") or ()
    return tuple((i, keys_by_id[i]) for i in ids if isinstance(i, str) and i in keys_by_id)


def _cache_key(user_id: str, experiment: ExperimentInfo) -> str:
    """The cache (and in-flight fetch) key of one user and rule; the length prefix keeps ids apart."""
    return f"{len(user_id)}-{user_id}-{experiment.id}"


def attributes_hash(filtered: Mapping[str, Any]) -> str:
    """The official cache fingerprint: MD5 of the JSON with sorted keys (so ``30`` and ``30.0`` differ)."""
    return hashlib.md5(json.dumps(filtered, sort_keys=True).encode()).hexdigest()


_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _fingerprint(filtered: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A cheap stand-in for :func:`attributes_hash` when every value is a plain str, int, bool, None or float:
    two such attribute sets have the same JSON text exactly when these tuples are equal (the type is part of it,
    so ``1``, ``True`` and ``1.0`` differ; a float counts by its ``repr``, as JSON writes it). None when a value
    is of another kind: then only the MD5 decides."""
    out: list[Any] = []
    for key, value in filtered.items():
        kind = type(value)
        if kind in _SCALARS:
            out += (key, kind, value)
        elif kind is float:
            out += (key, kind, repr(value))
        else:
            return None
    return tuple(out)


class CmabService:
    """The client's CMAB predictions: one cache and one prediction client, shared by decide and legacy calls."""

    def __init__(self, client: PredictionClient, *, cache_size: int, cache_ttl: float) -> None:
        self.client = client
        self.cache: TtlLruCache[str, _Entry] = TtlLruCache(cache_size, cache_ttl)
        self._slots: dict[str, _Slot] = {}
        # The attribute filters of the current config's CMAB rules (a weak reference: a replaced config must be
        # free to go).
        self._filters_of: weakref.ref[ProjectConfig] | None = None
        self._filters: dict[str, tuple[tuple[str, str], ...]] = {}

    def _filtered(
        self, config: ProjectConfig, experiment: ExperimentInfo, attributes: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self._filters_of is None or self._filters_of() is not config:
            self._filters_of = weakref.ref(config)
            self._filters = {}
        pairs = self._filters.get(experiment.id)
        if pairs is None:
            pairs = self._filters[experiment.id] = _attribute_filter(config, experiment)
        return {i: attributes[key] for i, key in pairs if key in attributes}

    # ------------------------------------------------------------------ predictions

    def cached(
        self,
        config: ProjectConfig,
        experiment: ExperimentInfo,
        user_id: str,
        attributes: Mapping[str, Any],
        options: CmabOptions,
    ) -> Prediction | None:
        """The hot path: the cached prediction when there is a fresh one for the same attributes, no option
        touches the cache and nobody is fetching for this user and rule; else None (then :meth:`predict`)."""
        if options.ignore_cmab_cache or options.reset_cmab_cache or options.invalidate_user_cmab_cache:
            return None
        key = _cache_key(user_id, experiment)
        if key in self._slots:
            return None
        entry = self.cache.lookup(key)
        if entry is None:
            return None
        try:
            filtered = self._filtered(config, experiment, attributes)
            fingerprint = _fingerprint(filtered)
            if fingerprint is None or entry.fingerprint is None:
                same = entry.attributes_hash == attributes_hash(filtered)
            else:
                same = entry.fingerprint == fingerprint
        except Exception:
            return None
        if not same:
            return None
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("CMAB cache hit for user '%s' and rule '%s'", user_id, experiment.id)
        return Prediction(entry.variation_id, entry.cmab_uuid, (), None, True, entry.state)

    async def predict(
        self,
        config: ProjectConfig,
        experiment: ExperimentInfo,
        user_id: str,
        attributes: Mapping[str, Any],
        options: CmabOptions,
    ) -> Prediction:
        """The prediction for this user and rule, from the cache or the endpoint; never raises."""
        hit = self.cached(config, experiment, user_id, attributes, options)
        if hit is not None:
            return hit
        key = _cache_key(user_id, experiment)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                return await self._predict(config, experiment, user_id, attributes, options, key)
        finally:
            slot.users -= 1
            if not slot.users:
                del self._slots[key]

    async def _predict(
        self,
        config: ProjectConfig,
        experiment: ExperimentInfo,
        user_id: str,
        attributes: Mapping[str, Any],
        options: CmabOptions,
        key: str,
    ) -> Prediction:
        rule = experiment.id
        reasons: list[str] = []

        def note(reason: str) -> None:
            _log.debug(reason)
            reasons.append(reason)

        try:
            filtered = self._filtered(config, experiment, attributes)
            if options.ignore_cmab_cache:
                # The official order: ignoring the cache returns at once, so the other two options do nothing.
                note(f"Ignoring CMAB cache for user '{user_id}' and rule '{rule}'")
                cmab_uuid = str(uuid.uuid4())
                variation_id = await self.client.fetch(rule, user_id, _body_attributes(filtered), cmab_uuid)
                return Prediction(variation_id, cmab_uuid, tuple(reasons))
            if options.reset_cmab_cache:
                note(f"Resetting CMAB cache for user '{user_id}' and rule '{rule}'")
                self.cache.reset()
            if options.invalidate_user_cmab_cache:
                note(f"Invalidating CMAB cache for user '{user_id}' and rule '{rule}'")
                self.cache.remove(key)
            entry = self.cache.lookup(key)
            fingerprint = attributes_hash(filtered)
            if entry is not None:
                if entry.attributes_hash == fingerprint:
                    note(f"CMAB cache hit for user '{user_id}' and rule '{rule}'")
                    return Prediction(entry.variation_id, entry.cmab_uuid, tuple(reasons), state=entry.state)
                note(f"CMAB cache attributes mismatch for user '{user_id}' and rule '{rule}', fetching new decision.")
                self.cache.remove(key)
            else:
                note(f"CMAB cache miss for user '{user_id}' and rule '{rule}'")
            cmab_uuid = str(uuid.uuid4())
            variation_id = await self.client.fetch(rule, user_id, _body_attributes(filtered), cmab_uuid)
            note(f"CMAB decision is {{'variation_id': {variation_id!r}, 'cmab_uuid': {cmab_uuid!r}}}")
            state = CmabState(cmab_uuid=cmab_uuid)
            self.cache.save(key, _Entry(fingerprint, variation_id, cmab_uuid, _fingerprint(filtered), state))
            return Prediction(variation_id, cmab_uuid, tuple(reasons), state=state)
        except Exception as exc:  # the cache reasons are dropped, as in the official SDK
            return Prediction(None, None, (), str(exc) or type(exc).__name__)

    # ------------------------------------------------------------------ resuming the engine

    async def resolve_flag(
        self,
        config: ProjectConfig,
        flag: FlagInfo,
        pending: Decision,
        user_id: str,
        attributes: Mapping[str, Any],
        forced: ForcedVariations,
        tracker: UserProfileTracker | None,
        reasons: list[str] | None,
        forced_decisions: ForcedDecisions | None,
        options: CmabOptions,
    ) -> Decision:
        """Finish a flag decision that stopped at a CMAB rule: predict, then take the variation or go on with
        the next rules. A failed prediction gives a decision with ``error_reasons`` (the flag's error decision)."""
        known: dict[str, Prediction] = {}  # the predictions of this walk, for _replay
        decision = pending
        while decision.pending:
            experiment = decision.experiment
            assert isinstance(experiment, ExperimentInfo)
            prediction = self.cached(config, experiment, user_id, attributes, options)
            if prediction is None:
                prediction = await self.predict(config, experiment, user_id, attributes, options)
            if prediction.variation_id is None:
                message = CMAB_FAILED.format(experiment.key)
                _log.error("%s %s", message, prediction.error)
                explained = self._replay(config, flag, user_id, attributes, forced, tracker, forced_decisions, known)
                explained.append(message)
                return Decision(experiment, None, FEATURE_TEST, cmab=CmabState(error_reasons=tuple(explained)))
            known[experiment.id] = prediction
            if reasons is not None:
                reasons.extend(prediction.reasons_for(user_id, experiment.id))
            variation = finish_cmab(experiment, prediction.variation_id, user_id, reasons)
            if variation is not None:
                state = prediction.state or CmabState(cmab_uuid=prediction.cmab_uuid)
                return Decision(experiment, variation, FEATURE_TEST, decision.holdout, state)
            decision = decide_flag(
                config, flag, user_id, attributes, forced, tracker, reasons, forced_decisions, resume=decision
            )
        return decision

    def _replay(
        self,
        config: ProjectConfig,
        flag: FlagInfo,
        user_id: str,
        attributes: Mapping[str, Any],
        forced: ForcedVariations,
        tracker: UserProfileTracker | None,
        forced_decisions: ForcedDecisions | None,
        known: Mapping[str, Prediction],
    ) -> list[str]:
        """The reasons of the flag's walk up to the failed rule, which the error decision always carries.

        The engine is pure, so walking the flag again with a list (and the predictions already had) gives
        exactly the reasons of the first walk, which may have collected none. Only the error path pays for it.
        """
        explained: list[str] = []
        decision = decide_flag(config, flag, user_id, attributes, forced, tracker, explained, forced_decisions)
        while decision.pending and isinstance(decision.experiment, ExperimentInfo):
            prediction = known.get(decision.experiment.id)
            if prediction is None or prediction.variation_id is None:
                break
            explained.extend(prediction.reasons_for(user_id, decision.experiment.id))
            finish_cmab(decision.experiment, prediction.variation_id, user_id, explained)
            decision = decide_flag(
                config, flag, user_id, attributes, forced, tracker, explained, forced_decisions, resume=decision
            )
        return explained

    async def resolve_experiment(
        self, config: ProjectConfig, experiment: ExperimentInfo, user_id: str, attributes: Mapping[str, Any]
    ) -> VariationInfo | None:
        """The legacy ``get_variation`` / ``activate`` answer for a user inside a CMAB experiment's traffic."""
        prediction = await self.predict(config, experiment, user_id, attributes, NO_CMAB_OPTIONS)
        if prediction.variation_id is None:
            _log.error("%s %s", CMAB_FAILED.format(experiment.key), prediction.error)
            return None
        return finish_cmab(experiment, prediction.variation_id, user_id, None)

    async def aclose(self) -> None:
        await self.client.aclose()


def _body_attributes(filtered: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"id": key, "value": value, "type": "custom_attribute"} for key, value in filtered.items()]
