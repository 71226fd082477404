"""HSBRO and UF baselines (rule_based, optimal_hourly) on the held-out scenarios."""

from __future__ import annotations

import numpy as np
import pytest

from app.plant.baselines import baseline_names, make_baseline
from app.plant.baselines_hsbro import HsbroRuleBased, brine_gain
from app.plant.baselines_twin import TwinOptimalHourly, tile
from app.plant.catalog import CATALOGS, HSBRO_CATALOG
from app.plant.scenarios import RandomDisturbances
from app.training.evaluate import EvalSetup, model_class, prepare, run_policy


def _evaluate(
    process: str, name: str, stems: tuple[str, ...], days: float | None
) -> dict[str, np.ndarray]:
    """Per-episode metrics of baseline ``name`` on the named held-out scenarios (seed 0)."""
    full = prepare(process, None, None, 0, days)
    by_stem = {f.stem: (f, h) for f, h in zip(full.files, full.horizon_s, strict=True)}
    files = tuple(by_stem[stem][0] for stem in stems)
    horizon = tuple(by_stem[stem][1] for stem in stems)
    setup = EvalSetup(process, files, 0, full.dt_s, horizon, full.driven)
    return run_policy(make_baseline(name, process), setup, name).episodes


@pytest.mark.parametrize("process", ["uf", "hsbro"])
def test_the_eval_baselines_exist(process: str) -> None:
    assert {"fixed_pi", "rule_based", "optimal_hourly"} <= set(baseline_names(process))


UF_CASE = ("uf_02_spring", "uf_05_storm")
HSBRO_CASE = ("hsbro_03_nominal", "hsbro_06_random_a")


@pytest.mark.parametrize("name", ["fixed_pi", "rule_based", "optimal_hourly"])
def test_uf_baselines_run_held_out_scenarios_clean(name: str) -> None:
    ep = _evaluate("uf", name, UF_CASE, days=0.5)
    for key, values in ep.items():
        assert np.all(np.isfinite(values)), (key, values)
    assert np.all(ep["trips"] == 0.0)
    assert np.all(ep["product_m3"] > 0.0)


@pytest.mark.parametrize(
    "name", ["fixed_pi", "rule_based", pytest.param("optimal_hourly", marks=pytest.mark.slow)]
)
def test_hsbro_baselines_run_held_out_scenarios_clean(name: str) -> None:
    ep = _evaluate("hsbro", name, HSBRO_CASE, days=0.25)
    for key, values in ep.items():
        assert np.all(np.isfinite(values)), (key, values)
    assert np.all(ep["trips"] == 0.0)
    # The batch finishes with a concentrate inside the bath spec (no quality violation time
    # beyond the last cycle's booking) at a recovery in the published pilot range (87-95.7 %).
    assert np.all((ep["recovery_pct"] > 87.0) & (ep["recovery_pct"] < 97.0)), ep["recovery_pct"]


def test_uf_optimal_hourly_beats_fixed_on_cost_per_m3() -> None:
    fixed = _evaluate("uf", "fixed_pi", ("uf_02_spring",), days=1.0)
    best = _evaluate("uf", "optimal_hourly", ("uf_02_spring",), days=1.0)
    assert best["cost_per_m3_eur"][0] < 0.97 * fixed["cost_per_m3_eur"][0]


@pytest.mark.slow
def test_hsbro_optimal_hourly_beats_fixed_on_cost_per_m3() -> None:
    fixed = _evaluate("hsbro", "fixed_pi", ("hsbro_03_nominal",), days=0.25)
    best = _evaluate("hsbro", "optimal_hourly", ("hsbro_03_nominal",), days=0.25)
    assert best["cost_per_m3_eur"][0] < 0.97 * fixed["cost_per_m3_eur"][0]
    assert best["quality_violation_pct"][0] <= fixed["quality_violation_pct"][0]


def test_optimal_hourly_needs_the_model_and_consistent_grid() -> None:
    policy = make_baseline("optimal_hourly", "uf")
    policy.reset(1, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="bind"):
        policy.act({"tmp_bar": np.ones(1)}, 0.0, 1800.0)
    assert isinstance(policy, TwinOptimalHourly)
    with pytest.raises(ValueError, match="differ"):
        TwinOptimalHourly(
            "uf", policy.rule, {"flux_sp_lmh": (50.0,)}, {"bw_duration_sp_s": 30.0}, lambda m: {}
        )


def test_hsbro_rule_based_derates_supply_with_pressure() -> None:
    rule = HsbroRuleBased(HSBRO_CATALOG)
    rule.reset(3, np.random.default_rng(0))
    meas = {
        "phase": np.ones(3),
        "loop_conductivity_uscm": np.full(3, 50_000.0),
        "supply_pressure_bar": np.array([90.0, 106.5, 114.0]),
        "feed_tank_volume_l": np.full(3, 2000.0),
        "feed_conductivity_uscm": np.full(3, 8_000.0),
    }
    out = rule.act(meas, 0.0, 60.0)
    np.testing.assert_allclose(out["supply_flow_sp_lpm"], [8.0, 6.0, 4.0])
    assert np.all(out["recirc_flow_sp_lpm"] >= 2.0 * out["supply_flow_sp_lpm"])
    with pytest.raises(ValueError, match="derate_start_bar"):
        HsbroRuleBased(HSBRO_CATALOG, derate_start_bar=120.0)


def test_brine_gain_follows_the_pilot_points() -> None:
    np.testing.assert_allclose(
        brine_gain(np.array([4.0, 8.0, 10.0, 15.0])), [1.52, 1.48, 1.44, 1.40]
    )


@pytest.mark.parametrize("process", ["uf", "hsbro"])
def test_tiled_model_steps_each_copy_like_its_plant(process: str) -> None:
    """``tile`` (the look-ahead's n × plans twin) repeats every plant's state exactly."""
    cls = model_class(process)
    model = cls(2)
    source = RandomDisturbances(process)
    source.reset(2, np.random.default_rng(4))
    model.reset(np.random.default_rng(0), randomize=0.2)
    rule = make_baseline("fixed_pi", process)
    rule.reset(2, np.random.default_rng(0))
    dt = CATALOGS[process].agent_period_s
    for k in range(3):
        model.step(rule.act(model.measurements(), k * dt, dt), source.at(np.full(2, k * dt)), dt)
    big = tile(model.copy(), 2, 3)
    assert big.n == 6
    dist = {key: np.asarray(v) for key, v in source.at(np.full(2, 3 * dt)).items()}
    sp = rule.act(model.measurements(), 3 * dt, dt)
    r_small = model.step(sp, dist, dt)
    r_big = big.step(
        {key: np.repeat(v, 3) for key, v in sp.items()},
        {key: np.repeat(v, 3) for key, v in dist.items()},
        dt,
    )
    np.testing.assert_array_equal(np.repeat(r_small.product_m3, 3), r_big.product_m3)
    for key, value in model.measurements().items():
        np.testing.assert_array_equal(np.repeat(value, 3), big.measurements()[key], err_msg=key)
