"""The single-plant (float) channel march equals the array march (app.plant.models.ro)."""

from __future__ import annotations

import numpy as np
import pytest

from app.plant.base_control import setpoint_limits
from app.plant.catalog import RO_CATALOG
from app.plant.models import ro
from app.plant.models.ro import RO_PARAMETERS, SEAWATER_REFERENCE, RoModel
from app.plant.scenarios import RECIPES, RandomDisturbances


def _random_params(rng: np.random.Generator) -> dict[str, float]:
    """Parameters drawn ±30 % around the defaults (those the model randomises), within bounds."""
    out = {}
    for name, spec in RO_PARAMETERS.items():
        if spec.randomize and spec.default > 0:
            value = spec.default * rng.uniform(0.7, 1.3)
            out[name] = float(np.clip(value, spec.low, spec.high))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_single_plant_trajectory_equals_the_same_plant_in_a_vector(seed: int) -> None:
    """Plant 0 of a 2-plant model (array path) and a 1-plant model (float path) stay within 1e-9.

    Random parameters, random setpoints within the PLC ranges (with CIP requests), a random
    scenario; plant 1 differs so the vector model cannot take a one-plant shortcut.
    """
    rng = np.random.default_rng(seed)
    params = _random_params(rng)
    if seed == 3:
        params.update(SEAWATER_REFERENCE)
    single, pair = RoModel(1, params=params), RoModel(2, params=params)
    source = RandomDisturbances(RECIPES["ro"])
    source.reset(2, np.random.default_rng(seed + 10))
    first = source.at(np.zeros(2))
    init = {k: first[k] for k in RoModel.disturbance_names}
    single.reset(np.random.default_rng(0), params={k: v[:1] * np.ones(1) for k, v in init.items()})
    pair.reset(
        np.random.default_rng(0), params={k: np.array([v[0], v[1]]) for k, v in init.items()}
    )
    p_lo, p_hi = setpoint_limits(RO_CATALOG, "feed_pressure_sp_bar")
    q_lo, q_hi = setpoint_limits(RO_CATALOG, "feed_flow_sp_m3h")
    dt = RO_CATALOG.agent_period_s
    for k in range(80):
        dist = source.at(np.full(2, k * dt))
        p_sp, q_sp = rng.uniform(p_lo, p_hi, 2), rng.uniform(q_lo, q_hi, 2)
        cip = (rng.uniform(size=2) < 0.03).astype(np.float64)
        sp2 = {"feed_pressure_sp_bar": p_sp, "feed_flow_sp_m3h": q_sp, "cip_request": cip}
        sp1 = {key: v[:1].copy() for key, v in sp2.items()}
        d1 = {key: np.asarray(v)[:1].copy() for key, v in dist.items()}
        r1, r2 = single.step(sp1, d1, dt), pair.step(sp2, dist, dt)
        m1, m2 = single.measurements(), pair.measurements()
        for key in m1:
            np.testing.assert_allclose(m1[key][0], m2[key][0], rtol=1e-9, atol=1e-12, err_msg=key)
        for field in ("product_m3", "energy_kwh", "quality_excess", "pressure_excess"):
            np.testing.assert_allclose(
                getattr(r1, field)[0], getattr(r2, field)[0], rtol=1e-9, atol=1e-12, err_msg=field
            )
        assert r1.tripped[0] == r2.tripped[0]
        h1, h2 = single.hidden(), pair.hidden()
        np.testing.assert_allclose(
            h1["flux_lmh_profile"][0], h2["flux_lmh_profile"][0], rtol=1e-9, atol=1e-12
        )


def test_float_march_falls_back_to_the_array_march_on_arithmetic_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A float exception must not escape: the array path's inf/NaN semantics apply instead."""
    calls = []

    def broken(*args: object) -> None:
        raise ZeroDivisionError

    def expr(*args: object) -> None:
        calls.append(1)
        original(*args)  # type: ignore[arg-type]

    original = ro._march_expr
    monkeypatch.setattr(ro, "_march_floats", broken)
    monkeypatch.setattr(ro, "_march_expr", expr)
    model = RoModel(1)
    model.reset(np.random.default_rng(0))
    model.step({"feed_pressure_sp_bar": np.array([14.0])}, {}, 1800.0)
    assert calls
    assert np.isfinite(model.measurements()["permeate_flow_m3h"][0])
