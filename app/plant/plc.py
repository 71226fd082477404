"""The simulated PLC's own logic, independent of any protocol.

``PlcCore`` steps one plant (``n == 1``) of a process model in fixed scans of plant time, runs the
PLC's base control whenever no supervisor is active, enforces the PLC-side setpoint limits and ramp
rates, runs the heartbeat watchdog and the supervisory handshake, and holds the tag image the OPC UA
and Modbus front ends serve. Every method runs on one thread (the server's loop); only the fault
table (``app.plant.faults``) and ``snapshot`` are shared with other threads.

Handshake (docs/plc-interface.md): ``supervisory_active`` is 1 while ``agent_in_control`` is 1,
``remote_mode`` is 1, ``write_inhibit`` is 0, the watchdog is not tripped and ``console_heartbeat``
changed within ``watchdog_timeout_s`` (wall-clock seconds). If the heartbeat stops while control is
requested, the PLC trips: it drops the supervisory setpoints (they take the current values),
returns to base control, clears ``agent_in_control`` and sets ``watchdog_tripped``. The trip clears
once the heartbeat moves again and the console writes ``agent_in_control = 1`` again.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from app.domain import TagRole
from app.plant.catalog import (
    AGENT_IN_CONTROL,
    CONSOLE_HEARTBEAT,
    PLC_HEARTBEAT,
    REMOTE_MODE,
    SUPERVISORY_ACTIVE,
    WATCHDOG_TRIPPED,
    WRITE_INHIBIT,
    ProcessCatalog,
    TagDef,
)
from app.plant.faults import FaultTable
from app.plant.models.base import DisturbanceSource, Policy, ProcessModel

log = logging.getLogger(__name__)

HEARTBEAT_MODULUS = 65536
MAX_CATCH_UP_SCANS = 2000
"""Scans run in one tick at most; a slower plant drops the backlog instead of spiralling."""

Noise = Callable[[Mapping[str, float]], dict[str, float]]
"""Sensor noise: true measurement values in, measured values out (same keys)."""


class Refusal(enum.StrEnum):
    """Why the PLC refused a write."""

    UNKNOWN_TAG = "unknown_tag"
    READ_ONLY = "read_only"
    NOT_A_NUMBER = "not_a_number"
    OUT_OF_RANGE = "out_of_range"
    LOCAL_MODE = "local_mode"
    WRITE_INHIBIT = "write_inhibit"


class WriteRefused(Exception):
    """A client write the PLC did not accept; the previous value stays."""

    def __init__(self, tag: str, value: float, reason: Refusal, detail: str) -> None:
        self.tag = tag
        self.value = value
        self.reason = reason
        super().__init__(f"write {tag} = {value!r} refused ({reason}): {detail}")


@dataclass(frozen=True, slots=True)
class PlcSettings:
    """Timing of the simulated PLC.

    Attributes:
        speed: Plant seconds per wall-clock second.
        scan_s: Plant seconds per PLC scan (model step).
        watchdog_timeout_s: Wall-clock seconds without a heartbeat change that trip the watchdog.
    """

    speed: float = 1.0
    scan_s: float = 1.0
    watchdog_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("speed", "scan_s", "watchdog_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PlcSettings.{name} must be a positive number, got {value!r}")


class PlcCore:
    """PLC logic and tag image of one simulated plant.

    Args:
        model: A process model built with ``n == 1`` and already ``reset``.
        base_control: The PLC's base control; ``reset`` is called here.
        disturbances: Exogenous inputs, already ``reset`` for one plant.
        settings: Scan, speed and watchdog timing.
        rng: Randomness for base control and disturbance resets.
        noise: Sensor noise applied to observations (none if ``None``).
        faults: Fault table shared with the fault-injection API.
        now: Wall-clock time in seconds (monotonic) at start.
    """

    def __init__(
        self,
        model: ProcessModel,
        base_control: Policy,
        disturbances: DisturbanceSource,
        settings: PlcSettings,
        rng: np.random.Generator,
        now: float,
        noise: Noise | None = None,
        faults: FaultTable | None = None,
    ) -> None:
        if model.n != 1:
            raise ValueError(f"the simulated PLC runs one plant, got a model with n={model.n}")
        self.catalog: ProcessCatalog = model.catalog
        self.settings = settings
        self.faults = faults or FaultTable(self.catalog)
        self._model = model
        self._base = base_control
        self._disturbances = disturbances
        self._noise = noise
        self._rng = rng
        self._lock = threading.Lock()
        self._setpoints = self.catalog.setpoints
        self._commands = tuple(
            t for t in self.catalog.by_role(TagRole.COMMAND) if t.name != AGENT_IN_CONTROL
        )
        self._observations = self.catalog.observations
        base_control.reset(1, rng)

        self.t_s = 0.0
        self.scans = 0
        self._start = now
        self._anchor_wall = now
        self._anchor_scans = 0
        self._registers: dict[str, float] = {
            t.name: float(t.base_value if t.base_value is not None else 0.0)
            for t in self.catalog.writable
        }
        self._active: dict[str, float] = {t.name: self._registers[t.name] for t in self._setpoints}
        self._written: set[str] = set()
        self._status: dict[str, float] = {
            SUPERVISORY_ACTIVE: 0.0,
            WATCHDOG_TRIPPED: 0.0,
            REMOTE_MODE: 1.0,
            WRITE_INHIBIT: 0.0,
            PLC_HEARTBEAT: 0.0,
        }
        self._hb_changed = -math.inf
        self._request_time = -math.inf
        self._hb_moved_since_trip = False
        self._requested_since_trip = False
        self._missing_reported: set[str] = set()
        self._behind_reported = False
        self._measured: dict[str, float] = {}
        self.on_change: list[Callable[[], None]] = []
        """Called (on the PLC's thread) after a write or a mode change altered the image."""
        self._read_model()
        self._snapshot = self._build_image()

    # --- client writes -----------------------------------------------------------------------

    def check_write(self, tag: str, value: float) -> TagDef:
        """Validate a client write without applying it.

        Raises:
            WriteRefused: Naming the tag, the value and the reason.
        """
        try:
            tdef = self.catalog.tag(tag)
        except KeyError:
            raise WriteRefused(tag, value, Refusal.UNKNOWN_TAG, "no such tag") from None
        if not tdef.writable:
            raise WriteRefused(tag, value, Refusal.READ_ONLY, "the tag is read-only")
        if not math.isfinite(value):
            raise WriteRefused(tag, value, Refusal.NOT_A_NUMBER, "value is not a finite number")
        low = tdef.plc_low if tdef.plc_low is not None else tdef.low
        high = tdef.plc_high if tdef.plc_high is not None else tdef.high
        if not low <= value <= high:
            raise WriteRefused(
                tag, value, Refusal.OUT_OF_RANGE, f"outside the PLC limits [{low:g}, {high:g}]"
            )
        if tdef.discrete and value not in (0.0, 1.0):
            raise WriteRefused(tag, value, Refusal.OUT_OF_RANGE, "a discrete tag takes 0 or 1")
        if tag == CONSOLE_HEARTBEAT or (tag == AGENT_IN_CONTROL and value == 0.0):
            return tdef  # handing back control and the heartbeat are never refused
        if self._status[REMOTE_MODE] < 0.5:
            raise WriteRefused(tag, value, Refusal.LOCAL_MODE, "the PLC is in local mode")
        if self._status[WRITE_INHIBIT] >= 0.5:
            raise WriteRefused(
                tag, value, Refusal.WRITE_INHIBIT, "supervisory writes are inhibited"
            )
        return tdef

    def write(self, tag: str, value: float, now: float) -> None:
        """Apply a client write after validating it (see ``check_write``).

        Raises:
            WriteRefused: The write was refused; nothing changed.
        """
        value = float(value)
        with self._lock:
            tdef = self.check_write(tag, value)
            old = self._registers[tag]
            self._registers[tag] = value
            if tag == CONSOLE_HEARTBEAT:
                if value != old:
                    self._hb_changed = now
                    if self._status[WATCHDOG_TRIPPED]:
                        self._hb_moved_since_trip = True
            elif tag == AGENT_IN_CONTROL:
                if value == 1.0:
                    if old != 1.0:
                        self._request_time = now
                    if self._status[WATCHDOG_TRIPPED]:
                        self._requested_since_trip = True
            elif tdef.role is TagRole.SETPOINT:
                self._written.add(tag)
            log.debug("write %s = %g accepted", tag, value)
            self._supervise(now)
            self._snapshot = self._build_image()
        self._notify()

    # --- operator / fault API -----------------------------------------------------------------

    def set_remote(self, remote: bool, now: float) -> None:
        """Turn the local/remote selector; local mode ends supervision."""
        with self._lock:
            self._status[REMOTE_MODE] = 1.0 if remote else 0.0
            log.warning("PLC switched to %s mode", "remote" if remote else "local")
            self._supervise(now)
            self._snapshot = self._build_image()
        self._notify()

    def set_write_inhibit(self, inhibit: bool, now: float) -> None:
        """Inhibit (or allow) supervisory writes, as a maintenance switch or interlock would."""
        with self._lock:
            self._status[WRITE_INHIBIT] = 1.0 if inhibit else 0.0
            log.warning("supervisory writes %s", "inhibited" if inhibit else "allowed")
            self._supervise(now)
            self._snapshot = self._build_image()
        self._notify()

    def set_speed(self, speed: float, now: float) -> None:
        """Change the time acceleration from now on."""
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        with self._lock:
            self._anchor_wall = now
            self._anchor_scans = self.scans
            self.settings = PlcSettings(
                speed, self.settings.scan_s, self.settings.watchdog_timeout_s
            )

    # --- cyclic execution ---------------------------------------------------------------------

    def tick(self, now: float) -> int:
        """Advance to wall-clock time ``now``: heartbeat, watchdog, owed scans. Returns scans run."""
        with self._lock:
            self._status[PLC_HEARTBEAT] = float(int(now - self._start) % HEARTBEAT_MODULUS)
            self._supervise(now)
            s = self.settings
            due = self._anchor_scans + int((now - self._anchor_wall) * s.speed / s.scan_s)
            owed = due - self.scans
            if owed > MAX_CATCH_UP_SCANS:
                if not self._behind_reported:
                    log.warning(
                        "plant cannot keep up with speed %g (%d scans behind); dropping the backlog",
                        s.speed,
                        owed,
                    )
                    self._behind_reported = True
                self._anchor_wall = now
                self._anchor_scans = self.scans + MAX_CATCH_UP_SCANS
                owed = MAX_CATCH_UP_SCANS
            for _ in range(max(owed, 0)):
                self._scan(s.scan_s)
            self._supervise(now)  # setpoint registers track what the scans applied
            self._snapshot = self._build_image()
            return max(owed, 0)

    def snapshot(self) -> dict[str, float]:
        """The PLC's tag image (before faults), by tag name; safe from any thread."""
        return dict(self._snapshot)

    def served(self) -> dict[str, tuple[float, str | None]]:
        """What the front ends serve: ``(value, bad status name or None)`` per tag, faults applied."""
        return self.faults.apply(self._snapshot)

    @property
    def supervisory_active(self) -> bool:
        """True while the PLC follows the console's setpoints."""
        return self._status[SUPERVISORY_ACTIVE] >= 0.5

    def model_setpoints(self) -> dict[str, float]:
        """The (ramped) setpoints the model currently runs with."""
        return dict(self._active)

    # --- internals ----------------------------------------------------------------------------

    def _notify(self) -> None:
        for callback in self.on_change:
            try:
                callback()
            except Exception:
                log.exception("PLC change listener %r failed", callback)

    def _supervise(self, now: float) -> None:
        timeout = self.settings.watchdog_timeout_s
        requested = self._registers[AGENT_IN_CONTROL] >= 0.5
        tripped = self._status[WATCHDOG_TRIPPED] >= 0.5
        if tripped and self._hb_moved_since_trip and self._requested_since_trip:
            log.warning("watchdog trip cleared: heartbeat moving and control re-requested")
            self._status[WATCHDOG_TRIPPED] = 0.0
            tripped = False
        fresh = now - self._hb_changed <= timeout
        if requested and not tripped and now - max(self._hb_changed, self._request_time) > timeout:
            log.warning(
                "watchdog tripped: %s unchanged for more than %.1f s; returning to base control",
                CONSOLE_HEARTBEAT,
                timeout,
            )
            self._status[WATCHDOG_TRIPPED] = 1.0
            self._registers[AGENT_IN_CONTROL] = 0.0
            self._hb_moved_since_trip = False
            self._requested_since_trip = False
            tripped = True
            requested = False
        active = (
            requested
            and not tripped
            and fresh
            and self._status[REMOTE_MODE] >= 0.5
            and self._status[WRITE_INHIBIT] < 0.5
        )
        was_active = self._status[SUPERVISORY_ACTIVE] >= 0.5
        if active and not was_active:
            for tdef in self._setpoints:
                if tdef.name not in self._written:
                    self._registers[tdef.name] = self._active[tdef.name]
            log.info("supervisory control active")
        elif was_active and not active:
            self._release()
        elif not active:
            for tdef in self._setpoints:
                if tdef.name not in self._written:
                    self._registers[tdef.name] = self._active[tdef.name]
        self._status[SUPERVISORY_ACTIVE] = 1.0 if active else 0.0

    def _release(self) -> None:
        """Drop supervisory setpoints; base control continues bumplessly from the current values."""
        for tdef in self._setpoints:
            self._registers[tdef.name] = self._active[tdef.name]
        self._written.clear()
        self._base.reset(1, self._rng)
        log.info("supervisory control released; base control from %s", self._active)

    def _scan(self, dt: float) -> None:
        if self.supervisory_active:
            wanted = {t.name: self._registers[t.name] for t in self._setpoints}
            commands = {t.name: self._registers[t.name] for t in self._commands}
        else:
            wanted, commands = self._base_control(dt)
        for tdef in self._setpoints:
            target = wanted.get(tdef.name, self._active[tdef.name])
            step = target - self._active[tdef.name]
            if tdef.max_rate_per_s is not None:
                limit = tdef.max_rate_per_s * dt
                step = min(max(step, -limit), limit)
            self._active[tdef.name] += step
        inputs = {k: np.array([v]) for k, v in self._active.items()}
        inputs.update({k: np.array([v]) for k, v in commands.items()})
        disturbances = self._disturbances.at(np.array([self.t_s]))
        result = self._model.step(inputs, disturbances, dt)
        if bool(np.asarray(result.tripped)[0]):
            log.warning("plant trip: %s", np.asarray(result.trip_reason)[0])
        for tdef in self._commands:
            # Requests are pulses: the PLC acts on them once and clears them.
            if self._registers[tdef.name] >= 0.5 and self.supervisory_active:
                self._registers[tdef.name] = 0.0
        self.t_s += dt
        self.scans += 1
        self._read_model()

    def _base_control(self, dt: float) -> tuple[dict[str, float], dict[str, float]]:
        inputs = {k: np.array([v]) for k, v in self._measured.items()}
        inputs.update({k: np.array([v]) for k, v in self._active.items()})
        out = self._base.act(inputs, self.t_s, dt)
        wanted: dict[str, float] = {}
        commands = {t.name: 0.0 for t in self._commands}
        for name, arr in out.items():
            value = float(np.asarray(arr).reshape(-1)[0])
            if not math.isfinite(value):
                log.error("base control returned %r for %s; holding the last value", value, name)
                continue
            if name in commands:
                commands[name] = value
            elif name in self._active:
                tdef = self.catalog.tag(name)
                low = tdef.plc_low if tdef.plc_low is not None else tdef.low
                high = tdef.plc_high if tdef.plc_high is not None else tdef.high
                wanted[name] = min(max(value, low), high)
        return wanted, commands

    def _read_model(self) -> None:
        true = {
            k: float(np.asarray(v).reshape(-1)[0]) for k, v in self._model.measurements().items()
        }
        measured = self._noise(true) if self._noise is not None else true
        for tdef in self._observations:
            if tdef.name not in measured and tdef.name not in self._missing_reported:
                log.error(
                    "model %s does not measure %s; serving NaN",
                    type(self._model).__name__,
                    tdef.name,
                )
                self._missing_reported.add(tdef.name)
        self._measured = {t.name: measured.get(t.name, math.nan) for t in self._observations}

    def _build_image(self) -> dict[str, float]:
        image: dict[str, float] = {}
        for tdef in self.catalog:
            if tdef.name in self._registers:
                image[tdef.name] = self._registers[tdef.name]
            elif tdef.name in self._status:
                image[tdef.name] = self._status[tdef.name]
            else:
                image[tdef.name] = self._measured.get(tdef.name, math.nan)
        return image
