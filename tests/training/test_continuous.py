"""intelwatt retrain end to end (small): outbox export → calibrated twin → fine-tune → gates →
signed candidate whose parent is the base; rejection leaves a report and no package."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.agent_runtime.keys import TrustStore
from app.agent_runtime.package import verify_package
from app.training.agent_policy import PackagePolicy
from app.training.continuous import (
    EXIT_OK,
    EXIT_USAGE,
    REPORT_JSON,
    REPORT_MD,
    RetrainConfig,
    retrain,
    run_retrain_cli,
)
from app.training.gates import GateThresholds
from app.training.plant_log import simulate_transitions, write_outbox
from app.training.train import TrainConfig, train
from tests.training.conftest import small_ro_base_recipe

REPO = Path(__file__).resolve().parents[2]
TRUST = REPO / "resources" / "trust"
HIDDEN = {
    "water_permeability_lmh_bar": 2.6,
    "salt_permeability_m_s": 8.0e-8,
    "fouling_rate_pa_s_m2": 6.75e8,
    "pump_efficiency": 0.68,
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning:stable_baselines3.*"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained base agent and four days of outbox records from a plant unlike the default."""
    root = tmp_path_factory.mktemp("retrain")
    cfg = TrainConfig(
        process="ro",
        recipe=small_ro_base_recipe(),
        out=root / "base",
        steps=512,
        n_envs=4,
        ensemble=0,
        eval_episodes=1,
        eval_days=0.25,
        baselines=("fixed_pi",),
        tensorboard=False,
        progress=False,
    )
    train(cfg, io.StringIO())
    agent = PackagePolicy.from_package(root / "base" / "package")
    records = simulate_transitions(
        "ro",
        REPO / "resources" / "scenarios" / "ro" / "ro_02_spring.csv",
        agent,
        days=4.0,
        params=HIDDEN,
        seed=3,
        agent=agent.fields.version,
    )
    write_outbox(records, root / "outbox.sqlite")
    return root


def _args(site: Path, out: Path, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(
        process="ro",
        data=str(site / "outbox.sqlite"),
        base=site / "base",
        out=out,
        steps=256,
        n_envs=4,
        gate_days=1.0,
        min_records=96,
        min_span_h=24.0,
        **extra,
    )


def test_outbox_export_to_a_signed_candidate(site: Path, tmp_path: Path) -> None:
    err = io.StringIO()
    # Actor frozen (docs/continuous-training.md §3: a few hundred PPO steps move a tiny agent at
    # random, which the gates refuse); the chain from the outbox to a signed package is the test.
    code = run_retrain_cli(_args(site, tmp_path / "cand", critic_warmup=1.0), err)
    log = err.getvalue()
    assert code == EXIT_OK, log
    pkg = verify_package(tmp_path / "cand" / "package", TrustStore.load(TRUST))
    base = verify_package(site / "base" / "package", TrustStore.load(TRUST)).manifest
    m = pkg.manifest
    assert m.parent_version == base.version and m.version.startswith(base.version + "-rt")
    assert m.observation_tags == base.observation_tags and m.action_tags == base.action_tags
    assert sorted(m.files) == ["policy.onnx", REPORT_JSON, REPORT_MD]
    params: Any = json.loads(json.dumps(m.metrics["calibration"]))["params"]
    assert params["water_permeability_lmh_bar"]["value"] == pytest.approx(2.6, rel=0.02)
    assert params["salt_permeability_m_s"]["value"] == pytest.approx(8.0e-8, rel=0.05)
    assert params["pump_efficiency"]["value"] == pytest.approx(0.68, rel=0.02)
    report = json.loads((tmp_path / "cand" / REPORT_JSON).read_text())
    assert report["verdict"] == "candidate" and report["gates"]["passed"]
    assert report["data"]["records"] == 192
    assert "## Calibration of the twin" in (tmp_path / "cand" / REPORT_MD).read_text()
    assert "4/5 gates" in log and "candidate " in log
    # The output folder is a valid base for the next retrain (weights, stats, summary).
    assert list((tmp_path / "cand" / "checkpoints").glob("main_*_steps.zip"))
    assert (tmp_path / "cand" / "vecnormalize.json").is_file()
    assert not list((tmp_path / "cand" / "package").rglob("*.zip"))


def test_rejected_candidate_leaves_a_report_and_no_package(site: Path, tmp_path: Path) -> None:
    cfg = RetrainConfig(
        process="ro",
        data=str(site / "outbox.sqlite"),
        base=site / "base",
        out=tmp_path / "cand",
        steps=256,
        n_envs=4,
        gate_days=1.0,
        # A site policy demanding a 50 % cost reduction: no 256-step fine-tune achieves that.
        thresholds=GateThresholds(max_cost_regression=-0.5),
    )
    outcome = retrain(cfg, io.StringIO())
    assert not outcome.passed and outcome.package is None
    assert not (tmp_path / "cand" / "package").exists()
    report = json.loads((tmp_path / "cand" / REPORT_JSON).read_text())
    assert report["verdict"] == "rejected"
    failed = [c["name"] for c in report["gates"]["checks"] if not c["passed"]]
    assert "cost per m³ vs incumbent (twin)" in failed


def test_bad_inputs_exit_2_naming_the_culprit(site: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(site / "base" / "package", bare / "package")
    err = io.StringIO()
    args = _args(site, tmp_path / "o1")
    args.base = bare
    assert run_retrain_cli(args, err) == EXIT_USAGE
    assert "no checkpoints/main_*_steps.zip; packages hold ONNX only" in err.getvalue()
    err = io.StringIO()
    args = _args(site, tmp_path / "o2")
    args.min_records = 500
    assert run_retrain_cli(args, err) == EXIT_USAGE
    assert "only 192 usable records of 192 (need 500" in err.getvalue()
    err = io.StringIO()
    args = _args(site, tmp_path / "o3")
    args.data = str(tmp_path / "missing.sqlite")
    assert run_retrain_cli(args, err) == EXIT_USAGE
    assert "missing.sqlite: no such file" in err.getvalue()
