"""Ultrafiltration with backwash, CEB and CIP (``uf``), after process-models.md §5.

A pressurised hollow-fibre rack filters dead-end at a constant flux set by the feed pump. The
transmembrane pressure follows Darcy's law with resistances in series (UF-1),
``TMP = mu(T)·J·(R_m + R_c + R_hirr + R_cirr)``: the membrane, the cake (removed by backwash),
hydraulically irreversible fouling (removed by CEB) and chemically irreversible fouling (partly
removed by CIP). Deposits grow with the filtered volume, ``dR/dt = k_c·J`` with
``k_c = kc_per_ntu·turbidity·fouling_factor`` (UF-3), split ``1 - f_irr`` to the cake and ``f_irr``
to irreversible fouling, of which ``f_cirr`` is chemically irreversible.

The PLC sequences the cycle: filtration for ``filtration_time_sp_min``, then a backwash of
``bw_duration_sp_s`` (non-producing, consumes filtrate, drains the feed-side hold-up, air scour);
a backwash removes ``eta_bw(t_bw)`` of the cake, saturating in backwash time (UF-5, [P26, P27]).
CEB and CIP run on command, with their own duration, water, chemicals and efficiencies (UF-6).

Agent step: a fixed 30 min (``UF_CATALOG.agent_period_s``), not one filtration cycle. A fixed
period keeps every environment, tariff and scenario on one clock while the cycle length is itself a
setpoint (20-60 min); inside the step the PLC runs the filtration/backwash sequence as real UF
PLCs do, so 30 min is about one cycle and the agent can retune flux, cycle time and backwash every
cycle. Within a step the model is event-driven and exact: with constant flux the resistances grow
linearly in time, so each plant jumps from event to event (cycle end, backwash end, cleaning end,
TMP reaching the 2 bar trip) in a fixed, bounded number of vectorised segments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Final

import numpy as np

from app.plant.catalog import UF_CATALOG, ProcessCatalog
from app.plant.models.base import FloatArray, ProcessModel, StepResult

FILTRATION: Final = 0
BACKWASH: Final = 1
CEB: Final = 2
CIP: Final = 3
"""Sequence states, as served on the ``uf_state`` tag."""

LMH_TO_M_S: Final = 1.0 / 3.6e6
BAR: Final = 1e5
TMP_TRIP_BAR: Final = 2.0
"""Mechanical maximum of the modules: the PLC trips the rack (process-models.md §9)."""
TMP_SOFT_BAR: Final = 1.5
TMP_REF_FLUX_LMH: Final = 60.0
"""Reference flux of the normalised TMP behind ``cip_due``."""
FILTRATE_TURBIDITY_LIMIT_NTU: Final = 0.1

NOMINAL_PARAMS: Final[dict[str, float]] = {
    "area_m2": 616.0,
    "lp0_lmh_bar": 200.0,
    "kc_per_ntu": 1e12,
    "f_irr": 0.02,
    "f_cirr": 0.1,
    "eta_bw_ref": 0.945,
    "bw_ref_s": 30.0,
    "bw_tau_s": 10.0,
    "bw_flux_lmh": 150.0,
    "drain_m3": 0.25,
    "blower_kw": 4.0,
    "eta_ceb": 0.7,
    "ceb_s": 900.0,
    "ceb_bw_volumes": 2.0,
    "ceb_chem_eur": 5.0,
    "eta_cip_hirr": 0.95,
    "eta_cip_cirr": 0.5,
    "cip_s": 14400.0,
    "cip_water_m3": 5.0,
    "cip_chem_eur": 150.0,
    "cip_kw": 10.0,
    "pump_eta": 0.7,
    "line_dp_bar": 0.7,
    "filtrate_pressure_bar": 0.3,
    "tmp_cip_trigger_bar": 1.2,
    "filtrate_ntu_base": 0.02,
    "filtrate_ntu_pass": 5e-4,
}
"""Parameters per plant. Sources (process-models.md §5.2): ``lp0_lmh_bar`` 200-800 [J],
``kc_per_ntu`` gives k_c = 2e12-2e13 m^-2 at 2-20 NTU [J], ``f_irr`` 0.01-0.05 [J],
``eta_bw_ref`` 0.945 [P26], BW flux 2-3x filtration flux [J], ``eta_ceb`` 0.5-0.9 [J]; rack
geometry, costs, durations and pump data are judgement [J]."""

RANDOMIZED_PARAMS: Final = (
    "lp0_lmh_bar",
    "kc_per_ntu",
    "f_irr",
    "eta_bw_ref",
    "eta_ceb",
    "pump_eta",
)
"""Parameters drawn within +-``randomize`` at reset (model mismatch, process-models.md §10)."""


_FLUX = UF_CATALOG.tag("flux_sp_lmh")
_CYCLE = UF_CATALOG.tag("filtration_time_sp_min")
_BW = UF_CATALOG.tag("bw_duration_sp_s")
_COMMANDS: Final = ("bw_request", "ceb_request", "cip_request")
_MIN_CYCLE_S: Final = 60.0 * float(_CYCLE.plc_low or 20.0)


def _per_plant(value: FloatArray | float, n: int) -> FloatArray:
    """``value`` as float64 of shape ``(n,)`` (a read-only broadcast unless it already is)."""
    arr = np.asarray(value, dtype=np.float64)
    return arr if arr.shape == (n,) else np.broadcast_to(arr, (n,))


def viscosity_pa_s(temp_c: FloatArray) -> FloatArray:
    """Water viscosity ``2.414e-5·10^(247.8/(T - 140))`` Pa·s, T in K (RO-8 [P8])."""
    return np.asarray(2.414e-5 * 10.0 ** (247.8 / (np.asarray(temp_c) + 273.15 - 140.0)))


MU_20C: Final = float(viscosity_pa_s(np.asarray(20.0)))


class UfModel(ProcessModel):
    """``n`` UF racks stepped together (see the module docstring for the physics).

    Setpoints: ``flux_sp_lmh`` (ramped at the catalogue rate), ``filtration_time_sp_min``,
    ``bw_duration_sp_s``. Commands (>= 0.5 acts, at the start of the step): ``cip_request`` starts a
    CIP unless one runs; otherwise ``ceb_request`` starts a CEB from filtration or backwash;
    otherwise ``bw_request`` starts a backwash from filtration. Setpoints outside the PLC range are
    clipped (``clip``); ``rate`` counts plants whose flux is still ramping; a TMP of 2 bar trips the
    rack (``interlock``) and it stays stopped until reset.

    Disturbances: ``feed_turbidity_ntu``, ``feed_temperature_c`` and the optional
    ``fouling_factor`` (fouling events); missing keys take ``disturbance_defaults``, unknown keys
    (``demand_m3h``, tariffs) are ignored. ``StepResult``: ``product_m3`` is net filtrate (after
    backwash, CEB and CIP water), ``feed_m3`` the feed drawn (filtrate plus drained hold-up),
    ``downtime_s`` the backwash, CEB, CIP and tripped time, ``quality_excess`` the relative
    filtrate-turbidity excess over 0.1 NTU, ``pressure_excess`` the peak TMP above 1.5 bar as a
    fraction of the 1.5-2 bar margin.
    """

    catalog: ClassVar[ProcessCatalog] = UF_CATALOG
    disturbance_names: ClassVar[tuple[str, ...]] = (
        "feed_turbidity_ntu",
        "feed_temperature_c",
        "fouling_factor",
    )
    disturbance_defaults: ClassVar[dict[str, float]] = {
        "feed_turbidity_ntu": 5.0,
        "feed_temperature_c": 20.0,
        "fouling_factor": 1.0,
    }
    disturbance_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "feed_turbidity_ntu": (0.0, 400.0),
        "feed_temperature_c": (0.0, 40.0),
        "fouling_factor": (0.0, 50.0),
    }
    """Accepted disturbance values; anything outside is a data error (``ValueError``)."""
    accepts_initial_disturbances: ClassVar[bool] = True
    """``reset(params=...)`` takes disturbance names as the values at t = 0."""

    _p: dict[str, FloatArray]
    _s: dict[str, FloatArray]
    _trip_reason: np.ndarray

    def __init__(self, n: int) -> None:
        """Create ``n`` racks with nominal parameters, reset from seed 0."""
        super().__init__(n)
        self._accepted = {t.name for t in UF_CATALOG.writable}
        self.reset(np.random.default_rng(0))

    # --- life cycle -----------------------------------------------------------------------------

    def reset(
        self,
        rng: np.random.Generator,
        randomize: float = 0.0,
        params: Mapping[str, FloatArray | float] | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Start racks clean, at the start of a filtration cycle, at the base setpoints.

        ``params`` overrides ``NOMINAL_PARAMS``, the t = 0 disturbances (``disturbance_names``) and
        the initial setpoints (their tag names).
        """
        n = self.n
        if not 0.0 <= randomize < 1.0:
            raise ValueError(f"randomize must be in [0, 1), got {randomize}")
        sel = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if sel.shape != (n,):
            raise ValueError(f"reset mask must have shape ({n},), got {sel.shape}")
        given = dict(params or {})
        setpoint_tags = (_FLUX.name, _CYCLE.name, _BW.name)
        known = set(NOMINAL_PARAMS) | set(self.disturbance_names) | set(setpoint_tags)
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"uf reset got unknown params {unknown}; known: {sorted(known)}")
        factors = {k: rng.uniform(1.0 - randomize, 1.0 + randomize, n) for k in RANDOMIZED_PARAMS}
        new: dict[str, FloatArray] = {}
        for key, nominal in NOMINAL_PARAMS.items():
            new[key] = np.full(n, nominal) * factors.get(key, 1.0)
        new["eta_bw_ref"] = np.minimum(new["eta_bw_ref"], 0.999)
        new["eta_ceb"] = np.minimum(new["eta_ceb"], 0.99)
        new["pump_eta"] = np.minimum(new["pump_eta"], 0.95)
        initial = {k: np.full(n, v) for k, v in self.disturbance_defaults.items()}
        for tag in (_FLUX, _CYCLE, _BW):
            initial[tag.name] = np.full(n, float(tag.base_value or 0.0))
        for key, raw in given.items():
            arr = np.broadcast_to(np.asarray(raw, dtype=np.float64), (n,)).copy()
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"uf reset param {key!r} is not finite: {raw!r}")
            (new if key in NOMINAL_PARAMS else initial)[key] = arr
        self._check_params(new)
        self._check_disturbances(initial)

        if mask is None or not hasattr(self, "_p"):
            self._p = new
            self._s = {k: np.zeros(n) for k in (*_STATES, *_COUNTERS)}
            self._trip_reason = np.full(n, "", dtype=object)
            sel = np.ones(n, dtype=bool)
        else:
            for key, value in new.items():
                self._p[key] = np.where(sel, value, self._p[key])
        self._r_m = 1.0 / (MU_20C * self._p["lp0_lmh_bar"] * LMH_TO_M_S / BAR)

        flux = np.clip(initial[_FLUX.name], _FLUX.plc_low, _FLUX.plc_high)
        zero = np.zeros(n)
        values: dict[str, FloatArray] = {
            "state": zero,
            "t_state": zero,
            "t_cycle": zero,
            "since_ceb_s": zero,
            "since_cip_s": zero,
            "flux": flux,
            "sp_flux": flux,
            "sp_cycle_min": np.clip(initial[_CYCLE.name], _CYCLE.plc_low, _CYCLE.plc_high),
            "sp_bw_s": np.clip(initial[_BW.name], _BW.plc_low, _BW.plc_high),
            "r_c": zero,
            "r_hirr": zero,
            "r_cirr": zero,
            "turbidity": initial["feed_turbidity_ntu"],
            "temp_c": initial["feed_temperature_c"],
            "fouling_factor": initial["fouling_factor"],
            "tripped": zero,
            "t": zero,
        }
        for key in _COUNTERS:
            values[key] = zero
        s = self._s
        for key, value in values.items():
            s[key] = np.where(sel, value, s[key])
        self._trip_reason = np.where(sel, "", self._trip_reason).astype(object)
        tmp0 = self._tmp_pa(s["flux"], viscosity_pa_s(s["temp_c"]))
        for key in ("tmp_start_pa", "tmp_prev_start_pa", "tmp_prev_end_pa", "tmp_after_bw_pa"):
            s[key] = np.where(sel, tmp0, s[key])

    def _check_params(self, p: Mapping[str, FloatArray]) -> None:
        for key, value in p.items():
            if np.any(value < 0.0):
                raise ValueError(f"uf parameter {key!r} must be ≥ 0, got {value}")
        for key in ("lp0_lmh_bar", "area_m2", "pump_eta", "bw_tau_s", "bw_ref_s"):
            if np.any(p[key] <= 0.0):
                raise ValueError(f"uf parameter {key!r} must be positive, got {p[key]}")
        for key in ("f_irr", "f_cirr", "eta_bw_ref", "eta_ceb", "eta_cip_hirr", "eta_cip_cirr"):
            if np.any(p[key] > 1.0):
                raise ValueError(f"uf parameter {key!r} must be ≤ 1, got {p[key]}")

    def _check_disturbances(self, d: Mapping[str, FloatArray]) -> None:
        for key, (low, high) in self.disturbance_ranges.items():
            value = d[key]
            if not np.all(np.isfinite(value)) or np.any((value < low) | (value > high)):
                raise ValueError(
                    f"uf disturbance {key!r} must be finite in [{low}, {high}]: {value}"
                )

    # --- physics ----------------------------------------------------------------------------------

    def _r_total(self) -> FloatArray:
        s = self._s
        return np.asarray(self._r_m + s["r_c"] + s["r_hirr"] + s["r_cirr"])

    def _tmp_pa(self, flux_lmh: FloatArray, mu: FloatArray) -> FloatArray:
        """Filtration TMP [Pa] at the current resistances (UF-1)."""
        return np.asarray(mu * flux_lmh * LMH_TO_M_S * self._r_total())

    def _eta_bw(self, duration_s: FloatArray) -> FloatArray:
        """Cake fraction a backwash removes, saturating in time (``eta_bw_ref`` at ``bw_ref_s``)."""
        p = self._p
        shape = -np.expm1(-duration_s / p["bw_tau_s"]) / -np.expm1(-p["bw_ref_s"] / p["bw_tau_s"])
        return np.asarray(np.minimum(p["eta_bw_ref"] * shape, 1.0))

    def _bw_volume_m3(self, duration_s: FloatArray) -> FloatArray:
        p = self._p
        return np.asarray(p["bw_flux_lmh"] * LMH_TO_M_S * p["area_m2"] * duration_s)

    def _bw_power_w(self, mu: FloatArray) -> FloatArray:
        """Backwash pump (reverse flow through membrane and irreversible fouling) plus air scour."""
        p, s = self._p, self._s
        q = p["bw_flux_lmh"] * LMH_TO_M_S * p["area_m2"]
        r = self._r_m + s["r_hirr"] + s["r_cirr"]
        head = mu * p["bw_flux_lmh"] * LMH_TO_M_S * r + p["line_dp_bar"] * BAR
        return np.asarray(q * head / p["pump_eta"] + 1e3 * p["blower_kw"])

    def _segment(self, budget: FloatArray, mu: FloatArray, acc: dict[str, FloatArray]) -> None:
        """Advance every running plant to its next event or to the end of ``budget``."""
        s, p = self._s, self._p
        state = s["state"]
        run = (s["tripped"] < 0.5) & (budget > 0.0)
        filt = run & (state == FILTRATION)
        bw = run & (state == BACKWASH)
        ceb = run & (state == CEB)
        cip = run & (state == CIP)
        # np.select of the four exclusive states, as nested wheres (a third of select's cost).
        t_end = np.where(
            filt,
            60.0 * s["sp_cycle_min"] - s["t_cycle"],
            np.where(bw, s["sp_bw_s"], np.where(ceb, p["ceb_s"], np.where(cip, p["cip_s"], 0.0))),
        )
        t_end = np.where(filt, t_end, t_end - s["t_state"])
        seg = np.where(run, np.clip(t_end, 0.0, budget), 0.0)

        # Filtration: TMP rises linearly; find where it reaches the trip limit.
        j_si = s["flux"] * LMH_TO_M_S
        k_c = p["kc_per_ntu"] * s["turbidity"] * s["fouling_factor"]
        tmp0 = mu * j_si * self._r_total()
        slope = mu * j_si * k_c * j_si
        to_trip = (TMP_TRIP_BAR * BAR - tmp0) / np.maximum(slope, 1e-300)
        hits = filt & (to_trip <= seg)
        seg = np.where(hits, np.maximum(to_trip, 0.0), seg)
        seg_f = np.where(filt, seg, 0.0)
        volume = j_si * p["area_m2"] * seg_f
        tmp_mean = tmp0 + 0.5 * slope * seg_f
        # A flux step or a colder feed can start a segment above the limit: the PLC trips as
        # TMP passes 2 bar on the way up, so the trip value is the limit itself.
        tmp_end = np.where(hits, TMP_TRIP_BAR * BAR, tmp0 + slope * seg_f)
        acc["peak_pa"] = np.maximum(acc["peak_pa"], np.where(filt, tmp_end, 0.0))
        deposit = k_c * j_si * seg_f
        s["r_c"] = s["r_c"] + deposit * (1.0 - p["f_irr"])
        s["r_hirr"] = s["r_hirr"] + deposit * p["f_irr"] * (1.0 - p["f_cirr"])
        s["r_cirr"] = s["r_cirr"] + deposit * p["f_irr"] * p["f_cirr"]
        head = tmp_mean + (p["filtrate_pressure_bar"] + p["line_dp_bar"]) * BAR
        energy = volume * head / p["pump_eta"]

        energy = energy + np.where(bw, self._bw_power_w(mu) * seg, 0.0)
        energy = energy + np.where(cip, 1e3 * p["cip_kw"] * seg, 0.0)
        s["filtrate_m3"] = s["filtrate_m3"] + volume
        s["energy_kwh"] = s["energy_kwh"] + energy / 3.6e6
        acc["down_s"] += np.where(run & ~filt, seg, 0.0)
        s["t_state"] = s["t_state"] + seg
        s["t_cycle"] = s["t_cycle"] + seg_f
        s["since_ceb_s"] = s["since_ceb_s"] + seg
        s["since_cip_s"] = s["since_cip_s"] + seg
        s["t"] = s["t"] + seg
        budget -= seg

        if hits.any():
            self._trip(hits, "TMP ≥ 2 bar")
            s["tmp_now_pa"] = np.where(hits, tmp_end, s["tmp_now_pa"])
        done = run & ~hits & (seg >= t_end - 1e-9)
        cycle_end = done & filt
        if cycle_end.any():
            self._start_clean(cycle_end, BACKWASH, mu)
        bw_end = done & bw
        if bw_end.any():
            self._finish_backwash(bw_end, s["sp_bw_s"], mu)
        ceb_end = done & ceb
        if ceb_end.any():
            self._finish_ceb(ceb_end, mu)
        cip_end = done & cip
        if cip_end.any():
            self._finish_cip(cip_end, mu)

    def _start_clean(self, mask: np.ndarray, kind: int, mu: FloatArray) -> None:
        """Leave filtration (or a backwash, for CEB/CIP) and start a cleaning sequence."""
        s = self._s
        was_filtering = mask & (s["state"] == FILTRATION)
        tmp_now = self._tmp_pa(s["flux"], mu)
        s["tmp_prev_start_pa"] = np.where(was_filtering, s["tmp_start_pa"], s["tmp_prev_start_pa"])
        s["tmp_prev_end_pa"] = np.where(was_filtering, tmp_now, s["tmp_prev_end_pa"])
        s["state"] = np.where(mask, kind, s["state"])
        s["t_state"] = np.where(mask, 0.0, s["t_state"])
        name = {BACKWASH: "n_bw", CEB: "n_ceb", CIP: "n_cip"}[kind]
        s[name] = s[name] + mask

    def _new_cycle(self, mask: np.ndarray, mu: FloatArray) -> None:
        s = self._s
        s["state"] = np.where(mask, FILTRATION, s["state"])
        s["t_state"] = np.where(mask, 0.0, s["t_state"])
        s["t_cycle"] = np.where(mask, 0.0, s["t_cycle"])
        tmp = self._tmp_pa(s["flux"], mu)
        s["tmp_start_pa"] = np.where(mask, tmp, s["tmp_start_pa"])
        s["tmp_after_bw_pa"] = np.where(mask, tmp, s["tmp_after_bw_pa"])

    def _book_water(self, mask: np.ndarray, used_m3: FloatArray, drained_m3: FloatArray) -> None:
        """Filtrate used for cleaning (leaves the product) and feed drained from the hold-up."""
        s = self._s
        s["clean_water_m3"] = s["clean_water_m3"] + np.where(mask, used_m3, 0.0)
        s["drain_m3"] = s["drain_m3"] + np.where(mask, drained_m3, 0.0)

    def _finish_backwash(self, mask: np.ndarray, duration_s: FloatArray, mu: FloatArray) -> None:
        s, p = self._s, self._p
        s["r_c"] = np.where(mask, s["r_c"] * (1.0 - self._eta_bw(duration_s)), s["r_c"])
        self._book_water(mask, self._bw_volume_m3(duration_s), p["drain_m3"])
        self._new_cycle(mask, mu)

    def _finish_ceb(self, mask: np.ndarray, mu: FloatArray) -> None:
        s, p = self._s, self._p
        s["r_c"] = np.where(mask, s["r_c"] * (1.0 - p["eta_bw_ref"]), s["r_c"])
        s["r_hirr"] = np.where(mask, s["r_hirr"] * (1.0 - p["eta_ceb"]), s["r_hirr"])
        # Chemical backwash and rinse: ``ceb_bw_volumes`` backwashes; the soak between them is idle.
        water = p["ceb_bw_volumes"] * self._bw_volume_m3(p["bw_ref_s"])
        self._book_water(mask, water, p["drain_m3"])
        energy_j = self._bw_power_w(mu) * p["ceb_bw_volumes"] * p["bw_ref_s"]
        s["energy_kwh"] = s["energy_kwh"] + np.where(mask, energy_j / 3.6e6, 0.0)
        s["chemicals_eur"] = s["chemicals_eur"] + np.where(mask, p["ceb_chem_eur"], 0.0)
        s["since_ceb_s"] = np.where(mask, 0.0, s["since_ceb_s"])
        self._new_cycle(mask, mu)

    def _finish_cip(self, mask: np.ndarray, mu: FloatArray) -> None:
        s, p = self._s, self._p
        s["r_c"] = np.where(mask, 0.0, s["r_c"])
        s["r_hirr"] = np.where(mask, s["r_hirr"] * (1.0 - p["eta_cip_hirr"]), s["r_hirr"])
        s["r_cirr"] = np.where(mask, s["r_cirr"] * (1.0 - p["eta_cip_cirr"]), s["r_cirr"])
        self._book_water(mask, p["cip_water_m3"], p["drain_m3"])
        s["chemicals_eur"] = s["chemicals_eur"] + np.where(mask, p["cip_chem_eur"], 0.0)
        s["since_cip_s"] = np.where(mask, 0.0, s["since_cip_s"])
        s["since_ceb_s"] = np.where(mask, 0.0, s["since_ceb_s"])
        self._new_cycle(mask, mu)

    def _trip(self, mask: np.ndarray, reason: str) -> None:
        s = self._s
        new = mask & (s["tripped"] < 0.5)
        if new.any():
            s["tripped"] = np.where(new, 1.0, s["tripped"])
            self._trip_reason = np.where(new, reason, self._trip_reason).astype(object)

    # --- stepping ---------------------------------------------------------------------------------

    def _apply_inputs(
        self, setpoints: Mapping[str, FloatArray], disturbances: Mapping[str, FloatArray]
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        """Clip setpoints, read commands and disturbances; returns (clip count, commands)."""
        n, s = self.n, self._s
        values: dict[str, FloatArray] = {}
        for key, raw in setpoints.items():
            if key not in self._accepted:
                raise ValueError(
                    f"uf has no writable tag {key!r}; writable: {sorted(self._accepted)}"
                )
            arr = _per_plant(raw, n)
            if not np.isfinite(arr).all():
                raise ValueError(f"uf setpoint {key!r} is not finite: {raw!r}")
            values[key] = arr
        clipped = np.zeros(n)
        for tag, key in ((_FLUX, "sp_flux"), (_CYCLE, "sp_cycle_min"), (_BW, "sp_bw_s")):
            if tag.name in values:
                raw_sp = values[tag.name]
                new = np.clip(raw_sp, tag.plc_low, tag.plc_high)
                clipped += new != raw_sp
                s[key] = new
        dist = {}
        for key, default in self.disturbance_defaults.items():
            raw_d = disturbances.get(key)
            dist[key] = np.full(n, default) if raw_d is None else _per_plant(raw_d, n)
        self._check_disturbances(dist)
        s["turbidity"] = dist["feed_turbidity_ntu"].copy()
        s["temp_c"] = dist["feed_temperature_c"].copy()
        s["fouling_factor"] = dist["fouling_factor"].copy()
        zero = np.zeros(n)
        return clipped, {k: values.get(k, zero) for k in _COMMANDS}

    def step(
        self,
        setpoints: Mapping[str, FloatArray],
        disturbances: Mapping[str, FloatArray],
        dt_s: float,
    ) -> StepResult:
        """Advance every rack by ``dt_s`` seconds, event by event."""
        if not math.isfinite(dt_s) or dt_s <= 0.0:
            raise ValueError(f"uf step needs a positive finite dt_s, got {dt_s}")
        n, s, p = self.n, self._s, self._p
        clipped, commands = self._apply_inputs(setpoints, disturbances)
        mu = viscosity_pa_s(s["temp_c"])
        before = {k: s[k].copy() for k in (*_COUNTERS, "t")}
        tripped_before = s["tripped"] >= 0.5
        acc = {"peak_pa": np.zeros(n), "down_s": np.zeros(n)}

        running = ~tripped_before
        rate = float(_FLUX.max_rate_per_s or math.inf) * dt_s
        s["flux"] = np.where(
            running, s["flux"] + np.clip(s["sp_flux"] - s["flux"], -rate, rate), s["flux"]
        )
        state = s["state"]
        cip = running & (commands["cip_request"] >= 0.5) & (state != CIP)
        ceb = running & ~cip & (commands["ceb_request"] >= 0.5) & (state <= BACKWASH)
        bw = running & ~cip & ~ceb & (commands["bw_request"] >= 0.5) & (state == FILTRATION)
        for mask, kind in ((cip, CIP), (ceb, CEB), (bw, BACKWASH)):
            if mask.any():
                self._start_clean(mask, kind, mu)
        s["tmp_start_pa"] = np.where(
            running & (state == FILTRATION) & (s["t_cycle"] <= 0.0),
            self._tmp_pa(s["flux"], mu),
            s["tmp_start_pa"],
        )

        budget = np.where(running, dt_s, 0.0)
        # Each filtration lasts >= 20 min unless commanded, so this bounds the events per step.
        for _ in range(2 * math.ceil(dt_s / _MIN_CYCLE_S) + 4):
            if not (budget > 0.0).any():
                break
            self._segment(budget, mu, acc)
            budget = np.where(s["tripped"] >= 0.5, 0.0, budget)

        stopped = s["tripped"] >= 0.5
        filtering = (s["state"] == FILTRATION) & ~stopped
        s["tmp_now_pa"] = np.where(filtering, self._tmp_pa(s["flux"], mu), s["tmp_now_pa"])
        s["tmp_now_pa"] = np.where(~filtering & ~stopped, 0.0, s["tmp_now_pa"])
        delta = {k: s[k] - before[k] for k in _COUNTERS}
        filtrate_ntu = p["filtrate_ntu_base"] + p["filtrate_ntu_pass"] * s["turbidity"]
        quality = np.maximum(filtrate_ntu / FILTRATE_TURBIDITY_LIMIT_NTU - 1.0, 0.0)
        downtime = acc["down_s"] + np.where(stopped, dt_s - (s["t"] - before["t"]), 0.0)
        new_trip = stopped & ~tripped_before
        ramping = running & ~stopped & (np.abs(s["flux"] - s["sp_flux"]) > 1e-9)
        return StepResult(
            product_m3=delta["filtrate_m3"] - delta["clean_water_m3"],
            feed_m3=delta["filtrate_m3"] + delta["drain_m3"],
            energy_kwh=delta["energy_kwh"],
            chemicals_eur=delta["chemicals_eur"],
            downtime_s=np.minimum(downtime, dt_s),
            quality_excess=np.where(running, quality, 0.0),
            pressure_excess=np.maximum(acc["peak_pa"] / BAR - TMP_SOFT_BAR, 0.0)
            / (TMP_TRIP_BAR - TMP_SOFT_BAR),
            tripped=stopped.copy(),
            trip_reason=self._trip_reason.copy(),
            interventions={
                "clip": clipped,
                "rate": ramping.astype(np.float64),
                "interlock": new_trip.astype(np.float64),
            },
            cleanings={
                "cip": delta["n_cip"],
                "ceb": delta["n_ceb"],
                "backwash": delta["n_bw"],
            },
        )

    # --- outputs ----------------------------------------------------------------------------------

    def measurements(self) -> dict[str, FloatArray]:
        """Noise-free values of every observation tag and the setpoint readbacks."""
        s, p = self._s, self._p
        mu = viscosity_pa_s(s["temp_c"])
        state = s["state"]
        stopped = s["tripped"] >= 0.5
        filtering = (state == FILTRATION) & ~stopped
        washing = (state == BACKWASH) & ~stopped
        tmp = np.where(filtering, self._tmp_pa(s["flux"], mu), 0.0) / BAR
        bw_head = (self._bw_power_w(mu) - 1e3 * p["blower_kw"]) * p["pump_eta"]
        q_bw = p["bw_flux_lmh"] * LMH_TO_M_S * p["area_m2"]
        bw_bar = bw_head / np.maximum(q_bw, 1e-12) / BAR
        tmp_norm = (
            s["tmp_after_bw_pa"]
            / BAR
            * (MU_20C / mu)
            * (TMP_REF_FLUX_LMH / np.maximum(s["flux"], 1e-9))
        )
        return {
            "feed_pressure_bar": np.where(filtering, p["filtrate_pressure_bar"] + tmp, 0.0),
            "filtrate_pressure_bar": np.where(
                filtering, p["filtrate_pressure_bar"], np.where(washing, bw_bar, 0.0)
            ),
            "tmp_bar": tmp,
            "filtrate_flow_m3h": np.where(filtering, s["flux"] * p["area_m2"] / 1000.0, 0.0),
            "bw_flow_m3h": np.where(washing, p["bw_flux_lmh"] * p["area_m2"] / 1000.0, 0.0),
            "feed_turbidity_ntu": s["turbidity"].copy(),
            "filtrate_turbidity_ntu": p["filtrate_ntu_base"]
            + p["filtrate_ntu_pass"] * s["turbidity"],
            "feed_temperature_c": s["temp_c"].copy(),
            "cycle_time_min": s["t_cycle"] / 60.0,
            "tmp_cycle_start_bar": s["tmp_start_pa"] / BAR,
            "hours_since_ceb_h": s["since_ceb_s"] / 3600.0,
            "hours_since_cip_h": s["since_cip_s"] / 3600.0,
            "uf_state": state.copy(),
            "cip_due": (tmp_norm >= p["tmp_cip_trigger_bar"]).astype(np.float64),
            "flux_sp_lmh": s["sp_flux"].copy(),
            "filtration_time_sp_min": s["sp_cycle_min"].copy(),
            "bw_duration_sp_s": s["sp_bw_s"].copy(),
        }

    def hidden(self) -> dict[str, FloatArray]:
        """Resistances, normalised permeability and cumulative balances."""
        s = self._s
        mu = viscosity_pa_s(s["temp_c"])
        r_tot = self._r_total()
        out = {
            "r_m": np.asarray(self._r_m).copy(),
            "r_c": s["r_c"].copy(),
            "r_hirr": s["r_hirr"].copy(),
            "r_cirr": s["r_cirr"].copy(),
            "k_c": self._p["kc_per_ntu"] * s["turbidity"] * s["fouling_factor"],
            "flux_lmh": s["flux"].copy(),
            "permeability_20c_lmh_bar": 1.0 / (MU_20C * r_tot * LMH_TO_M_S / BAR),
            "fouling_ratio": (s["r_hirr"] + s["r_cirr"]) / self._r_m,
            "tmp_filtration_bar": self._tmp_pa(s["flux"], mu) / BAR,
            "tmp_prev_start_bar": s["tmp_prev_start_pa"] / BAR,
            "tmp_prev_end_bar": s["tmp_prev_end_pa"] / BAR,
            "tmp_after_bw_bar": s["tmp_after_bw_pa"] / BAR,
            "tmp_at_trip_bar": s["tmp_now_pa"] / BAR,
            "time_s": s["t"].copy(),
        }
        for key in _COUNTERS:
            out[key] = s[key].copy()
        return out

    def params(self) -> dict[str, FloatArray]:
        """Physical parameters per plant (``NOMINAL_PARAMS`` keys)."""
        return {k: v.copy() for k, v in self._p.items()}


_STATES: Final = (
    "state",
    "t_state",
    "t_cycle",
    "since_ceb_s",
    "since_cip_s",
    "flux",
    "sp_flux",
    "sp_cycle_min",
    "sp_bw_s",
    "r_c",
    "r_hirr",
    "r_cirr",
    "turbidity",
    "temp_c",
    "fouling_factor",
    "tripped",
    "t",
    "tmp_start_pa",
    "tmp_prev_start_pa",
    "tmp_prev_end_pa",
    "tmp_after_bw_pa",
    "tmp_now_pa",
)
"""State arrays, one value per plant."""

_COUNTERS: Final = (
    "filtrate_m3",
    "clean_water_m3",
    "drain_m3",
    "energy_kwh",
    "chemicals_eur",
    "n_bw",
    "n_ceb",
    "n_cip",
)
"""Cumulative counters since reset."""
