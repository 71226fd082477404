"""ModeController: OFF (PLC base control), ADVISORY and AUTOMATIC, and every way between them.

- **OFF**: the console hands back to the PLC's base control (``agent_in_control = 0``) and only
  watches. Returning to base control needs **no login** (IEC 62443-3-3 SR 1.1: authentication must
  not impede an emergency action) and proceeds even if the ledger cannot record it.
- **ADVISORY** (operator or above): the console holds supervisory control (``agent_in_control = 1``)
  so that approved setpoints take effect and stay; the agent recommends, an operator decides.
- **AUTOMATIC**: the site's ``automatic_min_role`` (engineer by default) **and** an explicit
  confirmation; the PLC must be connected, the inputs usable, an agent active and in charge.

Automatic demotion (each audited and alarmed): AUTOMATIC → ADVISORY on a driver fault (failed
write), stale or bad inputs, an agent deadline miss, uncertainty above ``max_uncertainty``, an OOD
score above ``max_ood_score`` or ``max_consecutive_rejections`` safety rejections of agent writes in a
row (the agent controller reports the agent-side triggers through :meth:`demote`); any mode → OFF on
loss of the PLC connection or when the fallback chain reaches base control.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from app.config import ModePolicy
from app.controllers import alarm_points as ap
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.auth import Action, AuthError, AuthService, PermissionDenied, Session
from app.controllers.context import ControlContext
from app.controllers.events import EventBus
from app.controllers.ledger import LedgerError
from app.controllers.messages import (
    InputsChanged,
    ModeVerdict,
    WriteCompleted,
    WriteOutcomeKind,
    WriteRejected,
)
from app.controllers.plant import PlantController
from app.domain import (
    ConnectionChanged,
    ConnectionState,
    Mode,
    ModeChanged,
    Origin,
    OriginKind,
    Role,
)

log = logging.getLogger(__name__)

Precondition = Callable[[Mode], str | None]
"""Returns why ``mode`` may not be entered now, or ``None``."""

_LOST = (ConnectionState.RECONNECTING, ConnectionState.DISCONNECTED, ConnectionState.CLOSED)


class ModeController:
    """The mode state machine; lives in the control context.

    Args:
        ctx: The control context.
        plant: The plant controller (supervision handshake, connection, inputs).
        auth: Permission checks.
        trail: Audit trail.
        bus: Event bus.
        alarms: Alarm manager.
        policy: The site's mode policy.
    """

    def __init__(
        self,
        ctx: ControlContext,
        plant: PlantController,
        auth: AuthService,
        trail: AuditTrail,
        bus: EventBus,
        alarms: AlarmManager,
        policy: ModePolicy,
    ) -> None:
        self._ctx = ctx
        self._plant = plant
        self._auth = auth
        self._trail = trail
        self._bus = bus
        self._alarms = alarms
        self.policy = policy
        self._mode = Mode.OFF
        self._accepting = True
        self._preconditions: list[Precondition] = []
        self._on_resume: list[Callable[[], None]] = []
        self.consecutive_rejections = 0
        self.demotions = 0
        self.last_reason = "start-up"
        bus.subscribe(ConnectionChanged, self._on_connection)
        bus.subscribe(InputsChanged, self._on_inputs)
        bus.subscribe(WriteRejected, self._on_write_rejected)
        bus.subscribe(WriteCompleted, self._on_write_completed)

    @property
    def mode(self) -> Mode:
        """The current mode (readable from any thread)."""
        return self._mode

    def add_precondition(self, check: Precondition) -> None:
        """Add a check that must pass before ADVISORY or AUTOMATIC is entered."""
        self._preconditions.append(check)

    def add_resume_listener(self, callback: Callable[[], None]) -> None:
        """Called when a person moves the mode up from OFF (the fallback chain's operator resume)."""
        self._on_resume.append(callback)

    def refuse_commands(self) -> None:
        """Refuse every later mode request except the hand-back (shutdown)."""
        self._accepting = False

    # --- commands (any thread) ----------------------------------------------------------------

    def request_mode(
        self, mode: Mode, session: Session | None, *, confirm: bool = False, reason: str = ""
    ) -> Future[ModeVerdict]:
        """Ask for ``mode``; the future holds the verdict.

        Args:
            mode: The mode wanted.
            session: The caller's session (``None``: nobody logged in; enough for OFF only).
            confirm: Explicit confirmation; required for AUTOMATIC.
            reason: Free text for the ledger.
        """
        done: Future[ModeVerdict] = Future()
        self._ctx.post(partial(self._request, mode, session, confirm, reason, done))
        return done

    def return_to_base_control(
        self, session: Session | None = None, reason: str = "operator"
    ) -> Future[ModeVerdict]:
        """Hand the plant back to the PLC's base control (mode OFF); never needs a login."""
        return self.request_mode(Mode.OFF, session, reason=reason)

    def _request(
        self,
        mode: Mode,
        session: Session | None,
        confirm: bool,
        reason: str,
        done: Future[ModeVerdict],
    ) -> None:
        try:
            done.set_result(self._decide(mode, session, confirm, reason))
        except Exception as exc:
            log.exception("mode request failed")
            done.set_result(ModeVerdict(False, self._mode, f"internal error: {exc}"))

    def _decide(
        self, mode: Mode, session: Session | None, confirm: bool, reason: str
    ) -> ModeVerdict:
        if mode is Mode.OFF:
            origin = self._auth.require(session, Action.RETURN_TO_BASE_CONTROL)
            self.set_mode(Mode.OFF, reason or "return to base control", origin)
            return ModeVerdict(True, Mode.OFF, "the PLC's base control is in charge")
        if not self._accepting:
            return ModeVerdict(False, self._mode, "the core is stopping")
        action = Action.MODE_AUTOMATIC if mode is Mode.AUTOMATIC else Action.MODE_ADVISORY
        try:
            origin = self._auth.require(session, action)
        except AuthError as exc:
            return ModeVerdict(False, self._mode, str(exc))
        if mode is Mode.AUTOMATIC:
            needed = Role[self.policy.automatic_min_role.upper()]
            if origin.role is None or origin.role < needed:
                self._trail.try_record(
                    "permission_denied",
                    origin,
                    f"{action.value} refused for {origin.name}: the site needs {needed.name.lower()}",
                    {"action": action.value, "required": needed.name.lower()},
                )
                denied = PermissionDenied(action, needed, origin.role, origin.name)
                return ModeVerdict(False, self._mode, str(denied))
            if not confirm:
                return ModeVerdict(
                    False, self._mode, "AUTOMATIC needs an explicit confirmation (confirm=True)"
                )
        if mode is self._mode:
            return ModeVerdict(True, mode, f"already {mode.value}")
        problem = self._blocker(mode)
        if problem is not None:
            return ModeVerdict(False, self._mode, problem)
        resumed = self._mode is Mode.OFF
        try:
            self._transition(mode, reason or f"requested by {origin.name}", origin, strict=True)
        except LedgerError as exc:
            return ModeVerdict(False, self._mode, f"not changed: the ledger failed ({exc})")
        if resumed:
            for callback in self._on_resume:
                callback()
        return ModeVerdict(True, mode, "")

    def _blocker(self, mode: Mode) -> str | None:
        if not self._plant.connected:
            return f"the PLC is {self._plant.driver.state.value}"
        if mode is Mode.AUTOMATIC:
            bad = self._plant.unusable_inputs
            if bad:
                listed = ", ".join(f"{t} ({why})" for t, why in list(bad.items())[:5])
                return f"inputs not usable: {listed}"
        for check in self._preconditions:
            problem = check(mode)
            if problem:
                return problem
        return None

    # --- transitions (control context) --------------------------------------------------------

    def set_mode(self, mode: Mode, reason: str, origin: Origin) -> None:
        """Enter ``mode`` without permission checks (system transitions and the hand-back)."""
        if mode is self._mode:
            if mode is Mode.OFF:
                self._plant.request_supervision(False)
            return
        self._transition(mode, reason, origin, strict=mode is not Mode.OFF)

    def _transition(self, mode: Mode, reason: str, origin: Origin, *, strict: bool) -> None:
        old = self._mode
        summary = f"mode {old.value} -> {mode.value}: {reason}"
        data = {"old": old.value, "new": mode.value, "reason": reason}
        if strict:
            self._trail.record("mode_change", origin, summary, data)
        elif not self._trail.try_record("mode_change", origin, summary, data):
            log.error("mode change to %s not recorded (ledger failing); proceeding", mode.value)
        self._mode = mode
        self.last_reason = reason
        self.consecutive_rejections = 0
        self._plant.request_supervision(mode is not Mode.OFF)
        log.warning("%s (by %s)", summary, origin.name)
        self._bus.publish(ModeChanged(old, mode, reason, origin))
        if origin.kind is not OriginKind.SYSTEM and mode is not Mode.OFF:
            self._clear_demotion_alarm()

    def demote(self, reason: str, to: Mode = Mode.ADVISORY) -> bool:
        """Automatic demotion (control context): AUTOMATIC → ADVISORY, or anything → OFF.

        Returns:
            True if the mode changed.
        """
        if to is Mode.AUTOMATIC or self._mode is Mode.OFF:
            return False
        if to is Mode.ADVISORY and self._mode is not Mode.AUTOMATIC:
            return False
        self.demotions += 1
        self._transition(to, reason, Origin.system("mode"), strict=False)
        point = self._alarms.point(ap.MODE_DEMOTED)
        message = f"left AUTOMATIC: {reason}" if to is Mode.ADVISORY else f"to OFF: {reason}"
        if point.active:
            self._alarms.clear(ap.MODE_DEMOTED)
        self._alarms.raise_alarm(ap.MODE_DEMOTED, message)
        return True

    def _clear_demotion_alarm(self) -> None:
        if self._alarms.point(ap.MODE_DEMOTED).active:
            self._alarms.clear(ap.MODE_DEMOTED)

    # --- triggers -----------------------------------------------------------------------------

    def _on_connection(self, event: ConnectionChanged) -> None:
        if event.system == "plc" and event.state in _LOST and self._mode is not Mode.OFF:
            self.demote(f"PLC connection {event.state.value} {event.detail}".strip(), Mode.OFF)

    def _on_inputs(self, event: InputsChanged) -> None:
        if event.unusable and self._mode is Mode.AUTOMATIC and self._plant.connected:
            listed = ", ".join(f"{t} ({why})" for t, why in event.unusable[:5])
            self.demote(f"inputs not usable: {listed}")

    def _on_write_rejected(self, event: WriteRejected) -> None:
        outcome = event.outcome
        if outcome.origin.kind not in (OriginKind.AGENT, OriginKind.CLOUD_AGENT):
            return
        if outcome.kind is WriteOutcomeKind.REJECTED:
            self.note_safety_rejection(outcome.reason)

    def note_safety_rejection(self, reason: str) -> None:
        """Count one safety rejection of an agent's setpoints (control context)."""
        self.consecutive_rejections += 1
        limit = self.policy.max_consecutive_rejections
        if self.consecutive_rejections >= limit and self._mode is Mode.AUTOMATIC:
            self.demote(
                f"{self.consecutive_rejections} safety rejections in a row (last: {reason})"
            )

    def note_agent_write_ok(self) -> None:
        """Reset the rejection streak after an agent's setpoints were accepted."""
        self.consecutive_rejections = 0

    def _on_write_completed(self, event: WriteCompleted) -> None:
        outcome = event.outcome
        if outcome.ok:
            if outcome.origin.kind in (OriginKind.AGENT, OriginKind.CLOUD_AGENT):
                self.note_agent_write_ok()
            return
        if (
            outcome.kind is WriteOutcomeKind.FAILED
            and self._mode is Mode.AUTOMATIC
            and self._plant.connected
        ):
            self.demote(f"driver fault: {outcome.reason}")


__all__ = ["ModeController", "Precondition"]
