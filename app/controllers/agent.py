"""AgentController: the agent step, recommendations and decisions, promotion and rollback.

Every ``agent_period_s`` (in the control context):

1. skip the step if the mode is OFF, no agent is active, the fallback chain is at base control or
   the previous inference is still running (counted, published and, if it repeats, alarmed);
2. check the quality and age of the inputs (a bad input is a refused observation for the chain);
3. ``host.infer`` on the agent worker (active, candidate in shadow, previous while it stands in);
   its done-callback posts the result back into the context; a missed deadline is a fault;
4. feed the fallback chain and take the action of whoever is in charge (active, previous, cloud);
5. abstain above ``max_ood_score``; in AUTOMATIC send an action above ``max_uncertainty`` to the
   operator (and demote);
6. pre-check the proposal against the safety envelope (a refusal is counted as a constraint hit);
7. ADVISORY: publish a :class:`~app.domain.Recommendation` (proposed → approved / modified /
   rejected / expired → applied → confirmed or failed); AUTOMATIC: write it through the
   :class:`~app.controllers.plant.PlantController` as an ``auto_apply`` decision.

Every step is a ledger record (no record, no action). Operator commands post into the context and
answer with typed verdicts. Promotion follows the site's ``modes.promotion`` with the host's gates;
rollback is a supervisor's command or an automatic trigger on a newly promoted agent
(:mod:`app.controllers.agent_rollback`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from app.agent_runtime.fallback import (
    CloudAnswer,
    CloudScorer,
    FallbackChain,
    FallbackEvent,
    FallbackState,
    FallbackTransition,
    cloud_failure_event,
    judge_cloud_answer,
)
from app.agent_runtime.host import (
    DeadlineMissed as HostDeadlineMissed,
)
from app.agent_runtime.host import (
    InferenceResult,
    PolicyHost,
    SlotOutcome,
    SwapResult,
    fallback_events,
)
from app.agent_runtime.shadow import GateReport, GateThresholds
from app.agent_runtime.twin import PreviewResult
from app.config import ControlSettings, ModePolicy, TagLimits
from app.controllers import alarm_points as ap
from app.controllers.agent_rollback import KpiHistory, RollbackSettings, RollbackWatch, Trip
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.auth import Action, AuthError, AuthService, Session
from app.controllers.context import Cancellable, ControlContext
from app.controllers.events import EventBus
from app.controllers.ledger import LedgerError
from app.controllers.messages import (
    AgentAbstained,
    AgentSwapped,
    DeadlineMissed,
    DecisionRecorded,
    DecisionVerdict,
    FallbackChanged,
    ProposalRejected,
    RecommendationReady,
    RecommendationUpdated,
    RollbackTriggered,
    ShadowStepped,
    StepSkipped,
    StepTransition,
    SwapVerdict,
    WriteOutcome,
)
from app.controllers.mode import ModeController
from app.controllers.plant import PlantController
from app.domain import (
    AgentVersion,
    Decision,
    DecisionKind,
    Mode,
    Origin,
    OriginKind,
    Recommendation,
    RecommendationState,
    RejectReason,
    Setpoint,
    Slot,
    Snapshot,
    TagId,
    utc_now,
)
from app.drivers.base import WriteStatus

log = logging.getLogger(__name__)

KpiSource = Callable[[Snapshot], float | None]
"""The step KPI watched by the CUSUM trigger (lower is better), from the snapshot."""

_SKIP_ALARM_AFTER = 3
_PREVIOUS_EVENTS = (FallbackEvent.PREVIOUS_OK, FallbackEvent.PREVIOUS_ERROR)


def specific_energy(snapshot: Snapshot) -> float | None:
    """SEC in kWh/m³ from ``hpp_power_kw`` / ``permeate_flow_m3h`` (``None`` if not measurable)."""
    power = snapshot.samples.get("hpp_power_kw")
    flow = snapshot.samples.get("permeate_flow_m3h")
    if power is None or flow is None or not (power.quality.usable and flow.quality.usable):
        return None
    if not (math.isfinite(power.value) and math.isfinite(flow.value)) or flow.value <= 0.1:
        return None
    return power.value / flow.value


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Controller settings beyond the site file.

    Attributes:
        recovery_steps: Healthy active answers that end a degraded fallback state.
        gates: Promotion gate thresholds beyond ``ModePolicy``.
        shadow_kpi_every: Evaluate the twin KPI of active vs candidate every N steps (0: never).
        deadband_frac: Proposed changes smaller than this share of the PLC range are not written.
        rollback: Automatic rollback triggers.
    """

    recovery_steps: int = 3
    gates: GateThresholds = field(default_factory=GateThresholds)
    shadow_kpi_every: int = 1
    deadband_frac: float = 1e-3
    rollback: RollbackSettings = field(default_factory=RollbackSettings)


@dataclass(slots=True)
class _Acceptance:
    proposed: int = 0
    approved: int = 0
    modified: int = 0
    rejected: int = 0
    expired: int = 0
    auto_applied: int = 0


@dataclass(frozen=True, slots=True)
class AcceptanceStats:
    """Operator decisions on one agent version's recommendations (a live KPI).

    Attributes:
        version: Agent version.
        proposed: Recommendations put to operators.
        approved: Approved as proposed.
        modified: Approved with changed values.
        rejected: Rejected.
        expired: Not decided within the TTL.
        auto_applied: Written automatically (not counted in the rate).
    """

    version: str
    proposed: int
    approved: int
    modified: int
    rejected: int
    expired: int
    auto_applied: int

    @property
    def decided(self) -> int:
        """Recommendations that reached a decision (expiry included)."""
        return self.approved + self.modified + self.rejected + self.expired

    @property
    def acceptance_rate(self) -> float | None:
        """(approved + modified) / decided, or ``None`` before the first decision."""
        return (self.approved + self.modified) / self.decided if self.decided else None


@dataclass(slots=True)
class _Pending:
    rec: Recommendation
    expiry: Cancellable | None
    monotonic_expiry: float
    decision: Decision | None = None


