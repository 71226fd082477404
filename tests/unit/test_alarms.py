"""ISA-18.2 alarm state machine: every (state, event) pair, shelve expiry, journal and KPIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.controllers.alarms import (
    AlarmDef,
    AlarmEvent,
    AlarmEventKind,
    AlarmManager,
    AlarmPointState,
    JournalEntry,
    compute_kpis,
    transition,
)
from app.domain import AlarmPriority, AlarmState, OriginKind

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
AT = T0 + timedelta(hours=1)
S = AlarmState
E = AlarmEventKind

# One representative point per state; hidden states come with the condition active and clear.
POINTS: dict[str, AlarmPointState] = {
    "normal": AlarmPointState(S.NORMAL, active=False),
    "unacked": AlarmPointState(S.UNACKED, active=True, raised_at=T0),
    "acked": AlarmPointState(S.ACKED, active=True, raised_at=T0, acked_by="ann"),
    "rtn_unacked": AlarmPointState(S.RTN_UNACKED, active=False, raised_at=T0),
    "shelved+active": AlarmPointState(
        S.SHELVED, active=True, raised_at=T0, shelved_until=T0 + timedelta(minutes=30)
    ),
    "shelved+clear": AlarmPointState(
        S.SHELVED, active=False, shelved_until=T0 + timedelta(minutes=30)
    ),
    "suppressed+active": AlarmPointState(S.SUPPRESSED, active=True, raised_at=T0),
    "suppressed+clear": AlarmPointState(S.SUPPRESSED, active=False),
    "oos+active": AlarmPointState(S.OUT_OF_SERVICE, active=True, raised_at=T0),
    "oos+clear": AlarmPointState(S.OUT_OF_SERVICE, active=False),
}

EVENTS: dict[AlarmEventKind, AlarmEvent] = {
    E.RAISE: AlarmEvent(E.RAISE, AT),
    E.CLEAR: AlarmEvent(E.CLEAR, AT),
    E.ACK: AlarmEvent(E.ACK, AT, user="ann", note="checked the pump"),
    E.SHELVE: AlarmEvent(E.SHELVE, AT, user="ann", note="transmitter fault", duration_s=3600),
    E.UNSHELVE: AlarmEvent(E.UNSHELVE, AT, user="ann"),
    E.SHELVE_EXPIRED: AlarmEvent(E.SHELVE_EXPIRED, AT),
    E.SUPPRESS: AlarmEvent(E.SUPPRESS, AT, note="train stopped"),
    E.UNSUPPRESS: AlarmEvent(E.UNSUPPRESS, AT),
    E.REMOVE_FROM_SERVICE: AlarmEvent(E.REMOVE_FROM_SERVICE, AT, user="eve", note="recalibration"),
    E.RETURN_TO_SERVICE: AlarmEvent(E.RETURN_TO_SERVICE, AT, user="eve"),
}

# (point, event) -> (new state, condition active after) when accepted, or the refusal reason.
Accepted = tuple[AlarmState, bool]
TABLE: dict[str, dict[AlarmEventKind, Accepted | str]] = {
    "normal": {
        E.RAISE: (S.UNACKED, True),
        E.CLEAR: "already clear",
        E.ACK: "nothing to acknowledge",
        E.SHELVE: (S.SHELVED, False),
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: (S.SUPPRESSED, False),
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, False),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "unacked": {
        E.RAISE: "already active",
        E.CLEAR: (S.RTN_UNACKED, False),
        E.ACK: (S.ACKED, True),
        E.SHELVE: (S.SHELVED, True),
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: (S.SUPPRESSED, True),
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, True),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "acked": {
        E.RAISE: "already active",
        E.CLEAR: (S.NORMAL, False),
        E.ACK: "already acknowledged",
        E.SHELVE: (S.SHELVED, True),
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: (S.SUPPRESSED, True),
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, True),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "rtn_unacked": {
        E.RAISE: (S.UNACKED, True),
        E.CLEAR: "already clear",
        E.ACK: (S.NORMAL, False),
        E.SHELVE: (S.SHELVED, False),
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: (S.SUPPRESSED, False),
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, False),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "shelved+active": {
        E.RAISE: "already active",
        E.CLEAR: (S.SHELVED, False),
        E.ACK: "not annunciated",
        E.SHELVE: "already shelved",
        E.UNSHELVE: (S.UNACKED, True),
        E.SHELVE_EXPIRED: (S.UNACKED, True),
        E.SUPPRESS: (S.SUPPRESSED, True),
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, True),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "shelved+clear": {
        E.RAISE: (S.SHELVED, True),
        E.CLEAR: "already clear",
        E.ACK: "not annunciated",
        E.SHELVE: "already shelved",
        E.UNSHELVE: (S.NORMAL, False),
        E.SHELVE_EXPIRED: (S.NORMAL, False),
        E.SUPPRESS: (S.SUPPRESSED, False),
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, False),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "suppressed+active": {
        E.RAISE: "already active",
        E.CLEAR: (S.SUPPRESSED, False),
        E.ACK: "not annunciated",
        E.SHELVE: "cannot shelve while suppressed",
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: "already suppressed",
        E.UNSUPPRESS: (S.UNACKED, True),
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, True),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "suppressed+clear": {
        E.RAISE: (S.SUPPRESSED, True),
        E.CLEAR: "already clear",
        E.ACK: "not annunciated",
        E.SHELVE: "cannot shelve while suppressed",
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: "already suppressed",
        E.UNSUPPRESS: (S.NORMAL, False),
        E.REMOVE_FROM_SERVICE: (S.OUT_OF_SERVICE, False),
        E.RETURN_TO_SERVICE: "not out of service",
    },
    "oos+active": {
        E.RAISE: "already active",
        E.CLEAR: (S.OUT_OF_SERVICE, False),
        E.ACK: "not annunciated",
        E.SHELVE: "cannot shelve while out_of_service",
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: "out of service",
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: "already out of service",
        E.RETURN_TO_SERVICE: (S.UNACKED, True),
    },
    "oos+clear": {
        E.RAISE: (S.OUT_OF_SERVICE, True),
        E.CLEAR: "already clear",
        E.ACK: "not annunciated",
        E.SHELVE: "cannot shelve while out_of_service",
        E.UNSHELVE: "not shelved",
        E.SHELVE_EXPIRED: "not shelved",
        E.SUPPRESS: "out of service",
        E.UNSUPPRESS: "not suppressed",
        E.REMOVE_FROM_SERVICE: "already out of service",
        E.RETURN_TO_SERVICE: (S.NORMAL, False),
    },
}

CASES = [(p, e, TABLE[p][e]) for p in POINTS for e in E]


def test_the_table_covers_every_state_and_event() -> None:
    assert {POINTS[p].state for p in TABLE} == set(AlarmState)
    assert all(set(row) == set(AlarmEventKind) for row in TABLE.values())
    assert len(CASES) == len(POINTS) * len(AlarmEventKind)


@pytest.mark.parametrize(
    ("point", "event", "expected"), CASES, ids=[f"{p}-{e}" for p, e, _ in CASES]
)
def test_every_state_event_pair(
    point: str, event: AlarmEventKind, expected: Accepted | str
) -> None:
    old = POINTS[point]
    result = transition(old, EVENTS[event])
    assert result.old == old
    if isinstance(expected, str):
        assert not result.accepted
        assert result.new == old
        assert expected in result.reason
    else:
        assert result.accepted, result.reason
        assert (result.new.state, result.new.active) == expected
        if result.new.state is S.UNACKED:
            assert result.new.acked_by is None
        if result.new.state is not S.SHELVED:
            assert result.new.shelved_until is None


def test_ack_records_user_and_note() -> None:
    result = transition(POINTS["unacked"], EVENTS[E.ACK])
    assert (result.new.acked_by, result.new.note) == ("ann", "checked the pump")


def test_raise_stamps_time_and_may_replace_the_message() -> None:
    point = AlarmPointState(message="ORP high")
    result = transition(point, AlarmEvent(E.RAISE, AT, message="ORP high: 420 mV"))
    assert result.new.raised_at == AT
    assert result.new.message == "ORP high: 420 mV"
    assert transition(point, AlarmEvent(E.RAISE, AT)).new.message == "ORP high"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (AlarmEvent(E.ACK, AT), "needs the user's name"),
        (AlarmEvent(E.SHELVE, AT, user="ann", duration_s=60), "needs a reason"),
        (AlarmEvent(E.SHELVE, AT, user="ann", note="  ", duration_s=60), "needs a reason"),
        (AlarmEvent(E.SHELVE, AT, note="why", duration_s=60), "needs the user's name"),
        (AlarmEvent(E.SHELVE, AT, user="ann", note="why"), "duration must be in"),
        (AlarmEvent(E.SHELVE, AT, user="ann", note="why", duration_s=0), "duration must be in"),
        (AlarmEvent(E.SHELVE, AT, user="ann", note="why", duration_s=-5), "duration must be in"),
        (AlarmEvent(E.SHELVE, AT, user="ann", note="why", duration_s=13 * 3600), "duration must"),
        (AlarmEvent(E.REMOVE_FROM_SERVICE, AT, user="eve"), "needs the user's name and a reason"),
    ],
)
def test_operator_actions_need_their_arguments(event: AlarmEvent, reason: str) -> None:
    result = transition(POINTS["unacked"], event)
    assert not result.accepted
    assert reason in result.reason
    assert result.new == POINTS["unacked"]


def test_return_to_service_needs_a_user() -> None:
    result = transition(POINTS["oos+active"], AlarmEvent(E.RETURN_TO_SERVICE, AT))
    assert not result.accepted and "user's name" in result.reason


def test_shelve_expiry_is_refused_before_its_time() -> None:
    point = POINTS["shelved+active"]
    early = transition(point, AlarmEvent(E.SHELVE_EXPIRED, T0 + timedelta(minutes=29)))
    assert not early.accepted and "runs until" in early.reason
    due = transition(point, AlarmEvent(E.SHELVE_EXPIRED, T0 + timedelta(minutes=30)))
    assert due.accepted and due.new.state is S.UNACKED


def test_shelve_sets_its_end_from_the_event_time() -> None:
    result = transition(POINTS["unacked"], EVENTS[E.SHELVE])
    assert result.new.shelved_until == AT + timedelta(hours=1)
    assert result.new.note == "transmitter fault"


# --- manager ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def manager(clock: Clock, sink: list[JournalEntry] | None = None) -> AlarmManager:
    return AlarmManager(
        [
            AlarmDef("plc.connection", AlarmPriority.CRITICAL, "PLC connection lost"),
            AlarmDef("ro.orp_high", AlarmPriority.HIGH, "Feed ORP high: check the SBS dosing"),
            AlarmDef("agent.timeout", AlarmPriority.MEDIUM, "Agent answer late"),
        ],
        clock=clock,
        sink=None if sink is None else sink.append,
    )


def test_manager_journals_each_accepted_transition_with_user_and_note(clock: Clock) -> None:
    sink: list[JournalEntry] = []
    m = manager(clock, sink)
    m.raise_alarm("ro.orp_high")
    clock.advance(30)
    m.ack("ro.orp_high", "ann", "SBS pump restarted")
    assert not m.ack("ro.orp_high", "ann").accepted  # refused: not journaled
    clock.advance(60)
    m.clear("ro.orp_high")
    journal = m.journal
    assert journal == tuple(sink)
    assert [(j.event, j.old_state, j.new_state) for j in journal] == [
        (E.RAISE, S.NORMAL, S.UNACKED),
        (E.ACK, S.UNACKED, S.ACKED),
        (E.CLEAR, S.ACKED, S.NORMAL),
    ]
    assert [j.seq for j in journal] == [1, 2, 3]
    assert (journal[1].user, journal[1].note, journal[1].at) == (
        "ann",
        "SBS pump restarted",
        T0 + timedelta(seconds=30),
    )
    assert journal[0].priority is AlarmPriority.HIGH


def test_journal_entries_become_ledger_events(clock: Clock) -> None:
    m = manager(clock)
    m.raise_alarm("plc.connection")
    m.ack("plc.connection", "ann", "called maintenance")
    system, operator = (j.to_audit_event() for j in m.journal)
    assert system.kind == "alarm" and system.origin.kind is OriginKind.SYSTEM
    assert operator.origin.kind is OriginKind.OPERATOR and operator.origin.name == "ann"
    assert operator.data["new_state"] == "acked" and operator.data["note"] == "called maintenance"
    assert "plc.connection: ack unacked -> acked" in operator.summary
    assert operator.at == T0


def test_snapshots_for_the_alarm_list(clock: Clock) -> None:
    m = manager(clock)
    m.raise_alarm("agent.timeout")
    clock.advance(10)
    m.raise_alarm("ro.orp_high", "ORP 420 mV")
    clock.advance(10)
    m.raise_alarm("plc.connection")
    m.ack("plc.connection", "ann", "on it")
    shown = m.alarms()
    assert [a.alarm_id for a in shown] == ["plc.connection", "ro.orp_high", "agent.timeout"]
    plc = shown[0]
    assert (plc.state, plc.acked_by, plc.note) == (S.ACKED, "ann", "on it")
    assert plc.raised_at == T0 + timedelta(seconds=20)
    assert shown[1].message == "ORP 420 mV"
    m.clear("agent.timeout")
    m.ack("agent.timeout", "ann")
    assert "agent.timeout" not in [a.alarm_id for a in m.alarms()]
    assert len(m.alarms(include_normal=True)) == 3


def test_tick_expires_shelves_into_the_implied_state(clock: Clock) -> None:
    m = manager(clock)
    m.raise_alarm("ro.orp_high")
    m.shelve("ro.orp_high", "ann", 600, "analyser being serviced")
    m.shelve("agent.timeout", "ann", 1200, "known slow model load")
    clock.advance(599)
    assert m.tick() == []
    clock.advance(1)
    expired = m.tick()
    assert [t.new.state for t in expired] == [S.UNACKED]  # ORP still active: annunciated again
    clock.advance(600)
    assert [t.new.state for t in m.tick()] == [S.NORMAL]
    assert m.journal[-1].event is E.SHELVE_EXPIRED and m.journal[-1].user is None


def test_conditions_change_while_shelved_are_tracked(clock: Clock) -> None:
    m = manager(clock)
    m.shelve("ro.orp_high", "ann", 600, "known nuisance")
    assert m.set_condition("ro.orp_high", True).new.state is S.SHELVED
    m.unshelve("ro.orp_high", "ann")
    assert m.point("ro.orp_high").state is S.UNACKED


def test_unknown_and_duplicate_alarms_are_errors(clock: Clock) -> None:
    m = manager(clock)
    with pytest.raises(KeyError, match="unknown alarm 'nope'"):
        m.raise_alarm("nope")
    with pytest.raises(ValueError, match="already defined"):
        m.define(AlarmDef("plc.connection", AlarmPriority.LOW, "x"))


def test_manager_shelve_limit_is_configurable(clock: Clock) -> None:
    m = AlarmManager([AlarmDef("a", AlarmPriority.LOW, "a")], clock=clock, max_shelve_s=300)
    assert not m.shelve("a", "ann", 301, "r").accepted
    assert m.shelve("a", "ann", 300, "r").accepted


# --- KPIs ---------------------------------------------------------------------------------------


def entry(
    seq: int, at: datetime, alarm_id: str, event: AlarmEventKind, old: S, new: S, active: bool
) -> JournalEntry:
    return JournalEntry(seq, at, alarm_id, AlarmPriority.HIGH, event, old, new, active, None, "")


def test_flood_and_rate_over_ten_minute_intervals(clock: Clock) -> None:
    m = AlarmManager([AlarmDef(f"a{i}", AlarmPriority.MEDIUM, "") for i in range(12)], clock=clock)
    clock.advance(3600 - 600)
    for i in range(12):  # 12 alarms within 2 minutes of the last interval: a flood
        m.raise_alarm(f"a{i}")
        clock.advance(10)
    clock.advance(300)
    k = m.kpis(period_s=3600)
    assert k.annunciated == 12
    assert k.rate_last_10min == 12
    assert k.peak_per_10min == 12
    assert k.avg_per_10min == pytest.approx(2.0)  # 12 alarms over six 10-minute intervals
    assert k.flood_intervals == 1
    assert k.flood_time_pct == pytest.approx(100 / 6)
    clock.advance(600)
    later = m.kpis(period_s=3600)
    assert later.rate_last_10min == 0 and later.flood_intervals == 1


def test_nine_alarms_are_no_flood(clock: Clock) -> None:
    m = AlarmManager([AlarmDef(f"a{i}", AlarmPriority.MEDIUM, "") for i in range(9)], clock=clock)
    for i in range(9):
        m.raise_alarm(f"a{i}")
    assert m.kpis().flood_intervals == 0


def test_acks_clears_and_hidden_raises_are_not_counted_as_alarms(clock: Clock) -> None:
    m = manager(clock)
    m.raise_alarm("ro.orp_high")
    m.ack("ro.orp_high", "ann")
    m.clear("ro.orp_high")
    m.suppress("agent.timeout", "train stopped")
    m.raise_alarm("agent.timeout")
    k = m.kpis()
    assert k.annunciated == 1
    m.unsuppress("agent.timeout")  # the active alarm is annunciated now
    assert m.kpis().annunciated == 2


def test_chattering_needs_three_annunciations_within_a_minute(clock: Clock) -> None:
    m = manager(clock)
    for _ in range(3):  # 3 within 50 s
        m.raise_alarm("ro.orp_high")
        clock.advance(5)
        m.clear("ro.orp_high")
        clock.advance(20)
    for _ in range(3):  # 3 spread over 4 minutes
        m.raise_alarm("agent.timeout")
        clock.advance(60)
        m.clear("agent.timeout")
        clock.advance(60)
    k = m.kpis()
    assert k.chattering == ("ro.orp_high",)
    assert k.top == (("agent.timeout", 3), ("ro.orp_high", 3))


def test_stale_alarms_are_long_standing_and_visible() -> None:
    old = T0 - timedelta(hours=25)
    journal = [
        entry(1, old, "standing", E.RAISE, S.NORMAL, S.UNACKED, True),
        entry(2, old + timedelta(minutes=1), "standing", E.ACK, S.UNACKED, S.ACKED, True),
        entry(3, old, "shelved", E.RAISE, S.NORMAL, S.UNACKED, True),
        entry(4, old, "shelved", E.SHELVE, S.UNACKED, S.SHELVED, True),
        entry(5, old, "cleared", E.RAISE, S.NORMAL, S.UNACKED, True),
        entry(6, T0 - timedelta(hours=1), "cleared", E.CLEAR, S.UNACKED, S.RTN_UNACKED, False),
        entry(7, T0 - timedelta(hours=2), "recent", E.RAISE, S.NORMAL, S.UNACKED, True),
        entry(8, old, "unshelved", E.RAISE, S.SHELVED, S.SHELVED, True),
        entry(9, T0 - timedelta(hours=3), "unshelved", E.UNSHELVE, S.SHELVED, S.UNACKED, True),
    ]
    k = compute_kpis(journal, T0)
    assert k.stale == ("standing", "unshelved")


def test_kpis_of_an_empty_journal() -> None:
    k = compute_kpis([], T0)
    assert (k.annunciated, k.peak_per_10min, k.flood_intervals, k.chattering, k.stale) == (
        0,
        0,
        0,
        (),
        (),
    )


def test_entries_outside_the_period_are_ignored() -> None:
    journal = [
        entry(1, T0 - timedelta(hours=2), "a", E.RAISE, S.NORMAL, S.UNACKED, True),
        entry(2, T0 - timedelta(minutes=5), "b", E.RAISE, S.NORMAL, S.UNACKED, True),
    ]
    k = compute_kpis(journal, T0, period_s=3600)
    assert k.annunciated == 1 and k.top == (("b", 1),)
