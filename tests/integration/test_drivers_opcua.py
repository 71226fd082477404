"""The OPC UA driver against the simulated PLC (fixtures ``plant_server``/``secure_plant_server``)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.config import OpcUaConnection, OpcUaSecurity, TagAddressOverride
from app.controllers.snapshot import SnapshotService
from app.domain import ConnectionState, Quality, Sample, Setpoint
from app.drivers.base import AuthFailedError, ConnectionLostError, HeartbeatWriter, WriteStatus
from app.drivers.opcua import OpcUaDriver
from app.plant.catalog import (
    AGENT_IN_CONTROL,
    RO_CATALOG,
    SUPERVISORY_ACTIVE,
    WATCHDOG_TRIPPED,
)
from app.plant.plc_map import site_map, standard_map

ALL_TAGS = [t.name for t in RO_CATALOG]
SP = "feed_pressure_sp_bar"
PV = "feed_temperature_c"


async def wait_until(cond: Callable[[], bool], within: float = 15.0, step: float = 0.02) -> None:
    """Poll ``cond`` until true; fail the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(step)


def _connection(endpoint: str, **kw: Any) -> OpcUaConnection:
    return OpcUaConnection(
        endpoint=endpoint, timeout_s=2.0, publishing_interval_ms=20, reconnect_max_delay_s=1.0, **kw
    )


@pytest.fixture
async def driver(plant_server: Any) -> AsyncIterator[OpcUaDriver]:
    drv = OpcUaDriver(
        _connection(plant_server.opcua_endpoint), RO_CATALOG.tags, standard_map(RO_CATALOG)
    )
    await drv.connect()
    yield drv
    await drv.close()
    plant_server.faults.clear()


async def test_reads_every_tag(driver: OpcUaDriver, plant_server: Any) -> None:
    samples = await driver.read(ALL_TAGS)
    assert [s.tag for s in samples] == ALL_TAGS
    bad = {s.tag: s.quality for s in samples if s.quality is not Quality.GOOD}
    assert bad == {}
    plc = plant_server.values()
    by_tag = {s.tag: s for s in samples}
    for tdef in RO_CATALOG.writable:
        assert by_tag[tdef.name].value == pytest.approx(plc[tdef.name]), tdef.name
    assert all(s.source_ts.tzinfo is not None for s in samples)


async def test_subscription_delivers_changes(driver: OpcUaDriver) -> None:
    got: list[Sample] = []
    handle = await driver.subscribe(ALL_TAGS, got.append)
    try:
        await wait_until(lambda: {s.tag for s in got} == set(ALL_TAGS))
        result = await driver.write([Setpoint(SP, 13.25)])
        assert result.ok
        await wait_until(lambda: any(s.tag == SP and s.value == 13.25 for s in got))
    finally:
        await handle.close()


async def test_write_is_read_back_and_reaches_the_plc(
    driver: OpcUaDriver, plant_server: Any
) -> None:
    result = await driver.write([Setpoint(SP, 11.5), Setpoint("feed_flow_sp_m3h", 42.0)])
    assert result.ok, result
    assert result.for_tag(SP).status is WriteStatus.CONFIRMED
    assert result.for_tag(SP).readback == pytest.approx(11.5)
    assert plant_server.values()[SP] == pytest.approx(11.5)


async def test_out_of_limit_write_is_refused_by_the_plc(
    driver: OpcUaDriver, plant_server: Any
) -> None:
    before = plant_server.values()[SP]
    result = await driver.write([Setpoint(SP, 44.0)])  # plc_high is 40
    entry = result.for_tag(SP)
    assert entry.status is WriteStatus.REFUSED
    assert "BadOutOfRange" in entry.reason
    assert plant_server.values()[SP] == before


async def test_read_only_and_unknown_tags_are_not_written(driver: OpcUaDriver) -> None:
    result = await driver.write([Setpoint(PV, 20.0), Setpoint("no_such_tag", 1.0)])
    assert [r.status for r in result.results] == [WriteStatus.CONFIG_ERROR] * 2


