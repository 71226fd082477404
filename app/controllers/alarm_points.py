"""The control core's alarm points (the rationalisation list) and their journal sink.

Each alarm below needs an operator response; the message says what to do. The sink writes every
journal entry to the audit ledger and publishes :class:`~app.controllers.messages.AlarmChanged`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from app.controllers.alarms import AlarmDef, JournalEntry
from app.controllers.audit import AuditTrail
from app.controllers.ledger import LedgerError
from app.controllers.messages import AlarmChanged
from app.domain import AlarmPriority

PLC_CONNECTION = "plc.connection"
PLC_CONFIG = "plc.config"
PLC_INPUTS = "plc.inputs"
PLC_WATCHDOG = "plc.watchdog"
PLC_WRITE = "plc.write_failed"
PLC_CERTIFICATE = "plc.certificate"
CORE_AUDIT = "core.audit"
MODE_DEMOTED = "mode.demoted"
AGENT_REFUSED = "agent.package_refused"
AGENT_DEADLINE = "agent.deadline"
AGENT_ABSTAINED = "agent.abstained"
AGENT_FALLBACK = "agent.fallback"
AGENT_ROLLBACK = "agent.rollback"
AGENT_SKIPPED = "agent.steps_skipped"
CLOUD_OUTBOX = "cloud.outbox"

P = AlarmPriority

CORE_ALARMS: tuple[AlarmDef, ...] = (
    AlarmDef(
        PLC_CONNECTION,
        P.CRITICAL,
        "PLC connection lost: the PLC runs its base control; check the network and the PLC",
    ),
    AlarmDef(
        PLC_CONFIG,
        P.CRITICAL,
        "PLC refused the connection (credentials, certificate or address map): fix the site file",
    ),
    AlarmDef(
        PLC_INPUTS,
        P.HIGH,
        "plant inputs stale or bad: AUTOMATIC is not possible; check the instruments",
    ),
    AlarmDef(
        PLC_WATCHDOG,
        P.HIGH,
        "PLC watchdog tripped: the PLC returned to base control; the console re-requests control "
        "once healthy",
    ),
    AlarmDef(
        PLC_CERTIFICATE,
        P.MEDIUM,
        "an OPC UA certificate expired or expires soon: renew it and update the trust lists",
    ),
    AlarmDef(PLC_WRITE, P.MEDIUM, "a setpoint write failed: check the PLC's write permissions"),
    AlarmDef(
        CORE_AUDIT,
        P.CRITICAL,
        "the audit ledger cannot be written (disk full?): the console stops acting; free space",
    ),
    AlarmDef(
        MODE_DEMOTED,
        P.HIGH,
        "the console left AUTOMATIC: review the reason, then re-enter AUTOMATIC if appropriate",
    ),
    AlarmDef(
        AGENT_REFUSED,
        P.HIGH,
        "an agent package was refused (signature, hashes or spec): no agent runs from it",
    ),
    AlarmDef(
        AGENT_DEADLINE, P.MEDIUM, "the agent missed its inference deadline: check the CPU load"
    ),
    AlarmDef(
        AGENT_ABSTAINED,
        P.LOW,
        "the agent abstained (uncertain or unfamiliar situation): decide the setpoints yourself",
    ),
    AlarmDef(
        AGENT_FALLBACK,
        P.HIGH,
        "the active agent is not in charge (fallback chain degraded): watch the plant closely",
    ),
    AlarmDef(
        AGENT_ROLLBACK,
        P.HIGH,
        "the agent was rolled back to the previous version: review the rollback reason",
    ),
    AlarmDef(
        AGENT_SKIPPED,
        P.LOW,
        "agent steps are being skipped (inference still running): check the agent worker",
    ),
    AlarmDef(
        CLOUD_OUTBOX,
        P.MEDIUM,
        "the cloud outbox is filling up (the cloud has not taken records for a while): check the "
        "storage connection; from 90 % transitions and at 100 % all new records are refused",
    ),
)


def journal_sink(
    trail: AuditTrail, publish: Callable[[object], None]
) -> Callable[[JournalEntry], None]:
    """A sink for :class:`~app.controllers.alarms.AlarmManager` that ledgers and publishes."""

    def sink(entry: JournalEntry) -> None:
        # The alarm stands even if it cannot be recorded; the trail reports its own failure.
        with contextlib.suppress(LedgerError):
            trail.append(entry.to_audit_event())
        publish(
            AlarmChanged(
                entry.alarm_id,
                entry.old_state.value,
                entry.new_state.value,
                entry.active,
                entry.note,
                entry.at,
            )
        )

    return sink


__all__ = [
    "AGENT_ABSTAINED",
    "AGENT_DEADLINE",
    "AGENT_FALLBACK",
    "AGENT_REFUSED",
    "AGENT_ROLLBACK",
    "AGENT_SKIPPED",
    "CLOUD_OUTBOX",
    "CORE_ALARMS",
    "CORE_AUDIT",
    "MODE_DEMOTED",
    "PLC_CERTIFICATE",
    "PLC_CONFIG",
    "PLC_CONNECTION",
    "PLC_INPUTS",
    "PLC_WATCHDOG",
    "PLC_WRITE",
    "journal_sink",
]
