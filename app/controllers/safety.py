"""The safety envelope: every write, from an operator or an agent, is checked here before the PLC.

``SafetyEnvelope.check`` runs the layers below in order and stops at the first that fails. It
**rejects** with the layer and a reason; it never clips a value into range, because a silently changed
setpoint is a decision nobody made.

1. ``request``: the tag exists, is writable, the value is finite, the origin may write this tag
   (agents write setpoints only; an operator origin needs at least the operator role).
2. ``plc_limits``: inside the PLC's limits from the tag catalogue (and 0/1 for discrete commands).
3. ``engineer_limits``: inside the site's engineer limits; a setpoint without limits is refused.
4. ``operator_limits``: inside the operator limits, unless an engineer (or supervisor) writes.
5. ``input_quality``: every observation the remaining layers read (the setpoint's own readback and
   the interlock inputs) is GOOD and not older than ``stale_after_s``.
6. ``max_move``: the change from the current setpoint is at most ``max_move`` (the site limit; for
   agents also the catalogue's per-step limit).
7. ``min_dwell``: at least ``min_dwell_s`` since the last applied change of this tag.
8. ``interlock``: no interlock is tripped (CIP running, watchdog tripped, write inhibit, panel in
   local, feed ORP above its limit).

Input quality runs before the layers that read plant data, so that no layer ever judges a write on a
value the quality layer would refuse; the value-only limit layers run first so that an out-of-range
entry is reported as such even while the PLC link is down.

Commands (``agent_in_control``, ``cip_request``) and the console heartbeat pass layers 1-2 only: the
PLC runs its own handshake for them, and handing control back (``agent_in_control = 0``) must never
be blocked by stale data or an interlock.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.config import TagLimits
from app.domain import Origin, OriginKind, Role, Sample, Setpoint, Snapshot, TagId, TagRole
from app.plant.catalog import (
    REMOTE_MODE,
    WATCHDOG_TRIPPED,
    WRITE_INHIBIT,
    ProcessCatalog,
    TagDef,
)

DEFAULT_ORP_MAX_MV = 350.0
"""Feed ORP above which polyamide membranes are at risk of oxidation (free chlorine breakthrough)."""
_FLOAT32_SLACK = 1e-5
"""Relative tolerance of the max-move check (float32 agent outputs): 1e-5 bar around 1 bar."""


class Layer(enum.StrEnum):
    """Envelope layers, in the order they are checked."""

    REQUEST = "request"
    PLC_LIMITS = "plc_limits"
    ENGINEER_LIMITS = "engineer_limits"
    OPERATOR_LIMITS = "operator_limits"
    INPUT_QUALITY = "input_quality"
    MAX_MOVE = "max_move"
    MIN_DWELL = "min_dwell"
    INTERLOCK = "interlock"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The envelope's answer to one write request.

    Attributes:
        ok: True if the setpoint may be written as requested.
        setpoint: The setpoint checked (never altered).
        layer: The layer that rejected it (``None`` when ok).
        reason: Why it was rejected, in words an operator understands ("" when ok).
    """

    ok: bool
    setpoint: Setpoint
    layer: Layer | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Interlock:
    """A condition on one observed tag that blocks setpoint writes while it holds.

    Attributes:
        name: Short id, e.g. ``cip_active``.
        tag: Observed tag.
        trips_above: Trips while the value is above this.
        trips_below: Trips while the value is below this.
        message: What the operator sees.
    """

    name: str
    tag: TagId
    message: str
    trips_above: float | None = None
    trips_below: float | None = None

    def tripped(self, value: float) -> bool:
        """True if ``value`` trips this interlock."""
        return (self.trips_above is not None and value > self.trips_above) or (
            self.trips_below is not None and value < self.trips_below
        )


