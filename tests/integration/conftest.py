"""Real simulated-PLC servers on loopback for integration tests.

``plant_server``: the RO plant over OPC UA (no security, anonymous) and Modbus TCP, both on free
loopback ports, speed 1, seed 0, watchdog 3 s. ``secure_plant_server``: the same plant over OPC UA
only, Basic256Sha256 Sign and SignAndEncrypt endpoints, user ``operator`` / ``s3cret-pass``,
anonymous disabled, a trusted client certificate and an untrusted one.

Both are module-scoped (server start-up takes ≈ 1.3 s). After every test that used one, its faults
are cleared, the PLC is put back in remote mode with writes allowed, control is handed back and
stopped servers are started again, so tests do not leak state into each other.

``fast_plant`` (OPC UA only, 20x) and ``core_rig`` serve the control-core tests
(``test_core_opcua_*``): a started ``ControlCore`` with the shipped RO agent, a site with short
control periods, and supervisor / engineer / operator / viewer sessions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from app.plant.opcua_security import (
    CONSOLE_APPLICATION_URI,
    ensure_certificate,
    hash_password,
)
from app.plant.opcua_server import OpcUaSecurity
from app.plant.server import PlantConfig, PlantServerThread

SECURE_USER = "operator"
SECURE_PASSWORD = "s3cret-pass"
WATCHDOG_TIMEOUT_S = 3.0

# asyncua logs a traceback every second while a server is away ("Publish iteration crashed").
for _name in (
    "asyncua.client.ua_session",
    "asyncua.client.ua_client.UASocketProtocol",
    "asyncua.client.ua_client",
    "asyncua.client.client",
):
    logging.getLogger(_name).setLevel(logging.CRITICAL)
logging.getLogger("asyncua").setLevel(logging.WARNING)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class SecurePlant(PlantServerThread):
    """A ``PlantServerThread`` with the certificate paths and credentials of its clients.

    Attributes:
        server_cert: The server's certificate (DER), to pin in clients.
        client_cert: A client certificate (DER) in the server's trust list.
        client_key: Its private key (PEM).
        untrusted_cert: A client certificate the server does not trust.
        untrusted_key: Its private key.
        username: A valid user name.
        password: Its password.
        application_uri: The URI in both client certificates (set it as the client's
            ``application_uri``).
        pki_dir: The server's pki folder (``trusted/`` holds trusted client certificates).
    """

    def __init__(self, config: PlantConfig, pki: Path, clients: Path) -> None:
        super().__init__(config, name="secure-plant-server")
        self.pki_dir = pki
        self.server_cert = pki / "server-cert.der"
        self.client_cert = clients / "client-cert.der"
        self.client_key = clients / "client-key.pem"
        self.untrusted_cert = clients / "untrusted-cert.der"
        self.untrusted_key = clients / "untrusted-key.pem"
        self.username = SECURE_USER
        self.password = SECURE_PASSWORD
        self.application_uri = CONSOLE_APPLICATION_URI


START_SETPOINTS = {"feed_pressure_sp_bar": 12.0, "feed_flow_sp_m3h": 40.0}
"""The RO plant's set-points at reset (brackish reference case)."""


def _tidy(plant: PlantServerThread) -> None:
    """Undo what a test may have left behind on a shared plant."""
    if not plant.loop.running:
        return
    plant.faults.clear()
    plant.faults.start_servers()
    plant.faults.set_remote(True)
    plant.faults.set_write_inhibit(False)
    plant.call(plant.server.core.write, "agent_in_control", 0.0, 0.0)
    # The set-points a test wrote would be the next test's starting point (the plant's own start).
    for tag, value in START_SETPOINTS.items():
        plant.call(plant.server.core.write, tag, value, 0.0)


@pytest.fixture(scope="module")
def plant_server() -> Iterator[PlantServerThread]:
    """The RO plant over OPC UA (no security) and Modbus on free loopback ports."""
    config = PlantConfig(
        process="ro",
        opcua=("127.0.0.1", 0),
        modbus=("127.0.0.1", 0),
        speed=1.0,
        seed=0,
        watchdog_timeout_s=WATCHDOG_TIMEOUT_S,
    )
    with PlantServerThread(config) as plant:
        yield plant


