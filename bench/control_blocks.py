"""Control-core building blocks: safety check, alarm transition and scrypt login cost.

Run: .venv/bin/python -m bench.control_blocks
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from app.config import TagLimits
from app.controllers.alarms import AlarmEvent, AlarmEventKind, AlarmPointState, transition
from app.controllers.auth import ScryptParams, hash_password, verify_password
from app.controllers.safety import SafetyEnvelope
from app.domain import Origin, Quality, Sample, Setpoint, Snapshot
from app.plant.catalog import RO_CATALOG

T0 = datetime(2026, 11, 23, tzinfo=UTC)


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    limits = {
        "feed_pressure_sp_bar": TagLimits(
            engineer_low=6, engineer_high=16, operator_low=7, operator_high=15, max_move=1.5
        )
    }
    env = SafetyEnvelope(RO_CATALOG, limits, stale_after_s=5.0)
    values = {
        "feed_pressure_sp_bar": 10.0,
        "cip_active": 0.0,
        "watchdog_tripped": 0.0,
        "write_inhibit": 0.0,
        "remote_mode": 1.0,
        "feed_orp_mv": 150.0,
    }
    snap = Snapshot({t: Sample(t, v, Quality.GOOD, T0, 99.0) for t, v in values.items()}, 100.0)
    sp = Setpoint("feed_pressure_sp_bar", 10.5)
    origin = Origin.agent("ro-1.0.0")
    assert env.check(sp, snap, origin, 100.0).ok
    check_us = per_call_us(lambda: env.check(sp, snap, origin, 100.0), 50_000)

    point = AlarmPointState()
    raise_ev = AlarmEvent(AlarmEventKind.RAISE, T0)
    shelve_ev = AlarmEvent(AlarmEventKind.SHELVE, T0, "ann", "reason", 600.0)
    raised = transition(point, raise_ev).new
    alarm_us = per_call_us(lambda: transition(raised, shelve_ev), 50_000)

    params = ScryptParams()
    t = time.perf_counter()
    encoded = hash_password("correct horse battery", params)
    hash_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    assert verify_password("correct horse battery", encoded)
    verify_ms = (time.perf_counter() - t) * 1e3

    print(f"{'figure':36} {'value':>10}")
    print(f"{'safety check (all layers pass)':36} {check_us:8.1f} µs")
    print(f"{'alarm transition (shelve)':36} {alarm_us:8.1f} µs")
    print(f"{'scrypt hash n=2^15 r=8 p=3':36} {hash_ms:8.0f} ms")
    print(f"{'scrypt verify (one login)':36} {verify_ms:8.0f} ms")
    print(
        json.dumps(
            {
                "bench": "control_blocks",
                "safety_check_us": round(check_us, 2),
                "alarm_transition_us": round(alarm_us, 2),
                "scrypt_hash_ms": round(hash_ms, 1),
                "scrypt_verify_ms": round(verify_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
