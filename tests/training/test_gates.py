"""Promotion gates: degraded candidates are rejected, an equal candidate passes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from app.plant.baselines import make_baseline
from app.plant.models.base import FloatArray, Policy
from app.training.gates import GateError, run_gates, suite_setup

TWIN = {
    "water_permeability_lmh_bar": 2.6,
    "salt_permeability_m_s": 8.0e-8,
    "fouling_rate_pa_s_m2": 6.75e8,
    "pump_efficiency": 0.68,
}
LIMITS = {"feed_pressure_sp_bar": (5.0, 40.0), "feed_flow_sp_m3h": (10.0, 80.0)}


class SignFlipped(Policy):
    """The incumbent with the direction of every set-point move reversed (a sign bug)."""

    name = "sign_flipped"

    def __init__(self, inner: Policy) -> None:
        self.inner = inner

    def reset(self, n: int, rng: np.random.Generator) -> None:
        self.inner.reset(n, rng)

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        out = dict(self.inner.act(measurements, t_s, dt_s))
        for tag, (lo, hi) in LIMITS.items():
            cur = np.asarray(measurements[tag])
            out[tag] = np.clip(cur - (np.asarray(out[tag]) - cur), lo, hi)
        return out


class PressureBias(Policy):
    """The incumbent asking 2 bar more feed pressure: safe, but wastes energy."""

    name = "pressure_bias"

    def __init__(self, inner: Policy) -> None:
        self.inner = inner

    def reset(self, n: int, rng: np.random.Generator) -> None:
        self.inner.reset(n, rng)

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        out = dict(self.inner.act(measurements, t_s, dt_s))
        out["feed_pressure_sp_bar"] = np.minimum(
            np.asarray(out["feed_pressure_sp_bar"]) + 2.0, 36.0
        )
        return out


def test_suite_covers_the_regression_scenarios() -> None:
    names, setup = suite_setup("ro", days=1.0)
    assert names == [
        "season_winter",
        "season_summer",
        "cip_recovery",
        "start_up",
        "high_salinity",
        "steady_anchor",
    ]
    assert [f.name for f in setup.files][2] == "ro_07_fouling_event.csv"
    assert setup.horizon_s == (86400.0,) * 6
    with pytest.raises(GateError, match="no regression suite for process 'uf'"):
        suite_setup("uf")
    with pytest.raises(GateError, match="gate days must be positive"):
        suite_setup("ro", days=0.0)


def test_sign_flipped_candidate_is_rejected_for_hard_violations() -> None:
    incumbent = make_baseline("rule_based", "ro")
    report = run_gates(
        "ro", SignFlipped(make_baseline("rule_based", "ro")), incumbent, TWIN, days=2
    )
    assert not report.passed
    failed = {c.name for c in report.checks if not c.passed}
    assert "zero hard violations (twin)" in failed
    assert sum(report.metrics["twin"]["candidate"]["trips"]) > 0
    assert sum(report.metrics["twin"]["incumbent"]["trips"]) == 0
    assert "REJECTED" in report.markdown()


def test_wasteful_candidate_is_rejected_on_cost_alone() -> None:
    incumbent = make_baseline("rule_based", "ro")
    report = run_gates(
        "ro", PressureBias(make_baseline("rule_based", "ro")), incumbent, TWIN, days=2
    )
    by_name = {c.name: c for c in report.checks}
    assert by_name["zero hard violations (twin)"].passed
    assert not by_name["cost per m³ vs incumbent (twin)"].passed
    assert not report.passed
    assert report.improvement_pct("twin") > 1.0


def test_candidate_equal_to_the_incumbent_passes() -> None:
    report = run_gates(
        "ro", make_baseline("rule_based", "ro"), make_baseline("rule_based", "ro"), TWIN, days=2
    )
    assert report.passed, report.markdown()
    assert report.improvement_pct("twin") == pytest.approx(0.0, abs=1e-9)
    doc = report.to_json()
    assert doc["passed"] and len(doc["checks"]) == 7
