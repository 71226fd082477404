"""The real console window against the simulated plant over OPC UA on loopback.

One simulated plant per module (its OPC UA server takes seconds to build); one control core and one
main window per test, with a fresh data folder (ledger, users) and QSettings file. The agents are
real signed ONNX packages whose policies propose constant setpoints, so every recommendation and
every write can be predicted exactly.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from app.agent_runtime.keys import TrustStore, public_key_of
from app.agent_runtime.package import write_package
from app.agent_runtime.shadow import GateThresholds
from app.config import SiteConfig, TagLimits, default_site_path, load_site
from app.controllers.agent import AgentSettings
from app.controllers.auth import ScryptParams, User, UserStore, hash_password
from app.controllers.core import USERS_FILE, ControlCore, CoreOptions
from app.domain import Mode, Role
from app.plant.server import PlantConfig, PlantServerThread
from app.ui.core_link import CoreLink
from app.ui.main_window import MainWindow
from app.ui.pyside_guard import guard_none_refcount
from tests.agent_runtime.conftest import manifest_fields
from tests.agent_runtime.policies import constant_onnx

T = TypeVar("T")
CHEAP = ScryptParams(n=2**4, r=1, p=1)
PASSWORD = "correct-horse-battery"
USERS = {"olga": Role.OPERATOR, "emil": Role.ENGINEER, "sara": Role.SUPERVISOR, "vic": Role.VIEWER}
P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
WAIT_MS = 30_000

guard_none_refcount()  # as run_console does; see app/ui/pyside_guard.py


@dataclass(frozen=True)
class Packages:
    a: Path
    b: Path
    proposal: tuple[float, float]
    """What both agents always propose (feed pressure bar, feed flow m3/h)."""
    trust: TrustStore


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _away(value: float, step: float, low: float, high: float) -> float:
    """``value`` moved by ``step`` (up if that stays within limits, else down), rounded."""
    target = value + step if value + step <= high else value - step
    return round(target, 1)


@pytest.fixture
def packages(tmp_path: Path, plant: PlantServerThread, signing_key: Ed25519PrivateKey) -> Packages:
    """Agents proposing a clear move from where the plant is now (so no change is in the
    dead band, whatever earlier tests left in the PLC)."""
    now = plant.values()
    proposal = (_away(now[P], 0.8, 7.5, 14.5), _away(now[F], 3.0, 30.0, 60.0))
    made = []
    for version in ("ro-ui-a", "ro-ui-b"):
        out = tmp_path / version
        write_package(
            out,
            manifest_fields(version=version, parent_version=None),
            constant_onnx(list(proposal)),
            signing_key,
        )
        made.append(out)
    return Packages(made[0], made[1], proposal, TrustStore([public_key_of(signing_key, "ui")]))


@pytest.fixture(scope="module")
def plant() -> Iterator[PlantServerThread]:
    thread = PlantServerThread(PlantConfig(process="ro", modbus=None, speed=10.0), name="ui-plant")
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def ui_site(plant: PlantServerThread, package: Path) -> SiteConfig:
    """The demo site pointed at ``plant``, with a short agent period and fast staleness."""
    site = load_site(default_site_path())
    assert site.plant.opcua is not None
    opcua = site.plant.opcua.model_copy(update={"endpoint": plant.opcua_endpoint})
    plant_conn = site.plant.model_copy(update={"opcua": opcua, "stale_after_s": 2.0})
    control = site.control.model_copy(
        update={"agent_period_s": 20.0, "recommendation_ttl_s": 20.0, "inference_deadline_s": 5.0}
    )
    modes = site.modes.model_copy(update={"max_ood_score": 1e6, "min_shadow_steps": 1})
    limits = {
        tag: TagLimits(**{**lim.model_dump(), "min_dwell_s": 0.0, "max_rate_per_s": 2.0})
        for tag, lim in site.limits.items()
    }
    agents = site.agents.model_copy(update={"package": package})
    return site.model_copy(
        update={
            "plant": plant_conn,
            "control": control,
            "modes": modes,
            "limits": limits,
            "agents": agents,
        }
    )


@dataclass
class Console:
    core: ControlCore
    link: CoreLink
    window: MainWindow
    plant: PlantServerThread
    qtbot: QtBot
    proposal: tuple[float, float]

    def wait(self, predicate: Callable[[], bool], timeout_ms: int = WAIT_MS) -> None:
        self.qtbot.waitUntil(predicate, timeout=timeout_ms)

    def result(self, future: Any, timeout_ms: int = WAIT_MS) -> Any:
        """Wait for a future while the Qt loop keeps running (test code only)."""
        self.wait(future.done, timeout_ms)
        return future.result()

    def login(self, user: str, password: str = PASSWORD) -> None:
        self.window.open_login()
        dialog = self.window.login_dialog
        assert dialog is not None
        dialog.user.setText(user)
        dialog.password.setText(password)
        dialog.submit()
        self.wait(lambda: self.window.session is not None and self.window.session.user == user)

    def step(self) -> None:
        """Run one agent step now (instead of waiting for the period)."""
        agent = self.core.agent
        assert agent is not None
        self.result(self.link.in_context(agent.step))

    def plc(self, tag: str) -> float:
        return self.plant.values()[tag]


@pytest.fixture
def c(
    qtbot: QtBot, tmp_path: Path, plant: PlantServerThread, packages: Packages
) -> Iterator[Console]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    UserStore(data_dir / USERS_FILE).save(
        {n: User(n, role, hash_password(PASSWORD, CHEAP)) for n, role in USERS.items()}
    )
    options = CoreOptions(
        data_dir=data_dir,
        trust_store=packages.trust,
        scrypt=CHEAP,
        trend_capacity=3600,
        agent=AgentSettings(gates=GateThresholds(kpi_tolerance_eur_h=1e9, min_kpi_samples=0)),
    )
    core = ControlCore(ui_site(plant, packages.a), options)
    link = CoreLink(core)
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    window = MainWindow(link, settings=settings)
    qtbot.addWidget(window)
    core.start()
    window.core_started()
    window.resize(1366, 768)
    window.show()
    c = Console(core, link, window, plant, qtbot, packages.proposal)
    try:
        c.wait(lambda: core.status().mode is Mode.ADVISORY and core.host is not None
               and core.host.versions.active is not None)  # fmt: skip
        c.wait(lambda: window.banner.mode is Mode.ADVISORY)
        yield c
    finally:
        window.shutdown()
        window.close()
        link.close()
        core.stop()
        # Delete the Qt objects now, while Python is fully alive (not in interpreter teardown).
        window.deleteLater()
        qtbot.wait(1)
        gc.collect()
        # The next test starts from the PLC's base control with supervision released.
        deadline = time.monotonic() + 10
        while plant.values()["supervisory_active"] and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(autouse=True)
def _no_ui_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A UI handler that raises is logged by the bridge; here that fails the test."""
    yield
    errors = [r for r in caplog.records if r.name.startswith("app.ui") and r.levelname == "ERROR"]
    assert not errors, "\n".join(r.getMessage() + "\n" + (r.exc_text or "") for r in errors)
