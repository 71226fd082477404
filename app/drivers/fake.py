"""In-memory PLC driver with scripted values and injected faults, for controller unit tests.

It behaves like a PLC that enforces the catalogue's ``plc_low``/``plc_high`` limits: writes outside
them are refused with a reason, writes inside them are stored and read back. Nothing runs in the
background: tests push values with ``set_value`` (delivered to subscribers at once) and change the
connection with ``drop``/``restore``/``fail_auth``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app.domain import ConnectionState, Quality, Sample, Setpoint, TagId, utc_now
from app.drivers.base import (
    AuthFailedError,
    ConnectionLostError,
    DriverConfigError,
    SampleCallback,
    StateCallback,
    StateTracker,
    TagWriteResult,
    WriteResult,
    WriteStatus,
    failed_samples,
    value_quality,
)
from app.plant.catalog import TagDef


@dataclass(slots=True)
class _FakeSubscription:
    driver: FakeDriver
    tags: tuple[TagId, ...]
    on_sample: SampleCallback

    async def close(self) -> None:
        if self in self.driver._subscriptions:
            self.driver._subscriptions.remove(self)


@dataclass(slots=True)
class _Faults:
    refuse: dict[TagId, str] = field(default_factory=dict)
    readback: dict[TagId, float] = field(default_factory=dict)
    quality: dict[TagId, Quality] = field(default_factory=dict)
    auth_fails: bool = False
    unreachable: bool = False


class FakeDriver:
    """A ``PlcDriver`` backed by a dict.

    Args:
        definitions: Catalogue tags it serves; initial values are the mid-range (or ``base_value``).
        clock: Monotonic clock used for ``received_ts`` (a test's fake clock, for example).
    """

    def __init__(
        self, definitions: Sequence[TagDef], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.definitions: dict[TagId, TagDef] = {d.name: d for d in definitions}
        self.values: dict[TagId, float] = {
            d.name: d.base_value if d.base_value is not None else (d.low + d.high) / 2
            for d in definitions
        }
        self.writes: list[Setpoint] = []
        """Every setpoint the PLC accepted, in order."""
        self.faults = _Faults()
        self._clock = clock
        self._state = StateTracker("fake")
        self._subscriptions: list[_FakeSubscription] = []

    @property
    def state(self) -> ConnectionState:
        """Current connection state."""
        return self._state.state

    def add_state_listener(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(state, detail)`` on every state change; returns an unsubscribe function."""
        return self._state.add_listener(callback)

    # --- test controls ----------------------------------------------------------------------

    def set_value(self, tag: TagId, value: float, quality: Quality | None = None) -> None:
        """Change a PLC value (optionally forcing a quality) and notify subscribers."""
        self._check([tag])
        self.values[tag] = float(value)
        if quality is None:
            self.faults.quality.pop(tag, None)
        else:
            self.faults.quality[tag] = quality
        self._publish([tag])

    def set_values(self, values: Mapping[TagId, float]) -> None:
        """Change several values and notify subscribers once per tag."""
        self._check(list(values))
        self.values.update({t: float(v) for t, v in values.items()})
        self._publish(list(values))

    def refuse_writes(self, tag: TagId, reason: str = "write inhibit") -> None:
        """Make the PLC refuse writes to ``tag`` with ``reason``."""
        self.faults.refuse[tag] = reason

    def misreport(self, tag: TagId, readback: float) -> None:
        """Accept writes to ``tag`` but read back ``readback`` (a PLC that clamps or ignores)."""
        self.faults.readback[tag] = readback

    def fail_auth(self, fails: bool = True) -> None:
        """Make ``connect`` fail with ``AuthFailedError``."""
        self.faults.auth_fails = fails

    def drop(self) -> None:
        """Lose the connection: subscribers get COMM_FAILURE samples, state RECONNECTING."""
        self.faults.unreachable = True
        if self.state is ConnectionState.CONNECTED:
            self._state.set(ConnectionState.RECONNECTING, "connection dropped (fake)")
            for sub in tuple(self._subscriptions):
                for sample in failed_samples(sub.tags, Quality.COMM_FAILURE, self._clock()):
                    sub.on_sample(sample)

    def restore(self) -> None:
        """Reconnect after ``drop``: state CONNECTED and a fresh sample of every subscribed tag."""
        self.faults.unreachable = False
        if self.state is ConnectionState.RECONNECTING:
            self._state.set(ConnectionState.CONNECTED, "reconnected (fake)")
            self._publish(list(self.values))

    # --- driver contract --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, or fail as scripted."""
        self._state.set(ConnectionState.CONNECTING)
        if self.faults.auth_fails:
            self._state.set(ConnectionState.AUTH_FAILED, "credentials refused (fake)")
            raise AuthFailedError("fake PLC refused the credentials")
        if self.faults.unreachable:
            self._state.set(ConnectionState.DISCONNECTED, "unreachable (fake)")
            raise ConnectionLostError("fake PLC is unreachable")
        self._state.set(ConnectionState.CONNECTED)

    async def close(self) -> None:
        """Drop every subscription and enter CLOSED."""
        self._subscriptions.clear()
        self._state.set(ConnectionState.CLOSED)

    async def read(self, tags: Sequence[TagId]) -> list[Sample]:
        """Current values as samples (COMM_FAILURE unless connected)."""
        self._check(tags)
        if self.state is not ConnectionState.CONNECTED:
            return failed_samples(tags, Quality.COMM_FAILURE, self._clock())
        return [self._sample(t) for t in tags]

    async def subscribe(
        self, tags: Sequence[TagId], on_sample: SampleCallback
    ) -> _FakeSubscription:
        """Deliver current values now and every later ``set_value`` of ``tags``."""
        self._check(tags)
        sub = _FakeSubscription(self, tuple(tags), on_sample)
        self._subscriptions.append(sub)
        if self.state is ConnectionState.CONNECTED:
            for tag in tags:
                on_sample(self._sample(tag))
        return sub

    async def write(self, setpoints: Sequence[Setpoint], *, verify: bool = True) -> WriteResult:
        """Apply the PLC limit check, store accepted values and read them back."""
        results = []
        for sp in setpoints:
            results.append(self._write_one(sp, verify))
        return WriteResult(tuple(results))

    def _write_one(self, sp: Setpoint, verify: bool) -> TagWriteResult:
        tdef = self.definitions.get(sp.tag)
        if tdef is None or not tdef.writable:
            reason = "unknown tag" if tdef is None else "tag is not writable"
            return TagWriteResult(sp.tag, sp.value, WriteStatus.CONFIG_ERROR, reason=reason)
        if self.state is not ConnectionState.CONNECTED:
            return TagWriteResult(
                sp.tag, sp.value, WriteStatus.COMM_FAILURE, reason=f"not written: {self.state}"
            )
        low = tdef.plc_low if tdef.plc_low is not None else tdef.low
        high = tdef.plc_high if tdef.plc_high is not None else tdef.high
        if sp.tag in self.faults.refuse:
            return TagWriteResult(
                sp.tag,
                sp.value,
                WriteStatus.REFUSED,
                reason=f"PLC refused: {self.faults.refuse[sp.tag]}",
            )
        if not (math.isfinite(sp.value) and low <= sp.value <= high):
            return TagWriteResult(
                sp.tag,
                sp.value,
                WriteStatus.REFUSED,
                reason=f"PLC refused: outside PLC limits [{low:g}, {high:g}]",
            )
        self.values[sp.tag] = self.faults.readback.get(sp.tag, sp.value)
        self.writes.append(sp)
        self._publish([sp.tag])
        if not verify:
            return TagWriteResult(sp.tag, sp.value, WriteStatus.WRITTEN)
        readback = self.values[sp.tag]
        if abs(readback - sp.value) > 1e-9 * max(1.0, abs(sp.value)):
            return TagWriteResult(
                sp.tag,
                sp.value,
                WriteStatus.MISMATCH,
                readback=readback,
                reason=f"PLC reads back {readback!r}",
            )
        return TagWriteResult(sp.tag, sp.value, WriteStatus.CONFIRMED, readback=readback)

    # --- helpers ----------------------------------------------------------------------------

    def _check(self, tags: Sequence[TagId]) -> None:
        unknown = [t for t in tags if t not in self.definitions]
        if unknown:
            raise DriverConfigError(f"unknown tag(s) {unknown}")

    def _sample(self, tag: TagId) -> Sample:
        value = self.values[tag]
        quality = self.faults.quality.get(tag) or value_quality(self.definitions[tag], value)
        return Sample(tag, value, quality, utc_now(), self._clock())

    def _publish(self, tags: Sequence[TagId]) -> None:
        if self.state is not ConnectionState.CONNECTED:
            return
        for sub in tuple(self._subscriptions):
            for tag in tags:
                if tag in sub.tags:
                    sub.on_sample(self._sample(tag))


__all__ = ["FakeDriver"]
