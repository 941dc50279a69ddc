"""The decision methods of the official API (experiments, forced variations, feature flags and variables).

``DecisionMethods`` is a mixin of ``AsyncOptimizely``: it holds the input
checks, the DECISION notifications and the impressions of each method, and leaves the deciding to the pure
engine in ``optimizely_async.decision``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from ._logging import sdk_logger
from ._validation import NOT_READY, attributes_ok, invalid_input, is_non_empty_str, plain
from .cmab import NO_CMAB_OPTIONS, CmabService
from .config.project_config import (
    ExperimentInfo,
    FlagInfo,
    HoldoutInfo,
    ProjectConfig,
    VariableInfo,
    VariationInfo,
)
from .config.project_config import (
    typed_value as _typed,
)
from .decision.engine import FEATURE_TEST, HOLDOUT, ROLLOUT, CmabPending, Decision, decide_flag, experiment_decision
from .decision.user_profile import UserProfileService, UserProfileTracker, load_profile, save_profile
from .notifications import NotificationCenter, NotificationType

__all__ = ["DecisionMethods"]

_log = sdk_logger()
_DECISION: Final = NotificationType.DECISION
_NO_VARIABLE: Final = object()


def _feature_enabled(variation: VariationInfo | None) -> bool:
    return variation is not None and bool(variation.feature_enabled)


class DecisionMethods:
    """get_variation, activate, forced variations, is_feature_enabled, get_enabled_features and the variables."""

    _config: ProjectConfig | None
    _forced: dict[str, dict[str, str]]
    _ups: UserProfileService | None
    _cmab: CmabService
    notification_center: NotificationCenter

    if TYPE_CHECKING:

        async def _send_impression(
            self,
            config: ProjectConfig,
            experiment: ExperimentInfo | HoldoutInfo | None,
            variation: VariationInfo | None,
            flag_key: str,
            rule_key: str,
            rule_type: str,
            enabled: bool,
            user_id: str,
            attributes: dict[str, Any] | None,
            cmab_uuid: str | None = None,
        ) -> None: ...

    def _usable_config(self, method: str) -> ProjectConfig | None:
        config = self._config
        if config is None:
            _log.error(NOT_READY.format(method))
        return config

    def _checked_flag(
        self,
        config: ProjectConfig | None,
        feature_key: object,
        user_id: object,
        attributes: object,
        variable_key: object = _NO_VARIABLE,
    ) -> FlagInfo | None:
        """The official input checks of the flag methods, in their order; the flag, or None (logged)."""
        if config is None:
            return None
        if not is_non_empty_str(feature_key):
            invalid_input("feature_key")
            return None
        if variable_key is not _NO_VARIABLE and not is_non_empty_str(variable_key):
            invalid_input("variable_key")
            return None
        if not isinstance(user_id, str):
            invalid_input("user_id")
            return None
        if not attributes_ok(attributes):
            return None
        flag: FlagInfo | None = config.flags_by_key.get(feature_key)  # type: ignore[call-overload]
        if flag is None:
            _log.error('Feature "%s" is not in datafile.', feature_key)
        return flag

    # ------------------------------------------------------------------ experiments

    async def activate(self, experiment_key: str, user_id: str, attributes: dict[str, Any] | None = None) -> str | None:
        """Decide the user's variation and send an impression; returns the variation key or None."""
        experiment_key, user_id = plain(experiment_key), plain(user_id)
        try:
            config = self._usable_config("activate")
            if config is None:
                return None
            if not is_non_empty_str(experiment_key):
                invalid_input("experiment_key")
                return None
            if not isinstance(user_id, str):
                invalid_input("user_id")
                return None
            variation = await self._get_variation(config, experiment_key, user_id, attributes)
            if variation is None:
                _log.debug('Not activating user "%s".', user_id)
                return None
            experiment = config.experiments_by_key[experiment_key]
            _log.debug('Activating user "%s" in experiment "%s".', user_id, experiment.key)
            await self._send_impression(
                config, experiment, variation, "", experiment.key, "experiment", True, user_id, attributes
            )
            return variation.key
        except Exception:
            _log.exception('Unexpected error in activate("%s").', experiment_key)
            return None

    async def get_variation(
        self, experiment_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> str | None:
        """The variation key the user is bucketed into, or None. Sends no event."""
        experiment_key, user_id = plain(experiment_key), plain(user_id)
        try:
            config = self._usable_config("get_variation")
            if config is None:
                return None
            if not is_non_empty_str(experiment_key):
                invalid_input("experiment_key")
                return None
            if not isinstance(user_id, str):
                invalid_input("user_id")
                return None
            variation = await self._get_variation(config, experiment_key, user_id, attributes)
            return variation.key if variation is not None else None
        except Exception:
            _log.exception('Unexpected error in get_variation("%s").', experiment_key)
            return None

    async def _get_variation(
        self, config: ProjectConfig, experiment_key: str, user_id: str, attributes: dict[str, Any] | None
    ) -> VariationInfo | None:
        experiment = config.experiments_by_key.get(experiment_key)
        if experiment is None:
            _log.error('Experiment key "%s" is not in datafile.', experiment_key)
            _log.debug('Experiment key "%s" is invalid. Not activating user "%s".', experiment_key, user_id)
            return None
        if not attributes_ok(attributes):
            return None
        attrs = attributes or {}
        if self._ups is None:
            outcome = experiment_decision(config, experiment, user_id, attrs, self._forced, None)
        else:
            tracker = await load_profile(self._ups, user_id)
            outcome = experiment_decision(config, experiment, user_id, attrs, self._forced, tracker)
            await save_profile(self._ups, tracker)
        if isinstance(outcome, CmabPending):
            variation = await self._cmab.resolve_experiment(config, experiment, user_id, attrs)
        else:
            variation = outcome
        if self.notification_center.has_listeners(_DECISION):
            await self.notification_center.send_notifications(
                _DECISION,
                "feature-test" if experiment.id in config.experiment_flags else "ab-test",
                user_id,
                attrs,
                {"experiment_key": experiment_key, "variation_key": variation.key if variation else None},
            )
        return variation

    # ------------------------------------------------------------------ forced variations

    def set_forced_variation(self, experiment_key: str, user_id: str, variation_key: str | None) -> bool:
        """Force (or with None, unforce) a user into a variation of an experiment."""
        # Plain copies: a str subclass stored in the forced map could break every later look-up for its user.
        experiment_key, user_id, variation_key = plain(experiment_key), plain(user_id), plain(variation_key)
        try:
            config = self._usable_config("set_forced_variation")
            if config is None:
                return False
            if not is_non_empty_str(experiment_key):
                invalid_input("experiment_key")
                return False
            if not isinstance(user_id, str):
                invalid_input("user_id")
                return False
            experiment = config.experiments_by_key.get(experiment_key)
            if experiment is None:
                _log.error('Experiment key "%s" is not in datafile.', experiment_key)
                return False
            if variation_key is None:
                by_experiment = self._forced.get(user_id)
                if by_experiment is not None and by_experiment.pop(experiment.id, None) is not None:
                    _log.debug(
                        'Variation mapped to experiment "%s" has been removed for user "%s".',
                        experiment_key,
                        user_id,
                    )
                return True
            if not is_non_empty_str(variation_key):
                _log.debug("Variation key is invalid.")
                return False
            variation = experiment.variations_by_key.get(variation_key)
            if variation is None:
                _log.error('Variation key "%s" is not in datafile.', variation_key)
                return False
            self._forced.setdefault(user_id, {})[experiment.id] = variation.id
            _log.debug(
                'Set variation "%s" for experiment "%s" and user "%s" in the forced variation map.',
                variation.id,
                experiment.id,
                user_id,
            )
            return True
        except Exception:
            _log.exception("Unexpected error in set_forced_variation.")
            return False

    def get_forced_variation(self, experiment_key: str, user_id: str) -> str | None:
        """The variation key forced with ``set_forced_variation``, or None."""
        experiment_key, user_id = plain(experiment_key), plain(user_id)
        try:
            config = self._usable_config("get_forced_variation")
            if config is None:
                return None
            if not is_non_empty_str(experiment_key):
                invalid_input("experiment_key")
                return None
            if not isinstance(user_id, str):
                invalid_input("user_id")
                return None
            by_experiment = self._forced.get(user_id)
            if by_experiment is None:
                return None
            experiment = config.experiments_by_key.get(experiment_key)
            if experiment is None:
                _log.error('Experiment key "%s" is not in datafile.', experiment_key)
                return None
            variation_id = by_experiment.get(experiment.id)
            if variation_id is None:
                return None
            variation = experiment.variations_by_id.get(variation_id)
            return variation.key if variation is not None else None
        except Exception:
            _log.exception("Unexpected error in get_forced_variation.")
            return None

    # ------------------------------------------------------------------ feature flags

    async def _decide_flag(
        self, config: ProjectConfig, flag: FlagInfo, user_id: str, attrs: dict[str, Any]
    ) -> Decision:
        tracker: UserProfileTracker | None = None
        if self._ups is not None:
            tracker = await load_profile(self._ups, user_id)
        decision = decide_flag(config, flag, user_id, attrs, self._forced, tracker)
        if decision.pending:
            decision = await self._cmab.resolve_flag(
                config, flag, decision, user_id, attrs, self._forced, tracker, None, None, NO_CMAB_OPTIONS
            )
        if tracker is not None:
            await save_profile(self._ups, tracker)
        return decision

    async def is_feature_enabled(
        self, feature_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> bool:
        """Whether the flag is on for the user; sends the impression the official SDK sends."""
        feature_key, user_id = plain(feature_key), plain(user_id)
        try:
            config = self._usable_config("is_feature_enabled")
            flag = self._checked_flag(config, feature_key, user_id, attributes)
            if config is None or flag is None:
                return False
            return await self._is_feature_enabled(config, flag, user_id, attributes)
        except Exception:
            _log.exception('Unexpected error in is_feature_enabled("%s").', feature_key)
            return False

    async def _is_feature_enabled(
        self, config: ProjectConfig, flag: FlagInfo, user_id: str, attributes: dict[str, Any] | None
    ) -> bool:
        attrs = attributes or {}
        decision = await self._decide_flag(config, flag, user_id, attrs)
        variation = decision.variation
        experiment = decision.experiment
        source = decision.source
        enabled = variation is not None and variation.feature_enabled is True
        if (source == ROLLOUT or variation is None) and config.send_flag_decisions:
            await self._send_impression(
                config,
                experiment,
                variation,
                flag.key,
                experiment.key if experiment else "",
                source,
                enabled,
                user_id,
                attributes,
            )
        source_info: dict[str, Any] = {}
        if source == FEATURE_TEST and variation is not None and experiment is not None:
            source_info = {"experiment_key": experiment.key, "variation_key": variation.key}
            await self._send_impression(
                config,
                experiment,
                variation,
                flag.key,
                experiment.key,
                source,
                enabled,
                user_id,
                attributes,
                decision.cmab_uuid,
            )
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                'Feature "%s" is %s for user "%s".',
                flag.key,
                "enabled" if enabled else "not enabled",
                user_id,
            )
        if self.notification_center.has_listeners(_DECISION):
            await self.notification_center.send_notifications(
                _DECISION,
                "feature",
                user_id,
                attrs,
                {
                    "feature_key": flag.key,
                    "feature_enabled": enabled,
                    "source": source,
                    "source_info": source_info,
                },
            )
        return enabled

    async def get_enabled_features(self, user_id: str, attributes: dict[str, Any] | None = None) -> list[str]:
        """Keys of every flag enabled for the user (each decided as ``is_feature_enabled`` does)."""
        enabled: list[str] = []
        user_id = plain(user_id)
        try:
            config = self._usable_config("get_enabled_features")
            if config is None:
                return enabled
            if not isinstance(user_id, str):
                invalid_input("user_id")
                return enabled
            if not attributes_ok(attributes):
                return enabled
            for flag in config.flags_by_key.values():
                if await self._is_feature_enabled(config, flag, user_id, attributes):
                    enabled.append(flag.key)
        except Exception:
            _log.exception("Unexpected error in get_enabled_features.")
        return enabled

    async def get_feature_variable(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> Any:
        """A variable's value for the user, typed by its declared type."""
        return await self._get_feature_variable(feature_key, variable_key, None, user_id, attributes)

    async def get_feature_variable_boolean(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> bool | None:
        """A ``boolean`` variable's value for the user; None if the variable is of another type or unknown."""
        return await self._get_feature_variable(  # type: ignore[no-any-return]
            feature_key, variable_key, "boolean", user_id, attributes
        )

    async def get_feature_variable_double(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> float | None:
        """A ``double`` variable's value for the user; None if the variable is of another type or unknown."""
        return await self._get_feature_variable(  # type: ignore[no-any-return]
            feature_key, variable_key, "double", user_id, attributes
        )

    async def get_feature_variable_integer(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> int | None:
        """An ``integer`` variable's value for the user; None if the variable is of another type or unknown."""
        return await self._get_feature_variable(  # type: ignore[no-any-return]
            feature_key, variable_key, "integer", user_id, attributes
        )

    async def get_feature_variable_string(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> str | None:
        """A ``string`` variable's value for the user; None if the variable is of another type or unknown."""
        return await self._get_feature_variable(  # type: ignore[no-any-return]
            feature_key, variable_key, "string", user_id, attributes
        )

    async def get_feature_variable_json(
        self, feature_key: str, variable_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> Any:
        """A ``json`` variable's value for the user, parsed (a dict); None if the variable is of another type or
        unknown."""
        return await self._get_feature_variable(feature_key, variable_key, "json", user_id, attributes)

    async def _get_feature_variable(
        self,
        feature_key: str,
        variable_key: str,
        variable_type: str | None,
        user_id: str,
        attributes: dict[str, Any] | None,
    ) -> Any:
        feature_key, variable_key, user_id = plain(feature_key), plain(variable_key), plain(user_id)
        try:
            config = self._usable_config("get_feature_variable")
            flag = self._checked_flag(config, feature_key, user_id, attributes, variable_key)
            if config is None or flag is None:
                return None
            variable = flag.variables.get(variable_key)
            if variable is None:
                _log.error('Variable with key "%s" not found in the datafile.', variable_key)
                return None
            variable_type = variable_type or variable.type
            if variable.type != variable_type:
                _log.warning(
                    'Requested variable type "%s", but variable is of type "%s". Use correct API to retrieve '
                    "value. Returning None.",
                    variable_type,
                    variable.type,
                )
                return None
            attrs = attributes or {}
            decision = await self._decide_flag(config, flag, user_id, attrs)
            return await self._variable_result(config, flag, variable, decision, user_id, attrs)
        except Exception:
            _log.exception('Unexpected error in get_feature_variable("%s", "%s").', feature_key, variable_key)
            return None

    async def _variable_result(
        self,
        config: ProjectConfig,
        flag: FlagInfo,
        variable: VariableInfo,
        decision: Decision,
        user_id: str,
        attrs: dict[str, Any],
    ) -> Any:
        variation = decision.variation
        enabled = _feature_enabled(variation)
        raw: str | None = variable.value  # the default
        if variation is not None:
            if enabled:
                raw = config.variable_value(variable, variation)
                _log.debug(
                    'Got variable value "%s" for variable "%s" of feature flag "%s".',
                    raw,
                    variable.key,
                    flag.key,
                )
            else:
                _log.debug(
                    'Feature "%s" is not enabled for user "%s". Returning the default variable value "%s".',
                    flag.key,
                    user_id,
                    raw,
                )
        else:
            _log.debug(
                'User "%s" is not in any variation or rollout rule. Returning default value for variable '
                '"%s" of feature flag "%s".',
                user_id,
                variable.key,
                flag.key,
            )
        value = _typed(raw, variable.type)
        if self.notification_center.has_listeners(_DECISION):
            source_info: dict[str, Any] = {}
            if decision.source in (FEATURE_TEST, HOLDOUT):
                source_info = {
                    "experiment_key": decision.experiment.key if decision.experiment else None,
                    "variation_key": variation.key if variation else None,
                }
            await self.notification_center.send_notifications(
                _DECISION,
                "feature-variable",
                user_id,
                attrs,
                {
                    "feature_key": flag.key,
                    "feature_enabled": enabled,
                    "source": decision.source,
                    "variable_key": variable.key,
                    "variable_value": value,
                    "variable_type": variable.type,
                    "source_info": source_info,
                },
            )
        return value

    async def get_all_feature_variables(
        self, feature_key: str, user_id: str, attributes: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Every variable of the flag for the user, typed; None for an unknown flag."""
        feature_key, user_id = plain(feature_key), plain(user_id)
        try:
            config = self._usable_config("get_all_feature_variables")
            flag = self._checked_flag(config, feature_key, user_id, attributes)
            if config is None or flag is None:
                return None
            attrs = attributes or {}
            decision = await self._decide_flag(config, flag, user_id, attrs)
            variation = decision.variation
            enabled = _feature_enabled(variation)
            values = config.flag_variables(flag, variation)
            if self.notification_center.has_listeners(_DECISION):
                source_info: dict[str, Any] = {}
                if decision.source == FEATURE_TEST:
                    source_info = {
                        "experiment_key": decision.experiment.key if decision.experiment else None,
                        "variation_key": variation.key if variation else None,
                    }
                await self.notification_center.send_notifications(
                    _DECISION,
                    "all-feature-variables",
                    user_id,
                    attrs,
                    {
                        "feature_key": flag.key,
                        "feature_enabled": enabled,
                        "variable_values": values,
                        "source": decision.source,
                        "source_info": source_info,
                    },
                )
            return values
        except Exception:
            _log.exception('Unexpected error in get_all_feature_variables("%s").', feature_key)
            return None
