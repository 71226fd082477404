"""intelwatt train: a tiny real training run → signed package; tampering; ONNX parity; eval."""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.agent_runtime.errors import PackageRefused
from app.agent_runtime.keys import TrustStore, generate_key_pair, load_private_key
from app.agent_runtime.manifest import ManifestFields
from app.agent_runtime.package import verify_package, write_package
from app.training.evaluate import run_cli
from app.training.train import PACKAGE_DIR, TrainConfig, run_train_cli, train

REPO = Path(__file__).resolve().parents[2]
TRUST = REPO / "resources" / "trust"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:stable_baselines3.*")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PPO run of a few seconds: 1 member, evaluated on one short held-out episode."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    cfg = TrainConfig(
        process="ro",
        out=out,
        steps=512,
        n_envs=4,
        ensemble=1,
        member_fraction=0.5,
        eval_episodes=1,
        eval_days=0.25,
        baselines=("fixed_pi",),
        tensorboard=False,
        progress=False,
    )
    train(cfg, io.StringIO())
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.slow
def test_tiny_run_writes_a_package_the_dev_trust_store_accepts(tiny_run: Path) -> None:
    pkg = verify_package(tiny_run / PACKAGE_DIR, TrustStore.load(TRUST))
    m = pkg.manifest
    assert m.process == "ro"
    assert sorted(m.files) == ["ensemble/member_00.onnx", "policy.onnx", "report.md"]
    assert m.observation_tags[-2:] == ("feed_pressure_sp_bar", "feed_flow_sp_m3h")
    assert m.action_tags == ("feed_pressure_sp_bar", "feed_flow_sp_m3h", "cip_request")
    assert (m.actions[0].low, m.actions[0].high) == (5.0, 40.0)
    assert len(m.normalisation.mean) == len(m.observations)
    assert all(
        lo <= hi
        for lo, hi in zip(m.normalisation.train_low, m.normalisation.train_high, strict=True)
    )
    parity = m.metrics["onnx_parity"]
    assert isinstance(parity, dict) and parity["samples"] == 1000
    assert parity["max_abs_action"] <= 1e-5 and parity["command_mismatches"] == 0
    evaluation = m.metrics["evaluation"]
    assert isinstance(evaluation, dict)
    assert set(evaluation["summary"]) == {f"agent:{m.version}", "baseline:fixed_pi"}
    assert "baseline:fixed_pi" in (tiny_run / PACKAGE_DIR / "report.md").read_text()
    # Training artefacts stay outside the package; statistics are JSON, not pickle.
    assert (tiny_run / "vecnormalize.json").is_file() and (tiny_run / "train.json").is_file()
    assert not list((tiny_run / PACKAGE_DIR).rglob("*.zip"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["manifest.json", "manifest.sig", "policy.onnx", "ensemble/member_00.onnx", "report.md"]
)
def test_tampering_with_any_file_is_refused(tiny_run: Path, tmp_path: Path, name: str) -> None:
    pkg = _copy(tiny_run / PACKAGE_DIR, tmp_path / "pkg")
    target = pkg / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(PackageRefused):
        verify_package(pkg, TrustStore.load(TRUST))


@pytest.mark.slow
def test_an_added_file_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    pkg = _copy(tiny_run / PACKAGE_DIR, tmp_path / "pkg")
    (pkg / "ensemble" / "member_99.onnx").write_bytes((pkg / "policy.onnx").read_bytes())
    with pytest.raises(PackageRefused, match="member_99"):
        verify_package(pkg, TrustStore.load(TRUST))


def _eval(policies: list[str]) -> tuple[int, str, str]:
    args = argparse.Namespace(
        process="ro", policy=policies, scenarios=None, episodes=1, json=False, seed=0, days=0.25
    )
    out, err = io.StringIO(), io.StringIO()
    return run_cli(args, out=out, err=err), out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_eval_runs_the_package_and_the_training_folder(tiny_run: Path) -> None:
    rc, out, err = _eval([str(tiny_run / PACKAGE_DIR), str(tiny_run), "baseline:fixed_pi"])
    assert rc == 0, err
    header = out.splitlines()[1]
    assert str(tiny_run / PACKAGE_DIR) in header and "baseline:fixed_pi" in header
    # Same package twice, same scenarios: identical rows.
    for line in out.splitlines()[3:]:
        cells = [c for c in line.split("  ") if c.strip()]
        assert cells[1].strip() == cells[2].strip(), line


@pytest.mark.slow
def test_eval_refuses_a_package_signed_by_an_untrusted_key(tiny_run: Path, tmp_path: Path) -> None:
    good = verify_package(tiny_run / PACKAGE_DIR, TrustStore.load(TRUST))
    pair = generate_key_pair(tmp_path / "keys", "stranger")
    fields = ManifestFields.model_validate(
        good.manifest.model_dump(exclude={"files"}), strict=False
    )
    write_package(
        tmp_path / "foreign",
        fields,
        good.policy,
        load_private_key(pair.private_path),
        ensemble=list(good.ensemble.values()),
    )
    rc, out, err = _eval([str(tmp_path / "foreign")])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "refused" in err and "key" in err


@pytest.mark.slow
def test_eval_refuses_a_package_of_another_process(tiny_run: Path) -> None:
    args = argparse.Namespace(
        process="uf",
        policy=[str(tiny_run)],
        scenarios=None,
        episodes=1,
        json=False,
        seed=0,
        days=0.1,
    )
    err = io.StringIO()
    assert run_cli(args, out=io.StringIO(), err=err) == 2
    assert "for process 'ro', not 'uf'" in err.getvalue()


def _train_args(tmp_path: Path, **kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"process": "ro", "out": tmp_path / "run", "steps": 100, "seed": 0}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"process": "md"}, "--process 'md'"),
        ({"steps": 0}, "--steps must be at least 1"),
        ({"algo": "dqn"}, "--algo must be ppo or sac"),
        ({"n_envs": 0}, "--n-envs"),
        ({"ensemble": -1}, "--ensemble"),
        ({"key": Path("/nonexistent/key.pem")}, "--key"),
        ({"eval_days": -1.0}, "--eval-days"),
        ({"baselines": ["nonsense"]}, "--baselines"),
    ],
)
def test_bad_train_input_is_one_line_and_exit_code_2(
    tmp_path: Path, kw: dict[str, object], message: str
) -> None:
    err = io.StringIO()
    assert run_train_cli(_train_args(tmp_path, **kw), err=err) == 2
    text = err.getvalue()
    assert text.count("\n") == 1 and message in text, text
    assert not (tmp_path / "run").exists()


