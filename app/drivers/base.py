"""The PLC driver contract shared by the OPC UA, Modbus and fake drivers.

A driver lives on the PLC I/O loop thread (``app.concurrency.LoopThread``) and is only called from
there. It never raises for a bad value: every problem with one tag becomes a ``Sample.quality`` or a
``TagWriteResult``; connection problems also change ``state``. Exceptions (``DriverError``
subclasses) are reserved for ``connect`` and for caller mistakes such as unknown tag names.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from app.domain import ConnectionState, Quality, Sample, Setpoint, TagId, utc_now
from app.plant.catalog import CONSOLE_HEARTBEAT, TagDef
from app.plant.plc_map import TagAddress

log = logging.getLogger(__name__)

SampleCallback = Callable[[Sample], None]
"""Receives every sample a subscription produces, on the I/O loop thread."""
StateCallback = Callable[[ConnectionState, str], None]
"""Receives ``(new_state, detail)`` on every connection state change, on the I/O loop thread."""


class DriverError(Exception):
    """Base class of every error a PLC driver raises."""


class ConnectionLostError(DriverError):
    """The PLC cannot be reached, or the connection dropped."""


class AuthFailedError(DriverError):
    """The PLC refused the credentials or the certificate; retrying will not help."""


class DriverConfigError(DriverError):
    """The configuration does not match the PLC (unknown tag, node id, register or namespace)."""


class WriteRefusedError(DriverError):
    """The PLC refused a write (outside its limits, write inhibit, not writable)."""


class DriverTimeoutError(DriverError):
    """A request got no answer within its timeout."""


class WriteStatus(enum.StrEnum):
    """Outcome of writing one setpoint."""

    CONFIRMED = "confirmed"
    """Written and the readback matches within the tolerance."""
    WRITTEN = "written"
    """Accepted by the PLC and not read back (``verify=False``, e.g. the heartbeat)."""
    REFUSED = "refused"
    """The PLC refused the value (its reason is in ``TagWriteResult.reason``)."""
    MISMATCH = "mismatch"
    """The PLC accepted the write but reads back a different value."""
    COMM_FAILURE = "comm_failure"
    """The request or the readback failed: the value on the PLC is unknown."""
    CONFIG_ERROR = "config_error"
    """The tag is unknown, not writable, or its address is wrong."""


@dataclass(frozen=True, slots=True)
class TagWriteResult:
    """The outcome of writing one setpoint.

    Attributes:
        tag: Setpoint tag.
        requested: Value the caller asked for.
        status: What happened.
        readback: Value read back from the PLC after the write (NaN if not read).
        reason: Human-readable reason for anything but CONFIRMED, e.g. the PLC's status code.
    """

    tag: TagId
    requested: float
    status: WriteStatus
    readback: float = math.nan
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True if the PLC accepted the value (and, when verified, reads it back)."""
        return self.status in (WriteStatus.CONFIRMED, WriteStatus.WRITTEN)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one batch write, one entry per requested setpoint, in request order."""

    results: tuple[TagWriteResult, ...]

    @property
    def ok(self) -> bool:
        """True if every setpoint was confirmed."""
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> tuple[TagWriteResult, ...]:
        """The entries that were not confirmed."""
        return tuple(r for r in self.results if not r.ok)

    def for_tag(self, tag: TagId) -> TagWriteResult:
        """The entry for ``tag``; raises ``KeyError`` naming the tag if it was not written."""
        for result in self.results:
            if result.tag == tag:
                return result
        raise KeyError(f"tag {tag!r} was not part of this write")


@runtime_checkable
class SubscriptionHandle(Protocol):
    """A running subscription or poll group; ``close`` stops it."""

    @property
    def tags(self) -> tuple[TagId, ...]:
        """Tags this subscription delivers."""
        ...

    async def close(self) -> None:
        """Stop delivering samples and release server resources."""
        ...


@runtime_checkable
class PlcDriver(Protocol):
    """The async contract every PLC driver implements (call it from the I/O loop only)."""

    @property
    def state(self) -> ConnectionState:
        """Current connection state."""
        ...

    def add_state_listener(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(state, detail)`` on every state change; returns an unsubscribe function."""
        ...

    async def connect(self) -> None:
        """Open the connection and check the tag map against the PLC.

        Raises:
            AuthFailedError: Credentials or certificates refused (state AUTH_FAILED).
            DriverConfigError: Endpoint or namespace wrong (state CONFIG_ERROR).
            ConnectionLostError: The PLC cannot be reached (state DISCONNECTED).
        """
        ...

    async def close(self) -> None:
        """Close the connection and stop every subscription (state CLOSED)."""
        ...

    async def read(self, tags: Sequence[TagId]) -> list[Sample]:
        """Read ``tags`` in one batch; one sample per tag, in order, whatever happens.

        Raises:
            DriverConfigError: A tag name is not in the driver's tag map.
        """
        ...

    async def subscribe(
        self, tags: Sequence[TagId], on_sample: SampleCallback
    ) -> SubscriptionHandle:
        """Deliver samples of ``tags`` to ``on_sample`` as they change (OPC UA) or are polled.

        Raises:
            DriverConfigError: A tag name is not in the driver's tag map.
        """
        ...

    async def write(self, setpoints: Sequence[Setpoint], *, verify: bool = True) -> WriteResult:
        """Write setpoints, then (if ``verify``) read them back and compare within a tolerance.

        Never raises for a refused or mismatched value: the result names the tag and the reason.
        """
        ...


