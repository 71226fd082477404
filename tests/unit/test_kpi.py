"""KPI functions (app.kpi) against the reference figures of process-models.md §3.1, §3.4, §3.5."""

from __future__ import annotations

import numpy as np
import pytest

from app import kpi


@pytest.mark.parametrize(("c_gl", "bar"), [(35.0, 27.8), (70.0, 57.4)])
def test_osmotic_pressure_matches_ro1_figures(c_gl: float, bar: float) -> None:
    assert kpi.osmotic_pressure_bar(c_gl, 25.0) == pytest.approx(bar, abs=0.05)


def test_osmotic_pressure_is_078_bar_per_gl_for_brackish_water() -> None:
    c = np.array([1.0, 2.0, 5.0, 10.0])
    per_gl = kpi.osmotic_pressure_bar(c, 25.0) / c
    np.testing.assert_allclose(per_gl, 0.78, atol=0.01)


def test_osmotic_pressure_scales_with_absolute_temperature_and_is_zero_for_pure_water() -> None:
    assert kpi.osmotic_pressure_bar(0.0, 25.0) == 0.0
    ratio = kpi.osmotic_pressure_bar(35.0, 35.0) / kpi.osmotic_pressure_bar(35.0, 15.0)
    rho = kpi.water_density_kg_m3(35.0) / kpi.water_density_kg_m3(15.0)
    assert ratio == pytest.approx(308.15 / 288.15 * rho, rel=1e-12)


def test_water_density_at_25c() -> None:
    assert kpi.water_density_kg_m3(25.0) == pytest.approx(997.0, abs=0.2)


@pytest.mark.parametrize(
    ("t_c", "tcf"), [(10, 0.59), (15, 0.70), (20, 0.84), (25, 1.00), (30, 1.16), (35, 1.33)]
)
def test_tcf_table(t_c: float, tcf: float) -> None:
    assert kpi.temperature_correction_factor(t_c) == pytest.approx(tcf, abs=0.006)


def test_tcf_is_about_three_percent_per_kelvin_near_25c() -> None:
    per_k = kpi.temperature_correction_factor(26.0) / kpi.temperature_correction_factor(25.0) - 1
    assert 0.025 < per_k < 0.04


def test_conductivity_and_tds_round_trip() -> None:
    ec = np.array([0.0, 50.0, 3000.0])
    tds = kpi.tds_from_conductivity_gl(ec)
    np.testing.assert_allclose(tds, ec * kpi.TDS_PER_CONDUCTIVITY / 1e3)
    np.testing.assert_allclose(kpi.conductivity_from_tds_uscm(tds), ec)


def test_recovery_is_nan_without_feed() -> None:
    y = kpi.recovery(np.array([5.0, 0.0, 1.0]), np.array([10.0, 0.0, -1.0]))
    assert y[0] == 0.5
    assert np.isnan(y[1:]).all()


def test_sec_reproduces_the_seawater_table_at_55_bar() -> None:
    # §3.5: 55 bar abs (54 bar above the 1 bar suction), Y 0.31, ΔP 1.0 bar, η_p 0.8, η_ERD 0.95.
    no_erd = kpi.sec_kwh_m3(55.0, 0.31, 0.8, inlet_pressure_bar=1.0)
    erd = kpi.sec_kwh_m3(
        55.0, 0.31, 0.8, concentrate_pressure_bar=54.0, erd_efficiency=0.95, inlet_pressure_bar=1.0
    )
    assert no_erd == pytest.approx(6.0, rel=0.02)
    assert erd == pytest.approx(2.15, rel=0.01)


def test_sec_reproduces_the_brackish_table_at_8_bar() -> None:
    assert kpi.sec_kwh_m3(8.0, 0.39, 0.75, inlet_pressure_bar=1.0) == pytest.approx(0.67, rel=0.01)


def test_sec_from_power_and_nan_without_permeate() -> None:
    np.testing.assert_allclose(kpi.sec_from_power_kwh_m3([13.0, 5.0], [20.0, 0.0]), [0.65, np.nan])
    assert np.isnan(kpi.sec_kwh_m3(10.0, 0.0, 0.8))


def test_functions_broadcast_scalars_and_arrays() -> None:
    out = kpi.osmotic_pressure_bar(np.array([[1.0], [2.0]]), np.array([10.0, 20.0, 30.0]))
    assert out.shape == (2, 3)
    assert kpi.temperature_correction_factor(25.0).shape == ()


