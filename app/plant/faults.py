"""Per-tag and per-protocol faults the simulated PLC can inject, shared across threads.

Tests and the command line set faults here; the OPC UA and Modbus front ends apply them when they
serve values. A frozen tag keeps the value (and timestamp) it had when frozen; a forced tag serves a
given value (NaN, infinity or an out-of-range number); a bad status makes OPC UA serve the tag with
that status code (Modbus has no status: it serves NaN instead); delays hold every response of a
protocol back by the given time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from asyncua.ua.status_codes import StatusCodes

from app.plant.catalog import ProcessCatalog

PROTOCOLS = ("opcua", "modbus")


def status_code_value(name: str) -> int:
    """The numeric OPC UA status code for a name like ``BadSensorFailure``.

    Raises:
        ValueError: The name is not an OPC UA status code, or it is not a Bad/Uncertain code.
    """
    value = getattr(StatusCodes, name, None)
    if not isinstance(value, int):
        raise ValueError(f"unknown OPC UA status code {name!r} (e.g. BadSensorFailure)")
    if not (name.startswith("Bad") or name.startswith("Uncertain")):
        raise ValueError(f"status code {name!r} is not a Bad or Uncertain code")
    return value


@dataclass(slots=True)
class _TagFault:
    frozen: float | None = None
    forced: float | None = None
    status: str | None = None


@dataclass(slots=True)
class _State:
    tags: dict[str, _TagFault] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROTOCOLS, 0.0))


class FaultTable:
    """Thread-safe table of active faults for one process catalogue."""

    def __init__(self, catalog: ProcessCatalog) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        self._state = _State()

    def _tag(self, tag: str) -> _TagFault:
        if tag not in self._catalog:
            raise KeyError(f"process {self._catalog.process!r} has no tag {tag!r}")
        return self._state.tags.setdefault(tag, _TagFault())

    def freeze(self, tag: str, value: float) -> None:
        """Serve ``value`` for ``tag`` from now on (the caller passes the current value)."""
        with self._lock:
            self._tag(tag).frozen = float(value)

    def force(self, tag: str, value: float) -> None:
        """Serve ``value`` (NaN, inf, out of range, anything) for ``tag``."""
        with self._lock:
            self._tag(tag).forced = float(value)

    def bad_status(self, tag: str, status: str = "BadSensorFailure") -> None:
        """Serve ``tag`` with a Bad or Uncertain OPC UA status code (by name)."""
        status_code_value(status)
        with self._lock:
            self._tag(tag).status = status

    def set_delay(self, protocol: str, seconds: float) -> None:
        """Delay every response of ``protocol`` (``opcua``, ``modbus`` or ``both``) by ``seconds``."""
        if not (math.isfinite(seconds) and 0 <= seconds <= 600):
            raise ValueError(f"delay must be between 0 and 600 s, got {seconds!r}")
        targets = PROTOCOLS if protocol == "both" else (protocol,)
        if any(p not in PROTOCOLS for p in targets):
            raise ValueError(f"protocol must be opcua, modbus or both, got {protocol!r}")
        with self._lock:
            for p in targets:
                self._state.delays[p] = float(seconds)

    def delay(self, protocol: str) -> float:
        """Current response delay of ``protocol`` in seconds."""
        with self._lock:
            return self._state.delays[protocol]

    def clear(self, tag: str | None = None) -> None:
        """Remove the faults of ``tag``, or every fault (tags and delays) if ``tag`` is None."""
        with self._lock:
            if tag is None:
                self._state = _State()
            else:
                self._catalog.tag(tag)
                self._state.tags.pop(tag, None)

    def is_frozen(self, tag: str) -> bool:
        """True while ``tag`` is frozen."""
        with self._lock:
            fault = self._state.tags.get(tag)
            return fault is not None and fault.frozen is not None

    def active(self) -> dict[str, str]:
        """Human-readable list of active faults, by tag or protocol."""
        with self._lock:
            out: dict[str, str] = {}
            for tag, f in self._state.tags.items():
                parts = []
                if f.frozen is not None:
                    parts.append(f"frozen at {f.frozen:g}")
                if f.forced is not None:
                    parts.append(f"forced to {f.forced!r}")
                if f.status is not None:
                    parts.append(f"status {f.status}")
                if parts:
                    out[tag] = ", ".join(parts)
            for p, d in self._state.delays.items():
                if d > 0:
                    out[p] = f"responses delayed {d:g} s"
            return out

    def apply(self, image: Mapping[str, float]) -> dict[str, tuple[float, str | None]]:
        """The served view of ``image``: ``(value, bad status name or None)`` per tag."""
        with self._lock:
            served: dict[str, tuple[float, str | None]] = {}
            for tag, value in image.items():
                f = self._state.tags.get(tag)
                if f is None:
                    served[tag] = (value, None)
                    continue
                if f.forced is not None:
                    value = f.forced
                elif f.frozen is not None:
                    value = f.frozen
                served[tag] = (value, f.status)
            return served
