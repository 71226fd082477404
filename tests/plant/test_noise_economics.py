"""Sensor noise (app.plant.noise) and economics (app.plant.economics)."""

from __future__ import annotations

import numpy as np
import pytest

from app.plant.catalog import RO_CATALOG
from app.plant.economics import (
    PRICES,
    ProcessPrices,
    cost_per_m3,
    prices_for,
    soft_margin,
    step_cost_eur,
    step_costs,
    step_reward,
    terminal_reward,
)
from app.plant.models.base import StepResult
from app.plant.noise import SensorNoise, counter_normals, plant_key, plc_noise


def test_counter_normals_are_standard_normal_and_independent_of_batch() -> None:
    keys = np.array([plant_key(s) for s in range(2000)], dtype=np.uint64)
    z = counter_normals(keys, np.full(2000, 7), 5)
    assert abs(z.mean()) < 0.03 and z.std() == pytest.approx(1.0, abs=0.03)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.06
    # A plant's draws depend on its key and counter only, not on its neighbours.
    np.testing.assert_array_equal(counter_normals(keys[5:6], np.array([7]), 5), z[5:6])
    assert not np.array_equal(counter_normals(keys[:1], np.array([8]), 5), z[:1])
    assert plant_key(3, 1) != plant_key(3, 0)


def test_sensor_noise_levels_follow_section_10() -> None:
    noise = SensorNoise(RO_CATALOG)
    tags = list(noise.tags)
    true = np.zeros((1, len(tags)))
    col = {
        t: tags.index(t)
        for t in (
            "feed_pressure_bar",
            "feed_flow_m3h",
            "feed_conductivity_uscm",
            "feed_temperature_c",
            "hours_since_cip_h",
            "cip_active",
        )
    }
    true[0, col["feed_flow_m3h"]] = 40.0
    true[0, col["feed_conductivity_uscm"]] = 3000.0
    sigma = noise.sigma(true)[0]
    assert sigma[col["feed_pressure_bar"]] == pytest.approx(0.005 * 45.0)
    assert sigma[col["feed_flow_m3h"]] == pytest.approx(0.015 * 40.0)
    assert sigma[col["feed_conductivity_uscm"]] == pytest.approx(0.03 * 3000.0)
    assert sigma[col["feed_temperature_c"]] == pytest.approx(0.2)
    assert sigma[col["hours_since_cip_h"]] == 0.0 and sigma[col["cip_active"]] == 0.0
    # Empirical spread and clipping at the span.
    n = 4000
    values = np.tile(true, (n, 1))
    keys = np.arange(n, dtype=np.uint64)
    noisy = noise.apply(values, keys, np.zeros(n, dtype=np.int64))
    assert noisy[:, col["feed_flow_m3h"]].std() == pytest.approx(0.6, rel=0.05)
    assert noisy[:, col["feed_pressure_bar"]].min() >= 0.0  # true 0 bar, clipped at the span


def test_plc_noise_is_seeded_and_leaves_other_tags_alone() -> None:
    values = {"feed_flow_m3h": 40.0, "feed_pressure_sp_bar": 12.0, "plc_heartbeat": 5.0}
    a = plc_noise(RO_CATALOG, np.random.default_rng(1))(values)
    b = plc_noise(RO_CATALOG, np.random.default_rng(1))(values)
    assert a == b
    assert a["feed_flow_m3h"] != 40.0
    assert a["feed_pressure_sp_bar"] == 12.0 and a["plc_heartbeat"] == 5.0


def _result(**values: float) -> StepResult:
    base = {
        "product_m3": 10.0,
        "feed_m3": 20.0,
        "energy_kwh": 7.0,
        "chemicals_eur": 0.0,
        "downtime_s": 0.0,
        "quality_excess": 0.0,
        "pressure_excess": 0.0,
    }
    base.update(values)
    return StepResult(
        **{k: np.array([v]) for k, v in base.items()},
        tripped=np.array([False]),
        trip_reason=np.array([""]),
    )


def test_step_costs_and_cost_per_m3() -> None:
    prices = prices_for("ro")
    r = _result(chemicals_eur=300.0, downtime_s=1800.0)
    c = step_costs(r, prices, {"tariff_eur_kwh": np.array([0.2])}, 1800.0, unmet_demand_m3=[2.0])
    assert c.water_value[0] == pytest.approx(10.0 * prices.water_eur_m3)
    assert c.energy[0] == pytest.approx(7.0 * 0.2)
    assert c.downtime[0] == pytest.approx(0.5 * prices.downtime_eur_h)
    assert c.unmet_demand[0] == pytest.approx(2.0 * prices.unmet_demand_eur_m3)
    total = 300.0 + 1.4 + 0.5 * prices.downtime_eur_h + 6.0 + 0.5 * prices.membrane_eur_h
    assert c.cost[0] == pytest.approx(total)
    cost, value = step_cost_eur("ro", r, {}, 1800.0)
    assert cost[0] == pytest.approx(
        300.0
        + 7.0 * prices.energy_eur_kwh
        + 0.5 * prices.downtime_eur_h
        + 0.5 * prices.membrane_eur_h
    )
    assert value[0] == pytest.approx(10.0)
    np.testing.assert_allclose(cost_per_m3([5.0, 1.0], [10.0, 0.0]), [0.5, np.nan])


def test_reward_is_order_one_at_the_design_point_and_never_rewards_sec() -> None:
    prices = prices_for("ro")
    design = step_reward(_result(product_m3=12.5, energy_kwh=8.0), prices, {}, 1800.0)
    assert 0.5 < design[0] < 1.2
    # Halving production halves energy and keeps SEC, but lowers the reward.
    half = step_reward(_result(product_m3=6.25, energy_kwh=4.0), prices, {}, 1800.0)
    assert half[0] < design[0]
    # Quality and pressure excursions and big moves cost; the penalties are zero at the limit.
    assert soft_margin(0.0, 10.0) == 0.0
    worse = step_reward(
        _result(product_m3=12.5, energy_kwh=8.0, quality_excess=0.2, pressure_excess=0.5),
        prices,
        {},
        1800.0,
        setpoint_moves=np.array([[1.0, -1.0]]),
    )
    assert worse[0] < design[0] - 1.0


def test_terminal_value_charges_the_fouling_left_on_the_membrane() -> None:
    prices = prices_for("ro")
    value = terminal_reward({"fouling_ratio": np.array([0.0, 0.1])}, prices, 1800.0)
    assert value[0] == 0.0
    assert value[1] == pytest.approx(-450.0 / 12.5)
    with pytest.raises(KeyError, match="fouling_ratio"):
        terminal_reward({}, prices, 1800.0)


def test_prices_are_validated_and_unknown_processes_named() -> None:
    with pytest.raises(KeyError, match=r"known: .*ro"):
        prices_for("md")
    assert "ro" in PRICES
    with pytest.raises(ValueError, match="water_eur_m3"):
        ProcessPrices(
            water_eur_m3=-1.0,
            energy_eur_kwh=0.1,
            downtime_eur_h=0.0,
            unmet_demand_eur_m3=0.0,
            membrane_eur_h=0.0,
            reward_scale_eur_h=1.0,
            quality_weight=0.0,
            pressure_weight=0.0,
            smoothness_weight=0.0,
            trip_penalty=0.0,
            terminal_state_key="x",
            terminal_state_eur=0.0,
        )