class StateTracker:
    """Holds a driver's connection state and notifies listeners on change."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._state = ConnectionState.DISCONNECTED
        self._detail = ""
        self._listeners: list[StateCallback] = []

    @property
    def state(self) -> ConnectionState:
        """Current state."""
        return self._state

    @property
    def detail(self) -> str:
        """Reason given with the last state change."""
        return self._detail

    def add_listener(self, callback: StateCallback) -> Callable[[], None]:
        """Register ``callback``; returns a function that removes it."""
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def set(self, state: ConnectionState, detail: str = "") -> None:
        """Change state; listeners run only if the state actually changed."""
        if state is self._state:
            return
        old, self._state, self._detail = self._state, state, detail
        level = logging.INFO if state is ConnectionState.CONNECTED else logging.WARNING
        if state in (ConnectionState.CLOSED, ConnectionState.CONNECTING):
            level = logging.INFO
        log.log(level, "%s: connection %s -> %s %s", self._name, old, state, detail)
        for callback in tuple(self._listeners):
            try:
                callback(state, detail)
            except Exception:
                log.exception("%s: state listener %r failed", self._name, callback)


def value_quality(tag: TagDef, value: float) -> Quality:
    """Quality of a value that the PLC reported as good: NaN/inf or outside the tag's range."""
    if not math.isfinite(value):
        return Quality.NOT_A_NUMBER
    if not tag.low <= value <= tag.high:
        return Quality.OUT_OF_RANGE
    return Quality.GOOD


def failed_samples(tags: Sequence[TagId], quality: Quality, received_ts: float) -> list[Sample]:
    """Samples carrying no value (NaN) for ``tags``, e.g. after a failed request."""
    now = utc_now()
    return [Sample(tag, math.nan, quality, now, received_ts) for tag in tags]


def readback_matches(requested: float, readback: float, tolerance: float) -> bool:
    """True if ``readback`` equals ``requested`` within ``tolerance`` (NaN never matches)."""
    return math.isfinite(readback) and abs(readback - requested) <= tolerance


