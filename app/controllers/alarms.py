"""ISA-18.2 / IEC 62682 alarm management: a pure state machine, alarm points, journal and KPIs.

``transition(point, event)`` is a pure function over the states of ``app.domain.AlarmState``. Besides
the state, a point tracks whether its process condition is currently active, so that leaving SHELVED,
SUPPRESSED or OUT_OF_SERVICE returns to the state the condition implies: UNACKED (annunciated again)
if the condition is active, NORMAL if it is clear. While shelved, suppressed or out of service the
condition is still tracked but nothing is annunciated.

Precedence of the administrative states: OUT_OF_SERVICE (maintenance) overrides SUPPRESSED (design
logic), which overrides SHELVED (operator). Suppressing a shelved alarm ends the shelve; design
suppression is re-evaluated by its logic every cycle, so it re-applies after a return to service.

``AlarmManager`` holds the alarm points of the console, applies events with a wall clock, expires
timed shelves in ``tick()``, keeps a bounded journal (one entry per accepted event) and hands every
entry to an optional sink (the audit ledger). ``compute_kpis`` derives the ISA-18.2 / EEMUA 191
performance figures from a journal.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.domain import (
    Alarm,
    AlarmPriority,
    AlarmState,
    AuditEvent,
    Origin,
    OriginKind,
    utc_now,
)

DEFAULT_MAX_SHELVE_S = 12 * 3600.0
"""Longest shelve an operator may set (one shift plus handover)."""

_ANNUNCIATED = (AlarmState.UNACKED, AlarmState.ACKED, AlarmState.RTN_UNACKED)
_HIDDEN = (AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE)


class AlarmEventKind(enum.StrEnum):
    """What can happen to an alarm point."""

    RAISE = "raise"
    """The process condition became active."""
    CLEAR = "clear"
    """The process condition returned to normal."""
    ACK = "ack"
    """An operator acknowledged the alarm (with an optional note)."""
    SHELVE = "shelve"
    """An operator hid the alarm for a limited time (with a reason)."""
    UNSHELVE = "unshelve"
    """An operator ended a shelve early."""
    SHELVE_EXPIRED = "shelve_expired"
    """The shelve time ran out."""
    SUPPRESS = "suppress"
    """Design logic suppressed the alarm (e.g. low-flow alarms while the train is stopped)."""
    UNSUPPRESS = "unsuppress"
    """Design logic ended the suppression."""
    REMOVE_FROM_SERVICE = "remove_from_service"
    """Maintenance took the alarm out of service (with a reason)."""
    RETURN_TO_SERVICE = "return_to_service"
    """Maintenance returned the alarm to service."""


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One event applied to an alarm point.

    Attributes:
        kind: What happened.
        at: When, as an aware UTC datetime.
        user: Who (operator actions; ``None`` for condition changes and design logic).
        note: Acknowledgement note, shelve reason or out-of-service reason.
        duration_s: Shelve duration (SHELVE only).
        message: New alarm message (RAISE only; ``None`` keeps the defined one).
    """

    kind: AlarmEventKind
    at: datetime
    user: str | None = None
    note: str = ""
    duration_s: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmPointState:
    """Everything the state machine knows about one alarm point.

    Attributes:
        state: ISA-18.2 state.
        active: True while the process condition is active (also tracked while hidden).
        raised_at: When the condition last became active.
        acked_by: Who acknowledged the current occurrence.
        note: Last acknowledgement note or shelve / out-of-service reason.
        shelved_until: End of the current shelve.
        message: Current alarm message.
    """

    state: AlarmState = AlarmState.NORMAL
    active: bool = False
    raised_at: datetime | None = None
    acked_by: str | None = None
    note: str = ""
    shelved_until: datetime | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    """Result of applying one event.

    Attributes:
        accepted: False if the event is not legal in the current state (nothing changed).
        old: Point state before.
        new: Point state after (equal to ``old`` when refused).
        reason: Why the event was refused, or what it did.
    """

    accepted: bool
    old: AlarmPointState
    new: AlarmPointState
    reason: str


