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
from app.agent_runtime.host import InferenceResult
from app.agent_runtime.shadow import GateCheck, GateReport
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
class ShadowStepped:
    """One step of the shadow duel: both agents' answers on the same observation, and the gates.

    Attributes:
        step: Inference job number on the agent worker.
        step_at: When the step's result reached the control context, UTC.
        active: The active agent (incumbent).
        candidate: The candidate in shadow.
        active_action: The active agent's raw action per setpoint.
        candidate_action: The candidate's action per setpoint (``None``: it failed this step).
        divergence: Per setpoint, |candidate - active| divided by the setpoint's range.
        divergence_max: The largest of ``divergence`` (0 when the candidate failed).
        active_uncertainty: The active agent's ensemble spread, if any.
        candidate_uncertainty: The candidate's ensemble spread, if any.
        candidate_error: Why the candidate failed, or ``None``.
        shadow_steps: Steps in the duel so far (from the gate report).
        gates_passed: Whether every promotion gate passes now (``None``: no report).
        gates: Every gate check of the report made after this step.
    """

    step: int
    step_at: datetime
    active: AgentVersion
    candidate: AgentVersion
    active_action: dict[str, float]
    candidate_action: dict[str, float] | None
    divergence: dict[str, float]
    divergence_max: float
    active_uncertainty: float | None
    candidate_uncertainty: float | None
    candidate_error: str | None
    shadow_steps: int
    gates_passed: bool | None
    gates: tuple[GateCheck, ...] = ()
    at: datetime = field(default_factory=utc_now)

    @classmethod
    def of(
        cls,
        result: InferenceResult,
        step_at: datetime,
        spans: dict[str, float],
        report: GateReport | None,
    ) -> ShadowStepped:
        """The event for ``result`` (which must carry a candidate outcome).

        Args:
            result: The inference job with both agents' outcomes.
            step_at: When the step's result was handled.
            spans: Range (high - low) per setpoint, normalising the divergence.
            report: The gate report made after this step (``None`` if it failed).

        Raises:
            ValueError: ``result`` has no candidate outcome, or a span is not positive.
        """
        c = result.candidate
        if c is None:
            raise ValueError(f"inference job {result.seq} has no candidate outcome")
        a_action = dict(result.active.action or {})
        c_action = None if c.action is None else dict(c.action)
        divergence: dict[str, float] = {}
        if c_action is not None:
            for tag in sorted(a_action.keys() & c_action.keys()):
                span = spans.get(tag)
                if span is None:
                    continue
                if not span > 0:
                    raise ValueError(f"range of setpoint {tag!r} must be positive, got {span}")
                divergence[tag] = abs(c_action[tag] - a_action[tag]) / span
        return cls(
            step=result.seq,
            step_at=step_at,
            active=result.active.version,
            candidate=c.version,
            active_action=a_action,
            candidate_action=c_action,
            divergence=divergence,
            divergence_max=max(divergence.values(), default=0.0),
            active_uncertainty=result.active.uncertainty,
            candidate_uncertainty=c.uncertainty,
            candidate_error=c.error,
            shadow_steps=report.stats.steps if report is not None else 0,
            gates_passed=report.passed if report is not None else None,
            gates=report.checks if report is not None else (),
        )


@dataclass(frozen=True, slots=True)
class RollbackTriggered:
    """An automatic rollback trigger fired on a newly promoted agent (or a supervisor forced one)."""

    trigger: str
    """``supervisor``, ``cusum_sec``, ``paired_kpi``, ``constraint_hits``, ``abstention`` or
    ``operator_rejections``."""
    agent: AgentVersion | None
    reason: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class RollbackWatchStepped:
    """Where the automatic rollback watch of a newly promoted agent stands (after each update).

    Attributes:
        agent: The watched agent.
        state: ``watching``, ``passed`` (the watch ended without a trip) or ``rolled_back``.
        steps: Agent steps watched so far.
        watch_steps: Steps the watch lasts.
        threshold: CUSUM decision threshold ``h`` (both CUSUMs).
        sec_cusum: CUSUM of normalised SEC (``None``: off or no baseline).
        paired_cusum: CUSUM of the twin-predicted loss against the previous agent (``None``: off
            or no paired sample yet).
        paired_mean_loss_eur_h: Mean of that loss per step, EUR/h (negative: the new agent earns
            more); ``None`` without samples.
        paired_samples: Paired twin predictions so far.
        constraint_hit_rate: Share of watched steps whose proposal the envelope refused.
        abstention_rate: Share of watched steps the agent abstained.
        at: When.
    """

    agent: AgentVersion
    state: str
    steps: int
    watch_steps: int
    threshold: float
    sec_cusum: float | None
    paired_cusum: float | None
    paired_mean_loss_eur_h: float | None
    paired_samples: int
    constraint_hit_rate: float
    abstention_rate: float
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


@dataclass(frozen=True, slots=True)
class StepTransition:
    """One agent step as a training record, published once its ledger record is on disk.

    Attributes:
        outcome: The step's outcome (``recommended``, ``auto_apply``, ``hold``, ``abstained``...).
        observation: Value of every agent input tag in the step's snapshot.
        quality: Quality of each of those inputs (``good``, ``stale``...).
        actions: Proposed action by slot (``active``, ``candidate``, ``previous``; ``cloud`` for
            the endpoint's answer).
        applied: Setpoints in force after the step: the PLC readback, overlaid with the proposal
            when the step writes it (``auto_apply``).
        kpis: Step KPIs that could be measured (``sec_kwh_m3``).
        agent: Agent in charge of the step, if any.
        cloud_sourced: The step acted on the cloud endpoint's answer.
    """

    outcome: str
    observation: dict[TagId, float]
    quality: dict[TagId, str]
    actions: dict[str, dict[TagId, float]]
    applied: dict[TagId, float]
    kpis: dict[str, float]
    agent: AgentVersion | None
    cloud_sourced: bool = False
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
    "RollbackWatchStepped",
    "ShadowStepped",
    "StepSkipped",
    "StepTransition",
    "SupervisionChanged",
    "SwapVerdict",
    "WriteCompleted",
    "WriteOutcome",
    "WriteOutcomeKind",
    "WriteRejected",
]
