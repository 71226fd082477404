"""UF simulator against the figures of process-models.md §5.2-§5.3 and its own hard limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.plant.catalog import UF_CATALOG
from app.plant.models.base import FloatArray, StepResult
from app.plant.models.uf import BACKWASH, CEB, CIP, FILTRATION, UfModel

STEP_S = UF_CATALOG.agent_period_s


def _model(n: int = 1, **params: float | FloatArray) -> UfModel:
    model = UfModel(n)
    model.reset(
        np.random.default_rng(0),
        params={"feed_turbidity_ntu": 5.0, "feed_temperature_c": 20.0, **params},
    )
    return model


def _dist(n: int, ntu: float = 5.0, temp: float = 20.0) -> dict[str, FloatArray]:
    return {"feed_turbidity_ntu": np.full(n, ntu), "feed_temperature_c": np.full(n, temp)}


@pytest.mark.parametrize(("lp0", "tmp_bar"), [(200.0, 0.30), (800.0, 0.075)])
def test_clean_tmp_at_60_lmh_and_20_c(lp0: float, tmp_bar: float) -> None:
    model = _model(lp0_lmh_bar=lp0)
    m = model.measurements()
    assert m["filtrate_flow_m3h"][0] == pytest.approx(60.0 * 616.0 / 1000.0)
    assert m["tmp_bar"][0] == pytest.approx(tmp_bar, rel=2e-3)
    assert m["feed_pressure_bar"][0] == pytest.approx(tmp_bar + 0.3, rel=2e-3)
    if lp0 == 200.0:
        assert model.hidden()["r_m"][0] == pytest.approx(1.8e12, rel=5e-3)


def test_tmp_at_a_colder_feed_follows_the_viscosity() -> None:
    warm, cold = _model(feed_temperature_c=20.0), _model(feed_temperature_c=5.0)
    ratio = cold.measurements()["tmp_bar"][0] / warm.measurements()["tmp_bar"][0]
    # Water viscosity 1.519 / 1.002 mPa·s at 5 / 20 °C; the RO-8 formula is within 2 % of it.
    assert ratio == pytest.approx(1.519 / 1.002, rel=0.02)


@pytest.mark.parametrize(("ntu", "rise"), [(2.0, 0.04), (20.0, 0.44)])
def test_tmp_rise_per_40_min_cycle(ntu: float, rise: float) -> None:
    """k_c = 2e12 ... 2e13 m^-2 at 60 LMH for 40 min, R_m = 1.8e12: +4 % ... +44 % (§5.3)."""
    model = _model(feed_turbidity_ntu=ntu)
    for _ in range(2):
        model.step({}, _dist(1, ntu), STEP_S)
    h = model.hidden()
    assert h["k_c"][0] == pytest.approx(ntu * 1e12)
    measured = h["tmp_prev_end_bar"][0] / h["tmp_prev_start_bar"][0] - 1.0
    expected = ntu * 1e12 * 0.04 / h["r_m"][0]  # ΔR_c = k_c·V/A, V/A = 60 LMH x 40 min = 0.04 m
    assert measured == pytest.approx(expected, rel=1e-9)
    assert measured == pytest.approx(rise, abs=0.006)


def test_backwash_restores_94_5_percent_and_longer_backwashes_more() -> None:
    restored = []
    for bw_s in (10.0, 30.0, 60.0):
        model = _model(f_irr=0.0, feed_turbidity_ntu=10.0, bw_duration_sp_s=bw_s)
        for _ in range(2):
            model.step({"bw_duration_sp_s": np.array([bw_s])}, _dist(1, 10.0), STEP_S)
        h = model.hidden()
        start, end, after = h["tmp_prev_start_bar"], h["tmp_prev_end_bar"], h["tmp_after_bw_bar"]
        restored.append(float((end[0] - after[0]) / (end[0] - start[0])))
    assert restored[1] == pytest.approx(0.945, abs=1e-9)  # [P26], 30 s backwash
    assert restored[0] < restored[1] < restored[2] < 1.0  # time matters [P27]

    # Irreversible fouling is what a backwash cannot restore.
    model = _model(f_irr=0.05, feed_turbidity_ntu=10.0)
    for _ in range(2):
        model.step({}, _dist(1, 10.0), STEP_S)
    h = model.hidden()
    rise = h["tmp_prev_end_bar"][0] - h["tmp_prev_start_bar"][0]
    kept = h["tmp_after_bw_bar"][0] - h["tmp_prev_start_bar"][0]
    assert kept / rise == pytest.approx(0.05 + 0.95 * 0.055, rel=1e-9)


@pytest.mark.parametrize(
    ("flux", "cycle_min", "ntu"),
    [(60.0, 40.0, 5.0), (40.0, 40.0, 2.0), (120.0, 20.0, 5.0), (60.0, 60.0, 20.0)],
)
def test_recovery_and_sec_inside_the_section_5_2_bands(
    flux: float, cycle_min: float, ntu: float
) -> None:
    model = _model(flux_sp_lmh=flux, filtration_time_sp_min=cycle_min, feed_turbidity_ntu=ntu)
    product = feed = energy = 0.0
    for _ in range(96):  # two days, CEB every 24 h
        since = model.measurements()["hours_since_ceb_h"][0]
        cmd = {"ceb_request": np.array([float(since >= 24.0)])}
        r = model.step(cmd, _dist(1, ntu), STEP_S)
        product += r.product_m3[0]
        feed += r.feed_m3[0]
        energy += r.energy_kwh[0]
        assert not r.tripped[0]
    assert 0.90 <= product / feed <= 0.98
    assert 0.05 <= energy / product <= 0.2


def test_ceb_and_cip_recover_the_irreversible_parts() -> None:
    model = _model(feed_turbidity_ntu=20.0)
    for _ in range(48):
        model.step({}, _dist(1, 20.0), STEP_S)
    fouled = model.hidden()
    assert fouled["r_hirr"][0] > 0.0 and fouled["r_cirr"][0] > 0.0

    r = model.step({"ceb_request": np.array([1.0])}, _dist(1, 20.0), STEP_S)
    after_ceb = model.hidden()
    assert r.cleanings["ceb"][0] == 1.0 and r.chemicals_eur[0] == 5.0
    assert r.downtime_s[0] >= 900.0
    grown = after_ceb["r_hirr"][0] - 0.3 * fouled["r_hirr"][0]
    assert 0.0 < grown < 0.3 * fouled["r_hirr"][0]  # 70 % removed, then one more cycle of deposit
    assert after_ceb["r_cirr"][0] >= fouled["r_cirr"][0]  # a CEB cannot touch it

    before_cip = model.hidden()
    r = model.step({"cip_request": np.array([1.0])}, _dist(1, 20.0), STEP_S)
    assert model.measurements()["uf_state"][0] == CIP
    assert r.product_m3[0] == 0.0 and r.downtime_s[0] == STEP_S
    downtime = r.downtime_s[0]
    for _ in range(7):
        r = model.step({}, _dist(1, 20.0), STEP_S)
        downtime += r.downtime_s[0]
    assert r.chemicals_eur[0] == 150.0
    assert downtime == pytest.approx(4 * 3600.0)
    after_cip = model.hidden()
    # CIP make-up and rinse water (5 m³) come out of the product.
    used = after_cip["clean_water_m3"][0] - before_cip["clean_water_m3"][0]
    assert used == pytest.approx(5.0)
    assert model.measurements()["hours_since_cip_h"][0] < 0.5
    assert after_cip["r_cirr"][0] < 0.6 * before_cip["r_cirr"][0]
    assert after_cip["r_hirr"][0] < 0.2 * before_cip["r_hirr"][0]
    assert after_cip["permeability_20c_lmh_bar"][0] > 0.97 * 200.0


def test_cip_due_flags_the_trigger_region() -> None:
    model = _model(feed_turbidity_ntu=50.0, f_irr=0.05)
    due = []
    for _ in range(48 * 4):
        model.step({}, _dist(1, 50.0), STEP_S)
        due.append(model.measurements()["cip_due"][0])
        if due[-1]:
            break
    assert due[-1] == 1.0
    h = model.hidden()
    tmp_norm = h["tmp_after_bw_bar"][0]  # at 60 LMH and 20 °C already
    assert 1.2 <= tmp_norm < 1.3


def test_tmp_trips_at_2_bar_exactly() -> None:
    model = _model(flux_sp_lmh=120.0, filtration_time_sp_min=60.0, feed_turbidity_ntu=200.0)
    r = model.step({}, _dist(1, 200.0), STEP_S)
    assert r.tripped[0] and r.trip_reason[0] == "TMP ≥ 2 bar"
    assert r.interventions["interlock"][0] == 1.0
    assert r.pressure_excess[0] == pytest.approx(1.0)
    assert model.hidden()["tmp_at_trip_bar"][0] == pytest.approx(2.0)
    # Production stopped at the trip: filtrate = flux x area x time to trip, the rest is downtime.
    t_trip = model.hidden()["time_s"][0]
    assert 0.0 < t_trip < STEP_S
    assert r.downtime_s[0] == pytest.approx(STEP_S - t_trip)
    assert r.feed_m3[0] == pytest.approx(120.0 / 3.6e6 * 616.0 * t_trip)
    after = model.step({}, _dist(1, 200.0), STEP_S)
    assert after.tripped[0] and after.product_m3[0] == 0.0 and after.downtime_s[0] == STEP_S


def test_commands_and_setpoint_clipping() -> None:
    model = _model()
    r = model.step(
        {"bw_request": np.array([1.0]), "flux_sp_lmh": np.array([500.0])}, _dist(1), 60.0
    )
    assert r.cleanings["backwash"][0] == 1.0
    assert r.interventions["clip"][0] == 1.0
    assert model.measurements()["flux_sp_lmh"][0] == 120.0
    assert model.measurements()["uf_state"][0] == FILTRATION
    assert r.interventions["rate"][0] == 1.0  # 60 -> 120 LMH at 0.5 LMH/s takes 120 s
    r = model.step({}, _dist(1), 60.0)
    assert model.hidden()["flux_lmh"][0] == pytest.approx(120.0)
    assert r.interventions["rate"][0] == 0.0
    model.step({"ceb_request": np.array([1.0])}, _dist(1), 60.0)
    assert model.measurements()["uf_state"][0] == CEB
    assert model.measurements()["filtrate_flow_m3h"][0] == 0.0
    model.step({"bw_request": np.array([1.0])}, _dist(1), 1800.0)  # ignored: CEB still running
    assert model.measurements()["uf_state"][0] == FILTRATION
    model.step({"bw_request": np.array([1.0])}, _dist(1), 5.0)
    assert model.measurements()["uf_state"][0] == BACKWASH
    assert model.measurements()["bw_flow_m3h"][0] == pytest.approx(150.0 * 0.616)


def test_water_balance_closes() -> None:
    n = 6
    model = UfModel(n)
    model.reset(np.random.default_rng(1), randomize=0.2)
    rng = np.random.default_rng(2)
    totals = {"product": np.zeros(n), "feed": np.zeros(n)}
    for k in range(200):
        sp = {
            "flux_sp_lmh": rng.uniform(40, 120, n),
            "filtration_time_sp_min": rng.uniform(20, 60, n),
            "bw_duration_sp_s": rng.uniform(10, 60, n),
            "ceb_request": (rng.random(n) < 0.02).astype(float),
            "cip_request": (np.full(n, k == 100)).astype(float),
        }
        r = model.step(sp, _dist(n, 8.0), STEP_S)
        totals["product"] += r.product_m3
        totals["feed"] += r.feed_m3
    h = model.hidden()
    np.testing.assert_allclose(totals["feed"], h["filtrate_m3"] + h["drain_m3"], rtol=1e-12)
    np.testing.assert_allclose(
        totals["product"], h["filtrate_m3"] - h["clean_water_m3"], rtol=1e-12
    )
    np.testing.assert_allclose(
        totals["feed"], totals["product"] + h["clean_water_m3"] + h["drain_m3"], rtol=1e-12
    )


def test_vectorised_racks_match_single_racks() -> None:
    flux = np.array([45.0, 70.0, 110.0])
    ntu = np.array([3.0, 12.0, 30.0])
    vec = _model(3, flux_sp_lmh=flux, feed_turbidity_ntu=ntu)
    singles = [_model(1, flux_sp_lmh=flux[i], feed_turbidity_ntu=ntu[i]) for i in range(3)]
    for k in range(60):
        cmd = np.full(3, float(k == 30))
        rv = vec.step(
            {"ceb_request": cmd}, {"feed_turbidity_ntu": ntu, "feed_temperature_c": ntu}, STEP_S
        )
        for i, single in enumerate(singles):
            rs = single.step(
                {"ceb_request": cmd[i : i + 1]},
                {"feed_turbidity_ntu": ntu[i : i + 1], "feed_temperature_c": ntu[i : i + 1]},
                STEP_S,
            )
            assert rs.product_m3[0] == pytest.approx(rv.product_m3[i], rel=1e-12)
            assert rs.energy_kwh[0] == pytest.approx(rv.energy_kwh[i], rel=1e-12)
            assert rs.tripped[0] == rv.tripped[i]


def test_bad_input_names_the_culprit() -> None:
    model = UfModel(1)
    with pytest.raises(ValueError, match="feed_pressure_sp_bar"):
        model.step({"feed_pressure_sp_bar": np.array([1.0])}, {}, 60.0)
    with pytest.raises(ValueError, match="flux_sp_lmh"):
        model.step({"flux_sp_lmh": np.array([np.inf])}, {}, 60.0)
    with pytest.raises(ValueError, match="feed_turbidity_ntu"):
        model.step({}, {"feed_turbidity_ntu": np.array([-1.0])}, 60.0)
    with pytest.raises(ValueError, match="lp0_lmh_bar"):
        model.reset(np.random.default_rng(0), params={"lp0_lmh_bar": 0.0})
    with pytest.raises(ValueError, match="kc"):
        model.reset(np.random.default_rng(0), params={"kc": 1.0})


# --- properties -----------------------------------------------------------------------------------

_N = 4
_SEGMENTS = 6
_HOLD = 8
_SP = {t.name: t for t in UF_CATALOG.setpoints}
_plans = st.lists(
    st.fixed_dictionaries(
        {
            # Beyond the PLC ranges on purpose: the model must clip, not break.
            "flux_sp_lmh": st.floats(0.0, 200.0),
            "filtration_time_sp_min": st.floats(0.0, 120.0),
            "bw_duration_sp_s": st.floats(0.0, 120.0),
            "bw_request": st.floats(0.0, 1.0),
            "ceb_request": st.floats(0.0, 0.6),
            "cip_request": st.floats(0.0, 0.52),
        }
    ),
    min_size=_SEGMENTS,
    max_size=_SEGMENTS,
)
_disturbances = st.fixed_dictionaries(
    {
        "feed_turbidity_ntu": st.floats(0.0, 400.0),
        "feed_temperature_c": st.floats(0.0, 40.0),
        "fouling_factor": st.floats(0.0, 50.0),
    }
)


def _rollout(
    seed: int, plan: list[dict[str, float]], dist: dict[str, float], randomize: float
) -> tuple[UfModel, list[StepResult], list[dict[str, FloatArray]]]:
    rng = np.random.default_rng(seed)
    model = UfModel(_N)
    model.reset(rng, randomize=randomize)
    results, measured = [], []
    for segment in plan:
        spread = {k: v * rng.uniform(0.8, 1.2, _N) for k, v in segment.items()}
        d = {
            k: np.clip(v * rng.uniform(0.5, 1.5, _N), *UfModel.disturbance_ranges[k])
            for k, v in dist.items()
        }
        for _ in range(_HOLD):
            results.append(model.step(spread, d, STEP_S))
            measured.append(model.measurements())
    return model, results, measured


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    plan=_plans,
    dist=_disturbances,
    randomize=st.floats(0.0, 0.3),
)
def test_any_input_in_range_keeps_the_model_finite_bounded_and_balanced(
    seed: int, plan: list[dict[str, float]], dist: dict[str, float], randomize: float
) -> None:
    model, results, measured = _rollout(seed, plan, dist, randomize)
    product, feed = np.zeros(_N), np.zeros(_N)
    for r, m in zip(results, measured, strict=True):
        for name, value in m.items():
            assert np.all(np.isfinite(value)), name
        for field in ("feed_m3", "energy_kwh", "chemicals_eur", "downtime_s", "pressure_excess"):
            value = getattr(r, field)
            assert np.all(np.isfinite(value)) and np.all(value >= 0.0), field
        assert np.all(np.isfinite(r.product_m3))
        assert np.all(r.downtime_s <= STEP_S + 1e-9)
        assert np.all(r.pressure_excess <= 1.0 + 1e-9)  # the trip caps TMP at 2 bar
        assert np.all(m["tmp_bar"] <= 2.0 + 1e-9)
        for name, tag in _SP.items():
            assert np.all((m[name] >= tag.plc_low) & (m[name] <= tag.plc_high)), name
        assert np.all(np.isin(m["uf_state"], [FILTRATION, BACKWASH, CEB, CIP]))
        product += r.product_m3
        feed += r.feed_m3
    h = model.hidden()
    running = ~results[-1].tripped
    np.testing.assert_allclose(h["time_s"][running], len(results) * STEP_S)  # no time lost
    np.testing.assert_allclose(feed, h["filtrate_m3"] + h["drain_m3"], rtol=1e-9)
    np.testing.assert_allclose(product, h["filtrate_m3"] - h["clean_water_m3"], rtol=1e-9)
    assert np.all(h["r_c"] >= 0.0) and np.all(h["r_hirr"] >= 0.0) and np.all(h["r_cirr"] >= 0.0)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), plan=_plans, dist=_disturbances)
def test_same_seed_gives_the_same_trajectory(
    seed: int, plan: list[dict[str, float]], dist: dict[str, float]
) -> None:
    _, results_a, measured_a = _rollout(seed, plan, dist, 0.2)
    _, results_b, measured_b = _rollout(seed, plan, dist, 0.2)
    for ra, rb in zip(results_a, results_b, strict=True):
        np.testing.assert_array_equal(ra.product_m3, rb.product_m3)
        np.testing.assert_array_equal(ra.energy_kwh, rb.energy_kwh)
        np.testing.assert_array_equal(ra.tripped, rb.tripped)
    for ma, mb in zip(measured_a, measured_b, strict=True):
        for key in ma:
            np.testing.assert_array_equal(ma[key], mb[key])
