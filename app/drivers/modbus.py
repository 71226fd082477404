"""Modbus TCP driver: pymodbus async client, batched poll groups, codecs, bounded reconnect.

The connection state follows request outcomes, not ``client.connected`` (which stays True after the
server died, library-notes §2.3). pymodbus reconnects by itself with a backoff bounded by the site's
``reconnect_delay_max_s``. Modbus carries no timestamps: a sample's source time is its arrival.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from app.config import ModbusConnection
from app.domain import ConnectionState, Quality, Sample, Setpoint, TagId, utc_now
from app.drivers.base import (
    ConnectionLostError,
    SampleCallback,
    StateCallback,
    StateTracker,
    TagMap,
    TagWriteResult,
    WriteResult,
    WriteStatus,
    failed_samples,
    readback_matches,
    value_quality,
)
from app.drivers.codecs import CodecError, decode, encode, resolution
from app.plant.catalog import TagDef
from app.plant.plc_map import TagAddress

log = logging.getLogger(__name__)

MAX_REGISTERS_PER_READ = 125
"""Modbus limit for one read of holding or input registers."""

_TRANSPORT_ERRORS = (ModbusException, ConnectionError, OSError, TimeoutError, asyncio.TimeoutError)


class _ModbusRefusal(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        try:
            name = ExcCodes(code).name
        except ValueError:
            name = f"exception code {code}"
        super().__init__(name)


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Contiguous registers of one table read in one request.

    Attributes:
        table: ``input`` or ``holding``.
        start: First register.
        count: Number of registers.
        tags: Tags covered, in register order.
    """

    table: str
    start: int
    count: int
    tags: tuple[TagId, ...]


def poll_groups(
    addresses: Sequence[TagAddress], max_count: int = MAX_REGISTERS_PER_READ
) -> list[PollGroup]:
    """Batch tags into requests: registers that follow each other without a gap share one read."""
    groups: list[PollGroup] = []
    for table in ("input", "holding"):
        ordered = sorted((a for a in addresses if a.table == table), key=lambda a: a.register)
        start = end = -1
        tags: list[TagId] = []
        for address in ordered:
            a_end = address.register + address.width
            if tags and address.register == end and a_end - start <= max_count:
                tags.append(address.tag)
                end = a_end
                continue
            if tags:
                groups.append(PollGroup(table, start, end - start, tuple(tags)))
            start, end, tags = address.register, a_end, [address.tag]
        if tags:
            groups.append(PollGroup(table, start, end - start, tuple(tags)))
    return groups


class _PollSubscription:
    """A periodic poll of some tags; implements ``SubscriptionHandle``."""

    def __init__(
        self, driver: ModbusDriver, tags: tuple[TagId, ...], on_sample: SampleCallback
    ) -> None:
        self._driver = driver
        self._tags = tags
        self.on_sample = on_sample
        self.task: asyncio.Task[None] | None = None

    @property
    def tags(self) -> tuple[TagId, ...]:
        return self._tags

    async def close(self) -> None:
        await self._driver._drop_subscription(self)


