"""Training without TensorBoard leaves no ``<tmp>/SB3-<date>`` folder; with it, only the tb folder.

Every test points ``tempfile`` at its own empty folder, so SB3's default logger (which creates
``tempfile.gettempdir()/SB3-...``) would show up there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stable_baselines3 import PPO

from app.training import sb3
from app.training.recipes import recipe_for


@pytest.fixture
def tmpdir_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(root))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    return root


def tiny_ppo() -> PPO:
    return PPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu"
    )


def sb3_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("SB3-*"))


def test_the_default_sb3_logger_would_leave_a_folder_in_tmp(tmpdir_root: Path) -> None:
    # The control: shows the fixture really catches what SB3 leaves behind.
    model = tiny_ppo()
    model.learn(64)
    assert len(sb3_folders(tmpdir_root)) == 1


def test_a_run_without_tensorboard_creates_no_folder(tmpdir_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    trained = sb3.run(recipe_for("ro"), "ppo", 256, 0, 1, work, tensorboard=False, checkpoints=0)
    assert trained.env_steps >= 256
    assert sb3_folders(tmpdir_root) == []
    assert trained.model.logger.get_dir() is None
    assert not (work / "tb").exists()


def test_a_run_with_tensorboard_writes_only_its_tb_folder(
    tmpdir_root: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    sb3.run(recipe_for("ro"), "ppo", 256, 0, 1, work, name="main", checkpoints=0)
    assert sb3_folders(tmpdir_root) == []
    events = list((work / "tb" / "main_1").glob("events.out.tfevents.*"))
    assert len(events) == 1


def test_a_silenced_model_stays_silent_over_continued_learn_calls(tmpdir_root: Path) -> None:
    # As the retrain fine-tune does: a warm-up learn, then one that continues the step count.
    model = tiny_ppo()
    sb3.silence_logger(model)
    silent = model.logger
    model.learn(64)
    model.learn(64, reset_num_timesteps=False, tb_log_name="again")
    assert model.logger is silent
    assert model.num_timesteps == 128
    assert sb3_folders(tmpdir_root) == []