async def test_unknown_node_id_is_a_config_error_not_a_crash(plant_server: Any) -> None:
    overrides = {PV: TagAddressOverride(node_id="s=ro.no_such_node")}
    drv = OpcUaDriver(
        _connection(plant_server.opcua_endpoint), RO_CATALOG.tags, site_map(RO_CATALOG, overrides)
    )
    await drv.connect()
    try:
        assert PV in drv.config_errors
        samples = {s.tag: s for s in await drv.read(ALL_TAGS)}
        assert samples[PV].quality is Quality.CONFIG_ERROR and math.isnan(samples[PV].value)
        assert samples[SP].quality is Quality.GOOD
    finally:
        await drv.close()


async def test_heartbeat_keeps_supervision_and_its_loss_trips_the_watchdog(
    driver: OpcUaDriver, plant_server: Any
) -> None:
    heartbeat = HeartbeatWriter(driver, period_s=0.2)
    heartbeat.start()
    try:
        assert (await driver.write([Setpoint(AGENT_IN_CONTROL, 1.0)])).ok
        await wait_until(lambda: plant_server.values()[SUPERVISORY_ACTIVE] == 1.0)
        assert plant_server.values()[WATCHDOG_TRIPPED] == 0.0
        heartbeat.pause()
        await wait_until(lambda: plant_server.values()[WATCHDOG_TRIPPED] == 1.0)
        assert plant_server.values()[SUPERVISORY_ACTIVE] == 0.0
    finally:
        await heartbeat.stop()
        await driver.write([Setpoint(AGENT_IN_CONTROL, 0.0)])


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        (lambda f: f.force(PV, math.nan), Quality.NOT_A_NUMBER),
        (lambda f: f.force(PV, math.inf), Quality.NOT_A_NUMBER),
        (lambda f: f.force(PV, 99.0), Quality.OUT_OF_RANGE),
        (lambda f: f.bad_status(PV, "BadSensorFailure"), Quality.BAD),
        (lambda f: f.bad_status(PV, "UncertainLastUsableValue"), Quality.UNCERTAIN),
    ],
    ids=["nan", "inf", "out_of_range", "bad_status", "uncertain_status"],
)
async def test_value_faults_become_qualities(
    driver: OpcUaDriver, plant_server: Any, inject: Callable[[Any], None], expected: Quality
) -> None:
    got: list[Sample] = []
    handle = await driver.subscribe([PV], got.append)
    try:
        await wait_until(lambda: bool(got))
        inject(plant_server.faults)
        await wait_until(lambda: got[-1].quality is expected)
        sample = (await driver.read([PV]))[0]
        assert sample.quality is expected
        if expected is Quality.NOT_A_NUMBER:
            assert not math.isfinite(sample.value)
        if expected is Quality.BAD:
            assert math.isnan(sample.value)  # no silent old value behind a bad status
    finally:
        await handle.close()


async def test_frozen_tag_goes_stale_in_the_snapshot(
    driver: OpcUaDriver, plant_server: Any
) -> None:
    snapshot = SnapshotService(stale_after_s=1.0)
    handle = await driver.subscribe([PV, SP], snapshot.update)
    try:
        await wait_until(lambda: len(snapshot) == 2)
        plant_server.faults.freeze(PV)
        await wait_until(lambda: (s := snapshot.get(PV)) is not None and s.quality is Quality.STALE)
        state = snapshot.get(PV)
        assert state is not None and math.isnan(state.value)
    finally:
        await handle.close()


async def test_slow_server_gives_comm_failure_then_recovers(
    driver: OpcUaDriver, plant_server: Any
) -> None:
    plant_server.faults.delay(3.0, "opcua")  # longer than the 2 s request timeout
    try:
        sample = (await driver.read([PV]))[0]
        assert sample.quality is Quality.COMM_FAILURE and math.isnan(sample.value)
    finally:
        plant_server.faults.clear()
    await wait_until(lambda: driver.state is ConnectionState.CONNECTED)
    await wait_until_good(driver)


