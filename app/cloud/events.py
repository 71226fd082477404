"""Events published by the cloud layer (frozen, so they may cross threads).

They are handed to an ``on_event`` callback; the controller that owns the cloud layer forwards them
to the event bus. Names are past-tense nouns, as for the events in ``app.domain``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from app.domain import utc_now


class OutboxLevel(enum.StrEnum):
    """How full the outbox is, relative to ``CloudSettings.outbox_max_mb``."""

    NORMAL = "normal"
    WARNING = "warning"
    """At or above the warning fraction (80 %): raise an alarm, nothing is refused yet."""
    LOW_PRIORITY_REFUSED = "low_priority_refused"
    """At or above the low-priority limit (90 %): new transition records are refused."""
    FULL = "full"
    """At the limit (100 %): every new record is refused; nothing older is ever dropped."""


@dataclass(frozen=True, slots=True)
class OutboxBacklogChanged:
    """Gauge of the undelivered records (published after each drain attempt and on level changes).

    Attributes:
        pending_records: Records not yet delivered.
        pending_bytes: Accounted size of those records.
        limit_bytes: ``outbox_max_mb`` in bytes.
        level: Fill level.
        refused_records: Records refused since the outbox was opened.
        oldest_pending_id: Id of the oldest undelivered record, if any.
        connected: False while the last delivery attempt failed.
    """

    pending_records: int
    pending_bytes: int
    limit_bytes: int
    level: OutboxLevel
    refused_records: int
    oldest_pending_id: int | None
    connected: bool
    at: datetime = field(default_factory=utc_now)

    @property
    def fraction(self) -> float:
        """Fill fraction of the outbox (0 … 1)."""
        return self.pending_bytes / self.limit_bytes if self.limit_bytes else 0.0


@dataclass(frozen=True, slots=True)
class OutboxLevelChanged:
    """The outbox crossed a fill threshold; an alarm should follow anything but ``NORMAL``."""

    old: OutboxLevel
    new: OutboxLevel
    pending_bytes: int
    limit_bytes: int
    message: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class OutboxDeliveryFailed:
    """A delivery attempt failed; the drainer retries after ``retry_in_s``."""

    blob: str
    error: str
    retry_in_s: float
    at: datetime = field(default_factory=utc_now)


__all__ = ["OutboxBacklogChanged", "OutboxDeliveryFailed", "OutboxLevel", "OutboxLevelChanged"]
