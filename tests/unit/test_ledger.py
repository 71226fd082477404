"""Audit ledger: hash chain, tamper detection, durability after SIGKILL, queries, CLI exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.controllers.ledger import (
    GENESIS_HASH,
    AuditFilter,
    Ledger,
    LedgerError,
    LedgerReader,
    canonical_json,
    row_hash,
    run_audit_cli,
    verify,
)
from app.domain import AuditEvent, Origin, OriginKind, Role

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def event(i: int, kind: str = "write", origin: Origin | None = None) -> AuditEvent:
    return AuditEvent(
        kind,
        origin or Origin.operator("alice", Role.OPERATOR),
        f"event {i}: feed_pressure_sp_bar 10.0 -> {10 + i * 0.1:.1f}",
        {"tag": "feed_pressure_sp_bar", "old": 10.0, "new": 10 + i * 0.1, "i": i},
        T0 + timedelta(minutes=i),
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        for i in range(1, 11):
            ledger.append(event(i))
    return path


def tamper(path: Path, sql: str, *params: object) -> None:
    """Change the file behind the writer's back, as an attacker with file access would."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER ledger_no_update")
    conn.execute("DROP TRIGGER ledger_no_delete")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


# --- chain ------------------------------------------------------------------------------------


def test_records_chain_from_genesis(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as ledger:
        assert ledger.head() == (0, GENESIS_HASH)
        first = ledger.append(event(1))
        second = ledger.append(event(2))
        assert (first.seq, second.seq) == (1, 2)
        assert first.prev_hash == GENESIS_HASH
        assert second.prev_hash == first.hash
        assert ledger.head() == (2, second.hash)
    data = canonical_json(event(1).data)
    assert first.hash == row_hash(
        1,
        "2026-11-23T08:01:00.000000+00:00",
        "write",
        "operator",
        "alice",
        "OPERATOR",
        event(1).summary,
        data,
        GENESIS_HASH,
    )


def test_an_untouched_ledger_verifies(db: Path) -> None:
    report = verify(db)
    assert report.ok
    assert report.rows == 10
    assert report.head_seq == 10
    assert report.summary().startswith("OK: 10 records")


def test_empty_ledger_verifies(tmp_path: Path) -> None:
    Ledger(tmp_path / "e.sqlite").close()
    report = verify(tmp_path / "e.sqlite")
    assert report.ok and report.rows == 0 and report.head_hash == GENESIS_HASH


def test_reopening_continues_the_chain(db: Path) -> None:
    with Ledger(db) as ledger:
        rec = ledger.append(event(11))
    assert rec.seq == 11
    assert verify(db).ok


def test_the_writer_refuses_updates_and_deletes(db: Path) -> None:
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE ledger SET summary = 'x' WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM ledger WHERE seq = 3")
    conn.close()


def test_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "w.sqlite")
    conn = ledger._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ledger.close()


# --- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "params", "first_bad", "problem"),
    [
        ("UPDATE ledger SET summary = ? WHERE seq = 4", ("harmless",), 4, "edited"),
        ("UPDATE ledger SET data = ? WHERE seq = 7", ('{"new":99}',), 7, "edited"),
        (
            "UPDATE ledger SET at = ? WHERE seq = 2",
            ("2026-11-23T09:00:00.000000+00:00",),
            2,
            "edited",
        ),
        ("UPDATE ledger SET origin_role = 'SUPERVISOR' WHERE seq = 5", (), 5, "edited"),
        ("UPDATE ledger SET origin_name = 'bob' WHERE seq = 1", (), 1, "edited"),
        ("DELETE FROM ledger WHERE seq = 6", (), 6, "deleted"),
        ("DELETE FROM ledger WHERE seq IN (3, 4, 5)", (), 3, "deleted"),
        ("DELETE FROM ledger WHERE seq = 10", (), 10, "deleted"),
        ("DELETE FROM ledger WHERE seq >= 8", (), 8, "deleted"),
        ("UPDATE ledger_head SET seq = 9", (), 10, "beyond the recorded head"),
        ("UPDATE ledger_head SET hash = ?", ("f" * 64,), 10, "head hash"),
    ],
)
def test_tampering_is_detected_at_the_first_bad_row(
    db: Path, sql: str, params: tuple[object, ...], first_bad: int, problem: str
) -> None:
    tamper(db, sql, *params)
    report = verify(db)
    assert not report.ok
    assert report.first_bad_seq == first_bad
    assert problem in report.problem
    assert f"row #{first_bad}" in report.summary()