def test_an_existing_package_is_never_overwritten(tmp_path: Path) -> None:
    pkg = tmp_path / "run" / PACKAGE_DIR
    pkg.mkdir(parents=True)
    (pkg / "manifest.json").write_text("{}")
    err = io.StringIO()
    assert run_train_cli(_train_args(tmp_path), err=err) == 2
    assert "already holds a package" in err.getvalue()
    assert (pkg / "manifest.json").read_text() == "{}"


@pytest.mark.slow
def test_intervals_between_commands_are_kept_in_eval(tiny_run: Path) -> None:
    from app.agent_runtime.ensemble import EnsemblePolicy
    from app.training.agent_policy import PackagePolicy

    pkg = verify_package(tiny_run / PACKAGE_DIR, TrustStore.load(TRUST))
    policy = PackagePolicy(pkg.manifest, EnsemblePolicy.from_package(pkg), "agent")

    class AlwaysClean:
        def act(self, obs: object) -> object:
            from app.agent_runtime.ensemble import EnsembleAction

            a = np.array([12.0, 40.0, 1.0])
            return EnsembleAction(a, 0.0, None, a.reshape(1, -1))

    policy.ensemble = AlwaysClean()  # type: ignore[assignment]
    policy.reset(1, np.random.default_rng(0))
    meas = {s.tag: np.array([0.5 * (s.low + s.high)]) for s in pkg.manifest.observations}
    hour = 3600.0
    requests = [policy.act(meas, k * hour, hour)["cip_request"][0] for k in range(0, 100)]
    # Trained with a 48 h minimum interval: requests at 0 h, 48 h and 96 h only.
    assert [k for k, r in enumerate(requests) if r > 0.5] == [0, 48, 96]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_onnx_matches_sb3_predict_on_1000_observations(tmp_path: Path, algo: str) -> None:
    import onnxruntime as ort

    from app.plant.actions import ActionSpec
    from app.plant.catalog import CATALOGS
    from app.training import sb3
    from app.training.export import GraphSpec, export_onnx, parity, random_observations
    from app.training.recipes import recipe_for
    from app.training.train import hold_tags

    recipe = recipe_for("ro")
    trained = sb3.run(recipe, algo, 256, 3, 4, tmp_path, tensorboard=False, checkpoints=0)
    cat = CATALOGS["ro"]
    action = ActionSpec.from_catalog(cat, cat.agent_period_s)
    box = trained.model.observation_space
    tags = tuple(t.name for t in cat.observations) + action.setpoints
    spec = GraphSpec.from_env(tags, box.low, box.high, hold_tags("ro"), action)  # type: ignore[attr-defined]
    onnx = export_onnx(trained.model.policy, trained.stats, spec, len(tags))
    obs = random_observations(spec, 1000, np.random.default_rng(11))
    report = parity(trained.model, onnx, trained.stats, spec, obs)
    assert report.n == 1000
    assert report.max_abs_action <= 1e-5
    assert report.max_abs_setpoint <= 1e-4
    assert report.command_mismatches == 0

    # The graph's own guarantees: PLC limits, per-step limit, hold, 0/1 commands.
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(["action"], {"obs": obs[i : i + 1]})[0] for i in range(200)])
    sp, cmd = out[:, :2], out[:, 2]
    assert np.all(sp >= action.low - 1e-4) and np.all(sp <= action.high + 1e-4)
    readback = obs[:200, [tags.index(s) for s in action.setpoints]]
    assert np.all(np.abs(sp - readback) <= action.max_step + 1e-4)
    held = obs[:200, tags.index("cip_active")] > 0.5
    assert held.any() and np.allclose(sp[held], readback[held]) and np.all(cmd[held] == 0.0)
    assert set(np.unique(cmd)) <= {0.0, 1.0}
