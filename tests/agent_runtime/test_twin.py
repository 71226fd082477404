"""What-if preview on the RO twin: alignment to a live plant, and the direction of the effects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.agent_runtime.twin import HOLD, preview
from app.domain import Quality
from app.plant.models.ro import RoModel
from tests.agent_runtime.policies import good, ro_measurements

START = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def test_twin_reproduces_the_live_plant_and_its_future() -> None:
    """A live model with hidden fouling and salt passage; the twin must find both and track it."""
    live = RoModel(1)
    live.reset(
        np.random.default_rng(0),
        params={"initial_fouling_ratio": 0.6, "salt_permeability_m_s": 8e-8,
                "feed_temperature_c": 14.0},
    )  # fmt: skip
    for _ in range(60):
        live.step({"feed_pressure_sp_bar": np.array([14.0])}, {}, 60.0)
    meas = {k: float(v[0]) for k, v in live.measurements().items()}
    result = preview("ro", good(meas), {}, horizon_s=1800.0, dt_s=60.0, start=START)
    assert result.available, result.reason
    fit = result.fit
    assert fit is not None
    assert fit.fouling_ratio == pytest.approx(float(live.hidden()["fouling_ratio"][0]), rel=0.01)
    assert fit.salt_permeability_m_s == pytest.approx(8e-8, rel=0.01)
    assert abs(fit.flow_residual) < 1e-4
    assert fit.permeate_conductivity_model_uscm == pytest.approx(
        meas["permeate_conductivity_uscm"], rel=1e-3
    )
    future = []
    for _ in range(30):
        live.step({}, {}, 60.0)
        future.append(float(live.measurements()["permeate_flow_m3h"][0]))
    hold = result.scenarios[HOLD]
    np.testing.assert_allclose(hold.permeate_flow_m3h[1:], future, rtol=1e-3)


def test_higher_pressure_gives_more_permeate_than_hold() -> None:
    meas = ro_measurements(fouling=0.3, pressure_bar=12.0)
    result = preview(
        "ro", good(meas),
        {"up": {"feed_pressure_sp_bar": 13.0}, "down": {"feed_pressure_sp_bar": 11.0}},
        horizon_s=3600.0, dt_s=60.0, start=START,
    )  # fmt: skip
    assert list(result.scenarios) == [HOLD, "up", "down"]
    hold, up, down = (result.scenarios[k] for k in (HOLD, "up", "down"))
    assert hold.setpoints == {"feed_pressure_sp_bar": 12.0, "feed_flow_sp_m3h": 40.0}
    assert up.setpoints["feed_flow_sp_m3h"] == 40.0  # left out: keeps its hold value
    # Same start, then apart in the expected directions.
    for series in ("permeate_flow_m3h", "dp_bar", "permeate_conductivity_uscm", "recovery_pct"):
        assert getattr(up, series)[0] == pytest.approx(getattr(hold, series)[0])
    assert up.permeate_flow_m3h[-1] > hold.permeate_flow_m3h[-1] * 1.05
    assert down.permeate_flow_m3h[-1] < hold.permeate_flow_m3h[-1] * 0.95
    assert up.recovery_pct[-1] > hold.recovery_pct[-1] > down.recovery_pct[-1]
    # More permeate from the same feed: lower concentrate flow, lower ΔP; salt is diluted.
    assert up.dp_bar[-1] < hold.dp_bar[-1]
    assert up.permeate_conductivity_uscm[-1] < hold.permeate_conductivity_uscm[-1]
    assert up.feed_pressure_bar[-1] == pytest.approx(13.0, abs=0.01)
    assert np.all(np.isfinite(up.sec_kwh_m3)) and up.sec_kwh_m3[-1] > 0.5
    # Water is worth more than the energy at these prices: more permeate earns more.
    assert up.kpi_eur_h > hold.kpi_eur_h > down.kpi_eur_h
    assert len(up.timestamps) == 61 and up.t_s[-1] == 3600.0
    assert up.timestamps[0] == START and up.timestamps[-1] == START + timedelta(hours=1)
    assert up.trip_reason == ""
    with pytest.raises(ValueError, match="read-only"):
        up.permeate_flow_m3h[0] = 0.0


def test_a_setpoint_beyond_the_trip_limit_shows_the_trip() -> None:
    meas = ro_measurements(fouling=0.3)
    result = preview("ro", meas, {"over": {"feed_pressure_sp_bar": 44.0}}, horizon_s=1800.0)
    over = result.scenarios["over"]
    assert over.trip_reason == "feed_pressure"
    assert over.permeate_flow_m3h[-1] == 0.0
    assert over.kpi_eur_h < result.scenarios[HOLD].kpi_eur_h


def test_hold_comes_from_last_applied_when_given() -> None:
    meas = ro_measurements()
    result = preview(
        "ro", meas, {}, hold={"feed_pressure_sp_bar": 12.5, "feed_flow_sp_m3h": 40.0},
        horizon_s=1800.0,
    )  # fmt: skip
    assert result.scenarios[HOLD].setpoints["feed_pressure_sp_bar"] == 12.5


@pytest.mark.parametrize("process", ["uf", "hsbro", "md"])
def test_other_processes_get_a_clear_not_available(process: str) -> None:
    result = preview(process, {}, {"x": {}}, horizon_s=1800.0)
    assert not result.available
    assert result.reason.startswith(f"preview not available for process {process!r}")
    assert result.scenarios == {}


def test_unusable_measurements_or_a_stopped_plant_give_no_preview() -> None:
    meas = good(ro_measurements())
    meas["feed_conductivity_uscm"] = (3000.0, Quality.STALE)
    meas["permeate_flow_m3h"] = (float("nan"), Quality.GOOD)
    result = preview("ro", meas, {}, horizon_s=1800.0)
    assert not result.available
    assert result.reason == "no usable measurement of permeate_flow_m3h, feed_conductivity_uscm"
    stopped = ro_measurements() | {"cip_active": 1.0}
    assert "not producing" in preview("ro", stopped, {}, horizon_s=1800.0).reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon_s": 600.0}, "horizon_s must be within 1800-7200"),
        ({"horizon_s": 1800.0, "dt_s": 600.0}, "dt_s must be positive"),
        ({"scenarios": {"hold": {}}}, "reserved"),
        (
            {"scenarios": {"r": {"feed_pressure_bar": 13.0}}},
            "'feed_pressure_bar' is not a setpoint",
        ),
        ({"scenarios": {"r": {"cip_request": 1.0}}}, r"not a setpoint of process 'ro' \(command\)"),
        ({"scenarios": {"r": {"feed_pressure_sp_bar": float("inf")}}}, "not finite"),
    ],
)
def test_bad_arguments_name_the_culprit(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"scenarios": {}, "horizon_s": 1800.0} | kwargs
    with pytest.raises(ValueError, match=match):
        preview("ro", ro_measurements(), **args)  # type: ignore[arg-type]
