"""Continuous RO train with concentration polarisation, fouling, scaling and CIP, vectorised over plants.

Physics (process-models.md §3; equations in ``docs/process-models.md``):

- Quasi-steady channel: one pressure vessel per plant is marched in ``n_segments`` segments (all
  vessels of a train are identical and in parallel). Per segment the solution-diffusion flux
  (RO-2, RO-3) and film-theory polarisation (RO-4, WaterTAP Sh correlation RO-5) are solved by a
  relaxed fixed point with a fixed iteration count, warm-started from the previous step's flux
  profile (§2.2). Segment properties (bulk concentration, crossflow, pressure) are taken at the
  segment midpoint. Channel pressure drop RO-6, balances RO-7, TCF RO-8, SEC with optional
  isobaric ERD RO-10.
- Slow states: per-segment fouling resistance R_f (flux-proportional with a crossflow factor, §3.3),
  scaling at high membrane concentration factor, irreversible share left by each CIP.
- Actuators: the HP-pump VFD holds feed pressure, the concentrate valve holds feed flow; both follow
  their setpoints through a first-order lag and a rate limit.
- Events: CIP (rising edge of ``cip_request`` or :meth:`RoModel.force_cip`) with downtime, chemicals
  and imperfect recovery; hard-limit trips stop the plant until reset or :meth:`RoModel.clear_trip`.

Pressures are gauge (bar g at the tags, Pa inside). The reference cases of process-models.md §3.5 are
reproduced (within 3 %) with the tabulated feed pressure as gauge feed pressure, the permeate at 0 bar g
and the HP-pump suction at P_0 = 1 bar g (the SEC column is (P_f − 1 bar)/(36·η_p·Y)); the default
train keeps that suction pressure (LP feed pump and cartridge filters) and a 0.5 bar permeate
back-pressure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from app import kpi
from app.plant.catalog import RO_CATALOG
from app.plant.models.base import FloatArray, ProcessModel, StepResult

F64 = npt.NDArray[np.float64]

LMH_PER_BAR_SI = 1.0 / 3.6e6 / 1e5
"""One LMH/bar in m/(s·Pa) (2.778e-12)."""
BAR = 1e5
M3H = 1.0 / 3600.0
_RHO = 1000.0
_SH_COEF, _SH_EXP = 0.46, 0.36
"""Sh = 0.46·(Re·Sc)^0.36 (WaterTAP spacer correlation, RO-5)."""
_F_TURB, _F_LAM = 0.42, 189.3
"""Friction factor f = 0.42 + 189.3/Re (WaterTAP, RO-6)."""
_MIN_SEGMENT_OUTFLOW = 0.1
"""A segment may permeate at most 90 % of its inflow (keeps the march positive under any input)."""
_VELOCITY_FACTOR_RANGE = (0.2, 5.0)
_MAX_CP_EXPONENT = 50.0
"""Cap of J/k_f inside the fixed point: a transient warm start at a stagnant tail must not overflow."""
_MIN_FLOW_M3H = 1e-6
_TCF_K_WARM, _TCF_K_COLD = 2640.0, 3020.0
"""K of ``kpi.temperature_correction_factor`` (RO-8), for the one-plant float path."""
_MIN_TDS_GL = 1e-6


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One physical parameter of a model.

    Attributes:
        default: Default value (industrial brackish train).
        low: Lowest accepted value.
        high: Highest accepted value.
        unit: Unit.
        doc: What it is, with the evidence tag of process-models.md.
        randomize: True if ``reset(randomize=r)`` draws it uniformly within ±r of its value.
    """

    default: float
    low: float
    high: float
    unit: str
    doc: str
    randomize: bool = False


def _base(tag: str) -> float:
    value = RO_CATALOG.tag(tag).base_value
    if value is None:
        raise ValueError(f"RO catalogue tag {tag!r} has no base_value")
    return value


def _rate(tag: str) -> float:
    value = RO_CATALOG.tag(tag).max_rate_per_s
    if value is None:
        raise ValueError(f"RO catalogue tag {tag!r} has no max_rate_per_s")
    return value


P = ParamSpec
RO_PARAMETERS: dict[str, ParamSpec] = {
    # Membrane
    "water_permeability_lmh_bar": P(
        3.3, 0.1, 20.0, "LMH/bar", "A at 25 °C, BW30-400 test point [D]", True
    ),
    "salt_permeability_m_s": P(
        5.7e-8, 1e-10, 1e-6, "m/s", "B at 25 °C, 99.5 % rejection [D]", True
    ),
    "salt_tcf_exponent": P(0.85, 0.0, 1.5, "-", "TCF_B = TCF^x, x 0.7-1.0 [J]"),
    # Geometry: identical vessels in parallel
    "n_vessels": P(4.0, 1.0, 1000.0, "-", "Parallel pressure vessels (train of the catalogue)"),
    "vessel_area_m2": P(222.0, 1.0, 2000.0, "m2", "Membrane area per vessel, 6 x 37 m2 [P14]"),
    "flow_length_m": P(6.0, 0.5, 30.0, "m", "Feed-channel length per vessel (6 x 1 m elements)"),
    "channel_height_m": P(0.71e-3, 0.2e-3, 3e-3, "m", "Feed spacer height, 28 mil [P14]"),
    "spacer_porosity": P(0.85, 0.3, 0.99, "-", "Spacer porosity [P4]"),
    "nacl_diffusivity_m2_s": P(1.47e-9, 1e-10, 1e-8, "m2/s", "NaCl diffusivity at 25 °C [P1, P5]"),
    "viscosity_pa_s": P(1.0e-3, 1e-4, 1e-2, "Pa s", "Feed viscosity at 25 °C [P5]"),
    "mass_transfer_factor": P(1.0, 0.2, 5.0, "-", "Multiplier on k_f (model mismatch) [J]", True),
    "friction_factor": P(1.0, 0.2, 5.0, "-", "Multiplier on channel ΔP (model mismatch) [J]", True),
    # Pump, ERD, valve
    "pump_efficiency": P(0.75, 0.1, 0.95, "-", "HP pump wire-to-water efficiency [§3.5]", True),
    "erd_efficiency": P(0.0, 0.0, 0.98, "-", "Isobaric ERD efficiency, 0 = no ERD [P4]", True),
    "pump_inlet_pressure_bar": P(
        1.0, -0.9, 10.0, "bar g", "HP pump suction P_0 (LP feed pump) [J]"
    ),
    "permeate_pressure_bar": P(0.5, 0.0, 5.0, "bar g", "Permeate back-pressure [J]"),
    "pump_shutoff_head_bar": P(55.0, 1.0, 300.0, "bar", "Pump head at full speed, zero flow [J]"),
    "pump_rated_flow_m3h": P(
        75.0, 0.1, 5000.0, "m3/h", "Pump curve: H = H0·(s² − 0.2·(Q/Q_r)²) [J]"
    ),
    "conc_valve_kv": P(60.0, 0.01, 5000.0, "m3/h/√bar", "Concentrate valve Kv (linear) [J]"),
    # Fouling, scaling, CIP
    "fouling_rate_pa_s_m2": P(
        2.25e8, 0.0, 1e11, "Pa s/m2", "k_fp: [P8] fit / 3 for clean BW feed [J]", True
    ),
    "fouling_crossflow_exponent": P(0.5, 0.0, 2.0, "-", "g(v) = (v_ref/v)^n [J]"),
    "fouling_reference_velocity_m_s": P(0.1, 0.01, 1.0, "m/s", "v_ref of the crossflow factor [J]"),
    "cake_cp_factor": P(0.5, 0.0, 10.0, "-", "Cake-enhanced CP: k_f/(1 + β·R_f/R_m) [J]"),
    "dp_fouling_factor": P(1.0, 0.0, 10.0, "-", "Channel ΔP × (1 + κ·R_f/R_m) [J]"),
    "scaling_rate_pa_s_m_per_s": P(
        4e4, 0.0, 1e8, "Pa s/m/s", "dR_s/dt per unit CF above limit [J]"
    ),
    "scaling_cf_limit": P(
        4.0, 1.0, 100.0, "-", "Membrane concentration factor where scaling starts [J]"
    ),
    "initial_fouling_ratio": P(0.0, 0.0, 5.0, "-", "R_f/R_m at reset (uniform profile)"),
    "cip_duration_h": P(6.0, 0.25, 48.0, "h", "CIP downtime incl. flush, 4-12 h [J]"),
    "cip_efficiency": P(0.95, 0.0, 1.0, "-", "η_0 of η_CIP = η_0 − γ·R_f/R_m [J]"),
    "cip_hardening": P(0.5, 0.0, 5.0, "-", "γ: late cleaning is less effective [J], [P21]"),
    "cip_irreversible_share": P(
        0.03, 0.0, 1.0, "-", "Share of removed resistance left irreversible [J]"
    ),
    "cip_min_efficiency": P(0.3, 0.0, 1.0, "-", "Lower bound of η_CIP [J]"),
    "cip_chemicals_eur": P(300.0, 0.0, 1e5, "EUR", "Chemicals per CIP [J]"),
    "cip_power_kw": P(10.0, 0.0, 1000.0, "kW", "CIP recirculation pump [J]"),
    # Product tank
    "tank_volume_m3": P(100.0, 0.1, 1e6, "m3", "Permeate tank [J]"),
    "initial_tank_level_pct": P(50.0, 0.0, 100.0, "%", "Tank level at reset"),
    # Hard and soft limits
    "feed_pressure_trip_bar": P(41.0, 1.0, 150.0, "bar g", "BW element maximum [P14, P15]"),
    "feed_pressure_soft_bar": P(38.0, 1.0, 150.0, "bar g", "Start of the pressure penalty [J]"),
    "vessel_dp_trip_bar": P(3.5, 0.1, 20.0, "bar", "ΔP per multi-element vessel [P15]"),
    "vessel_dp_soft_bar": P(3.0, 0.1, 20.0, "bar", "Start of the ΔP penalty [J]"),
    "temperature_trip_c": P(45.0, 1.0, 100.0, "°C", "Feed temperature limit [P14]"),
    "orp_trip_mv": P(400.0, -500.0, 1500.0, "mV", "Oxidant breakthrough interlock [J]"),
    "ph_trip_low": P(2.0, 0.0, 14.0, "pH", "Continuous-operation pH range [P14]"),
    "ph_trip_high": P(11.0, 0.0, 14.0, "pH", "Continuous-operation pH range [P14]"),
    "permeate_limit_uscm": P(100.0, 1.0, 5000.0, "µS/cm", "Permeate quality limit (site) [J]"),
    "tds_per_conductivity": P(
        kpi.TDS_PER_CONDUCTIVITY, 0.3, 1.0, "mg/L/(µS/cm)", "EC-TDS factor [J]"
    ),
    # Actuators
    "pressure_lag_s": P(5.0, 0.01, 600.0, "s", "Pressure loop (VFD) time constant [J]"),
    "flow_lag_s": P(10.0, 0.01, 600.0, "s", "Flow loop (valve) time constant [J]"),
    "pressure_rate_bar_s": P(
        _rate("feed_pressure_sp_bar"), 0.01, 10.0, "bar/s", "Ramp ≤ 0.7 bar/s [P18]"
    ),
    "flow_rate_m3h_s": P(_rate("feed_flow_sp_m3h"), 0.001, 100.0, "m3/h/s", "Flow ramp [J]"),
    "initial_feed_pressure_bar": P(
        _base("feed_pressure_sp_bar"), 0.0, 150.0, "bar g", "Setpoint at reset"
    ),
    "initial_feed_flow_m3h": P(
        _base("feed_flow_sp_m3h"), 0.001, 5000.0, "m3/h", "Setpoint at reset"
    ),
}
del P