class ModbusDriver:
    """PLC driver for a Modbus TCP server (see ``app.drivers.base.PlcDriver``).

    Args:
        connection: Host, port, device id, timeouts and poll period from the site file.
        definitions: Catalogue definitions of the served tags (ranges for quality checks).
        addresses: Register, table and encoding of every tag.
        reconnect_delay_s: First reconnect delay; doubles up to ``reconnect_delay_max_s``.
    """

    def __init__(
        self,
        connection: ModbusConnection,
        definitions: Sequence[TagDef],
        addresses: Mapping[TagId, TagAddress],
        *,
        reconnect_delay_s: float = 0.1,
        name: str = "modbus",
    ) -> None:
        self.connection = connection
        self.tag_map = TagMap(definitions, addresses)
        self._reconnect_delay_s = reconnect_delay_s
        self._name = name
        self._state = StateTracker(name)
        self._client: AsyncModbusTcpClient | None = None
        self._config_errors: dict[TagId, str] = {}
        self._subscriptions: list[_PollSubscription] = []

    @property
    def state(self) -> ConnectionState:
        """Current connection state."""
        return self._state.state

    def add_state_listener(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(state, detail)`` on every state change; returns an unsubscribe function."""
        return self._state.add_listener(callback)

    @property
    def config_errors(self) -> dict[TagId, str]:
        """Tags whose register the device refused as an illegal address, with the reason."""
        return dict(self._config_errors)

    @property
    def endpoint(self) -> str:
        """``host:port/device_id`` for log lines."""
        c = self.connection
        return f"{c.host}:{c.port}/{c.device_id}"

    # --- connect / close --------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the TCP connection and read every tag once to check the register map.

        Tags whose registers the device does not have are logged and carry CONFIG_ERROR quality;
        they do not fail the connection.

        Raises:
            ConnectionLostError: The device cannot be reached (state DISCONNECTED).
        """
        if self._client is not None:
            await self.close()
        self._state.set(ConnectionState.CONNECTING, self.endpoint)
        self._config_errors.clear()
        client = AsyncModbusTcpClient(
            self.connection.host,
            port=self.connection.port,
            timeout=self.connection.timeout_s,
            retries=0,
            reconnect_delay=self._reconnect_delay_s,
            reconnect_delay_max=self.connection.reconnect_delay_max_s,
            name=self._name,
        )
        try:
            connected = await asyncio.wait_for(client.connect(), self.connection.timeout_s * 2)
        except _TRANSPORT_ERRORS as exc:
            connected = False
            log.debug("%s: connect raised %r", self._name, exc)
        if not connected:
            client.close()
            detail = f"cannot connect to {self.endpoint}"
            self._state.set(ConnectionState.DISCONNECTED, detail)
            raise ConnectionLostError(f"{self._name}: {detail}")
        self._client = client
        samples = await self.read(list(self.tag_map))
        if all(s.quality is Quality.COMM_FAILURE for s in samples):
            self._client = None
            client.close()
            detail = f"{self.endpoint} accepted the connection but answered no request"
            self._state.set(ConnectionState.DISCONNECTED, detail)
            raise ConnectionLostError(f"{self._name}: {detail}")

    async def close(self) -> None:
        """Stop every poll group, close the connection and enter CLOSED."""
        for handle in tuple(self._subscriptions):
            await self._drop_subscription(handle)
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._state.set(ConnectionState.CLOSED)

    # --- requests ---------------------------------------------------------------------------

    async def _request(
        self, coro_factory: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        # One wait_for bounds the whole request: pymodbus may also try to reconnect inside it.
        response = await asyncio.wait_for(coro_factory(client), self.connection.timeout_s + 0.5)
        if isinstance(response, ExceptionResponse) or response.isError():
            raise _ModbusRefusal(int(getattr(response, "exception_code", 0)))
        return response

    def _request_ok(self) -> None:
        self._state.set(ConnectionState.CONNECTED, self.endpoint)

    def _request_failed(self, exc: BaseException) -> None:
        if self._state.state in (ConnectionState.CONNECTED, ConnectionState.CONNECTING):
            log.warning("%s: request failed: %s: %s", self._name, type(exc).__name__, exc)
            self._state.set(ConnectionState.RECONNECTING, f"{type(exc).__name__}: {exc}")

    async def _read_registers(self, table: str, start: int, count: int) -> list[int]:
        device_id = self.connection.device_id
        response: ModbusPDU
        if table == "input":
            response = await self._request(
                lambda c: c.read_input_registers(start, count=count, device_id=device_id)
            )
        else:
            response = await self._request(
                lambda c: c.read_holding_registers(start, count=count, device_id=device_id)
            )
        registers = list(response.registers)
        if len(registers) < count:
            raise _ModbusRefusal(ExcCodes.ILLEGAL_ADDRESS)
        return registers[:count]

    # --- read -------------------------------------------------------------------------------

    async def read(self, tags: Sequence[TagId]) -> list[Sample]:
        """Read ``tags`` with as few requests as the register layout allows.

        Raises:
            DriverConfigError: A tag name is not in the tag map.
        """
        self.tag_map.check(tags)
        if self._client is None:
            return failed_samples(tags, Quality.COMM_FAILURE, time.monotonic())
        by_tag: dict[TagId, Sample] = {}
        known_bad = [t for t in tags if t in self._config_errors]
        for tag in known_bad:
            by_tag[tag] = Sample(tag, math.nan, Quality.CONFIG_ERROR, utc_now(), time.monotonic())
        addresses = [
            self.tag_map.address(t) for t in dict.fromkeys(tags) if t not in self._config_errors
        ]
        for group in poll_groups(addresses):
            for sample in await self._read_group(group):
                by_tag[sample.tag] = sample
        return [by_tag[t] for t in tags]

    async def _read_group(self, group: PollGroup) -> list[Sample]:
        try:
            registers = await self._read_registers(group.table, group.start, group.count)
        except _ModbusRefusal as exc:
            self._request_ok()
            if exc.code == ExcCodes.ILLEGAL_ADDRESS and len(group.tags) > 1:
                return await self._read_one_by_one(group)
            return [self._refused_sample(t, exc) for t in group.tags]
        except _TRANSPORT_ERRORS as exc:
            self._request_failed(exc)
            return failed_samples(group.tags, Quality.COMM_FAILURE, time.monotonic())
        self._request_ok()
        received = time.monotonic()
        samples = []
        for tag in group.tags:
            address = self.tag_map.address(tag)
            offset = address.register - group.start
            samples.append(self._decode(tag, registers[offset : offset + address.width], received))
        return samples

    async def _read_one_by_one(self, group: PollGroup) -> list[Sample]:
        samples = []
        for tag in group.tags:
            address = self.tag_map.address(tag)
            single = PollGroup(group.table, address.register, address.width, (tag,))
            samples.extend(await self._read_group(single))
        return samples

    def _refused_sample(self, tag: TagId, exc: _ModbusRefusal) -> Sample:
        if exc.code == ExcCodes.ILLEGAL_ADDRESS:
            address = self.tag_map.address(tag)
            reason = (
                f"{address.table} register {address.register} (x{address.width}) does not exist"
            )
            if tag not in self._config_errors:
                log.error(
                    "%s: tag %s: device %s answers ILLEGAL_ADDRESS: %s; its samples carry "
                    "CONFIG_ERROR quality",
                    self._name,
                    tag,
                    self.endpoint,
                    reason,
                )
            self._config_errors[tag] = reason
            return Sample(tag, math.nan, Quality.CONFIG_ERROR, utc_now(), time.monotonic())
        log.warning("%s: tag %s: device answered %s", self._name, tag, exc)
        return Sample(tag, math.nan, Quality.BAD, utc_now(), time.monotonic())

    def _decode(self, tag: TagId, registers: list[int], received: float) -> Sample:
        address = self.tag_map.address(tag)
        source_ts = utc_now()
        try:
            value = decode(registers, address)
        except CodecError as exc:
            log.error("%s: %s", self._name, exc)
            return Sample(tag, math.nan, Quality.CONFIG_ERROR, source_ts, received)
        return Sample(
            tag, value, value_quality(self.tag_map.definition(tag), value), source_ts, received
        )

    # --- subscribe (poll groups) --------------------------------------------------------------

    async def subscribe(
        self, tags: Sequence[TagId], on_sample: SampleCallback, *, period_s: float | None = None
    ) -> _PollSubscription:
        """Poll ``tags`` every ``period_s`` (default: the site's ``poll_period_s``).

        Every poll delivers one sample per tag, COMM_FAILURE while the device is unreachable.

        Raises:
            DriverConfigError: A tag name is not in the tag map.
        """
        self.tag_map.check(tags)
        period = self.connection.poll_period_s if period_s is None else period_s
        if period <= 0:
            raise ValueError(f"poll period must be positive, got {period!r}")
        handle = _PollSubscription(self, tuple(tags), on_sample)
        handle.task = asyncio.get_running_loop().create_task(
            self._poll(handle, period), name=f"{self._name}-poll"
        )
        self._subscriptions.append(handle)
        return handle

    async def _poll(self, handle: _PollSubscription, period: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for sample in await self.read(handle.tags):
                try:
                    handle.on_sample(sample)
                except Exception:
                    log.exception("sample callback %r failed on %s", handle.on_sample, sample.tag)
            next_at += period
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (slow device): skip the missed polls, keep the cadence
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)

    async def _drop_subscription(self, handle: _PollSubscription) -> None:
        if handle in self._subscriptions:
            self._subscriptions.remove(handle)
        if handle.task is not None:
            handle.task.cancel()
            await asyncio.gather(handle.task, return_exceptions=True)
            handle.task = None

    # --- write ------------------------------------------------------------------------------

    async def write(self, setpoints: Sequence[Setpoint], *, verify: bool = True) -> WriteResult:
        """Write each setpoint with one ``write_registers`` request, then read all back.

        ILLEGAL_DATA_VALUE (the PLC's limit check) and other exception responses become REFUSED
        with the exception name as the reason; ILLEGAL_ADDRESS becomes CONFIG_ERROR.
        """
        results: list[TagWriteResult | None] = [self.tag_map.write_problem(sp) for sp in setpoints]
        accepted: list[int] = []
        for i, sp in enumerate(setpoints):
            if results[i] is not None:
                continue
            results[i] = await self._write_one(sp)
            if results[i] is None:
                accepted.append(i)
        if accepted and verify:
            readback = await self.read([setpoints[i].tag for i in accepted])
            for i, sample in zip(accepted, readback, strict=True):
                results[i] = self._verify(setpoints[i], sample)
        else:
            for i in accepted:
                results[i] = TagWriteResult(
                    setpoints[i].tag, setpoints[i].value, WriteStatus.WRITTEN
                )
        return WriteResult(tuple(r for r in results if r is not None))

    async def _write_one(self, sp: Setpoint) -> TagWriteResult | None:
        address = self.tag_map.address(sp.tag)
        try:
            registers = encode(sp.value, address)
        except CodecError as exc:
            return TagWriteResult(sp.tag, sp.value, WriteStatus.REFUSED, reason=f"not sent: {exc}")
        if self._client is None:
            return TagWriteResult(
                sp.tag,
                sp.value,
                WriteStatus.COMM_FAILURE,
                reason=f"not written: connection {self.state}",
            )
        device_id = self.connection.device_id
        try:
            await self._request(
                lambda c: c.write_registers(address.register, registers, device_id=device_id)
            )
        except _ModbusRefusal as exc:
            self._request_ok()
            log.warning("%s: write %s=%r refused by the PLC: %s", self._name, sp.tag, sp.value, exc)
            status = (
                WriteStatus.CONFIG_ERROR
                if exc.code == ExcCodes.ILLEGAL_ADDRESS
                else WriteStatus.REFUSED
            )
            return TagWriteResult(sp.tag, sp.value, status, reason=f"PLC refused: {exc}")
        except _TRANSPORT_ERRORS as exc:
            self._request_failed(exc)
            return TagWriteResult(
                sp.tag,
                sp.value,
                WriteStatus.COMM_FAILURE,
                reason=f"write request failed: {type(exc).__name__}: {exc}",
            )
        self._request_ok()
        return None

    def _verify(self, sp: Setpoint, sample: Sample) -> TagWriteResult:
        if sample.quality is Quality.COMM_FAILURE:
            return TagWriteResult(
                sp.tag, sp.value, WriteStatus.COMM_FAILURE, reason="readback failed"
            )
        tolerance = resolution(self.tag_map.address(sp.tag), sp.value)
        if readback_matches(sp.value, sample.value, tolerance):
            return TagWriteResult(sp.tag, sp.value, WriteStatus.CONFIRMED, readback=sample.value)
        log.warning("%s: write %s=%r reads back %r", self._name, sp.tag, sp.value, sample.value)
        return TagWriteResult(
            sp.tag,
            sp.value,
            WriteStatus.MISMATCH,
            readback=sample.value,
            reason=f"PLC reads back {sample.value!r} ({sample.quality})",
        )


__all__ = ["MAX_REGISTERS_PER_READ", "ModbusDriver", "PollGroup", "poll_groups"]
