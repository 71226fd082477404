"""What-if preview: a process-model twin aligned to the live plant, run ahead for several setpoints.

Given the current measurements, :func:`preview` builds a vectorised process model with one plant per
scenario ("hold the current setpoints" plus each proposal), aligns it to the live plant, simulates
30–120 minutes ahead with the disturbances held at their measured values, and returns the
trajectories of permeate flow, ΔP, permeate conductivity, recovery and SEC, each with time stamps,
plus the economic rate each scenario earns (the twin-predicted KPI of the shadow duel).

RO (:class:`~app.plant.models.ro.RoModel`) is the first process with a twin. For any other process
the result says "preview not available for process X" instead of failing.

**RO alignment (estimator).** The membrane's fouling and salt passage are hidden states; everything
else the model needs is measured:

1. Operating point and feed from the measurements: feed pressure and feed flow become the model's
   actuator state, the permeate back-pressure a parameter, the feed TDS comes from the feed
   conductivity (the model's EC→TDS factor), temperature, pH, ORP and the tank level are copied.
2. Fouling: the uniform fouling ratio R_f/R_m (``initial_fouling_ratio``) is chosen so that the
   model's permeate flow at the measured feed pressure and flow equals the measured permeate flow.
   Permeate flow falls monotonically with fouling, so a vectorised 1-D search does it: one model of
   33 plants evaluates a grid over the parameter's range (quadratically spaced: the flow is most
   sensitive near clean), two 9-point grids refine the bracketing interval in turn, and the root is
   interpolated linearly in the last bracket (relative flow error ≲ 1e-4). A membrane better than nominal (measured flow above the clean model's)
   is clamped at zero fouling and shows up as the fit residual.
3. Salt passage: the salt permeability B is then chosen the same way (log-spaced grid) so that the
   model's permeate conductivity equals the measured one at the fitted fouling, and the fouling is
   fitted once more at that B (salt passage changes the permeate's osmotic pressure, so the flow).

The real fouling profile along the vessel is not uniform; a uniform ratio with the same permeate
flow is the least-information choice, and it is refitted at every preview. Product demand is not
measured: it is set to the current permeate flow (the tank stays near its level under "hold").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from app import kpi
from app.domain import Quality, Sample, TagRole, utc_now
from app.plant.catalog import RO_CATALOG
from app.plant.economics import prices_for, step_costs, step_reward
from app.plant.models.ro import RO_PARAMETERS, RoModel

F64 = npt.NDArray[np.float64]
MeasurementLike = float | tuple[float, Quality] | Sample

HOLD = "hold"
"""Name of the scenario that keeps the current setpoints."""
MIN_HORIZON_S = 1800.0
MAX_HORIZON_S = 7200.0


@dataclass(frozen=True, slots=True)
class TwinFit:
    """How the twin was aligned to the live plant.

    Attributes:
        fouling_ratio: Estimated uniform fouling ratio R_f/R_m.
        salt_permeability_m_s: Estimated salt permeability B at 25 °C.
        permeate_flow_measured_m3h: The measured permeate flow the fit targets.
        permeate_flow_model_m3h: The twin's permeate flow at the start of the preview.
        permeate_conductivity_measured_uscm: The measured permeate conductivity.
        permeate_conductivity_model_uscm: The twin's permeate conductivity at the start.
        feed_tds_gl: Feed TDS derived from the feed conductivity.
    """

    fouling_ratio: float
    salt_permeability_m_s: float
    permeate_flow_measured_m3h: float
    permeate_flow_model_m3h: float
    permeate_conductivity_measured_uscm: float
    permeate_conductivity_model_uscm: float
    feed_tds_gl: float

    @property
    def flow_residual(self) -> float:
        """(model − measured) / measured permeate flow at the start."""
        return (
            self.permeate_flow_model_m3h - self.permeate_flow_measured_m3h
        ) / self.permeate_flow_measured_m3h


def _frozen(values: F64) -> F64:
    out = np.array(values, dtype=np.float64)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True)
class Trajectory:
    """The predicted course of one scenario (arrays are read-only, one entry per time stamp).

    Attributes:
        setpoints: Setpoints held over the horizon.
        t_s: Seconds from the start (0 = now).
        timestamps: Wall-clock time of each entry, UTC.
        permeate_flow_m3h: Permeate flow.
        dp_bar: Feed-to-concentrate pressure drop.
        permeate_conductivity_uscm: Permeate conductivity.
        recovery_pct: Recovery.
        sec_kwh_m3: Specific energy (HP pump power / permeate flow; NaN without permeate).
        feed_pressure_bar: Feed pressure (follows the setpoint through the pump's ramp).
        kpi_eur_h: Economic rate including the soft quality/pressure penalties of the reward
            (mean step reward × ``reward_scale_eur_h``), EUR/h: the twin-predicted KPI.
        net_eur_h: Water value minus energy, chemicals, downtime and membrane cost, EUR/h.
        trip_reason: Why the twin's plant tripped ("" if it did not).
    """

    setpoints: dict[str, float]
    t_s: F64
    timestamps: tuple[datetime, ...]
    permeate_flow_m3h: F64
    dp_bar: F64
    permeate_conductivity_uscm: F64
    recovery_pct: F64
    sec_kwh_m3: F64
    feed_pressure_bar: F64
    kpi_eur_h: float
    net_eur_h: float
    trip_reason: str = ""


@dataclass(frozen=True, slots=True)
class PreviewResult:
    """A what-if preview, or why there is none.

    Attributes:
        process: Process name.
        available: False when no preview could be made; ``reason`` says why.
        reason: Empty when available.
        start: Wall-clock time of t = 0, UTC.
        horizon_s: Seconds simulated.
        dt_s: Step of the simulation and of the trajectories.
        fit: How the twin was aligned (``None`` when unavailable).
        scenarios: Trajectory per scenario name, ``"hold"`` first.
    """

    process: str
    available: bool
    reason: str = ""
    start: datetime = field(default_factory=utc_now)
    horizon_s: float = 0.0
    dt_s: float = 0.0
    fit: TwinFit | None = None
    scenarios: dict[str, Trajectory] = field(default_factory=dict)


def _value(item: MeasurementLike | None) -> float | None:
    """A usable finite value, or ``None`` (missing, not GOOD, not finite)."""
    if item is None:
        return None
    if isinstance(item, Sample):
        value, quality = item.value, item.quality
    elif isinstance(item, tuple):
        value, quality = item
    else:
        value, quality = item, Quality.GOOD
    if quality != Quality.GOOD:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _search(
    evaluate: Callable[[F64], F64], grid: F64, target: float, *, refine: int = 9, levels: int = 3
) -> float:
    """The x where ``evaluate`` (monotone over ``grid``) reaches ``target``, clamped to the grid.

    Each level evaluates the whole grid at once (one vectorised model), then the next level spans
    the bracketing interval with ``refine`` points; the last bracket is interpolated linearly.
    """
    xs, ys = grid, evaluate(grid)
    for level in range(levels):
        if ys[-1] < ys[0]:
            xs, ys = xs[::-1], ys[::-1]
        if target <= ys[0]:
            return float(xs[0])
        if target >= ys[-1]:
            return float(xs[-1])
        i = int(np.searchsorted(ys, target))
        if level == levels - 1:
            return float(np.interp(target, ys[i - 1 : i + 1], xs[i - 1 : i + 1]))
        xs = np.linspace(xs[i - 1], xs[i], refine)
        ys = evaluate(xs)
    raise AssertionError("unreachable")  # pragma: no cover


_RO_REQUIRED = (
    "feed_pressure_bar",
    "feed_flow_m3h",
    "permeate_flow_m3h",
    "permeate_pressure_bar",
    "feed_conductivity_uscm",
    "permeate_conductivity_uscm",
    "feed_temperature_c",
)
_RO_OPTIONAL = ("feed_ph", "feed_orp_mv", "tank_level_pct", "cip_active")
_RO_SETPOINTS = tuple(t.name for t in RO_CATALOG.setpoints)
_GRID = 33


def _clip(name: str, value: float) -> float:
    spec = RO_PARAMETERS[name]
    return min(max(value, spec.low), spec.high)


class RoTwin:
    """Builds aligned :class:`RoModel` twins from measurements (see the module docstring)."""

    def __init__(self, measured: Mapping[str, float]) -> None:
        """Keep the measurements the twin is aligned to (finite values by tag)."""
        self._m = dict(measured)
        tds_factor = RO_PARAMETERS["tds_per_conductivity"].default
        self.feed_tds_gl = max(self._m["feed_conductivity_uscm"] * tds_factor / 1e3, 1e-3)
        self._base: dict[str, float] = {
            "initial_feed_pressure_bar": _clip(
                "initial_feed_pressure_bar", self._m["feed_pressure_bar"]
            ),
            "initial_feed_flow_m3h": _clip("initial_feed_flow_m3h", self._m["feed_flow_m3h"]),
            "permeate_pressure_bar": _clip(
                "permeate_pressure_bar", self._m["permeate_pressure_bar"]
            ),
            "feed_tds_gl": self.feed_tds_gl,
            "feed_temperature_c": self._m["feed_temperature_c"],
            "demand_m3h": self._m["permeate_flow_m3h"],
        }
        for tag in ("feed_ph", "feed_orp_mv"):
            if tag in self._m:
                self._base[tag] = self._m[tag]
        if "tank_level_pct" in self._m:
            self._base["initial_tank_level_pct"] = _clip(
                "initial_tank_level_pct", self._m["tank_level_pct"]
            )

    @property
    def disturbances(self) -> dict[str, float]:
        """The disturbances held over the horizon."""
        return {k: v for k, v in self._base.items() if k in RoModel.disturbance_names}

    def _model(self, n: int, **per_plant: F64 | float) -> RoModel:
        model = RoModel(n)
        params: dict[str, F64 | float] = dict(self._base)
        params.update(per_plant)
        model.reset(np.random.default_rng(0), params=params)
        return model

    def fit(self) -> tuple[float, float]:
        """Estimate (fouling ratio, salt permeability) from the measurements."""
        spec_f = RO_PARAMETERS["initial_fouling_ratio"]
        grid_f = spec_f.low + (spec_f.high - spec_f.low) * np.linspace(0.0, 1.0, _GRID) ** 2

        spec_b = RO_PARAMETERS["salt_permeability_m_s"]
        grid_b = np.geomspace(max(spec_b.low, 1e-10), spec_b.high, _GRID)
        salt = spec_b.default
        fouling = 0.0

        def flow(values: F64) -> F64:
            out = self._model(
                values.size, initial_fouling_ratio=values, salt_permeability_m_s=salt
            ).measurements()
            return np.asarray(out["permeate_flow_m3h"], dtype=np.float64)

        def conductivity(values: F64) -> F64:
            out = self._model(
                values.size, initial_fouling_ratio=fouling, salt_permeability_m_s=values
            ).measurements()
            return np.asarray(out["permeate_conductivity_uscm"], dtype=np.float64)

        # Salt passage changes the permeate's osmotic pressure and so, slightly, the flow: fit
        # fouling, then B, then fouling again at that B (a second round changes nothing visible).
        fouling = _search(flow, grid_f, self._m["permeate_flow_m3h"])
        salt = _search(conductivity, grid_b, self._m["permeate_conductivity_uscm"])
        fouling = _search(flow, grid_f, self._m["permeate_flow_m3h"])
        return fouling, salt

    def run(
        self,
        scenarios: Mapping[str, Mapping[str, float]],
        horizon_s: float,
        dt_s: float,
        start: datetime,
    ) -> PreviewResult:
        """Fit, then simulate every scenario (full setpoint sets) over the horizon."""
        fouling, salt = self.fit()
        names = list(scenarios)
        n = len(names)
        model = self._model(n, initial_fouling_ratio=fouling, salt_permeability_m_s=salt)
        steps = round(horizon_s / dt_s)
        setpoints = {
            tag: np.array([scenarios[s][tag] for s in names], dtype=np.float64)
            for tag in _RO_SETPOINTS
        }
        columns = (
            "permeate_flow_m3h",
            "stage_dp_bar",
            "permeate_conductivity_uscm",
            "recovery_pct",
            "hpp_power_kw",
            "feed_pressure_bar",
        )
        rec = {c: np.empty((steps + 1, n)) for c in columns}

        def sample(k: int) -> None:
            m = model.measurements()
            for c in columns:
                rec[c][k] = m[c]

        sample(0)
        prices = prices_for("ro")
        dist = {k: np.full(n, v) for k, v in self.disturbances.items()}
        reward = np.zeros(n)
        net = np.zeros(n)
        trips = np.full(n, "", dtype=object)
        for k in range(1, steps + 1):
            result = model.step(setpoints, dist, dt_s)
            trips = np.where(trips == "", result.trip_reason, trips)
            reward += step_reward(result, prices, {}, dt_s)
            net += step_costs(result, prices, {}, dt_s).net
            sample(k)
        t_s = np.arange(steps + 1, dtype=np.float64) * dt_s
        stamps = tuple(start + timedelta(seconds=float(t)) for t in t_s)
        hours = steps * dt_s / 3600.0
        sec = kpi.sec_from_power_kwh_m3(rec["hpp_power_kw"], rec["permeate_flow_m3h"])
        trajectories = {}
        for j, name in enumerate(names):
            trajectories[name] = Trajectory(
                setpoints={tag: float(setpoints[tag][j]) for tag in _RO_SETPOINTS},
                t_s=_frozen(t_s),
                timestamps=stamps,
                permeate_flow_m3h=_frozen(rec["permeate_flow_m3h"][:, j]),
                dp_bar=_frozen(rec["stage_dp_bar"][:, j]),
                permeate_conductivity_uscm=_frozen(rec["permeate_conductivity_uscm"][:, j]),
                recovery_pct=_frozen(rec["recovery_pct"][:, j]),
                sec_kwh_m3=_frozen(sec[:, j]),
                feed_pressure_bar=_frozen(rec["feed_pressure_bar"][:, j]),
                kpi_eur_h=float(reward[j] / steps * prices.reward_scale_eur_h),
                net_eur_h=float(net[j] / hours),
                trip_reason=str(trips[j]),
            )
        first = trajectories[names[0]]
        fit = TwinFit(
            fouling_ratio=fouling,
            salt_permeability_m_s=salt,
            permeate_flow_measured_m3h=self._m["permeate_flow_m3h"],
            permeate_flow_model_m3h=float(first.permeate_flow_m3h[0]),
            permeate_conductivity_measured_uscm=self._m["permeate_conductivity_uscm"],
            permeate_conductivity_model_uscm=float(first.permeate_conductivity_uscm[0]),
            feed_tds_gl=self.feed_tds_gl,
        )
        return PreviewResult("ro", True, "", start, steps * dt_s, dt_s, fit, trajectories)


def preview(
    process: str,
    measurements: Mapping[str, MeasurementLike],
    scenarios: Mapping[str, Mapping[str, float]],
    *,
    hold: Mapping[str, float] | None = None,
    horizon_s: float = 3600.0,
    dt_s: float = 60.0,
    start: datetime | None = None,
) -> PreviewResult:
    """Simulate "hold the current setpoints" and each scenario ahead on an aligned twin.

    Args:
        process: Process name; only ``ro`` has a twin so far.
        measurements: Latest value per tag: a number, (value, quality) or a
            :class:`~app.domain.Sample`; only GOOD finite values are used.
        scenarios: Setpoints per scenario name (e.g. ``{"recommended": {"feed_pressure_sp_bar":
            13.0}}``); setpoints a scenario leaves out keep their hold value.
        hold: Current (last applied) setpoints; default: the setpoint readbacks in
            ``measurements``.
        horizon_s: Seconds to simulate, 1800–7200 (30–120 min).
        dt_s: Simulation step, at most a tenth of the horizon.
        start: Wall-clock time of t = 0 (default: now).

    Returns:
        The preview; ``available`` is False (with the reason) for a process without a twin, for
        missing or bad measurements, or when the plant is not producing.

    Raises:
        ValueError: A bad horizon or step, a scenario named ``"hold"``, or a scenario setting a tag
            that is not a setpoint of the process (named).
    """
    start = utc_now() if start is None else start
    if not MIN_HORIZON_S <= horizon_s <= MAX_HORIZON_S:
        raise ValueError(
            f"horizon_s must be within {MIN_HORIZON_S:g}-{MAX_HORIZON_S:g} s (30-120 min), "
            f"got {horizon_s}"
        )
    if not (dt_s > 0 and math.isfinite(dt_s) and dt_s <= horizon_s / 10):
        raise ValueError(f"dt_s must be positive and at most horizon_s/10, got {dt_s}")
    if HOLD in scenarios:
        raise ValueError(f"scenario name {HOLD!r} is reserved for the current setpoints")
    if process != "ro":
        return PreviewResult(
            process, False, f"preview not available for process {process!r} (twins: ro)", start
        )
    for name, setpoints in scenarios.items():
        for tag, value in setpoints.items():
            if tag not in _RO_SETPOINTS:
                role = RO_CATALOG.tag(tag).role.value if tag in RO_CATALOG else "unknown"
                raise ValueError(
                    f"scenario {name!r}: {tag!r} is not a setpoint of process 'ro' ({role}); "
                    f"previews take {', '.join(_RO_SETPOINTS)}"
                )
            if not math.isfinite(value):
                raise ValueError(f"scenario {name!r}: {tag} = {value} is not finite")
    measured: dict[str, float] = {}
    problems = []
    for tag in _RO_REQUIRED:
        v = _value(measurements.get(tag))
        if v is None:
            problems.append(tag)
        else:
            measured[tag] = v
    if problems:
        return PreviewResult("ro", False, f"no usable measurement of {', '.join(problems)}", start)
    for tag in _RO_OPTIONAL:
        v = _value(measurements.get(tag))
        if v is not None:
            measured[tag] = v
    if (
        measured.get("cip_active", 0.0) >= 0.5
        or measured["permeate_flow_m3h"] <= 0.0
        or measured["feed_flow_m3h"] <= 0.0
    ):
        return PreviewResult("ro", False, "the plant is not producing (stopped or in CIP)", start)
    current: dict[str, float] = {}
    for tag in _RO_SETPOINTS:
        v = hold.get(tag) if hold is not None and tag in hold else _value(measurements.get(tag))
        if v is None or not math.isfinite(v):
            return PreviewResult(
                "ro", False, f"the current value of setpoint {tag} is unknown", start
            )
        current[tag] = float(v)
    full = {HOLD: current}
    full.update({name: {**current, **dict(sp)} for name, sp in scenarios.items()})
    return RoTwin(measured).run(full, horizon_s, dt_s, start)


def writable_setpoints(process: str) -> tuple[str, ...]:
    """Setpoint tags a preview of ``process`` accepts (empty for processes without a twin)."""
    if process != "ro":
        return ()
    return tuple(t.name for t in RO_CATALOG.by_role(TagRole.SETPOINT))


__all__ = [
    "HOLD",
    "MAX_HORIZON_S",
    "MIN_HORIZON_S",
    "PreviewResult",
    "RoTwin",
    "Trajectory",
    "TwinFit",
    "preview",
    "writable_setpoints",
]
