"""Membrane-process KPIs on raw tag values: osmotic pressure, TCF, conductivity, recovery, SEC, ASTM D4516.

Bottom layer (numpy only). Every function accepts scalars or arrays and broadcasts like numpy; results
are float64 arrays (0-d for scalar input). Where a KPI is undefined (no flow, no driving pressure) the
result is NaN rather than a made-up number, so live displays show a gap instead of a spike.

Equations and figures: ``../shared/reference/process-models.md`` §3.1 (RO-1, RO-8, RO-10) and §3.4.
Pressures are gauge (bar g) unless stated; concentrations of NaCl-equivalent TDS in g/L (= kg/m³).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | npt.NDArray[np.floating] | npt.ArrayLike

GAS_CONSTANT = 8.314
"""J/(mol·K)."""
NACL_MOLAR_MASS = 58.44e-3
"""kg/mol."""
KELVIN = 273.15
REFERENCE_TEMPERATURE_C = 25.0
TDS_PER_CONDUCTIVITY = 0.65
"""mg/L of TDS per µS/cm of conductivity; natural waters 0.5-0.7 [J] (process-models.md §3.1)."""
DP_FLOW_EXPONENT = 1.6
"""Exponent of the flow normalisation of ΔP (Haidari form of RO-6, §3.4)."""

_DENSITY_0 = 995.0
_DENSITY_1 = 756.0
"""NaCl solution density ρ = 995 + 756·w kg/m³ (WaterTAP NaCl property package [P5])."""
_PHI = (0.918, 0.0889, 4.92)
"""Osmotic coefficient φ = 0.918 + 0.0889·w + 4.92·w² (RO-1 [P5])."""
_TCF_K_WARM = 2640.0
_TCF_K_COLD = 3020.0


def _f64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def water_density_kg_m3(temperature_c: ArrayLike) -> FloatArray:
    """Density of pure water at ambient pressure (Sharqawy et al. 2010 polynomial, 0-180 °C).

    Args:
        temperature_c: Temperature in °C.

    Returns:
        Density in kg/m³ (997.0 at 25 °C).
    """
    t = _f64(temperature_c)
    return 9.999e2 + t * (2.034e-2 + t * (-6.162e-3 + t * (2.261e-5 - 4.657e-8 * t)))


def nacl_mass_fraction(concentration_gl: ArrayLike) -> FloatArray:
    """Mass fraction of NaCl from its mass concentration, solving c = w·ρ(w) with ρ = 995 + 756·w.

    Args:
        concentration_gl: NaCl concentration in g/L (kg/m³ of solution), ≥ 0.

    Returns:
        Mass fraction w (dimensionless).
    """
    c = np.maximum(_f64(concentration_gl), 0.0)
    return (np.sqrt(_DENSITY_0 * _DENSITY_0 + 4.0 * _DENSITY_1 * c) - _DENSITY_0) / (
        2.0 * _DENSITY_1
    )


def osmotic_pressure_bar(
    concentration_gl: ArrayLike, temperature_c: ArrayLike = 25.0
) -> FloatArray:
    """Osmotic pressure of an NaCl solution (process-models.md RO-1).

    π = i·φ·m·ρ_w·R·T with i = 2, molality m = w/((1 − w)·M), φ = 0.918 + 0.0889·w + 4.92·w² and the
    water density ρ_w(T). Gives 27.8 bar at 35 g/L and 57.4 bar at 70 g/L (25 °C).

    Args:
        concentration_gl: NaCl(-equivalent) concentration in g/L.
        temperature_c: Temperature in °C.

    Returns:
        Osmotic pressure in bar.
    """
    w = nacl_mass_fraction(concentration_gl)
    molality = w / ((1.0 - w) * NACL_MOLAR_MASS)
    phi = _PHI[0] + w * (_PHI[1] + w * _PHI[2])
    t = _f64(temperature_c)
    return 2.0 * phi * molality * water_density_kg_m3(t) * GAS_CONSTANT * (t + KELVIN) / 1e5


def temperature_correction_factor(temperature_c: ArrayLike) -> FloatArray:
    """Membrane water-permeability temperature correction factor relative to 25 °C (RO-8).

    TCF = exp(K·(1/298.15 − 1/T)), K = 2640 at or above 25 °C, 3020 below. Gives 0.59 / 0.70 / 0.84 /
    1.00 / 1.16 / 1.33 at 10 / 15 / 20 / 25 / 30 / 35 °C.

    Args:
        temperature_c: Feed temperature in °C.

    Returns:
        TCF (dimensionless), flux at T divided by flux at 25 °C for the same driving pressure.
    """
    t = _f64(temperature_c)
    k = np.where(t >= REFERENCE_TEMPERATURE_C, _TCF_K_WARM, _TCF_K_COLD)
    return np.exp(k * (1.0 / (REFERENCE_TEMPERATURE_C + KELVIN) - 1.0 / (t + KELVIN)))


def tds_from_conductivity_gl(
    conductivity_uscm: ArrayLike, tds_per_conductivity: ArrayLike = TDS_PER_CONDUCTIVITY
) -> FloatArray:
    """TDS in g/L from conductivity in µS/cm (linear, TDS[mg/L] = k·EC)."""
    return _f64(conductivity_uscm) * _f64(tds_per_conductivity) * 1e-3


def conductivity_from_tds_uscm(
    tds_gl: ArrayLike, tds_per_conductivity: ArrayLike = TDS_PER_CONDUCTIVITY
) -> FloatArray:
    """Conductivity in µS/cm from TDS in g/L (inverse of :func:`tds_from_conductivity_gl`)."""
    return _f64(tds_gl) * 1e3 / _f64(tds_per_conductivity)


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    """num/den where den > 0, NaN elsewhere."""
    num, den = np.broadcast_arrays(num, den)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0.0)
    return out


def recovery(permeate_flow: ArrayLike, feed_flow: ArrayLike) -> FloatArray:
    """Recovery Y = Q_p/Q_f (fraction; NaN where the feed flow is not positive)."""
    return _ratio(_f64(permeate_flow), _f64(feed_flow))


def sec_kwh_m3(
    feed_pressure_bar: ArrayLike,
    recovery_fraction: ArrayLike,
    pump_efficiency: ArrayLike,
    *,
    concentrate_pressure_bar: ArrayLike | None = None,
    erd_efficiency: ArrayLike = 0.0,
    inlet_pressure_bar: ArrayLike = 0.0,
) -> FloatArray:
    """Specific energy of the high-pressure pump, with an optional isobaric ERD (RO-10).

    SEC = [(P_f − P_0) − η_ERD·(1 − Y)·(P_c − P_0)] / (η_p·Y), converted from bar to kWh/m³ (÷ 36).
    Without an ERD (``erd_efficiency`` 0) this is (P_f − P_0)/(36·η_p·Y).

    Args:
        feed_pressure_bar: Pump discharge (feed) pressure.
        recovery_fraction: Recovery Y (0-1).
        pump_efficiency: Wire-to-water pump efficiency η_p.
        concentrate_pressure_bar: Concentrate pressure P_c entering the ERD (defaults to P_f).
        erd_efficiency: Pressure-exchanger efficiency η_ERD (0 = no ERD).
        inlet_pressure_bar: Pump suction pressure P_0 (same gauge/absolute basis as P_f).

    Returns:
        SEC in kWh per m³ of permeate; NaN where Y or η_p is not positive.
    """
    p_f = _f64(feed_pressure_bar)
    p_0 = _f64(inlet_pressure_bar)
    p_c = p_f if concentrate_pressure_bar is None else _f64(concentrate_pressure_bar)
    y = _f64(recovery_fraction)
    head = (p_f - p_0) - _f64(erd_efficiency) * (1.0 - y) * (p_c - p_0)
    return _ratio(head, 36.0 * _f64(pump_efficiency) * y)


def sec_from_power_kwh_m3(power_kw: ArrayLike, permeate_flow_m3h: ArrayLike) -> FloatArray:
    """Running SEC from measured electrical power and permeate flow (NaN without permeate)."""
    return _ratio(_f64(power_kw), _f64(permeate_flow_m3h))


def concentrate_tds_gl(
    feed_flow: ArrayLike,
    feed_tds_gl: ArrayLike,
    permeate_flow: ArrayLike,
    permeate_tds_gl: ArrayLike,
) -> FloatArray:
    """Concentrate TDS from the salt balance Q_f·c_f = Q_p·c_p + Q_c·c_c (NaN without concentrate)."""
    q_f, q_p = _f64(feed_flow), _f64(permeate_flow)
    return _ratio(q_f * _f64(feed_tds_gl) - q_p * _f64(permeate_tds_gl), q_f - q_p)


def net_driving_pressure_bar(
    feed_pressure_bar: ArrayLike,
    dp_bar: ArrayLike,
    permeate_pressure_bar: ArrayLike,
    feed_tds_gl: ArrayLike,
    concentrate_tds_gl: ArrayLike,
    permeate_tds_gl: ArrayLike,
    temperature_c: ArrayLike,
) -> FloatArray:
    """Average net driving pressure (§3.4): NDP = P_f − ΔP/2 − P_p − (π_fc − π_p).

    π_fc is the mean of the feed and concentrate osmotic pressures (RO-1 at the feed temperature).
    """
    t = _f64(temperature_c)
    pi_fc = 0.5 * (
        osmotic_pressure_bar(feed_tds_gl, t) + osmotic_pressure_bar(concentrate_tds_gl, t)
    )
    pi_p = osmotic_pressure_bar(permeate_tds_gl, t)
    return (
        _f64(feed_pressure_bar) - 0.5 * _f64(dp_bar) - _f64(permeate_pressure_bar) - (pi_fc - pi_p)
    )


@dataclass(frozen=True, slots=True)
class NormalizationReference:
    """Reference operating point of ASTM D4516-style normalisation (typically start-up after a CIP).

    Attributes:
        ndp_bar: Net driving pressure at the reference point.
        temperature_c: Feed temperature at the reference point.
        permeate_flow_m3h: Permeate flow at the reference point (flux is proportional to it).
        salt_passage: c_p/c_f at the reference point.
        concentration_ratio: (mean of feed and concentrate TDS)/feed TDS at the reference point.
        mean_feed_concentrate_flow_m3h: (Q_f + Q_c)/2 at the reference point.
        dp_bar: Feed-to-concentrate pressure drop at the reference point.
    """

    ndp_bar: float
    temperature_c: float
    permeate_flow_m3h: float
    salt_passage: float
    concentration_ratio: float
    mean_feed_concentrate_flow_m3h: float
    dp_bar: float

    def __post_init__(self) -> None:
        for name in (
            "ndp_bar",
            "permeate_flow_m3h",
            "salt_passage",
            "concentration_ratio",
            "mean_feed_concentrate_flow_m3h",
            "dp_bar",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0.0:
                raise ValueError(
                    f"normalisation reference {name} must be finite and > 0, got {value}"
                )


@dataclass(frozen=True, slots=True)
class RoNormalizedKpis:
    """Normalised RO performance at one or many operating points (arrays broadcast from the inputs).

    Attributes:
        recovery: Q_p/Q_f.
        ndp_bar: Average net driving pressure.
        npf_m3h: Normalised permeate flow, Q_p at reference NDP and temperature.
        npf_ratio: NPF divided by the reference permeate flow (1.0 = as clean; CIP at ≤ 0.90).
        nsp: Normalised salt passage (fraction).
        nsp_ratio: NSP divided by the reference salt passage (CIP at ≥ 1.05-1.10).
        dp_norm_bar: ΔP normalised to the reference mean feed-concentrate flow.
        dp_ratio: Normalised ΔP divided by the reference ΔP (CIP at ≥ 1.10-1.15).
    """

    recovery: FloatArray
    ndp_bar: FloatArray
    npf_m3h: FloatArray
    npf_ratio: FloatArray
    nsp: FloatArray
    nsp_ratio: FloatArray
    dp_norm_bar: FloatArray
    dp_ratio: FloatArray


def ro_normalized_kpis(
    *,
    feed_pressure_bar: ArrayLike,
    concentrate_pressure_bar: ArrayLike,
    permeate_pressure_bar: ArrayLike,
    feed_flow_m3h: ArrayLike,
    permeate_flow_m3h: ArrayLike,
    feed_conductivity_uscm: ArrayLike,
    permeate_conductivity_uscm: ArrayLike,
    feed_temperature_c: ArrayLike,
    reference: NormalizationReference,
    tds_per_conductivity: ArrayLike = TDS_PER_CONDUCTIVITY,
) -> RoNormalizedKpis:
    """ASTM D4516-style normalised permeate flow, salt passage and ΔP from raw RO tag values (§3.4).

    - NPF = Q_p · (NDP_ref/NDP) · (TCF_ref/TCF)
    - NSP = SP · (Q_p/Q_p,ref) · (ρ_ref/ρ), SP = c_p/c_f, ρ = c_fc/c_f
    - ΔP_norm = ΔP · (Q_fc,ref/Q_fc)^1.6

    Args:
        feed_pressure_bar: Feed pressure.
        concentrate_pressure_bar: Concentrate pressure (ΔP = feed − concentrate).
        permeate_pressure_bar: Permeate pressure.
        feed_flow_m3h: Feed flow.
        permeate_flow_m3h: Permeate flow.
        feed_conductivity_uscm: Feed conductivity.
        permeate_conductivity_uscm: Permeate conductivity.
        feed_temperature_c: Feed temperature.
        reference: Reference point, e.g. from :func:`normalization_reference` after a CIP.
        tds_per_conductivity: Conductivity-to-TDS factor (mg/L per µS/cm).

    Returns:
        The normalised KPIs; NaN where the plant is not producing (no flow or NDP ≤ 0).
    """
    p_f, p_c = _f64(feed_pressure_bar), _f64(concentrate_pressure_bar)
    q_f, q_p = _f64(feed_flow_m3h), _f64(permeate_flow_m3h)
    t = _f64(feed_temperature_c)
    c_f = tds_from_conductivity_gl(feed_conductivity_uscm, tds_per_conductivity)
    c_p = tds_from_conductivity_gl(permeate_conductivity_uscm, tds_per_conductivity)
    c_c = concentrate_tds_gl(q_f, c_f, q_p, c_p)
    dp = p_f - p_c
    ndp = net_driving_pressure_bar(p_f, dp, permeate_pressure_bar, c_f, c_c, c_p, t)
    tcf_ratio = temperature_correction_factor(
        reference.temperature_c
    ) / temperature_correction_factor(t)
    npf = (
        q_p
        * _ratio(np.broadcast_to(reference.ndp_bar, ndp.shape).astype(np.float64), ndp)
        * tcf_ratio
    )
    salt_passage = _ratio(c_p, c_f)
    rho = _ratio(0.5 * (c_f + c_c), c_f)
    nsp = (
        salt_passage
        * (q_p / reference.permeate_flow_m3h)
        * _ratio(np.broadcast_to(reference.concentration_ratio, rho.shape).astype(np.float64), rho)
    )
    q_fc = 0.5 * (q_f + (q_f - q_p))
    with np.errstate(divide="ignore", invalid="ignore"):
        flow_term = np.where(
            q_fc > 0.0,
            (reference.mean_feed_concentrate_flow_m3h / q_fc) ** DP_FLOW_EXPONENT,
            np.nan,
        )
    dp_norm = dp * flow_term
    return RoNormalizedKpis(
        recovery=recovery(q_p, q_f),
        ndp_bar=ndp,
        npf_m3h=npf,
        npf_ratio=npf / reference.permeate_flow_m3h,
        nsp=nsp,
        nsp_ratio=nsp / reference.salt_passage,
        dp_norm_bar=dp_norm,
        dp_ratio=dp_norm / reference.dp_bar,
    )


def normalization_reference(
    *,
    feed_pressure_bar: float,
    concentrate_pressure_bar: float,
    permeate_pressure_bar: float,
    feed_flow_m3h: float,
    permeate_flow_m3h: float,
    feed_conductivity_uscm: float,
    permeate_conductivity_uscm: float,
    feed_temperature_c: float,
    tds_per_conductivity: float = TDS_PER_CONDUCTIVITY,
) -> NormalizationReference:
    """Reference point for :func:`ro_normalized_kpis` from one set of raw RO tag values.

    Raises:
        ValueError: If the point is not a producing state (no permeate, NDP ≤ 0, no conductivity).
    """
    c_f = float(tds_from_conductivity_gl(feed_conductivity_uscm, tds_per_conductivity))
    c_p = float(tds_from_conductivity_gl(permeate_conductivity_uscm, tds_per_conductivity))
    c_c = float(concentrate_tds_gl(feed_flow_m3h, c_f, permeate_flow_m3h, c_p))
    dp = feed_pressure_bar - concentrate_pressure_bar
    ndp = float(
        net_driving_pressure_bar(
            feed_pressure_bar, dp, permeate_pressure_bar, c_f, c_c, c_p, feed_temperature_c
        )
    )
    return NormalizationReference(
        ndp_bar=ndp,
        temperature_c=float(feed_temperature_c),
        permeate_flow_m3h=float(permeate_flow_m3h),
        salt_passage=c_p / c_f if c_f > 0 else float("nan"),
        concentration_ratio=0.5 * (c_f + c_c) / c_f if c_f > 0 else float("nan"),
        mean_feed_concentrate_flow_m3h=0.5 * (2.0 * feed_flow_m3h - permeate_flow_m3h),
        dp_bar=dp,
    )
