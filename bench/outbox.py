"""Outbox: enqueue cost per control step and drain throughput to Azurite.

Run: ``.venv/bin/python -m bench.outbox`` (needs ``make test-peers`` for Azurite).

- enqueue: one realistic transition record (19 observations, two agents' actions, applied setpoints,
  KPIs) per call, autocommitted in WAL mode; peer: a bare ``INSERT`` of the same pre-serialised
  text into an equivalent WAL table (no JSON, no accounting).
- drain: 50,000 records shipped from the outbox to append blobs on a local Azurite.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from app.cloud.outbox import Outbox, OutboxDrainer, OutboxLimits, RecordKind, dumps_payload
from app.cloud.storage import open_container
from app.plant.catalog import RO_CATALOG

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
N_ENQUEUE = 20_000
N_DRAIN = 50_000


def transition(i: int) -> dict[str, object]:
    obs = {t.name: 10.0 + 0.001 * i for t in RO_CATALOG.observations}
    return {
        "obs": obs,
        "actions": {
            "active": {"feed_pressure_sp_bar": 14.2, "feed_flow_sp_m3h": 41.0},
            "candidate": {"feed_pressure_sp_bar": 14.5, "feed_flow_sp_m3h": 40.2},
        },
        "applied": {"feed_pressure_sp_bar": 14.2, "feed_flow_sp_m3h": 41.0},
        "reward": -0.42,
        "kpis": {"sec_kwh_m3": 0.61, "recovery": 0.74},
        "agent": {"process": "ro", "version": "ro-2026.11.3"},
        "cloud_sourced": False,
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


def bench_enqueue(folder: Path) -> dict[str, float]:
    outbox = Outbox(folder / "enqueue.db", OutboxLimits.from_mb(4096))
    records = [transition(i) for i in range(N_ENQUEUE)]
    times = []
    for record in records:
        t0 = time.perf_counter_ns()
        outbox.enqueue(RecordKind.TRANSITION, record)
        times.append((time.perf_counter_ns() - t0) / 1000)
    outbox.close()

    db = sqlite3.connect(folder / "peer.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE r (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT)")
    texts = [dumps_payload(r) for r in records]
    peer = []
    for text in texts:
        t0 = time.perf_counter_ns()
        db.execute("INSERT INTO r (payload) VALUES (?)", (text,))
        peer.append((time.perf_counter_ns() - t0) / 1000)
    db.close()
    p50, p99 = percentiles(times)
    q50, q99 = percentiles(peer)
    return {
        "enqueue_p50_us": p50,
        "enqueue_p99_us": p99,
        "insert_p50_us": q50,
        "insert_p99_us": q99,
        "record_bytes": len(texts[0]),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drain_to_azurite(folder: Path, port: int) -> dict[str, float]:
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    outbox = Outbox(folder / "drain.db", OutboxLimits.from_mb(4096))
    for i in range(N_DRAIN):
        outbox.enqueue(RecordKind.TRANSITION, transition(i))
    container = open_container(conn, "bench", retry_total=0)
    await container.create_container()
    drainer = OutboxDrainer(outbox, container, site="bench", console="c1")
    t0 = time.perf_counter()
    delivered = await drainer.drain()
    elapsed = time.perf_counter() - t0
    if delivered != N_DRAIN or outbox.pending_records:
        raise RuntimeError(f"drained {delivered} of {N_DRAIN}")
    await container.close()
    outbox.close()
    return {
        "drain_records_per_s": N_DRAIN / elapsed,
        "drain_s": elapsed,
        "appends": drainer.appends,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        enqueue = bench_enqueue(folder)
        if not AZURITE.exists():
            raise SystemExit("Azurite is missing: run `make test-peers`")
        port = free_port()
        log = (folder / "azurite.log").open("wb")
        proc = subprocess.Popen(
            [
                str(AZURITE),
                "--silent",
                "--location",
                str(folder / "az"),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("Azurite did not start") from None
                    time.sleep(0.05)
            drain = asyncio.run(drain_to_azurite(folder, port))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
            log.close()

    print(f"{'figure':<40} {'value':>12}")
    print(f"{'record size (transition, bytes)':<40} {enqueue['record_bytes']:>12.0f}")
    print(f"{'Outbox.enqueue p50 (µs)':<40} {enqueue['enqueue_p50_us']:>12.1f}")
    print(f"{'Outbox.enqueue p99 (µs)':<40} {enqueue['enqueue_p99_us']:>12.1f}")
    print(f"{'peer: bare sqlite INSERT p50 (µs)':<40} {enqueue['insert_p50_us']:>12.1f}")
    print(f"{'peer: bare sqlite INSERT p99 (µs)':<40} {enqueue['insert_p99_us']:>12.1f}")
    print(f"{'drain to Azurite (records/s)':<40} {drain['drain_records_per_s']:>12.0f}")
    print(f"{'drain of 50,000 records (s)':<40} {drain['drain_s']:>12.2f}")
    print(f"{'append blocks used':<40} {drain['appends']:>12.0f}")
    print(
        json.dumps(
            {
                "bench": "outbox",
                "enqueue_p50_us": round(enqueue["enqueue_p50_us"], 1),
                "enqueue_p99_us": round(enqueue["enqueue_p99_us"], 1),
                "insert_peer_p50_us": round(enqueue["insert_p50_us"], 1),
                "enqueue_vs_insert_x": round(
                    enqueue["enqueue_p50_us"] / enqueue["insert_p50_us"], 2
                ),
                "drain_records_per_s": round(drain["drain_records_per_s"]),
            }
        )
    )


if __name__ == "__main__":
    main()
