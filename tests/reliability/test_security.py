"""Security evidence (IEC 62443-3-3 style, docs/security.md): roles, packages, certificates,
Modbus write scope and secrets.

Password hashing, lockout, idle timeout, the audit chain and OPC UA SignAndEncrypt with a trust list
are proven by the unit and integration tests listed in docs/security.md; this module adds what was
not yet covered end to end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pymodbus.client import AsyncModbusTcpClient

from app.agent_runtime.errors import HashMismatch, MissingSignature
from app.agent_runtime.keys import public_key_of
from app.config import ModbusConnection
from app.controllers.auth import AuthError, Session
from app.controllers.messages import WriteOutcomeKind
from app.domain import Mode, Origin, RejectReason, Role, Setpoint, Slot
from app.drivers.base import WriteStatus
from app.drivers.modbus import ModbusDriver
from app.drivers.opcua import certificate_expiry_warnings
from app.plant.catalog import RO_CATALOG
from app.plant.plc_map import standard_map
from app.plant.server import PlantConfig, PlantServerThread, free_port
from tests.agent_runtime.conftest import PackageFactory
from tests.agent_runtime.policies import constant_onnx
from tests.controllers.conftest import PASSWORD, F, P, Rig, constant_package
from tests.reliability.conftest import site_toml, wait_for

ROLES: dict[str, Role | None] = {
    "nobody": None, "view": Role.VIEWER, "op": Role.OPERATOR, "eng": Role.ENGINEER,
    "sup": Role.SUPERVISOR,
}  # fmt: skip


def _session(rig: Rig, who: str) -> Session | None:
    return None if who == "nobody" else rig.login(who)


def _denied(reason: str) -> bool:
    return "role or higher" in reason


# Every command of the controller API a front end can call, with its minimum role.
COMMANDS = {
    "mode_advisory": Role.OPERATOR,
    "mode_automatic": Role.ENGINEER,
    "approve": Role.OPERATOR,
    "modify": Role.OPERATOR,
    "reject": Role.OPERATOR,
    "load_candidate": Role.ENGINEER,
    "promote": Role.ENGINEER,
    "rollback": Role.SUPERVISOR,
    "manage_users": Role.SUPERVISOR,
    "write_setpoint": Role.OPERATOR,
    "return_to_base_control": None,
}


def _run(rig: Rig, command: str, s: Session | None, who: str, tmp: Path) -> str:
    """Run ``command`` as ``s``; returns the refusal/acceptance reason ('' when accepted)."""
    if command == "mode_advisory":
        v = rig.run(rig.mode.request_mode(Mode.ADVISORY, s))
        return "" if v.accepted else v.reason
    if command == "mode_automatic":
        v = rig.run(rig.mode.request_mode(Mode.AUTOMATIC, s, confirm=True))
        return "" if v.accepted else v.reason
    if command == "approve":
        return rig.run(rig.agent.approve("r-none", s)).reason
    if command == "modify":
        return rig.run(rig.agent.modify("r-none", {P: 12.0}, s)).reason
    if command == "reject":
        return rig.run(rig.agent.reject("r-none", RejectReason.OTHER, "test", s)).reason
    if command == "load_candidate":
        return rig.run(rig.agent.load_candidate(tmp / "missing-package", s)).reason
    if command == "promote":
        return rig.run(rig.agent.promote(s)).reason
    if command == "rollback":
        return rig.run(rig.agent.rollback(s, "test")).reason
    if command == "manage_users":
        try:
            rig.auth.add_user(s, f"u-{who}-{time.monotonic_ns()}", Role.VIEWER, PASSWORD)
        except AuthError as exc:
            return str(exc) if "role" in str(exc) else f"role or higher: {exc}"
        return ""
    if command == "write_setpoint":
        role = ROLES[who]
        origin = Origin.operator(who, role) if role is not None else Origin.operator(who, None)  # type: ignore[arg-type]
        out = rig.run(rig.plant.request_write([Setpoint(F, rig.driver.values[F] + 0.5)], origin))
        if out.kind is WriteOutcomeKind.REJECTED and "permission" in out.reason:
            return f"role or higher (safety envelope: {out.reason})"
        return "" if out.kind is WriteOutcomeKind.CONFIRMED else out.reason
    assert command == "return_to_base_control"
    v = rig.run(rig.mode.return_to_base_control(s))
    return "" if v.accepted else v.reason


def test_every_controller_command_enforces_its_minimum_role(
    rig: Rig, make_package: PackageFactory, tmp_path: Path
) -> None:
    rig.load(constant_package(make_package, 12.5, 40.0, "ro-sec"))
    matrix: dict[tuple[str, str], bool] = {}
    for command, min_role in COMMANDS.items():
        for who, role in ROLES.items():
            reason = _run(rig, command, _session(rig, who), who, tmp_path)
            allowed = min_role is None or (role is not None and role >= min_role)
            matrix[(command, who)] = not _denied(reason)
            assert _denied(reason) is not allowed, (command, who, reason)
    assert len(matrix) == len(COMMANDS) * len(ROLES)
    # every refusal is in the ledger with the user who tried
    refused = [
        e for e in rig.ledger_events("auth") if "denied" in e.summary or "refused" in e.summary
    ]
    assert refused or rig.ledger_events("permission_denied")


def test_a_tampered_or_unsigned_package_is_refused_with_an_alarm_and_nothing_runs(
    rig: Rig, make_package: PackageFactory, tmp_path: Path
) -> None:
    good = constant_package(make_package, 12.5, 40.0, "ro-good")
    bad = constant_package(make_package, 12.5, 40.0, "ro-bad")
    (bad / "policy.onnx").write_bytes(constant_onnx([16.0, 65.0]))  # swapped graph, same manifest
    unsigned = constant_package(make_package, 12.5, 40.0, "ro-unsigned")
    (unsigned / "manifest.sig").unlink()
    rig.load(good)
    for path in (bad, unsigned):
        fut = rig.host.load(path, Slot.CANDIDATE)
        with pytest.raises((HashMismatch, MissingSignature)):
            fut.result(10)
        rig.agent.record_load(path, Origin.system("test"), Slot.CANDIDATE, fut, None)
        rig.settle()
        assert rig.alarms.point("agent.package_refused").active
    versions = rig.host.versions
    assert versions.active is not None and versions.active.version == "ro-good"
    assert versions.candidate is None


def _certificate(path: Path, days: float) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intelwatt test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path


def test_certificate_expiry_is_warned_and_alarmed(rig: Rig, tmp_path: Path) -> None:
    soon = _certificate(tmp_path / "soon.der", 5)
    later = _certificate(tmp_path / "later.der", 365)
    gone = _certificate(tmp_path / "gone.der", -1)
    warnings = certificate_expiry_warnings({"client": soon, "server": later})
    assert len(warnings) == 1 and "client" in warnings[0] and "expires in" in warnings[0]
    assert "expired" in certificate_expiry_warnings({"server": gone})[0]
    # The plant controller turns the driver's warnings into the plc.certificate alarm at connect.
    rig.driver.certificate_warnings = tuple(warnings)  # type: ignore[attr-defined]
    rig.plant._connect()
    rig.settle()
    point = rig.alarms.point("plc.certificate")
    assert point.active
    rig.driver.certificate_warnings = ()  # type: ignore[attr-defined]
    rig.plant._connect()
    rig.settle()
    assert not rig.alarms.point("plc.certificate").active


@pytest.mark.slow
def test_modbus_writes_are_limited_to_the_configured_setpoint_registers() -> None:
    config = PlantConfig(process="ro", opcua=None, modbus=("127.0.0.1", 0), seed=2)
    with PlantServerThread(config, name="sec-modbus") as plant:
        before = plant.values()

        async def attempt() -> tuple[list[WriteStatus], list[bool]]:
            conn = ModbusConnection(host="127.0.0.1", port=plant.modbus_port, device_id=1,
                                    timeout_s=1.0, reconnect_delay_max_s=1.0, poll_period_s=0.1)  # fmt: skip
            drv = ModbusDriver(conn, RO_CATALOG.tags, standard_map(RO_CATALOG))
            await drv.connect()
            try:
                result = await drv.write([Setpoint("feed_pressure_bar", 3.0),
                                          Setpoint("permeate_flow_m3h", 1.0)])  # fmt: skip
                statuses = [r.status for r in result.results]
            finally:
                await drv.close()
            raw = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port)
            await raw.connect()
            try:
                writable = {a.register for a in standard_map(RO_CATALOG).values()
                            if a.table == "holding" and a.writable}  # fmt: skip
                errors = []
                for register in (max(writable) + 10, 900, 4000):
                    reply = await raw.write_register(register, 1234, device_id=1)
                    errors.append(reply.isError())
            finally:
                raw.close()
            return statuses, errors

        statuses, errors = asyncio.run(attempt())
        after = plant.values()
    assert all(s in (WriteStatus.CONFIG_ERROR, WriteStatus.REFUSED) for s in statuses), statuses
    assert errors == [True, True, True]  # unmapped registers: ILLEGAL_ADDRESS from the PLC
    for tag in ("feed_pressure_sp_bar", "feed_flow_sp_m3h"):
        assert after[tag] == before[tag]


@pytest.mark.slow
def test_no_secret_reaches_the_logs_the_status_or_the_data_folder(
    make_package: PackageFactory, signing_key: object, tmp_path: Path
) -> None:
    secret = "S3cr3t-Pa55word-7f1d2c"
    config = PlantConfig(process="ro", opcua=("127.0.0.1", 0), modbus=None, seed=4)
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "test.pub").write_text(public_key_of(signing_key, "test").to_text())  # type: ignore[arg-type]
    logs, data = tmp_path / "logs", tmp_path / "data"
    with PlantServerThread(config, name="sec-secrets") as plant:
        pkg = make_package(policy=constant_onnx([12.0, 40.0]), ensemble=(), version="ro-sec")
        site = tmp_path / "site.toml"
        site.write_text(site_toml("opcua", plant, pkg, trust, period=1.0))
        port = free_port("127.0.0.1")
        env = {**os.environ, "INTELWATT_USER": "sup", "INTELWATT_PASSWORD": secret,
               "INTELWATT_LOG_DIR": str(logs)}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.controllers.headless", "--site", str(site),
             "--status-port", str(port), "--status-period", "1", "--data-dir", str(data)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        statuses: list[bytes] = []
        try:

            def status() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                        statuses.append(r.read())
                        return bool(json.loads(statuses[-1])["plc"] == "connected")
                except OSError:
                    return False

            wait_for("headless status", status, timeout=60)
            time.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    places = {"stdout": out, "status": b"".join(statuses)}
    for root in (logs, data, tmp_path):
        for path in root.rglob("*"):
            if path.is_file():
                places[str(path)] = path.read_bytes()
    assert any(str(p).startswith(str(logs)) for p in places), "headless wrote no log file"
    leaks = [name for name, blob in places.items() if secret.encode() in blob]
    assert leaks == [], f"the password appears in {leaks}"
    users = json.loads((data / "users.json").read_text())
    assert "scrypt" in json.dumps(users)  # stored as a salted scrypt hash
