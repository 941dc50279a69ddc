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

from .._ttl_cache import TtlLruCache
from ..config.project_config import ExperimentInfo, FlagInfo, ProjectConfig, VariationInfo
from ..decision.engine import (
    CMAB_FAILED,
    FEATURE_TEST,
    Decision,
    ForcedDecisions,
    ForcedVariations,
    decide_flag,
    finish_cmab,
)
from ..decision.user_profile import UserProfileTracker
from .client import PredictionClient

__all__ = ["NO_CMAB_OPTIONS", "CmabOptions", "CmabService", "Prediction"]

_log = logging.getLogger("optimizely_async")


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


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prediction for (user, rule): the variation id and its uuid, or the error that stopped it."""

    variation_id: str | None
    cmab_uuid: str | None
    #: The official cache reasons, in order (empty unless asked for).
    reasons: tuple[str, ...] = ()
    #: Why no prediction could be had (the official error text); None on success.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    attributes_hash: str
    variation_id: str
    cmab_uuid: str


class _Slot:
    """The lock of one (user, rule) key, kept while anyone holds or waits for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


#: config -> experiment id -> ((attribute id, attribute key), ...) for the attributes its prediction uses.
_FILTERS: weakref.WeakKeyDictionary[ProjectConfig, dict[str, tuple[tuple[str, str], ...]]] = weakref.WeakKeyDictionary()


def _attribute_filter(config: ProjectConfig, experiment: ExperimentInfo) -> tuple[tuple[str, str], ...]:
    by_experiment = _FILTERS.get(config)
    if by_experiment is None:
        by_experiment = _FILTERS[config] = {}
    found = by_experiment.get(experiment.id)
    if found is None:
        keys_by_id = {attribute_id: key for key, attribute_id in config.attribute_ids.items()}
        ids = (experiment.cmab or {}).get("attributeIds") or ()
        found = tuple((i, keys_by_id[i]) for i in ids if isinstance(i, str) and i in keys_by_id)
        by_experiment[experiment.id] = found
    return found


def filtered_attributes(
    config: ProjectConfig, experiment: ExperimentInfo, attributes: Mapping[str, Any]
) -> dict[str, Any]:
    """The user's attributes that the rule's ``cmab.attributeIds`` name, keyed by attribute id, in that order."""
    return {i: attributes[key] for i, key in _attribute_filter(config, experiment) if key in attributes}


def attributes_hash(filtered: Mapping[str, Any]) -> str:
    """The official cache fingerprint: MD5 of the JSON with sorted keys (so ``30`` and ``30.0`` differ)."""
    return hashlib.md5(json.dumps(filtered, sort_keys=True).encode()).hexdigest()


class CmabService:
    """The client's CMAB predictions: one cache and one prediction client, shared by decide and legacy calls."""

    def __init__(self, client: PredictionClient, *, cache_size: int, cache_ttl: float) -> None:
        self.client = client
        self.cache: TtlLruCache[str, _Entry] = TtlLruCache(cache_size, cache_ttl)
        self._slots: dict[str, _Slot] = {}

    # ------------------------------------------------------------------ predictions

    async def predict(
        self,
        config: ProjectConfig,
        experiment: ExperimentInfo,
        user_id: str,
        attributes: Mapping[str, Any],
        options: CmabOptions,
        want_reasons: bool,
    ) -> Prediction:
        """The prediction for this user and rule, from the cache or the endpoint; never raises."""
        key = f"{len(user_id)}-{user_id}-{experiment.id}"
        if (
            key not in self._slots
            and not options.ignore_cmab_cache
            and not options.reset_cmab_cache
            and not options.invalidate_user_cmab_cache
        ):
            # The hot path: a fresh cache entry for the same attributes, nobody fetching it; no await.
            entry = self.cache.lookup(key)
            if entry is not None:
                try:
                    same = entry.attributes_hash == attributes_hash(filtered_attributes(config, experiment, attributes))
                except Exception:
                    same = False
                if same:
                    reasons: tuple[str, ...] = ()
                    if want_reasons or _log.isEnabledFor(logging.DEBUG):
                        reason = f"CMAB cache hit for user '{user_id}' and rule '{experiment.id}'"
                        _log.debug(reason)
                        reasons = (reason,)
                    return Prediction(entry.variation_id, entry.cmab_uuid, reasons)
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
            filtered = filtered_attributes(config, experiment, attributes)
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
                    return Prediction(entry.variation_id, entry.cmab_uuid, tuple(reasons))
                note(f"CMAB cache attributes mismatch for user '{user_id}' and rule '{rule}', fetching new decision.")
                self.cache.remove(key)
            else:
                note(f"CMAB cache miss for user '{user_id}' and rule '{rule}'")
            cmab_uuid = str(uuid.uuid4())
            variation_id = await self.client.fetch(rule, user_id, _body_attributes(filtered), cmab_uuid)
            note(f"CMAB decision is {{'variation_id': {variation_id!r}, 'cmab_uuid': {cmab_uuid!r}}}")
            self.cache.save(key, _Entry(fingerprint, variation_id, cmab_uuid))
            return Prediction(variation_id, cmab_uuid, tuple(reasons))
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
        known: dict[str, Prediction] = {}
        decision = pending
        while decision.pending:
            experiment = decision.experiment
            assert isinstance(experiment, ExperimentInfo)
            # Reasons are always kept here: an error on a later CMAB rule replays them (see _replay).
            prediction = await self.predict(config, experiment, user_id, attributes, options, True)
            if prediction.variation_id is None:
                message = CMAB_FAILED.format(experiment.key)
                _log.error("%s %s", message, prediction.error)
                explained = self._replay(config, flag, user_id, attributes, forced, tracker, forced_decisions, known)
                explained.append(message)
                return Decision(experiment, None, FEATURE_TEST, error_reasons=tuple(explained))
            known[experiment.id] = prediction
            if reasons is not None:
                reasons.extend(prediction.reasons)
            variation = finish_cmab(experiment, prediction.variation_id, user_id, reasons)
            if variation is not None:
                return Decision(experiment, variation, FEATURE_TEST, decision.holdout, prediction.cmab_uuid)
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
            explained.extend(prediction.reasons)
            finish_cmab(decision.experiment, prediction.variation_id, user_id, explained)
            decision = decide_flag(
                config, flag, user_id, attributes, forced, tracker, explained, forced_decisions, resume=decision
            )
        return explained

    async def resolve_experiment(
        self, config: ProjectConfig, experiment: ExperimentInfo, user_id: str, attributes: Mapping[str, Any]
    ) -> VariationInfo | None:
        """The legacy ``get_variation`` / ``activate`` answer for a user inside a CMAB experiment's traffic."""
        prediction = await self.predict(config, experiment, user_id, attributes, NO_CMAB_OPTIONS, False)
        if prediction.variation_id is None:
            _log.error("%s %s", CMAB_FAILED.format(experiment.key), prediction.error)
            return None
        return finish_cmab(experiment, prediction.variation_id, user_id, None)

    async def aclose(self) -> None:
        await self.client.aclose()


def _body_attributes(filtered: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"id": key, "value": value, "type": "custom_attribute"} for key, value in filtered.items()]