SEAWATER_REFERENCE: dict[str, float] = {
    "water_permeability_lmh_bar": 4.2e-12 / LMH_PER_BAR_SI,
    "salt_permeability_m_s": 3.5e-8,
    "n_vessels": 1.0,
    "vessel_area_m2": 50.0,
    "flow_length_m": 7.0,
    "channel_height_m": 1e-3,
    "spacer_porosity": 0.85,
    "pump_efficiency": 0.8,
    "erd_efficiency": 0.95,
    "pump_inlet_pressure_bar": 1.0,
    "permeate_pressure_bar": 0.0,
    "pump_shutoff_head_bar": 100.0,
    "pump_rated_flow_m3h": 5.0,
    "conc_valve_kv": 2.0,
    "feed_pressure_trip_bar": 83.0,
    "feed_pressure_soft_bar": 80.0,
    "permeate_limit_uscm": 500.0 / kpi.TDS_PER_CONDUCTIVITY,
    "tank_volume_m3": 10.0,
    "initial_feed_pressure_bar": 55.0,
    "initial_feed_flow_m3h": 3.6,
}
"""WaterTAP RO-with-ERD case of process-models.md §3.5 (35 g/L feed, 1 L/s = 3.6 m³/h, 50 m², 7 m)."""

BRACKISH_REFERENCE: dict[str, float] = {
    "permeate_pressure_bar": 0.0,
    "pump_inlet_pressure_bar": 1.0,
    "initial_feed_flow_m3h": 40.0,
}
"""§3.5 brackish case per vessel (10 m³/h) on the default 4-vessel train: 40 m³/h, P_p = 0 bar g."""


def _fit_osmotic_polynomial() -> tuple[float, float, float]:
    """Cubic c·(b1 + b2·c + b3·c²) fit of RO-1 without its ρ_w·T factor, 0-300 g/L (< 0.3 % error).

    The segment fixed point evaluates osmotic pressure tens of times per step; the polynomial needs five
    array operations where the exact mass-fraction form needs fourteen.
    """
    c = np.linspace(0.0, 300.0, 3001)[1:]
    t_c = kpi.REFERENCE_TEMPERATURE_C
    f = kpi.osmotic_pressure_bar(c, t_c) * BAR / (kpi.water_density_kg_m3(t_c) * (t_c + kpi.KELVIN))
    basis = np.stack([c, c * c, c * c * c], axis=1) / f[:, None]
    coef = np.linalg.lstsq(basis, np.ones_like(c), rcond=None)[0]
    return float(coef[0]), float(coef[1]), float(coef[2])


OSMOTIC_POLY = _fit_osmotic_polynomial()
"""π[Pa] ≈ ρ_w(T)·T·c·(b1 + b2·c + b3·c²), c in g/L."""


def osmotic_pressure_fast_pa(c_gl: FloatArray, temperature_c: FloatArray) -> FloatArray:
    """The model's osmotic pressure (RO-1 via :data:`OSMOTIC_POLY`) in Pa; for tests and docs."""
    b1, b2, b3 = OSMOTIC_POLY
    t = np.asarray(temperature_c, dtype=np.float64)
    c = np.asarray(c_gl, dtype=np.float64)
    coef = kpi.water_density_kg_m3(t) * (t + kpi.KELVIN)
    return np.asarray(coef * c * (b1 + c * (b2 + c * b3)), dtype=np.float64)


def _viscosity_ratio(temperature_c: F64) -> F64:
    """μ(T)/μ(25 °C) from μ = 2.414e-5·10^(247.8/(T − 140)) (RO-8 alternative [P8])."""
    t_k = temperature_c + kpi.KELVIN
    return np.asarray(10.0 ** (247.8 / (t_k - 140.0) - 247.8 / (298.15 - 140.0)), dtype=np.float64)


@dataclass(slots=True)
class _Channel:
    """Inputs of one channel solve for m plants: arrays (m,), or (n_seg, m) for the profiles.

    Scalars are stored as (m,) arrays: numpy converts a Python float on every operation, which costs
    as much as the operation itself at the array sizes of one plant.
    """

    head: F64
    q_in: F64
    salt_in: F64
    seg_area: F64
    half_area: F64
    cap: F64
    b_t: F64
    k_coef: F64
    fa2: F64
    fa1: F64
    pi1: F64
    pi2: F64
    pi3: F64
    half: F64
    keep: F64
    zero: F64
    min_out: F64
    x_cap: F64
    omega_a: F64
    kf_div: F64
    dp_mult: F64


_mul, _add, _sub, _div = np.multiply, np.add, np.subtract, np.divide
_exp, _pow, _max, _min = np.exp, np.power, np.maximum, np.minimum