@pytest.fixture(scope="module")
def secure_plant_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurePlant]:
    """The RO plant over OPC UA with Basic256Sha256 Sign/SignAndEncrypt and password users."""
    pki = tmp_path_factory.mktemp("plant-pki")
    clients = tmp_path_factory.mktemp("client-pki")
    ensure_certificate(
        clients / "client-cert.der",
        clients / "client-key.pem",
        CONSOLE_APPLICATION_URI,
        server=False,
    )
    ensure_certificate(
        clients / "untrusted-cert.der",
        clients / "untrusted-key.pem",
        CONSOLE_APPLICATION_URI,
        server=False,
    )
    trusted = pki / "trusted"
    trusted.mkdir()
    (trusted / "client-cert.der").write_bytes((clients / "client-cert.der").read_bytes())
    config = PlantConfig(
        process="ro",
        opcua=("127.0.0.1", 0),
        modbus=None,
        speed=1.0,
        seed=0,
        watchdog_timeout_s=WATCHDOG_TIMEOUT_S,
        security=OpcUaSecurity(
            modes=("sign", "sign_encrypt"),
            pki_dir=pki,
            users={SECURE_USER: hash_password(SECURE_PASSWORD)},
            allow_anonymous=False,
        ),
    )
    with SecurePlant(config, pki, clients) as plant:
        yield plant


