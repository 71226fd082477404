"""The policy host: one worker thread owns every agent slot and runs every job on them.

Slots (architecture.md §8.2): ``active`` (in charge), ``previous`` (the last active, kept loaded so a
rollback is instant) and ``candidate`` (in shadow). Every operation is a job on the host's
:class:`~app.concurrency.SerialWorker` and answers with a ``concurrent.futures.Future``:

- ``load(path, slot)``: verify the package (signature, hashes, spec, app version), *then* open its
  ONNX sessions; only when both succeed does the slot change, so a refused package leaves the slot
  that was working untouched.
- ``infer(observations, last_applied)``: the active agent and the candidate (and, while the fallback
  chain runs on it, the previous agent) infer on the same observation in one job; the result carries
  every action, uncertainty, OOD score, per-slot timing and error. The active action passes the
  bumpless ramp after a swap. A result not delivered within ``inference_deadline_s`` fails the future
  with :class:`DeadlineMissed` (a fault for the fallback chain); the late result is discarded and
  counted.
- ``promote(evidence)`` / ``rollback(reason)``: candidate → active → previous, or previous ↔ active.
  Being jobs on the same worker, they are atomic with respect to inference: every inference result
  belongs to exactly one slot assignment.
- ``preview(...)`` and ``shadow_kpi(...)``: what-if previews on the process twin.

Nothing here blocks the caller; ``close()`` finishes the queued jobs and joins both threads.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from app import __version__
from app.agent_runtime.ensemble import EnsemblePolicy
from app.agent_runtime.errors import (
    AgentRuntimeError,
    InferenceError,
    ObservationRefused,
    PackageRefused,
)
from app.agent_runtime.fallback import FallbackEvent
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.observation import ObservationBuilder, OodScore
from app.agent_runtime.onnx_policy import FloatArray
from app.agent_runtime.package import VerifiedPackage, verify_package
from app.agent_runtime.shadow import GateReport, GateThresholds, ShadowDuel, ShadowStats
from app.agent_runtime.twin import MeasurementLike, PreviewResult, preview
from app.concurrency import SerialWorker
from app.config import ControlSettings, ModePolicy, TagLimits
from app.domain import AgentVersion, Quality, Sample, Slot, TagRole, utc_now
from app.plant.catalog import ProcessCatalog

log = logging.getLogger(__name__)

T = TypeVar("T")
Observations = Mapping[str, tuple[float, Quality] | Sample]


class DeadlineMissed(InferenceError):
    """The inference job did not deliver within ``inference_deadline_s``."""


class SlotEmpty(AgentRuntimeError):
    """A job needs an agent in a slot that holds none."""


class SlotOccupied(AgentRuntimeError):
    """A package was loaded into the active slot while an agent is in charge (use promote)."""


class HostClosed(AgentRuntimeError):
    """The host was closed; it takes no more jobs."""


class ErrorKind(enum.StrEnum):
    """Why a slot produced no action."""

    OBSERVATION_REFUSED = "observation_refused"
    RUNTIME_ERROR = "runtime_error"


# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotOutcome:
    """What one slot's agent made of one observation.

    Attributes:
        slot: Which slot.
        version: The agent in it.
        action: Raw action per tag (manifest order), or ``None`` on error.
        uncertainty: Ensemble spread (``None`` without members or on error).
        ood: Out-of-distribution score against its training data (``None`` if refused).
        elapsed_s: Time this slot took (observation, OOD, ensemble).
        error: What went wrong, or ``None``.
        error_kind: Category of the error.
    """

    slot: Slot
    version: AgentVersion
    action: dict[str, float] | None
    uncertainty: float | None
    ood: OodScore | None
    elapsed_s: float
    error: str | None = None
    error_kind: ErrorKind | None = None

    @property
    def ok(self) -> bool:
        """True if the slot produced an action."""
        return self.action is not None


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """One inference job: the active agent's action, the shadow, and how long it all took.

    Attributes:
        seq: Job number on the worker (orders inference and swap results).
        active: The active agent's outcome.
        candidate: The candidate's outcome (``None`` without a candidate).
        previous: The previous agent's outcome (only when asked for).
        action: The action to use: the active's, after the bumpless ramp; ``None`` on error.
        ramp_limited: Tags whose action the bumpless ramp limited this step.
        queued_s: Time between ``infer`` and the job starting.
        elapsed_s: Time the job ran.
    """

    seq: int
    active: SlotOutcome
    candidate: SlotOutcome | None
    previous: SlotOutcome | None
    action: dict[str, float] | None
    ramp_limited: tuple[str, ...]
    queued_s: float
    elapsed_s: float

    def events(self) -> tuple[FallbackEvent, ...]:
        """The fallback-chain events this result implies (active first, then previous)."""
        out = [_slot_event(self.active, FallbackEvent.ACTIVE_OK, FallbackEvent.ACTIVE_ERROR)]
        if self.previous is not None:
            out.append(
                _slot_event(self.previous, FallbackEvent.PREVIOUS_OK, FallbackEvent.PREVIOUS_ERROR)
            )
        return tuple(out)


def _slot_event(outcome: SlotOutcome, ok: FallbackEvent, error: FallbackEvent) -> FallbackEvent:
    if outcome.ok:
        return ok
    if outcome.error_kind is ErrorKind.OBSERVATION_REFUSED:
        return FallbackEvent.OBSERVATION_REFUSED
    return error


def fallback_events(future: Future[InferenceResult]) -> tuple[FallbackEvent, ...]:
    """The fallback-chain events of a finished ``infer`` future (for its done-callback).

    A missed deadline gives ``DEADLINE_MISS``, an empty or unusable active slot ``PACKAGE_CORRUPT``,
    any other failure of the job ``ACTIVE_ERROR``.
    """
    exc = future.exception()
    if exc is None:
        return future.result().events()
    if isinstance(exc, DeadlineMissed):
        return (FallbackEvent.DEADLINE_MISS,)
    if isinstance(exc, SlotEmpty | PackageRefused):
        return (FallbackEvent.PACKAGE_CORRUPT,)
    return (FallbackEvent.ACTIVE_ERROR,)


@dataclass(frozen=True, slots=True)
class SwapResult:
    """Outcome of a promotion or rollback, for the ledger.

    Attributes:
        kind: ``promote`` or ``rollback``.
        accepted: False if refused; ``reason`` says why and no slot changed.
        reason: The caller's reason (rollback) or why it was refused.
        old_active: Active agent before.
        new_active: Active agent after (``old_active`` if refused).
        previous: Previous agent after.
        seq: Job number on the worker.
        elapsed_s: Time the swap took inside the job.
        evidence: The gate report a promotion was judged on.
        at: When, UTC.
    """

    kind: str
    accepted: bool
    reason: str
    old_active: AgentVersion | None
    new_active: AgentVersion | None
    previous: AgentVersion | None
    seq: int
    elapsed_s: float
    evidence: GateReport | None = None
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class SlotVersions:
    """Which agent is in which slot (published by the worker after every change)."""

    active: AgentVersion | None = None
    previous: AgentVersion | None = None
    candidate: AgentVersion | None = None

    def of(self, slot: Slot) -> AgentVersion | None:
        """The agent in ``slot``."""
        return getattr(self, slot.value)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class HostCounters:
    """Counters readable from any thread.

    Attributes:
        jobs: Jobs run on the worker.
        deadline_misses: Inference futures failed by the deadline watch.
        late_results: Inference results that arrived after their deadline (discarded).
    """

    jobs: int
    deadline_misses: int
    late_results: int


# --- bumpless ramp ---------------------------------------------------------------------------------


def bumpless(
    action: Mapping[str, float],
    last_applied: Mapping[str, float],
    max_moves: Mapping[str, float | None],
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Limit ``action`` to within each tag's max move of the last applied setpoint.

    Used for the first actions of a newly active agent, so control passes from one agent to another
    (or from base control to an agent) without a bump.

    Args:
        action: Proposed value per tag.
        last_applied: Last applied value per tag; a tag without one is not limited.
        max_moves: Largest change per step per tag; ``None`` or absent: not limited.

    Returns:
        The limited action and the tags that were limited.
    """
    out: dict[str, float] = {}
    limited: list[str] = []
    for tag, value in action.items():
        ref = last_applied.get(tag)
        step = max_moves.get(tag)
        if ref is None or step is None:
            out[tag] = value
            continue
        lo, hi = ref - step, ref + step
        if value < lo or value > hi:
            out[tag] = min(max(value, lo), hi)
            limited.append(tag)
        else:
            out[tag] = value
    return out, tuple(limited)