def default_interlocks(
    catalog: ProcessCatalog, *, orp_max_mv: float = DEFAULT_ORP_MAX_MV
) -> tuple[Interlock, ...]:
    """The standard interlocks, for the tags that ``catalog`` has."""
    candidates = (
        Interlock("cip_active", "cip_active", "clean-in-place in progress", trips_above=0.5),
        Interlock(
            "watchdog_tripped",
            WATCHDOG_TRIPPED,
            "PLC watchdog tripped: the PLC runs base control",
            trips_above=0.5,
        ),
        Interlock(
            "write_inhibit", WRITE_INHIBIT, "the PLC inhibits supervisory writes", trips_above=0.5
        ),
        Interlock(
            "local_mode", REMOTE_MODE, "the panel selector is in local mode", trips_below=0.5
        ),
        Interlock(
            "orp_high",
            "feed_orp_mv",
            f"feed ORP above {orp_max_mv:g} mV: oxidant breakthrough risk, fix dechlorination",
            trips_above=orp_max_mv,
        ),
    )
    return tuple(i for i in candidates if i.tag in catalog)


def _fmt(value: float, unit: str) -> str:
    return f"{value:g} {unit}".rstrip()


class SafetyEnvelope:
    """Checks writes against limits, move and dwell constraints, interlocks and input quality.

    Used from the control context only. Call ``record_write`` after the PLC accepted a setpoint so
    that the dwell layer knows when the tag last changed.

    Args:
        catalog: Tag catalogue of the process (PLC limits, roles, per-step agent move limits).
        limits: Site limits per setpoint tag (``SiteConfig.limits``).
        stale_after_s: Oldest sample age a verdict may rely on (``PlantConnection.stale_after_s``).
        interlocks: Interlock rules; default ``default_interlocks(catalog)``.

    Raises:
        ValueError: A limit names an unknown or non-setpoint tag, engineer limits reach outside
            the PLC limits, an interlock reads an unknown tag, or ``stale_after_s`` is not positive.
    """

    def __init__(
        self,
        catalog: ProcessCatalog,
        limits: Mapping[TagId, TagLimits],
        *,
        stale_after_s: float,
        interlocks: Iterable[Interlock] | None = None,
    ) -> None:
        if not (math.isfinite(stale_after_s) and stale_after_s > 0):
            raise ValueError(f"stale_after_s must be a positive number, got {stale_after_s}")
        for tag, lim in limits.items():
            if tag not in catalog:
                raise ValueError(f"limits for {tag!r}: process {catalog.process!r} has no such tag")
            tdef = catalog.tag(tag)
            if tdef.role is not TagRole.SETPOINT:
                raise ValueError(f"limits for {tag!r}: it is a {tdef.role.value}, not a setpoint")
            plc_low, plc_high = _plc_range(tdef)
            if lim.engineer_low < plc_low or lim.engineer_high > plc_high:
                raise ValueError(
                    f"limits for {tag!r}: engineer limits [{lim.engineer_low:g}, "
                    f"{lim.engineer_high:g}] reach outside the PLC limits [{plc_low:g}, {plc_high:g}]"
                )
        rules = default_interlocks(catalog) if interlocks is None else tuple(interlocks)
        for rule in rules:
            if rule.tag not in catalog:
                raise ValueError(f"interlock {rule.name!r} reads unknown tag {rule.tag!r}")
        self._catalog = catalog
        self._limits = dict(limits)
        self._interlocks = rules
        self.stale_after_s = stale_after_s
        self._last_change: dict[TagId, float] = {}

    @property
    def interlocks(self) -> tuple[Interlock, ...]:
        """The interlock rules in force."""
        return self._interlocks

    def record_write(self, setpoint: Setpoint, now: float) -> None:
        """Note that the PLC accepted ``setpoint`` at monotonic time ``now`` (for the dwell layer)."""
        self._last_change[setpoint.tag] = now

    def last_change(self, tag: TagId) -> float | None:
        """Monotonic time of the last recorded write of ``tag``."""
        return self._last_change.get(tag)

    # --- the check ---------------------------------------------------------------------------

    def check(self, setpoint: Setpoint, snapshot: Snapshot, origin: Origin, now: float) -> Verdict:
        """Decide whether ``setpoint`` may be written now.

        Args:
            setpoint: Requested tag and value.
            snapshot: Latest plant values.
            origin: Who asks (operator and role, agent version, or the system).
            now: ``time.monotonic()`` now (the clock of ``Sample.received_ts``).

        Returns:
            The verdict; ``ok`` only if every layer passed.
        """
        tag, value = setpoint.tag, setpoint.value

        def reject(layer: Layer, reason: str) -> Verdict:
            return Verdict(False, setpoint, layer, reason)

        # 1. request
        if tag not in self._catalog:
            return reject(
                Layer.REQUEST, f"unknown tag {tag!r} for process {self._catalog.process!r}"
            )
        tdef = self._catalog.tag(tag)
        if not tdef.writable:
            return reject(Layer.REQUEST, f"{tag} is read-only ({tdef.role.value})")
        if not math.isfinite(value):
            return reject(Layer.REQUEST, f"{tag}: value {value!r} is not a finite number")
        agent = origin.kind in (OriginKind.AGENT, OriginKind.CLOUD_AGENT)
        if agent and tdef.role is not TagRole.SETPOINT:
            return reject(Layer.REQUEST, f"{tag}: agents may write setpoints only")
        if origin.kind is OriginKind.OPERATOR and (
            origin.role is None or origin.role < Role.OPERATOR
        ):
            return reject(
                Layer.REQUEST, f"{tag}: {origin.name} has no write permission (needs operator)"
            )

        # 2. PLC limits
        plc_low, plc_high = _plc_range(tdef)
        if not plc_low <= value <= plc_high:
            return reject(
                Layer.PLC_LIMITS,
                f"{tag} = {_fmt(value, tdef.unit)} is outside the PLC limits "
                f"[{plc_low:g}, {plc_high:g}] {tdef.unit}".rstrip(),
            )
        if tdef.discrete and value not in (0.0, 1.0):
            return reject(Layer.PLC_LIMITS, f"{tag} is discrete: 0 or 1, not {value:g}")
        if tdef.role is not TagRole.SETPOINT:
            return Verdict(True, setpoint)

        # 3. engineer limits
        lim = self._limits.get(tag)
        if lim is None:
            return reject(
                Layer.ENGINEER_LIMITS,
                f"{tag} has no limits in the site file ([limits.{tag}]); writes are refused",
            )
        if not lim.engineer_low <= value <= lim.engineer_high:
            return reject(
                Layer.ENGINEER_LIMITS,
                f"{tag} = {_fmt(value, tdef.unit)} is outside the engineer limits "
                f"[{lim.engineer_low:g}, {lim.engineer_high:g}] {tdef.unit}".rstrip(),
            )

        # 4. operator limits
        engineer = (
            origin.kind is OriginKind.OPERATOR
            and origin.role is not None
            and origin.role >= Role.ENGINEER
        )
        op_low = lim.engineer_low if lim.operator_low is None else lim.operator_low
        op_high = lim.engineer_high if lim.operator_high is None else lim.operator_high
        if not engineer and not op_low <= value <= op_high:
            return reject(
                Layer.OPERATOR_LIMITS,
                f"{tag} = {_fmt(value, tdef.unit)} is outside the operator limits "
                f"[{op_low:g}, {op_high:g}] {tdef.unit} (an engineer may use the engineer limits)",
            )

        # 5. input quality
        inputs = (tag, *(i.tag for i in self._interlocks))
        for name in dict.fromkeys(inputs):
            problem = self._unusable(snapshot.samples.get(name), name, now)
            if problem:
                return reject(Layer.INPUT_QUALITY, problem)
        current = snapshot.samples[tag].value

        # 6. max move
        max_move = lim.max_move
        if agent and tdef.max_move is not None:
            max_move = tdef.max_move if max_move is None else min(max_move, tdef.max_move)
        move = value - current
        # Agents compute readback + max move in float32 (ONNX): a full move lands a few 1e-6 off.
        slack = _FLOAT32_SLACK * max(1.0, abs(current))
        if max_move is not None and abs(move) > max_move + slack:
            return reject(
                Layer.MAX_MOVE,
                f"{tag}: move of {move:+g} {tdef.unit} from {current:g} exceeds the maximum "
                f"{max_move:g} {tdef.unit} per write",
            )

        # 7. minimum dwell
        last = self._last_change.get(tag)
        if last is not None and now - last < lim.min_dwell_s:
            return reject(
                Layer.MIN_DWELL,
                f"{tag} changed {now - last:.0f} s ago; wait {lim.min_dwell_s - (now - last):.0f} s "
                f"more (minimum dwell {lim.min_dwell_s:g} s)",
            )

        # 8. interlocks
        tripped = self._tripped(snapshot)
        if tripped is not None:
            return reject(Layer.INTERLOCK, tripped)
        return Verdict(True, setpoint)

    def check_conditions(self, setpoint: Setpoint, snapshot: Snapshot, now: float) -> Verdict:
        """Re-check only input quality and interlocks, e.g. before each step of an accepted ramp.

        Intermediate ramp values lie between two values that passed ``check``, so they are inside
        every limit; the plant's state may have changed since, which this catches.
        """
        for name in dict.fromkeys((setpoint.tag, *(i.tag for i in self._interlocks))):
            problem = self._unusable(snapshot.samples.get(name), name, now)
            if problem:
                return Verdict(False, setpoint, Layer.INPUT_QUALITY, problem)
        tripped = self._tripped(snapshot)
        if tripped is not None:
            return Verdict(False, setpoint, Layer.INTERLOCK, tripped)
        return Verdict(True, setpoint)

    def _unusable(self, sample: Sample | None, name: TagId, now: float) -> str:
        if sample is None:
            return f"no value for {name} in the snapshot"
        if not sample.quality.usable:
            return f"{name} quality is {sample.quality.value}"
        if not math.isfinite(sample.value):
            return f"{name} value is {sample.value!r}"
        age = sample.age_s(now)
        if age > self.stale_after_s:
            return f"{name} is stale: {age:.1f} s old (limit {self.stale_after_s:g} s)"
        return ""

    def _tripped(self, snapshot: Snapshot) -> str | None:
        for rule in self._interlocks:
            value = snapshot.samples[rule.tag].value
            if rule.tripped(value):
                return f"interlock {rule.name}: {rule.message} ({rule.tag} = {value:g})"
        return None


