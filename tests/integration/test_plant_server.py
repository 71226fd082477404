"""The simulated PLC over real OPC UA and Modbus TCP, checked with raw asyncua and pymodbus clients."""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from pymodbus.client import AsyncModbusTcpClient

from app.plant.catalog import RO_CATALOG
from app.plant.plc_map import standard_map
from app.plant.server import PlantServerThread
from tests.integration.conftest import WATCHDOG_TIMEOUT_S, SecurePlant

MAP = standard_map(RO_CATALOG)
NAMESPACE = "urn:intelwatt:plant"


def f32(value: float) -> float:
    """``value`` rounded to float32, as Modbus carries it."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def regs_to_float(hi: int, lo: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", hi, lo))[0])


def float_to_regs(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


@contextlib.asynccontextmanager
async def opcua(endpoint: str) -> AsyncIterator[tuple[Client, int]]:
    client = Client(endpoint, timeout=4)
    await client.connect()
    try:
        yield client, await client.get_namespace_index(NAMESPACE)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


@contextlib.asynccontextmanager
async def modbus(port: int, request_timeout_s: float = 2.0) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=request_timeout_s, retries=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


def node(client: Client, idx: int, tag: str) -> Any:
    return client.get_node(ua.NodeId(MAP[tag].node_id.removeprefix("s="), idx))


async def read_modbus_all(client: AsyncModbusTcpClient) -> dict[str, float]:
    out: dict[str, float] = {}
    for table, read in (
        ("input", client.read_input_registers),
        ("holding", client.read_holding_registers),
    ):
        tags = [a for a in MAP.values() if a.table == table]
        count = max(a.register + a.width for a in tags)
        rr = await read(0, count=count, device_id=1)
        assert not rr.isError(), rr
        for a in tags:
            out[a.tag] = regs_to_float(rr.registers[a.register], rr.registers[a.register + 1])
    return out


async def write_modbus(client: AsyncModbusTcpClient, tag: str, value: float) -> Any:
    return await client.write_registers(MAP[tag].register, float_to_regs(value), device_id=1)


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], limit_s: float, what: str
) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``limit_s`` (a bound, not a figure)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def heartbeat(client: Client, idx: int, period: float = 0.3) -> AsyncIterator[None]:
    """Write a changing console heartbeat while the block runs."""
    hb = node(client, idx, "console_heartbeat")
    count = float(int(await hb.read_value()))

    async def beat() -> None:
        nonlocal count
        while True:
            count = (count + 1) % 65536
            await hb.write_value(count)
            await asyncio.sleep(period)

    task = asyncio.create_task(beat())
    await asyncio.sleep(0.1)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# --- reading ---------------------------------------------------------------------------------


async def test_every_tag_is_readable_over_both_protocols_with_equal_values(
    plant_server: PlantServerThread,
) -> None:
    core = plant_server.server.core
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
    ):
        nodes = [node(client, idx, tag) for tag in MAP]
        for _attempt in range(5):
            scans = core.scans
            ua_values = dict(zip(MAP, await client.read_values(nodes), strict=True))
            mb_values = await read_modbus_all(mb)
            if core.scans == scans:
                break
        else:
            pytest.fail("no read pair within one PLC scan")
    assert set(ua_values) == set(mb_values) == {t.name for t in RO_CATALOG}
    for tag in MAP:
        assert isinstance(ua_values[tag], float), tag
        assert same(f32(ua_values[tag]), mb_values[tag]), (tag, ua_values[tag], mb_values[tag])
    values = plant_server.values()
    assert values["remote_mode"] == 1.0
    assert 0 < ua_values["feed_pressure_bar"] <= 45
    assert ua_values["feed_pressure_sp_bar"] == pytest.approx(values["feed_pressure_sp_bar"])


async def test_only_setpoints_commands_and_heartbeat_are_writable(
    plant_server: PlantServerThread,
) -> None:
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
    ):
        for tag, address in MAP.items():
            level = await node(client, idx, tag).get_access_level()
            assert (ua.AccessLevel.CurrentWrite in level) == address.writable, tag
        before = plant_server.values()["feed_pressure_bar"]
        with pytest.raises(UaStatusCodeError) as err:
            await node(client, idx, "feed_pressure_bar").write_value(1.0)
        assert "BadUserAccessDenied" in str(err.value)
        assert plant_server.values()["feed_pressure_bar"] != 1.0 or before == 1.0
        # Input registers cannot be written over Modbus at all (no function code for it).
        rr = await mb.read_input_registers(10_000, count=2, device_id=1)
        assert rr.isError()


async def test_source_timestamps_follow_the_plc_scan(plant_server: PlantServerThread) -> None:
    async with opcua(plant_server.opcua_endpoint) as (client, idx):
        n = node(client, idx, "permeate_flow_m3h")
        first = await n.read_data_value()
        assert first.SourceTimestamp is not None
        await wait_for(lambda: _newer(n, first.SourceTimestamp), 3.0, "a newer source timestamp")


async def _newer(n: Any, stamp: Any) -> bool:
    dv = await n.read_data_value()
    return bool(dv.SourceTimestamp > stamp)


# --- writes and supervision ------------------------------------------------------------------


async def test_setpoint_writes_take_effect_when_supervisory_control_is_requested(
    plant_server: PlantServerThread,
) -> None:
    core = plant_server.server.core
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
        heartbeat(client, idx),
    ):
        current = plant_server.values()
        target_p = round(current["feed_pressure_sp_bar"] + 1.5, 1)
        target_q = round(current["feed_flow_sp_m3h"] - 2.0, 1)
        await node(client, idx, "agent_in_control").write_value(1.0)
        await wait_for(
            lambda: plant_server.values()["supervisory_active"] == 1.0, 2.0, "supervisory_active"
        )
        await node(client, idx, "feed_pressure_sp_bar").write_value(target_p)
        rr = await write_modbus(mb, "feed_flow_sp_m3h", target_q)
        assert not rr.isError(), rr
        # Readback over the other protocol.
        assert await node(client, idx, "feed_flow_sp_m3h").read_value() == pytest.approx(target_q)
        back = await read_modbus_all(mb)
        assert back["feed_pressure_sp_bar"] == pytest.approx(f32(target_p))
        # The PLC ramps the model's setpoints to the targets (0.7 bar/s, 0.5 m3/h/s at speed 1).
        await wait_for(
            lambda: (
                core.model_setpoints()["feed_pressure_sp_bar"] == pytest.approx(target_p)
                and core.model_setpoints()["feed_flow_sp_m3h"] == pytest.approx(target_q)
            ),
            10.0,
            "the model to run at the written setpoints",
        )
        await node(client, idx, "agent_in_control").write_value(0.0)
        await wait_for(lambda: plant_server.values()["supervisory_active"] == 0.0, 2.0, "hand-back")


async def test_writes_outside_plc_limits_are_refused_over_both_protocols(
    plant_server: PlantServerThread,
) -> None:
    tag = "feed_pressure_sp_bar"
    tdef = RO_CATALOG.tag(tag)
    assert tdef.plc_high is not None and tdef.plc_low is not None
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
    ):
        sp = node(client, idx, tag)
        before = await sp.read_value()
        for bad in (tdef.plc_high + 0.5, tdef.plc_low - 0.5, math.nan, math.inf):
            with pytest.raises(UaStatusCodeError) as err:
                await sp.write_value(bad)
            assert err.value.code == ua.StatusCodes.BadOutOfRange, bad
            rr = await write_modbus(mb, tag, bad)
            assert rr.isError() and rr.exception_code == 3, (bad, rr)
        assert await sp.read_value() == before
        assert (await read_modbus_all(mb))[tag] == pytest.approx(f32(before))
        # A discrete command takes 0 or 1 only.
        with pytest.raises(UaStatusCodeError) as err:
            await node(client, idx, "agent_in_control").write_value(0.5)
        assert err.value.code == ua.StatusCodes.BadOutOfRange
        # A multi-register write touching a valid and an invalid tag changes neither.
        q_before = plant_server.values()["feed_flow_sp_m3h"]
        regs = float_to_regs(before) + float_to_regs(999.0)
        rr = await mb.write_registers(MAP[tag].register, regs, device_id=1)
        assert rr.isError() and rr.exception_code == 3
        assert plant_server.values()["feed_flow_sp_m3h"] == q_before
        # Wrong OPC UA type: refused by type, value unchanged.
        with pytest.raises(UaStatusCodeError) as err:
            await sp.write_value(ua.Variant(12, ua.VariantType.Int32))
        assert err.value.code == ua.StatusCodes.BadTypeMismatch
        assert await sp.read_value() == before


async def test_watchdog_trips_and_base_control_takes_over(plant_server: PlantServerThread) -> None:
    core = plant_server.server.core
    async with opcua(plant_server.opcua_endpoint) as (client, idx):
        async with heartbeat(client, idx):
            await node(client, idx, "agent_in_control").write_value(1.0)
            await wait_for(
                lambda: plant_server.values()["supervisory_active"] == 1.0, 2.0, "supervision"
            )
            target = round(core.model_setpoints()["feed_pressure_sp_bar"] + 2.0, 1)
            await node(client, idx, "feed_pressure_sp_bar").write_value(target)
            await asyncio.sleep(0.5)
            assert plant_server.values()["watchdog_tripped"] == 0.0
        # Heartbeat stopped: the PLC must trip within its timeout (the bound here is a wait limit).
        await wait_for(
            lambda: plant_server.values()["watchdog_tripped"] == 1.0,
            WATCHDOG_TIMEOUT_S + 2.0,
            "the watchdog to trip",
        )
        values = plant_server.values()
        assert values["supervisory_active"] == 0.0
        assert values["agent_in_control"] == 0.0
        # Supervisory setpoint dropped: the register holds what the model runs with, and from here
        # on base control moves it (the written target is no longer pursued).
        active = core.model_setpoints()["feed_pressure_sp_bar"]
        assert values["feed_pressure_sp_bar"] == pytest.approx(active, abs=0.8)
        assert await node(client, idx, "watchdog_tripped").read_value() == 1.0
        # Re-requesting without a heartbeat does not clear the trip.
        await node(client, idx, "agent_in_control").write_value(1.0)
        await asyncio.sleep(0.3)
        assert plant_server.values()["watchdog_tripped"] == 1.0
        assert plant_server.values()["supervisory_active"] == 0.0
        # Heartbeat moving again plus the request: cleared, supervision resumes.
        async with heartbeat(client, idx):
            await wait_for(
                lambda: plant_server.values()["watchdog_tripped"] == 0.0, 2.0, "the trip to clear"
            )
            await wait_for(
                lambda: plant_server.values()["supervisory_active"] == 1.0, 2.0, "supervision"
            )
            await node(client, idx, "agent_in_control").write_value(0.0)


async def test_local_mode_refuses_supervisory_writes_and_ends_supervision(
    plant_server: PlantServerThread,
) -> None:
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
        heartbeat(client, idx),
    ):
        await node(client, idx, "agent_in_control").write_value(1.0)
        await wait_for(lambda: plant_server.values()["supervisory_active"] == 1.0, 2.0, "active")
        plant_server.faults.set_remote(False)
        assert await node(client, idx, "remote_mode").read_value() == 0.0
        assert plant_server.values()["supervisory_active"] == 0.0
        with pytest.raises(UaStatusCodeError) as err:
            await node(client, idx, "feed_pressure_sp_bar").write_value(15.0)
        assert err.value.code == ua.StatusCodes.BadInvalidState
        rr = await write_modbus(mb, "feed_flow_sp_m3h", 41.0)
        assert rr.isError() and rr.exception_code == 4
        # Handing back control and the heartbeat are always accepted.
        await node(client, idx, "agent_in_control").write_value(0.0)
        plant_server.faults.set_remote(True)


# --- faults ----------------------------------------------------------------------------------


async def test_frozen_tag_keeps_value_and_timestamp(plant_server: PlantServerThread) -> None:
    async with opcua(plant_server.opcua_endpoint) as (client, idx):
        frozen = node(client, idx, "permeate_flow_m3h")
        live = node(client, idx, "plc_heartbeat")
        plant_server.faults.freeze("permeate_flow_m3h")
        await asyncio.sleep(0.2)
        first = await frozen.read_data_value()
        live_first = await live.read_value()
        await wait_for(
            lambda: _changed(live, live_first), 3.0, "the PLC heartbeat to move meanwhile"
        )
        second = await frozen.read_data_value()
        assert second.Value.Value == first.Value.Value
        assert second.SourceTimestamp == first.SourceTimestamp
        plant_server.faults.clear("permeate_flow_m3h")
        await wait_for(lambda: _newer(frozen, first.SourceTimestamp), 3.0, "updates after unfreeze")


async def _changed(n: Any, old: float) -> bool:
    return bool(await n.read_value() != old)


@pytest.mark.parametrize(
    ("tag", "value"),
    [("feed_pressure_bar", math.nan), ("feed_flow_m3h", math.inf), ("feed_ph", 17.5)],
)
async def test_forced_values_reach_both_protocols(
    plant_server: PlantServerThread, tag: str, value: float
) -> None:
    plant_server.faults.force(tag, value)
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
    ):
        n = node(client, idx, tag)
        await wait_for(lambda: _is(n, value), 2.0, f"{tag} forced to {value}")
        assert same((await read_modbus_all(mb))[tag], value)


async def _is(n: Any, value: float) -> bool:
    return same(await n.read_value(), value)


async def test_bad_status_reaches_opcua_and_nan_reaches_modbus(
    plant_server: PlantServerThread,
) -> None:
    plant_server.faults.bad_status("feed_conductivity_uscm", "BadSensorFailure")
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
    ):
        n = node(client, idx, "feed_conductivity_uscm")

        async def bad() -> bool:
            dv = await n.read_data_value(raise_on_bad_status=False)
            return dv.StatusCode.value == ua.StatusCodes.BadSensorFailure

        await wait_for(bad, 2.0, "BadSensorFailure on feed_conductivity_uscm")
        assert math.isnan((await read_modbus_all(mb))["feed_conductivity_uscm"])
        good = await node(client, idx, "feed_temperature_c").read_data_value()
        assert good.StatusCode.is_good()


async def test_delayed_responses_time_out_short_client_timeouts(
    plant_server: PlantServerThread,
) -> None:
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port, request_timeout_s=0.3) as mb,
    ):
        n = node(client, idx, "feed_ph")
        await n.read_value()
        plant_server.faults.delay(1.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(n.read_value(), 0.3)
        rr = None
        with contextlib.suppress(Exception):
            rr = await mb.read_input_registers(0, count=2, device_id=1)
        assert rr is None or rr.isError()
        plant_server.faults.delay(0.0)
    async with opcua(plant_server.opcua_endpoint) as (client, idx):
        assert isinstance(await node(client, idx, "feed_ph").read_value(), float)


async def test_dropped_connections_reach_clients(plant_server: PlantServerThread) -> None:
    async with (
        opcua(plant_server.opcua_endpoint) as (client, idx),
        modbus(plant_server.modbus_port) as mb,
    ):
        await node(client, idx, "feed_ph").read_value()
        assert plant_server.faults.drop_connections() >= 2
        with pytest.raises((ConnectionError, UaStatusCodeError, TimeoutError)):
            await node(client, idx, "feed_ph").read_value()
        rr = None
        with contextlib.suppress(Exception):
            rr = await mb.read_input_registers(0, count=2, device_id=1)
        assert rr is None or rr.isError()
    async with opcua(plant_server.opcua_endpoint) as (client, idx):
        assert isinstance(await node(client, idx, "feed_ph").read_value(), float)


async def test_servers_stop_and_start_on_the_same_ports(plant_server: PlantServerThread) -> None:
    endpoint, port = plant_server.opcua_endpoint, plant_server.modbus_port
    plant_server.faults.stop_servers()
    with pytest.raises((ConnectionError, OSError, TimeoutError)):
        async with opcua(endpoint):
            pass
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    assert not await client.connect()
    client.close()
    plant_server.faults.start_servers()
    assert (plant_server.opcua_endpoint, plant_server.modbus_port) == (endpoint, port)
    async with opcua(endpoint) as (c, idx), modbus(port) as mb:
        assert isinstance(await node(c, idx, "feed_ph").read_value(), float)
        assert "feed_ph" in await read_modbus_all(mb)


def test_restart_keeps_the_plant_running(plant_server: PlantServerThread) -> None:
    scans = plant_server.server.core.scans
    plant_server.restart(down_s=0.2)
    assert plant_server.server.core.scans >= scans


# --- security --------------------------------------------------------------------------------


async def _secure_client(
    plant: SecurePlant,
    *,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
    user: str | None = None,
    password: str | None = None,
    trusted: bool = True,
) -> Client:
    client = Client(plant.opcua_endpoint, timeout=4)
    client.application_uri = plant.application_uri
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(plant.client_cert if trusted else plant.untrusted_cert),
        private_key=str(plant.client_key if trusted else plant.untrusted_key),
        server_certificate=str(plant.server_cert),
        mode=mode,
    )
    return client


@pytest.mark.parametrize(
    "mode", [ua.MessageSecurityMode.SignAndEncrypt, ua.MessageSecurityMode.Sign]
)
async def test_secure_server_accepts_a_trusted_client_with_a_valid_user(
    secure_plant_server: SecurePlant, mode: ua.MessageSecurityMode
) -> None:
    plant = secure_plant_server
    client = await _secure_client(plant, mode=mode, user=plant.username, password=plant.password)
    await client.connect()
    try:
        idx = await client.get_namespace_index(NAMESPACE)
        assert isinstance(await node(client, idx, "feed_pressure_bar").read_value(), float)
        await node(client, idx, "console_heartbeat").write_value(7.0)
        assert plant.values()["console_heartbeat"] == 7.0
    finally:
        await client.disconnect()


@pytest.mark.parametrize(
    ("user", "password"), [("operator", "wrong-pass"), ("intruder", "s3cret-pass"), (None, None)]
)
async def test_secure_server_refuses_bad_credentials_and_anonymous(
    secure_plant_server: SecurePlant, user: str | None, password: str | None
) -> None:
    client = await _secure_client(secure_plant_server, user=user, password=password)
    with pytest.raises(UaStatusCodeError) as err:
        await client.connect()
    assert err.value.code in (
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadIdentityTokenRejected,
        ua.StatusCodes.BadIdentityTokenInvalid,
    )
    with contextlib.suppress(Exception):
        await client.disconnect()


async def test_secure_server_refuses_an_untrusted_client_certificate(
    secure_plant_server: SecurePlant,
) -> None:
    plant = secure_plant_server
    client = await _secure_client(
        plant, user=plant.username, password=plant.password, trusted=False
    )
    with pytest.raises((UaStatusCodeError, ConnectionError, TimeoutError)):
        await client.connect()
    with contextlib.suppress(Exception):
        await client.disconnect()


async def test_secure_server_offers_no_unsecured_endpoint(secure_plant_server: SecurePlant) -> None:
    client = Client(secure_plant_server.opcua_endpoint, timeout=4)
    endpoints = await client.connect_and_get_server_endpoints()
    modes = {e.SecurityMode for e in endpoints}
    assert modes == {ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt}
    for e in endpoints:
        assert e.SecurityPolicyUri.endswith("Basic256Sha256")
        kinds = {t.TokenType for t in e.UserIdentityTokens}
        assert ua.UserTokenType.Anonymous not in kinds
    with pytest.raises((ua.UaError, ConnectionError, TimeoutError)):
        async with opcua(secure_plant_server.opcua_endpoint):
            pass
