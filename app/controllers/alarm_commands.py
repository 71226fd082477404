"""Session-checked operator commands on alarms: acknowledge, shelve, unshelve.

Every command runs in the control context, checks the session's role through
:class:`~app.controllers.auth.AuthService` (operator and above may acknowledge, shelve and unshelve;
taking an alarm out of service needs an engineer; suppression is design logic of the console, never
an operator command) and is audited: an accepted command is an ``alarm`` journal record (user and
note included), a refused one an ``alarm_command_refused`` record naming the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.controllers.alarms import AlarmManager, Transition
from app.controllers.audit import AuditTrail
from app.controllers.auth import ANONYMOUS, Action, AuthError, AuthService, Session
from app.domain import AlarmState, Origin, OriginKind


@dataclass(frozen=True, slots=True)
class AlarmVerdict:
    """Answer to an alarm command.

    Attributes:
        accepted: True if the alarm changed as asked.
        alarm_id: The alarm point.
        command: ``ack``, ``shelve`` or ``unshelve``.
        state: The alarm's state after the command (``None`` for an unknown alarm).
        reason: Why the command was refused, or what it did.
        transition: The state machine's transition (``None`` if refused before reaching it).
    """

    accepted: bool
    alarm_id: str
    command: str
    state: AlarmState | None
    reason: str
    transition: Transition | None = None


class AlarmCommands:
    """Alarm commands for front ends (call from the control context).

    Args:
        alarms: The alarm manager.
        auth: Permission checks.
        trail: Audit trail for refusals (accepted commands are journalled by the alarm manager).
    """

    def __init__(self, alarms: AlarmManager, auth: AuthService, trail: AuditTrail) -> None:
        self._alarms = alarms
        self._auth = auth
        self._trail = trail

    def ack(self, alarm_id: str, session: Session | None, note: str = "") -> AlarmVerdict:
        """Acknowledge ``alarm_id`` with an optional note (operator)."""
        return self._run(
            "ack",
            alarm_id,
            session,
            Action.ACK_ALARM,
            lambda u: self._alarms.ack(alarm_id, u, note),
        )

    def shelve(
        self, alarm_id: str, session: Session | None, duration_s: float, note: str
    ) -> AlarmVerdict:
        """Shelve ``alarm_id`` for ``duration_s`` seconds; ``note`` is the required reason."""
        return self._run(
            "shelve",
            alarm_id,
            session,
            Action.SHELVE_ALARM,
            lambda u: self._alarms.shelve(alarm_id, u, duration_s, note),
        )

    def unshelve(self, alarm_id: str, session: Session | None) -> AlarmVerdict:
        """End the shelve of ``alarm_id`` early (operator)."""
        return self._run(
            "unshelve",
            alarm_id,
            session,
            Action.SHELVE_ALARM,
            lambda u: self._alarms.unshelve(alarm_id, u),
        )

    def _run(
        self,
        command: str,
        alarm_id: str,
        session: Session | None,
        action: Action,
        apply: Callable[[str], Transition],
    ) -> AlarmVerdict:
        who = Origin(OriginKind.OPERATOR, session.user if session is not None else ANONYMOUS)

        def refuse(why: str, state: AlarmState | None, t: Transition | None = None) -> AlarmVerdict:
            self._trail.try_record(
                "alarm_command_refused",
                who,
                f"{command} of alarm {alarm_id} refused: {why}",
                {"alarm_id": alarm_id, "command": command, "reason": why},
            )
            return AlarmVerdict(False, alarm_id, command, state, why, t)

        try:
            state: AlarmState | None = self._alarms.point(alarm_id).state
        except KeyError:
            state = None
        try:
            who = self._auth.require(session, action)
        except AuthError as exc:
            return refuse(str(exc), state)
        if state is None:
            return refuse(f"unknown alarm {alarm_id!r}", None)
        transition = apply(who.name)
        if not transition.accepted:
            return refuse(transition.reason, transition.new.state, transition)
        return AlarmVerdict(
            True, alarm_id, command, transition.new.state, transition.reason, transition
        )


__all__ = ["AlarmCommands", "AlarmVerdict"]