class _Scratch:
    """Work arrays of one channel solve for m plants, reused every step (no allocation in the loop)."""

    __slots__ = ("c_b", "dp", "e", "head", "inv_kf", "jr", "oa_head", "q", "r", "salt", "t1", "t2")

    def __init__(self, m: int) -> None:
        self.q, self.salt, self.head, self.dp = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
        self.c_b, self.inv_kf, self.oa_head = np.empty(m), np.empty(m), np.empty(m)
        self.e, self.r, self.jr, self.t1, self.t2 = (np.empty(m) for _ in range(5))


def _march(ch: _Channel, flux: F64, c_mem: F64, q_mid: F64, n_iter: int, s: _Scratch) -> None:
    """March one feed channel segment by segment (RO-2 to RO-7) for m plants at once.

    ``flux`` (n_seg, m) holds the warm start and receives the new flux; ``c_mem`` and ``q_mid``
    receive the membrane-wall concentration and the midpoint flow per segment; ``s.q``, ``s.salt``
    and ``s.dp`` end as the outlet flow, outlet salt flow and channel ΔP (SI, per vessel).

    Per segment the midpoint crossflow, bulk concentration and pressure come from the warm-start
    flux; the flux is a relaxed fixed point of J = A_eff·(P − P_p − (π(c_m) − π(c_p))) with the
    closed-form film-theory wall and permeate concentrations c_m = c_b·e·(J + B)/(J + B·e) and
    c_p = B·c_b·e/(J + B·e), e = exp(J/k_f); with r = c_b·e/(J + B·e): c_p = B·r, c_m − c_p = J·r.
    Outlet flow and salt come from the final flux and its permeate concentration, so the balances
    close exactly whatever the iteration count.

    Written with preallocated outputs (``ufunc(a, b, out)``): at a thousand plants this halves the
    time of the same expressions written with temporaries.
    """
    np.copyto(s.q, ch.q_in)
    np.copyto(s.salt, ch.salt_in)
    np.copyto(s.head, ch.head)
    s.dp.fill(0.0)
    q, salt, head, c_b, inv_kf, oa_head = s.q, s.salt, s.head, s.c_b, s.inv_kf, s.oa_head
    e, r, jr, t1, t2 = s.e, s.r, s.jr, s.t1, s.t2
    b_t, pi1, pi2, pi3, keep, zero = ch.b_t, ch.pi1, ch.pi2, ch.pi3, ch.keep, ch.zero
    for i in range(flux.shape[0]):
        j, qm, c_m, dp_seg, oa = flux[i], q_mid[i], c_mem[i], t2, ch.omega_a[i]
        # Midpoint flow and concentration: qm = max(q − J·ΔA/2, 0.1·q), c_b = salt/qm.
        _mul(j, ch.half_area, t1)
        _sub(q, t1, qm)
        _mul(ch.min_out, q, t1)
        _max(qm, t1, out=qm)
        _div(salt, qm, c_b)
        # 1/k_f with k_f = k·qm^0.36 and cake-enhanced polarisation.
        _pow(qm, _SH_EXP, t1)
        _mul(t1, ch.k_coef, t1)
        _div(ch.kf_div[i], t1, inv_kf)
        # Segment ΔP = qm·(a2·qm + a1)·fouling factor; ω·A_eff times the midpoint head.
        _mul(ch.fa2, qm, dp_seg)
        _add(dp_seg, ch.fa1, dp_seg)
        _mul(dp_seg, qm, dp_seg)
        _mul(dp_seg, ch.dp_mult[i], dp_seg)
        _mul(ch.half, dp_seg, t1)
        _sub(head, t1, t1)
        _mul(oa, t1, oa_head)
        _sub(head, dp_seg, head)
        _add(s.dp, dp_seg, s.dp)
        for _ in range(n_iter):
            _mul(j, inv_kf, t1)
            _min(t1, ch.x_cap, out=t1)
            _exp(t1, e)
            _mul(b_t, e, t1)
            _add(t1, j, t1)
            _mul(c_b, e, r)
            _div(r, t1, r)
            _mul(j, r, jr)
            _mul(b_t, r, c_m)
            _add(c_m, jr, c_m)
            # Δπ = π(c_m) − π(c_p) = pi1·(c_m − c_p) + c_m²·(pi2 + pi3·c_m).
            _mul(c_m, pi3, t1)
            _add(t1, pi2, t1)
            _mul(t1, c_m, t1)
            _mul(t1, c_m, t1)
            _mul(pi1, jr, e)
            _add(t1, e, t1)
            # J ← max((1 − ω)·J + ω·A_eff·(head − Δπ), 0)
            _mul(oa, t1, t1)
            _mul(keep, j, e)
            _add(e, oa_head, e)
            _sub(e, t1, j)
            _max(j, zero, out=j)
        _mul(ch.cap, q, t1)
        _min(j, t1, out=j)
        # Outlet: q −= J·ΔA, salt −= J·ΔA·c_p with c_p = B·r.
        _mul(j, ch.seg_area, t1)
        _sub(q, t1, q)
        _mul(b_t, r, e)
        _mul(t1, e, t1)
        _sub(salt, t1, salt)


def _march_expr(ch: _Channel, flux: F64, c_mem: F64, q_mid: F64, n_iter: int, s: _Scratch) -> None:
    """The same march as :func:`_march`, written with plain expressions.

    Faster for a few plants (an output argument costs more than a small temporary); bit-identical
    results (same operations in the same order, tested).
    """
    q, salt, head, dp = ch.q_in, ch.salt_in, ch.head, ch.zero
    b_t, pi1, pi2, pi3, keep, zero = ch.b_t, ch.pi1, ch.pi2, ch.pi3, ch.keep, ch.zero
    for i in range(flux.shape[0]):
        j, oa = flux[i], ch.omega_a[i]
        qm = np.maximum(q - j * ch.half_area, ch.min_out * q)
        c_b = salt / qm
        inv_kf = ch.kf_div[i] / (qm**_SH_EXP * ch.k_coef)
        dp_seg = (ch.fa2 * qm + ch.fa1) * qm * ch.dp_mult[i]
        oa_head = oa * (head - ch.half * dp_seg)
        head = head - dp_seg
        dp = dp + dp_seg
        r = c_m = c_b
        for _ in range(n_iter):
            e = np.exp(np.minimum(j * inv_kf, ch.x_cap))
            r = c_b * e / (b_t * e + j)
            jr = j * r
            c_m = b_t * r + jr
            d_pi = (c_m * pi3 + pi2) * c_m * c_m + pi1 * jr
            j = np.maximum(keep * j + oa_head - oa * d_pi, zero)
        j = np.minimum(j, ch.cap * q)
        flux[i], c_mem[i], q_mid[i] = j, c_m, qm
        perm = j * ch.seg_area
        q = q - perm
        salt = salt - perm * (b_t * r)
    np.copyto(s.q, q)
    np.copyto(s.salt, salt)
    np.copyto(s.dp, dp)


def _march_scalar(
    ch: _Channel, flux: F64, c_mem: F64, q_mid: F64, n_iter: int, s: _Scratch
) -> None:
    """The march of :func:`_march_expr` for one plant, on Python floats with :mod:`math`.

    Same operations in the same order; results equal the array path within a few ulp
    (``math.exp`` and ``**`` are not numpy's kernels; tested to 1e-9). For one plant numpy's
    per-call overhead is most of the cost of an array operation, so floats are ~20x faster. Any
    floating-point exception (a pathological input) falls back to the array path, which turns it
    into inf/NaN as before.
    """
    try:
        _march_floats(ch, flux, c_mem, q_mid, n_iter, s)
    except (ArithmeticError, ValueError, TypeError):
        _march_expr(ch, flux, c_mem, q_mid, n_iter, s)