async def wait_until_good(driver: OpcUaDriver, within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (await driver.read([PV]))[0].quality is not Quality.GOOD:
        if loop.time() > deadline:
            pytest.fail("no good sample after the fault was cleared")
        await asyncio.sleep(0.1)


async def test_dropped_connection_reconnects_and_subscription_resumes(
    driver: OpcUaDriver, plant_server: Any
) -> None:
    states: list[ConnectionState] = []
    driver.add_state_listener(lambda state, _detail: states.append(state))
    got: list[Sample] = []
    handle = await driver.subscribe([PV], got.append)
    try:
        await wait_until(lambda: bool(got))
        plant_server.faults.drop_connections()
        await wait_until(lambda: ConnectionState.RECONNECTING in states)
        await wait_until(lambda: driver.state is ConnectionState.CONNECTED)
        assert any(s.quality is Quality.COMM_FAILURE for s in got)
        got.clear()
        await wait_until(lambda: any(s.quality is Quality.GOOD for s in got))
    finally:
        await handle.close()


@pytest.mark.slow
async def test_server_restart_reconnects(driver: OpcUaDriver, plant_server: Any) -> None:
    got: list[Sample] = []
    handle = await driver.subscribe([PV], got.append)
    try:
        await wait_until(lambda: bool(got))
        await asyncio.to_thread(plant_server.restart, 1.0)
        await wait_until(lambda: driver.state is ConnectionState.CONNECTED, within=15)
        got.clear()
        await wait_until(lambda: any(s.quality is Quality.GOOD for s in got), within=15)
        assert (await driver.read([PV]))[0].quality is Quality.GOOD
    finally:
        await handle.close()


async def test_replayed_older_notification_never_overwrites_newer_value(
    driver: OpcUaDriver,
) -> None:
    got: list[Sample] = []
    handle = await driver.subscribe([PV], got.append)
    try:
        await wait_until(lambda: bool(got))
        newest = got[-1]
        replayed = Sample(PV, -1.0, Quality.GOOD, newest.source_ts - timedelta(seconds=5), 0.0)
        assert not driver.accept(replayed)
        lost = Sample(PV, math.nan, Quality.COMM_FAILURE, newest.source_ts - timedelta(days=1), 0.0)
        assert driver.accept(lost)
        same = Sample(PV, newest.value, Quality.GOOD, newest.source_ts, 0.0)
        assert driver.accept(same)  # the current value re-sent after a reconnect is welcome
        assert all(s.value != -1.0 for s in got)
    finally:
        await handle.close()


# --- security -------------------------------------------------------------------------------


def _secure(server: Any, *, password_env: str, cert: Path, key: Path) -> OpcUaConnection:
    return _connection(
        server.opcua_endpoint,
        security=OpcUaSecurity(
            policy="Basic256Sha256",
            mode="SignAndEncrypt",
            certificate=cert,
            private_key=key,
            server_certificate=server.server_cert,
            username=server.username,
            password=f"env:{password_env}",
        ),
    )


async def test_sign_and_encrypt_with_user_auth(
    secure_plant_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IW_TEST_OPCUA_PW", secure_plant_server.password)
    conn = _secure(
        secure_plant_server,
        password_env="IW_TEST_OPCUA_PW",
        cert=secure_plant_server.client_cert,
        key=secure_plant_server.client_key,
    )
    drv = OpcUaDriver(conn, RO_CATALOG.tags, standard_map(RO_CATALOG))
    await drv.connect()
    try:
        assert drv.state is ConnectionState.CONNECTED
        samples = await drv.read(ALL_TAGS)
        assert all(s.quality is Quality.GOOD for s in samples)
        assert (await drv.write([Setpoint(SP, 12.0)])).ok
    finally:
        await drv.close()


async def test_wrong_password_is_auth_failed(
    secure_plant_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IW_TEST_OPCUA_PW", "definitely-wrong")
    conn = _secure(
        secure_plant_server,
        password_env="IW_TEST_OPCUA_PW",
        cert=secure_plant_server.client_cert,
        key=secure_plant_server.client_key,
    )
    drv = OpcUaDriver(conn, RO_CATALOG.tags, standard_map(RO_CATALOG))
    with pytest.raises(AuthFailedError):
        await drv.connect()
    assert drv.state is ConnectionState.AUTH_FAILED
    await drv.close()


async def test_untrusted_client_certificate_is_refused(
    secure_plant_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IW_TEST_OPCUA_PW", secure_plant_server.password)
    conn = _secure(
        secure_plant_server,
        password_env="IW_TEST_OPCUA_PW",
        cert=secure_plant_server.untrusted_cert,
        key=secure_plant_server.untrusted_key,
    )
    drv = OpcUaDriver(conn, RO_CATALOG.tags, standard_map(RO_CATALOG))
    with pytest.raises((AuthFailedError, ConnectionLostError)):
        await drv.connect()
    assert drv.state in (ConnectionState.AUTH_FAILED, ConnectionState.DISCONNECTED)
    await drv.close()