def _implied(point: AlarmPointState) -> AlarmPointState:
    """Leave an administrative state for the state the condition implies."""
    if point.active:
        return replace(point, state=AlarmState.UNACKED, acked_by=None, shelved_until=None)
    return replace(point, state=AlarmState.NORMAL, acked_by=None, shelved_until=None)


def transition(
    point: AlarmPointState, event: AlarmEvent, *, max_shelve_s: float = DEFAULT_MAX_SHELVE_S
) -> Transition:
    """Apply ``event`` to ``point``; a pure function.

    Args:
        point: Current point state.
        event: The event.
        max_shelve_s: Longest shelve accepted.

    Returns:
        The transition; refused events leave the point unchanged and say why.
    """
    state, kind = point.state, event.kind

    def ok(new: AlarmPointState, what: str) -> Transition:
        return Transition(True, point, new, what)

    def refuse(why: str) -> Transition:
        return Transition(False, point, point, why)

    if kind is AlarmEventKind.RAISE:
        if point.active:
            return refuse("the condition is already active")
        raised = replace(
            point,
            active=True,
            raised_at=event.at,
            message=point.message if event.message is None else event.message,
        )
        if state in _HIDDEN:
            return ok(raised, f"condition active while {state.value}; not annunciated")
        return ok(replace(raised, state=AlarmState.UNACKED, acked_by=None), "alarm annunciated")

    if kind is AlarmEventKind.CLEAR:
        if not point.active:
            return refuse("the condition is already clear")
        cleared = replace(point, active=False)
        if state is AlarmState.UNACKED:
            return ok(replace(cleared, state=AlarmState.RTN_UNACKED), "returned to normal, unacked")
        if state is AlarmState.ACKED:
            return ok(
                replace(cleared, state=AlarmState.NORMAL, acked_by=None), "returned to normal"
            )
        return ok(cleared, f"condition clear while {state.value}")

    if kind is AlarmEventKind.ACK:
        if not event.user:
            return refuse("an acknowledgement needs the user's name")
        if state is AlarmState.UNACKED:
            return ok(
                replace(point, state=AlarmState.ACKED, acked_by=event.user, note=event.note),
                "acknowledged",
            )
        if state is AlarmState.RTN_UNACKED:
            return ok(
                replace(point, state=AlarmState.NORMAL, acked_by=event.user, note=event.note),
                "acknowledged after return to normal",
            )
        if state is AlarmState.ACKED:
            return refuse("already acknowledged")
        if state is AlarmState.NORMAL:
            return refuse("nothing to acknowledge: the alarm is normal")
        return refuse(f"cannot acknowledge while {state.value}: the alarm is not annunciated")

    if kind is AlarmEventKind.SHELVE:
        if state is AlarmState.SHELVED:
            return refuse("already shelved; unshelve first to set a new duration")
        if state in (AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE):
            return refuse(f"cannot shelve while {state.value}")
        if not event.user:
            return refuse("a shelve needs the user's name")
        if not event.note.strip():
            return refuse("a shelve needs a reason")
        duration = event.duration_s
        if duration is None or not 0 < duration <= max_shelve_s:
            return refuse(f"shelve duration must be in (0, {max_shelve_s:g}] s, got {duration}")
        until = event.at + timedelta(seconds=duration)
        return ok(
            replace(point, state=AlarmState.SHELVED, shelved_until=until, note=event.note),
            f"shelved until {until.isoformat(timespec='seconds')}",
        )

    if kind in (AlarmEventKind.UNSHELVE, AlarmEventKind.SHELVE_EXPIRED):
        if state is not AlarmState.SHELVED:
            return refuse(f"not shelved (state is {state.value})")
        if kind is AlarmEventKind.SHELVE_EXPIRED:
            assert point.shelved_until is not None
            if event.at < point.shelved_until:
                return refuse(
                    f"the shelve runs until {point.shelved_until.isoformat(timespec='seconds')}"
                )
        return ok(_implied(point), "unshelved" if kind is AlarmEventKind.UNSHELVE else "expired")

    if kind is AlarmEventKind.SUPPRESS:
        if state is AlarmState.SUPPRESSED:
            return refuse("already suppressed")
        if state is AlarmState.OUT_OF_SERVICE:
            return refuse("out of service (overrides suppression)")
        what = "suppressed by design" + ("; shelve ended" if state is AlarmState.SHELVED else "")
        return ok(replace(point, state=AlarmState.SUPPRESSED, shelved_until=None), what)

    if kind is AlarmEventKind.UNSUPPRESS:
        if state is not AlarmState.SUPPRESSED:
            return refuse(f"not suppressed (state is {state.value})")
        return ok(_implied(point), "suppression ended")

    if kind is AlarmEventKind.REMOVE_FROM_SERVICE:
        if state is AlarmState.OUT_OF_SERVICE:
            return refuse("already out of service")
        if not event.user or not event.note.strip():
            return refuse("taking an alarm out of service needs the user's name and a reason")
        return ok(
            replace(point, state=AlarmState.OUT_OF_SERVICE, shelved_until=None, note=event.note),
            "removed from service",
        )

    if kind is AlarmEventKind.RETURN_TO_SERVICE:
        if state is not AlarmState.OUT_OF_SERVICE:
            return refuse(f"not out of service (state is {state.value})")
        if not event.user:
            return refuse("returning an alarm to service needs the user's name")
        return ok(_implied(point), "returned to service")

    raise AssertionError(f"unhandled alarm event {kind!r}")  # pragma: no cover


