"""The whole control core against the simulated PLC over OPC UA, and `intelwatt headless`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from app.agent_runtime.keys import TrustStore
from app.config import parse_site
from app.controllers.agent import AgentSettings
from app.controllers.auth import ScryptParams
from app.controllers.core import ControlCore, CoreOptions
from app.controllers.ledger import AuditFilter, LedgerReader, verify
from app.domain import Mode, RecommendationState
from app.plant.server import PlantConfig, PlantServerThread, free_port
from tests.agent_runtime.conftest import (  # noqa: F401 - fixtures
    PackageFactory,
    graphs,
    make_package,
    signing_key,
    trust_store,
)
from tests.agent_runtime.policies import constant_onnx
from tests.integration.conftest import SHIPPED_VERSION

P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
PASSWORD = "correct-horse-battery"
SHIPPED_AGENT = Path(__file__).resolve().parents[2] / "resources" / "agents" / "ro"
SHIPPED_TRUST = SHIPPED_AGENT.parents[1] / "trust"


def site_text(
    endpoint: str,
    package: Path,
    trust: Path,
    *,
    period: float,
    extra: str = "",
    pressure: tuple[float, float, float, float] = (7.0, 15.0, 6.0, 16.0),
    pressure_ramp: bool = True,
) -> str:
    """A site file; ``pressure`` is (operator low, operator high, engineer low, engineer high)."""
    ramp = "max_rate_per_s = 0.5" if pressure_ramp else ""
    return f"""
