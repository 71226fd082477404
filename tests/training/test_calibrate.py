"""System identification: the replay fit recovers hidden plant parameters from logged data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.plant.baselines import make_baseline
from app.training.calibrate import Calibration, CalibrationError, calibrate_ro
from app.training.data import assess, load_transitions
from app.training.plant_log import simulate_transitions, write_jsonl

REPO = Path(__file__).resolve().parents[2]
SCEN = REPO / "resources" / "scenarios" / "ro"
# A plant unlike the simulator default (A 3.3 LMH/bar, B 5.7e-8 m/s, k_fp 2.25e8, η 0.75):
# a tighter, saltier, faster-fouling membrane and a worn pump.
HIDDEN = {
    "water_permeability_lmh_bar": 2.6,
    "salt_permeability_m_s": 8.0e-8,
    "fouling_rate_pa_s_m2": 6.75e8,
    "pump_efficiency": 0.68,
}


def _calibrate(tmp_path: Path, scenario: str, days: float, policy: str) -> Calibration:
    records = simulate_transitions(
        "ro", SCEN / scenario, make_baseline(policy, "ro"), days=days, params=HIDDEN, seed=3
    )
    log = load_transitions(write_jsonl(records, tmp_path / "log.jsonl"), "ro")
    return calibrate_ro(log, assess(log).good)


def test_membrane_and_pump_recovered_from_three_noisy_days(tmp_path: Path) -> None:
    cal = _calibrate(tmp_path, "ro_11_steady.csv", 3.0, "random")
    p = cal.params
    # Tolerances: A 1 %, B 3 %, η 1 % (sensor noise 1.5 % flow, 3 % conductivity, 1 % power).
    assert p["water_permeability_lmh_bar"] == pytest.approx(2.6, rel=0.01)
    assert p["salt_permeability_m_s"] == pytest.approx(8.0e-8, rel=0.03)
    assert p["pump_efficiency"] == pytest.approx(0.68, rel=0.01)
    for name in ("water_permeability_lmh_bar", "salt_permeability_m_s", "pump_efficiency"):
        assert cal.identifiable(name)
        # The reported standard error is honest: the truth lies within 4 σ.
        assert abs(p[name] - HIDDEN[name]) <= 4 * cal.std[name] + 1e-3 * HIDDEN[name]
    # Three days barely move the fouling: the fit says so instead of claiming a number.
    assert not cal.identifiable("fouling_rate_pa_s_m2")
    assert any("fouling_rate_pa_s_m2 is poorly identified" in n for n in cal.notes)
    assert cal.fit["permeate_flow_m3h"].r2 > 0.99
    assert cal.fit["hpp_power_kw"].r2 > 0.99
    # The model explains the data down to sensor noise (reduced χ² near 1).
    assert 0.5 < cal.reduced_chi2 < 3.0
    assert cal.simulator_params()["initial_fouling_ratio"] == 0.0


@pytest.mark.slow
def test_fouling_rate_recovered_from_ten_days_with_real_disturbances(tmp_path: Path) -> None:
    """Spring scenario: temperature and salinity swing, fouling factor walks and has events."""
    cal = _calibrate(tmp_path, "ro_02_spring.csv", 10.0, "random")
    p = cal.params
    assert p["water_permeability_lmh_bar"] == pytest.approx(2.6, rel=0.01)
    assert p["salt_permeability_m_s"] == pytest.approx(8.0e-8, rel=0.03)
    assert p["pump_efficiency"] == pytest.approx(0.68, rel=0.01)
    # k_fp: the scenario's unmeasured fouling-factor walk makes it an effective value; within a
    # factor 1.6 of the truth and clearly above the default it was started from.
    k = p["fouling_rate_pa_s_m2"]
    assert 6.75e8 / 1.6 < k < 6.75e8 * 1.6
    assert k > 1.5 * cal.defaults["fouling_rate_pa_s_m2"]
    assert abs(np.log(k / 6.75e8)) <= 3 * cal.rel_std("fouling_rate_pa_s_m2") + 0.05


def test_a_plant_at_the_default_is_calibrated_to_the_default(tmp_path: Path) -> None:
    records = simulate_transitions(
        "ro", SCEN / "ro_11_steady.csv", make_baseline("rule_based", "ro"), days=2.0, seed=5
    )
    log = load_transitions(write_jsonl(records, tmp_path / "log.jsonl"), "ro")
    cal = calibrate_ro(log, assess(log).good)
    assert cal.params["water_permeability_lmh_bar"] == pytest.approx(3.3, rel=0.01)
    assert cal.params["salt_permeability_m_s"] == pytest.approx(5.7e-8, rel=0.03)
    assert cal.params["pump_efficiency"] == pytest.approx(0.75, rel=0.01)


def test_unusable_input_is_refused_with_the_reason(tmp_path: Path) -> None:
    records = simulate_transitions(
        "ro", SCEN / "ro_11_steady.csv", make_baseline("rule_based", "ro"), days=0.5, seed=5
    )
    log = load_transitions(write_jsonl(records, tmp_path / "log.jsonl"), "ro")
    good = assess(log).good
    with pytest.raises(CalibrationError, match="good mask has shape"):
        calibrate_ro(log, good[:-1])
    few = np.zeros_like(good)
    few[:5] = True
    with pytest.raises(CalibrationError, match="only 4 consecutive usable record pairs"):
        calibrate_ro(log, few)
    with pytest.raises(CalibrationError, match="one of the estimated ones"):
        calibrate_ro(log, good, fixed={"pump_efficiency": 0.7})
    del log.obs["permeate_conductivity_uscm"]
    with pytest.raises(CalibrationError, match=r"\['permeate_conductivity_uscm'\] not logged"):
        calibrate_ro(log, good)
    log.process = "uf"
    with pytest.raises(CalibrationError, match="implemented for ro, not 'uf'"):
        calibrate_ro(log, good)
