"""Audit ledger: append latency with synchronous=FULL (the policy) vs NORMAL, verify and query speed.

Run: .venv/bin/python -m bench.ledger [--appends N] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.controllers.ledger import AuditFilter, Ledger, LedgerReader, verify
from app.domain import AuditEvent, Origin, Role

T0 = datetime(2026, 11, 23, tzinfo=UTC)


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        "write",
        Origin.operator("otto", Role.OPERATOR),
        f"feed_pressure_sp_bar 10.0 -> {10 + (i % 50) / 10:.1f} bar",
        {"tag": "feed_pressure_sp_bar", "old": 10.0, "new": 10 + (i % 50) / 10, "verdict": "ok"},
        T0 + timedelta(seconds=i),
    )


def append_latencies_us(folder: Path, synchronous: str, n: int) -> list[float]:
    ledger = Ledger(folder / f"append-{synchronous.lower()}.sqlite")
    ledger._conn.execute(f"PRAGMA synchronous={synchronous}")
    out = []
    for i in range(n):
        t = time.perf_counter()
        ledger.append(_event(i))
        out.append((time.perf_counter() - t) * 1e6)
    ledger.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        folder = Path(tmp)
        full = append_latencies_us(folder, "FULL", args.appends)
        normal = append_latencies_us(folder, "NORMAL", args.appends)

        big = folder / "big.sqlite"
        ledger = Ledger(big)
        ledger._conn.execute("PRAGMA synchronous=OFF")  # fill quickly; only reads are timed
        for i in range(args.rows):
            ledger.append(_event(i))
        ledger.close()
        t = time.perf_counter()
        report = verify(big)
        verify_s = time.perf_counter() - t
        assert report.ok, report.summary()
        with LedgerReader(big) as reader:
            t = time.perf_counter()
            page = reader.query(AuditFilter(text="-> 14.9", kinds=("write",)), limit=100)
            query_ms = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            reader.query(limit=100, offset=args.rows // 2)
            page_ms = (time.perf_counter() - t) * 1e3

    def p99(xs: list[float]) -> float:
        return sorted(xs)[int(0.99 * (len(xs) - 1))]

    print(f"append latency over {args.appends} records (WAL mode)")
    print(f"{'synchronous':12} {'median µs':>10} {'p99 µs':>10}")
    print(f"{'FULL':12} {statistics.median(full):10.0f} {p99(full):10.0f}")
    print(f"{'NORMAL':12} {statistics.median(normal):10.0f} {p99(normal):10.0f}")
    print(f"verify {args.rows} rows: {verify_s * 1e3:.0f} ms ({args.rows / verify_s:,.0f} rows/s)")
    print(f"text query over {args.rows} rows: {query_ms:.1f} ms ({page.total} matches)")
    print(f"page at offset {args.rows // 2}: {page_ms:.1f} ms")
    figures = {
        "bench": "ledger",
        "append_full_median_us": round(statistics.median(full), 1),
        "append_full_p99_us": round(p99(full), 1),
        "append_normal_median_us": round(statistics.median(normal), 1),
        "full_over_normal_x": round(statistics.median(full) / statistics.median(normal), 2),
        "verify_rows_per_s": round(args.rows / verify_s),
        "text_query_ms": round(query_ms, 2),
        "page_ms": round(page_ms, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
