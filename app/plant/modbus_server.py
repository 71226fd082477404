"""The simulated PLC's Modbus TCP front end (pymodbus 3.16 ``SimDevice``).

Register map: ``app.plant.plc_map.standard_map`` — read-only tags in input registers, writable tags
in holding registers, FLOAT32 big-endian (ABCD), two registers per tag, catalogue order from 0.
Registers are filled from the PLC's image when a client reads them (the device ``action``), so a
read always returns the latest scan. A client write is decoded per tag and checked by the PLC first:
a value outside the PLC limits (or not finite) is refused with exception code 3 (illegal data
value), a write in local mode or under write inhibit with code 4 (server device failure); nothing
is written then. Modbus has no quality: a tag with a bad-status fault is served as NaN.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from app.plant.plc import PlcCore, Refusal, WriteRefused
from app.plant.plc_map import TagAddress, standard_map

log = logging.getLogger(__name__)

_READ_CODES = {3: "holding", 4: "input"}
_WRITE_CODES = {6: "holding", 16: "holding", 23: "holding"}


def encode_float32(value: float) -> tuple[int, int]:
    """Two big-endian registers (ABCD) for ``value``; values beyond float32 become ±inf."""
    try:
        raw = struct.pack(">f", value)
    except OverflowError:
        raw = struct.pack(">f", math.copysign(math.inf, value))
    hi, lo = struct.unpack(">HH", raw)
    return hi, lo


def decode_float32(hi: int, lo: int) -> float:
    """The float in two big-endian registers (ABCD)."""
    value: float = struct.unpack(">f", struct.pack(">HH", hi, lo))[0]
    return value


class ModbusFrontEnd:
    """A pymodbus TCP server serving a ``PlcCore``'s tags.

    Args:
        core: The PLC.
        host: Interface to listen on.
        port: TCP port (a concrete port: the caller picks free ports).
        device_id: Modbus unit id the PLC answers to.
        clock: Monotonic wall clock used for write timestamps in the PLC.
    """

    def __init__(
        self,
        core: PlcCore,
        host: str,
        port: int,
        device_id: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= device_id <= 247:
            raise ValueError(f"Modbus device id must be 1-247, got {device_id}")
        self.core = core
        self.host = host
        self.port = port
        self.device_id = device_id
        self._clock = clock
        self.addresses = standard_map(core.catalog)
        self._by_table: dict[str, list[TagAddress]] = {"input": [], "holding": []}
        for address in self.addresses.values():
            self._by_table[address.table].append(address)
        self._size = {
            table: max((a.register + a.width for a in tags), default=0)
            for table, tags in self._by_table.items()
        }
        self._server: ModbusTcpServer | None = None

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    def _device(self) -> SimDevice:
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.device_id,
            simdata=(
                list(bits),
                list(bits),
                [SimData(0, count=self._size["holding"], values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=self._size["input"], values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )

    async def start(self) -> None:
        """Listen on ``host:port``."""
        if self._server is not None:
            return
        server = ModbusTcpServer(self._device(), address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        log.info(
            "Modbus TCP server listening on %s:%d (device id %d)",
            self.host,
            self.port,
            self.device_id,
        )

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()  # type: ignore[no-untyped-call]
            log.info("Modbus TCP server on %s:%d stopped", self.host, self.port)

    def drop_connections(self) -> int:
        """Close every client connection abruptly; returns how many were closed."""
        if self._server is None:
            return 0
        connections = list(self._server.active_connections.values())
        for conn in connections:
            transport = conn.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        log.warning("Modbus: dropped %d client connection(s)", len(connections))
        return len(connections)

    def table_image(self, table: str) -> list[int]:
        """The registers of ``table`` (``input`` or ``holding``) as served now."""
        served = self.core.served()
        regs = [0] * self._size[table]
        for address in self._by_table[table]:
            value, status = served[address.tag]
            hi, lo = encode_float32(math.nan if status is not None else value)
            regs[address.register] = hi
            regs[address.register + 1] = lo
        return regs

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        try:
            delay = self.core.faults.delay("modbus")
            if delay > 0:
                await asyncio.sleep(delay)
            if set_values is None:
                table = _READ_CODES.get(function_code)
                if table is not None:
                    image = self.table_image(table)
                    lo, hi = address - start_address, address - start_address + count
                    registers[lo:hi] = image[address : address + count]
                return None
            if function_code not in _WRITE_CODES:
                return ExcCodes.ILLEGAL_FUNCTION
            return self._client_write(address, [int(v) for v in set_values])
        except Exception:
            log.exception(
                "Modbus request fc=%d address=%d count=%d failed", function_code, address, count
            )
            return ExcCodes.DEVICE_FAILURE

    def _client_write(self, address: int, values: list[int]) -> ExcCodes | None:
        image = self.table_image("holding")
        new = list(image)
        new[address : address + len(values)] = values
        end = address + len(values)
        touched = [
            a
            for a in self._by_table["holding"]
            if a.register < end and address < a.register + a.width
        ]
        writes = [(a.tag, decode_float32(new[a.register], new[a.register + 1])) for a in touched]
        try:
            for tag, value in writes:
                self.core.check_write(tag, value)
            now = self._clock()
            for tag, value in writes:
                self.core.write(tag, value, now)
        except WriteRefused as exc:
            log.warning("Modbus client: %s", exc)
            if exc.reason in (Refusal.LOCAL_MODE, Refusal.WRITE_INHIBIT):
                return ExcCodes.DEVICE_FAILURE
            return ExcCodes.ILLEGAL_VALUE
        return None
