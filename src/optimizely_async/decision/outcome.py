"""What the decision engine answers: a :class:`Decision` (or :class:`CmabPending` for one experiment), and the
names of its sources and of the bucketing-id attribute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..config.project_config import ExperimentInfo, HoldoutInfo, VariationInfo

__all__ = [
    "BUCKETING_ID_ATTRIBUTE",
    "CMAB_FAILED",
    "EXPERIMENT",
    "FEATURE_TEST",
    "HOLDOUT",
    "NO_ROLLOUT_DECISION",
    "PENDING",
    "ROLLOUT",
    "CmabPending",
    "CmabState",
    "Decision",
    "ForcedDecisions",
    "ForcedVariations",
]

EXPERIMENT: Final = "experiment"
FEATURE_TEST: Final = "feature-test"
ROLLOUT: Final = "rollout"
HOLDOUT: Final = "holdout"

BUCKETING_ID_ATTRIBUTE: Final = "$opt_bucketing_id"

#: user id -> experiment id -> variation id (``set_forced_variation``)
ForcedVariations = Mapping[str, Mapping[str, str]]
#: (flag key, rule key or None) -> variation key (user-context forced decisions)
ForcedDecisions = Mapping[tuple[str, "str | None"], "str | None"]


@dataclass(frozen=True, slots=True)
class CmabState:
    """The CMAB side of a :class:`Decision` (kept apart so that every other decision stays four fields)."""

    #: ``experiment`` is a CMAB rule the user is in and its prediction is still to be fetched: the async shell
    #: fetches it and resumes with ``decide_flag(..., resume=this decision)``.
    pending: bool = False
    #: The prediction's id, for a variation a CMAB prediction chose (it goes into the impression).
    cmab_uuid: str | None = None
    #: Set when the prediction could not be had: the flag's error decision carries these reasons.
    error_reasons: tuple[str, ...] | None = None


PENDING: Final = CmabState(pending=True)


@dataclass(slots=True)
class Decision:
    """What a flag decision found. ``experiment`` is the rule (or holdout) that decided.

    Never changed once built, but not frozen: every decide builds one, and a frozen dataclass takes 0.4 µs
    longer to build (its ``__init__`` goes through ``object.__setattr__``).
    """

    experiment: ExperimentInfo | HoldoutInfo | None
    variation: VariationInfo | None
    source: str
    #: A global holdout hit that excludes targeted deliveries: decide sends its impression too.
    holdout: Decision | None = None
    #: Set for CMAB rules only (see :class:`CmabState`).
    cmab: CmabState | None = None

    @property
    def pending(self) -> bool:
        """Stopped at a CMAB rule whose prediction is still to be fetched."""
        cmab = self.cmab
        return cmab is not None and cmab.pending

    @property
    def cmab_uuid(self) -> str | None:
        cmab = self.cmab
        return cmab.cmab_uuid if cmab is not None else None

    @property
    def error_reasons(self) -> tuple[str, ...] | None:
        """The reasons of the flag's error decision, when a CMAB prediction could not be had; else None."""
        cmab = self.cmab
        return cmab.error_reasons if cmab is not None else None


@dataclass(frozen=True, slots=True)
class CmabPending:
    """``decide_experiment``'s answer for a user inside a CMAB rule's traffic: a prediction is needed."""

    experiment: ExperimentInfo


#: The reason the official SDK gives when a CMAB prediction cannot be had.
CMAB_FAILED: Final = "Failed to fetch CMAB data for experiment {}."


NO_ROLLOUT_DECISION: Final = Decision(None, None, ROLLOUT)