@dataclass(slots=True)
class _Counters:
    steps: int = 0
    inferences: int = 0
    skipped_busy: int = 0
    skipped_other: int = 0
    deadline_misses: int = 0
    abstentions: int = 0
    proposals_refused: int = 0
    recommendations: int = 0
    auto_writes: int = 0
    rollbacks: int = 0
    promotions: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class AgentController:
    """The agent step and every agent-related command.

    Args:
        ctx: The control context.
        host: The policy host (its own worker thread).
        plant: The plant controller (snapshot, write path).
        mode: The mode controller (demotions, preconditions).
        auth: Permission checks.
        trail: Audit trail.
        bus: Event bus.
        alarms: Alarm manager.
        control: The site's cadences and deadlines.
        policy: The site's mode policy (thresholds, promotion).
        limits: The site's setpoint limits.
        settings: Controller settings.
        cloud: Cloud scoring fallback (``None``: the chain skips the cloud level).
        cloud_deployment: Pinned deployment name the cloud answer must come from.
        kpi: Step KPI for the CUSUM trigger (default: SEC).
    """

    def __init__(
        self,
        ctx: ControlContext,
        host: PolicyHost,
        plant: PlantController,
        mode: ModeController,
        auth: AuthService,
        trail: AuditTrail,
        bus: EventBus,
        alarms: AlarmManager,
        control: ControlSettings,
        policy: ModePolicy,
        limits: Mapping[TagId, TagLimits],
        settings: AgentSettings | None = None,
        *,
        cloud: CloudScorer | None = None,
        cloud_deployment: str = "",
        cloud_budget_s: float = 2.0,
        kpi: KpiSource = specific_energy,
    ) -> None:
        self._ctx = ctx
        self.host = host
        self._plant = plant
        self._mode = mode
        self._auth = auth
        self._trail = trail
        self._bus = bus
        self._alarms = alarms
        self.control = control
        self.policy = policy
        self._limits = dict(limits)
        self.settings = settings or AgentSettings()
        self._cloud = cloud
        self._cloud_deployment = cloud_deployment
        self._cloud_budget_s = cloud_budget_s
        self._kpi = kpi
        self.chain = FallbackChain(
            control,
            ctx.monotonic,
            recovery_steps=self.settings.recovery_steps,
            cloud_available=cloud is not None,
        )
        catalog = plant.catalog
        self._setpoint_tags = {t.name for t in catalog.setpoints}
        self._input_tags = {t.name for t in (*catalog.observations, *catalog.setpoints)}
        self._deadband = {
            t.name: self.settings.deadband_frac * ((t.plc_high or t.high) - (t.plc_low or t.low))
            for t in catalog.setpoints
        }
        self._agent_move: dict[TagId, float | None] = {}
        for t in catalog.setpoints:
            site = self._limits.get(t.name)
            moves = [m for m in (site.max_move if site else None, t.max_move) if m is not None]
            self._agent_move[t.name] = min(moves) if moves else None
        self._ids = itertools.count(1)
        self._accepting = True
        self._timer: Cancellable | None = None
        self._inflight: Future[InferenceResult] | None = None
        self.delivered: Future[None] = Future()
        """Resolved when the last inference result was posted into the context (for tests)."""
        self.delivered.set_result(None)
        self._busy_streak = 0
        self._pending: dict[str, _Pending] = {}
        self._recs: dict[str, Recommendation] = {}
        self.last_recommendation: Recommendation | None = None
        self._last_applied: dict[TagId, float] = {}
        self._acceptance: dict[str, _Acceptance] = {}
        self._history = KpiHistory(self.settings.rollback.baseline_steps)
        self._watch: RollbackWatch | None = None
        self._rec_agent: dict[str, AgentVersion] = {}
        self.counters = _Counters()
        mode.add_precondition(self._mode_precondition)
        mode.add_resume_listener(self._on_operator_resume)
        plant.add_tick_listener(self._on_tick)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the agent cadence (control context)."""
        self._sync_availability()
        self._timer = self._ctx.call_later(self.control.agent_period_s, self._scheduled_step)

    def refuse_commands(self) -> None:
        """Refuse every later command (shutdown)."""
        self._accepting = False

    def stop_cadence(self) -> None:
        """Stop the agent cadence and expire the open recommendations."""
        if self._timer is not None:
            self._timer.cancel()
        for rec_id in list(self._pending):
            self._expire(rec_id, "the core is stopping")

    def _scheduled_step(self) -> None:
        self._timer = self._ctx.call_later(self.control.agent_period_s, self._scheduled_step)
        self.step()

    @property
    def watch(self) -> RollbackWatch | None:
        """The rollback watch of a newly promoted agent, if armed."""
        return self._watch

    @property
    def pending(self) -> tuple[Recommendation, ...]:
        """Recommendations waiting for an operator."""
        return tuple(p.rec for p in self._pending.values())

    def recommendation(self, rec_id: str) -> Recommendation:
        """The latest state of ``rec_id``; raises ``KeyError`` naming it."""
        try:
            return self._recs[rec_id]
        except KeyError:
            raise KeyError(f"no recommendation {rec_id!r}") from None

    def acceptance(self) -> tuple[AcceptanceStats, ...]:
        """Acceptance statistics per agent version."""
        return tuple(
            AcceptanceStats(
                v, a.proposed, a.approved, a.modified, a.rejected, a.expired, a.auto_applied
            )
            for v, a in sorted(self._acceptance.items())
        )

    # --- the step ----------------------------------------------------------------------------

    def _skip(self, reason: str, busy: bool = False) -> None:
        if busy:
            self.counters.skipped_busy += 1
        else:
            self.counters.skipped_other += 1
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        self._bus.publish(StepSkipped(reason))

    def step(self) -> None:
        """Run one agent step now (control context; the cadence calls it)."""
        if not self._accepting:
            return
        self.counters.steps += 1
        if self._inflight is not None and not self._inflight.done():
            self._busy_streak += 1
            self._skip("previous inference still running", busy=True)
            if self._busy_streak >= _SKIP_ALARM_AFTER:
                self._set_alarm(ap.AGENT_SKIPPED, True)
            return
        self._busy_streak = 0
        self._set_alarm(ap.AGENT_SKIPPED, False)
        if self._mode.mode is Mode.OFF:
            self._skip("mode is off")
            return
        if self.host.versions.active is None:
            self._skip("no active agent")
            return
        if self.chain.state is FallbackState.BASE_CONTROL:
            self._skip("fallback chain at base control")
            return
        snap = self._plant.snapshot.snapshot()
        bad = {t: why for t, why in self._plant.unusable_inputs.items() if t in self._input_tags}
        if bad:
            listed = ", ".join(f"{t} ({why})" for t, why in sorted(bad.items())[:5])
            self._feed_chain(FallbackEvent.OBSERVATION_REFUSED, listed)
            self._mode.demote(f"inputs not usable: {listed}")
            self._record_step(snap, None, "inputs_refused", listed)
            self._skip("inputs not usable")
            return
        last = {**self._plant.current_setpoints(), **self._last_applied}
        chain_previous = self.chain.state is FallbackState.PREVIOUS_LOCAL
        # The paired rollback trigger needs the previous agent's answer on the same observation.
        include_previous = chain_previous or self._paired_watch() is not None
        self.counters.inferences += 1
        future = self.host.infer(dict(snap.samples), last, include_previous=include_previous)
        self._inflight = future
        delivered: Future[None] = Future()
        self.delivered = delivered

        def deliver(done: Future[InferenceResult]) -> None:
            self._ctx.post(partial(self._on_result, snap, done, chain_previous))
            delivered.set_result(None)

        future.add_done_callback(deliver)

    def _on_result(
        self, snap: Snapshot, done: Future[InferenceResult], chain_previous: bool = False
    ) -> None:
        if not self._accepting:
            return
        exc = done.exception()
        result = done.result() if exc is None else None
        if isinstance(exc, HostDeadlineMissed):
            self.counters.deadline_misses += 1
            self._bus.publish(
                DeadlineMissed(self.host.versions.active, self.control.inference_deadline_s)
            )
            self._set_alarm(ap.AGENT_DEADLINE, True)
            self._mode.demote(
                f"agent missed its {self.control.inference_deadline_s:g} s inference deadline"
            )
        elif exc is None:
            self._set_alarm(ap.AGENT_DEADLINE, False)
        detail = "" if exc is None else str(exc)
        if result is not None and not result.active.ok:
            detail = result.active.error or ""
        for event in fallback_events(done):
            if not chain_previous and event in _PREVIOUS_EVENTS:
                continue  # asked for the paired watch only: not the chain's business
            self._feed_chain(event, detail)
        if result is not None:
            self._after_shadow(result, snap)
            self._paired_step(result, snap)
        source = self._source(result)
        if source is None:
            if self.chain.state is FallbackState.CLOUD and self._cloud is not None:
                self._ask_cloud(snap)
                return
            self._record_step(snap, result, "hold", f"fallback {self.chain.state.value}")
            self._watch_step(snap, abstained=False, hit=False)
            return
        outcome, agent = source
        self._act(
            snap,
            result,
            outcome.action or {},
            agent,
            outcome.uncertainty,
            outcome.ood.score if outcome.ood else None,
            ramp_limited=result.ramp_limited
            if result is not None and outcome.slot is Slot.ACTIVE
            else (),
        )

    def _source(self, result: InferenceResult | None) -> tuple[SlotOutcome, AgentVersion] | None:
        if result is None:
            return None
        state = self.chain.state
        if state is FallbackState.ACTIVE_LOCAL and result.action is not None:
            active = replace(result.active, action=result.action)
            return active, result.active.version
        previous = result.previous
        if state is FallbackState.PREVIOUS_LOCAL and previous is not None and previous.ok:
            return previous, previous.version
        return None

    def _act(
        self,
        snap: Snapshot,
        result: InferenceResult | None,
        action: Mapping[str, float],
        agent: AgentVersion,
        uncertainty: float | None,
        ood: float | None,
        *,
        ramp_limited: tuple[str, ...] = (),
        cloud: bool = False,
    ) -> None:
        mode = self._mode.mode
        if ood is not None and ood > self.policy.max_ood_score:
            reason = f"OOD score {ood:.2f} above {self.policy.max_ood_score:g}"
            self._abstain(snap, result, agent, reason, uncertainty, ood)
            return
        current = self._plant.current_setpoints()
        sent = dict(action) if cloud else None
        proposal: list[Setpoint] = []
        for tag, value in action.items():
            if tag not in self._setpoint_tags:
                continue  # agents write setpoints only; commands stay with the PLC
            value = self._bumpless(tag, value, current.get(tag), tag in ramp_limited)
            if tag in current and abs(value - current[tag]) <= self._deadband[tag]:
                continue
            proposal.append(Setpoint(tag, value))
        if not proposal:
            self._record_step(
                snap, result, "hold", "no setpoint change proposed", agent=agent, cloud_action=sent
            )
            self._watch_step(snap, abstained=False, hit=False)
            return
        origin = Origin(OriginKind.CLOUD_AGENT if cloud else OriginKind.AGENT, agent.version)
        now = self._ctx.monotonic()
        for sp in proposal:
            verdict = self._plant.safety.check(sp, snap, origin, now)
            if not verdict.ok:
                assert verdict.layer is not None
                self.counters.proposals_refused += 1
                self._record_step(
                    snap,
                    result,
                    "proposal_refused",
                    f"{verdict.layer.value}: {verdict.reason}",
                    agent=agent,
                    proposal=proposal,
                    cloud_action=sent,
                )
                self._bus.publish(
                    ProposalRejected(agent, tuple(proposal), verdict.layer, verdict.reason)
                )
                self._mode.note_safety_rejection(verdict.reason)
                self._watch_step(snap, abstained=False, hit=True)
                return
        high = uncertainty is not None and uncertainty > self.policy.max_uncertainty
        automatic = mode is Mode.AUTOMATIC and not high
        rec = self._new_recommendation(agent, proposal, current, uncertainty, ood, cloud)
        outcome = "auto_apply" if automatic else "recommended"
        if not self._record_step(
            snap,
            result,
            outcome,
            "",
            agent=agent,
            proposal=proposal,
            rec_id=rec.rec_id,
            cloud_action=sent,
        ):
            return
        self._watch_step(snap, abstained=high, hit=False)
        if high:
            self.counters.abstentions += 1
            reason = f"uncertainty {uncertainty:.3f} above {self.policy.max_uncertainty:g}"
            self._bus.publish(AgentAbstained(agent, reason, uncertainty, ood))
            self._set_alarm(ap.AGENT_ABSTAINED, True, f"agent abstained: {reason}")
            if mode is Mode.AUTOMATIC:
                self._mode.demote(f"{reason}; the recommendation goes to the operator")
        else:
            self._set_alarm(ap.AGENT_ABSTAINED, False)
        self._recs[rec.rec_id] = rec
        self._rec_agent[rec.rec_id] = agent
        self.last_recommendation = rec
        if automatic:
            self._auto_apply(rec, origin)
        else:
            self._propose(rec)

    def _bumpless(self, tag: TagId, value: float, current: float | None, limited: bool) -> float:
        # The host limits the first steps after a swap to the site's max move; the envelope allows an
        # agent the smaller of the site's and the catalogue's, so the ramp uses that here too.
        step = self._agent_move.get(tag)
        ref = self._last_applied.get(tag, current)
        if not limited or step is None or ref is None:
            return value
        return min(max(value, ref - step), ref + step)

    def _abstain(
        self,
        snap: Snapshot,
        result: InferenceResult | None,
        agent: AgentVersion,
        reason: str,
        uncertainty: float | None,
        ood: float | None,
    ) -> None:
        self.counters.abstentions += 1
        self._record_step(snap, result, "abstained", reason, agent=agent)
        self._bus.publish(AgentAbstained(agent, reason, uncertainty, ood))
        self._set_alarm(ap.AGENT_ABSTAINED, True, f"agent abstained: {reason}")
        self._mode.demote(f"agent abstained: {reason}")
        self._watch_step(snap, abstained=True, hit=False)

    def _record_step(
        self,
        snap: Snapshot,
        result: InferenceResult | None,
        outcome: str,
        detail: str,
        *,
        agent: AgentVersion | None = None,
        proposal: list[Setpoint] | None = None,
        rec_id: str | None = None,
        cloud_action: dict[TagId, float] | None = None,
    ) -> bool:
        data: dict[str, Any] = {
            "outcome": outcome,
            "detail": detail,
            "mode": self._mode.mode.value,
            "fallback": self.chain.state.value,
            "observation": {
                t: {"value": s.value, "quality": s.quality.value}
                for t, s in snap.samples.items()
                if t in self._input_tags
            },
        }
        if result is not None:
            data["actions"] = {
                o.slot.value: {
                    "version": o.version.version,
                    "sha256": o.version.sha256,
                    "action": o.action,
                    "uncertainty": o.uncertainty,
                    "ood": None if o.ood is None else o.ood.score,
                    "error": o.error,
                }
                for o in (result.active, result.candidate, result.previous)
                if o is not None
            }
            data["ramp_limited"] = list(result.ramp_limited)
            data["job"] = result.seq
        if proposal is not None:
            data["proposal"] = {sp.tag: sp.value for sp in proposal}
        if rec_id is not None:
            data["rec_id"] = rec_id
        if cloud_action is not None:
            data["cloud_action"] = cloud_action
        origin = Origin.agent(agent.version) if agent else Origin.system("agent-step")
        summary = f"agent step: {outcome}" + (f" ({detail})" if detail else "")
        try:
            self._trail.record("agent_step", origin, summary, data)
        except LedgerError:
            log.error("agent step not recorded; no action taken")
            return False
        self._publish_transition(snap, result, outcome, agent, proposal, cloud_action)
        return True

    def _publish_transition(
        self,
        snap: Snapshot,
        result: InferenceResult | None,
        outcome: str,
        agent: AgentVersion | None,
        proposal: list[Setpoint] | None,
        cloud_action: dict[TagId, float] | None,
    ) -> None:
        inputs = {t: s for t, s in snap.samples.items() if t in self._input_tags}
        actions: dict[str, dict[TagId, float]] = {}
        if result is not None:
            for o in (result.active, result.candidate, result.previous):
                if o is not None and o.action is not None:
                    actions[o.slot.value] = dict(o.action)
        if cloud_action is not None:
            actions["cloud"] = cloud_action
        applied = {
            t: s.value
            for t, s in snap.samples.items()
            if t in self._setpoint_tags and s.quality.usable
        }
        if outcome == "auto_apply" and proposal is not None:
            applied.update({sp.tag: sp.value for sp in proposal})
        sec = specific_energy(snap)
        self._bus.publish(
            StepTransition(
                outcome,
                {t: s.value for t, s in inputs.items()},
                {t: s.quality.value for t, s in inputs.items()},
                actions,
                applied,
                {} if sec is None else {"sec_kwh_m3": sec},
                agent or self.host.versions.active,
                cloud_action is not None,
            )
        )

    # --- fallback chain ------------------------------------------------------------------------

    def _feed_chain(self, event: FallbackEvent, detail: str = "") -> None:
        self._on_transitions(self.chain.handle(event, detail))

    def _on_tick(self) -> None:
        self._on_transitions(self.chain.tick())

    def _on_transitions(self, transitions: tuple[FallbackTransition, ...]) -> None:
        for t in transitions:
            self._trail.try_record(
                "fallback",
                Origin.system("fallback"),
                f"fallback {t.old.value} -> {t.new.value}: {t.reason}",
                {
                    "old": t.old.value,
                    "new": t.new.value,
                    "event": t.event.value,
                    "hold_until": t.hold_until,
                },
            )
            self._bus.publish(FallbackChanged(t.old, t.new, t.reason))
            degraded = t.new is not FallbackState.ACTIVE_LOCAL
            self._set_alarm(ap.AGENT_FALLBACK, degraded, f"fallback: {t.reason}")
            if t.new is FallbackState.BASE_CONTROL:
                self._mode.demote(f"fallback chain: {t.reason}", Mode.OFF)

    def _on_operator_resume(self) -> None:
        if self.chain.state is FallbackState.BASE_CONTROL:
            self._feed_chain(FallbackEvent.OPERATOR_RESUME, "mode raised by an operator")

    def _mode_precondition(self, mode: Mode) -> str | None:
        if mode is not Mode.AUTOMATIC:
            return None
        if self.host.versions.active is None:
            return "no active agent is loaded"
        if self.chain.state is FallbackState.SAFE_HOLD:
            return "the fallback chain holds the last safe setpoints; wait for the agent to recover"
        return None

    def _sync_availability(self) -> None:
        self.chain.set_availability(previous=self.host.versions.previous is not None)

    # --- cloud level --------------------------------------------------------------------------

    def _ask_cloud(self, snap: Snapshot) -> None:
        assert self._cloud is not None
        obs = {t: s.value for t, s in snap.samples.items() if t in self._input_tags}
        expected = self.host.versions.active
        try:
            fut = self._cloud.score(obs, self._cloud_budget_s)
        except Exception as exc:  # noqa: BLE001 - any client failure is a cloud fault
            self._feed_chain(cloud_failure_event(exc), str(exc))
            return
        fut.add_done_callback(lambda f: self._ctx.post(partial(self._on_cloud, snap, expected, f)))

    def _on_cloud(
        self, snap: Snapshot, expected: AgentVersion | None, fut: Future[CloudAnswer]
    ) -> None:
        exc = fut.exception()
        if exc is not None:
            self._feed_chain(cloud_failure_event(exc), str(exc))
            return
        answer = fut.result()
        action_tags = tuple(sorted(t for t in answer.action if t in self._setpoint_tags))
        event, why = judge_cloud_answer(
            answer,
            expected_version="" if expected is None else expected.version,
            pinned_deployment=self._cloud_deployment,
            budget_s=self._cloud_budget_s,
            action_tags=action_tags or tuple(sorted(self._setpoint_tags)),
        )
        self._feed_chain(event, why)
        if event is not FallbackEvent.CLOUD_OK or expected is None:
            return
        self._act(snap, None, dict(answer.action), expected, None, None, cloud=True)

    # --- recommendations ------------------------------------------------------------------------

    def _new_recommendation(
        self,
        agent: AgentVersion,
        proposal: list[Setpoint],
        current: Mapping[TagId, float],
        uncertainty: float | None,
        ood: float | None,
        cloud: bool,
    ) -> Recommendation:
        now = utc_now()
        return Recommendation(
            rec_id=f"r{next(self._ids)}-{agent.version}",
            agent=agent,
            setpoints=tuple(proposal),
            current=tuple(Setpoint(sp.tag, current.get(sp.tag, math.nan)) for sp in proposal),
            uncertainty=math.nan if uncertainty is None else uncertainty,
            ood_score=math.nan if ood is None else ood,
            created_ts=now,
            expires_ts=now + timedelta(seconds=self.control.recommendation_ttl_s),
            cloud_sourced=cloud,
        )

    def _stats(self, agent: AgentVersion) -> _Acceptance:
        return self._acceptance.setdefault(agent.version, _Acceptance())

    def _propose(self, rec: Recommendation) -> None:
        for rec_id in list(self._pending):
            self._expire(rec_id, f"superseded by {rec.rec_id}")
        ttl = self.control.recommendation_ttl_s
        handle = self._ctx.call_later(ttl, partial(self._expire, rec.rec_id, "TTL elapsed"))
        self._pending[rec.rec_id] = _Pending(rec, handle, self._ctx.monotonic() + ttl)
        self._stats(rec.agent).proposed += 1
        self.counters.recommendations += 1
        self._bus.publish(RecommendationReady(rec))

    def _update(self, rec: Recommendation, state: RecommendationState, detail: str = "") -> None:
        new = replace(rec, state=state)
        self._recs[rec.rec_id] = new
        if self.last_recommendation is not None and self.last_recommendation.rec_id == rec.rec_id:
            self.last_recommendation = new
        pending = self._pending.get(rec.rec_id)
        if pending is not None:
            pending.rec = new
        self._bus.publish(RecommendationUpdated(new, detail))

    def _record_decision(self, decision: Decision, agent: AgentVersion) -> None:
        """Ledger a decision (raises LedgerError: the decision must not take effect)."""
        summary = f"decision {decision.kind.value} on {decision.rec_id} by {decision.origin.name}"
        if decision.reason is not None:
            summary += f" ({decision.reason.value}: {decision.note})"
        self._trail.record(
            "decision",
            decision.origin,
            summary,
            {
                "rec_id": decision.rec_id,
                "kind": decision.kind.value,
                "agent": agent.version,
                "agent_sha256": agent.sha256,
                "setpoints": {sp.tag: sp.value for sp in decision.setpoints},
                "reason": None if decision.reason is None else decision.reason.value,
                "note": decision.note,
            },
        )
        self._bus.publish(DecisionRecorded(decision, agent))

    def _expire(self, rec_id: str, why: str) -> None:
        pending = self._pending.pop(rec_id, None)
        if pending is None:
            return
        if pending.expiry is not None:
            pending.expiry.cancel()
        agent = pending.rec.agent
        decision = Decision(rec_id, DecisionKind.EXPIRE, Origin.system("recommendations"), note=why)
        try:
            self._record_decision(decision, agent)
        except LedgerError:
            log.error("expiry of %s not recorded", rec_id)
        self._stats(agent).expired += 1
        self._update(pending.rec, RecommendationState.EXPIRED, why)

    def _auto_apply(self, rec: Recommendation, origin: Origin) -> None:
        decision = Decision(rec.rec_id, DecisionKind.AUTO_APPLY, origin, rec.setpoints)
        try:
            self._record_decision(decision, rec.agent)
        except LedgerError:
            self._update(rec, RecommendationState.FAILED, "not applied: the ledger failed")
            return
        self._stats(rec.agent).auto_applied += 1
        self.counters.auto_writes += 1
        self._update(rec, RecommendationState.APPROVED, "automatic")
        self._write(rec, rec.setpoints, origin, None)

    def _write(
        self,
        rec: Recommendation,
        setpoints: tuple[Setpoint, ...],
        origin: Origin,
        answer: Future[DecisionVerdict] | None,
    ) -> None:
        fut = self._plant.request_write(setpoints, origin)

        def done(f: Future[WriteOutcome]) -> None:
            self._ctx.post(partial(self._on_written, rec.rec_id, f.result(), answer))

        fut.add_done_callback(done)

    def _on_written(
        self, rec_id: str, outcome: WriteOutcome, answer: Future[DecisionVerdict] | None
    ) -> None:
        rec = self._recs[rec_id]
        if outcome.ok:
            for sp in outcome.setpoints:
                self._last_applied[sp.tag] = sp.value
            self._update(rec, RecommendationState.APPLIED, "written")
            rec = self._recs[rec_id]
            self._update(rec, RecommendationState.CONFIRMED, "readback matches")
        else:
            if any(r.ok or r.status is WriteStatus.MISMATCH for r in outcome.results):
                self._update(rec, RecommendationState.APPLIED, "written")
                rec = self._recs[rec_id]
            self._update(rec, RecommendationState.FAILED, f"{outcome.kind.value}: {outcome.reason}")
        if answer is not None:
            final = self._recs[rec_id]
            answer.set_result(
                DecisionVerdict(
                    True, rec_id, final.state, "" if outcome.ok else outcome.reason, outcome
                )
            )

    # --- operator commands (any thread) ------------------------------------------------------

    def approve(self, rec_id: str, session: Session | None) -> Future[DecisionVerdict]:
        """Approve a recommendation as proposed; the verdict arrives after the write."""
        return self._command(partial(self._decide, rec_id, DecisionKind.APPROVE, session))

    def modify(
        self, rec_id: str, values: Mapping[TagId, float], session: Session | None
    ) -> Future[DecisionVerdict]:
        """Approve with changed values (each safety-checked with the operator's role first)."""
        return self._command(
            partial(self._decide, rec_id, DecisionKind.MODIFY, session, values=dict(values))
        )

    def reject(
        self, rec_id: str, reason: RejectReason, text: str, session: Session | None
    ) -> Future[DecisionVerdict]:
        """Reject a recommendation with a reason code and free text."""
        return self._command(
            partial(self._decide, rec_id, DecisionKind.REJECT, session, reason=reason, text=text)
        )

    def _command(self, fn: Callable[[Future[DecisionVerdict]], None]) -> Future[DecisionVerdict]:
        answer: Future[DecisionVerdict] = Future()

        def run() -> None:
            try:
                fn(answer)
            except Exception as exc:
                log.exception("agent command failed")
                if not answer.done():
                    answer.set_result(DecisionVerdict(False, "", None, f"internal error: {exc}"))

        self._ctx.post(run)
        return answer

    def _decide(
        self,
        rec_id: str,
        kind: DecisionKind,
        session: Session | None,
        answer: Future[DecisionVerdict],
        *,
        values: dict[TagId, float] | None = None,
        reason: RejectReason | None = None,
        text: str = "",
    ) -> None:
        def refuse(why: str) -> None:
            state = self._recs[rec_id].state if rec_id in self._recs else None
            answer.set_result(DecisionVerdict(False, rec_id, state, why))

        if not self._accepting:
            refuse("the core is stopping")
            return
        action = {
            DecisionKind.APPROVE: Action.APPROVE,
            DecisionKind.MODIFY: Action.MODIFY,
            DecisionKind.REJECT: Action.REJECT,
        }[kind]
        try:
            origin = self._auth.require(session, action)
        except AuthError as exc:
            refuse(str(exc))
            return
        pending = self._pending.get(rec_id)
        if pending is None:
            known = self._recs.get(rec_id)
            refuse(
                f"no recommendation {rec_id!r}"
                if known is None
                else f"{rec_id} is {known.state.value}, not proposed"
            )
            return
        if self._ctx.monotonic() >= pending.monotonic_expiry:
            self._expire(rec_id, "TTL elapsed")
            refuse(f"{rec_id} expired")
            return
        rec = pending.rec
        setpoints = rec.setpoints
        if kind is DecisionKind.MODIFY:
            assert values is not None
            unknown = sorted(set(values) - self._setpoint_tags)
            if unknown or not values:
                refuse(f"modify needs setpoint values; unknown or not setpoints: {unknown}")
                return
            setpoints = tuple(Setpoint(t, float(v)) for t, v in values.items())
            snap = self._plant.snapshot.snapshot()
            now = self._ctx.monotonic()
            for sp in setpoints:
                verdict = self._plant.safety.check(sp, snap, origin, now)
                if not verdict.ok:
                    layer = verdict.layer.value if verdict.layer else "?"
                    refuse(
                        f"modified value refused by the safety envelope ({layer}): {verdict.reason}"
                    )
                    return
        if kind is DecisionKind.REJECT and (reason is None or not text.strip()):
            refuse("a rejection needs a reason code and a text")
            return
        decision = Decision(
            rec_id,
            kind,
            origin,
            () if kind is DecisionKind.REJECT else setpoints,
            reason if kind is DecisionKind.REJECT else None,
            text,
        )
        try:
            self._record_decision(decision, rec.agent)
        except LedgerError as exc:
            refuse(f"not decided: the ledger failed ({exc})")
            return
        self._pending.pop(rec_id)
        if pending.expiry is not None:
            pending.expiry.cancel()
        stats = self._stats(rec.agent)
        watched = self._watch is not None and self._watch.agent == rec.agent
        if kind is DecisionKind.REJECT:
            stats.rejected += 1
            self._update(rec, RecommendationState.REJECTED, f"{reason}: {text}")
            answer.set_result(DecisionVerdict(True, rec_id, RecommendationState.REJECTED))
            if watched:
                self._trip(self._watch.decision(True) if self._watch else None)
            return
        if kind is DecisionKind.MODIFY:
            stats.modified += 1
            self._update(rec, RecommendationState.MODIFIED, "modified by the operator")
        else:
            stats.approved += 1
            self._update(rec, RecommendationState.APPROVED, "")
        if watched and self._watch is not None:
            self._trip(self._watch.decision(False))
        self._write(self._recs[rec_id], setpoints, origin, answer)

    # --- shadow, promotion, rollback -------------------------------------------------------------

    def _after_shadow(self, result: InferenceResult, snap: Snapshot) -> None:
        if result.candidate is None:
            return
        every = self.settings.shadow_kpi_every
        if every > 0 and self.counters.inferences % every == 0:
            measurements = dict(snap.samples)
            last = {**self._plant.current_setpoints(), **self._last_applied}
            self.host.shadow_kpi(measurements, last).add_done_callback(_log_failure)
        # Every shadow step is published with the gates as they stand after it (the console's
        # live duel); automatic promotion acts on the same report.
        step_at = utc_now()
        report = self.host.gate_report(self.policy, self.settings.gates)
        report.add_done_callback(
            lambda f: self._ctx.post(partial(self._on_shadow_gates, result, step_at, f))
        )

    def _on_shadow_gates(
        self, result: InferenceResult, step_at: datetime, fut: Future[GateReport]
    ) -> None:
        report = fut.result() if fut.exception() is None else None
        spans = {t.name: t.high - t.low for t in self._plant.catalog.setpoints}
        self._bus.publish(ShadowStepped.of(result, step_at, spans, report))
        if self.policy.promotion == "automatic":
            self._on_auto_gates(fut)

    def _on_auto_gates(self, fut: Future[GateReport]) -> None:
        if fut.exception() is not None or not fut.result().passed:
            return
        self._promote_with(fut.result(), Origin.system("auto-promotion"), None)

    def load_candidate(self, path: Path, session: Session | None) -> Future[SwapVerdict]:
        """Verify and load a package into the candidate slot (engineer; it starts in shadow)."""
        answer: Future[SwapVerdict] = Future()

        def run() -> None:
            try:
                origin = self._auth.require(session, Action.PROMOTE)
            except AuthError as exc:
                answer.set_result(SwapVerdict(False, "load", str(exc)))
                return
            self.stage_candidate(path, origin, answer)

        self._ctx.post(run)
        return answer

    def stage_candidate(
        self, path: Path, origin: Origin, answer: Future[SwapVerdict] | None = None
    ) -> None:
        """Load ``path`` as candidate on behalf of ``origin`` (control context; cloud sync)."""
        fut = self.host.load(path, Slot.CANDIDATE)
        fut.add_done_callback(
            lambda f: self._ctx.post(
                partial(self.record_load, path, origin, Slot.CANDIDATE, f, answer)
            )
        )

    def record_load(
        self,
        path: Path,
        origin: Origin,
        slot: Slot,
        fut: Future[AgentVersion],
        answer: Future[SwapVerdict] | None,
    ) -> None:
        """Ledger, alarm and publish the outcome of a package load (control context)."""
        exc = fut.exception()
        v = self.host.versions
        if exc is not None:
            reason = f"{path}: {exc}"
            self._trail.try_record(
                "model_refused",
                origin,
                f"agent package refused: {reason}",
                {"path": str(path), "slot": slot.value, "error": str(exc)},
            )
            self._set_alarm(ap.AGENT_REFUSED, True, f"agent package refused: {exc}")
            if answer is not None:
                answer.set_result(
                    SwapVerdict(False, "load", reason, v.active, v.previous, v.candidate)
                )
            return
        version = fut.result()
        self._trail.try_record(
            "model_load",
            origin,
            f"agent {version.version} loaded as {slot.value}",
            {
                "path": str(path),
                "slot": slot.value,
                "version": version.version,
                "sha256": version.sha256,
                "signer": version.signer,
            },
        )
        self._sync_availability()
        self._bus.publish(AgentSwapped("load", v.active, v.previous, v.candidate, str(path)))
        if answer is not None:
            answer.set_result(
                SwapVerdict(True, "load", version.version, v.active, v.previous, v.candidate)
            )

    def promote(self, session: Session | None, note: str = "") -> Future[SwapVerdict]:
        """Promote the candidate if its gates pass (engineer; ``modes.promotion = "manual"``)."""
        answer: Future[SwapVerdict] = Future()

        def run() -> None:
            if not self._accepting:
                answer.set_result(SwapVerdict(False, "promote", "the core is stopping"))
                return
            try:
                origin = self._auth.require(session, Action.PROMOTE)
            except AuthError as exc:
                answer.set_result(SwapVerdict(False, "promote", str(exc)))
                return
            report = self.host.gate_report(self.policy, self.settings.gates)
            report.add_done_callback(
                lambda f: self._ctx.post(partial(self._on_gates, origin, note, answer, f))
            )

        self._ctx.post(run)
        return answer

    def _on_gates(
        self, origin: Origin, note: str, answer: Future[SwapVerdict], fut: Future[GateReport]
    ) -> None:
        exc = fut.exception()
        if exc is not None:
            answer.set_result(SwapVerdict(False, "promote", f"no gate report: {exc}"))
            return
        report = fut.result()
        if not report.passed:
            why = "gates not passed: " + "; ".join(report.failures)
            self._trail.try_record(
                "promotion_refused", origin, why, {"evidence": report, "note": note}
            )
            v = self.host.versions
            answer.set_result(SwapVerdict(False, "promote", why, v.active, v.previous, v.candidate))
            return
        self._promote_with(report, origin, answer, note)

    def _promote_with(
        self,
        report: GateReport,
        origin: Origin,
        answer: Future[SwapVerdict] | None,
        note: str = "",
    ) -> None:
        try:
            self._trail.record(
                "promotion_requested",
                origin,
                f"promote {report.candidate.version} over {report.incumbent.version}",
                {"evidence": report, "note": note},
            )
        except LedgerError as exc:
            if answer is not None:
                answer.set_result(SwapVerdict(False, "promote", f"the ledger failed ({exc})"))
            return
        baseline = self._history.values()
        self.host.promote(report).add_done_callback(
            lambda f: self._ctx.post(
                partial(self._on_swapped, origin, "promote", baseline, None, answer, f)
            )
        )

    def rollback(self, session: Session | None, reason: str) -> Future[SwapVerdict]:
        """Supervisor-forced rollback to the previous agent (one call; a reason is required)."""
        answer: Future[SwapVerdict] = Future()

        def run() -> None:
            try:
                origin = self._auth.require(session, Action.ROLLBACK)
            except AuthError as exc:
                answer.set_result(SwapVerdict(False, "rollback", str(exc)))
                return
            if not reason.strip():
                answer.set_result(SwapVerdict(False, "rollback", "a rollback needs a reason"))
                return
            self._rollback(origin, reason, "supervisor", answer)

        self._ctx.post(run)
        return answer

    def _rollback(
        self, origin: Origin, reason: str, trigger: str, answer: Future[SwapVerdict] | None
    ) -> None:
        try:
            self._trail.record(
                "rollback_requested",
                origin,
                f"rollback ({trigger}): {reason}",
                {"trigger": trigger, "reason": reason, "active": self.host.versions.active},
            )
        except LedgerError as exc:
            if answer is not None:
                answer.set_result(SwapVerdict(False, "rollback", f"the ledger failed ({exc})"))
            return
        self.host.rollback(reason).add_done_callback(
            lambda f: self._ctx.post(
                partial(self._on_swapped, origin, "rollback", (), trigger, answer, f)
            )
        )

    def _on_swapped(
        self,
        origin: Origin,
        kind: str,
        baseline: tuple[float, ...],
        trigger: str | None,
        answer: Future[SwapVerdict] | None,
        fut: Future[SwapResult],
    ) -> None:
        exc = fut.exception()
        v = self.host.versions
        if exc is not None:
            if answer is not None:
                answer.set_result(
                    SwapVerdict(False, kind, str(exc), v.active, v.previous, v.candidate)
                )
            return
        swap = fut.result()
        data = {
            "accepted": swap.accepted,
            "reason": swap.reason,
            "old_active": swap.old_active,
            "new_active": swap.new_active,
            "previous": swap.previous,
            "job": swap.seq,
            "trigger": trigger,
        }
        summary = f"{kind} {'done' if swap.accepted else 'refused'}: " + (
            f"{swap.old_active.version if swap.old_active else None} -> "
            f"{swap.new_active.version if swap.new_active else None}"
        )
        self._trail.try_record(kind, origin, summary + f" ({swap.reason})", data)
        if swap.accepted:
            self._sync_availability()
            if kind == "promote":
                self.counters.promotions += 1
                assert swap.new_active is not None
                self._watch = RollbackWatch(swap.new_active, self.settings.rollback, baseline)
            else:
                self.counters.rollbacks += 1
                self._watch = None
                self._bus.publish(
                    RollbackTriggered(trigger or "supervisor", swap.old_active, swap.reason)
                )
                if trigger != "supervisor":
                    self._set_alarm(ap.AGENT_ROLLBACK, True, f"rolled back: {swap.reason}")
            self._bus.publish(AgentSwapped(kind, v.active, v.previous, v.candidate, swap.reason))
        if answer is not None:
            answer.set_result(
                SwapVerdict(swap.accepted, kind, swap.reason, v.active, v.previous, v.candidate)
            )

    def _paired_watch(self) -> RollbackWatch | None:
        """The armed watch if it compares with the previous agent, else ``None``."""
        watch = self._watch
        if (
            watch is None
            or not watch.settings.paired
            or watch.agent != self.host.versions.active
            or self.host.versions.previous is None
        ):
            return None
        return watch

    def _paired_step(self, result: InferenceResult, snap: Snapshot) -> None:
        watch = self._paired_watch()
        previous = None if result.previous is None else result.previous.action
        active = result.active.action
        if watch is None or previous is None or active is None:
            return
        last = {**self._plant.current_setpoints(), **self._last_applied}
        future = self.host.preview(
            dict(snap.samples),
            {"active": active, "previous": previous},
            last,
        )
        future.add_done_callback(lambda f: self._ctx.post(partial(self._on_paired, watch, f)))

    def _on_paired(self, watch: RollbackWatch, fut: Future[PreviewResult]) -> None:
        if fut.exception() is not None:
            log.warning("paired rollback preview failed: %s", fut.exception())
            return
        result = fut.result()
        if self._watch is not watch or not result.available:
            return
        new, old = result.scenarios["active"].kpi_eur_h, result.scenarios["previous"].kpi_eur_h
        trip = watch.paired(new, old)
        if trip is None:
            self._bus.publish(watch.stepped())
        self._trip(trip)

    def _watch_step(self, snap: Snapshot, *, abstained: bool, hit: bool) -> None:
        kpi = self._kpi(snap)
        watch = self._watch
        if watch is not None and watch.agent == self.host.versions.active:
            trip = watch.step(kpi, constraint_hit=hit, abstained=abstained)
            if trip is None:
                self._bus.publish(watch.stepped("passed" if watch.expired else "watching"))
            self._trip(trip)
            if self._watch is not None and self._watch.expired:
                self._trail.try_record(
                    "rollback_watch_ended",
                    Origin.system("rollback-watch"),
                    f"{watch.agent.version} passed its {watch.steps}-step watch",
                    {},
                )
                self._watch = None
        self._history.add(kpi)

    def _trip(self, trip: Trip | None) -> None:
        if trip is None or self._watch is None:
            return
        self._bus.publish(self._watch.stepped("rolled_back"))
        self._watch = None
        self._trail.try_record(
            "rollback_triggered",
            Origin.system("rollback-watch"),
            f"{trip.trigger}: {trip.reason}",
            {"trigger": trip.trigger, "reason": trip.reason},
        )
        self._rollback(Origin.system("rollback-watch"), trip.reason, trip.trigger, None)

    def _set_alarm(self, alarm_id: str, active: bool, message: str | None = None) -> None:
        if self._alarms.point(alarm_id).active != active:
            self._alarms.set_condition(alarm_id, active, message)


def _log_failure(fut: Future[Any]) -> None:
    exc = fut.exception()
    if exc is not None:
        log.debug("shadow KPI not evaluated: %s", exc)


__all__ = ["AcceptanceStats", "AgentController", "AgentSettings", "KpiSource", "specific_energy"]
