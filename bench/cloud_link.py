"""Cloud link: what the cloud hooks add to one agent step in the control context.

Run: ``.venv/bin/python -m bench.cloud_link`` (no peers needed: the storage is down on purpose, so
the drainer keeps failing and backing off on the cloud thread while the steps are measured).

Per agent step the control context writes the ``agent_step`` ledger record and publishes a
``StepTransition``. With the cloud on, the trail's sink also puts the audit event into the outbox and
the link puts the transition there (two SQLite inserts, no network). Peer: the same step record on a
core without the cloud (ledger append only).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from app.concurrency import LoopThread
from app.config import parse_site
from app.controllers import alarm_points as ap
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.cloud_link import CloudLink, CloudLinkSettings
from app.controllers.context import LoopContext
from app.controllers.events import EventBus
from app.controllers.ledger import Ledger
from app.controllers.messages import StepTransition
from app.domain import AgentVersion, Origin
from app.plant.catalog import RO_CATALOG

N_STEPS = 3000
ENV = "IW_BENCH_STORAGE"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AGENT = AgentVersion(process="ro", version="ro-2026.11.1", sha256="0" * 64, signer="intelwatt-dev")
SITE = f"""
schema_version = 1
[site]
name = "bench"
process = "ro"
[plant]
protocol = "opcua"
[plant.opcua]
endpoint = "opc.tcp://127.0.0.1:9/unused"
[cloud]
enabled = true
connection_string = "env:{ENV}"
"""


def step_data(i: int) -> dict[str, Any]:
    obs = {t.name: {"value": 10.0 + 0.001 * i, "quality": "good"} for t in RO_CATALOG.observations}
    slot = {"version": AGENT.version, "sha256": AGENT.sha256, "uncertainty": 0.02, "ood": 0.4}
    return {
        "outcome": "recommended",
        "detail": "",
        "mode": "advisory",
        "fallback": "active_local",
        "observation": obs,
        "actions": {
            "active": {**slot, "action": {"feed_pressure_sp_bar": 14.2, "feed_flow_sp_m3h": 41.0}},
            "candidate": {**slot, "action": {"feed_pressure_sp_bar": 14.5, "feed_flow_sp_m3h": 40}},
        },
        "proposal": {"feed_pressure_sp_bar": 14.2, "feed_flow_sp_m3h": 41.0},
        "rec_id": f"r{i}-{AGENT.version}",
    }


def transition(i: int) -> StepTransition:
    obs = {t.name: 10.0 + 0.001 * i for t in RO_CATALOG.observations}
    return StepTransition(
        "recommended",
        obs,
        {t: "good" for t in obs},
        {
            "active": {"feed_pressure_sp_bar": 14.2, "feed_flow_sp_m3h": 41.0},
            "candidate": {"feed_pressure_sp_bar": 14.5, "feed_flow_sp_m3h": 40.2},
        },
        {"feed_pressure_sp_bar": 14.0, "feed_flow_sp_m3h": 40.5},
        {"sec_kwh_m3": 0.61},
        AGENT,
    )


def run_steps(
    trail: AuditTrail, bus: EventBus, ctx_loop: LoopThread
) -> tuple[list[float], list[float]]:
    """Per step, inside the control loop thread: (whole step record + publish, cloud hooks only).

    The hooks are the trail's sink (audit event into the outbox) and the ``StepTransition``
    subscribers (transition into the outbox); both are timed where they run.
    """
    origin = Origin.agent(AGENT.version)
    inner = trail.sink
    sink_s = [0.0]

    def timed_sink(event: Any) -> None:
        t0 = time.perf_counter()
        if inner is not None:
            inner(event)
        sink_s[0] = time.perf_counter() - t0

    trail.sink = timed_sink

    def measure() -> tuple[list[float], list[float]]:
        whole, hooks = [], []
        for i in range(N_STEPS):
            data, t = step_data(i), transition(i)
            t0 = time.perf_counter()
            trail.record("agent_step", origin, "agent step: recommended", data)
            t1 = time.perf_counter()
            bus.publish(t)
            t2 = time.perf_counter()
            whole.append(t2 - t0)
            hooks.append(sink_s[0] + t2 - t1)
        return whole, hooks

    async def in_loop() -> tuple[list[float], list[float]]:
        return measure()

    return ctx_loop.run(in_loop(), timeout=600)


def dead_storage() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(0.99 * (len(ordered) - 1))] * 1e6


def main() -> None:
    os.environ[ENV] = dead_storage()
    site = parse_site(SITE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        control = LoopThread("plc-io")
        control.start()
        try:
            plain, _ = run_steps(AuditTrail(Ledger(root / "plain.sqlite")), EventBus(), control)
            bus = EventBus()
            trail = AuditTrail(Ledger(root / "cloud.sqlite"))
            link = CloudLink(
                site,
                data_dir=root,
                catalog=RO_CATALOG,
                trust=cast(Any, None),
                bus=bus,
                settings=CloudLinkSettings(console="bench", backoff_cap_s=1.0),
            )
            alarms = AlarmManager(ap.CORE_ALARMS)
            link.start(LoopContext(control.loop), cast(Any, None), alarms, trail)
            try:
                cloud, hooks = run_steps(trail, bus, control)
                queued = link.outbox.pending_records
            finally:
                link.stop()
        finally:
            control.stop()
    p50_plain, p99_plain = pct(plain)
    p50_cloud, p99_cloud = pct(cloud)
    p50_hooks, p99_hooks = pct(hooks)
    print(f"{N_STEPS} agent steps, storage down (drainer backing off on the cloud thread)")
    print(f"{'per agent step (control context)':<40}{'p50 µs':>10}{'p99 µs':>10}")
    print(f"{'ledger record, cloud off (peer)':<40}{p50_plain:>10.1f}{p99_plain:>10.1f}")
    print(f"{'ledger record + hooks, cloud on':<40}{p50_cloud:>10.1f}{p99_cloud:>10.1f}")
    print(f"{'  of which the cloud hooks (2 inserts)':<40}{p50_hooks:>10.1f}{p99_hooks:>10.1f}")
    print(f"records queued in the outbox: {queued} (2 per step)")
    print(
        json.dumps(
            {
                "bench": "cloud_link",
                "step_record_p50_us": round(p50_plain, 1),
                "step_record_with_cloud_p50_us": round(p50_cloud, 1),
                "cloud_hooks_p50_us": round(p50_hooks, 1),
                "cloud_hooks_p99_us": round(p99_hooks, 1),
                "hooks_vs_ledger_record_x": round(p50_hooks / p50_plain, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
