"""What the soak found growing (docs/reliability.md, "Soak"): each structure now stays bounded."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.agent_runtime.host import _DeadlineWatch
from app.controllers import alarm_points as ap
from app.controllers.alarms import AlarmManager
from app.controllers.auth import Action, AuthService, ScryptParams, SessionExpired, UserStore
from app.domain import AuditEvent, Role

PASSWORD = "correct-horse-battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def __call__(self) -> float:
        return self.now


def test_sessions_nobody_uses_again_are_ended_at_the_next_login(tmp_path: Path) -> None:
    clock = Clock()
    audit: list[AuditEvent] = []
    auth = AuthService(UserStore(tmp_path / "users.json"), clock=clock, sink=audit.append,
                       idle_timeout_s=900, scrypt=ScryptParams(n=2**4, r=1, p=1))  # fmt: skip
    auth.create_first_supervisor("sup", PASSWORD)
    sup = auth.login("sup", PASSWORD)
    auth.add_user(sup, "eng", Role.ENGINEER, PASSWORD)
    first = auth.login("eng", PASSWORD)
    live = []
    for _ in range(500):  # a client that logs in every 100 s and never logs out
        clock.now += 100
        live.append(auth.login("eng", PASSWORD))
    # At most the last 900 s of logins are still open; before the fix all 502 stayed in memory.
    assert len(auth._sessions) <= 10
    assert auth.is_active(live[-1]) and not auth.is_active(first)
    ended = [e for e in audit if e.kind == "session_expired"]
    assert len(ended) == 502 - len(auth._sessions)  # every ending is audited
    assert all("idle" in e.summary for e in ended)
    with pytest.raises(SessionExpired):
        auth.require(first, Action.ROLLBACK)


def test_the_deadline_watch_keeps_no_finished_inference() -> None:
    watch = _DeadlineWatch("test-deadline", time.monotonic)
    try:
        for _ in range(1000):  # one per agent step; each finishes long before its deadline
            future: Future[int] = Future()
            watch.add(time.monotonic() + 30.0, future)
            future.set_result(1)
        with watch._cond:
            held = len(watch._heap)
        assert held <= 1  # before the fix: 1,000 futures (with results) until the first deadline
        pending: Future[int] = Future()
        watch.add(time.monotonic() + 0.05, pending)
        done = threading.Event()
        pending.add_done_callback(lambda _: done.set())
        assert done.wait(5.0)
        assert pending.exception() is not None  # unfinished futures still fail at the deadline
    finally:
        watch.stop(5.0)


def test_the_alarm_journal_stops_growing_at_its_bound() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    alarms = AlarmManager(ap.CORE_ALARMS, clock=lambda: now[0])
    ids = [d.alarm_id for d in ap.CORE_ALARMS]

    def events(n: int) -> None:
        for i in range(n):
            now[0] += timedelta(seconds=1)
            raise_it = (i // len(ids)) % 2 == 0  # each point alternates raise and clear
            alarms.set_condition(ids[i % len(ids)], raise_it, f"event {i}")

    tracemalloc.start()  # before the first entry: frees of untraced blocks would not count
    try:
        events(12_000)
        assert len(alarms.journal) == 10_000  # full
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        events(12_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(alarms.journal) == 10_000
    assert alarms.journal[-1].seq == 24_000  # the newest are kept, the oldest dropped
    assert grown < 100_000  # bytes; 12,000 more entries would be about 2.4 MB