# --- deadline watch --------------------------------------------------------------------------------


class _DeadlineWatch:
    """A thread that fails inference futures still pending at their deadline."""

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Future[Any]]] = []
        self._cond = threading.Condition()
        self._count = itertools.count()
        self._stopped = False
        self.misses = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, deadline: float, future: Future[Any]) -> None:
        with self._cond:
            # The thread sleeps until the earliest deadline; finished futures (nearly all) are
            # dropped here too, or every step's future and result would stay until then.
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)
            first = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._count), future))
            if first:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            expired: list[Future[Any]] = []
            with self._cond:
                while self._heap and self._heap[0][2].done():
                    heapq.heappop(self._heap)
                if self._stopped:
                    return
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                expired.append(heapq.heappop(self._heap)[2])
            for future in expired:
                try:
                    future.set_exception(DeadlineMissed("inference missed its deadline"))
                except InvalidStateError:
                    continue
                self.misses += 1

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)


# --- the host --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Loaded:
    package: VerifiedPackage
    policy: EnsemblePolicy
    builder: ObservationBuilder
    action_tags: tuple[str, ...]

    @property
    def version(self) -> AgentVersion:
        return self.package.version


class PolicyHost:
    """Agent slots on one worker thread (see the module docstring).

    Public methods may be called from any thread; they return futures. The slot state is touched
    only by jobs on the worker.
    """

    def __init__(
        self,
        trust_store: TrustStore,
        catalog: ProcessCatalog,
        *,
        control: ControlSettings | None = None,
        limits: Mapping[str, TagLimits] | None = None,
        app_version: str = __version__,
        worker: SerialWorker | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "agent-worker",
    ) -> None:
        """Start the worker and the deadline watch.

        Args:
            trust_store: Keys whose package signatures are accepted.
            catalog: The site's tag catalogue; packages must fit it.
            control: ``inference_deadline_s`` comes from here.
            limits: The site's setpoint limits (max move for the bumpless ramp; shadow limit hits).
            app_version: Console version checked against the packages' range.
            worker: A not yet started worker to run the jobs on (default: a new one); the host
                starts and stops it.
            clock: Monotonic clock for deadlines and timings.
            name: Name of the worker thread (the deadline watch is ``<name>-deadline``).
        """
        self._trust = trust_store
        self._catalog = catalog
        self._control = control or ControlSettings()
        self._limits = dict(limits or {})
        self._app_version = app_version
        self._clock = clock
        self._max_moves: dict[str, float | None] = {}
        for tag in catalog.writable:
            site = self._limits.get(tag.name)
            site_move = site.max_move if site is not None else None
            self._max_moves[tag.name] = site_move if site_move is not None else tag.max_move
        self._slots: dict[Slot, _Loaded | None] = dict.fromkeys(Slot)
        self._duel: ShadowDuel | None = None
        self._ramping = False
        self._last_shadow: tuple[dict[str, float], dict[str, float]] | None = None
        self._seq = 0
        self._late = 0
        self._closed = False
        self.versions = SlotVersions()
        """The slot assignment after the last job that changed it (read from any thread)."""
        self._worker = worker or SerialWorker(name)
        self._worker.start()
        self._watch = _DeadlineWatch(f"{name}-deadline", clock)

    # --- plumbing ----------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise HostClosed("the policy host is closed")
        return self._worker.submit(self._counted, fn, *args)

    def _counted(self, fn: Callable[..., T], *args: Any) -> T:
        self._seq += 1
        return fn(*args)

    def _publish(self) -> None:
        def v(slot: Slot) -> AgentVersion | None:
            loaded = self._slots[slot]
            return None if loaded is None else loaded.version

        self.versions = SlotVersions(v(Slot.ACTIVE), v(Slot.PREVIOUS), v(Slot.CANDIDATE))
        active, candidate = self._slots[Slot.ACTIVE], self._slots[Slot.CANDIDATE]
        self._last_shadow = None
        if active is None or candidate is None:
            self._duel = None
            return
        ranges = {s.tag: (s.low, s.high) for s in active.package.manifest.actions}
        self._duel = ShadowDuel(
            active.version, candidate.version, ranges, limits=self._limits, catalog=self._catalog
        )

    @property
    def counters(self) -> HostCounters:
        """Jobs run, deadline misses and discarded late results so far."""
        return HostCounters(self._seq, self._watch.misses, self._late)

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new jobs, finish the queued ones, stop and join both threads."""
        self._closed = True
        self._worker.stop(timeout)
        self._watch.stop(timeout)

    # --- load --------------------------------------------------------------------------------

    def load(self, path: Path, slot: Slot = Slot.CANDIDATE) -> Future[AgentVersion]:
        """Verify the package at ``path``, open it and put it into ``slot``.

        The future fails with a :class:`PackageRefused` subclass (including ``PolicyGraphInvalid``
        for ONNX files that do not fit) or :class:`SlotOccupied` (the active slot is only loaded
        when empty; afterwards agents reach it by promotion). On failure no slot changes.
        """
        return self._submit(self._load, Path(path), slot)

    def _load(self, path: Path, slot: Slot) -> AgentVersion:
        occupant = self._slots[Slot.ACTIVE]
        if slot is Slot.ACTIVE and occupant is not None:
            raise SlotOccupied(
                f"the active slot holds {occupant.version.version}; "
                "load the package as candidate and promote it"
            )
        package = verify_package(
            path, self._trust, catalog=self._catalog, app_version=self._app_version
        )
        policy = EnsemblePolicy.from_package(package)
        loaded = _Loaded(
            package, policy, ObservationBuilder(package.manifest), package.manifest.action_tags
        )
        self._slots[slot] = loaded
        if slot is Slot.ACTIVE:
            self._ramping = True
        self._publish()
        log.info("loaded %s into the %s slot", package.version.version, slot.value)
        return package.version

    def discard_candidate(self) -> Future[AgentVersion | None]:
        """Empty the candidate slot; the future holds the version that was in it."""
        return self._submit(self._discard_candidate)

    def _discard_candidate(self) -> AgentVersion | None:
        old = self._slots[Slot.CANDIDATE]
        self._slots[Slot.CANDIDATE] = None
        self._publish()
        return None if old is None else old.version

    # --- inference ---------------------------------------------------------------------------

    def infer(
        self,
        observations: Observations,
        last_applied: Mapping[str, float],
        *,
        include_previous: bool = False,
    ) -> Future[InferenceResult]:
        """Run the active agent and the candidate (and the previous one if asked) on one observation.

        Args:
            observations: Latest (value, quality) or :class:`~app.domain.Sample` per tag.
            last_applied: Last applied setpoint per tag (bumpless ramp, shadow move checks).
            include_previous: Also run the previous agent (while the fallback chain uses it).

        Returns:
            A future for the :class:`InferenceResult`; it fails with :class:`DeadlineMissed` after
            ``inference_deadline_s``, or :class:`SlotEmpty` without an active agent.
        """
        submitted = self._clock()
        future: Future[InferenceResult] = Future()
        job = self._submit(
            self._infer, future, dict(observations), dict(last_applied), include_previous, submitted
        )
        self._watch.add(submitted + self._control.inference_deadline_s, future)
        job.add_done_callback(lambda done: self._forward_failure(done, future))
        return future

    def _forward_failure(self, job: Future[None], future: Future[InferenceResult]) -> None:
        exc = job.exception()
        if exc is not None:
            self._deliver(future, None, exc)

    def _deliver(
        self,
        future: Future[InferenceResult],
        result: InferenceResult | None,
        exc: BaseException | None = None,
    ) -> None:
        try:
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]
        except InvalidStateError:
            self._late += 1

    def _run_slot(
        self, slot: Slot, loaded: _Loaded, observations: Observations, shared: _SharedObs
    ) -> SlotOutcome:
        t0 = self._clock()
        ood: OodScore | None = None
        try:
            obs = shared.get(loaded, observations)
            ood = loaded.builder.ood(obs)
            acted = loaded.policy.act(obs)
        except ObservationRefused as exc:
            return SlotOutcome(
                slot, loaded.version, None, None, ood, self._clock() - t0, str(exc),
                ErrorKind.OBSERVATION_REFUSED,
            )  # fmt: skip
        except InferenceError as exc:
            return SlotOutcome(
                slot, loaded.version, None, None, ood, self._clock() - t0, str(exc),
                ErrorKind.RUNTIME_ERROR,
            )  # fmt: skip
        action = dict(zip(loaded.action_tags, acted.action.tolist(), strict=True))
        return SlotOutcome(slot, loaded.version, action, acted.uncertainty, ood, self._clock() - t0)

    def _infer(
        self,
        future: Future[InferenceResult],
        observations: Observations,
        last_applied: Mapping[str, float],
        include_previous: bool,
        submitted: float,
    ) -> None:
        start = self._clock()
        if future.done():  # already failed by the deadline watch: nothing to deliver
            self._late += 1
            return
        active = self._slots[Slot.ACTIVE]
        if active is None:
            self._deliver(future, None, SlotEmpty("no agent in the active slot"))
            return
        shared = _SharedObs()
        a = self._run_slot(Slot.ACTIVE, active, observations, shared)
        candidate = self._slots[Slot.CANDIDATE]
        c = (
            None
            if candidate is None
            else self._run_slot(Slot.CANDIDATE, candidate, observations, shared)
        )
        previous = self._slots[Slot.PREVIOUS]
        p = None
        if include_previous and previous is not None:
            p = self._run_slot(Slot.PREVIOUS, previous, observations, shared)
        action: dict[str, float] | None = None
        limited: tuple[str, ...] = ()
        if a.action is not None:
            action = a.action
            if self._ramping:
                action, limited = bumpless(a.action, last_applied, self._max_moves)
                self._ramping = bool(limited)
            if self._duel is not None and c is not None:
                self._duel.record(
                    a.action,
                    c.action,
                    last_applied,
                    incumbent_uncertainty=a.uncertainty,
                    candidate_uncertainty=c.uncertainty,
                )
                if c.action is not None:
                    self._last_shadow = (a.action, c.action)
        result = InferenceResult(
            self._seq, a, c, p, action, limited, start - submitted, self._clock() - start
        )
        self._deliver(future, result)

    # --- promote / rollback ------------------------------------------------------------------

    def promote(self, evidence: GateReport) -> Future[SwapResult]:
        """Candidate → active, active → previous, if ``evidence`` passed and is about these agents.

        Refused (``accepted`` False, with the reason; no slot changes) without a candidate, when a
        gate failed, or when the evidence names another candidate or incumbent.
        """
        return self._submit(self._promote, evidence)

    def _promote(self, evidence: GateReport) -> SwapResult:
        t0 = self._clock()
        active, candidate = self._slots[Slot.ACTIVE], self._slots[Slot.CANDIDATE]
        old = None if active is None else active.version
        refusal = None
        if candidate is None:
            refusal = "no candidate is loaded"
        elif evidence.candidate != candidate.version:
            refusal = (
                f"the evidence is about candidate {evidence.candidate.version}, "
                f"the candidate slot holds {candidate.version.version}"
            )
        elif evidence.incumbent != old:
            refusal = (
                f"the evidence compares with {evidence.incumbent.version}, "
                f"the active agent is {old.version if old else 'none'}"
            )
        elif not evidence.passed:
            refusal = "gates not passed: " + "; ".join(evidence.failures)
        if refusal is not None:
            return SwapResult(
                "promote", False, refusal, old, old, self.versions.previous, self._seq,
                self._clock() - t0, evidence,
            )  # fmt: skip
        self._slots[Slot.PREVIOUS] = active
        self._slots[Slot.ACTIVE] = candidate
        self._slots[Slot.CANDIDATE] = None
        self._ramping = True
        self._publish()
        new = self.versions.active
        log.info("promoted %s (previous: %s)", new.version if new else None, old)
        return SwapResult(
            "promote", True, "gates passed", old, new, self.versions.previous, self._seq,
            self._clock() - t0, evidence,
        )  # fmt: skip

    def rollback(self, reason: str) -> Future[SwapResult]:
        """Swap the active and the previous agent (refused if there is no previous agent)."""
        return self._submit(self._rollback, reason)

    def _rollback(self, reason: str) -> SwapResult:
        t0 = self._clock()
        active, previous = self._slots[Slot.ACTIVE], self._slots[Slot.PREVIOUS]
        old = None if active is None else active.version
        if previous is None:
            return SwapResult(
                "rollback", False, f"no previous agent to roll back to ({reason})", old, old,
                None, self._seq, self._clock() - t0,
            )  # fmt: skip
        self._slots[Slot.ACTIVE], self._slots[Slot.PREVIOUS] = previous, active
        self._ramping = True
        self._publish()
        return SwapResult(
            "rollback", True, reason, old, previous.version, old, self._seq, self._clock() - t0
        )

    # --- shadow duel -------------------------------------------------------------------------

    def shadow_stats(self) -> Future[ShadowStats | None]:
        """The current duel's statistics (``None`` without both an active agent and a candidate)."""
        return self._submit(lambda: None if self._duel is None else self._duel.stats())

    def gate_report(
        self, policy: ModePolicy, thresholds: GateThresholds | None = None
    ) -> Future[GateReport]:
        """Judge the candidate against the gates; fails with :class:`SlotEmpty` without a duel."""
        return self._submit(self._gate_report, policy, thresholds or GateThresholds())

    def _gate_report(self, policy: ModePolicy, thresholds: GateThresholds) -> GateReport:
        if self._duel is None:
            raise SlotEmpty("no shadow duel: an active agent and a candidate are needed")
        return self._duel.gates(policy, thresholds)

    # --- what-if -----------------------------------------------------------------------------

    def preview(
        self,
        measurements: Mapping[str, MeasurementLike],
        scenarios: Mapping[str, Mapping[str, float]],
        last_applied: Mapping[str, float] | None = None,
        *,
        horizon_s: float = 3600.0,
        dt_s: float = 60.0,
    ) -> Future[PreviewResult]:
        """What-if preview of ``scenarios`` against holding ``last_applied`` (see ``twin.preview``)."""
        return self._submit(
            self._preview, dict(measurements), dict(scenarios), last_applied, horizon_s, dt_s
        )

    def _preview(
        self,
        measurements: Mapping[str, MeasurementLike],
        scenarios: Mapping[str, Mapping[str, float]],
        last_applied: Mapping[str, float] | None,
        horizon_s: float,
        dt_s: float,
    ) -> PreviewResult:
        setpoints = {t.name for t in self._catalog.by_role(TagRole.SETPOINT)}
        only = {n: {t: v for t, v in s.items() if t in setpoints} for n, s in scenarios.items()}
        hold = (
            None
            if last_applied is None
            else {t: v for t, v in last_applied.items() if t in setpoints}
        )
        return preview(
            self._catalog.process, measurements, only, hold=hold, horizon_s=horizon_s, dt_s=dt_s
        )

    def shadow_kpi(
        self,
        measurements: Mapping[str, MeasurementLike],
        last_applied: Mapping[str, float] | None = None,
        *,
        horizon_s: float = 3600.0,
        dt_s: float = 60.0,
    ) -> Future[PreviewResult]:
        """Twin-predict the KPI of the last active and candidate actions and add it to the duel.

        The preview holds scenarios ``active`` and ``candidate``. Nothing is recorded if the
        preview is unavailable; the future fails with :class:`SlotEmpty` if no step produced both
        actions since the duel began.
        """
        return self._submit(self._shadow_kpi, dict(measurements), last_applied, horizon_s, dt_s)

    def _shadow_kpi(
        self,
        measurements: Mapping[str, MeasurementLike],
        last_applied: Mapping[str, float] | None,
        horizon_s: float,
        dt_s: float,
    ) -> PreviewResult:
        if self._duel is None or self._last_shadow is None:
            raise SlotEmpty("no shadow step with both an active and a candidate action yet")
        active, candidate = self._last_shadow
        result = self._preview(
            measurements, {"active": active, "candidate": candidate}, last_applied, horizon_s, dt_s
        )
        if result.available:
            self._duel.record_kpi(
                result.scenarios["active"].kpi_eur_h, result.scenarios["candidate"].kpi_eur_h
            )
        return result


class _SharedObs:
    """Builds each distinct observation spec once per job (active and candidate usually share)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], FloatArray] = {}

    def get(self, loaded: _Loaded, observations: Observations) -> FloatArray:
        tags = loaded.builder.tags
        obs = self._cache.get(tags)
        if obs is None:
            obs = self._cache[tags] = loaded.builder.build(observations)
        return obs


__all__ = [
    "DeadlineMissed",
    "ErrorKind",
    "HostClosed",
    "HostCounters",
    "InferenceResult",
    "PolicyHost",
    "SlotEmpty",
    "SlotOccupied",
    "SlotOutcome",
    "SlotVersions",
    "SwapResult",
    "bumpless",
    "fallback_events",
]
