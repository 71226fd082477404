"""RO baselines: base control, rule-based cleaning and hourly re-optimised setpoints.

``optimal_hourly`` re-optimises the two setpoints every hour on a twin of the plant model. What the
twin knows:

- From measurements (estimated, no hidden truth): feed TDS (conductivity), temperature, pH, ORP,
  tank level, demand and tariff (published inputs), the *effective* water permeability (fouling
  included) and the salt permeability, both calibrated each hour so that the twin reproduces the
  measured permeate flow and conductivity at the current setpoints.
- From the design (oracle, as a plant engineer has the datasheets): geometry, pump, valve, limits
  and all other parameters, read from ``ProcessModel.params()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from app import kpi
from app.plant.base_control import RoBaseControl, RoDesign, setpoint_limits
from app.plant.catalog import ProcessCatalog
from app.plant.economics import step_cost_eur
from app.plant.models.base import FloatArray, Policy, ProcessModel


class RoRuleBased(RoBaseControl):
    """Base control plus the operator's CIP rule on ASTM D4516-normalised KPIs (``app.kpi``).

    A CIP is requested when, against the reference taken once the plant has settled after
    start-up, the normalised permeate flow falls by ``npf_drop`` (10 %), the normalised salt
    passage rises by ``nsp_rise`` (10 %) or the normalised ΔP rises by ``dp_rise`` (15 %)
    [P21, P22]. The KPIs are smoothed over ``smoothing_h``; no CIP within ``min_interval_h`` of
    the previous one. The calendar CIP of the base control is off.
    """

    name = "rule_based"

    def __init__(
        self,
        catalog: ProcessCatalog,
        design: RoDesign | None = None,
        npf_drop: float = 0.10,
        nsp_rise: float = 0.10,
        dp_rise: float = 0.15,
        settle_h: float = 2.0,
        smoothing_h: float = 6.0,
        min_interval_h: float = 72.0,
    ) -> None:
        base = design or RoDesign()
        super().__init__(catalog, RoDesign(base.permeate_flow_m3h, base.recovery, 1e9, base.tau_s))
        self.npf_drop, self.nsp_rise, self.dp_rise = npf_drop, nsp_rise, dp_rise
        self.settle_h, self.smoothing_h, self.min_interval_h = settle_h, smoothing_h, min_interval_h
        self._ref: dict[str, FloatArray] = {}
        self._ema: dict[str, FloatArray] = {}
        self.last_ratios: dict[str, FloatArray] = {}

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget loop state, the normalisation reference and the smoothed KPIs."""
        super().reset(n, rng)
        self._ref = {k: np.full(n, np.nan) for k in ("npf", "nsp", "dp")}
        self._ema = {k: np.full(n, np.nan) for k in ("npf", "nsp", "dp")}
        self.last_ratios = {}

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Base-control setpoints; ``cip_request`` from the normalised-KPI rule."""
        out = super().act(measurements, t_s, dt_s)
        m = measurements
        specific = specific_kpis(m)
        cip = np.asarray(m["cip_active"], dtype=np.float64) >= 0.5
        hours = np.asarray(m["hours_since_cip_h"], dtype=np.float64)
        ok = ~cip & np.isfinite(specific["npf"]) & (hours >= self.settle_h)
        alpha = -np.expm1(-dt_s / (self.smoothing_h * 3600.0))
        ratios: dict[str, FloatArray] = {}
        for key, value in specific.items():
            ema = self._ema[key]
            ema = np.where(ok & np.isnan(ema), value, ema)
            ema = np.where(ok, ema + alpha * (value - ema), ema)
            self._ema[key] = ema
            self._ref[key] = np.where(ok & np.isnan(self._ref[key]), value, self._ref[key])
            ratios[key] = ema / self._ref[key]
        self.last_ratios = ratios
        trigger = (
            (ratios["npf"] <= 1.0 - self.npf_drop)
            | (ratios["nsp"] >= 1.0 + self.nsp_rise)
            | (ratios["dp"] >= 1.0 + self.dp_rise)
        )
        due = ok & trigger & (hours >= self.min_interval_h)
        # After a CIP the smoothing restarts from the cleaned state.
        for key in self._ema:
            self._ema[key] = np.where(due, np.nan, self._ema[key])
        out["cip_request"] = due.astype(np.float64)
        return out


_UNIT_REFERENCE = kpi.NormalizationReference(
    ndp_bar=1.0,
    temperature_c=kpi.REFERENCE_TEMPERATURE_C,
    permeate_flow_m3h=1.0,
    salt_passage=1.0,
    concentration_ratio=1.0,
    mean_feed_concentrate_flow_m3h=1.0,
    dp_bar=1.0,
)
"""With a unit reference ``ro_normalized_kpis`` returns specific values whose ratio to their value
at any reference point equals the ASTM D4516 ratio against that point (per plant, vectorised)."""


def specific_kpis(m: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """NPF, NSP and normalised ΔP against the unit reference (ratios between times are the KPIs)."""
    k = kpi.ro_normalized_kpis(
        feed_pressure_bar=m["feed_pressure_bar"],
        concentrate_pressure_bar=m["concentrate_pressure_bar"],
        permeate_pressure_bar=m["permeate_pressure_bar"],
        feed_flow_m3h=m["feed_flow_m3h"],
        permeate_flow_m3h=m["permeate_flow_m3h"],
        feed_conductivity_uscm=m["feed_conductivity_uscm"],
        permeate_conductivity_uscm=m["permeate_conductivity_uscm"],
        feed_temperature_c=m["feed_temperature_c"],
        reference=_UNIT_REFERENCE,
    )
    # ASTM D4516 also normalises salt passage to the reference temperature (salt transport has a
    # temperature factor too); ``ro_normalized_kpis`` leaves it out, so it is applied here.
    tcf = kpi.temperature_correction_factor(m["feed_temperature_c"])
    return {"npf": k.npf_m3h, "nsp": k.nsp / tcf, "dp": k.dp_norm_bar}


class RoOptimalHourly(Policy):
    """Hourly steady-state re-optimisation of feed pressure and feed flow on a model twin.

    Every ``period_s`` the policy builds a twin with ``n × G`` plants (one per plant and grid
    point), starts each at its candidate setpoints, the measured state and the measured inputs,
    runs it for one period and keeps, per plant, the candidate with the highest economic value
    (water value − energy cost, ``app.plant.economics``) among those without quality or pressure
    excess, trip, recovery above ``max_recovery`` or concentrate flow below
    ``min_concentrate_m3h``. A coarse grid over the PLC ranges is followed by a finer one around
    the best point. Between re-optimisations the setpoints are held. See the module docstring for
    which parameters are estimated.

    Args:
        catalog: The RO catalogue.
        period_s: Re-optimisation period.
        coarse: Grid points per setpoint in the first pass.
        fine: Grid points per setpoint in the refinement.
        max_recovery: Design limit against scaling (CF 4 at the tail) [J].
        min_concentrate_m3h: Minimum concentrate flow of the train (3.6 m³/h per 8" vessel) [P14].
    """

    name = "optimal_hourly"

    def __init__(
        self,
        catalog: ProcessCatalog,
        period_s: float = 3600.0,
        coarse: int = 6,
        fine: int = 5,
        max_recovery: float = 0.75,
        min_concentrate_m3h: float = 14.4,
    ) -> None:
        self.catalog = catalog
        self.period_s = period_s
        self.coarse, self.fine = coarse, fine
        self.max_recovery = max_recovery
        self.min_concentrate_m3h = min_concentrate_m3h
        self._p_lim = setpoint_limits(catalog, "feed_pressure_sp_bar")
        self._q_lim = setpoint_limits(catalog, "feed_flow_sp_m3h")
        self._model: ProcessModel | None = None
        self._fallback = RoBaseControl(catalog)
        self._next_t = 0.0
        self._sp: dict[str, FloatArray] = {}
        self._scale: dict[str, FloatArray] = {}
        self.last_value_eur_h: FloatArray = np.zeros(0)

    def bind(self, model: ProcessModel) -> None:
        """Use ``model`` (the plant) as the template of the twin (its class and design data)."""
        self._model = model

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget the held setpoints and the calibration."""
        self._fallback.reset(n, rng)
        self._next_t = 0.0
        self._sp = {}
        self._scale = {"a": np.ones(n), "b": np.ones(n)}

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Held setpoints; re-optimised when the period has elapsed."""
        if self._model is None:
            raise RuntimeError("optimal_hourly needs the plant model: call bind(model) first")
        base = self._fallback.act(measurements, t_s, dt_s)
        if not self._sp or t_s >= self._next_t - 1e-6:
            self._sp = self._optimise(measurements, base)
            self._next_t = t_s + self.period_s
        cip = np.asarray(measurements["cip_active"], dtype=np.float64) >= 0.5
        return {
            "feed_pressure_sp_bar": self._sp["feed_pressure_sp_bar"].copy(),
            "feed_flow_sp_m3h": self._sp["feed_flow_sp_m3h"].copy(),
            "cip_request": np.where(cip, 0.0, base["cip_request"]),
        }

    # --- the twin -------------------------------------------------------------------------------

    def _optimise(
        self, m: Mapping[str, FloatArray], base: Mapping[str, FloatArray]
    ) -> dict[str, FloatArray]:
        n = np.asarray(m["feed_pressure_bar"]).size
        running = np.asarray(m["permeate_flow_m3h"], dtype=np.float64) > 0.0
        p_now = np.asarray(m["feed_pressure_sp_bar"], dtype=np.float64)
        q_now = np.asarray(m["feed_flow_sp_m3h"], dtype=np.float64)
        self._calibrate(m, p_now, q_now, running)

        p_lo, p_hi = self._p_lim
        q_lo, q_hi = self._q_lim
        p_grid = np.linspace(p_lo, p_hi, self.coarse)
        q_grid = np.linspace(q_lo, q_hi, self.coarse)
        pp, qq = (np.tile(g, (n, 1)) for g in np.meshgrid(p_grid, q_grid, indexing="ij"))
        pp, qq = pp.reshape(n, -1), qq.reshape(n, -1)
        value, feasible = self._evaluate(m, pp, qq)
        best = _argbest(value, feasible)
        rows = np.arange(n)
        p_best, q_best = pp[rows, best], qq[rows, best]
        dp = (p_hi - p_lo) / (self.coarse - 1)
        dq = (q_hi - q_lo) / (self.coarse - 1)
        offs = np.linspace(-1.0, 1.0, self.fine)
        op, oq = (o.ravel() for o in np.meshgrid(offs * dp, offs * dq, indexing="ij"))
        pp2 = np.clip(p_best[:, None] + op[None, :], p_lo, p_hi)
        qq2 = np.clip(q_best[:, None] + oq[None, :], q_lo, q_hi)
        value2, feasible2 = self._evaluate(m, pp2, qq2)
        best2 = _argbest(value2, feasible2)
        any_ok = feasible2[rows, best2]
        self.last_value_eur_h = np.where(any_ok, value2[rows, best2], np.nan)
        # Without a feasible candidate (or while stopped) the base control decides.
        use = any_ok & running
        return {
            "feed_pressure_sp_bar": np.where(use, pp2[rows, best2], base["feed_pressure_sp_bar"]),
            "feed_flow_sp_m3h": np.where(use, qq2[rows, best2], base["feed_flow_sp_m3h"]),
        }

    def _calibrate(
        self, m: Mapping[str, FloatArray], p_now: FloatArray, q_now: FloatArray, running: np.ndarray
    ) -> None:
        """Scale the twin's A and B until it reproduces the measured permeate flow and quality."""
        twin = self._twin(m, p_now[:, None], q_now[:, None])
        out = twin.measurements()
        qp_meas = np.asarray(m["permeate_flow_m3h"], dtype=np.float64)
        ec_meas = np.asarray(m["permeate_conductivity_uscm"], dtype=np.float64)
        qp_twin = np.asarray(out["permeate_flow_m3h"])
        ec_twin = np.asarray(out["permeate_conductivity_uscm"])
        ok = running & (qp_twin > 0.0) & (ec_twin > 0.0) & np.isfinite(qp_meas * ec_meas)
        with np.errstate(divide="ignore", invalid="ignore"):
            fa = np.clip(qp_meas / qp_twin, 0.5, 2.0)
            fb = np.clip(ec_meas / ec_twin, 0.5, 2.0)
        self._scale["a"] = np.where(ok, self._scale["a"] * fa, self._scale["a"])
        self._scale["b"] = np.where(ok, self._scale["b"] * fb, self._scale["b"])

    def _twin(self, m: Mapping[str, FloatArray], pp: np.ndarray, qq: np.ndarray) -> ProcessModel:
        """A twin with one plant per (plant, candidate), stepped one period at its candidate."""
        assert self._model is not None
        n, g = pp.shape
        twin = self._model.copy()
        cls = type(twin)
        big = cls(n * g)
        params = {k: np.repeat(v, g) for k, v in self._model.params().items()}
        params["water_permeability_lmh_bar"] = np.repeat(
            self._design("water_permeability_lmh_bar") * self._scale["a"], g
        )
        params["salt_permeability_m_s"] = np.repeat(
            self._design("salt_permeability_m_s") * self._scale["b"], g
        )
        params["initial_fouling_ratio"] = np.zeros(n * g)
        params["initial_tank_level_pct"] = np.repeat(np.asarray(m["tank_level_pct"]), g)
        params["initial_feed_pressure_bar"] = pp.ravel()
        params["initial_feed_flow_m3h"] = qq.ravel()
        dist = self._inputs(m)
        params.update({k: np.repeat(v, g) for k, v in dist.items()})
        sp = {"feed_pressure_sp_bar": pp.ravel(), "feed_flow_sp_m3h": qq.ravel()}
        big_dist = {k: np.repeat(v, g) for k, v in dist.items()}
        # Corner candidates (e.g. high pressure at low flow) can overflow inside the model's
        # fixed point; they come out non-finite and are rejected as infeasible.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            big.reset(np.random.default_rng(0), params=params)
            self._last_result = big.step(sp, big_dist, self.period_s)
        self._last_tariff = np.repeat(self._tariff(m), g)
        return big

    def _design(self, name: str) -> FloatArray:
        """Datasheet value of a parameter: the class default, not the plant's (hidden) truth."""
        assert self._model is not None
        n = self._model.n
        specs = getattr(type(self._model), "parameters", None)
        if specs is not None and name in specs:
            return np.full(n, float(specs[name].default))
        return np.asarray(self._model.params()[name], dtype=np.float64)

    def _inputs(self, m: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        """Twin disturbances from measurements and published inputs."""
        assert self._model is not None
        n = np.asarray(m["feed_pressure_bar"]).size
        tds_factor = self._design("tds_per_conductivity")
        out = {
            "feed_tds_gl": kpi.tds_from_conductivity_gl(m["feed_conductivity_uscm"], tds_factor),
            "feed_temperature_c": np.asarray(m["feed_temperature_c"], dtype=np.float64),
            "feed_ph": np.asarray(m["feed_ph"], dtype=np.float64),
            "feed_orp_mv": np.asarray(m["feed_orp_mv"], dtype=np.float64),
            "fouling_factor": np.ones(n),
        }
        if "demand_m3h" in m:
            out["demand_m3h"] = np.asarray(m["demand_m3h"], dtype=np.float64)
        return {k: v for k, v in out.items() if k in self._model.disturbance_names}

    def _tariff(self, m: Mapping[str, FloatArray]) -> FloatArray:
        n = np.asarray(m["feed_pressure_bar"]).size
        return np.asarray(m.get("tariff_eur_kwh", np.full(n, np.nan)), dtype=np.float64)

    def _evaluate(
        self, m: Mapping[str, FloatArray], pp: np.ndarray, qq: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n, g = pp.shape
        twin = self._twin(m, pp, qq)
        r = self._last_result
        out = twin.measurements()
        cost, worth = step_cost_eur("ro", r, {"tariff_eur_kwh": self._last_tariff}, self.period_s)
        value = worth - cost
        rec = np.asarray(out["recovery_pct"]) / 100.0
        feasible = (
            ~np.asarray(r.tripped, dtype=bool)
            & (np.asarray(r.quality_excess) <= 0.0)
            & (np.asarray(r.pressure_excess) <= 0.0)
            & (rec <= self.max_recovery)
            & (np.asarray(out["concentrate_flow_m3h"]) >= self.min_concentrate_m3h)
            & np.isfinite(value)
        )
        hours = self.period_s / 3600.0
        return (np.asarray(value) / hours).reshape(n, g), feasible.reshape(n, g)


def _argbest(value: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    return np.asarray(np.argmax(np.where(feasible, value, -np.inf), axis=1))


FACTORIES: dict[str, Callable[[ProcessCatalog], Policy]] = {
    "fixed_pi": RoBaseControl,
    "rule_based": RoRuleBased,
    "optimal_hourly": RoOptimalHourly,
}
