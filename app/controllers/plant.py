"""PlantController: the PLC driver's owner and the only caller of ``driver.write``.

It runs in the control context (the PLC I/O loop thread) and

- connects to the PLC, retrying the first connection with exponential backoff (an authentication or
  configuration refusal is not retried: it raises a critical alarm and needs a fixed site file),
  and publishes a ``ConnectionChanged`` event for every state change of the driver;
- subscribes every tag of the catalogue into the snapshot service; the supervision tick copies the
  snapshot into the trend buffers;
- serves ``request_write``: safety envelope → ledger record (no record, no write) → driver write
  with readback → ``SafetyEnvelope.record_write`` → ledger record of the result → events. A change
  larger than one tick at the site's ``max_rate_per_s`` is applied as a ramp, one step per tick, each
  step re-checked for input quality and interlocks;
- runs the supervision tick: alarm shelve expiry, input freshness, ramps, the health verdict, the
  console heartbeat (written **only while the core is healthy**, so the PLC watchdog watches the
  control core and not merely the socket) and the ``agent_in_control`` handshake.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

from app.config import TagLimits
from app.controllers import alarm_points as ap
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.context import Cancellable, ControlContext
from app.controllers.events import EventBus
from app.controllers.ledger import LedgerError
from app.controllers.messages import (
    HealthChanged,
    InputsChanged,
    SupervisionChanged,
    WriteCompleted,
    WriteOutcome,
    WriteOutcomeKind,
    WriteRejected,
)
from app.controllers.safety import Layer, SafetyEnvelope, Verdict, ramp
from app.controllers.snapshot import SnapshotService
from app.controllers.tasks import spawn
from app.controllers.trend_buffer import TrendBuffer
from app.domain import (
    ConnectionChanged,
    ConnectionState,
    Origin,
    Quality,
    Sample,
    Setpoint,
    Snapshot,
    TagId,
    utc_now,
)
from app.drivers.base import (
    AuthFailedError,
    DriverConfigError,
    HeartbeatWriter,
    PlcDriver,
    SubscriptionHandle,
    TagWriteResult,
    WriteResult,
    WriteStatus,
)
from app.plant.catalog import (
    AGENT_IN_CONTROL,
    CONSOLE_HEARTBEAT,
    PLC_HEARTBEAT,
    SUPERVISORY_ACTIVE,
    WATCHDOG_TRIPPED,
    ProcessCatalog,
)

log = logging.getLogger(__name__)

HealthCheck = Callable[[], str | None]
"""Returns why the core is unhealthy, or ``None``."""


@dataclass(frozen=True, slots=True)
class PlantSettings:
    """Timing of the plant controller.

    Attributes:
        supervision_period_s: Period of the supervision tick.
        heartbeat_period_s: Period of the console heartbeat (at most one beat per tick).
        connect_first_delay_s: First retry delay of the initial connection.
        connect_max_delay_s: Largest retry delay of the initial connection.
        handshake_retry_s: Time to wait for a handshake write to show in the readback before
            writing it again.
    """

    supervision_period_s: float = 1.0
    heartbeat_period_s: float = 1.0
    connect_first_delay_s: float = 0.5
    connect_max_delay_s: float = 10.0
    handshake_retry_s: float = 3.0

    def __post_init__(self) -> None:
        for name in ("supervision_period_s", "heartbeat_period_s", "connect_first_delay_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PlantSettings.{name} must be positive, got {value!r}")
        if self.connect_max_delay_s < self.connect_first_delay_s:
            raise ValueError("connect_max_delay_s must not be below connect_first_delay_s")


@dataclass(slots=True)
class _WriteJob:
    request_id: str
    origin: Origin
    targets: dict[TagId, float]
    current: dict[TagId, float]
    rates: dict[TagId, float | None]
    done: Future[WriteOutcome]
    verdicts: tuple[Verdict, ...]
    steps: int = 0
    in_flight: bool = False
    results: dict[TagId, TagWriteResult] = field(default_factory=dict)

    @property
    def setpoints(self) -> tuple[Setpoint, ...]:
        return tuple(Setpoint(t, v) for t, v in self.targets.items())

    def reached(self) -> bool:
        return all(self.current[t] == v for t, v in self.targets.items())


class PlantController:
    """Driver lifecycle, snapshot, trends, the write path and the supervision tick.

    Args:
        ctx: The control context.
        driver: The PLC driver (owned from now on).
        catalog: The site's process catalogue.
        snapshot: Latest sample per tag (fed by the subscription).
        trends: Trend buffers (one row per supervision tick).
        safety: The safety envelope.
        trail: The audit trail.
        bus: The event bus.
        alarms: The alarm manager (with ``CORE_ALARMS`` defined).
        limits: The site's setpoint limits (``max_rate_per_s`` ramps).
        settings: Timing.
    """

    def __init__(
        self,
        ctx: ControlContext,
        driver: PlcDriver,
        catalog: ProcessCatalog,
        snapshot: SnapshotService,
        trends: TrendBuffer,
        safety: SafetyEnvelope,
        trail: AuditTrail,
        bus: EventBus,
        alarms: AlarmManager,
        limits: Mapping[TagId, TagLimits],
        settings: PlantSettings | None = None,
    ) -> None:
        self._ctx = ctx
        self.driver = driver
        self.catalog = catalog
        self.snapshot = snapshot
        self.trends = trends
        self.safety = safety
        self._trail = trail
        self._bus = bus
        self._alarms = alarms
        self._limits = dict(limits)
        self.settings = settings or PlantSettings()
        self._heartbeat = HeartbeatWriter(driver, self.settings.heartbeat_period_s)
        self._ids = itertools.count(1)
        self._jobs: dict[str, _WriteJob] = {}
        self._health_checks: list[HealthCheck] = []
        self._tick_listeners: list[Callable[[], None]] = []
        self._accepting = True
        self._started = False
        self._stopped = False
        self._tick_handle: Cancellable | None = None
        self._retry_handle: Cancellable | None = None
        self._connect_attempts = 0
        self._subscribed = False
        self._want_supervision = False
        self._handshake_sent: tuple[float, float] | None = None
        self._beat_in_flight = False
        self._last_beat = -math.inf
        self._unusable: tuple[tuple[TagId, str], ...] = ()
        self._supervision: tuple[bool, bool, bool] | None = None
        self._health: tuple[bool, tuple[str, ...]] | None = None
        self.ticks = 0
        self.heartbeats = 0
        self.last_outcome: WriteOutcome | None = None
        self._watched = tuple(
            t.name for t in catalog.tags if t.name not in (CONSOLE_HEARTBEAT, PLC_HEARTBEAT)
        )
        driver.add_state_listener(self._on_driver_state)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (with retries) and start the supervision tick; call from the control context."""
        if self._started:
            return
        self._started = True
        self._bus.publish(ConnectionChanged("plc", self.driver.state, "starting"))
        self._connect()
        self._tick_handle = self._ctx.call_later(self.settings.supervision_period_s, self._tick)

    def refuse_commands(self) -> None:
        """Stop accepting write requests (first step of the shutdown order)."""
        self._accepting = False

    def stop_cadence(self) -> None:
        """Cancel the supervision tick and connection retries (no heartbeat after this)."""
        self._stopped = True
        for handle in (self._tick_handle, self._retry_handle):
            if handle is not None:
                handle.cancel()
        for job in list(self._jobs.values()):
            self._finish(job, WriteOutcomeKind.CANCELLED, "the core is stopping; ramp stopped")

    def add_health_check(self, check: HealthCheck) -> None:
        """Add a condition the heartbeat depends on (e.g. the agent controller's)."""
        self._health_checks.append(check)

    def add_tick_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` at the end of every supervision tick (control context)."""
        self._tick_listeners.append(listener)

    @property
    def connected(self) -> bool:
        """True while the driver is connected."""
        return self.driver.state is ConnectionState.CONNECTED

    @property
    def supervision_requested(self) -> bool:
        """True while the core asks the PLC for supervisory control."""
        return self._want_supervision

    @property
    def healthy(self) -> bool:
        """The last health verdict of the supervision tick."""
        return self._health is not None and self._health[0]

    @property
    def health_reasons(self) -> tuple[str, ...]:
        """Why the core is unhealthy (empty when healthy)."""
        return () if self._health is None else self._health[1]

    @property
    def unusable_inputs(self) -> dict[TagId, str]:
        """Watched tags that may not be acted on now, with the reason."""
        return dict(self._unusable)

    @property
    def pending_writes(self) -> int:
        """Write requests still ramping or in flight."""
        return len(self._jobs)

    # --- connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._stopped:
            return
        self._connect_attempts += 1
        spawn(self._ctx, self.driver.connect()).add_done_callback(self._on_connected)

    def _on_connected(self, fut: Future[None]) -> None:
        exc = fut.exception()
        if exc is None:
            self._connect_attempts = 0
            expiring: tuple[str, ...] = getattr(self.driver, "certificate_warnings", ())
            self._set_alarm(ap.PLC_CERTIFICATE, bool(expiring), "; ".join(expiring) or None)
            if not self._subscribed:
                self._subscribed = True
                tags = [t.name for t in self.catalog.tags]
                sub = spawn(self._ctx, self.driver.subscribe(tags, self.snapshot.update))
                sub.add_done_callback(self._on_subscribed)
            return
        if isinstance(exc, AuthFailedError | DriverConfigError):
            log.error("PLC refused the connection, not retrying: %s", exc)
            self._alarms.raise_alarm(ap.PLC_CONFIG, f"PLC refused the connection: {exc}")
            return
        delay = min(
            self.settings.connect_max_delay_s,
            self.settings.connect_first_delay_s * 2 ** min(self._connect_attempts - 1, 16),
        )
        log.warning(
            "PLC connection attempt %d failed (%s); retrying in %.1f s",
            self._connect_attempts,
            exc,
            delay,
        )
        self._set_alarm(ap.PLC_CONNECTION, True, f"PLC unreachable: {exc}")
        if not self._stopped:
            self._retry_handle = self._ctx.call_later(delay, self._connect)

    def _on_subscribed(self, fut: Future[SubscriptionHandle]) -> None:
        exc = fut.exception()
        if exc is not None:
            self._subscribed = False
            log.error("subscribing the PLC tags failed: %s", exc)
            self._alarms.raise_alarm(ap.PLC_CONFIG, f"cannot subscribe the PLC tags: {exc}")

    def _on_driver_state(self, state: ConnectionState, detail: str) -> None:
        self._bus.publish(ConnectionChanged("plc", state, detail))
        if state is ConnectionState.CONNECTED:
            self._set_alarm(ap.PLC_CONNECTION, False)
            self._handshake_sent = None
        elif state in (ConnectionState.RECONNECTING, ConnectionState.DISCONNECTED):
            self._set_alarm(ap.PLC_CONNECTION, True, f"PLC connection {state.value}: {detail}")
        elif state in (ConnectionState.AUTH_FAILED, ConnectionState.CONFIG_ERROR):
            self._set_alarm(ap.PLC_CONFIG, True, f"PLC connection {state.value}: {detail}")

    def _set_alarm(self, alarm_id: str, active: bool, message: str | None = None) -> None:
        point = self._alarms.point(alarm_id)
        if point.active != active:
            self._alarms.set_condition(alarm_id, active, message)

    # --- supervision ---------------------------------------------------------------------------

    def request_supervision(self, wanted: bool) -> None:
        """Ask the PLC for supervisory control (``agent_in_control``) or hand back to base control.

        Call from the control context. Handing back writes ``agent_in_control = 0`` at once.
        """
        changed = wanted != self._want_supervision
        self._want_supervision = wanted
        if changed:
            self._handshake_sent = None
        if changed and not wanted:
            self._stop_jobs("control handed back to base control")
        self._handshake(self.snapshot.snapshot())

    def _handshake(self, snap: Snapshot) -> None:
        if not self.connected:
            return
        want = 1.0 if self._want_supervision else 0.0
        if want == 1.0 and not self._healthy_now():
            return  # the PLC only gets control from a healthy core
        sample = snap.samples.get(AGENT_IN_CONTROL)
        if sample is not None and sample.quality.usable and sample.value == want:
            return
        now = self._ctx.monotonic()
        if self._handshake_sent is not None:
            value, when = self._handshake_sent
            if value == want and now - when < self.settings.handshake_retry_s:
                return
        self._handshake_sent = (want, now)
        origin = Origin.system("handshake")
        verdict = self.safety.check(Setpoint(AGENT_IN_CONTROL, want), snap, origin, now)
        if not verdict.ok:
            log.error("handshake write refused by the envelope: %s", verdict.reason)
            return
        what = "request supervisory control" if want else "hand back to base control"
        if (
            not self._trail.try_record(
                "handshake", origin, f"{AGENT_IN_CONTROL} = {want:g}: {what}", {"value": want}
            )
            and want == 1.0
        ):
            return  # handing back proceeds without a record; taking control does not
        write = spawn(self._ctx, self.driver.write([Setpoint(AGENT_IN_CONTROL, want)]))
        write.add_done_callback(partial(self._on_handshake_written, want))

    def _on_handshake_written(self, want: float, fut: Future[WriteResult]) -> None:
        exc = fut.exception()
        if exc is not None or not fut.result().ok:
            detail = str(exc) if exc is not None else fut.result().results[0].reason
            log.warning("handshake write %s = %g failed: %s", AGENT_IN_CONTROL, want, detail)

    def _healthy_now(self) -> bool:
        return not self._health_reasons()

    def _health_reasons(self) -> tuple[str, ...]:
        reasons: list[str] = []
        if self._stopped:
            reasons.append("the core is stopping")
        if not self.connected:
            reasons.append(f"PLC {self.driver.state.value}")
        if not self._trail.healthy:
            reasons.append(f"audit ledger failing: {self._trail.last_error}")
        for check in self._health_checks:
            problem = check()
            if problem:
                reasons.append(problem)
        return tuple(reasons)

    def _tick(self) -> None:
        if self._stopped:
            return
        self._tick_handle = self._ctx.call_later(self.settings.supervision_period_s, self._tick)
        self.ticks += 1
        now = self._ctx.monotonic()
        try:
            self._alarms.tick()
            snap = self.snapshot.snapshot()
            if snap.samples:
                self.trends.record(now, snap)
            self._check_inputs(snap)
            self._check_supervision(snap)
            self._step_ramps(now, snap)
            self._update_health()
            if self.healthy and now - self._last_beat >= self.settings.heartbeat_period_s - 1e-9:
                self._beat(now)
            self._handshake(snap)
        except Exception:
            log.exception("supervision tick failed")
        for listener in self._tick_listeners:
            try:
                listener()
            except Exception:
                log.exception("tick listener %r failed", listener)

    def _check_inputs(self, snap: Snapshot) -> None:
        if not self._subscribed:
            return
        unusable: list[tuple[TagId, str]] = []
        for tag in self._watched:
            sample = snap.samples.get(tag)
            if sample is None:
                unusable.append((tag, "missing"))
            elif not sample.quality.usable:
                unusable.append((tag, sample.quality.value))
        found = tuple(unusable)
        if found == self._unusable:
            return
        self._unusable = found
        self._bus.publish(InputsChanged(found))
        if self.connected:
            names = ", ".join(f"{t} ({why})" for t, why in found[:5])
            self._set_alarm(ap.PLC_INPUTS, bool(found), f"inputs not usable: {names}")

    def _check_supervision(self, snap: Snapshot) -> None:
        def flag(tag: TagId) -> bool:
            s = snap.samples.get(tag)
            return s is not None and s.quality.usable and s.value >= 0.5

        state = (self._want_supervision, flag(SUPERVISORY_ACTIVE), flag(WATCHDOG_TRIPPED))
        if state == self._supervision:
            return
        self._supervision = state
        self._bus.publish(SupervisionChanged(*state))
        self._set_alarm(ap.PLC_WATCHDOG, state[2])

    def _update_health(self) -> None:
        reasons = self._health_reasons()
        health = (not reasons, reasons)
        if health != self._health:
            self._health = health
            if reasons:
                log.warning("control core unhealthy (heartbeat stopped): %s", "; ".join(reasons))
            self._bus.publish(HealthChanged(*health))
        self._set_alarm(ap.CORE_AUDIT, not self._trail.healthy, self._trail.last_error or None)

    def _beat(self, now: float) -> None:
        if self._beat_in_flight:
            return
        self._beat_in_flight = True
        self._last_beat = now
        spawn(self._ctx, self._heartbeat.beat()).add_done_callback(self._on_beat)

    def _on_beat(self, fut: Future[TagWriteResult]) -> None:
        self._beat_in_flight = False
        if fut.exception() is None and fut.result().ok:
            self.heartbeats += 1

    # --- writes --------------------------------------------------------------------------------

    def request_write(self, setpoints: Sequence[Setpoint], origin: Origin) -> Future[WriteOutcome]:
        """Ask for setpoints to be written; callable from any thread.

        Returns:
            A future with the :class:`WriteOutcome` once the setpoints are confirmed (after the
            ramp, if any), rejected or failed.
        """
        done: Future[WriteOutcome] = Future()
        request_id = f"w{next(self._ids)}"
        self._ctx.post(partial(self._write, request_id, tuple(setpoints), origin, done))
        return done

    def _reject(
        self,
        request_id: str,
        setpoints: tuple[Setpoint, ...],
        origin: Origin,
        done: Future[WriteOutcome],
        kind: WriteOutcomeKind,
        reason: str,
        verdicts: tuple[Verdict, ...] = (),
        layer: Layer | None = None,
    ) -> None:
        outcome = WriteOutcome(request_id, setpoints, origin, kind, reason, verdicts, (), layer)
        if kind is WriteOutcomeKind.REJECTED:
            self._trail.try_record(
                "write_rejected",
                origin,
                f"write {request_id} rejected: {reason}",
                {
                    "request_id": request_id,
                    "setpoints": {sp.tag: sp.value for sp in setpoints},
                    "layer": None if layer is None else layer.value,
                    "reason": reason,
                },
            )
        self.last_outcome = outcome
        self._bus.publish(WriteRejected(outcome))
        done.set_result(outcome)

    def _write(
        self,
        request_id: str,
        setpoints: tuple[Setpoint, ...],
        origin: Origin,
        done: Future[WriteOutcome],
    ) -> None:
        reject = partial(self._reject, request_id, setpoints, origin, done)
        if not self._accepting or self._stopped:
            reject(WriteOutcomeKind.NOT_ACCEPTED, "the core is stopping")
            return
        if not self.connected:
            reject(WriteOutcomeKind.NOT_ACCEPTED, f"PLC {self.driver.state.value}")
            return
        tags = [sp.tag for sp in setpoints]
        if not setpoints or len(set(tags)) != len(tags):
            reject(
                WriteOutcomeKind.REJECTED,
                f"a write needs one value per tag, got {tags}",
                layer=Layer.REQUEST,
            )
            return
        snap = self.snapshot.snapshot()
        now = self._ctx.monotonic()
        verdicts = tuple(self.safety.check(sp, snap, origin, now) for sp in setpoints)
        refused = [v for v in verdicts if not v.ok]
        if refused:
            first = refused[0]
            reject(WriteOutcomeKind.REJECTED, first.reason, verdicts, first.layer)
            return
        current = {sp.tag: snap.samples[sp.tag].value for sp in setpoints if sp.tag in snap.samples}
        try:
            self._trail.record(
                "write_requested",
                origin,
                f"write {request_id}: "
                + ", ".join(
                    f"{sp.tag} {current.get(sp.tag, math.nan):g} -> {sp.value:g}"
                    for sp in setpoints
                ),
                {
                    "request_id": request_id,
                    "setpoints": {
                        sp.tag: {"old": current.get(sp.tag), "new": sp.value} for sp in setpoints
                    },
                    "verdict": "ok",
                },
            )
        except LedgerError as exc:
            reject(WriteOutcomeKind.AUDIT_FAILED, f"not written: the ledger failed ({exc})")
            return
        for job in list(self._jobs.values()):
            if set(job.targets) & set(tags):
                self._finish(job, WriteOutcomeKind.CANCELLED, f"superseded by write {request_id}")
        rates = {
            sp.tag: (self._limits[sp.tag].max_rate_per_s if sp.tag in self._limits else None)
            for sp in setpoints
        }
        job = _WriteJob(
            request_id,
            origin,
            {sp.tag: sp.value for sp in setpoints},
            {t: current.get(t, math.nan) for t in tags},
            rates,
            done,
            verdicts,
        )
        self._jobs[request_id] = job
        self._write_step(job)

    def _next_values(self, job: _WriteJob) -> dict[TagId, float]:
        period = self.settings.supervision_period_s
        out: dict[TagId, float] = {}
        for tag, target in job.targets.items():
            cur, rate = job.current[tag], job.rates[tag]
            if rate is None or not math.isfinite(cur):
                out[tag] = target
            else:
                out[tag] = ramp(cur, target, rate, period)
        return out

    def _write_step(self, job: _WriteJob) -> None:
        values = self._next_values(job)
        pending = [Setpoint(t, v) for t, v in values.items() if v != job.current[t]]
        if not pending:
            pending = [Setpoint(t, v) for t, v in values.items()]
        job.in_flight = True
        job.steps += 1
        spawn(self._ctx, self.driver.write(pending)).add_done_callback(
            partial(self._on_step_written, job)
        )

    def _on_step_written(self, job: _WriteJob, fut: Future[WriteResult]) -> None:
        job.in_flight = False
        if job.request_id not in self._jobs:
            return  # superseded or stopped meanwhile
        exc = fut.exception()
        if exc is not None:
            self._finish(job, WriteOutcomeKind.FAILED, f"driver error: {exc}")
            return
        result = fut.result()
        for r in result.results:
            job.results[r.tag] = r
        if not result.ok:
            reasons = "; ".join(f"{r.tag}: {r.status.value} {r.reason}" for r in result.failures)
            self._finish(job, WriteOutcomeKind.FAILED, f"PLC write failed: {reasons}")
            return
        now = self._ctx.monotonic()
        first = job.steps == 1
        for r in result.results:
            job.current[r.tag] = r.requested
            if first:
                self.safety.record_write(Setpoint(r.tag, r.requested), now)
        # The subscription lags the PLC by its publishing interval; until it catches up the
        # envelope would measure the next move from the value before this write.
        self.snapshot.update_many(
            Sample(r.tag, r.readback, Quality.GOOD, utc_now(), now)
            for r in result.results
            if r.status is WriteStatus.CONFIRMED and math.isfinite(r.readback)
        )
        if job.reached():
            self._finish(job, WriteOutcomeKind.CONFIRMED, "")

    def _step_ramps(self, now: float, snap: Snapshot) -> None:
        for job in list(self._jobs.values()):
            if job.in_flight:
                continue
            for tag, value in self._next_values(job).items():
                verdict = self.safety.check_conditions(Setpoint(tag, value), snap, now)
                if not verdict.ok:
                    self._finish(
                        job,
                        WriteOutcomeKind.FAILED,
                        f"ramp stopped at {tag} = {job.current[tag]:g}: {verdict.reason}",
                    )
                    break
            else:
                self._write_step(job)

    def _stop_jobs(self, reason: str) -> None:
        for job in list(self._jobs.values()):
            self._finish(job, WriteOutcomeKind.CANCELLED, reason)

    def _finish(self, job: _WriteJob, kind: WriteOutcomeKind, reason: str) -> None:
        if self._jobs.pop(job.request_id, None) is None:
            return
        results = tuple(job.results[t] for t in job.targets if t in job.results)
        outcome = WriteOutcome(
            job.request_id, job.setpoints, job.origin, kind, reason, job.verdicts, results
        )
        self.last_outcome = outcome
        summary = f"write {job.request_id} {kind.value}" + (f": {reason}" if reason else "")
        self._trail.try_record(
            "write_result",
            job.origin,
            summary,
            {
                "request_id": job.request_id,
                "outcome": kind.value,
                "reason": reason,
                "steps": job.steps,
                "readback": {r.tag: r.readback for r in results},
                "status": {r.tag: r.status.value for r in results},
            },
        )
        if kind is WriteOutcomeKind.CONFIRMED:
            self._set_alarm(ap.PLC_WRITE, False)
        elif kind is WriteOutcomeKind.FAILED:
            self._set_alarm(ap.PLC_WRITE, True, f"write {job.request_id} failed: {reason}")
        self._bus.publish(WriteCompleted(outcome))
        job.done.set_result(outcome)

    # --- reads for other controllers ---------------------------------------------------------

    def current_setpoints(self) -> dict[TagId, float]:
        """The PLC's readback of every setpoint with a usable value."""
        snap = self.snapshot.snapshot()
        out: dict[TagId, float] = {}
        for tdef in self.catalog.setpoints:
            sample: Sample | None = snap.samples.get(tdef.name)
            if sample is not None and sample.quality.usable:
                out[tdef.name] = sample.value
        return out


__all__ = ["HealthCheck", "PlantController", "PlantSettings"]