def _march_floats(
    ch: _Channel, flux: F64, c_mem: F64, q_mid: F64, n_iter: int, s: _Scratch
) -> None:
    exp = math.exp
    q, salt, head, dp = float(ch.q_in[0]), float(ch.salt_in[0]), float(ch.head[0]), 0.0
    b_t, pi1, pi2, pi3 = float(ch.b_t[0]), float(ch.pi1[0]), float(ch.pi2[0]), float(ch.pi3[0])
    keep, half_area, min_out = float(ch.keep[0]), float(ch.half_area[0]), float(ch.min_out[0])
    k_coef, fa2, fa1, half = float(ch.k_coef[0]), float(ch.fa2[0]), float(ch.fa1[0]), 0.5
    x_cap, cap, seg_area = float(ch.x_cap[0]), float(ch.cap[0]), float(ch.seg_area[0])
    oas, kf_divs, dp_mults = ch.omega_a[:, 0].tolist(), ch.kf_div[:, 0].tolist(), ch.dp_mult[:, 0]
    dp_mults_l = dp_mults.tolist()
    js = flux[:, 0].tolist()
    n_seg = len(js)
    out_j, out_c, out_q = [0.0] * n_seg, [0.0] * n_seg, [0.0] * n_seg
    for i in range(n_seg):
        j, oa = js[i], oas[i]
        qm = q - j * half_area
        floor = min_out * q
        if not qm >= floor:  # np.maximum: NaN propagates from either side
            qm = floor if qm == qm else qm
        c_b = salt / qm
        inv_kf = kf_divs[i] / (qm**_SH_EXP * k_coef)
        dp_seg = (fa2 * qm + fa1) * qm * dp_mults_l[i]
        oa_head = oa * (head - half * dp_seg)
        head = head - dp_seg
        dp = dp + dp_seg
        r = c_m = c_b
        for _ in range(n_iter):
            x = j * inv_kf
            e = exp(x if x < x_cap or x != x else x_cap)
            r = c_b * e / (b_t * e + j)
            jr = j * r
            c_m = b_t * r + jr
            d_pi = (c_m * pi3 + pi2) * c_m * c_m + pi1 * jr
            j = keep * j + oa_head - oa * d_pi
            if not j >= 0.0:
                j = 0.0 if j == j else j
        top = cap * q
        if not j <= top:
            j = top if j == j else j
        out_j[i], out_c[i], out_q[i] = j, c_m, qm
        perm = j * seg_area
        q = q - perm
        salt = salt - perm * (b_t * r)
    flux[:, 0] = out_j
    c_mem[:, 0] = out_c
    q_mid[:, 0] = out_q
    s.q[0], s.salt[0], s.dp[0] = q, salt, dp


_BUFFERED_MIN_PLANTS = 32
"""From this many plants on, :func:`_march` (preallocated outputs) beats :func:`_march_expr`."""


def _outputs(
    ch: _Channel, p: Mapping[str, F64], q_out: F64, salt_out: F64, dp: F64
) -> tuple[F64, ...]:
    """Train outputs (:data:`_OUTPUTS` order) from the channel solve of one vessel."""
    n_ves = p["n_vessels"]
    perm = ch.q_in - q_out
    c_p = np.divide(ch.salt_in - salt_out, perm, out=np.zeros_like(perm), where=perm > 0.0)
    q_f = ch.q_in * (n_ves / M3H)
    q_c = q_out * (n_ves / M3H)
    q_p = q_f - q_c
    p_f = ch.head / BAR + p["permeate_pressure_bar"]
    dp_bar = dp / BAR
    p_c = p_f - dp_bar
    p_0 = p["pump_inlet_pressure_bar"]
    erd = p["erd_efficiency"]
    hydraulic_kw = (q_f * (p_f - p_0) - erd * q_c * np.maximum(p_c - p_0, 0.0)) * (BAR * M3H / 1e3)
    q_pump = np.where(erd > 0.0, q_p, q_f) / p["pump_rated_flow_m3h"]
    speed2 = np.maximum(p_f - p_0, 0.0) / p["pump_shutoff_head_bar"] + 0.2 * q_pump * q_pump
    valve = q_c / (p["conc_valve_kv"] * np.sqrt(np.maximum(p_c, 1e-3)))
    return (
        p_f,
        p_c,
        dp_bar,
        q_f,
        q_p,
        q_c,
        c_p,
        salt_out / q_out,
        c_p * (1e3 / p["tds_per_conductivity"]),
        100.0 * np.sqrt(np.minimum(speed2, 1.0)),
        np.maximum(hydraulic_kw, 0.0) / p["pump_efficiency"],
        100.0 * np.minimum(valve, 1.0),
        100.0 * q_p / q_f,
    )


def _outputs_floats(
    ch: _Channel, p: Mapping[str, F64], q_out_a: F64, salt_out_a: F64, dp_a: F64
) -> tuple[F64, ...] | None:
    """:func:`_outputs` for one plant on Python floats (same operations and order).

    ``None`` on a floating-point exception: the caller then takes the array path.
    """
    try:
        q_in, salt_in, head = float(ch.q_in[0]), float(ch.salt_in[0]), float(ch.head[0])
        q_out, salt_out, dp = float(q_out_a[0]), float(salt_out_a[0]), float(dp_a[0])
        n_ves = float(p["n_vessels"][0])
        perm = q_in - q_out
        c_p = (salt_in - salt_out) / perm if perm > 0.0 else 0.0
        q_f = q_in * (n_ves / M3H)
        q_c = q_out * (n_ves / M3H)
        q_p = q_f - q_c
        p_f = head / BAR + float(p["permeate_pressure_bar"][0])
        dp_bar = dp / BAR
        p_c = p_f - dp_bar
        p_0 = float(p["pump_inlet_pressure_bar"][0])
        erd = float(p["erd_efficiency"][0])
        hydraulic_kw = (q_f * (p_f - p_0) - erd * q_c * _fmax(p_c - p_0, 0.0)) * (BAR * M3H / 1e3)
        q_pump = (q_p if erd > 0.0 else q_f) / float(p["pump_rated_flow_m3h"][0])
        speed2 = (
            _fmax(p_f - p_0, 0.0) / float(p["pump_shutoff_head_bar"][0]) + 0.2 * q_pump * q_pump
        )
        valve = q_c / (float(p["conc_valve_kv"][0]) * math.sqrt(_fmax(p_c, 1e-3)))
        values = (
            p_f,
            p_c,
            dp_bar,
            q_f,
            q_p,
            q_c,
            c_p,
            salt_out / q_out,
            c_p * (1e3 / float(p["tds_per_conductivity"][0])),
            100.0 * math.sqrt(_fmin(speed2, 1.0)),
            _fmax(hydraulic_kw, 0.0) / float(p["pump_efficiency"][0]),
            100.0 * _fmin(valve, 1.0),
            100.0 * q_p / q_f,
        )
    except (ArithmeticError, ValueError):
        return None
    # One (13, 1) array, handed out row by row: each output is its own (1,) view.
    return tuple(np.array(values).reshape(len(values), 1))


def _fmax(a: float, b: float) -> float:
    """``np.maximum`` on floats: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


def _fmin(a: float, b: float) -> float:
    """``np.minimum`` on floats: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


