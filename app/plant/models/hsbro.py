"""Hybrid semi-batch/batch reverse osmosis (``hsbro``): intelWATT case study 3.

Electroplating rinse water (a Cr(III) electrolyte, modelled as its NaCl osmotic equivalent) is
concentrated back towards bath strength on the BIA Solingen pilot: two XUS180808 ultra-high-pressure
elements in series, a recirculation loop and a 64.6 L piston work exchanger (process-models.md §1.2,
§4; rl_hrro [P1], Karimi 2024 [P10], Hosseinipour 2022 [P9]). A cycle has three phases:

- **semi-batch**: the supply pump feeds rinse water into the closed loop at the permeate rate; the
  loop volume is constant and its concentration rises;
- **batch**: the supply pump fills the feed side of the work exchanger, whose piston pushes the loop
  contents through the module; the loop shrinks by the permeate volume and concentrates ~3x further;
- **purge/refill**: the module is depressurised (osmotic backflow of permeate), the supply pump
  displaces ``purge_factor x purgeable volume`` of brine (the recovered bath concentrate) while the
  recirculation pump refills the loop side of the work exchanger with the feed stored behind the
  piston.

Discretisation (coarser than rl_hrro's 33 volumes, on purpose): the loop is one well-mixed salt
inventory whose module section carries the quasi-steady axial profile of a channel losing permeate
at uniform flux, ``c(x) = c_in·Q_in/(Q_in - Q_p·x)``; the purge uses the exact washout of 28
tanks in series (rl_hrro's 25 module cells, two ports and the purge pipe). The mean flux is fixed by
the supply flow and the transmembrane pressure solved from the mean module osmotic pressure and
concentration polarisation exactly as rl_hrro does, so TMP, pressures and SEC follow the same
formulas. An agent step (60 s) is integrated in a fixed number of ≤ 20 s sub-steps (exact averages
of the rate-limited pump ramps, midpoint rule for pressure, exact volume and salt bookkeeping).
Phase ends and both trips are events located inside a sub-step: at fixed flows the supply pressure
is affine in the mean module concentration, so the volume at which it reaches 120 bar is solved
directly, as is the volume left above the 250 L tank level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Final

import numpy as np

from app.plant.catalog import HSBRO_CATALOG, ProcessCatalog
from app.plant.models.base import FloatArray, ProcessModel, StepResult

SEMIBATCH: Final = 0
BATCH: Final = 1
PURGE: Final = 2
FINISHED: Final = 3
"""Phase codes, as served on the ``phase`` tag."""

GAS_CONSTANT_KJ_KMOL_K: Final = 8.314
WATER_DENSITY_KG_M3: Final = 1000.0
MAX_SUBSTEP_S: Final = 20.0
PURGE_CELLS: Final = 28

MAX_SEMIBATCH_S: Final = 3600.0
"""The PLC forces the switch to batch after this long in semi-batch [P1]."""
PRESSURE_TRIP_BAR: Final = 120.0
PRESSURE_SOFT_BAR: Final = 115.0
TANK_TRIP_L: Final = 250.0
MIN_RECIRC_RATIO: Final = 1.5
"""Recirculation / supply flow the PLC enforces by raising the recirculation setpoint [P1]."""
END_PROCESS_MAX_TANK_L: Final = 700.0
"""``end_process_cmd`` is accepted only once the feed tank holds less than this [P1]."""
CONCENTRATE_SPEC: Final = (1.0, 1.2)
"""Recovered concentrate must lie within these multiples of the bath concentration [P1]."""

NOMINAL_PARAMS: Final[dict[str, float]] = {
    "a_lmh_bar": 0.72,
    "membrane_area_m2": 61.2,
    "channel_height_m": 0.864e-3,
    "channel_length_m": 2.04,
    "channel_volume_l": 26.4,
    "port_volume_l": 1.87,
    "purge_pipe_volume_l": 0.119,
    "loop_pipe_volume_l": 2.193,
    "work_exchanger_volume_l": 64.6,
    "backflow_l": 10.0,
    "vant_hoff_i": 1.8648,
    "molar_mass_kg_kmol": 58.44,
    "osmotic_rejection": 0.93,
    "salt_rejection": 0.998,
    "diffusivity_m2_s": 1.47e-9,
    "sherwood_coeff": 0.2,
    "haidari_coeff_kpa": 791.0,
    "valve_diameter_m": 0.0254,
    "valve_cd": 0.62,
    "seal_dp_kpa": 3.5,
    "eta_supply_semibatch": 0.55,
    "eta_supply_batch": 0.64,
    "eta_supply_purge": 0.126,
    "eta_recirc_semibatch": 0.32,
    "eta_recirc_batch": 0.24,
    "eta_recirc_purge": 0.476,
    "bath_tds_gl": 76.0,
}
"""BIA pilot with 2 x XUS180808 [P1]; ``salt_rejection`` from Karimi 2024 [P10]."""

RANDOMIZED_PARAMS: Final = (
    "a_lmh_bar",
    "sherwood_coeff",
    "haidari_coeff_kpa",
    "eta_supply_semibatch",
    "eta_supply_batch",
    "eta_supply_purge",
    "eta_recirc_semibatch",
    "eta_recirc_batch",
    "eta_recirc_purge",
)
"""Parameters drawn within ±``randomize`` at reset (process-models.md §10, model mismatch)."""

INITIAL_STATE_KEYS: Final = ("initial_supply_lpm", "initial_recirc_lpm", "initial_purge_factor")

_SUPPLY = HSBRO_CATALOG.tag("supply_flow_sp_lpm")
_RECIRC = HSBRO_CATALOG.tag("recirc_flow_sp_lpm")
_PURGE = HSBRO_CATALOG.tag("purge_factor_sp")
_END_SEMIBATCH = "end_semibatch_cmd"
_END_PROCESS = "end_process_cmd"


def _ramp(
    start: FloatArray, target: FloatArray, rate: float, h: float
) -> tuple[FloatArray, FloatArray]:
    """Rate-limited move towards ``target`` over ``h`` seconds: (end value, exact time average)."""
    delta = target - start
    reach = np.abs(delta) <= rate * h
    end = np.where(reach, target, start + np.sign(delta) * rate * h)
    # Where the target is reached after t* = |delta|/rate, the average lags it by delta·t*/(2h).
    mean = np.where(reach, target - delta * np.abs(delta) / (2.0 * rate * h), 0.5 * (start + end))
    return np.asarray(end), np.asarray(mean)


def _washout_tables(cells: int, theta_max: float, points: int) -> tuple[FloatArray, ...]:
    """Purge washout of ``cells`` equal tanks in series displaced by ``theta`` volumes.

    Returns the grid, the fraction of the original contents still inside and the fraction of the
    original concentration at the outlet: with ``X ~ Poisson(cells·theta)``,
    ``remaining = mean_j P(X ≤ j - 1)`` and ``outlet = P(X ≤ cells - 1)``.
    """
    theta = np.linspace(0.0, theta_max, points)
    x = cells * theta
    k = np.arange(cells, dtype=np.float64)
    log_fact = np.array([math.lgamma(v + 1.0) for v in k])
    log_x = np.log(np.maximum(x, 1e-300))[:, None]
    cdf = np.cumsum(np.exp(-x[:, None] + k * log_x - log_fact), axis=1)
    return theta, cdf.mean(axis=1), cdf[:, -1]


_THETA, _REMAINING, _OUTLET = _washout_tables(PURGE_CELLS, 3.0, 1201)


def _per_plant(value: FloatArray | float, n: int) -> FloatArray:
    """``value`` as float64 of shape ``(n,)`` (a read-only broadcast unless it already is)."""
    arr = np.asarray(value, dtype=np.float64)
    return arr if arr.shape == (n,) else np.broadcast_to(arr, (n,))


def conductivity_uscm(tds_gl: FloatArray) -> FloatArray:
    """Conductivity at 25 °C of an NaCl-equivalent solution, ``EC = 1900·c^0.92`` µS/cm [J].

    Fits NaCl data within ≈ 10 % from 1 to 100 g/L (2.0 mS/cm at 1 g/L, ≈ 50 at 35, ≈ 130 at 100).
    """
    return np.asarray(1900.0 * np.maximum(tds_gl, 0.0) ** 0.92)


def viscosity_pa_s(t_k: FloatArray) -> FloatArray:
    """Water viscosity ``2.414e-5·10^(247.8/(T - 140))`` Pa·s (RO-8 alternative [P8])."""
    return np.asarray(2.414e-5 * 10.0 ** (247.8 / (t_k - 140.0)))


def temperature_correction(t_k: FloatArray) -> FloatArray:
    """Permeability factor vs 25 °C, ``exp(K·(1/298.15 - 1/T))``, K = 2640 / 3020 (RO-8 [P13])."""
    k = np.where(t_k >= 298.15, 2640.0, 3020.0)
    return np.asarray(np.exp(k * (1.0 / 298.15 - 1.0 / t_k)))


class HsbroModel(ProcessModel):
    """``n`` HSBRO pilots stepped together (see the module docstring for the physics).

    Setpoints: ``supply_flow_sp_lpm`` (semi-batch, batch and purge flow), ``recirc_flow_sp_lpm``,
    ``purge_factor_sp``; commands (≥ 0.5 acts): ``end_semibatch_cmd`` switches a plant in
    semi-batch to batch now, ``end_process_cmd`` finishes the batch of rinse water at the end of
    the current cycle (phase 3, plant idle) and is accepted once the tank holds < 700 L [P1]. Setpoints outside the PLC range are clipped and the
    recirculation setpoint is raised to 1.5 x supply (counted as ``clip``); pumps ramp at the
    catalogue rates (``rate`` counts plants still ramping at the end of a step); a forced switch
    after 3600 s of semi-batch counts as ``interlock``. Trips: supply pressure ≥ 120 bar, feed tank
    ≤ 250 L; a tripped plant stays stopped until reset.

    Disturbances: ``feed_dilution`` (feed = bath / dilution), ``feed_temperature_c`` and
    ``feed_tank_volume_l``, the rinse water delivered to the feed tank since the episode started
    (initial fill plus deliveries; the tank holds that minus the feed drawn). Missing keys take
    ``disturbance_defaults`` (the tank keeps its reset volume); unknown keys are ignored. Pass the
    disturbance values at t = 0 as ``reset`` params so the first observation matches the scenario.

    ``StepResult.quality_excess`` is booked when a purge completes: the relative distance of the
    recovered concentrate from 1.0-1.2 x bath concentration. ``downtime_s`` is purge and tripped
    time.
    """

    catalog: ClassVar[ProcessCatalog] = HSBRO_CATALOG
    disturbance_names: ClassVar[tuple[str, ...]] = (
        "feed_dilution",
        "feed_temperature_c",
        "feed_tank_volume_l",
        "feed_tds_gl",
    )
    disturbance_defaults: ClassVar[dict[str, float]] = {
        "feed_dilution": 15.0,
        "feed_temperature_c": 30.0,
    }
    """Used when a source lacks a key (the tank keeps its volume; ``feed_tds_gl`` is optional)."""
    disturbance_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "feed_dilution": (1.0, 1000.0),
        "feed_temperature_c": (0.0, 45.0),
        "feed_tank_volume_l": (0.0, 1e6),
        "feed_tds_gl": (0.0, 150.0),
    }
    """Accepted disturbance values; anything outside is a data error (``ValueError``)."""
    accepts_initial_disturbances: ClassVar[bool] = True
    """``reset(params=...)`` takes disturbance names as the values at t = 0."""

    _p: dict[str, FloatArray]
    _s: dict[str, FloatArray]
    _trip_reason: np.ndarray

    def __init__(self, n: int) -> None:
        """Create ``n`` plants with nominal parameters, reset from seed 0."""
        super().__init__(n)
        self._accepted = {t.name for t in HSBRO_CATALOG.writable}
        self.reset(np.random.default_rng(0))

    # --- life cycle -----------------------------------------------------------------------------

    def reset(
        self,
        rng: np.random.Generator,
        randomize: float = 0.0,
        params: Mapping[str, FloatArray | float] | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Start plants at the beginning of a semi-batch phase with the loop full of feed.

        Initial draws (always from ``rng``, in a fixed order): tank 1500-2500 L, feed
        bath/U(10, 20), 28-32 °C, supply U{4..15} L/min, recirculation = supply x U(1.5, 6) within
        20-70 L/min [P1].
        ``params`` overrides physical parameters (``NOMINAL_PARAMS`` keys), the t = 0 disturbances
        (``disturbance_names``) and ``INITIAL_STATE_KEYS``.
        """
        n = self.n
        if not 0.0 <= randomize < 1.0:
            raise ValueError(f"randomize must be in [0, 1), got {randomize}")
        sel = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if sel.shape != (n,):
            raise ValueError(f"reset mask must have shape ({n},), got {sel.shape}")
        given = dict(params or {})
        known = set(NOMINAL_PARAMS) | set(self.disturbance_names) | set(INITIAL_STATE_KEYS)
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"hsbro reset got unknown params {unknown}; known: {sorted(known)}")

        draws = {
            "feed_tank_volume_l": rng.uniform(1500.0, 2500.0, n),
            "feed_dilution": rng.uniform(10.0, 20.0, n),
            "feed_temperature_c": rng.uniform(28.0, 32.0, n),
            "initial_supply_lpm": rng.integers(4, 16, n).astype(np.float64),
        }
        alpha = rng.uniform(1.5, 6.0, n)
        factors = {k: rng.uniform(1.0 - randomize, 1.0 + randomize, n) for k in RANDOMIZED_PARAMS}

        new: dict[str, FloatArray] = {}
        for key, nominal in NOMINAL_PARAMS.items():
            value = np.full(n, nominal) * factors[key] if key in factors else np.full(n, nominal)
            if key.startswith("eta_"):
                value = np.minimum(value, 0.95)
            new[key] = value
        for key, raw in given.items():
            arr = np.broadcast_to(np.asarray(raw, dtype=np.float64), (n,)).copy()
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"hsbro reset param {key!r} is not finite: {raw!r}")
            if key in NOMINAL_PARAMS:
                new[key] = arr
            else:
                draws[key] = arr
            if key in self.disturbance_ranges:
                low, high = self.disturbance_ranges[key]
                if np.any((arr < low) | (arr > high)):
                    raise ValueError(f"hsbro reset param {key!r} must be in [{low}, {high}]: {raw}")
        self._check_params(new)
        supply = np.clip(draws["initial_supply_lpm"], _SUPPLY.plc_low, _SUPPLY.plc_high)
        recirc = draws.get("initial_recirc_lpm", supply * alpha)
        recirc = np.clip(recirc, _RECIRC.plc_low, _RECIRC.plc_high)
        recirc = np.maximum(recirc, MIN_RECIRC_RATIO * supply)
        purge = draws.get("initial_purge_factor", np.full(n, _PURGE.base_value))
        purge = np.clip(purge, _PURGE.plc_low, _PURGE.plc_high)

        if mask is None or not hasattr(self, "_p"):
            self._p = new
            self._alloc_state()
            sel = np.ones(n, dtype=bool)
        else:
            for key, value in new.items():
                self._p[key] = np.where(sel, value, self._p[key])
        self._derive()

        if "feed_tds_gl" in draws:
            if "feed_dilution" in given:
                raise ValueError("hsbro reset params give both 'feed_tds_gl' and 'feed_dilution'")
            c_feed = np.maximum(draws["feed_tds_gl"], 0.0)
        else:
            c_feed = self._p["bath_tds_gl"] / np.maximum(draws["feed_dilution"], 1.0)
        s = self._s
        zero = np.zeros(n)
        values: dict[str, FloatArray] = {
            "phase": zero,
            "t_phase": zero,
            "t": zero,
            "qs": supply,
            "qr": recirc,
            "sp_s": supply,
            "sp_r": recirc,
            "sp_f": purge,
            "v_we": self._p["work_exchanger_volume_l"],
            "m_loop": c_feed * (self._v_loop_full),
            "v_behind": zero,
            "m_behind": zero,
            "theta": zero,
            "c0": zero,
            "s_in": zero,
            "delivered_l": draws["feed_tank_volume_l"],
            "deficit_l": zero,
            "c_perm": (1.0 - self._p["salt_rejection"]) * c_feed,
            "c_feed": c_feed,
            "temp_c": draws["feed_temperature_c"],
            "tripped": zero,
            "finish_req": zero,
            "p_s": zero,
            "p_r": zero,
            "c_out": c_feed,
        }
        for key in _COUNTERS:
            values[key] = zero
        for key in ("last_recovery", "last_sec_kwh_m3", "last_brine_gl"):
            values[key] = zero  # until the first cycle completes (see ``cycles``)
        for key, value in values.items():
            s[key] = np.where(sel, value, s[key])
        self._trip_reason = np.where(sel, "", self._trip_reason).astype(object)
        self._update_end_state(self._coefficients(s["temp_c"]))

    def _check_params(self, p: Mapping[str, FloatArray]) -> None:
        for key, value in p.items():
            if np.any(value <= 0.0):
                raise ValueError(f"hsbro parameter {key!r} must be positive, got {value}")
        for key in ("osmotic_rejection", "salt_rejection"):
            if np.any(p[key] > 1.0):
                raise ValueError(f"hsbro parameter {key!r} must be ≤ 1, got {p[key]}")
        for key in (k for k in p if k.startswith("eta_")):
            if np.any(p[key] > 1.0):
                raise ValueError(f"hsbro pump efficiency {key!r} must be ≤ 1, got {p[key]}")

    def _alloc_state(self) -> None:
        n = self.n
        self._s = {k: np.zeros(n) for k in (*_STATES, *_COUNTERS)}
        self._trip_reason = np.full(n, "", dtype=object)

    def _derive(self) -> None:
        """Geometry- and fluid-derived constants per plant (valid until the next reset)."""
        p = self._p
        width = p["membrane_area_m2"] / p["channel_length_m"]
        flow_area = 0.5 * p["channel_height_m"] * width
        self._v_purge = p["channel_volume_l"] + p["port_volume_l"] + p["purge_pipe_volume_l"]
        self._v_loop_full = self._v_purge + p["loop_pipe_volume_l"] + p["work_exchanger_volume_l"]
        self._flow_area = flow_area
        self._char_len = 0.5 * p["channel_height_m"]
        # Haidari: dP[kPa] = k·L·v^1.63 with v = Q/flow_area; folded to dP = c·Q[L/s]^1.63.
        self._dp_coeff = p["haidari_coeff_kpa"] * p["channel_length_m"] * (1e-3 / flow_area) ** 1.63
        # Torricelli orifice: dP[kPa] = 1e-3·rho/2·(v/Cd)², v = Q/(π d²/4); folded to c·Q[L/s]².
        orifice = 0.25 * math.pi * p["valve_diameter_m"] ** 2
        self._valve_coeff = (
            1e-3 * 0.5 * WATER_DENSITY_KG_M3 * (1e-3 / (orifice * p["valve_cd"])) ** 2
        )
        self._flux_coeff = 1e-3 / p["membrane_area_m2"]
        self._a_si = p["a_lmh_bar"] / 3.6e8
        self._pi_coeff = p["vant_hoff_i"] * GAS_CONSTANT_KJ_KMOL_K / p["molar_mass_kg_kmol"]

    # --- physics ----------------------------------------------------------------------------------

    def _coefficients(self, temp_c: FloatArray) -> dict[str, FloatArray]:
        """Temperature-dependent coefficients, constant within one step."""
        p = self._p
        t_k = temp_c + 273.15
        mu = viscosity_pa_s(t_k)
        mu25 = viscosity_pa_s(np.asarray(298.15))
        diff = p["diffusivity_m2_s"] * (t_k / 298.15) * (mu25 / mu)  # Stokes-Einstein [J]
        schmidt = mu / (WATER_DENSITY_KG_M3 * diff)
        # k = Sh·D/d, Sh = a·Re^0.57·Sc^0.4, Re = rho·(Q/flow_area)·d/μ: k = coeff·Q[L/s]^0.57.
        re_per_q = WATER_DENSITY_KG_M3 * 1e-3 / self._flow_area * self._char_len / mu
        k_coeff = p["sherwood_coeff"] * re_per_q**0.57 * schmidt**0.4 * diff / self._char_len
        return {
            "pi": self._pi_coeff * t_k,
            "k": k_coeff,
            "a": self._a_si * temperature_correction(t_k),
        }

    def _loop(
        self,
        m: FloatArray,
        v_we: FloatArray,
        qs: FloatArray,
        qr: FloatArray,
        c: Mapping[str, FloatArray],
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """Module state for loop salt ``m`` [g], flows in L/s.

        Returns (TMP kPa, module ΔP kPa, module-inlet concentration g/L, mean module concentration
        g/L, permeate concentration g/L, dTMP/d(mean module concentration) kPa·L/g, mean / inlet
        concentration along the module).
        """
        qr_safe = np.maximum(qr, 1e-9)
        x = np.maximum(qs / qr_safe, 1e-12)
        profile = (1.0 + x) * np.log1p(x) / x  # mean / inlet concentration along the module
        c_in = m / (self._p["loop_pipe_volume_l"] + v_we + profile * self._v_purge)
        c_mod = profile * c_in
        q_mod = qr + 0.5 * qs
        flux = qs * self._flux_coeff
        cp = np.exp(flux / (c["k"] * np.maximum(q_mod, 1e-9) ** 0.57))
        slope = self._p["osmotic_rejection"] * cp * c["pi"]
        tmp = slope * c_mod + flux / c["a"]
        dp_mod = self._dp_coeff * q_mod**1.63
        c_perm = (1.0 - self._p["salt_rejection"]) * cp * c_mod
        return tmp, dp_mod, c_in, c_mod, c_perm, slope, profile

    def _refill_flow(self, qs: FloatArray) -> FloatArray:
        """Recirculation flow [L/s] that refills the work exchanger while the purge runs."""
        return np.asarray(
            self._p["work_exchanger_volume_l"]
            * qs
            / (np.maximum(self._s["sp_f"], 1e-9) * self._v_purge)
        )

    def _pump_pressures(
        self,
        sb: np.ndarray,
        b: np.ndarray,
        tmp: FloatArray,
        dp_mod: FloatArray,
        qs: FloatArray,
        qr: FloatArray,
        q_ref: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """Supply and recirculation pump heads [kPa] per phase (rl_hrro's pilot hydraulics [P1]).

        Semi-batch: the supply joins the loop at the module outlet. Batch: the supply pump drives
        the piston (seal friction) and both flows pass the recirculation valve. Purge (neither
        ``sb`` nor ``b``): depressurised module, valve and channel losses only.
        """
        valve = self._valve_coeff
        seal = self._p["seal_dp_kpa"]
        p_supply = np.where(
            sb,
            tmp - 0.5 * dp_mod + valve * qs**2,
            np.where(
                b,
                tmp + 0.5 * dp_mod + valve * (qs + qr) ** 2 + seal,
                valve * (q_ref + qs) ** 2 + self._dp_coeff * qs**1.63 + valve * qs**2,
            ),
        )
        p_recirc = np.where(
            sb | b, dp_mod + valve * (qs + qr) ** 2, seal + valve * (q_ref + qs) ** 2
        )
        return np.asarray(p_supply), np.asarray(p_recirc)

    def _advance(
        self,
        budget: FloatArray,
        qs_lpm: FloatArray,
        qr_lpm: FloatArray,
        c: Mapping[str, FloatArray],
        acc: dict[str, FloatArray],
    ) -> FloatArray:
        """Advance each plant within its current phase by up to ``budget`` seconds.

        Returns the unused part of ``budget`` (non-zero only where a phase ended inside it).
        """
        s, p = self._s, self._p
        phase = s["phase"]
        run = (s["tripped"] < 0.5) & (phase < FINISHED) & (budget > 0.0)
        sb = run & (phase == SEMIBATCH)
        b = run & (phase == BATCH)
        pu = run & (phase == PURGE)
        qs = qs_lpm / 60.0
        qr = qr_lpm / 60.0
        qs_safe = np.maximum(qs, 1e-9)
        f = s["sp_f"]
        v_purge = self._v_purge
        purge_left = np.maximum(f - s["theta"], 0.0) * v_purge
        tau_end = np.where(
            sb, MAX_SEMIBATCH_S - s["t_phase"], np.where(b, s["v_we"], purge_left) / qs_safe
        )
        tau = np.where(run, np.minimum(budget, np.maximum(tau_end, 0.0)), 0.0)
        vol = qs * tau
        vol = np.where(
            b, np.minimum(vol, s["v_we"]), np.where(pu, np.minimum(vol, purge_left), vol)
        )
        c_f = s["c_feed"]

        # Loop physics at the interval midpoint (semi-batch and batch).
        m_mid = s["m_loop"] + np.where(sb, 0.5 * vol * c_f, 0.0)
        v_mid = s["v_we"] - np.where(b, 0.5 * vol, 0.0)
        tmp, dp_mod, _, c_mod, c_perm, slope, profile = self._loop(m_mid, v_mid, qs, qr, c)
        q_ref = self._refill_flow(qs)
        p_supply, p_recirc = self._pump_pressures(sb, b, tmp, dp_mod, qs, qr, q_ref)

        # The trip is an event: find the volume at which the supply pressure (affine in the mean
        # module concentration at fixed flows) reaches 120 bar and stop there.
        c_trip = np.maximum(c_mod + (PRESSURE_TRIP_BAR * 100.0 - p_supply) / slope, 1e-9)
        v_fixed = s["v_we"] + self._p["loop_pipe_volume_l"]
        m_trip = c_trip * (v_fixed / profile + self._v_purge)
        gain = c_f - c_perm
        vol_trip_sb = np.where(
            gain > 0.0, (m_trip - s["m_loop"]) / np.where(gain > 0.0, gain, 1.0), np.inf
        )
        v_we_trip = profile * s["m_loop"] / c_trip - self._p["loop_pipe_volume_l"]
        vol_trip_b = s["v_we"] - (v_we_trip - profile * self._v_purge)
        vol_trip = np.maximum(np.where(sb, vol_trip_sb, np.where(b, vol_trip_b, np.inf)), 0.0)
        hits = (sb | b) & (vol_trip < vol)
        any_hit = bool(hits.any())
        if any_hit:
            vol = np.where(hits, vol_trip, vol)
            tau = np.where(hits, vol / qs_safe, tau)
        # So is the low tank level: the supply pump stops as the tank reaches 250 L.
        tank_left = np.maximum(s["delivered_l"] - s["feed_l"] - TANK_TRIP_L, 0.0)
        empty = run & ~hits & (tank_left <= vol)
        any_empty = bool(empty.any())
        if any_empty:
            vol = np.where(empty, tank_left, vol)
            tau = np.where(empty, vol / qs_safe, tau)
        q_rpump = np.where(sb, qs + qr, np.where(b, qr, q_ref))
        eta_s = np.where(
            sb, p["eta_supply_semibatch"], np.where(b, p["eta_supply_batch"], p["eta_supply_purge"])
        )
        eta_r = np.where(
            sb, p["eta_recirc_semibatch"], np.where(b, p["eta_recirc_batch"], p["eta_recirc_purge"])
        )
        # L/s x kPa = W.
        energy_j = np.where(run, (qs * p_supply / eta_s + q_rpump * p_recirc / eta_r) * tau, 0.0)

        perm = np.where(sb | b, vol, 0.0)
        salt_perm = perm * c_perm
        salt_feed = vol * c_f
        s["m_loop"] = s["m_loop"] + np.where(sb, salt_feed, 0.0) - salt_perm
        s["v_we"] = s["v_we"] - np.where(b, vol, 0.0)
        s["v_behind"] = s["v_behind"] + np.where(b, vol, 0.0)
        s["m_behind"] = s["m_behind"] + np.where(b, salt_feed, 0.0)
        s["theta"] = s["theta"] + np.where(pu, vol / v_purge, 0.0)
        s["s_in"] = s["s_in"] + np.where(pu, salt_feed, 0.0)
        s["c_perm"] = np.where(sb | b, c_perm, s["c_perm"])
        repaid = np.minimum(s["deficit_l"], perm)
        s["deficit_l"] = s["deficit_l"] - repaid
        delivered = perm - repaid
        brine = np.where(pu, vol, 0.0)
        s["t_phase"] = s["t_phase"] + tau
        for key, value in (
            ("feed_l", vol),
            ("perm_gross_l", perm),
            ("perm_delivered_l", delivered),
            ("brine_l", brine),
            ("salt_feed_g", salt_feed),
            ("salt_perm_g", salt_perm),
            ("energy_j", energy_j),
            ("cyc_feed_l", vol),
            ("cyc_perm_l", perm),
            ("cyc_energy_j", energy_j),
            ("cyc_brine_l", brine),
        ):
            s[key] += value
        acc["feed_l"] += vol
        acc["delivered_l"] += delivered
        acc["energy_j"] += energy_j
        acc["purge_s"] += np.where(pu, tau, 0.0)
        acc["active_s"] += tau
        s["run_s"] += tau

        # Supply pressure at the end of the interval (affine in the module concentration at fixed
        # flows): the step's peak, including the batch end, where the cycle peaks.
        c_mod_end = (
            profile * s["m_loop"] / (v_fixed - np.where(b, vol, 0.0) + profile * self._v_purge)
        )
        p_end = np.where(sb | b, p_supply + slope * (c_mod_end - c_mod), 0.0)
        if any_hit:
            p_end = np.where(hits, PRESSURE_TRIP_BAR * 100.0, p_end)
            self._trip(hits, "supply pressure ≥ 120 bar")
        self._record_pressure(p_end, acc)
        if any_empty:
            self._trip(empty, "feed tank ≤ 250 L")
        stop = hits | empty
        forced = sb & ~stop & (s["t_phase"] >= MAX_SEMIBATCH_S - 1e-9)
        emptied = b & ~stop & (s["v_we"] <= 1e-9)
        if forced.any():
            acc["forced"] += forced
            self._start_batch(forced)
        if emptied.any():
            self._start_purge(emptied, qs, qr)
        purged = pu & ~stop & (s["theta"] >= f - 1e-12)
        if purged.any():
            self._end_purge(purged, acc)
        return np.where(run, budget - tau, 0.0)

    def _start_batch(self, mask: np.ndarray) -> None:
        s = self._s
        s["phase"] = np.where(mask, BATCH, s["phase"])
        s["t_phase"] = np.where(mask, 0.0, s["t_phase"])

    def _start_purge(self, mask: np.ndarray, qs: FloatArray, qr: FloatArray) -> None:
        """Depressurise: split the loop, let permeate flow back, start displacing brine."""
        s, p = self._s, self._p
        x = np.maximum(qs / np.maximum(qr, 1e-9), 1e-12)
        profile = (1.0 + x) * np.log1p(x) / x
        c_in = s["m_loop"] / (p["loop_pipe_volume_l"] + profile * self._v_purge)
        m_mix = c_in * p["loop_pipe_volume_l"]
        m_module = s["m_loop"] - m_mix
        c_module = m_module / self._v_purge
        bf = p["backflow_l"]
        # Backflow of permeate pushes the same volume of module brine out to the brine tank.
        m_module = m_module + bf * (s["c_perm"] - c_module)
        on = mask.astype(np.float64)
        for key, value in (
            ("brine_l", bf),
            ("salt_brine_g", bf * c_module),
            ("salt_backflow_g", bf * s["c_perm"]),
            ("cyc_brine_l", bf),
            ("cyc_brine_salt_g", bf * c_module),
            ("deficit_l", bf),
        ):
            s[key] = s[key] + on * value
        s["m_loop"] = np.where(mask, m_mix, s["m_loop"])
        s["c0"] = np.where(mask, m_module / self._v_purge, s["c0"])
        s["theta"] = np.where(mask, 0.0, s["theta"])
        s["s_in"] = np.where(mask, 0.0, s["s_in"])
        s["phase"] = np.where(mask, PURGE, s["phase"])
        s["t_phase"] = np.where(mask, 0.0, s["t_phase"])

    def _purge_section_salt(self) -> FloatArray:
        """Salt [g] in the purge section after displacing ``theta`` volumes (tanks in series)."""
        s = self._s
        theta = s["theta"]
        remaining = np.interp(theta, _THETA, _REMAINING)
        c_in = np.where(
            theta > 0.0, s["s_in"] / np.maximum(theta * self._v_purge, 1e-12), s["c_feed"]
        )
        return np.asarray(self._v_purge * (c_in * (1.0 - remaining) + s["c0"] * remaining))

    def _end_purge(self, mask: np.ndarray, acc: dict[str, FloatArray]) -> None:
        """Close the brine valve, merge the refilled loop and book the cycle."""
        s, p = self._s, self._p
        m_purge = self._purge_section_salt()
        brine_salt = s["s_in"] - (m_purge - s["c0"] * self._v_purge)
        on = mask.astype(np.float64)
        s["salt_brine_g"] = s["salt_brine_g"] + on * brine_salt
        s["cyc_brine_salt_g"] = s["cyc_brine_salt_g"] + on * brine_salt
        s["m_loop"] = np.where(mask, s["m_loop"] + s["m_behind"] + m_purge, s["m_loop"])
        s["v_we"] = np.where(mask, p["work_exchanger_volume_l"], s["v_we"])
        s["v_behind"] = np.where(mask, 0.0, s["v_behind"])
        s["m_behind"] = np.where(mask, 0.0, s["m_behind"])

        net = s["cyc_perm_l"] - p["backflow_l"]
        brine_gl = s["cyc_brine_salt_g"] / np.maximum(s["cyc_brine_l"], 1e-9)
        s["last_recovery"] = np.where(
            mask, net / np.maximum(s["cyc_feed_l"], 1e-9), s["last_recovery"]
        )
        sec = s["cyc_energy_j"] / np.maximum(net, 1e-9) / 3600.0  # J/L = kJ/m³ → kWh/m³
        s["last_sec_kwh_m3"] = np.where(mask, sec, s["last_sec_kwh_m3"])
        s["last_brine_gl"] = np.where(mask, brine_gl, s["last_brine_gl"])
        low, high = CONCENTRATE_SPEC
        ratio = brine_gl / p["bath_tds_gl"]
        off_spec = np.maximum(1.0 - ratio / low, 0.0) + np.maximum(ratio / high - 1.0, 0.0)
        acc["quality"] += on * off_spec
        s["cycles"] = s["cycles"] + on
        for key in ("cyc_feed_l", "cyc_perm_l", "cyc_energy_j", "cyc_brine_l", "cyc_brine_salt_g"):
            s[key] = np.where(mask, 0.0, s[key])
        finish = mask & (s["finish_req"] >= 0.5)
        s["phase"] = np.where(mask, np.where(finish, FINISHED, SEMIBATCH), s["phase"])
        s["t_phase"] = np.where(mask, 0.0, s["t_phase"])
        s["theta"] = np.where(mask, 0.0, s["theta"])
        s["s_in"] = np.where(mask, 0.0, s["s_in"])

    def _trip(self, mask: np.ndarray, reason: str) -> None:
        s = self._s
        new = mask & (s["tripped"] < 0.5)
        if new.any():
            s["tripped"] = np.where(new, 1.0, s["tripped"])
            self._trip_reason = np.where(new, reason, self._trip_reason).astype(object)

    def _record_pressure(self, p_supply_kpa: FloatArray, acc: dict[str, FloatArray]) -> None:
        """Track the step's and the episode's peak supply pressure."""
        np.maximum(acc["peak_kpa"], p_supply_kpa, out=acc["peak_kpa"])
        np.maximum(self._s["max_p_kpa"], p_supply_kpa, out=self._s["max_p_kpa"])

    def _update_end_state(self, c: Mapping[str, FloatArray]) -> None:
        """Pressures and loop concentration at the current state (for trips and measurements)."""
        s = self._s
        phase = s["phase"]
        running = (s["tripped"] < 0.5) & (phase < FINISHED)
        qs = np.where(running, s["qs"], 0.0) / 60.0
        qr = np.where(running, s["qr"], 0.0) / 60.0
        sb = phase == SEMIBATCH
        b = phase == BATCH
        pu = phase == PURGE
        tmp, dp_mod, c_in, *_ = self._loop(s["m_loop"], s["v_we"], qs, qr, c)
        p_s, p_r = self._pump_pressures(sb, b, tmp, dp_mod, qs, qr, self._refill_flow(qs))
        s["p_s"] = np.where(running, p_s, 0.0)
        s["p_r"] = np.where(running, p_r, 0.0)
        outlet = np.interp(s["theta"], _THETA, _OUTLET)
        c_in_purge = np.where(
            s["theta"] > 0.0, s["s_in"] / np.maximum(s["theta"] * self._v_purge, 1e-12), s["c_feed"]
        )
        c_out_loop = c_in * (qs + qr) / np.maximum(qr, 1e-9)
        s["c_out"] = np.where(
            pu,
            c_in_purge + (s["c0"] - c_in_purge) * outlet,
            np.where(running, c_out_loop, s["m_loop"] / self._v_loop_full),
        )

    # --- stepping ---------------------------------------------------------------------------------

    def _apply_setpoints(
        self, setpoints: Mapping[str, FloatArray]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Clip setpoints to the PLC range and enforce the recirculation ratio.

        Returns (clip interventions, end-semibatch command, end-process command).
        """
        n, s = self.n, self._s
        values: dict[str, FloatArray] = {}
        for key, value in setpoints.items():
            if key not in self._accepted:
                raise ValueError(
                    f"hsbro has no writable tag {key!r}; writable: {sorted(self._accepted)}"
                )
            arr = _per_plant(value, n)
            if not np.isfinite(arr).all():
                raise ValueError(f"hsbro setpoint {key!r} is not finite: {value!r}")
            values[key] = arr
        requested = {key: s[key] for key in ("sp_s", "sp_r", "sp_f")}
        for tag, key in ((_SUPPLY, "sp_s"), (_RECIRC, "sp_r"), (_PURGE, "sp_f")):
            if tag.name in values:
                requested[key] = values[tag.name]
                s[key] = np.clip(values[tag.name], tag.plc_low, tag.plc_high)
        s["sp_r"] = np.maximum(s["sp_r"], MIN_RECIRC_RATIO * s["sp_s"])
        clipped = sum(
            (np.abs(s[key] - requested[key]) > 1e-12).astype(np.float64) for key in requested
        )
        zero = np.zeros(n)
        return clipped, values.get(_END_SEMIBATCH, zero), values.get(_END_PROCESS, zero)

    def _apply_disturbances(self, disturbances: Mapping[str, FloatArray]) -> None:
        n, s = self.n, self._s

        def get(key: str) -> FloatArray | None:
            if key not in disturbances:
                return None
            arr = _per_plant(disturbances[key], n)
            low, high = self.disturbance_ranges[key]
            if not np.all(np.isfinite(arr)) or np.any((arr < low) | (arr > high)):
                raise ValueError(
                    f"hsbro disturbance {key!r} must be finite in [{low}, {high}]: {arr}"
                )
            return arr

        dilution = get("feed_dilution")
        tds = get("feed_tds_gl")
        if tds is not None:
            if dilution is not None:
                raise ValueError("hsbro disturbances give both 'feed_tds_gl' and 'feed_dilution'")
            s["c_feed"] = tds.copy()
        else:
            default = self.disturbance_defaults["feed_dilution"]
            dil = np.full(n, default) if dilution is None else dilution
            s["c_feed"] = self._p["bath_tds_gl"] / dil
        temp = get("feed_temperature_c")
        default_t = self.disturbance_defaults["feed_temperature_c"]
        s["temp_c"] = np.full(n, default_t) if temp is None else temp.copy()
        tank = get("feed_tank_volume_l")
        if tank is not None:
            s["delivered_l"] = tank.copy()

    def step(
        self,
        setpoints: Mapping[str, FloatArray],
        disturbances: Mapping[str, FloatArray],
        dt_s: float,
    ) -> StepResult:
        """Advance every plant by ``dt_s`` seconds (sub-steps of at most 20 s)."""
        if not math.isfinite(dt_s) or dt_s <= 0.0:
            raise ValueError(f"hsbro step needs a positive finite dt_s, got {dt_s}")
        n, s = self.n, self._s
        clipped, end_sb, end_proc = self._apply_setpoints(setpoints)
        self._apply_disturbances(disturbances)
        c = self._coefficients(s["temp_c"])
        acc = {k: np.zeros(n) for k in _STEP_TOTALS}
        tripped_before = s["tripped"] >= 0.5

        running = (s["tripped"] < 0.5) & (s["phase"] < FINISHED)
        tank = s["delivered_l"] - s["feed_l"]
        accept = running & (end_proc >= 0.5) & (tank < END_PROCESS_MAX_TANK_L)
        s["finish_req"] = np.where(accept, 1.0, s["finish_req"])
        switch = running & (s["phase"] == SEMIBATCH) & (end_sb >= 0.5)
        if switch.any():
            self._start_batch(switch)

        n_sub = max(1, math.ceil(dt_s / MAX_SUBSTEP_S - 1e-9))
        h = dt_s / n_sub
        rate_s = float(_SUPPLY.max_rate_per_s or math.inf)
        rate_r = float(_RECIRC.max_rate_per_s or math.inf)
        for _ in range(n_sub):
            phase = s["phase"]
            running = (s["tripped"] < 0.5) & (phase < FINISHED)
            qs1, qs_bar = _ramp(s["qs"], s["sp_s"], rate_s, h)
            qr1, qr_bar = _ramp(s["qr"], s["sp_r"], rate_r, h)
            in_purge = phase == PURGE
            qr1 = np.where(in_purge, s["qr"], qr1)
            qr_bar = np.where(in_purge, s["qr"], qr_bar)
            qs_bar = np.where(running, qs_bar, 0.0)
            qr_bar = np.where(running, qr_bar, 0.0)
            s["qs"] = np.where(running, qs1, 0.0)
            s["qr"] = np.where(running, qr1, 0.0)
            left = self._advance(np.full(n, h), qs_bar, qr_bar, c, acc)
            if np.any(left > 0.0):
                # A phase ended inside the sub-step: the rest of it runs in the next phase.
                in_purge = s["phase"] == PURGE
                s["qr"] = np.where(in_purge, self._refill_flow(s["qs"] / 60.0) * 60.0, s["qr"])
                qr_left = np.where(in_purge, s["qr"], qr_bar)
                self._advance(left, qs_bar, qr_left, c, acc)
            in_purge = s["phase"] == PURGE
            s["qr"] = np.where(
                in_purge & running, self._refill_flow(s["qs"] / 60.0) * 60.0, s["qr"]
            )
            s["t"] += h

        stopped = s["tripped"] >= 0.5
        s["qs"] = np.where(stopped, 0.0, s["qs"])
        s["qr"] = np.where(stopped, 0.0, s["qr"])
        self._update_end_state(c)
        new_trip = stopped & ~tripped_before
        downtime = acc["purge_s"] + np.where(stopped, np.maximum(dt_s - acc["active_s"], 0.0), 0.0)
        rate = (
            (np.abs(s["qs"] - s["sp_s"]) > 1e-9) | (np.abs(s["qr"] - s["sp_r"]) > 1e-9)
        ) & ~stopped
        rate &= s["phase"] <= BATCH
        return StepResult(
            product_m3=acc["delivered_l"] / 1000.0,
            feed_m3=acc["feed_l"] / 1000.0,
            energy_kwh=acc["energy_j"] / 3.6e6,
            chemicals_eur=np.zeros(n),
            downtime_s=downtime,
            quality_excess=acc["quality"],
            pressure_excess=np.maximum(acc["peak_kpa"] / 100.0 - PRESSURE_SOFT_BAR, 0.0)
            / (PRESSURE_TRIP_BAR - PRESSURE_SOFT_BAR),
            tripped=stopped.copy(),
            trip_reason=self._trip_reason.copy(),
            interventions={
                "clip": clipped,
                "rate": rate.astype(np.float64),
                "interlock": acc["forced"] + new_trip,
            },
            cleanings={k: np.zeros(n) for k in ("cip", "ceb", "backwash")},
            finished=self._s["phase"] == FINISHED,
        )

    # --- outputs ----------------------------------------------------------------------------------

    def measurements(self) -> dict[str, FloatArray]:
        """Noise-free values of every observation tag and the setpoint readbacks."""
        s = self._s
        producing = (s["phase"] <= BATCH) & (s["tripped"] < 0.5)
        return {
            "feed_tank_volume_l": s["delivered_l"] - s["feed_l"],
            "feed_conductivity_uscm": conductivity_uscm(s["c_feed"]),
            "feed_temperature_c": s["temp_c"].copy(),
            "supply_pressure_bar": s["p_s"] / 100.0,
            "recirc_pressure_bar": s["p_r"] / 100.0,
            "supply_flow_lpm": s["qs"].copy(),
            "recirc_flow_lpm": s["qr"].copy(),
            "permeate_flow_lpm": np.where(producing, s["qs"], 0.0),
            "permeate_conductivity_uscm": conductivity_uscm(s["c_perm"]),
            "loop_conductivity_uscm": conductivity_uscm(s["c_out"]),
            "piston_position_pct": 100.0
            * self._piston_volume()
            / self._p["work_exchanger_volume_l"],
            "phase": s["phase"].copy(),
            "phase_time_s": s["t_phase"].copy(),
            "supply_flow_sp_lpm": s["sp_s"].copy(),
            "recirc_flow_sp_lpm": s["sp_r"].copy(),
            "purge_factor_sp": s["sp_f"].copy(),
        }

    def _piston_volume(self) -> FloatArray:
        s = self._s
        refilled = self._p["work_exchanger_volume_l"] * np.minimum(
            s["theta"] / np.maximum(s["sp_f"], 1e-9), 1.0
        )
        return np.asarray(np.where(s["phase"] == PURGE, refilled, s["v_we"]))

    def hidden(self) -> dict[str, FloatArray]:
        """Unmeasured states and cumulative balances (for info, tests and evaluation)."""
        s = self._s
        c = self._coefficients(s["temp_c"])
        qs = s["qs"] / 60.0
        qr = s["qr"] / 60.0
        tmp, _, c_in, c_mod, *_ = self._loop(s["m_loop"], s["v_we"], qs, qr, c)
        in_purge = s["phase"] == PURGE
        purge_salt = self._purge_section_salt()
        inventory = np.where(in_purge, s["m_loop"] + purge_salt, s["m_loop"]) + s["m_behind"]
        out = {
            "feed_tds_gl": s["c_feed"].copy(),
            "loop_tds_gl": np.where(in_purge, purge_salt / self._v_purge, c_in),
            "module_tds_gl": np.where(in_purge, purge_salt / self._v_purge, c_mod),
            "tmp_bar": np.where(in_purge, 0.0, tmp / 100.0),
            "salt_inventory_g": inventory,
            "permeate_line_deficit_l": s["deficit_l"].copy(),
            "finish_requested": s["finish_req"].copy(),
            "finished": (s["phase"] == FINISHED).astype(np.float64),
            "time_s": s["t"].copy(),
        }
        for key in (*_COUNTERS, "last_recovery", "last_sec_kwh_m3", "last_brine_gl", "v_behind"):
            out[key] = s[key].copy()
        # Brine salt of a running purge is booked when it ends; report it as it leaves.
        pending = s["s_in"] - (self._purge_section_salt() - s["c0"] * self._v_purge)
        out["salt_brine_g"] = s["salt_brine_g"] + np.where(in_purge, pending, 0.0)
        return out

    def params(self) -> dict[str, FloatArray]:
        """Physical parameters per plant (``NOMINAL_PARAMS`` keys)."""
        return {k: v.copy() for k, v in self._p.items()}


_STATES: Final = (
    "phase",
    "t_phase",
    "t",
    "qs",
    "qr",
    "sp_s",
    "sp_r",
    "sp_f",
    "v_we",
    "m_loop",
    "v_behind",
    "m_behind",
    "theta",
    "c0",
    "s_in",
    "delivered_l",
    "deficit_l",
    "c_perm",
    "c_feed",
    "temp_c",
    "tripped",
    "finish_req",
    "p_s",
    "p_r",
    "c_out",
    "last_recovery",
    "last_sec_kwh_m3",
    "last_brine_gl",
)
"""State arrays, one value per plant."""

_COUNTERS: Final = (
    "feed_l",
    "perm_gross_l",
    "perm_delivered_l",
    "brine_l",
    "salt_feed_g",
    "salt_perm_g",
    "salt_brine_g",
    "salt_backflow_g",
    "energy_j",
    "cycles",
    "max_p_kpa",
    "run_s",
    "cyc_feed_l",
    "cyc_perm_l",
    "cyc_energy_j",
    "cyc_brine_l",
    "cyc_brine_salt_g",
)
"""Cumulative counters since reset (``cyc_*``: since the current cycle started)."""

_STEP_TOTALS: Final = (
    "feed_l",
    "delivered_l",
    "energy_j",
    "purge_s",
    "active_s",
    "forced",
    "quality",
    "peak_kpa",
)
"""Per-step accumulators behind ``StepResult``."""