# --- manager ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmDef:
    """Static definition of an alarm point (the rationalisation record).

    Attributes:
        alarm_id: Stable id, e.g. ``plc.connection`` or ``agent.timeout``.
        priority: ISA-18.2 priority.
        message: What is wrong and what the operator must do.
    """

    alarm_id: str
    priority: AlarmPriority
    message: str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One accepted event of one alarm point.

    Attributes:
        seq: Journal sequence number (starts at 1, never reused).
        at: When.
        alarm_id: The alarm point.
        priority: Its priority.
        event: The event kind.
        old_state: State before.
        new_state: State after.
        active: Whether the condition is active after the event.
        user: Who (for operator actions).
        note: Note or reason given.
    """

    seq: int
    at: datetime
    alarm_id: str
    priority: AlarmPriority
    event: AlarmEventKind
    old_state: AlarmState
    new_state: AlarmState
    active: bool
    user: str | None
    note: str

    @property
    def annunciated(self) -> bool:
        """True if this entry put a new alarm in front of the operator."""
        return self.new_state is AlarmState.UNACKED and self.old_state is not AlarmState.UNACKED

    def to_audit_event(self) -> AuditEvent:
        """The ledger record of this entry."""
        origin = (
            Origin.system("alarms") if self.user is None else Origin(OriginKind.OPERATOR, self.user)
        )
        summary = f"alarm {self.alarm_id}: {self.event.value} {self.old_state.value} -> {self.new_state.value}"
        data = {
            "alarm_id": self.alarm_id,
            "priority": self.priority.name.lower(),
            "event": self.event.value,
            "old_state": self.old_state.value,
            "new_state": self.new_state.value,
            "active": self.active,
            "note": self.note,
            "journal_seq": self.seq,
        }
        return AuditEvent("alarm", origin, summary, data, self.at)


class AlarmManager:
    """The console's alarm points, their journal and shelve timers; used from the control context.

    Args:
        definitions: The alarm points.
        clock: Wall clock returning aware UTC datetimes (injected for tests).
        sink: Called with every journal entry (e.g. to write it to the ledger).
        max_shelve_s: Longest shelve accepted.
        journal_size: Journal entries kept in memory for KPIs and the journal view (the ledger
            keeps everything). About 230 bytes each; 10,000 is weeks at a normal alarm rate,
            while 100,000 cost over 20 MB and a 100,000-row table on every refresh.
    """

    def __init__(
        self,
        definitions: Iterable[AlarmDef] = (),
        *,
        clock: Callable[[], datetime] = utc_now,
        sink: Callable[[JournalEntry], None] | None = None,
        max_shelve_s: float = DEFAULT_MAX_SHELVE_S,
        journal_size: int = 10_000,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._max_shelve_s = max_shelve_s
        self._defs: dict[str, AlarmDef] = {}
        self._points: dict[str, AlarmPointState] = {}
        self._defined_at: dict[str, datetime] = {}
        self._journal: deque[JournalEntry] = deque(maxlen=journal_size)
        self._seq = 0
        for d in definitions:
            self.define(d)

    def define(self, definition: AlarmDef) -> None:
        """Add an alarm point (in NORMAL).

        Raises:
            ValueError: The id is already defined.
        """
        if definition.alarm_id in self._defs:
            raise ValueError(f"alarm {definition.alarm_id!r} is already defined")
        self._defs[definition.alarm_id] = definition
        self._points[definition.alarm_id] = AlarmPointState(message=definition.message)
        self._defined_at[definition.alarm_id] = self._clock()

    @property
    def journal(self) -> tuple[JournalEntry, ...]:
        """Entries in the order they happened (oldest first)."""
        return tuple(self._journal)

    def point(self, alarm_id: str) -> AlarmPointState:
        """Current state of ``alarm_id``; raises ``KeyError`` naming an unknown id."""
        try:
            return self._points[alarm_id]
        except KeyError:
            raise KeyError(f"unknown alarm {alarm_id!r}") from None

    def apply(self, alarm_id: str, event: AlarmEvent) -> Transition:
        """Apply ``event`` to ``alarm_id``, journal it if accepted and return the transition.

        Raises:
            KeyError: Unknown alarm id.
        """
        old = self.point(alarm_id)
        result = transition(old, event, max_shelve_s=self._max_shelve_s)
        if not result.accepted:
            return result
        self._points[alarm_id] = result.new
        self._seq += 1
        entry = JournalEntry(
            self._seq,
            event.at,
            alarm_id,
            self._defs[alarm_id].priority,
            event.kind,
            old.state,
            result.new.state,
            result.new.active,
            event.user,
            event.note,
        )
        self._journal.append(entry)
        if self._sink is not None:
            self._sink(entry)
        return result

    def _event(
        self,
        kind: AlarmEventKind,
        *,
        user: str | None = None,
        note: str = "",
        duration_s: float | None = None,
        message: str | None = None,
    ) -> AlarmEvent:
        return AlarmEvent(kind, self._clock(), user, note, duration_s, message)

    def raise_alarm(self, alarm_id: str, message: str | None = None) -> Transition:
        """The condition of ``alarm_id`` became active."""
        return self.apply(alarm_id, self._event(AlarmEventKind.RAISE, message=message))

    def clear(self, alarm_id: str) -> Transition:
        """The condition of ``alarm_id`` returned to normal."""
        return self.apply(alarm_id, self._event(AlarmEventKind.CLEAR))

    def set_condition(self, alarm_id: str, active: bool, message: str | None = None) -> Transition:
        """Raise or clear depending on ``active`` (convenient for cyclic condition checks)."""
        return self.raise_alarm(alarm_id, message) if active else self.clear(alarm_id)

    def ack(self, alarm_id: str, user: str, note: str = "") -> Transition:
        """Acknowledge ``alarm_id`` on behalf of ``user``."""
        return self.apply(alarm_id, self._event(AlarmEventKind.ACK, user=user, note=note))

    def shelve(self, alarm_id: str, user: str, duration_s: float, reason: str) -> Transition:
        """Shelve ``alarm_id`` for ``duration_s`` seconds."""
        return self.apply(
            alarm_id,
            self._event(AlarmEventKind.SHELVE, user=user, note=reason, duration_s=duration_s),
        )

    def unshelve(self, alarm_id: str, user: str) -> Transition:
        """End the shelve of ``alarm_id`` early."""
        return self.apply(alarm_id, self._event(AlarmEventKind.UNSHELVE, user=user))

    def suppress(self, alarm_id: str, reason: str = "") -> Transition:
        """Suppress ``alarm_id`` by design logic."""
        return self.apply(alarm_id, self._event(AlarmEventKind.SUPPRESS, note=reason))

    def unsuppress(self, alarm_id: str) -> Transition:
        """End the design suppression of ``alarm_id``."""
        return self.apply(alarm_id, self._event(AlarmEventKind.UNSUPPRESS))

    def remove_from_service(self, alarm_id: str, user: str, reason: str) -> Transition:
        """Take ``alarm_id`` out of service for maintenance."""
        return self.apply(
            alarm_id, self._event(AlarmEventKind.REMOVE_FROM_SERVICE, user=user, note=reason)
        )

    def return_to_service(self, alarm_id: str, user: str) -> Transition:
        """Return ``alarm_id`` to service."""
        return self.apply(alarm_id, self._event(AlarmEventKind.RETURN_TO_SERVICE, user=user))

    def tick(self) -> list[Transition]:
        """Expire every shelve whose time has run out; call once per supervision period."""
        now = self._clock()
        due = [
            alarm_id
            for alarm_id, p in self._points.items()
            if p.state is AlarmState.SHELVED
            and p.shelved_until is not None
            and p.shelved_until <= now
        ]
        return [self.apply(a, AlarmEvent(AlarmEventKind.SHELVE_EXPIRED, now)) for a in due]

    def alarm(self, alarm_id: str) -> Alarm:
        """Snapshot of ``alarm_id`` for the UI; ``raised_at`` is the definition time if never raised."""
        p = self.point(alarm_id)
        d = self._defs[alarm_id]
        raised = p.raised_at or self._defined_at[alarm_id]
        return Alarm(alarm_id, d.priority, p.state, p.message, raised, p.acked_by, p.note)

    def alarms(self, *, include_normal: bool = False) -> list[Alarm]:
        """Snapshots for the alarm list: most urgent first, then newest first."""
        shown = [
            self.alarm(a)
            for a, p in self._points.items()
            if include_normal or p.state is not AlarmState.NORMAL
        ]
        shown.sort(key=lambda a: a.raised_at, reverse=True)
        shown.sort(key=lambda a: a.priority, reverse=True)
        return shown

    def kpis(self, period_s: float | None = None) -> AlarmKpis:
        """KPIs over the in-memory journal up to now with the ISA-18.2 default thresholds.

        Args:
            period_s: Length of the analysed period; default since the first journal entry.
        """
        return compute_kpis(self._journal, self._clock(), period_s=period_s)


# --- KPIs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmKpis:
    """Alarm system performance after ISA-18.2 / EEMUA 191.

    Attributes:
        period_s: Length of the analysed period.
        annunciated: Alarms put in front of the operator in the period.
        rate_last_10min: Alarms annunciated in the last 10 minutes.
        avg_per_10min: Average alarms per 10 minutes over the period.
        peak_per_10min: Most alarms in one 10-minute interval.
        flood_intervals: 10-minute intervals with at least ``flood_threshold`` alarms.
        flood_time_pct: Share of the period's 10-minute intervals that were floods.
        chattering: Alarm ids annunciated ``chatter_count`` times within ``chatter_window_s``.
        stale: Alarm ids continuously active longer than ``stale_after_s`` (and still annunciated).
        top: Most frequent alarms (bad actors) as ``(alarm_id, count)``, most frequent first.
    """

    period_s: float
    annunciated: int
    rate_last_10min: int
    avg_per_10min: float
    peak_per_10min: int
    flood_intervals: int
    flood_time_pct: float
    chattering: tuple[str, ...]
    stale: tuple[str, ...]
    top: tuple[tuple[str, int], ...]


_TEN_MIN_S = 600.0


def compute_kpis(
    journal: Iterable[JournalEntry],
    now: datetime,
    *,
    period_s: float | None = None,
    flood_threshold: int = 10,
    chatter_count: int = 3,
    chatter_window_s: float = 60.0,
    stale_after_s: float = 24 * 3600.0,
    top_n: int = 10,
) -> AlarmKpis:
    """Compute alarm KPIs from a journal.

    Args:
        journal: Entries, oldest first.
        now: End of the analysed period.
        period_s: Length of the period; default from the first entry to ``now``.
        flood_threshold: Alarms per 10 minutes that make a flood (ISA-18.2: 10).
        chatter_count: Annunciations of one alarm within ``chatter_window_s`` that make it
            chattering (ISA-18.2 TR: 3 in one minute).
        chatter_window_s: Chattering window.
        stale_after_s: Continuous active time that makes an alarm stale (EEMUA 191: 24 h).
        top_n: Number of bad actors to list.

    Returns:
        The KPIs. Ten-minute intervals are counted back from ``now``.
    """
    entries: Sequence[JournalEntry] = list(journal)
    if period_s is None:
        period_s = (now - entries[0].at).total_seconds() if entries else 0.0
    start = now - timedelta(seconds=period_s)
    window = [e for e in entries if start <= e.at <= now]
    shown = [e for e in window if e.annunciated]

    n_bins = max(1, -(-int(period_s) // int(_TEN_MIN_S))) if period_s > 0 else 1
    bins = [0] * n_bins
    for e in shown:
        back = (now - e.at).total_seconds()
        bins[min(n_bins - 1, int(back // _TEN_MIN_S))] += 1
    floods = sum(1 for b in bins if b >= flood_threshold)

    by_alarm: dict[str, list[datetime]] = {}
    for e in shown:
        by_alarm.setdefault(e.alarm_id, []).append(e.at)
    chattering = []
    need = chatter_count
    for alarm_id, times in by_alarm.items():
        span = timedelta(seconds=chatter_window_s)
        if any(times[i + need - 1] - times[i] <= span for i in range(len(times) - need + 1)):
            chattering.append(alarm_id)

    active_since: dict[str, datetime | None] = {}
    visible: dict[str, bool] = {}
    for e in entries:
        if e.event is AlarmEventKind.RAISE:
            active_since[e.alarm_id] = e.at
        elif not e.active:
            active_since[e.alarm_id] = None
        visible[e.alarm_id] = e.new_state in (AlarmState.UNACKED, AlarmState.ACKED)
    stale_limit = timedelta(seconds=stale_after_s)
    stale = [
        a
        for a, since in active_since.items()
        if since is not None and visible.get(a, False) and now - since > stale_limit
    ]

    counts = Counter(e.alarm_id for e in shown)
    top = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n])
    return AlarmKpis(
        period_s=period_s,
        annunciated=len(shown),
        rate_last_10min=bins[0],
        avg_per_10min=len(shown) / n_bins,
        peak_per_10min=max(bins),
        flood_intervals=floods,
        flood_time_pct=100.0 * floods / n_bins,
        chattering=tuple(sorted(chattering)),
        stale=tuple(sorted(stale)),
        top=top,
    )


__all__ = [
    "DEFAULT_MAX_SHELVE_S",
    "AlarmDef",
    "AlarmEvent",
    "AlarmEventKind",
    "AlarmKpis",
    "AlarmManager",
    "AlarmPointState",
    "JournalEntry",
    "Transition",
    "compute_kpis",
    "transition",
]
