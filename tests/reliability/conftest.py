"""Shared rigs of the reliability suite: a real control core against a real simulated PLC.

``PlcRig`` starts its own ``PlantServerThread`` (so fault injection and the write spy never leak
into other modules' shared plants) and a ``ControlCore`` on OPC UA or Modbus with a tiny signed
constant-action package. The spy wraps ``PlcCore.write`` on the plant's loop: every write the PLC
accepts is recorded with the plant-side wall time, which is what the "no writes from stale data"
rows check against.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.agent_runtime.keys import TrustStore
from app.config import SiteConfig, parse_site
from app.controllers.agent import AgentSettings
from app.controllers.auth import ScryptParams, Session
from app.controllers.core import ControlCore, CoreOptions
from app.controllers.ledger import AuditFilter, LedgerReader
from app.domain import AuditEvent, ConnectionState, Mode
from app.plant.server import PlantConfig, PlantServerThread
from tests.agent_runtime.conftest import (  # noqa: F401 - fixtures
    PackageFactory,
    graphs,
    make_package,
    signing_key,
    trust_store,
)
from tests.agent_runtime.policies import constant_onnx
from tests.controllers.conftest import rig  # noqa: F401 - fixture
from tests.integration import conftest as _quiet_asyncua  # noqa: F401 - silences reconnect logs

P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
SETPOINTS = (P, F)
PASSWORD = "correct-horse-battery"
PLANT_WATCHDOG_S = 3.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` every 50 ms until it is true; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def site_toml(
    protocol: str, plant: PlantServerThread, package: Path, trust: Path, *, period: float
) -> str:
    """A site file for ``plant`` over ``protocol`` with the integration tests' limits."""
    if protocol == "opcua":
        conn = f"""[plant.opcua]
endpoint = "{plant.opcua_endpoint}"
timeout_s = 2.0
reconnect_max_delay_s = 0.5
"""
    else:
        conn = f"""[plant.modbus]
host = "127.0.0.1"
port = {plant.modbus_port}
device_id = {plant.modbus_device_id}
timeout_s = 0.5
reconnect_delay_max_s = 0.5
poll_period_s = 0.2
"""
    return f"""
schema_version = 1
[site]
name = "rel-{protocol}"
process = "ro"
[plant]
protocol = "{protocol}"
stale_after_s = 3.0
heartbeat_period_s = 0.5
watchdog_timeout_s = {PLANT_WATCHDOG_S}
{conn}
[limits.feed_pressure_sp_bar]
engineer_low = 6.0
engineer_high = 16.0
operator_low = 7.0
operator_high = 15.0
max_move = 1.0
[limits.feed_flow_sp_m3h]
engineer_low = 25.0
engineer_high = 65.0
operator_low = 28.0
operator_high = 62.0
max_move = 4.0
[control]
agent_period_s = {period}
supervision_period_s = 0.25
inference_deadline_s = {min(1.0, period / 2)}
recommendation_ttl_s = {period}
[modes]
initial = "advisory"
min_shadow_steps = 1
[agents]
package = "{package}"
trust_store = "{trust}"
"""


@dataclass(frozen=True, slots=True)
class PlcWrite:
    """One write the simulated PLC accepted (plant-side wall time, monotonic)."""

    tag: str
    value: float
    at: float


@dataclass(slots=True)
class WriteSpy:
    """Records every accepted PLC write; installed on the plant's loop."""

    writes: list[PlcWrite] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def setpoint_writes(self, since: float = -math.inf, until: float = math.inf) -> list[PlcWrite]:
        """Accepted writes of the agent's setpoints in ``[since, until)``."""
        with self.lock:
            return [w for w in self.writes if w.tag in SETPOINTS and since <= w.at < until]


