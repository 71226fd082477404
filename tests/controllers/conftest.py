"""A deterministic control core for controller tests: ManualContext, FakeDriver, real PolicyHost.

Package fixtures (``make_package``, ``trust_store``...) come from the agent-runtime tests, so the
controllers run on real signed ONNX packages.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app.agent_runtime.host import PolicyHost
from app.agent_runtime.keys import TrustStore
from app.config import ControlSettings, ModePolicy, TagLimits
from app.controllers import alarm_points as ap
from app.controllers.agent import AgentController, AgentSettings
from app.controllers.agent_rollback import RollbackSettings
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.auth import AuthService, ScryptParams, Session, UserStore
from app.controllers.context import ManualContext
from app.controllers.events import EventBus
from app.controllers.ledger import Ledger
from app.controllers.mode import ModeController
from app.controllers.plant import PlantController, PlantSettings
from app.controllers.safety import SafetyEnvelope
from app.controllers.snapshot import SnapshotService
from app.controllers.trend_buffer import TrendBuffer
from app.domain import AuditEvent, Role, Slot
from app.drivers.fake import FakeDriver
from app.plant.catalog import RO_CATALOG
from tests.agent_runtime.conftest import (  # noqa: F401 - fixtures used by the controller tests
    PackageFactory,
    graphs,
    make_package,
    signing_key,
    trust_store,
)
from tests.agent_runtime.policies import constant_onnx

T = TypeVar("T")
PASSWORD = "correct-horse-battery"
P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
LIMITS = {
    P: TagLimits(engineer_low=6, engineer_high=16, operator_low=7, operator_high=15, max_move=1.0,
                 max_rate_per_s=0.5),
    F: TagLimits(engineer_low=25, engineer_high=65, operator_low=28, operator_high=62,
                 max_move=4.0),
}  # fmt: skip
SANE = {
    "remote_mode": 1.0, "write_inhibit": 0.0, "watchdog_tripped": 0.0, "cip_active": 0.0,
    "supervisory_active": 0.0, "agent_in_control": 0.0,
}  # fmt: skip
CHEAP = ScryptParams(n=2**4, r=1, p=1)


class Rig:
    """Every controller on one ManualContext (fake clock), a FakeDriver and a real PolicyHost."""

    def __init__(
        self,
        tmp_path: Path,
        trust: TrustStore,
        *,
        policy: ModePolicy | None = None,
        control: ControlSettings | None = None,
        settings: AgentSettings | None = None,
    ) -> None:
        self.ctx = ManualContext()
        self.driver = FakeDriver(RO_CATALOG.tags, clock=self.ctx.monotonic)
        self.driver.values.update(SANE)
        self.bus = EventBus()
        self.events: list[Any] = []
        self.ledger_path = tmp_path / "ledger.sqlite"
        self.ledger = Ledger(self.ledger_path)
        self.trail = AuditTrail(self.ledger)
        self.alarms = AlarmManager(
            ap.CORE_ALARMS, sink=ap.journal_sink(self.trail, self.bus.publish)
        )
        self.auth = AuthService(
            UserStore(tmp_path / "users.json"), scrypt=CHEAP,
            sink=lambda e: self.trail.append(e),
        )  # fmt: skip
        self.auth.create_first_supervisor("sup", PASSWORD)
        sup = self.auth.login("sup", PASSWORD)
        for name, role in (("eng", Role.ENGINEER), ("op", Role.OPERATOR), ("view", Role.VIEWER)):
            self.auth.add_user(sup, name, role, PASSWORD)
        self.control = control or ControlSettings(
            agent_period_s=600, inference_deadline_s=30, recommendation_ttl_s=300, safe_hold_s=120
        )
        self.policy = policy or ModePolicy(min_shadow_steps=2)
        self.snapshot = SnapshotService(5.0, clock=self.ctx.monotonic)
        self.safety = SafetyEnvelope(RO_CATALOG, LIMITS, stale_after_s=5.0)
        self.plant = PlantController(
            self.ctx, self.driver, RO_CATALOG, self.snapshot,
            TrendBuffer([t.name for t in RO_CATALOG.tags], 1000), self.safety, self.trail,
            self.bus, self.alarms, LIMITS, PlantSettings(),
        )  # fmt: skip
        self.host = PolicyHost(trust, RO_CATALOG, control=self.control, limits=LIMITS)
        self.mode = ModeController(
            self.ctx, self.plant, self.auth, self.trail, self.bus, self.alarms, self.policy
        )
        self.agent = AgentController(
            self.ctx, self.host, self.plant, self.mode, self.auth, self.trail, self.bus,
            self.alarms, self.control, self.policy, LIMITS,
            settings or AgentSettings(shadow_kpi_every=0),
        )  # fmt: skip
        self.plant.start()
        self.agent.start()
        self.ctx.run_pending()

    def record(self, *kinds: type) -> list[Any]:
        for kind in kinds:
            self.bus.subscribe(kind, self.events.append)
        return self.events

    def login(self, name: str) -> Session:
        return self.auth.login(name, PASSWORD)

    def settle(self) -> None:
        for _ in range(4):
            self.ctx.run_pending()
            self.host.shadow_stats().result(10)
        self.ctx.run_pending()

    def run(self, fut: Future[T]) -> T:
        self.settle()
        return fut.result(0)

    def advance(self, seconds: int) -> None:
        """Move the clock second by second, the PLC refreshing every value each second."""
        for _ in range(seconds):
            self.driver.set_values(dict(self.driver.values))
            self.ctx.advance(1.0)
            self.settle()

    def step(self) -> None:
        self.agent.step()
        self.agent.delivered.result(10)
        self.settle()

    def load(self, path: Path, slot: Slot = Slot.ACTIVE) -> None:
        fut = self.host.load(path, slot)
        fut.result(10)
        self.agent.record_load(path, self.auth.require(self.login("sup"), _promote()), slot, fut,
                               None)  # fmt: skip
        self.settle()

    def ledger_events(self, kind: str) -> list[AuditEvent]:
        from app.controllers.ledger import AuditFilter

        page = self.ledger.query(AuditFilter(kinds=(kind,), newest_first=False), limit=1000)
        return [r.event for r in page.records]

    def close(self) -> None:
        self.host.close()
        self.ledger.close()


def _promote() -> Any:
    from app.controllers.auth import Action

    return Action.PROMOTE


@pytest.fixture
def rig(tmp_path: Path, trust_store: TrustStore) -> Iterator[Rig]:  # noqa: F811
    r = Rig(tmp_path, trust_store)
    yield r
    r.close()


def constant_package(
    make: PackageFactory, pressure: float, flow: float, version: str, spread: float = 0.0
) -> Path:
    """A signed package always proposing (pressure, flow); an ensemble member off by ``spread``."""
    ensemble = (constant_onnx([pressure + spread, flow]),) if spread else ()
    return make(policy=constant_onnx([pressure, flow]), ensemble=ensemble, version=version)


__all__ = ["LIMITS", "PASSWORD", "Rig", "RollbackSettings", "constant_package"]