class RoModel(ProcessModel):
    """Continuous brackish/seawater RO train (``RO_CATALOG``), vectorised over ``n`` plants.

    Setpoints: ``feed_pressure_sp_bar`` (HP-pump VFD), ``feed_flow_sp_m3h`` (concentrate valve) and the
    ``cip_request`` command (a CIP starts on its rising edge). A setpoint that is not given keeps its
    last value, as a PLC register does. Disturbances: :attr:`disturbance_names`; missing ones keep
    their last value (:attr:`disturbance_defaults` after reset); extra keys (``tariff_eur_kwh``) are
    ignored.

    ``reset(params=...)`` accepts the names of :data:`RO_PARAMETERS` and, as initial conditions, the
    disturbance names (so the first measurements match the scenario's first sample).
    """

    catalog = RO_CATALOG
    disturbance_names = (
        "feed_tds_gl",
        "feed_temperature_c",
        "fouling_factor",
        "demand_m3h",
        "feed_ph",
        "feed_orp_mv",
    )
    disturbance_defaults: ClassVar[dict[str, float]] = {
        "feed_tds_gl": 2.0,
        "feed_temperature_c": 20.0,
        "fouling_factor": 1.0,
        "demand_m3h": 20.0,
        "feed_ph": 7.5,
        "feed_orp_mv": 200.0,
    }
    disturbance_ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "feed_tds_gl": (0.1, 6.0),
        "feed_temperature_c": (1.0, 45.0),
        "fouling_factor": (0.0, 20.0),
        "demand_m3h": (0.0, 60.0),
        "feed_ph": (0.0, 14.0),
        "feed_orp_mv": (-500.0, 1000.0),
    }
    """Disturbance ranges the model is tested on (beyond the trip limits the plant stops)."""
    accepts_initial_disturbances: ClassVar[bool] = True
    """``reset(params=...)`` takes disturbance names as initial conditions."""
    parameters: ClassVar[dict[str, ParamSpec]] = RO_PARAMETERS

    SETPOINT_INPUTS: ClassVar[tuple[str, ...]] = (
        "feed_pressure_sp_bar",
        "feed_flow_sp_m3h",
        "cip_request",
    )

    def __init__(
        self,
        n: int,
        *,
        n_segments: int = 10,
        n_iterations: int = 3,
        relaxation: float = 0.65,
        params: Mapping[str, float] | None = None,
    ) -> None:
        """Create ``n`` plants; call :meth:`reset` before stepping.

        Args:
            n: Number of plants.
            n_segments: Segments per pressure vessel (midpoint scheme: 6-10 are within 0.5 % of 20).
            n_iterations: Fixed-point iterations per segment and step (warm-started).
            relaxation: Relaxation factor ω of the flux fixed point (§2.2: 0.6-0.7).
            params: Defaults for this instance (e.g. :data:`SEAWATER_REFERENCE`), overriding
                :data:`RO_PARAMETERS`; ``reset(params=...)`` overrides these in turn.

        Raises:
            ValueError: On a bad argument or an unknown or out-of-range parameter.
        """
        super().__init__(n)
        if not 2 <= n_segments <= 100:
            raise ValueError(f"n_segments must be within 2..100, got {n_segments}")
        if not 1 <= n_iterations <= 100:
            raise ValueError(f"n_iterations must be within 1..100, got {n_iterations}")
        if not 0.0 < relaxation <= 1.0:
            raise ValueError(f"relaxation must be within (0, 1], got {relaxation}")
        self.n_segments = n_segments
        self.n_iterations = n_iterations
        self.relaxation = relaxation
        defaults = {name: spec.default for name, spec in RO_PARAMETERS.items()}
        for name, value in (params or {}).items():
            defaults[name] = float(self._check_param(name, np.asarray(value, dtype=np.float64)))
        self._check_consistency({k: np.asarray(v) for k, v in defaults.items()})
        self._defaults = defaults
        self._p = {name: np.full(n, value) for name, value in defaults.items()}
        self._g: dict[str, F64] = {}
        self._scratch: dict[int, _Scratch] = {}
        shape, seg = (n,), (n_segments, n)
        self._p_sp = np.zeros(shape)
        self._q_sp = np.zeros(shape)
        self._cip_cmd = np.zeros(shape)
        self._p_act = np.zeros(shape)
        self._q_act = np.zeros(shape)
        self._cip_remaining_s = np.zeros(shape)
        self._hours_since_cip = np.zeros(shape)
        self._tripped = np.zeros(shape, dtype=bool)
        self._trip_reason = np.full(shape, "", dtype="<U16")
        self._tank = np.zeros(shape)
        self._unmet_m3 = np.zeros(shape)
        self._forced_cip = np.zeros(shape, dtype=bool)
        self._r_rev = np.zeros(seg)
        self._r_irr = np.zeros(seg)
        self._flux = np.zeros(seg)
        self._c_mem = np.zeros(seg)
        self._q_mid = np.ones(seg)
        self._dist = {k: np.full(n, v) for k, v in self.disturbance_defaults.items()}
        self._out = {k: np.zeros(n) for k in _OUTPUTS}
        self._reset_done = False

    # ----------------------------------------------------------------------------- parameters

    @staticmethod
    def _check_param(name: str, value: F64) -> F64:
        spec = RO_PARAMETERS.get(name)
        if spec is None:
            raise ValueError(f"unknown RO parameter {name!r}; known: {', '.join(RO_PARAMETERS)}")
        if not np.all(np.isfinite(value)) or np.any(value < spec.low) or np.any(value > spec.high):
            raise ValueError(
                f"RO parameter {name!r} must be finite within [{spec.low}, {spec.high}] "
                f"{spec.unit}, got {value}"
            )
        return value

    @staticmethod
    def _check_consistency(p: Mapping[str, F64]) -> None:
        pairs = (
            ("feed_pressure_soft_bar", "feed_pressure_trip_bar"),
            ("vessel_dp_soft_bar", "vessel_dp_trip_bar"),
            ("ph_trip_low", "ph_trip_high"),
        )
        for low, high in pairs:
            if np.any(p[low] >= p[high]):
                raise ValueError(f"RO parameter {low!r} must be below {high!r}")

    def params(self) -> dict[str, FloatArray]:
        """Current physical parameters by name (copies, one value per plant)."""
        return {name: value.copy() for name, value in self._p.items()}

    def _derive(self, idx: npt.NDArray[np.intp]) -> None:
        """Geometry-derived constants of the selected plants (temperature-independent)."""
        p = {k: v[idx] for k, v in self._p.items()}
        n_seg = self.n_segments
        h, eps, length = p["channel_height_m"], p["spacer_porosity"], p["flow_length_m"]
        section = h * (p["vessel_area_m2"] / length) * eps
        d_h = 4.0 * eps / (2.0 / h + (1.0 - eps) * 8.0 / h)
        dx = length / n_seg
        ff = p["friction_factor"]
        seg_area = p["vessel_area_m2"] / n_seg
        derived = {
            "section": section,
            "seg_area": seg_area,
            "half_area": 0.5 * seg_area,
            "cap": (1.0 - _MIN_SEGMENT_OUTFLOW) / seg_area,
            "a25": p["water_permeability_lmh_bar"] * LMH_PER_BAR_SI,
            # Re·Sc = v·d_h/D, so k_f = m·0.46·D^0.64·d_h^-0.64·(Q/S)^0.36 (RO-5).
            "k_geo": p["mass_transfer_factor"]
            * _SH_COEF
            * d_h ** (_SH_EXP - 1.0)
            * section ** (-_SH_EXP),
            "fa2": ff * dx * _F_TURB * _RHO / (2.0 * d_h * section * section),
            "fa1_per_mu": ff * dx * _F_LAM / (2.0 * d_h * d_h * section),
            "v_ref_q": p["fouling_reference_velocity_m_s"] * section,
        }
        if not self._g:
            self._g = {k: np.zeros(self.n) for k in derived}
            constants = (
                ("half", 0.5),
                ("zero", 0.0),
                ("min_out", _MIN_SEGMENT_OUTFLOW),
                ("x_cap", _MAX_CP_EXPONENT),
            )
            for name, value in constants:
                self._g[name] = np.full(self.n, value)
            self._g["keep"] = np.full(self.n, 1.0 - self.relaxation)
        for k, v in derived.items():
            self._g[k][idx] = v

    # ----------------------------------------------------------------------------- reset

    def reset(
        self,
        rng: np.random.Generator,
        randomize: float = 0.0,
        params: Mapping[str, FloatArray | float] | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Start plants clean and running at the initial setpoints (see :class:`ProcessModel`).

        Randomised parameters (``ParamSpec.randomize``) are drawn as value·(1 + U(−r, r)), one draw
        per reset plant in index order and parameter order, then clipped to their bounds.
        """
        if not 0.0 <= randomize < 1.0:
            raise ValueError(f"randomize must be within [0, 1), got {randomize}")
        idx = self._indices(mask)
        if idx.size == 0:
            return
        m = idx.size
        overrides = dict(params or {})
        initial = {k: overrides.pop(k) for k in list(overrides) if k in self.disturbance_names}
        unknown = sorted(set(overrides) - set(RO_PARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown RO parameter(s) {unknown}; known: {', '.join(RO_PARAMETERS)} and the "
                f"disturbances {', '.join(self.disturbance_names)}"
            )
        values: dict[str, F64] = {}
        for name, spec in RO_PARAMETERS.items():
            if name in overrides:
                v = self._check_param(name, self._per_plant(name, overrides[name], idx))
            else:
                v = np.full(m, self._defaults[name])
            if spec.randomize and randomize > 0.0:
                v = np.clip(v * (1.0 + rng.uniform(-randomize, randomize, m)), spec.low, spec.high)
            values[name] = v
        self._check_consistency(values)
        for name, v in values.items():
            self._p[name][idx] = v
        for name, default in self.disturbance_defaults.items():
            v = self._per_plant(name, initial.get(name, default), idx)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"initial disturbance {name!r} must be finite, got {v}")
            self._dist[name][idx] = v
        self._derive(idx)
        p = values
        self._p_sp[idx] = p["initial_feed_pressure_bar"]
        self._q_sp[idx] = p["initial_feed_flow_m3h"]
        self._p_act[idx] = p["initial_feed_pressure_bar"]
        self._q_act[idx] = p["initial_feed_flow_m3h"]
        self._cip_cmd[idx] = 0.0
        self._cip_remaining_s[idx] = 0.0
        self._hours_since_cip[idx] = 0.0
        self._tripped[idx] = False
        self._trip_reason[idx] = ""
        self._forced_cip[idx] = False
        self._tank[idx] = p["initial_tank_level_pct"] / 100.0
        self._unmet_m3[idx] = 0.0
        a25 = p["water_permeability_lmh_bar"] * LMH_PER_BAR_SI
        self._r_rev[:, idx] = p["initial_fouling_ratio"] / a25
        self._r_irr[:, idx] = 0.0
        self._flux[:, idx] = 0.0
        self._q_mid[:, idx] = p["initial_feed_flow_m3h"] * M3H / p["n_vessels"]
        # A cold start needs more iterations than a warm-started step; each sweep refines the
        # midpoint values the next one uses.
        for _ in range(4):
            self._solve(idx, self._p_act[idx], self._q_act[idx], max(8, self.n_iterations))
        self._reset_done = True

    def _indices(self, mask: np.ndarray | None) -> npt.NDArray[np.intp]:
        if mask is None:
            return np.arange(self.n)
        mask = np.asarray(mask)
        if mask.shape != (self.n,) or mask.dtype != np.bool_:
            raise ValueError(
                f"mask must be a boolean array of shape ({self.n},), got {mask.dtype} {mask.shape}"
            )
        return np.flatnonzero(mask)

    def _per_plant(self, name: str, value: FloatArray | float, idx: npt.NDArray[np.intp]) -> F64:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            return np.full(idx.size, float(arr))
        if arr.shape != (self.n,):
            raise ValueError(
                f"{name!r} must be a scalar or have shape ({self.n},), got {arr.shape}"
            )
        return arr[idx].copy()

    def clear_trip(self, mask: np.ndarray | None = None) -> None:
        """Acknowledge trips: the plants restart from standstill at their current setpoints."""
        idx = self._indices(mask)
        self._tripped[idx] = False
        self._trip_reason[idx] = ""

    def force_cip(self, mask: np.ndarray | None = None) -> None:
        """Start a CIP in the selected plants at the next step, unless one runs or the plant tripped.

        The CIP takes effect like a ``cip_request`` edge: downtime starts with the next :meth:`step`,
        whose result counts the cleaning and its chemicals.
        """
        idx = self._indices(mask)
        start = np.zeros(self.n, dtype=bool)
        start[idx] = True
        start &= (self._cip_remaining_s <= 0.0) & ~self._tripped
        self._start_cip(start)
        self._forced_cip |= start

    # ----------------------------------------------------------------------------- physics

    def _channel(self, idx: npt.NDArray[np.intp] | None, p_bar: F64, q_m3h: F64) -> _Channel:
        """Channel-solve inputs at the current temperature, feed and fouling state."""
        if idx is None and self.n == 1:
            one = self._channel_one(p_bar, q_m3h)
            if one is not None:
                return one
        if idx is None:
            p, g, d = self._p, self._g, self._dist
            r_tot = self._r_rev + self._r_irr
        else:
            p = {k: v[idx] for k, v in self._p.items()}
            g = {k: v[idx] for k, v in self._g.items()}
            d = {k: v[idx] for k, v in self._dist.items()}
            r_tot = self._r_rev[:, idx] + self._r_irr[:, idx]
        t_c = d["feed_temperature_c"]
        tcf = kpi.temperature_correction_factor(t_c)
        mu_rel = _viscosity_ratio(t_c)
        diff = p["nacl_diffusivity_m2_s"] * ((t_c + kpi.KELVIN) / 298.15) / mu_rel
        pi_coef = kpi.water_density_kg_m3(t_c) * (t_c + kpi.KELVIN)
        b1, b2, b3 = OSMOTIC_POLY
        ratio = r_tot * g["a25"]
        q_in = np.maximum(q_m3h, _MIN_FLOW_M3H) * M3H / p["n_vessels"]
        p_in = np.minimum(p_bar, self._max_pump_pressure(p, q_m3h))
        return _Channel(
            head=(p_in - p["permeate_pressure_bar"]) * BAR,
            q_in=q_in,
            salt_in=q_in * d["feed_tds_gl"],
            seg_area=g["seg_area"],
            half_area=g["half_area"],
            cap=g["cap"],
            b_t=p["salt_permeability_m_s"] * tcf ** p["salt_tcf_exponent"],
            k_coef=g["k_geo"] * diff ** (1.0 - _SH_EXP),
            fa2=g["fa2"],
            fa1=g["fa1_per_mu"] * p["viscosity_pa_s"] * mu_rel,
            pi1=pi_coef * b1,
            pi2=pi_coef * b2,
            pi3=pi_coef * b3,
            half=g["half"],
            keep=g["keep"],
            zero=g["zero"],
            min_out=g["min_out"],
            x_cap=g["x_cap"],
            omega_a=(self.relaxation * g["a25"] * tcf) / (1.0 + ratio * tcf),
            kf_div=1.0 + p["cake_cp_factor"] * ratio,
            dp_mult=1.0 + p["dp_fouling_factor"] * ratio,
        )

    def _channel_one(self, p_bar: F64, q_m3h: F64) -> _Channel | None:
        """:meth:`_channel` for one plant: the per-plant scalars on floats (same formulas).

        ``None`` on a floating-point exception (the caller then takes the array path).
        """
        p, g, d = self._p, self._g, self._dist
        try:
            t_c = float(d["feed_temperature_c"][0])
            t_k = t_c + kpi.KELVIN
            k_tcf = _TCF_K_WARM if t_c >= kpi.REFERENCE_TEMPERATURE_C else _TCF_K_COLD
            tcf = math.exp(k_tcf * (1.0 / (kpi.REFERENCE_TEMPERATURE_C + kpi.KELVIN) - 1.0 / t_k))
            mu_rel = 10.0 ** (247.8 / (t_k - 140.0) - 247.8 / (298.15 - 140.0))
            diff = float(p["nacl_diffusivity_m2_s"][0]) * (t_k / 298.15) / mu_rel
            rho = 9.999e2 + t_c * (2.034e-2 + t_c * (-6.162e-3 + t_c * (2.261e-5 - 4.657e-8 * t_c)))
            pi_coef = rho * t_k
            b1, b2, b3 = OSMOTIC_POLY
            q = float(q_m3h[0])
            q_in = _fmax(q, _MIN_FLOW_M3H) * M3H / float(p["n_vessels"][0])
            q_rel = q / float(p["pump_rated_flow_m3h"][0])
            shape = 1.0 - 0.2 * q_rel * q_rel
            head = float(p["pump_shutoff_head_bar"][0]) * _fmax(shape, 0.0)
            p_max = float(p["pump_inlet_pressure_bar"][0]) + head
            p_sp = float(p_bar[0])
            p_in = _fmin(p_sp, p_max)
            b_t = float(p["salt_permeability_m_s"][0]) * tcf ** float(p["salt_tcf_exponent"][0])
            k_coef = float(g["k_geo"][0]) * diff ** (1.0 - _SH_EXP)
            fa1 = float(g["fa1_per_mu"][0]) * float(p["viscosity_pa_s"][0]) * mu_rel
            scalars = np.array(
                [
                    (p_in - float(p["permeate_pressure_bar"][0])) * BAR,
                    q_in,
                    q_in * float(d["feed_tds_gl"][0]),
                    b_t,
                    k_coef,
                    fa1,
                    pi_coef * b1,
                    pi_coef * b2,
                    pi_coef * b3,
                ]
            ).reshape(9, 1)
            if not np.isfinite(scalars).all() or not math.isfinite(tcf):
                return None
        except (ArithmeticError, ValueError):
            return None
        ratio = (self._r_rev + self._r_irr) * g["a25"]
        return _Channel(
            head=scalars[0],
            q_in=scalars[1],
            salt_in=scalars[2],
            seg_area=g["seg_area"],
            half_area=g["half_area"],
            cap=g["cap"],
            b_t=scalars[3],
            k_coef=scalars[4],
            fa2=g["fa2"],
            fa1=scalars[5],
            pi1=scalars[6],
            pi2=scalars[7],
            pi3=scalars[8],
            half=g["half"],
            keep=g["keep"],
            zero=g["zero"],
            min_out=g["min_out"],
            x_cap=g["x_cap"],
            omega_a=(self.relaxation * g["a25"] * tcf) / (1.0 + ratio * tcf),
            kf_div=1.0 + p["cake_cp_factor"] * ratio,
            dp_mult=1.0 + p["dp_fouling_factor"] * ratio,
        )

    @staticmethod
    def _max_pump_pressure(p: Mapping[str, F64], q_m3h: F64) -> F64:
        """Discharge pressure at full pump speed and flow ``q_m3h`` (VFD saturation)."""
        q_rel = q_m3h / p["pump_rated_flow_m3h"]
        head = p["pump_shutoff_head_bar"] * np.maximum(1.0 - 0.2 * q_rel * q_rel, 0.0)
        return np.asarray(p["pump_inlet_pressure_bar"] + head, dtype=np.float64)

    def _solve(self, idx: npt.NDArray[np.intp] | None, p_bar: F64, q_m3h: F64, n_iter: int) -> None:
        """Solve the hydraulics at feed pressure ``p_bar`` and flow ``q_m3h`` and store the outputs.

        ``idx`` selects plants (``None`` = all, in place); the warm-start flux profile is updated.
        """
        ch = self._channel(idx, p_bar, q_m3h)
        if idx is None:
            p = self._p
            flux, c_mem, q_mid = self._flux, self._c_mem, self._q_mid
        else:
            p = {k: v[idx] for k, v in self._p.items()}
            flux, c_mem, q_mid = self._flux[:, idx], self._c_mem[:, idx], self._q_mid[:, idx]
        scratch = self._scratch.get(ch.q_in.size)
        if scratch is None:
            scratch = self._scratch[ch.q_in.size] = _Scratch(ch.q_in.size)
        size = ch.q_in.size
        march = (
            _march if size >= _BUFFERED_MIN_PLANTS else _march_scalar if size == 1 else _march_expr
        )
        march(ch, flux, c_mem, q_mid, n_iter, scratch)
        q_out, salt_out, dp = scratch.q.copy(), scratch.salt.copy(), scratch.dp.copy()
        values = _outputs_floats(ch, p, q_out, salt_out, dp) if size == 1 else None
        if values is None:
            values = _outputs(ch, p, q_out, salt_out, dp)
        o = self._out
        if idx is None:
            for name, v in zip(_OUTPUTS, values, strict=True):
                o[name] = v
        else:
            self._flux[:, idx] = flux
            self._c_mem[:, idx] = c_mem
            self._q_mid[:, idx] = q_mid
            for name, v in zip(_OUTPUTS, values, strict=True):
                o[name][idx] = v

    def _start_cip(self, start: npt.NDArray[np.bool_]) -> None:
        """Apply a CIP's effect to the fouling state and start its downtime where ``start`` is set."""
        if not start.any():
            return
        p = self._p
        ratio = (self._r_rev + self._r_irr) * self._g["a25"]
        eta = np.clip(
            p["cip_efficiency"] - p["cip_hardening"] * ratio, p["cip_min_efficiency"], 1.0
        )
        removed = np.where(start, eta * self._r_rev, 0.0)
        self._r_rev = self._r_rev - removed
        self._r_irr = self._r_irr + p["cip_irreversible_share"] * removed
        self._cip_remaining_s = np.where(start, p["cip_duration_h"] * 3600.0, self._cip_remaining_s)
        self._hours_since_cip = np.where(start, 0.0, self._hours_since_cip)

    # ----------------------------------------------------------------------------- step

    def _input(self, values: Mapping[str, FloatArray], name: str, kind: str) -> F64:
        arr = np.array(values[name], dtype=np.float64)
        if arr.shape != (self.n,):
            try:
                arr = np.array(np.broadcast_to(arr, (self.n,)))
            except ValueError:
                raise ValueError(
                    f"{kind} {name!r} must be a scalar or have shape ({self.n},), got {arr.shape}"
                ) from None
        # One plant: math.isfinite skips numpy's reduction machinery (a third of this call).
        if not (math.isfinite(arr[0]) if self.n == 1 else np.isfinite(arr).all()):
            raise ValueError(f"{kind} {name!r} must be finite, got {arr}")
        return arr

    def step(
        self,
        setpoints: Mapping[str, FloatArray],
        disturbances: Mapping[str, FloatArray],
        dt_s: float,
    ) -> StepResult:
        """Advance every plant by ``dt_s`` seconds (see :class:`ProcessModel`)."""
        if not self._reset_done:
            raise RuntimeError("RoModel.step called before reset")
        if not (dt_s > 0.0 and np.isfinite(dt_s)):
            raise ValueError(f"dt_s must be a positive number of seconds, got {dt_s}")
        for name in setpoints:
            if name not in self.SETPOINT_INPUTS:
                raise ValueError(
                    f"RO has no setpoint or command {name!r}; use {self.SETPOINT_INPUTS}"
                )
        if "feed_pressure_sp_bar" in setpoints:
            self._p_sp = self._input(setpoints, "feed_pressure_sp_bar", "setpoint")
        if "feed_flow_sp_m3h" in setpoints:
            self._q_sp = self._input(setpoints, "feed_flow_sp_m3h", "setpoint")
        cmd_before = self._cip_cmd
        if "cip_request" in setpoints:
            self._cip_cmd = self._input(setpoints, "cip_request", "command")
        for name in self.disturbance_names:
            if name in disturbances:
                self._dist[name] = self._input(disturbances, name, "disturbance")
        p, d = self._p, self._dist

        # Feed interlocks act before production: the plant does not pump a bad feed.
        stopped_before = self._tripped | (self._cip_remaining_s > 0.0)
        hot = d["feed_temperature_c"] > p["temperature_trip_c"]
        oxidant = d["feed_orp_mv"] > p["orp_trip_mv"]
        bad_ph = (d["feed_ph"] < p["ph_trip_low"]) | (d["feed_ph"] > p["ph_trip_high"])
        feed_trip = ~self._tripped & (hot | oxidant | bad_ph)
        if feed_trip.any():
            reason = np.where(hot, "feed_temperature", np.where(oxidant, "feed_orp", "feed_ph"))
            self._record_trip(feed_trip, reason)

        rising = (self._cip_cmd > 0.5) & (cmd_before <= 0.5)
        start = rising & (self._cip_remaining_s <= 0.0) & ~self._tripped
        self._start_cip(start)
        start |= self._forced_cip
        self._forced_cip = np.zeros(self.n, dtype=bool)
        cip_time = np.minimum(self._cip_remaining_s, dt_s)
        self._cip_remaining_s = self._cip_remaining_s - cip_time
        t_prod = np.where(self._tripped, 0.0, dt_s - cip_time)

        p_from = np.where(stopped_before, 0.0, self._p_act)
        q_from = np.where(stopped_before, 0.0, self._q_act)
        self._p_act, rate_p = _actuate(
            p_from, self._p_sp, p["pressure_lag_s"], p["pressure_rate_bar_s"], t_prod
        )
        self._q_act, rate_q = _actuate(
            q_from, self._q_sp, p["flow_lag_s"], p["flow_rate_m3h_s"], t_prod
        )
        # Idle plants are solved at their setpoints so the warm start stays valid for the restart.
        idle = t_prod <= 0.0
        if idle.any():
            self._solve(
                None,
                np.where(idle, self._p_sp, self._p_act),
                np.where(idle, self._q_sp, self._q_act),
                self.n_iterations,
            )
        else:
            self._solve(None, self._p_act, self._q_act, self.n_iterations)
        o = self._out

        p_trip = ~idle & (o["feed_pressure_bar"] > p["feed_pressure_trip_bar"])
        dp_trip = ~idle & (o["stage_dp_bar"] > p["vessel_dp_trip_bar"])
        limit_trip = p_trip | dp_trip
        if limit_trip.any():
            self._record_trip(limit_trip, np.where(p_trip, "feed_pressure", "vessel_dp"))
        running = ~idle & ~self._tripped

        hours = np.where(running, t_prod, 0.0) / 3600.0
        volume = o["permeate_flow_m3h"] * hours
        tank_v = p["tank_volume_m3"]
        drawn = d["demand_m3h"] * (dt_s / 3600.0)
        # What the tank cannot take overflows to drain and is not product.
        stored = np.minimum(volume, tank_v * (1.0 - self._tank) + drawn)
        level = self._tank * tank_v + stored - drawn
        self._unmet_m3 = np.maximum(-level, 0.0)
        self._tank = np.minimum(np.maximum(level, 0.0), tank_v) / tank_v
        energy = o["hpp_power_kw"] * hours + p["cip_power_kw"] * (cip_time / 3600.0)

        self._foul(hours * 3600.0)
        self._hours_since_cip = self._hours_since_cip + hours
        p_excess = np.maximum(
            (o["feed_pressure_bar"] - p["feed_pressure_soft_bar"])
            / (p["feed_pressure_trip_bar"] - p["feed_pressure_soft_bar"]),
            (o["stage_dp_bar"] - p["vessel_dp_soft_bar"])
            / (p["vessel_dp_trip_bar"] - p["vessel_dp_soft_bar"]),
        )
        limit = p["permeate_limit_uscm"]
        q_excess = (o["permeate_conductivity_uscm"] - limit) / limit
        result = StepResult(
            product_m3=stored,
            feed_m3=o["feed_flow_m3h"] * hours,
            energy_kwh=energy,
            chemicals_eur=np.where(start, p["cip_chemicals_eur"], 0.0),
            downtime_s=np.where(running, cip_time, dt_s),
            quality_excess=np.where(running, np.maximum(q_excess, 0.0), 0.0),
            pressure_excess=np.where(running, np.maximum(p_excess, 0.0), 0.0),
            tripped=self._tripped.copy(),
            trip_reason=self._trip_reason.copy(),
            interventions={
                "rate": (rate_p | rate_q).astype(np.float64),
                "interlock": (feed_trip | limit_trip).astype(np.float64),
            },
            cleanings={"cip": start.astype(np.float64)},
        )
        if not running.all():
            self._stop(~running)
        return result

    def _record_trip(self, trip: npt.NDArray[np.bool_], reason: npt.NDArray[np.str_]) -> None:
        trip = trip & ~self._tripped
        self._tripped = self._tripped | trip
        self._trip_reason = np.where(trip, reason, self._trip_reason)

    def _foul(self, t_prod_s: F64) -> None:
        """Explicit Euler step of fouling (flux × crossflow factor) and scaling over production time."""
        p, g = self._p, self._g
        g_v = np.exp(p["fouling_crossflow_exponent"] * np.log(g["v_ref_q"] / self._q_mid))
        g_v = np.minimum(np.maximum(g_v, _VELOCITY_FACTOR_RANGE[0]), _VELOCITY_FACTOR_RANGE[1])
        k_fp = p["fouling_rate_pa_s_m2"] * self._dist["fouling_factor"]
        cf = self._c_mem * (1.0 / np.maximum(self._dist["feed_tds_gl"], _MIN_TDS_GL))
        excess_cf = np.maximum(cf - p["scaling_cf_limit"], 0.0)
        rate = k_fp * self._flux * g_v + p["scaling_rate_pa_s_m_per_s"] * excess_cf
        self._r_rev = self._r_rev + rate * t_prod_s

    def _stop(self, stopped: npt.NDArray[np.bool_]) -> None:
        """A stopped plant (CIP, trip) shows no pressure, flow, speed or power; quality holds."""
        for k in _STOPPED_ZERO:
            self._out[k] = np.where(stopped, 0.0, self._out[k])
        self._p_act = np.where(stopped, 0.0, self._p_act)
        self._q_act = np.where(stopped, 0.0, self._q_act)

    # ----------------------------------------------------------------------------- outputs

    def measurements(self) -> dict[str, FloatArray]:
        """Noise-free values of every observation tag, the setpoint readbacks and the CIP command."""
        o, p, d = self._out, self._p, self._dist
        running = ~self._tripped & (self._cip_remaining_s <= 0.0)
        rows = (
            o["feed_pressure_bar"],
            o["concentrate_pressure_bar"],
            np.where(running, p["permeate_pressure_bar"], 0.0),
            o["stage_dp_bar"],
            o["feed_flow_m3h"],
            o["permeate_flow_m3h"],
            o["concentrate_flow_m3h"],
            d["feed_tds_gl"] * (1e3 / p["tds_per_conductivity"]),
            o["permeate_conductivity_uscm"],
            d["feed_temperature_c"],
            d["feed_ph"],
            d["feed_orp_mv"],
            100.0 * self._tank,
            o["hpp_speed_pct"],
            o["hpp_power_kw"],
            o["conc_valve_pct"],
            o["recovery_pct"],
            self._hours_since_cip,
            ~running & ~self._tripped,
            self._p_sp,
            self._q_sp,
            self._cip_cmd,
        )
        table = np.empty((len(_MEASURED), self.n))
        for i, row in enumerate(rows):
            table[i] = row
        return dict(zip(_MEASURED, table, strict=True))

    def hidden(self) -> dict[str, FloatArray]:
        """Unmeasurable states (fouling, membrane concentration, true TDS, unmet demand).

        Profiles (``*_profile``) have shape ``(n, n_segments)``; everything else ``(n,)``. All arrays
        are fresh (a later step does not change them).
        """
        a25 = self._g["a25"]
        ratio = (self._r_rev + self._r_irr) * a25
        return {
            "fouling_ratio": _mean_over_segments(ratio),
            "irreversible_fouling_ratio": _mean_over_segments(self._r_irr * a25),
            "fouling_ratio_profile": ratio.T,
            "flux_lmh_profile": (self._flux * 3.6e6).T,
            "membrane_conc_gl_profile": self._c_mem.T.copy(),
            "feed_tds_gl": self._dist["feed_tds_gl"].copy(),
            "permeate_tds_gl": self._out["permeate_tds_gl"].copy(),
            "concentrate_tds_gl": self._out["concentrate_tds_gl"].copy(),
            "unmet_demand_m3": self._unmet_m3.copy(),
            "cip_remaining_h": self._cip_remaining_s / 3600.0,
            "tripped": self._tripped.astype(np.float64),
        }


def _mean_over_segments(profile: F64) -> F64:
    """``profile.mean(axis=0)`` bit for bit (numpy's own sum, then divide).

    Skips ``mean``'s Python wrapper: the environments call :meth:`RoModel.hidden` every step.
    """
    return np.asarray(np.add.reduce(profile, axis=0) / profile.shape[0], dtype=np.float64)


def _actuate(
    u: F64, target: F64, tau: F64, rate: F64, dt: F64
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Exact first-order lag over ``dt`` followed by a rate limit (§2.2); flags where it bound."""
    move = (1.0 - np.exp(-dt / tau)) * (target - u)
    limit = rate * dt
    return u + np.minimum(np.maximum(move, -limit), limit), np.abs(move) > limit


_OUTPUTS = (
    "feed_pressure_bar",
    "concentrate_pressure_bar",
    "stage_dp_bar",
    "feed_flow_m3h",
    "permeate_flow_m3h",
    "concentrate_flow_m3h",
    "permeate_tds_gl",
    "concentrate_tds_gl",
    "permeate_conductivity_uscm",
    "hpp_speed_pct",
    "hpp_power_kw",
    "conc_valve_pct",
    "recovery_pct",
)
_STOPPED_ZERO = (
    "feed_pressure_bar",
    "concentrate_pressure_bar",
    "stage_dp_bar",
    "feed_flow_m3h",
    "permeate_flow_m3h",
    "concentrate_flow_m3h",
    "hpp_speed_pct",
    "hpp_power_kw",
    "conc_valve_pct",
    "recovery_pct",
)
_MEASURED = (
    *(t.name for t in RO_CATALOG.observations),
    *(t.name for t in RO_CATALOG.setpoints),
    "cip_request",
)