class HeartbeatWriter:
    """Writes an incrementing ``console_heartbeat`` counter so the PLC's watchdog stays calm.

    The counter wraps from 65535 to 0. Write failures are logged and retried at the next period;
    they never stop the writer. ``pause`` stops the counter without stopping the task, which is how
    tests (and a deliberate hand-back) let the PLC watchdog trip.
    """

    def __init__(
        self,
        driver: PlcDriver,
        period_s: float,
        tag: TagId = CONSOLE_HEARTBEAT,
        start: int = 0,
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"heartbeat period must be positive, got {period_s!r}")
        self._driver = driver
        self._period_s = period_s
        self._tag = tag
        self._counter = start % 65536
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self.last_result: TagWriteResult | None = None

    @property
    def counter(self) -> int:
        """The last value written (or about to be written)."""
        return self._counter

    @property
    def running(self) -> bool:
        """True while the writer task runs (also while paused)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start writing on the running loop."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    def pause(self) -> None:
        """Stop changing the counter (the PLC watchdog will trip after its timeout)."""
        self._paused = True

    def resume(self) -> None:
        """Resume counting."""
        self._paused = False

    async def stop(self) -> None:
        """Stop the writer task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def beat(self) -> TagWriteResult:
        """Increment the counter and write it once."""
        self._counter = (self._counter + 1) % 65536
        result = await self._driver.write([Setpoint(self._tag, float(self._counter))], verify=False)
        self.last_result = result.results[0]
        if not self.last_result.ok:
            log.warning(
                "heartbeat write failed: %s %s", self.last_result.status, self.last_result.reason
            )
        return self.last_result

    async def _run(self) -> None:
        while True:
            if not self._paused:
                try:
                    await self.beat()
                except DriverError as exc:
                    log.warning("heartbeat write failed: %s", exc)
            await asyncio.sleep(self._period_s)


__all__ = [
    "AuthFailedError",
    "ConnectionLostError",
    "DriverConfigError",
    "DriverError",
    "DriverTimeoutError",
    "HeartbeatWriter",
    "PlcDriver",
    "SampleCallback",
    "StateCallback",
    "StateTracker",
    "SubscriptionHandle",
    "TagMap",
    "TagWriteResult",
    "WriteRefusedError",
    "WriteResult",
    "WriteStatus",
    "failed_samples",
    "readback_matches",
    "value_quality",
]


class TagMap:
    """The tags a driver serves: catalogue definitions joined with their PLC addresses."""

    def __init__(
        self, definitions: Sequence[TagDef], addresses: Mapping[TagId, TagAddress]
    ) -> None:
        by_name = {d.name: d for d in definitions}
        missing = sorted(set(addresses) - set(by_name))
        if missing:
            raise DriverConfigError(f"addresses name tags missing from the catalogue: {missing}")
        self.definitions: dict[TagId, TagDef] = {n: by_name[n] for n in addresses}
        self.addresses: dict[TagId, TagAddress] = dict(addresses)

    def __contains__(self, tag: object) -> bool:
        return tag in self.addresses

    def __iter__(self) -> Iterator[TagId]:
        return iter(self.addresses)

    def __len__(self) -> int:
        return len(self.addresses)

    def check(self, tags: Sequence[TagId]) -> None:
        """Raise ``DriverConfigError`` naming every tag in ``tags`` that this map lacks."""
        unknown = [t for t in tags if t not in self.addresses]
        if unknown:
            raise DriverConfigError(f"unknown tag(s) {unknown}; the tag map has {sorted(self)}")

    def definition(self, tag: TagId) -> TagDef:
        """Catalogue definition of ``tag``."""
        return self.definitions[tag]

    def address(self, tag: TagId) -> TagAddress:
        """PLC address of ``tag``."""
        return self.addresses[tag]

    def write_problem(self, setpoint: Setpoint) -> TagWriteResult | None:
        """A CONFIG_ERROR/REFUSED result if ``setpoint`` must not be sent at all, else ``None``."""
        if setpoint.tag not in self.addresses:
            return TagWriteResult(
                setpoint.tag, setpoint.value, WriteStatus.CONFIG_ERROR, reason="unknown tag"
            )
        if not self.addresses[setpoint.tag].writable:
            return TagWriteResult(
                setpoint.tag, setpoint.value, WriteStatus.CONFIG_ERROR, reason="tag is not writable"
            )
        if not math.isfinite(setpoint.value):
            return TagWriteResult(
                setpoint.tag,
                setpoint.value,
                WriteStatus.REFUSED,
                reason="not sent: value is not finite",
            )
        return None
