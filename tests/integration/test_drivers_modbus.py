"""The Modbus driver against the simulated PLC (fixture ``plant_server``)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.config import ModbusConnection, TagAddressOverride
from app.controllers.snapshot import SnapshotService
from app.domain import ConnectionState, Quality, Sample, Setpoint
from app.drivers.base import ConnectionLostError, HeartbeatWriter, WriteStatus
from app.drivers.modbus import ModbusDriver, poll_groups
from app.plant.catalog import AGENT_IN_CONTROL, RO_CATALOG, SUPERVISORY_ACTIVE, WATCHDOG_TRIPPED
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


def _connection(port: int, device_id: int = 1) -> ModbusConnection:
    return ModbusConnection(
        host="127.0.0.1",
        port=port,
        device_id=device_id,
        timeout_s=1.0,
        reconnect_delay_max_s=1.0,
        poll_period_s=0.05,
    )


@pytest.fixture
async def driver(plant_server: Any) -> AsyncIterator[ModbusDriver]:
    drv = ModbusDriver(
        _connection(plant_server.modbus_port), RO_CATALOG.tags, standard_map(RO_CATALOG)
    )
    await drv.connect()
    yield drv
    await drv.close()
    plant_server.faults.clear()


def test_standard_map_reads_in_two_requests() -> None:
    groups = poll_groups(list(standard_map(RO_CATALOG).values()))
    assert [(g.table, g.start) for g in groups] == [("input", 0), ("holding", 0)]
    assert sum(len(g.tags) for g in groups) == len(ALL_TAGS)


async def test_reads_every_tag(driver: ModbusDriver, plant_server: Any) -> None:
    samples = await driver.read(ALL_TAGS)
    assert [s.tag for s in samples] == ALL_TAGS
    assert {s.tag: s.quality for s in samples if s.quality is not Quality.GOOD} == {}
    plc = plant_server.values()
    by_tag = {s.tag: s for s in samples}
    for tdef in RO_CATALOG.writable:  # setpoints do not move between the two reads
        assert by_tag[tdef.name].value == pytest.approx(plc[tdef.name], rel=1e-6), tdef.name


async def test_poll_group_subscription(driver: ModbusDriver) -> None:
    got: list[Sample] = []
    handle = await driver.subscribe(ALL_TAGS, got.append)
    try:
        await wait_until(lambda: {s.tag for s in got} == set(ALL_TAGS))
        assert (await driver.write([Setpoint(SP, 14.5)])).ok
        await wait_until(lambda: any(s.tag == SP and s.value == 14.5 for s in got))
    finally:
        await handle.close()


async def test_write_is_read_back(driver: ModbusDriver, plant_server: Any) -> None:
    result = await driver.write([Setpoint(SP, 12.75)])
    assert result.for_tag(SP).status is WriteStatus.CONFIRMED
    assert plant_server.values()[SP] == pytest.approx(12.75)


async def test_out_of_limit_write_is_refused_by_the_plc(
    driver: ModbusDriver, plant_server: Any
) -> None:
    before = plant_server.values()[SP]
    entry = (await driver.write([Setpoint(SP, 41.0)])).for_tag(SP)
    assert entry.status is WriteStatus.REFUSED
    assert "ILLEGAL_VALUE" in entry.reason
    assert plant_server.values()[SP] == before


async def test_unknown_register_is_a_config_error(plant_server: Any) -> None:
    overrides = {PV: TagAddressOverride(modbus_register=9000)}
    drv = ModbusDriver(
        _connection(plant_server.modbus_port), RO_CATALOG.tags, site_map(RO_CATALOG, overrides)
    )
    await drv.connect()
    try:
        samples = {s.tag: s for s in await drv.read(ALL_TAGS)}
        assert samples[PV].quality is Quality.CONFIG_ERROR and math.isnan(samples[PV].value)
        assert PV in drv.config_errors
        assert samples["feed_pressure_bar"].quality is Quality.GOOD
    finally:
        await drv.close()


async def test_heartbeat_watchdog_returns_plc_to_base_control(
    driver: ModbusDriver, plant_server: Any
) -> None:
    heartbeat = HeartbeatWriter(driver, period_s=0.2)
    heartbeat.start()
    try:
        assert (await driver.write([Setpoint(AGENT_IN_CONTROL, 1.0)])).ok
        await wait_until(lambda: plant_server.values()[SUPERVISORY_ACTIVE] == 1.0)
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
        (lambda f: f.force(PV, -math.inf), Quality.NOT_A_NUMBER),
        (lambda f: f.force(PV, 99.0), Quality.OUT_OF_RANGE),
        (lambda f: f.bad_status(PV, "BadSensorFailure"), Quality.NOT_A_NUMBER),
    ],
    ids=["nan", "inf", "out_of_range", "bad_status_served_as_nan"],
)
async def test_value_faults_become_qualities(
    driver: ModbusDriver, plant_server: Any, inject: Callable[[Any], None], expected: Quality
) -> None:
    inject(plant_server.faults)
    await wait_until_quality(driver, expected)


async def wait_until_quality(driver: ModbusDriver, quality: Quality, within: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (await driver.read([PV]))[0].quality is not quality:
        if loop.time() > deadline:
            pytest.fail(f"{PV} never became {quality}")
        await asyncio.sleep(0.05)


async def test_slow_device_gives_comm_failure_then_recovers(
    driver: ModbusDriver, plant_server: Any
) -> None:
    plant_server.faults.delay(2.0, "modbus")  # longer than the 1 s request timeout
    try:
        sample = (await driver.read([PV]))[0]
        assert sample.quality is Quality.COMM_FAILURE and math.isnan(sample.value)
        assert driver.state is ConnectionState.RECONNECTING
    finally:
        plant_server.faults.clear()
    await wait_until_quality(driver, Quality.GOOD)
    assert driver.state is ConnectionState.CONNECTED


async def test_dropped_connection_reconnects(driver: ModbusDriver, plant_server: Any) -> None:
    snapshot = SnapshotService(stale_after_s=5.0)
    handle = await driver.subscribe([PV], snapshot.update)
    try:
        await wait_until(lambda: (s := snapshot.get(PV)) is not None and s.quality is Quality.GOOD)
        plant_server.faults.drop_connections()
        await wait_until(lambda: driver.state is ConnectionState.CONNECTED)
        await wait_until(lambda: (s := snapshot.get(PV)) is not None and s.quality is Quality.GOOD)
    finally:
        await handle.close()


@pytest.mark.slow
async def test_server_restart_reconnects(driver: ModbusDriver, plant_server: Any) -> None:
    restart = asyncio.create_task(asyncio.to_thread(plant_server.restart, 1.0))
    seen: set[Quality] = set()
    while not restart.done():
        seen.add((await driver.read([PV]))[0].quality)
        await asyncio.sleep(0.05)
    await restart
    assert Quality.COMM_FAILURE in seen  # the outage was visible, never a silent old value
    await wait_until_quality(driver, Quality.GOOD)
    assert driver.state is ConnectionState.CONNECTED


async def test_unreachable_device_fails_connect_cleanly() -> None:
    drv = ModbusDriver(_connection(1), RO_CATALOG.tags, standard_map(RO_CATALOG))
    with pytest.raises(ConnectionLostError):
        await drv.connect()
    assert drv.state is ConnectionState.DISCONNECTED
    await drv.close()