def _tags(**changes: float) -> dict[str, float]:
    tags = {
        "feed_pressure_bar": 12.0,
        "concentrate_pressure_bar": 11.0,
        "permeate_pressure_bar": 0.5,
        "feed_flow_m3h": 40.0,
        "permeate_flow_m3h": 20.0,
        "feed_conductivity_uscm": 3000.0,
        "permeate_conductivity_uscm": 45.0,
        "feed_temperature_c": 20.0,
    }
    tags.update(changes)
    return tags


def test_normalised_kpis_are_one_at_the_reference_point() -> None:
    ref = kpi.normalization_reference(**_tags())
    k = kpi.ro_normalized_kpis(**_tags(), reference=ref)
    for value in (k.npf_ratio, k.nsp_ratio, k.dp_ratio):
        assert value == pytest.approx(1.0, rel=1e-12)
    assert k.recovery == pytest.approx(0.5)


def test_npf_is_constant_for_a_clean_membrane_at_any_temperature_and_pressure() -> None:
    ref = kpi.normalization_reference(**_tags())
    # A clean membrane in the ASTM model: Q_p = K·TCF(T)·NDP, with NDP depending on Q_p through the
    # concentrate concentration; solve that fixed point at other temperatures and pressures.
    k_ref = ref.permeate_flow_m3h / (kpi.temperature_correction_factor(20.0) * ref.ndp_bar)
    for t_c, p_f in ((10.0, 12.0), (30.0, 9.0), (20.0, 16.0)):
        q_p = 20.0
        for _ in range(60):
            tags = _tags(
                feed_temperature_c=t_c,
                feed_pressure_bar=p_f,
                concentrate_pressure_bar=p_f - 1.0,
                permeate_flow_m3h=q_p,
            )
            ndp = kpi.ro_normalized_kpis(**tags, reference=ref).ndp_bar
            q_p = float(k_ref * kpi.temperature_correction_factor(t_c) * ndp)
        k = kpi.ro_normalized_kpis(**tags, reference=ref)
        assert abs(q_p - 20.0) > 1.0  # the raw flow did change
        assert k.npf_ratio == pytest.approx(1.0, rel=1e-6)


def test_npf_ratio_follows_a_flux_loss_at_equal_driving_pressure() -> None:
    ref = kpi.normalization_reference(**_tags())
    fouled = kpi.ro_normalized_kpis(**_tags(permeate_flow_m3h=18.0), reference=ref)
    # Less permeate also lowers the concentrate osmotic pressure, so NDP rises a little.
    assert fouled.ndp_bar > ref.ndp_bar
    assert fouled.npf_ratio == pytest.approx(0.9 * ref.ndp_bar / float(fouled.ndp_bar), rel=1e-9)
    assert 0.88 < fouled.npf_ratio < 0.9


def test_normalised_dp_removes_the_flow_effect() -> None:
    ref = kpi.normalization_reference(**_tags())
    # Mean feed-concentrate flow 30 → 45 m³/h raises ΔP by 1.5^1.6 on a clean channel.
    dp = 1.0 * 1.5**1.6
    k = kpi.ro_normalized_kpis(
        **_tags(feed_flow_m3h=60.0, permeate_flow_m3h=30.0, concentrate_pressure_bar=12.0 - dp),
        reference=ref,
    )
    assert k.dp_ratio == pytest.approx(1.0, rel=1e-9)


def test_nsp_rises_when_salt_passage_rises_at_equal_flux() -> None:
    ref = kpi.normalization_reference(**_tags())
    k = kpi.ro_normalized_kpis(**_tags(permeate_conductivity_uscm=54.0), reference=ref)
    assert k.nsp_ratio == pytest.approx(1.2, rel=0.01)


def test_normalised_kpis_are_nan_when_not_producing() -> None:
    ref = kpi.normalization_reference(**_tags())
    k = kpi.ro_normalized_kpis(
        **_tags(
            feed_pressure_bar=0.0,
            concentrate_pressure_bar=0.0,
            feed_flow_m3h=0.0,
            permeate_flow_m3h=0.0,
        ),
        reference=ref,
    )
    assert np.isnan(k.npf_ratio) and np.isnan(k.recovery) and np.isnan(k.dp_ratio)


def test_reference_from_a_stopped_plant_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="permeate_flow_m3h"):
        kpi.normalization_reference(**_tags(permeate_flow_m3h=0.0))
