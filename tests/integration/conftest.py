"""Real simulated-PLC servers on loopback for integration tests.

``plant_server``: the RO plant over OPC UA (no security, anonymous) and Modbus TCP, both on free
loopback ports, speed 1, seed 0, watchdog 3 s. ``secure_plant_server``: the same plant over OPC UA
only, Basic256Sha256 Sign and SignAndEncrypt endpoints, user ``operator`` / ``s3cret-pass``,
anonymous disabled, a trusted client certificate and an untrusted one.

Both are module-scoped (server start-up takes ≈ 1.3 s). After every test that used one, its faults
are cleared, the PLC is put back in remote mode with writes allowed, control is handed back and
stopped servers are started again, so tests do not leak state into each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

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


def _tidy(plant: PlantServerThread) -> None:
    """Undo what a test may have left behind on a shared plant."""
    if not plant.loop.running:
        return
    plant.faults.clear()
    plant.faults.start_servers()
    plant.faults.set_remote(True)
    plant.faults.set_write_inhibit(False)
    plant.call(plant.server.core.write, "agent_in_control", 0.0, 0.0)


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
