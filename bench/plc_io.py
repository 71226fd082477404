"""PLC I/O benchmark: read latency, batch throughput, change-to-snapshot latency, reconnect time.

The PLC runs in its own thread, as the simulated plant does: bare asyncua/pymodbus servers serving
the RO standard address map (reported as ``"server": "bare"``). They isolate the I/O path: the
simulated plant publishes once per PLC scan, so a change-to-snapshot figure measured through it
would mostly measure its scan period.

Run: ``.venv/bin/python -m bench.plc_io``
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import ua
from asyncua.server.server import Server
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from app.concurrency import LoopThread
from app.config import ModbusConnection, OpcUaConnection
from app.controllers.snapshot import SnapshotService
from app.domain import ConnectionState, Quality, Sample
from app.drivers.base import PlcDriver
from app.drivers.modbus import ModbusDriver
from app.drivers.opcua import OpcUaDriver
from app.plant.catalog import RO_CATALOG
from app.plant.plc_map import standard_map

PV = "feed_temperature_c"
TAGS = [t.name for t in RO_CATALOG]
ADDRESSES = standard_map(RO_CATALOG)
NS = "urn:intelwatt:plant"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BarePlc:
    """asyncua + pymodbus servers with the RO standard map, on their own loop thread."""

    def __init__(self) -> None:
        self.thread = LoopThread("bench-plc")
        self.opcua_port = _free_port()
        self.modbus_port = _free_port()
        self.opcua: Server | None = None
        self.modbus: ModbusTcpServer | None = None
        self.nodes: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.opcua_port}/bench/"

    def start(self) -> None:
        self.thread.start()
        self.thread.run(self._start_opcua(), timeout=30)
        self.thread.run(self._start_modbus(), timeout=30)

    async def _start_opcua(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NS)
        plant = await server.nodes.objects.add_object(
            ua.NodeId.from_string(f"ns={idx};s=Plant"), "Plant"
        )
        for tdef in RO_CATALOG:
            node_id = ua.NodeId.from_string(f"ns={idx};{ADDRESSES[tdef.name].node_id}")
            node = await plant.add_variable(
                node_id, tdef.name, (tdef.low + tdef.high) / 2, ua.VariantType.Double
            )
            if tdef.writable:
                await node.set_writable()
            self.nodes[tdef.name] = node
        await server.start()
        self.opcua = server

    async def _start_modbus(self) -> None:
        def block(table: str) -> list[float]:
            return [
                (RO_CATALOG.tag(a.tag).low + RO_CATALOG.tag(a.tag).high) / 2
                for a in sorted(ADDRESSES.values(), key=lambda a: a.register)
                if a.table == table
            ]

        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        device = SimDevice(
            id=1,
            simdata=(
                bits,
                list(bits),
                [SimData(0, values=block("holding"), datatype=DataType.FLOAT32)],
                [SimData(0, values=block("input"), datatype=DataType.FLOAT32)],
            ),
        )
        self.modbus = ModbusTcpServer(device, address=("127.0.0.1", self.modbus_port))
        await self.modbus.serve_forever(background=True)

    def set_value(self, tag: str, value: float) -> float:
        """Change a value on both servers; returns ``perf_counter`` just before the change."""

        async def _set() -> float:
            t = time.perf_counter()
            await self.nodes[tag].write_value(ua.Variant(value, ua.VariantType.Double))
            assert self.modbus is not None
            regs = list(struct.unpack(">HH", struct.pack(">f", value)))
            await self.modbus.async_setValues(1, 4, ADDRESSES[tag].register, regs)
            return t

        return self.thread.run(_set(), timeout=5)

    def stop_opcua(self) -> None:
        assert self.opcua is not None
        self.thread.run(self.opcua.stop(), timeout=30)
        self.opcua = None

    def stop(self) -> None:
        if self.opcua is not None:
            self.thread.run(self.opcua.stop(), timeout=30)
        if self.modbus is not None:
            self.thread.run(self.modbus.shutdown(), timeout=30)  # type: ignore[no-untyped-call]
        self.thread.stop()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _read_figures(driver: PlcDriver, n: int = 400, seconds: float = 2.0) -> dict[str, float]:
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        sample = (await driver.read([PV]))[0]
        latencies.append((time.perf_counter() - t0) * 1e3)
        assert sample.quality is Quality.GOOD, sample
    values = 0
    t_end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        values += len(await driver.read(TAGS))
    return {
        "read_p50_ms": statistics.median(latencies),
        "read_p99_ms": _pct(latencies, 99),
        "batch_values_per_s": values / (time.perf_counter() - t0),
    }


async def _change_latency(
    plc: BarePlc,
    driver: PlcDriver,
    subscribe: Callable[[Callable[[Sample], None]], Awaitable[Any]],
    n: int,
) -> dict[str, float]:
    snapshot = SnapshotService(stale_after_s=60.0)
    arrived: dict[float, float] = {}

    def on_sample(sample: Sample) -> None:
        snapshot.update(sample)
        if sample.tag == PV and sample.value not in arrived:
            arrived[sample.value] = time.perf_counter()

    handle = await subscribe(on_sample)
    await asyncio.sleep(0.5)
    delays = []
    loop = asyncio.get_running_loop()
    for i in range(n):
        value = 20.0 + i * 0.001 + 0.0005  # exactly representable enough in float32 for equality
        value = struct.unpack(">f", struct.pack(">f", value))[0]
        t_change = await loop.run_in_executor(None, plc.set_value, PV, value)
        deadline = time.perf_counter() + 2.0
        # Busy-wait on purpose: an Event set from the callback would add its own wake-up latency.
        while value not in arrived and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.0005)
        if value in arrived:
            delays.append((arrived[value] - t_change) * 1e3)
        await asyncio.sleep(0.02)
    await handle.close()
    lost = n - len(delays)
    return {
        "change_to_snapshot_p50_ms": statistics.median(delays),
        "change_to_snapshot_p99_ms": _pct(delays, 99),
        "changes_lost_count": float(lost),
    }


async def _reconnect_opcua(plc: BarePlc, driver: OpcUaDriver) -> float:
    plc.stop_opcua()
    while driver.state is ConnectionState.CONNECTED:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: plc.thread.run(plc._start_opcua(), timeout=30)
    )
    t_back = time.perf_counter()
    while (await driver.read([PV]))[0].quality is not Quality.GOOD:
        await asyncio.sleep(0.01)
        if time.perf_counter() - t_back > 30:
            return float("nan")
    return (time.perf_counter() - t_back) * 1e3


async def main_async() -> dict[str, Any]:
    plc = BarePlc()
    plc.start()
    figures: dict[str, Any] = {"bench": "plc_io", "server": "bare"}
    try:
        opc = OpcUaDriver(
            OpcUaConnection(
                endpoint=plc.endpoint,
                namespace_uri=NS,
                publishing_interval_ms=10,
                reconnect_max_delay_s=1.0,
                timeout_s=2.0,
            ),
            RO_CATALOG.tags,
            ADDRESSES,
        )
        await opc.connect()
        mb = ModbusDriver(
            ModbusConnection(
                host="127.0.0.1", port=plc.modbus_port, timeout_s=1.0, reconnect_delay_max_s=1.0
            ),
            RO_CATALOG.tags,
            ADDRESSES,
        )
        await mb.connect()
        for name, drv in (("opcua", opc), ("modbus", mb)):
            for key, value in (await _read_figures(drv)).items():
                figures[f"{name}_{key}"] = value
        opc_lat = await _change_latency(plc, opc, lambda cb: opc.subscribe([PV], cb), 200)
        mb_lat = await _change_latency(
            plc, mb, lambda cb: mb.subscribe([PV], cb, period_s=0.005), 200
        )
        for key, value in opc_lat.items():
            figures[f"opcua_{key}"] = value
        for key, value in mb_lat.items():
            figures[f"modbus_{key}"] = value
        figures["opcua_reconnect_after_restart_ms"] = await _reconnect_opcua(plc, opc)
        await opc.close()
        await mb.close()
    finally:
        plc.stop()
    return figures


def main() -> None:
    """Run the benchmark, print a table and the JSON line."""
    logging.basicConfig(level=logging.CRITICAL)
    figures = asyncio.run(main_async())
    print(f"{'figure':45s} value")
    for key, value in figures.items():
        if key != "bench":
            print(f"{key:45s} {value:.3f}" if isinstance(value, float) else f"{key:45s} {value}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
