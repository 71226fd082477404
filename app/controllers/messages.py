"""Events and command verdicts of the control core (frozen, slotted dataclasses).

Events are published on the :class:`~app.controllers.events.EventBus` in the control context and
carry past-tense names. Verdicts are what command futures resolve to: a command never raises for a
refusal (permission, state, safety); the verdict says why. Shared domain types (``ModeChanged``,
``ConnectionChanged``, ``Recommendation``, ``Decision``...) live in :mod:`app.domain`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from app.agent_runtime.fallback import FallbackState
from app.controllers.safety import Layer, Verdict
from app.domain import (
    AgentVersion,
    Decision,
    Mode,
    Origin,
    Recommendation,
    RecommendationState,
    Setpoint,
    TagId,
    utc_now,
)
from app.drivers.base import TagWriteResult

# --- writes ----------------------------------------------------------------------------------------


class WriteOutcomeKind(enum.StrEnum):
    """How a write request ended."""

    CONFIRMED = "confirmed"
    """Every setpoint was written (ramped if needed) and reads back as requested."""
    REJECTED = "rejected"
    """The safety envelope refused the request; nothing was written."""
    FAILED = "failed"
    """The PLC refused a value, the readback differs, the link failed, or the ramp was stopped."""
    AUDIT_FAILED = "audit_failed"
    """The ledger could not record the request, so nothing was written."""
    NOT_ACCEPTED = "not_accepted"
    """The core is stopping or not connected to the PLC; nothing was written."""
    CANCELLED = "cancelled"
    """Superseded by a newer write of the same tag, or stopped by a hand-back or shutdown."""


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The answer to ``PlantController.request_write``.

    Attributes:
        request_id: Id of the request (also in its ledger records).
        setpoints: What was requested.
        origin: Who asked.
        kind: How it ended.
        reason: Why it did not confirm ("" when confirmed).
        verdicts: The envelope's verdict per setpoint (empty if the check never ran).
        results: The driver's result of the final write per setpoint (empty if none).
        rejected_layer: The envelope layer that rejected it, if rejected.
    """

    request_id: str
    setpoints: tuple[Setpoint, ...]
    origin: Origin
    kind: WriteOutcomeKind
    reason: str = ""
    verdicts: tuple[Verdict, ...] = ()
    results: tuple[TagWriteResult, ...] = ()
    rejected_layer: Layer | None = None

    @property
    def ok(self) -> bool:
        """True if every setpoint was confirmed by readback."""
        return self.kind is WriteOutcomeKind.CONFIRMED


@dataclass(frozen=True, slots=True)
class WriteCompleted:
    """A write request ended (confirmed or failed after it passed the envelope)."""

    outcome: WriteOutcome
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class WriteRejected:
    """The safety envelope (or the audit trail) refused a write request."""

    outcome: WriteOutcome
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class InputsChanged:
    """The set of plant inputs that may not be acted on changed.

    Attributes:
        unusable: Tag → reason (quality or ``stale``) for every unusable tag; empty when all good.
    """

    unusable: tuple[tuple[TagId, str], ...]
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class SupervisionChanged:
    """The PLC's supervisory handshake changed (``supervisory_active`` / ``watchdog_tripped``)."""

    requested: bool
    active: bool
    watchdog_tripped: bool
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """The core's own health changed; the heartbeat is written only while healthy."""

    healthy: bool
    reasons: tuple[str, ...]
    at: datetime = field(default_factory=utc_now)


# --- agent -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecommendationReady:
    """An agent proposed setpoints for an operator to decide on."""

    recommendation: Recommendation
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class RecommendationUpdated:
    """A recommendation changed state (decided, expired, applied, confirmed, failed)."""

    recommendation: Recommendation
    detail: str = ""
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class DecisionRecorded:
    """A decision on a recommendation was stored in the ledger."""

    decision: Decision
    agent: AgentVersion
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class ProposalRejected:
    """The envelope refused an agent's proposal before it reached an operator or the PLC."""

    agent: AgentVersion
    setpoints: tuple[Setpoint, ...]
    layer: Layer
    reason: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class AgentAbstained:
    """The agent's action was not used automatically (uncertainty or OOD above the limit)."""

    agent: AgentVersion
    reason: str
    uncertainty: float | None
    ood_score: float | None
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class StepSkipped:
    """An agent step did not run (previous inference still running, no agent, inputs bad...)."""

    reason: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class DeadlineMissed:
    """An inference job did not answer within ``inference_deadline_s``."""

    agent: AgentVersion | None
    deadline_s: float
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class FallbackChanged:
    """The fallback chain moved (who provides the setpoints)."""

    old: FallbackState
    new: FallbackState
    reason: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class AgentSwapped:
    """The agent slots changed: load, promotion or rollback."""

    kind: str
    """``load``, ``promote`` or ``rollback``."""
    active: AgentVersion | None
    previous: AgentVersion | None
    candidate: AgentVersion | None
    reason: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class RollbackTriggered:
    """An automatic rollback trigger fired on a newly promoted agent (or a supervisor forced one)."""

    trigger: str
    """``supervisor``, ``cusum_sec``, ``constraint_hits``, ``abstention`` or ``operator_rejections``."""
    agent: AgentVersion | None
    reason: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class AlarmChanged:
    """An alarm point changed state (one per alarm journal entry)."""

    alarm_id: str
    old_state: str
    new_state: str
    active: bool
    note: str
    at: datetime = field(default_factory=utc_now)


# --- command verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModeVerdict:
    """Answer to a mode request.

    Attributes:
        accepted: True if the mode is now ``mode``.
        mode: The mode after the request.
        reason: Why it was refused, or what happened.
    """

    accepted: bool
    mode: Mode
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DecisionVerdict:
    """Answer to approve / modify / reject.

    Attributes:
        accepted: True if the decision was recorded.
        rec_id: The recommendation.
        state: Its state after the command (after the write, for approve and modify).
        reason: Why the command was refused or the write failed.
        write: The write outcome (approve and modify).
    """

    accepted: bool
    rec_id: str
    state: RecommendationState | None
    reason: str = ""
    write: WriteOutcome | None = None


@dataclass(frozen=True, slots=True)
class SwapVerdict:
    """Answer to load / promote / rollback commands.

    Attributes:
        accepted: True if the slots changed as asked.
        kind: ``load``, ``promote`` or ``rollback``.
        reason: Why it was refused, or the reason recorded.
        active: Active agent afterwards.
        previous: Previous agent afterwards.
        candidate: Candidate afterwards.
    """

    accepted: bool
    kind: str
    reason: str
    active: AgentVersion | None = None
    previous: AgentVersion | None = None
    candidate: AgentVersion | None = None


__all__ = [
    "AgentAbstained",
    "AgentSwapped",
    "AlarmChanged",
    "DeadlineMissed",
    "DecisionRecorded",
    "DecisionVerdict",
    "FallbackChanged",
    "HealthChanged",
    "InputsChanged",
    "ModeVerdict",
    "ProposalRejected",
    "RecommendationReady",
    "RecommendationUpdated",
    "RollbackTriggered",
    "StepSkipped",
    "SupervisionChanged",
    "SwapVerdict",
    "WriteCompleted",
    "WriteOutcome",
    "WriteOutcomeKind",
    "WriteRejected",
]
