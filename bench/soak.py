"""Soak: a million accelerated control ticks with random faults; RSS, ledger chain, outbox.

What runs: every controller of the control core on a ``ManualContext`` (simulated clock), a
``FakeDriver`` PLC, a real ``PolicyHost`` (ONNX Runtime on its worker thread) with a signed random
MLP package, the real hash-chained ``Ledger`` and the real SQLite ``Outbox`` fed by the audit trail.
Why not the real OPC UA stack: a million ticks over loopback OPC UA take days; the fault-matrix
tests cover the protocol stacks, and this run covers what accumulates over time (memory, ledger,
outbox, alarms, timers).

One tick = one second of plant time: every PLC value is refreshed and the supervision cadence runs
(freshness checks, handshake, heartbeat, ramps); the agent steps every ``--agent-every`` ticks in
AUTOMATIC. Random faults: bad qualities, NaN, interlock flips, PLC drops and restores, refused
writes, cloud outages of the outbox delivery (the "cloud" side acknowledges by ``mark_delivered``
after a random-sized upload, as the drainer does). After every fault the plant returns to good
values and AUTOMATIC is requested again, as an engineer would.

Run: ``.venv/bin/python -m bench.soak [--ticks 1000000]`` (``make soak``). Prints a table and, as
its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.host import PolicyHost
from app.agent_runtime.keys import TrustStore, public_key_of
from app.cloud.outbox import Outbox, OutboxLimits, RecordKind
from app.config import ControlSettings, ModePolicy, TagLimits
from app.controllers import alarm_points as ap
from app.controllers.agent import AgentController, AgentSettings
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.auth import Action, AuthService, ScryptParams, UserStore
from app.controllers.context import ManualContext
from app.controllers.events import EventBus
from app.controllers.ledger import Ledger, verify
from app.controllers.mode import ModeController
from app.controllers.plant import PlantController, PlantSettings
from app.controllers.safety import SafetyEnvelope
from app.controllers.snapshot import SnapshotService
from app.controllers.trend_buffer import TrendBuffer
from app.domain import AuditEvent, Mode, Quality, Role, Slot
from app.drivers.fake import FakeDriver
from app.plant.catalog import RO_CATALOG
from bench.soak_policy import write_random_mlp_package

P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
PASSWORD = "correct-horse-battery"
LIMITS = {
    P: TagLimits(engineer_low=6, engineer_high=16, operator_low=7, operator_high=15, max_move=1.0,
                 max_rate_per_s=0.5),
    F: TagLimits(engineer_low=25, engineer_high=65, operator_low=28, operator_high=62,
                 max_move=4.0),
}  # fmt: skip
SANE = {"remote_mode": 1.0, "write_inhibit": 0.0, "watchdog_tripped": 0.0, "cip_active": 0.0}
EPOCH = 1_767_225_600.0  # 2026-01-01 UTC: the soak's wall clock is plant time from here
FAULTS = ("quality", "nan", "interlock", "drop", "refuse", "cloud_down")


@dataclass(frozen=True, slots=True)
class SoakResult:
    """Figures of one soak run."""

    ticks: int
    agent_steps: int
    faults: int
    plc_writes: int
    unsafe_writes: int
    ledger_rows: int
    ledger_ok: bool
    outbox_enqueued: int
    outbox_delivered: int
    outbox_pending: int
    outbox_refused: int
    rss_start_mb: float
    rss_end_mb: float
    rss_growth_pct: float
    wall_s: float

    @property
    def ok(self) -> bool:
        """All soak criteria: no unsafe write, chain verifies, outbox delivered all, RSS ≤ 5 %."""
        return (
            self.unsafe_writes == 0
            and self.ledger_ok
            and self.outbox_pending == 0
            and self.outbox_refused == 0
            and self.outbox_delivered == self.outbox_enqueued
            and self.rss_growth_pct <= 5.0
        )


def _rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


Probe = Callable[[int, Mapping[str, object]], None]
"""Called every ``probe_every`` ticks with the tick and the run's live objects (by name)."""


