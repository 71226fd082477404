"""The one door to the audit ledger used by every controller, with the cloud hook behind it.

``AuditTrail.record`` appends to the hash-chained :class:`~app.controllers.ledger.Ledger` and, once
the record is on disk, hands the event to an optional sink (the outbox of the cloud engineer's
``CloudSync``). A failed append raises :class:`~app.controllers.ledger.LedgerError`: the caller must
not perform the action it was about to record. The trail also remembers that it failed, because a
core that cannot keep its audit trail is not healthy (its heartbeat stops and the PLC's watchdog
returns the plant to base control).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app.controllers.ledger import Ledger, LedgerError, LedgerRecord
from app.domain import AuditEvent, Origin

log = logging.getLogger(__name__)

AuditSink = Callable[[AuditEvent], None]


class AuditTrail:
    """Appends audit events; used from the control context (and during start-up, before it runs).

    Args:
        ledger: The ledger writer.
        sink: Called with every event after it is on disk (exceptions are logged, not raised).
    """

    def __init__(self, ledger: Ledger, sink: AuditSink | None = None) -> None:
        self.ledger = ledger
        self.sink = sink
        self.failures = 0
        self.last_error = ""
        self.records = 0

    @property
    def healthy(self) -> bool:
        """False once an append failed and until the next one succeeds."""
        return not self.last_error

    def record(
        self, kind: str, origin: Origin, summary: str, data: dict[str, Any] | None = None
    ) -> LedgerRecord:
        """Append one event.

        Raises:
            LedgerError: The record is not on disk; do not perform the action.
        """
        return self.append(AuditEvent(kind, origin, summary, dict(data or {})))

    def append(self, event: AuditEvent) -> LedgerRecord:
        """Append ``event`` (see :meth:`record`)."""
        try:
            stored = self.ledger.append(event)
        except (LedgerError, TypeError, ValueError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("audit ledger append failed (%s): %s", event.kind, exc)
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(f"could not record {event.kind!r}: {exc}") from exc
        self.last_error = ""
        self.records += 1
        if self.sink is not None:
            try:
                self.sink(stored.event)
            except Exception:
                log.exception("audit sink failed on %s", event.kind)
        return stored

    def try_record(
        self, kind: str, origin: Origin, summary: str, data: dict[str, Any] | None = None
    ) -> bool:
        """Append for an action that happens anyway (hand-back, alarms): False if it failed."""
        try:
            self.record(kind, origin, summary, data)
        except LedgerError:
            return False
        return True


__all__ = ["AuditSink", "AuditTrail"]