def install_spy(plant: PlantServerThread) -> WriteSpy:
    """Wrap the PLC's ``write`` so every accepted write is recorded."""
    spy = WriteSpy()
    core = plant.server.core
    original = core.write

    def write(tag: str, value: float, now: float) -> None:
        original(tag, value, now)
        with spy.lock:
            spy.writes.append(PlcWrite(tag, float(value), time.monotonic()))

    plant.call(setattr, core, "write", write)
    return spy


class PlcRig:
    """A ``ControlCore`` against its own simulated plant, with a PLC write spy."""

    def __init__(
        self,
        protocol: str,
        tmp_path: Path,
        make: PackageFactory,
        trust: TrustStore,
        *,
        period: float = 2.0,
        speed: float = 1.0,
    ) -> None:
        self.protocol = protocol
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.plant = PlantServerThread(
            PlantConfig(
                process="ro",
                opcua=("127.0.0.1", 0) if protocol == "opcua" else None,
                modbus=("127.0.0.1", 0) if protocol == "modbus" else None,
                speed=speed,
                seed=5,
                watchdog_timeout_s=PLANT_WATCHDOG_S,
            ),
            name=f"rel-plant-{protocol}",
        )
        self.plant.start()
        self.spy = install_spy(self.plant)
        base = self.plant.values()
        self.target = (round(base[P] + 0.6, 3), round(base[F] + 2.0, 3))
        pkg = make(policy=constant_onnx(list(self.target)), ensemble=(), version=f"rel-{protocol}")
        self.site: SiteConfig = parse_site(
            site_toml(protocol, self.plant, pkg, tmp_path, period=period)
        )
        self.data = tmp_path / "data"
        self.core = ControlCore(
            self.site,
            CoreOptions(
                data_dir=self.data,
                trust_store=trust,
                trend_capacity=1000,
                scrypt=ScryptParams(n=2**4, r=1, p=1),
                initial_user=("sup", PASSWORD),
                agent=AgentSettings(shadow_kpi_every=0),
            ),
        )
        self.core.start()
        self.session: Session = self.core.login("sup", PASSWORD)

    @property
    def ledger(self) -> Path:
        return self.data / "ledger.sqlite"

    def ready(self) -> bool:
        s = self.core.status()
        return s.plc is ConnectionState.CONNECTED and s.healthy and s.active is not None

    def enter_automatic(self) -> float:
        """Wait for a healthy core and ask for AUTOMATIC until granted; returns the grant time."""
        wait_for("a healthy, connected core with an agent", self.ready)
        end = time.monotonic() + 20
        while True:
            verdict = self.core.request_mode(Mode.AUTOMATIC, self.session, confirm=True).result(10)
            if verdict.accepted:
                return time.monotonic()
            assert time.monotonic() < end, verdict.reason
            time.sleep(0.2)

    def events(self, *kinds: str) -> list[AuditEvent]:
        with LedgerReader(self.ledger) as reader:
            page = reader.query(AuditFilter(kinds=kinds, newest_first=False), limit=100_000)
            return [r.event for r in page.records]

    def close(self) -> None:
        try:
            self.core.stop()
        finally:
            self.plant.stop()


def ledger_write_pairs(events: list[AuditEvent]) -> tuple[set[str], set[str]]:
    """Request ids of ``write_requested`` and of ``write_result`` records."""
    requested = {str(e.data["request_id"]) for e in events if e.kind == "write_requested"}
    results = {str(e.data["request_id"]) for e in events if e.kind == "write_result"}
    return requested, results


@pytest.fixture
def plc_rig_factory(
    tmp_path: Path,
    make_package: PackageFactory,  # noqa: F811
    trust_store: TrustStore,  # noqa: F811
) -> Iterator[Callable[..., PlcRig]]:
    rigs: list[PlcRig] = []

    def make(protocol: str, **kwargs: Any) -> PlcRig:
        made = PlcRig(protocol, tmp_path / protocol, make_package, trust_store, **kwargs)
        rigs.append(made)
        return made

    yield make
    for made in rigs:
        made.close()