@pytest.fixture(autouse=True)
def _tidy_shared_plants(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("plant_server", "secure_plant_server"):
        if name in request.fixturenames:
            _tidy(request.getfixturevalue(name))


# --- the control core with the shipped RO agent against a fast shared plant ------------------------

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_AGENT = ROOT / "resources" / "agents" / "ro"
SHIPPED_TRUST = ROOT / "resources" / "trust"
SHIPPED_VERSION: str = json.loads((SHIPPED_AGENT / "manifest.json").read_text())["version"]
"""Version of the shipped RO agent (the tests follow ``make agents``)."""
CORE_PASSWORD = "correct-horse-battery"
FAST_PLANT_SPEED = 20.0
PRESSURE_LIMITS = (7.0, 19.0, 6.0, 20.0)
"""Operator low/high and engineer low/high of the feed pressure setpoint in the core tests (bar).

As the demo site: the shipped agent runs between 9 and 17.5 bar on the simulated plant (the colder the
feed, the higher), so AUTOMATIC is not demoted by safety rejections.
"""


@pytest.fixture(scope="module")
def fast_plant() -> Iterator[PlantServerThread]:
    """The RO plant over OPC UA only, 20 plant seconds per wall second (one per module)."""
    config = PlantConfig(
        process="ro",
        opcua=("127.0.0.1", 0),
        modbus=None,
        speed=FAST_PLANT_SPEED,
        seed=1,
        watchdog_timeout_s=WATCHDOG_TIMEOUT_S,
    )
    with PlantServerThread(config, name="fast-plant-server") as plant:
        yield plant


@pytest.fixture(autouse=True)
def _tidy_fast_plant(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fast_plant" in request.fixturenames:
        _tidy(request.getfixturevalue("fast_plant"))


def core_site_text(
    endpoint: str,
    *,
    package: Path = SHIPPED_AGENT,
    pressure: tuple[float, float, float, float] = PRESSURE_LIMITS,
    ttl_s: float = 600.0,
    deadline_s: float = 1.0,
    modes: str = "",
    rollback: str = "",
    gates: str = "max_violations = 1000\nmin_kpi_samples = 0\n",
) -> str:
    """A site file for the core tests: the shipped agent, short control periods, the test limits.

    The agent cadence is 600 s so that tests drive each agent step themselves.
    """
    return f"""
schema_version = 1
[site]
name = "it-core"
process = "ro"
[plant]
protocol = "opcua"
stale_after_s = 3.0
heartbeat_period_s = 0.5
watchdog_timeout_s = {WATCHDOG_TIMEOUT_S}
[plant.opcua]
endpoint = "{endpoint}"
timeout_s = 2.0
reconnect_max_delay_s = 0.5
[limits.feed_pressure_sp_bar]
engineer_low = {pressure[2]}
engineer_high = {pressure[3]}
operator_low = {pressure[0]}
operator_high = {pressure[1]}
max_move = 1.5
[limits.feed_flow_sp_m3h]
engineer_low = 25.0
engineer_high = 65.0
operator_low = 28.0
operator_high = 62.0
max_move = 5.0
[control]
agent_period_s = 600.0
supervision_period_s = 0.25
inference_deadline_s = {deadline_s}
recommendation_ttl_s = {ttl_s}
[modes]
initial = "advisory"
min_shadow_steps = 2
{modes}
[agents]
package = "{package}"
trust_store = "{SHIPPED_TRUST}"
[agents.rollback]
{rollback}
[agents.gates]
{gates}
"""


class CoreRig:
    """A started ``ControlCore`` on ``fast_plant`` with supervisor, engineer, operator and viewer.

    Attributes:
        core: The core (agent cadence 600 s: call :meth:`step`).
        plant: The shared plant.
        sessions: ``sup``, ``eng``, ``op`` and ``view`` sessions.
    """

    def __init__(
        self,
        plant: PlantServerThread,
        data_dir: Path,
        site_text: str,
        *,
        extra_keys: tuple[Any, ...] = (),
        agent: Any = None,
    ) -> None:
        from app.agent_runtime.keys import TrustStore
        from app.config import parse_site
        from app.controllers.agent import AgentSettings
        from app.controllers.agent_site import agent_settings_from_site
        from app.controllers.auth import ScryptParams
        from app.controllers.core import ControlCore, CoreOptions
        from app.domain import Role
        from app.plant.catalog import RO_CATALOG

        self.plant = plant
        self.site = parse_site(site_text)
        self.inputs = {t.name for t in (*RO_CATALOG.observations, *RO_CATALOG.setpoints)}
        keys = [*TrustStore.load(SHIPPED_TRUST), *extra_keys]
        self.core = ControlCore(
            self.site,
            CoreOptions(
                data_dir=data_dir,
                trust_store=TrustStore(keys),
                trend_capacity=1000,
                scrypt=ScryptParams(n=2**4, r=1, p=1),
                initial_user=("sup", CORE_PASSWORD),
                # The site's rollback triggers and gates; no twin KPI per step (speed).
                agent=agent
                if agent is not None
                else agent_settings_from_site(self.site.agents, AgentSettings(shadow_kpi_every=0)),
            ),
        )
        self.core.start()
        self.sessions = {"sup": self.core.login("sup", CORE_PASSWORD)}
        for name, role in (("eng", Role.ENGINEER), ("op", Role.OPERATOR), ("view", Role.VIEWER)):
            self.core._call(partial(self.core.auth.add_user, self.sessions["sup"], name, role,
                                    CORE_PASSWORD))  # fmt: skip
            self.sessions[name] = self.core.login(name, CORE_PASSWORD)
        core_wait_for("an advisory core, connected and healthy, with the shipped agent", self.ready)

    @property
    def agent(self) -> Any:
        assert self.core.agent is not None
        return self.core.agent

    def ready(self) -> bool:
        from app.domain import ConnectionState, Mode

        s = self.core.status()
        return (
            s.plc is ConnectionState.CONNECTED
            and s.healthy
            and s.active is not None
            and s.mode is not Mode.OFF
            and self.plant.values()["supervisory_active"] == 1
            and not self.core._call(lambda: self.agent_inputs_unusable())
        )

    def agent_inputs_unusable(self) -> dict[str, str]:
        """The agent's inputs the core may not act on, with why (call in the control context)."""
        assert self.core.plant is not None
        return {t: why for t, why in self.core.plant.unusable_inputs.items() if t in self.inputs}

    def step(self) -> None:
        """Run one agent step and wait until its result was handled in the control context."""
        self.core._call(self.agent.step)
        self.agent.delivered.result(10)
        self.core._call(lambda: None)  # the result was posted before this: it has run now

    def automatic(self, session: str = "eng") -> None:
        """Enter AUTOMATIC with an explicit confirmation (retried while the core settles)."""
        from app.domain import Mode

        end = time.monotonic() + 15
        while True:
            verdict = self.core.request_mode(
                Mode.AUTOMATIC, self.sessions[session], confirm=True
            ).result(10)
            if verdict.accepted:
                return
            assert time.monotonic() < end, verdict.reason
            time.sleep(0.1)

    def events(self, *kinds: str) -> list[Any]:
        """Ledger events of ``kinds``, oldest first."""
        from app.controllers.ledger import AuditFilter

        page = self.core._call(
            lambda: self.core.ledger.query(
                AuditFilter(kinds=kinds, newest_first=False), limit=100_000
            )
        )
        return [r.event for r in page.records]

    def setpoints(self) -> tuple[float, float]:
        """(feed pressure, feed flow) setpoints as the PLC holds them."""
        values = self.plant.values()
        return values["feed_pressure_sp_bar"], values["feed_flow_sp_m3h"]

    def close(self) -> None:
        self.core.stop()


def core_wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` every 20 ms until true; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def core_rig(fast_plant: PlantServerThread, tmp_path: Path) -> Iterator[Callable[..., CoreRig]]:
    """Build ``CoreRig``s on the module's fast plant; ``site_text`` keywords go to the site."""
    rigs: list[CoreRig] = []

    def make(*, extra_keys: tuple[Any, ...] = (), agent: Any = None, **site: Any) -> CoreRig:
        text = core_site_text(fast_plant.opcua_endpoint, **site)
        rig = CoreRig(
            fast_plant, tmp_path / f"data{len(rigs)}", text, extra_keys=extra_keys, agent=agent
        )
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