def _plc_range(tdef: TagDef) -> tuple[float, float]:
    low = tdef.low if tdef.plc_low is None else tdef.plc_low
    high = tdef.high if tdef.plc_high is None else tdef.plc_high
    return low, high


def ramp(current: float, target: float, max_rate_per_s: float, dt: float) -> float:
    """Next value on a rate-limited path from ``current`` to ``target`` (bumpless transfer).

    Args:
        current: Present setpoint.
        target: Setpoint to reach.
        max_rate_per_s: Largest change per second (positive).
        dt: Seconds since the last step (non-negative).

    Returns:
        ``target`` once it is within one step, otherwise ``current`` moved towards it by
        ``max_rate_per_s * dt``.

    Raises:
        ValueError: Naming the argument that is not finite, not positive or negative.
    """
    for name, v in (("current", current), ("target", target), ("dt", dt)):
        if not math.isfinite(v):
            raise ValueError(f"ramp: {name} must be finite, got {v!r}")
    if not (math.isfinite(max_rate_per_s) and max_rate_per_s > 0):
        raise ValueError(
            f"ramp: max_rate_per_s must be positive and finite, got {max_rate_per_s!r}"
        )
    if dt < 0:
        raise ValueError(f"ramp: dt must not be negative, got {dt!r}")
    step = max_rate_per_s * dt
    if abs(target - current) <= step:
        return target
    return current + math.copysign(step, target - current)


__all__ = [
    "DEFAULT_ORP_MAX_MV",
    "Interlock",
    "Layer",
    "SafetyEnvelope",
    "Verdict",
    "default_interlocks",
    "ramp",
]
