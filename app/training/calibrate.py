"""System identification of the RO twin from logged plant data (``intelwatt retrain`` step 2).

Method (replay fit, vectorised over candidate parameter sets):

1. **Replay.** The logged applied set-points (and CIP commands) and the measured feed properties
   (conductivity → TDS, temperature, pH, ORP) drive :class:`~app.plant.models.ro.RoModel` with
   one plant per candidate parameter set, step by step over the log's plant time, so fouling
   accumulates in the model as in the plant. The time step comes from the plant's own counter
   ``hours_since_cip_h`` where it runs (robust to a console logging an accelerated simulator),
   else from the record time stamps.
2. **Residuals.** Model minus measurement at every usable record (``app.training.data``), weighted
   by the sensor standard deviation of :mod:`app.plant.noise`, for permeate flow (water
   permeability A, fouling), permeate conductivity (salt permeability B) and HP-pump power (pump
   efficiency).
3. **Pump efficiency is profiled out exactly**: the model's power is hydraulic power / η and the
   hydraulic power does not depend on A, B or fouling, so the best 1/η of every candidate is a
   weighted linear least-squares solution.
4. **Search** over x = log(θ/θ_default) for θ = (A, B, k_fp): a coarse grid (one replay with every
   grid point as a plant), then Levenberg–Marquardt with a central-difference Jacobian (one replay
   of the 7-point stencil per iteration, one of the trial steps).
5. **Uncertainty.** Gauss–Newton covariance s²·(JᵀJ)⁻¹ at the optimum (s² the reduced χ²), so the
   reported standard errors include the model mismatch seen as residual; a parameter is called
   identifiable when its relative standard error is below :data:`IDENTIFIABLE_REL_STD`. Fouling
   is identified only from the drift of the normalised permeate flow, so short windows leave it
   loosely determined, and that is what the report says.

Assumption (stated in the report): the membrane state at the first record is taken as clean
(``initial_fouling_ratio`` = 0 unless given), so A is the effective permeability at the start of
the window; a fouled start shows as a lower A, not as a wrong k_fp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.plant.catalog import RO_CATALOG
from app.plant.models.ro import RO_PARAMETERS, RoModel
from app.plant.noise import NOISE_BY_UNIT
from app.training.data import TransitionLog

F64 = npt.NDArray[np.float64]

FITTED = ("water_permeability_lmh_bar", "salt_permeability_m_s", "fouling_rate_pa_s_m2")
"""Parameters searched (log scale); ``pump_efficiency`` is profiled out."""
PUMP = "pump_efficiency"
FIT_TAGS = ("permeate_flow_m3h", "permeate_conductivity_uscm", "hpp_power_kw")
REPORT_TAGS = ("feed_pressure_bar", "concentrate_flow_m3h", "stage_dp_bar", "recovery_pct")
"""Tags whose fit is reported but not used (a check of the calibrated model)."""
SEARCH_BOX = {
    "water_permeability_lmh_bar": (0.25, 4.0),
    "salt_permeability_m_s": (0.1, 10.0),
    "fouling_rate_pa_s_m2": (0.02, 50.0),
}
"""Search range as factors of the default value."""
GRID = {
    "water_permeability_lmh_bar": 6,
    "salt_permeability_m_s": 5,
    "fouling_rate_pa_s_m2": 9,
}
IDENTIFIABLE_REL_STD = 0.10
_STEP = 0.02
"""Central-difference step in log space."""
_TOLERANCE = 1e-4
"""Relative χ² gain below which the search stops."""
_REPLAY_LIMITS = {
    "feed_pressure_trip_bar": 150.0,
    "feed_pressure_soft_bar": 149.0,
    "vessel_dp_trip_bar": 20.0,
    "vessel_dp_soft_bar": 19.0,
    "temperature_trip_c": 100.0,
    "orp_trip_mv": 1500.0,
    "ph_trip_low": 0.0,
    "ph_trip_high": 14.0,
}
"""Trip limits lifted in the replay: where the plant ran, every candidate must run too (a
candidate tripping on its own would score zeros, not physics); plant trips are masked records."""
_DISTURBANCE_TAGS = {
    "feed_temperature_c": "feed_temperature_c",
    "feed_ph": "feed_ph",
    "feed_orp_mv": "feed_orp_mv",
}


class CalibrationError(ValueError):
    """The data cannot calibrate the twin (the message names what is missing)."""


@dataclass(slots=True)
class TagFit:
    """Fit quality of one tag over the scored records.

    Attributes:
        r2: Coefficient of determination.
        rmse: Root-mean-square error in the tag's unit.
        bias: Mean of model − measurement.
        sigma: Sensor standard deviation used as weight (typical value).
        n: Records scored.
    """

    r2: float
    rmse: float
    bias: float
    sigma: float
    n: int


@dataclass(slots=True)
class Calibration:
    """Result of :func:`calibrate_ro`.

    Attributes:
        params: Estimated parameters (A, B, k_fp, η) by RoModel name.
        defaults: The simulator's values of the same parameters.
        std: Standard error per parameter (same units).
        correlation: Correlation matrix of the searched parameters (log scale), row/column order
            of :data:`FITTED`.
        fit: Fit quality per tag (fitted and reported tags).
        n_records: Records scored.
        reduced_chi2: χ² per degree of freedom at the optimum (≈ 1 if the model explains the
            data down to sensor noise).
        iterations: Levenberg–Marquardt iterations.
        replays: Replays run (each vectorised over its candidates).
        plant_hours: Plant time replayed.
        time_scale: Plant seconds per logged second (1 for a real plant).
        fixed: Parameters held fixed in the replay (e.g. the initial fouling state).
        notes: Plain-language caveats for the report.
    """

    params: dict[str, float]
    defaults: dict[str, float]
    std: dict[str, float]
    correlation: list[list[float]]
    fit: dict[str, TagFit]
    n_records: int
    reduced_chi2: float
    iterations: int
    replays: int
    plant_hours: float
    time_scale: float
    fixed: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def rel_std(self, name: str) -> float:
        """Relative standard error of one parameter."""
        return self.std[name] / abs(self.params[name])

    def identifiable(self, name: str) -> bool:
        """True if the data pins the parameter within :data:`IDENTIFIABLE_REL_STD`."""
        return self.rel_std(name) <= IDENTIFIABLE_REL_STD

    def simulator_params(self) -> dict[str, float]:
        """Parameter overrides for ``RoModel``/``EnvOptions.params`` (the calibrated twin)."""
        return {**self.fixed, **self.params}

    def to_json(self) -> dict[str, Any]:
        """JSON form for the promotion report."""
        return {
            "method": "replay fit: coarse grid + Levenberg-Marquardt on log(A, B, k_fp); "
            "pump efficiency profiled (linear least squares)",
            "params": {
                k: {
                    "value": v,
                    "default": self.defaults[k],
                    "ratio_to_default": v / self.defaults[k],
                    "std": self.std[k],
                    "rel_std": self.rel_std(k),
                    "identifiable": self.identifiable(k),
                }
                for k, v in self.params.items()
            },
            "correlation": {"order": list(FITTED), "matrix": self.correlation},
            "fit": {
                k: {"r2": f.r2, "rmse": f.rmse, "bias": f.bias, "sigma": f.sigma, "n": f.n}
                for k, f in self.fit.items()
            },
            "n_records": self.n_records,
            "reduced_chi2": self.reduced_chi2,
            "iterations": self.iterations,
            "replays": self.replays,
            "plant_hours": self.plant_hours,
            "time_scale": self.time_scale,
            "fixed": self.fixed,
            "notes": self.notes,
        }

    def table(self) -> str:
        """Markdown tables of the parameters and the fit."""
        lines = [
            "| parameter | estimate | ± std | default | identifiable |",
            "|---|---|---|---|---|",
        ]
        for k, v in self.params.items():
            ok = "yes" if self.identifiable(k) else "no"
            lines.append(
                f"| {k} | {v:.4g} | {self.std[k]:.2g} ({100 * self.rel_std(k):.1f} %) | "
                f"{self.defaults[k]:.4g} | {ok} |"
            )
        lines += ["", "| tag | R² | RMSE | bias | σ sensor | n |", "|---|---|---|---|---|---|"]
        for k, f in self.fit.items():
            mark = "" if k in FIT_TAGS else " (check)"
            lines.append(
                f"| {k}{mark} | {f.r2:.4f} | {f.rmse:.4g} | {f.bias:+.3g} | {f.sigma:.3g} | {f.n} |"
            )
        return "\n".join(lines)


@dataclass(slots=True)
class _Replay:
    """Inputs of a replay: one row per step, and which steps are scored."""

    dt: F64
    setpoints: dict[str, F64]
    disturbances: dict[str, F64]
    initial: dict[str, float]
    scored: npt.NDArray[np.bool_]
    measured: dict[str, F64]
    sigma: dict[str, F64]
    time_scale: float


def _sigma(tag: str, values: F64) -> F64:
    t = RO_CATALOG.tag(tag)
    spec = NOISE_BY_UNIT.get(t.unit)
    if spec is None:
        return np.full(values.shape, 1e-3 * (t.high - t.low))
    s = spec.full_scale * (t.high - t.low) + spec.reading * np.abs(values) + spec.absolute
    # A floor keeps near-zero readings (and exact tags) from dominating the weights.
    return np.maximum(s, 1e-3 * (t.high - t.low))


def _hold(values: F64, default: float) -> F64:
    """Replace non-finite values by the last finite one (``default`` before the first)."""
    out = values.copy()
    last = default
    for i in range(out.size):
        if math.isfinite(out[i]):
            last = out[i]
        else:
            out[i] = last
    return out


def _time_scale(log: TransitionLog, good: npt.NDArray[np.bool_]) -> float:
    hsc = log.obs.get("hours_since_cip_h")
    if hsc is None:
        return 1.0
    d_plant = np.diff(hsc) * 3600.0
    d_log = np.diff(log.times)
    ok = good[1:] & good[:-1] & (d_plant > 0) & (d_log > 0) & np.isfinite(d_plant)
    if ok.sum() < 3:
        return 1.0
    return float(np.median(d_plant[ok] / d_log[ok]))


def _prepare(log: TransitionLog, good: npt.NDArray[np.bool_], time_scale: float | None) -> _Replay:
    n = len(log)
    if n < 3:
        raise CalibrationError(f"{log.source}: {n} records; calibration needs a time series")
    need = [*FIT_TAGS, "feed_conductivity_uscm", "feed_temperature_c"]
    missing = [t for t in need if t not in log.obs]
    if missing:
        raise CalibrationError(f"{log.source}: tag(s) {missing} not logged; cannot calibrate")
    scale = time_scale if time_scale is not None else _time_scale(log, good)
    if not (math.isfinite(scale) and scale > 0):
        raise CalibrationError(f"time scale must be positive, got {scale}")
    dt = np.diff(log.times) * scale
    hsc = log.obs.get("hours_since_cip_h")
    if hsc is not None:
        d_plant = np.diff(hsc) * 3600.0
        use = np.isfinite(d_plant) & (d_plant > 0)
        dt = np.where(use, d_plant, dt)
    if not np.all(dt > 0):
        bad = int(np.flatnonzero(~(dt > 0))[0])
        raise CalibrationError(f"{log.source}: records {bad} and {bad + 1} are not in time order")
    sp: dict[str, F64] = {}
    for tag in ("feed_pressure_sp_bar", "feed_flow_sp_m3h"):
        applied = log.applied.get(tag, np.full(n, np.nan))[:-1]
        readback = log.obs.get(tag, np.full(n, np.nan))[1:]
        merged = np.where(np.isfinite(applied), applied, readback)
        if not np.isfinite(merged).any():
            raise CalibrationError(f"{log.source}: set-point {tag} neither applied nor read back")
        sp[tag] = _hold(merged, float(merged[np.isfinite(merged)][0]))
    cip = log.applied.get("cip_request")
    if cip is not None:
        sp["cip_request"] = _hold(cip[:-1], 0.0)
    tds_factor = RO_PARAMETERS["tds_per_conductivity"].default
    dist = {"feed_tds_gl": log.obs["feed_conductivity_uscm"] * tds_factor / 1e3}
    for tag, name in _DISTURBANCE_TAGS.items():
        if tag in log.obs:
            dist[name] = log.obs[tag]
    dist = {k: _hold(v[1:], RoModel.disturbance_defaults[k])[:] for k, v in dist.items()}
    first = {
        k: float(
            _hold(
                log.obs[t] if t in log.obs else np.full(n, np.nan), RoModel.disturbance_defaults[k]
            )[0]
        )
        for k, t in (
            ("feed_temperature_c", "feed_temperature_c"),
            ("feed_ph", "feed_ph"),
            ("feed_orp_mv", "feed_orp_mv"),
        )
    }
    first["feed_tds_gl"] = float(
        _hold(log.obs["feed_conductivity_uscm"], 2000.0)[0] * tds_factor / 1e3
    )
    first["initial_feed_pressure_bar"] = float(sp["feed_pressure_sp_bar"][0])
    first["initial_feed_flow_m3h"] = float(sp["feed_flow_sp_m3h"][0])
    scored = good[1:] & good[:-1]
    measured = {t: log.obs[t][1:] for t in (*FIT_TAGS, *REPORT_TAGS) if t in log.obs}
    for t, v in measured.items():
        scored &= np.isfinite(v) if t in FIT_TAGS else True
    if scored.sum() < 10:
        raise CalibrationError(
            f"{log.source}: only {int(scored.sum())} consecutive usable record pairs "
            "(need at least 10)"
        )
    sigma = {t: _sigma(t, np.nan_to_num(v)) for t, v in measured.items()}
    return _Replay(dt, sp, dist, first, scored, measured, sigma, scale)


class _Fitter:
    """Replays candidates and turns their predictions into weighted residuals."""

    def __init__(
        self, rep: _Replay, fixed: Mapping[str, float], n_segments: int, n_iterations: int
    ) -> None:
        self.rep = rep
        self.fixed = dict(fixed)
        self.defaults = np.array([RO_PARAMETERS[k].default for k in FITTED])
        self.n_segments = n_segments
        self.n_iterations = n_iterations
        self.replays = 0

    def theta(self, x: F64) -> F64:
        """Parameter values of log-offsets ``x`` (shape (K, 3))."""
        lo = np.array([RO_PARAMETERS[k].low for k in FITTED])
        hi = np.array([RO_PARAMETERS[k].high for k in FITTED])
        return np.asarray(np.clip(self.defaults * np.exp(x), lo, hi), dtype=np.float64)

    def predict(self, x: F64) -> dict[str, F64]:
        """Model outputs at the scored steps for every candidate row of ``x``: tag → (K, M)."""
        self.replays += 1
        rep = self.rep
        theta = self.theta(np.atleast_2d(x))
        k = theta.shape[0]
        model = RoModel(k, n_segments=self.n_segments, n_iterations=self.n_iterations)
        params: dict[str, F64 | float] = {**rep.initial, **self.fixed, **_REPLAY_LIMITS}
        for j, name in enumerate(FITTED):
            params[name] = theta[:, j]
        params[PUMP] = RO_PARAMETERS[PUMP].default
        model.reset(np.random.default_rng(0), params=params)
        idx = np.flatnonzero(rep.scored)
        out = {t: np.empty((k, idx.size)) for t in rep.measured}
        pos = 0
        for i in range(rep.dt.size):
            model.step(
                {name: v[i] for name, v in rep.setpoints.items()},
                {name: v[i] for name, v in rep.disturbances.items()},
                float(rep.dt[i]),
            )
            if rep.scored[i]:
                meas = model.measurements()
                for t, arr in out.items():
                    arr[:, pos] = meas[t]
                pos += 1
        return out

    def profile_pump(self, power: F64) -> F64:
        """Best η per candidate for predicted power rows ``power`` (computed at the default η)."""
        meas = self.rep.measured["hpp_power_kw"][self.rep.scored]
        w = 1.0 / self.rep.sigma["hpp_power_kw"][self.rep.scored] ** 2
        hyd = power * RO_PARAMETERS[PUMP].default
        inv = (hyd * meas * w).sum(axis=1) / np.maximum((hyd * hyd * w).sum(axis=1), 1e-300)
        lo, hi = RO_PARAMETERS[PUMP].low, RO_PARAMETERS[PUMP].high
        return np.asarray(np.clip(1.0 / np.maximum(inv, 1e-12), lo, hi), dtype=np.float64)

    def residuals(self, pred: dict[str, F64]) -> tuple[F64, F64]:
        """Weighted residual matrix (K, N) over :data:`FIT_TAGS` and the profiled η per row."""
        s = self.rep.scored
        eta = self.profile_pump(pred["hpp_power_kw"])
        rows = []
        for t in FIT_TAGS:
            model = pred[t]
            if t == "hpp_power_kw":
                model = model * (RO_PARAMETERS[PUMP].default / eta)[:, None]
            rows.append((model - self.rep.measured[t][s]) / self.rep.sigma[t][s])
        return np.concatenate(rows, axis=1), eta


def calibrate_ro(
    log: TransitionLog,
    good: npt.NDArray[np.bool_],
    *,
    time_scale: float | None = None,
    fixed: Mapping[str, float] | None = None,
    max_iterations: int = 8,
    n_segments: int = 10,
    n_iterations: int = 3,
) -> Calibration:
    """Estimate A, B, k_fp and pump efficiency of an RO train from its logged transitions.

    Args:
        log: Transitions in time order (``app.training.data.load_transitions``).
        good: Usable records (``QualityReport.good``); the others are replayed, not scored.
        time_scale: Plant seconds per logged second (default: estimated from
            ``hours_since_cip_h``, else 1).
        fixed: Other RoModel parameters of the site (held fixed), e.g. ``n_vessels`` or
            ``initial_fouling_ratio``.
        max_iterations: Levenberg–Marquardt iterations after the grid.
        n_segments: Model discretisation (as the simulator the agents train on).
        n_iterations: Fixed-point iterations per step (as the simulator).

    Raises:
        CalibrationError: Wrong process, missing tags, too few usable records.
    """
    if log.process != "ro":
        raise CalibrationError(f"system identification is implemented for ro, not {log.process!r}")
    if good.shape != (len(log),):
        raise CalibrationError(f"good mask has shape {good.shape}, log has {len(log)} records")
    fixed_params = dict(fixed or {})
    for name in fixed_params:
        if name in (*FITTED, PUMP):
            raise CalibrationError(f"fixed parameter {name!r} is one of the estimated ones")
    rep = _prepare(log, good, time_scale)
    fitter = _Fitter(rep, fixed_params, n_segments, n_iterations)
    # Coarse grid: every point is one plant of a single vectorised replay.
    axes = [
        np.linspace(math.log(SEARCH_BOX[k][0]), math.log(SEARCH_BOX[k][1]), GRID[k]) for k in FITTED
    ]
    grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    res, _ = fitter.residuals(fitter.predict(grid))
    x = grid[int(np.argmin((res * res).sum(axis=1)))]
    lo = np.log([SEARCH_BOX[k][0] for k in FITTED])
    hi = np.log([SEARCH_BOX[k][1] for k in FITTED])
    p = len(FITTED)
    iterations = 0
    jac = np.zeros((1, p))
    converged = False
    while True:
        stencil = np.vstack([x, x + _STEP * np.eye(p), x - _STEP * np.eye(p)])
        res, _ = fitter.residuals(fitter.predict(stencil))
        r0 = res[0]
        jac = ((res[1 : 1 + p] - res[1 + p :]) / (2.0 * _STEP)).T
        if converged or iterations >= max_iterations:
            break
        cost0 = float(r0 @ r0)
        jtj = jac.T @ jac
        g = jac.T @ r0
        trials = []
        for lam in (1e-4, 1e-1, 1.0):
            a = jtj + lam * np.diag(np.maximum(np.diag(jtj), 1e-12))
            trials.append(np.clip(x - np.linalg.solve(a, g), lo, hi))
        # Fouling acts through a slow drift; the cost is curved along log k_fp, and a doubled
        # Gauss-Newton step saves iterations when the valley is long.
        trials.append(np.clip(x + 2.0 * (trials[0] - x), lo, hi))
        res_t, _ = fitter.residuals(fitter.predict(np.array(trials)))
        costs = (res_t * res_t).sum(axis=1)
        best = int(np.argmin(costs))
        iterations += 1
        if costs[best] >= cost0:
            break
        gain = (cost0 - float(costs[best])) / cost0
        step = float(np.max(np.abs(trials[best] - x)))
        x = trials[best]
        # The stencil of the next pass gives the Jacobian at the final point (the covariance).
        converged = gain < _TOLERANCE or step < 1e-3
    final = fitter.predict(x[None, :])
    res, eta = fitter.residuals(final)
    r0 = res[0]
    n_res, theta = r0.size, fitter.theta(x[None, :])[0]
    dof = max(n_res - p - 1, 1)
    s2 = float(r0 @ r0) / dof
    cov = s2 * np.linalg.pinv(jac.T @ jac)
    std_x = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(std_x, std_x)
    params = {name: float(theta[j]) for j, name in enumerate(FITTED)}
    std = {name: float(theta[j] * std_x[j]) for j, name in enumerate(FITTED)}
    eta_v = float(eta[0])
    s = rep.scored
    w = 1.0 / rep.sigma["hpp_power_kw"][s] ** 2
    hyd = final["hpp_power_kw"][0] * RO_PARAMETERS[PUMP].default
    chi_p = float((((hyd / eta_v - rep.measured["hpp_power_kw"][s]) ** 2) * w).sum())
    var_inv = (chi_p / max(int(s.sum()) - 1, 1)) / float((hyd * hyd * w).sum())
    params[PUMP] = eta_v
    std[PUMP] = eta_v * eta_v * math.sqrt(var_inv)
    fit = {}
    for tag, pred in final.items():
        model = (
            pred[0] * (RO_PARAMETERS[PUMP].default / eta_v) if tag == "hpp_power_kw" else pred[0]
        )
        fit[tag] = _tag_fit(model, rep.measured[tag][s], rep.sigma[tag][s])
    defaults = {k: RO_PARAMETERS[k].default for k in params}
    cal = Calibration(
        params=params,
        defaults=defaults,
        std=std,
        correlation=np.nan_to_num(corr).round(4).tolist(),
        fit=fit,
        n_records=int(s.sum()),
        reduced_chi2=s2,
        iterations=iterations,
        replays=fitter.replays,
        plant_hours=float(rep.dt.sum() / 3600.0),
        time_scale=rep.time_scale,
        fixed={"initial_fouling_ratio": 0.0, **fixed_params},
    )
    cal.notes.append(
        "membrane taken as clean at the first record: A is the effective permeability at the "
        "start of the window"
    )
    for name in params:
        if not cal.identifiable(name):
            cal.notes.append(
                f"{name} is poorly identified (±{100 * cal.rel_std(name):.0f} %): the window "
                "does not excite it enough; the twin keeps the estimate but gates must not "
                "rely on it"
            )
    if s2 > 4.0:
        cal.notes.append(
            f"reduced χ² {s2:.1f} > 4: the model does not explain the data down to sensor noise"
        )
    return cal


def _tag_fit(model: F64, meas: F64, sigma: F64) -> TagFit:
    ok = np.isfinite(meas)
    m, y = model[ok], meas[ok]
    if y.size == 0:
        return TagFit(math.nan, math.nan, math.nan, math.nan, 0)
    err = m - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((err * err).sum()) / ss_tot if ss_tot > 0 else math.nan
    return TagFit(
        r2=r2,
        rmse=float(np.sqrt((err * err).mean())),
        bias=float(err.mean()),
        sigma=float(np.median(sigma[ok])),
        n=int(y.size),
    )
