"""The console's non-blocking view of a ``ControlCore``: every call returns a future at once.

Controller state lives in the control context (the PLC loop thread). The core's non-blocking
commands (``login_async``, ``status_async``, ``check_setpoints``, the alarm commands,
``read_manifests``) are used as they are; reads the core does not expose as futures are posted into
the context with ``in_context``. The agents view, which gathers several answers, is assembled on this
link's own ``console-io`` thread, so the GUI thread never waits. Model cards are read by the core
from the package folders the console knows (the site's package, loaded and staged candidates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from app.agent_runtime.manifest import Manifest
from app.agent_runtime.shadow import GateReport, GateThresholds, ShadowStats
from app.agent_runtime.twin import PreviewResult
from app.concurrency import SerialWorker
from app.controllers.agent import AgentController
from app.controllers.alarm_commands import AlarmVerdict
from app.controllers.auth import Session
from app.controllers.core import LEDGER_FILE, ControlCore, CoreStatus
from app.controllers.messages import DecisionVerdict, ModeVerdict, SwapVerdict
from app.controllers.safety import Verdict
from app.controllers.snapshot import SnapshotService
from app.domain import AgentVersion, Mode, Recommendation, RejectReason, Setpoint, Slot, utc_now
from app.ui.agents_panel import AcceptanceRow, AgentsView
from app.ui.alarms_panel import AlarmView

log = logging.getLogger(__name__)

T = TypeVar("T")


class CommandRefused(Exception):
    """The core refused a command (permission, session, state); the message says why."""


class CoreLink:
    """Futures for everything the console asks of ``core`` (which must be started).

    Args:
        core: A started control core.
    """

    def __init__(self, core: ControlCore) -> None:
        self.core = core
        self.site = core.site
        self.catalog = core.catalog
        self.bus = core.bus
        self.trends = core.trends
        self.ledger_path = core.data_dir / LEDGER_FILE
        self._io = SerialWorker("console-io")
        self._io.start()
        self._packages: list[Path] = []
        if core.site.agents.package is not None:
            self._packages.append(Path(core.site.agents.package))
        self._manifests: dict[str, Manifest] = {}

    @property
    def snapshot(self) -> SnapshotService:
        """The core's snapshot service (replaced when the core starts; always read it here)."""
        return self.core.snapshot

    def close(self) -> None:
        """Stop the link's thread (the core is stopped by its owner)."""
        self._io.stop()

    # --- plumbing ----------------------------------------------------------------------------------

    def in_context(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in the control context; its result or exception arrives in the future."""
        done: Future[T] = Future()

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                done.set_exception(exc)

        if not self.core.loop.running:
            done.set_exception(CommandRefused("the control core is not running"))
            return done
        self.core.loop.call_soon(run)
        return done

    def off_gui(self, fn: Callable[[], T]) -> Future[T]:
        """Run a blocking call on the link's own thread."""
        if not self._io.running:
            done: Future[T] = Future()
            done.set_exception(CommandRefused("the console is closing"))
            return done
        return self._io.submit(fn)

    # --- session -----------------------------------------------------------------------------------

    def login(self, user: str, password: str) -> Future[Session]:
        """Check the credentials (scrypt) and open a session."""
        return self.core.login_async(user, password)

    def logout(self, session: Session) -> Future[None]:
        """End ``session``."""
        return self.in_context(lambda: self.core.auth.logout(session))

    def session_alive(self, session: Session) -> Future[bool]:
        """False once ``session`` ended or passed the idle timeout."""
        return self.in_context(lambda: self.core.auth.is_active(session))

    @property
    def idle_timeout_s(self) -> float:
        """The auth service's idle timeout."""
        return float(self.core.auth.idle_timeout_s)

    def status(self) -> Future[CoreStatus]:
        """A consistent picture of the core."""
        return self.core.status_async()

    # --- mode --------------------------------------------------------------------------------------

    def request_mode(
        self, mode: Mode, session: Session | None, *, confirm: bool, reason: str = ""
    ) -> Future[ModeVerdict]:
        """Ask for ``mode`` (AUTOMATIC needs ``confirm``)."""
        return self.core.request_mode(mode, session, confirm=confirm, reason=reason)

    def return_to_base_control(self, session: Session | None) -> Future[ModeVerdict]:
        """Hand the plant back to the PLC's base control (no login needed)."""
        return self.core.return_to_base_control(session)

    # --- recommendations ---------------------------------------------------------------------------

    def _agent(self) -> AgentController:
        if self.core.agent is None:
            raise CommandRefused("the control core is not started")
        return self.core.agent

    def pending(self) -> Future[tuple[Recommendation, ...]]:
        """Recommendations waiting for an operator."""
        return self.in_context(lambda: tuple(self._agent().pending))

    def approve(self, rec_id: str, session: Session | None) -> Future[DecisionVerdict]:
        """Approve as proposed."""
        return self._agent().approve(rec_id, session)

    def modify(
        self, rec_id: str, setpoints: tuple[Setpoint, ...], session: Session | None
    ) -> Future[DecisionVerdict]:
        """Approve with changed values."""
        values = {sp.tag: sp.value for sp in setpoints}
        return self._agent().modify(rec_id, values, session)

    def reject(
        self, rec_id: str, reason: RejectReason, note: str, session: Session | None
    ) -> Future[DecisionVerdict]:
        """Reject with a reason code and text."""
        return self._agent().reject(rec_id, reason, note, session)

    def check_setpoints(
        self, setpoints: tuple[Setpoint, ...], session: Session | None
    ) -> Future[tuple[Verdict, ...]]:
        """The envelope's verdict on each value, as an operator write would be judged now."""
        return self.core.check_setpoints({sp.tag: sp.value for sp in setpoints}, session)

    def preview(
        self, rec: Recommendation, setpoints: tuple[Setpoint, ...], horizon_s: float
    ) -> Future[PreviewResult]:
        """What-if: ``setpoints`` held vs the current setpoints, ``horizon_s`` ahead."""
        host = self.core.host
        if host is None:
            raise CommandRefused("no agent runtime")
        snap = self.core.snapshot.snapshot()
        current = {sp.tag: sp.value for sp in rec.current}
        return host.preview(
            snap.samples,
            {"recommended": {sp.tag: sp.value for sp in setpoints}},
            current or None,
            horizon_s=horizon_s,
            dt_s=max(60.0, horizon_s / 60.0),
        )

    # --- alarms ------------------------------------------------------------------------------------

    def alarm_view(self) -> Future[AlarmView]:
        """The alarm list and journal."""
        alarms = self.core.alarms
        return self.in_context(lambda: AlarmView(tuple(alarms.alarms()), alarms.journal))

    def ack_alarm(self, alarm_id: str, note: str, session: Session | None) -> Future[AlarmVerdict]:
        """Acknowledge with a note (operator); a refusal arrives as ``CommandRefused``."""
        return _accepted(self.core.ack_alarm(alarm_id, session, note))

    def shelve_alarm(
        self, alarm_id: str, duration_s: float, reason: str, session: Session | None
    ) -> Future[AlarmVerdict]:
        """Shelve for ``duration_s`` (operator, reason required)."""
        return _accepted(self.core.shelve_alarm(alarm_id, session, duration_s, reason))

    def unshelve_alarm(self, alarm_id: str, session: Session | None) -> Future[AlarmVerdict]:
        """End a shelve early (operator)."""
        return _accepted(self.core.unshelve_alarm(alarm_id, session))

    # --- agents ------------------------------------------------------------------------------------

    def add_package(self, path: Path) -> None:
        """Remember a package folder so its model card can be shown (staged candidates)."""
        if path not in self._packages:
            self._packages.append(path)

    def promote(self, session: Session | None) -> Future[SwapVerdict]:
        """Promote the candidate (engineer; the gates decide)."""
        return self._agent().promote(session)

    def rollback(self, session: Session | None, reason: str) -> Future[SwapVerdict]:
        """Swap the active and the previous agent (supervisor, reason required)."""
        return self._agent().rollback(session, reason)

    def agents_view(self) -> Future[AgentsView]:
        """Slots, model cards, shadow statistics, gates and acceptance, gathered off the GUI."""
        return self.off_gui(self._gather_agents)

    def _gather_agents(self) -> AgentsView:
        began = utc_now()
        host = self.core.host
        notes: list[str] = []
        slots: dict[Slot, AgentVersion | None] = dict.fromkeys(Slot)
        stats: ShadowStats | None = None
        gates: GateReport | None = None
        if host is not None:
            v = host.versions
            slots = {Slot.ACTIVE: v.active, Slot.PREVIOUS: v.previous, Slot.CANDIDATE: v.candidate}
            if v.active is not None and v.candidate is not None:
                try:
                    stats = host.shadow_stats().result(10)
                    # The controller's own thresholds: the live shadow steps use them too.
                    agent = self.core.agent
                    policy = agent.policy if agent is not None else self.site.modes
                    thresholds = agent.settings.gates if agent is not None else GateThresholds()
                    gates = host.gate_report(policy, thresholds).result(10)
                except Exception as exc:  # noqa: BLE001 - shown as a note
                    notes.append(f"shadow duel unavailable: {exc}")
        else:
            notes.append("no agent runtime")
        if slots[Slot.ACTIVE] is None:
            notes.append("no agent loaded: the console runs without recommendations")
        acceptance = self.in_context(lambda: self._agent().acceptance()).result(10)
        rows = tuple(
            AcceptanceRow(
                a.version,
                a.proposed,
                a.approved,
                a.modified,
                a.rejected,
                a.expired,
                a.auto_applied,
                a.acceptance_rate,
            )
            for a in acceptance
        )
        cards = {slot: self._manifest_for(version) for slot, version in slots.items()}
        return AgentsView(slots, cards, stats, gates, rows, "; ".join(notes), began)

    def _manifest_for(self, version: AgentVersion | None) -> Manifest | None:
        if version is None:
            return None
        if version.sha256 not in self._manifests:
            try:
                self._manifests.update(self.core.read_manifests(self._packages).result(10))
            except Exception as exc:  # noqa: BLE001 - the card shows without the manifest
                log.warning("model cards unreadable: %s", exc)
        return self._manifests.get(version.sha256)


def _accepted(verdict: Future[AlarmVerdict]) -> Future[AlarmVerdict]:
    """``verdict``, with a refused command turned into ``CommandRefused``."""
    out: Future[AlarmVerdict] = Future()

    def done(f: Future[AlarmVerdict]) -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
        elif not f.result().accepted:
            out.set_exception(CommandRefused(f.result().reason))
        else:
            out.set_result(f.result())

    verdict.add_done_callback(done)
    return out


__all__ = ["CommandRefused", "CoreLink"]
