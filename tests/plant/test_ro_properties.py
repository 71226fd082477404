"""Property tests of the RO model and environment: finite, physical, within limits, reproducible."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.plant.catalog import RO_CATALOG
from app.plant.envs import EnvOptions, ProcessEnv
from app.plant.models.base import ConstantDisturbances, StepResult
from app.plant.models.ro import RoModel

N = 8
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _column(low: float, high: float) -> st.SearchStrategy[np.ndarray]:
    return arrays(
        np.float64, N, elements=st.floats(low, high, allow_nan=False, allow_infinity=False)
    )


def _setpoints() -> st.SearchStrategy[dict[str, np.ndarray]]:
    p, q = RO_CATALOG.tag("feed_pressure_sp_bar"), RO_CATALOG.tag("feed_flow_sp_m3h")
    return st.fixed_dictionaries(
        {
            "feed_pressure_sp_bar": _column(p.low, p.high),
            "feed_flow_sp_m3h": _column(q.low, q.high),
            "cip_request": arrays(np.float64, N, elements=st.sampled_from([0.0, 1.0])),
        }
    )


def _disturbances() -> st.SearchStrategy[dict[str, np.ndarray]]:
    return st.fixed_dictionaries(
        {name: _column(lo, hi) for name, (lo, hi) in RoModel.disturbance_ranges.items()}
    )


def _finite(values: dict[str, np.ndarray]) -> None:
    for name, v in values.items():
        assert np.all(np.isfinite(v)), f"{name} is not finite: {v}"


def _check_result(r: StepResult, dt: float) -> None:
    for name in (
        "product_m3",
        "feed_m3",
        "energy_kwh",
        "chemicals_eur",
        "downtime_s",
        "quality_excess",
        "pressure_excess",
    ):
        v = getattr(r, name)
        assert v.shape == (N,) and np.all(np.isfinite(v)) and np.all(v >= 0.0), name
    assert np.all(r.downtime_s <= dt + 1e-9)
    assert np.all(r.product_m3 <= r.feed_m3 + 1e-9)
    assert r.tripped.dtype == np.bool_
    assert np.all((r.trip_reason != "") == r.tripped)


@SETTINGS
@given(
    steps=st.lists(st.tuples(_setpoints(), _disturbances()), min_size=1, max_size=3),
    dt=st.floats(1.0, 6 * 3600.0),
    fouling=_column(0.0, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_model_stays_finite_physical_and_within_limits(
    steps: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    dt: float,
    fouling: np.ndarray,
    seed: int,
) -> None:
    model = RoModel(N)
    model.reset(
        np.random.default_rng(seed), randomize=0.2, params={"initial_fouling_ratio": fouling}
    )
    p = model.params()
    previous = model.measurements()["feed_pressure_bar"]
    for sp, dist in steps:
        r = model.step(sp, dist, dt)
        m, h = model.measurements(), model.hidden()
        _finite(m)
        _finite(h)
        _check_result(r, dt)
        running = m["feed_flow_m3h"] > 0.0
        assert np.all(~running | ~r.tripped & (m["cip_active"] == 0.0))
        q_f, q_p, q_c = m["feed_flow_m3h"], m["permeate_flow_m3h"], m["concentrate_flow_m3h"]
        assert np.all(q_p >= 0.0) and np.all((q_c > 0.0) | ~running)
        np.testing.assert_allclose((q_p + q_c)[running], q_f[running], rtol=1e-9)
        salt_in = q_f * dist["feed_tds_gl"]
        salt_out = q_p * h["permeate_tds_gl"] + q_c * h["concentrate_tds_gl"]
        np.testing.assert_allclose(salt_out[running], salt_in[running], rtol=1e-9, atol=1e-12)
        # The VFD ramps towards its setpoint without overshoot; the channel only loses pressure.
        ceiling = np.maximum(sp["feed_pressure_sp_bar"], previous)
        assert np.all(m["feed_pressure_bar"] <= ceiling + 1e-9)
        assert np.all(m["feed_pressure_bar"] >= 0.0)
        previous = m["feed_pressure_bar"]
        assert np.all(m["concentrate_pressure_bar"] <= m["feed_pressure_bar"])
        for tag in ("recovery_pct", "tank_level_pct", "hpp_speed_pct", "conc_valve_pct"):
            assert np.all((m[tag] >= 0.0) & (m[tag] <= 100.0)), tag
        # Hard limits: whatever exceeded one stopped the plant.
        feed_bad = (
            (dist["feed_temperature_c"] > p["temperature_trip_c"])
            | (dist["feed_orp_mv"] > p["orp_trip_mv"])
            | (dist["feed_ph"] < p["ph_trip_low"])
            | (dist["feed_ph"] > p["ph_trip_high"])
        )
        assert np.all(r.tripped[feed_bad])
        assert np.all(m["feed_pressure_bar"][running] <= p["feed_pressure_trip_bar"][running])
        assert np.all(m["stage_dp_bar"][running] <= p["vessel_dp_trip_bar"][running])
        assert np.all(m["feed_flow_m3h"][r.tripped] == 0.0)


@SETTINGS
@given(
    actions=arrays(np.float32, (24, 3), elements=st.floats(-1.0, 1.0, width=32)),
    seed=st.integers(0, 2**31 - 1),
    tds=st.floats(0.3, 6.0),
    temperature=st.floats(5.0, 35.0),
)
def test_env_keeps_setpoints_in_plc_limits_and_observations_in_space(
    actions: np.ndarray, seed: int, tds: float, temperature: float
) -> None:
    source = ConstantDisturbances({"feed_tds_gl": tds, "feed_temperature_c": temperature})
    env = ProcessEnv(RoModel(1), source, options=EnvOptions(sensor_noise=True, randomize=0.2))
    obs, _ = env.reset(seed=seed)
    tags = list(env.observation_tags)
    limits = {t.name: (t.plc_low, t.plc_high) for t in RO_CATALOG.setpoints}
    for a in actions:
        obs, reward, term, trunc, _ = env.step(a)
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)
        for name, (low, high) in limits.items():
            assert low <= obs[tags.index(name)] <= high
        if term or trunc:
            obs, _ = env.reset()


@SETTINGS
@given(
    steps=st.lists(st.tuples(_setpoints(), _disturbances()), min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_seed_same_model_trajectory(
    steps: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], seed: int
) -> None:
    runs = []
    for _ in range(2):
        model = RoModel(N)
        model.reset(np.random.default_rng(seed), randomize=0.2)
        trace = [model.params()["water_permeability_lmh_bar"]]
        for sp, dist in steps:
            model.step(sp, dist, 1800.0)
            m = model.measurements()
            trace.extend(m[t.name] for t in RO_CATALOG.observations)
        runs.append(np.array(trace))
    np.testing.assert_array_equal(runs[0], runs[1])
    other = RoModel(N)
    other.reset(np.random.default_rng(seed + 1), randomize=0.2)
    assert not np.array_equal(other.params()["water_permeability_lmh_bar"], runs[0][0])