def test_reordering_rows_is_detected(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER ledger_no_update")
    conn.execute("UPDATE ledger SET seq = -1 WHERE seq = 4")
    conn.execute("UPDATE ledger SET seq = 4 WHERE seq = 5")
    conn.execute("UPDATE ledger SET seq = 5 WHERE seq = -1")
    conn.commit()
    conn.close()
    report = verify(db)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert "prev_hash" in report.problem


def test_inserting_a_row_is_detected_even_with_a_plausible_hash(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER ledger_no_update")
    conn.execute("UPDATE ledger SET seq = seq + 100 WHERE seq > 5")
    conn.execute("UPDATE ledger SET seq = seq - 99 WHERE seq > 100")
    prev = conn.execute("SELECT hash FROM ledger WHERE seq = 5").fetchone()[0]
    at = "2026-11-23T08:05:30.000000+00:00"
    forged = row_hash(6, at, "write", "operator", "mallory", "OPERATOR", "forged", "{}", prev)
    conn.execute(
        "INSERT INTO ledger VALUES (6, ?, 'write', 'operator', 'mallory', 'OPERATOR', 'forged', "
        "'{}', ?, ?)",
        (at, prev, forged),
    )
    conn.commit()
    conn.close()
    report = verify(db)
    assert not report.ok
    assert report.first_bad_seq == 7  # the forged row fits; the next one no longer chains to it
    assert "prev_hash" in report.problem


def test_a_recomputed_chain_is_caught_by_the_anchored_head(db: Path) -> None:
    anchor = verify(db)
    # The attacker edits row 3 and recomputes every later hash and the head.
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER ledger_no_update")
    conn.execute("UPDATE ledger SET summary = 'rewritten' WHERE seq = 3")
    prev = conn.execute("SELECT hash FROM ledger WHERE seq = 2").fetchone()[0]
    rows = conn.execute("SELECT * FROM ledger WHERE seq >= 3 ORDER BY seq").fetchall()
    for seq, at, kind, okind, oname, orole, summary, data, _p, _h in rows:
        h = row_hash(seq, at, kind, okind, oname, orole, summary, data, prev)
        conn.execute("UPDATE ledger SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
        prev = h
    conn.execute("UPDATE ledger_head SET hash = ?", (prev,))
    conn.commit()
    conn.close()
    assert verify(db).ok  # the chain alone cannot see a full recomputation
    report = verify(db, expected_head=(anchor.head_seq, anchor.head_hash))
    assert not report.ok
    assert report.first_bad_seq == 10
    assert "anchored" in report.problem


# --- durability -------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from app.controllers.ledger import Ledger
    from app.domain import AuditEvent, Origin

    ledger = Ledger(sys.argv[1])
    i = 0
    while True:
        i += 1
        rec = ledger.append(AuditEvent("write", Origin.system("test"), f"n{i}", {"i": i},
                                       datetime.now(UTC)))
        sys.stdout.write(f"{rec.seq}\\n")
        sys.stdout.flush()
    """
)


def test_nothing_acknowledged_is_lost_when_the_process_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked = 0
    try:
        for line in child.stdout:
            acked = int(line)
            if acked >= 40:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert acked >= 40
    report = verify(path)
    assert report.ok, report.summary()
    assert report.rows >= acked
    with LedgerReader(path) as reader:
        page = reader.query(AuditFilter(newest_first=False), limit=acked)
    assert [r.event.data["i"] for r in page.records] == list(range(1, acked + 1))
    with Ledger(path) as ledger:  # the writer reopens and continues the chain
        assert ledger.append(event(1)).seq == report.rows + 1
    assert verify(path).ok


# --- encoding ---------------------------------------------------------------------------------


def test_data_round_trips_and_non_finite_floats_are_kept_as_text(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as ledger:
        rec = ledger.append(
            AuditEvent(
                "sample",
                Origin.system("plant"),
                "odd values",
                {"nan": float("nan"), "inf": float("-inf"), "role": Role.ENGINEER, "at": T0},
                T0,
            )
        )
    assert rec.event.data == {
        "nan": "nan",
        "inf": "-inf",
        "role": 2,
        "at": "2026-11-23T08:00:00.000000+00:00",
    }
    assert verify(tmp_path / "l.sqlite").ok


def test_bad_events_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(TypeError, match="cannot store a object"):
            ledger.append(AuditEvent("x", Origin.system("t"), "s", {"o": object()}, T0))
        with pytest.raises(ValueError, match="timezone-aware"):
            ledger.append(AuditEvent("x", Origin.system("t"), "s", {}, datetime(2026, 1, 1)))
        assert ledger.head()[0] == 0  # nothing half-written


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert canonical_json({"a": "µS/cm"}) == '{"a":"µS/cm"}'


def test_a_failed_write_raises_ledger_error(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger.append(event(1))
    ledger._conn.execute("PRAGMA query_only = ON")  # stands in for a read-only or full disk
    with pytest.raises(LedgerError, match="could not record 'write' event"):
        ledger.append(event(2))
    ledger._conn.execute("PRAGMA query_only = OFF")
    assert ledger.append(event(2)).seq == 2
    ledger.close()
    assert verify(path).ok


# --- queries ----------------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.sqlite"
    alice = Origin.operator("alice", Role.OPERATOR)
    bob = Origin.operator("bob", Role.ENGINEER)
    agent = Origin.agent("ro-1.2.0")
    with Ledger(path) as ledger:
        for i in range(30):
            origin = (alice, bob, agent)[i % 3]
            kind = ("write", "decision", "login")[i % 3 if i % 5 else 2]
            ledger.append(
                AuditEvent(kind, origin, f"#{i} 100%_done", {"i": i}, T0 + timedelta(minutes=i))
            )
    return path


def test_query_pages_newest_first(mixed: Path) -> None:
    with LedgerReader(mixed) as reader:
        first = reader.query(limit=12)
        last = reader.query(offset=24, limit=12)
    assert first.total == 30 and first.has_more
    assert [r.seq for r in first.records] == list(range(30, 18, -1))
    assert [r.seq for r in last.records] == list(range(6, 0, -1))
    assert not last.has_more


def test_query_filters_combine(mixed: Path) -> None:
    with LedgerReader(mixed) as reader:
        by_kind = reader.query(AuditFilter(kinds=("login",)), limit=100)
        by_origin = reader.query(
            AuditFilter(origin_kind=OriginKind.OPERATOR, origin_name="bob"), limit=100
        )
        by_time = reader.query(
            AuditFilter(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=15)),
            limit=100,
        )
        by_text = reader.query(AuditFilter(text="#2"), limit=100)
        literal = reader.query(AuditFilter(text="0%_d"), limit=100)
        wildcard_free = reader.query(AuditFilter(text="1_0"), limit=100)
        both = reader.query(
            AuditFilter(kinds=("write",), origin_name="alice", newest_first=False), limit=100
        )
    assert {r.event.kind for r in by_kind.records} == {"login"}
    assert by_kind.total == len([i for i in range(30) if i % 3 == 2 or i % 5 == 0])
    assert {r.event.origin.name for r in by_origin.records} == {"bob"}
    assert all(r.event.origin.role is Role.ENGINEER for r in by_origin.records)
    assert [r.event.data["i"] for r in by_time.records] == [14, 13, 12, 11, 10]
    assert sorted(r.event.data["i"] for r in by_text.records) == [
        2,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        29,
    ]
    assert literal.total == 30  # '%' and '_' are matched literally
    assert wildcard_free.total == 0
    assert [r.event.data["i"] for r in both.records] == [
        i for i in range(30) if i % 3 == 0 and i % 5
    ]


def test_writer_and_reader_see_the_same_records(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path) as ledger, LedgerReader(path) as reader:
        ledger.append(event(1))
        assert reader.query().total == 1
        ledger.append(event(2))
        assert reader.query().total == 2  # WAL: the reader sees new commits
        assert ledger.query(AuditFilter(text="event 2")).records[0].seq == 2


def test_query_rejects_bad_paging(mixed: Path) -> None:
    with LedgerReader(mixed) as reader, pytest.raises(ValueError, match="offset must be"):
        reader.query(offset=-1)


# --- files and CLI ----------------------------------------------------------------------------


def test_missing_and_foreign_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no such ledger file"):
        verify(tmp_path / "none.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="cannot read the ledger"):
        verify(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LedgerError, match="not an intelwatt audit ledger"):
        verify(other)
    with pytest.raises(LedgerError, match="no such ledger file"):
        LedgerReader(tmp_path / "none.sqlite")


def test_verify_never_modifies_the_file(db: Path) -> None:
    before = db.read_bytes()
    verify(db)
    assert db.read_bytes() == before


def test_cli_exit_codes(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_audit_cli(argparse.Namespace(db=db)) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "OK: 10 records" in out

    assert run_audit_cli(argparse.Namespace(db=tmp_path / "missing.sqlite")) == 2
    assert "no such ledger file" in capsys.readouterr().err

    tamper(db, "UPDATE ledger SET summary = 'x' WHERE seq = 5")
    assert run_audit_cli(argparse.Namespace(db=db)) == 1
    assert "row #5" in capsys.readouterr().err