def run_soak(ticks: int, root: Path, *, seed: int = 0, agent_every: int = 30,
             fault_rate: float = 0.002, probe: Probe | None = None,
             probe_every: int = 10_000) -> SoakResult:  # fmt: skip
    """Run ``ticks`` control ticks with random faults under ``root``; see the module docstring.

    ``probe`` (memory diagnosis, ``bench.soak_memory``) sees the live objects every
    ``probe_every`` ticks and once more after the last tick.
    """
    rnd = random.Random(seed)
    key = Ed25519PrivateKey.generate()
    trust = TrustStore([public_key_of(key, "soak")])
    ctx = ManualContext()
    driver = FakeDriver(RO_CATALOG.tags, clock=ctx.monotonic)
    driver.values.update(SANE)
    good = dict(driver.values)
    bus = EventBus()
    ledger = Ledger(root / "ledger.sqlite")
    outbox = Outbox(root / "outbox.db", OutboxLimits.from_mb(256))
    enqueued = 0

    def to_outbox(event: AuditEvent) -> None:
        nonlocal enqueued
        outbox.enqueue(RecordKind.AUDIT, {"kind": event.kind, "summary": event.summary})
        enqueued += 1

    trail = AuditTrail(ledger, to_outbox)
    alarms = AlarmManager(ap.CORE_ALARMS, sink=ap.journal_sink(trail, bus.publish))

    def audit_auth(event: AuditEvent) -> None:
        trail.try_record(event.kind, event.origin, event.summary, event.data)

    # Sessions age in plant time like everything else (idle timeout 900 s = 900 ticks).
    auth = AuthService(UserStore(root / "users.json"), scrypt=ScryptParams(n=2**4, r=1, p=1),
                       sink=audit_auth, clock=lambda: EPOCH + ctx.monotonic())  # fmt: skip
    auth.create_first_supervisor("sup", PASSWORD)
    sup = auth.login("sup", PASSWORD)
    auth.add_user(sup, "eng", Role.ENGINEER, PASSWORD)
    control = ControlSettings(agent_period_s=86400, inference_deadline_s=30,
                              recommendation_ttl_s=300, safe_hold_s=120)  # fmt: skip
    policy = ModePolicy(min_shadow_steps=2)
    snapshot = SnapshotService(5.0, clock=ctx.monotonic)
    plant = PlantController(
        ctx, driver, RO_CATALOG, snapshot, TrendBuffer([t.name for t in RO_CATALOG.tags], 3600),
        SafetyEnvelope(RO_CATALOG, LIMITS, stale_after_s=5.0), trail, bus, alarms, LIMITS,
        PlantSettings(),
    )  # fmt: skip
    host = PolicyHost(trust, RO_CATALOG, control=control, limits=LIMITS)
    mode = ModeController(ctx, plant, auth, trail, bus, alarms, policy)
    agent = AgentController(ctx, host, plant, mode, auth, trail, bus, alarms, control, policy,
                            LIMITS, AgentSettings(shadow_kpi_every=0))  # fmt: skip
    plant.start()
    agent.start()
    ctx.run_pending()
    pkg = write_random_mlp_package(root / "pkg", key)
    fut = host.load(pkg, Slot.ACTIVE)
    fut.result(30)
    agent.record_load(pkg, auth.require(sup, Action.PROMOTE), Slot.ACTIVE, fut, None)

    def settle() -> None:
        for _ in range(3):
            ctx.run_pending()
        ctx.run_pending()

    def want_automatic() -> None:
        if mode.mode is Mode.AUTOMATIC:
            return
        eng = auth.login("eng", PASSWORD)
        if mode.mode is Mode.OFF:
            mode.request_mode(Mode.ADVISORY, eng)
            settle()
        mode.request_mode(Mode.AUTOMATIC, eng, confirm=True)
        settle()

    def live() -> dict[str, object]:
        return {"ctx": ctx, "driver": driver, "bus": bus, "ledger": ledger, "outbox": outbox,
                "trail": trail, "alarms": alarms, "auth": auth, "snapshot": snapshot,
                "plant": plant, "host": host, "mode": mode, "agent": agent}  # fmt: skip

    delivered = 0
    cloud_up = True
    faults = agent_steps = unsafe = 0
    fault_left = 0
    writes_seen = 0
    rss_start = 0.0
    warmup = max(1, ticks // 4)  # trend buffers, caches and SQLite pages fill up first
    t0 = time.perf_counter()
    for tick in range(ticks):
        if tick == warmup:
            rss_start = _rss_mb()
        if fault_left == 0 and rnd.random() < fault_rate:
            faults += 1
            fault_left = rnd.randint(3, 30)
            kind = rnd.choice(FAULTS)
            tag = rnd.choice([t.name for t in RO_CATALOG.observations])
            if kind == "quality":
                driver.set_value(
                    tag, driver.values[tag], rnd.choice([Quality.BAD, Quality.UNCERTAIN])
                )
            elif kind == "nan":
                driver.set_value(tag, float("nan"))
            elif kind == "interlock":
                driver.set_value(
                    rnd.choice(["cip_active", "watchdog_tripped", "write_inhibit"]), 1.0
                )
            elif kind == "drop":
                driver.drop()
            elif kind == "refuse":
                driver.refuse_writes(rnd.choice([P, F]))
            else:
                cloud_up = False
        elif fault_left > 0:
            fault_left -= 1
            if fault_left == 0:  # the fault clears; an engineer asks for AUTOMATIC again
                driver.restore()
                driver.faults.refuse.clear()
                driver.faults.quality.clear()
                cloud_up = True
                for name in (*SANE, *[t.name for t in RO_CATALOG.observations]):
                    driver.values[name] = good[name]
        if driver.state.value == "connected":
            driver.set_values({t: driver.values[t] for t in good})
        ctx.advance(1.0)
        settle()
        if fault_left == 0 and tick % 97 == 0:
            want_automatic()
        if tick % agent_every == 0 and mode.mode is not Mode.OFF:
            before = len(driver.writes)
            faulty_now = fault_left > 0
            agent.step()
            agent.delivered.result(30)
            settle()
            agent_steps += 1
            for w in driver.writes[before:]:
                lim = LIMITS.get(w.tag)
                if lim is not None and (
                    faulty_now or not lim.engineer_low <= w.value <= lim.engineer_high
                ):
                    unsafe += 1
        writes_seen = len(driver.writes)
        if cloud_up and tick % 60 == 0:  # the cloud acknowledges an upload of what is pending
            batch = outbox.peek(rnd.randint(1, 500), 4 * 2**20)
            if batch:
                delivered += outbox.mark_delivered(batch[-1].id)
        if len(driver.writes) > 10_000:
            del driver.writes[:-100]  # the fake PLC's own history is not the console's memory
        if probe is not None and tick % probe_every == 0:
            probe(tick, live())
    while True:  # final upload after the run
        batch = outbox.peek(1000, 4 * 2**20)
        if not batch:
            break
        delivered += outbox.mark_delivered(batch[-1].id)
    wall = time.perf_counter() - t0
    rss_end = _rss_mb()
    if probe is not None:
        probe(ticks, live())
    host.close()
    ledger.close()
    report = verify(root / "ledger.sqlite")
    result = SoakResult(
        ticks=ticks, agent_steps=agent_steps, faults=faults, plc_writes=writes_seen,
        unsafe_writes=unsafe, ledger_rows=report.rows, ledger_ok=report.ok,
        outbox_enqueued=enqueued, outbox_delivered=delivered,
        outbox_pending=outbox.pending_records, outbox_refused=outbox.refused_records,
        rss_start_mb=round(rss_start, 1), rss_end_mb=round(rss_end, 1),
        rss_growth_pct=round(100 * (rss_end - rss_start) / rss_start, 2), wall_s=round(wall, 1),
    )  # fmt: skip
    outbox.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: run the soak and print its figures."""
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: a temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # a million ticks of demotion warnings is no table
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = args.dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = run_soak(args.ticks, root, seed=args.seed)
    for name, value in asdict(result).items():
        print(f"{name:<18} {value}")
    print(f"{'verdict':<18} {'PASS' if result.ok else 'FAIL'}")
    print(json.dumps({
        "bench": "soak", "ticks": result.ticks, "agent_steps": result.agent_steps,
        "faults": result.faults, "unsafe_writes": result.unsafe_writes,
        "ledger_rows": result.ledger_rows, "ledger_ok": result.ledger_ok,
        "outbox_delivered": result.outbox_delivered, "outbox_pending": result.outbox_pending,
        "rss_start_mb": result.rss_start_mb, "rss_end_mb": result.rss_end_mb,
        "rss_growth_pct": result.rss_growth_pct,
        "ticks_per_s": round(result.ticks / max(result.wall_s, 1e-9)),
    }))  # fmt: skip
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