schema_version = 1
[site]
name = "it-ro"
process = "ro"
[plant]
protocol = "opcua"
stale_after_s = 5.0
heartbeat_period_s = 1.0
watchdog_timeout_s = 10.0
[plant.opcua]
endpoint = "{endpoint}"
[limits.feed_pressure_sp_bar]
engineer_low = {pressure[2]}
engineer_high = {pressure[3]}
operator_low = {pressure[0]}
operator_high = {pressure[1]}
max_move = 1.0
{ramp}
[limits.feed_flow_sp_m3h]
engineer_low = 25.0
engineer_high = 65.0
operator_low = 28.0
operator_high = 62.0
max_move = 4.0
[control]
agent_period_s = {period}
supervision_period_s = 0.5
inference_deadline_s = {min(1.0, period / 2)}
recommendation_ttl_s = {period}
[modes]
initial = "advisory"
[agents]
package = "{package}"
trust_store = "{trust}"
{extra}
"""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_core_advisory_approve_reaches_the_plc_and_watchdog_returns_to_base_control(
    plant_server: PlantServerThread,
    make_package: PackageFactory,  # noqa: F811
    trust_store: TrustStore,  # noqa: F811
    tmp_path: Path,
) -> None:
    start = plant_server.values()
    target = {P: round(start[P] + 0.4, 3), F: round(start[F] + 1.5, 3)}
    pkg = make_package(policy=constant_onnx([target[P], target[F]]), ensemble=(), version="ro-it")
    site = parse_site(site_text(plant_server.opcua_endpoint, pkg, tmp_path, period=600.0))
    core = ControlCore(
        site,
        CoreOptions(
            data_dir=tmp_path / "data",
            trust_store=trust_store,
            trend_capacity=1000,
            scrypt=ScryptParams(n=2**4, r=1, p=1),
            initial_user=("sup", PASSWORD),
            agent=AgentSettings(shadow_kpi_every=0),
        ),
    )
    core.start()
    try:
        wait_for("advisory with a healthy core and an agent", lambda: (
            (s := core.status()).mode is Mode.ADVISORY and s.healthy and s.active is not None
        ))  # fmt: skip
        wait_for("supervisory control", lambda: plant_server.values()["supervisory_active"] == 1)
        session = core.login("sup", PASSWORD)
        assert core.agent is not None
        core._call(core.agent.step)
        wait_for("a recommendation", lambda: core.status().last_recommendation is not None)
        rec = core.status().last_recommendation
        assert rec is not None and rec.state is RecommendationState.PROPOSED
        verdict = core.agent.approve(rec.rec_id, session).result(15)
        assert verdict.accepted and verdict.state is RecommendationState.CONFIRMED, verdict
        values = plant_server.values()
        assert values[P] == pytest.approx(target[P], abs=1e-4)
        assert values[F] == pytest.approx(target[F], abs=1e-4)
        # Kill the core's health: the heartbeat stops and the PLC's watchdog (3 s) takes over.
        assert core.plant is not None
        core.plant.add_health_check(lambda: "test: core declared dead")
        wait_for("the PLC watchdog", lambda: plant_server.values()["watchdog_tripped"] == 1)
        assert plant_server.values()["supervisory_active"] == 0
        assert plant_server.values()["agent_in_control"] == 0
    finally:
        core.stop()
    report = verify(tmp_path / "data" / "ledger.sqlite")
    assert report.ok, report.summary()
    with LedgerReader(tmp_path / "data" / "ledger.sqlite") as reader:
        kinds = {r.event.kind for r in reader.query(limit=1000).records}
    assert {"model_load", "mode_change", "agent_step", "decision", "write_requested",
            "write_result", "core_stop"} <= kinds  # fmt: skip


@pytest.mark.slow
def test_headless_automatic_keeps_the_plant_within_limits_for_a_simulated_week(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shipped RO agent in AUTOMATIC for a simulated week (about 40 s of wall time)."""
    week_s = 7 * 24 * 3600.0
    wall_s = 40.0
    config = PlantConfig(
        process="ro", opcua=("127.0.0.1", 0), modbus=None, speed=week_s / wall_s, scan_s=300.0,
        seed=3, watchdog_timeout_s=10.0,
    )  # fmt: skip
    # As the demo site: the shipped agent runs up to about 17.5 bar in cold feed.
    operator = {P: (7.0, 19.0), F: (28.0, 62.0)}
    with PlantServerThread(config) as plant:
        site = tmp_path / "site.toml"
        site.write_text(
            # No console ramp: every agent write is one PLC step whose readback the ledger holds.
            site_text(plant.opcua_endpoint, SHIPPED_AGENT, SHIPPED_TRUST, period=2.0,
                      pressure=(*operator[P], 6.0, 20.0), pressure_ramp=False)
        )  # fmt: skip
        port = free_port("127.0.0.1")
        env = {**os.environ, "INTELWATT_USER": "sup", "INTELWATT_PASSWORD": PASSWORD,
               "INTELWATT_LOG_DIR": str(tmp_path / "logs")}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.controllers.headless", "--site", str(site),
             "--decision-policy", "automatic", "--confirm-automatic", "--status-port", str(port),
             "--status-period", "5", "--data-dir", str(tmp_path / "data")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            t0 = plant.server.core.t_s
            seen: dict[str, list[float]] = {P: [], F: []}
            statuses = []
            while plant.server.core.t_s - t0 < week_s:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                values = plant.values()
                seen[P].append(values[P])
                seen[F].append(values[F])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                        statuses.append(json.loads(r.read()))
                except OSError:
                    pass
                time.sleep(0.5)
            values = plant.values()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    modes = [s["mode"] for s in statuses]
    assert "automatic" in modes, (modes[-5:], out[-3000:])
    entered = modes.index("automatic")
    assert set(modes[entered:]) == {"automatic"}, (modes, out[-3000:])  # never demoted
    assert statuses[-1]["active"]["version"] == SHIPPED_VERSION
    for tag, (low, high) in operator.items():
        # The first samples are the plant's own start-up setpoints, before the agent wrote.
        assert low <= min(seen[tag][entered:]) and max(seen[tag][entered:]) <= high, tag
    assert not [r for r in caplog.records if "plant trip" in r.getMessage()]
    assert statuses[-1]["kpis"]["auto_writes"] >= 5
    ledger = tmp_path / "data" / "ledger.sqlite"
    audit = subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", "verify", str(ledger)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    with LedgerReader(ledger) as reader:
        events = [
            r.event for r in reader.query(AuditFilter(newest_first=False), limit=100_000).records
        ]
    kinds = [e.kind for e in events]
    assert "mode_change" in kinds and kinds[-1] == "core_stop"
    agent_writes = [
        e for e in events if e.kind == "write_requested" and e.origin.name == SHIPPED_VERSION
    ]
    assert agent_writes
    for event in agent_writes:  # every write the agent asked for was inside the operator limits
        for tag, change in event.data["setpoints"].items():
            low, high = operator[tag]
            assert low <= change["new"] <= high, (tag, change)
    held: dict[str, list[float]] = {P: [], F: []}  # what the agent's writes read back, in order
    for event in events:
        if event.kind == "write_result" and event.origin.name == SHIPPED_VERSION:
            for tag, value in event.data["readback"].items():
                if tag in held and value is not None:
                    held[tag].append(value)
    for tag in (P, F):
        # The PLC held the agent's setpoints until the hand-back (its last one, or the one before
        # if a step landed between the last reading and SIGTERM).
        assert any(values[tag] == pytest.approx(v, abs=1e-3) for v in held[tag][-2:]), (
            tag, values[tag], held[tag][-2:],
        )  # fmt: skip
