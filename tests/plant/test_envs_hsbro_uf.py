"""The generic environments (app.plant.envs) over the HSBRO and UF models."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from app.plant.catalog import CATALOGS
from app.plant.envs import EnvOptions, ProcessEnv, ProcessVecEnv
from app.plant.models.base import ProcessModel
from app.plant.models.hsbro import PURGE, HsbroModel
from app.plant.models.uf import UfModel
from app.plant.scenarios import RandomDisturbances

MODELS: dict[str, type[ProcessModel]] = {"hsbro": HsbroModel, "uf": UfModel}
OPTIONS = {
    "hsbro": EnvOptions(episode_hours=6.0, randomize=0.1),
    "uf": EnvOptions(episode_hours=7 * 24.0, randomize=0.1, sensor_noise=True),
}


def _env(process: str) -> ProcessEnv:
    return ProcessEnv(MODELS[process](1), RandomDisturbances(process), options=OPTIONS[process])


@pytest.mark.parametrize("process", sorted(MODELS))
def test_gymnasium_and_sb3_env_checkers_pass(process: str) -> None:
    gym_check_env(_env(process), skip_render_check=True)
    sb3_check_env(_env(process), warn=True)


@pytest.mark.parametrize("process", sorted(MODELS))
def test_action_and_observation_layout_follow_the_catalogue(process: str) -> None:
    env = _env(process)
    cat = CATALOGS[process]
    assert env.core_spec.setpoints == tuple(t.name for t in cat.setpoints)
    expected_commands = {
        "hsbro": ("end_semibatch_cmd", "end_process_cmd"),
        "uf": ("bw_request", "ceb_request", "cip_request"),
    }[process]
    assert env.core_spec.commands == expected_commands
    obs, info = env.reset(seed=3)
    assert obs.shape == (len(cat.observations) + len(cat.setpoints),)
    assert "hidden" in info


def test_hsbro_agent_can_switch_phase_and_purge() -> None:
    env = _env("hsbro")
    env.reset(seed=5)
    tags = env.observation_tags
    hold = np.zeros(env.core_spec.size, dtype=np.float32)
    hold[len(env.core_spec.setpoints) :] = -1.0  # no commands
    switch = hold.copy()
    switch[len(env.core_spec.setpoints)] = 1.0  # end_semibatch_cmd
    obs, *_ = env.step(switch)
    assert obs[tags.index("phase")] == 1.0
    phases = []
    for _ in range(20):
        obs, reward, terminated, _, info = env.step(hold)
        phases.append(obs[tags.index("phase")])
        assert np.isfinite(reward) and not terminated
    assert PURGE in phases and phases[-1] == 0.0
    assert info["hidden"]["cycles"] == 1.0


@pytest.mark.parametrize("process", sorted(MODELS))
def test_vectorised_env_steps_random_actions_with_auto_reset(process: str) -> None:
    n = 16
    venv = ProcessVecEnv(
        MODELS[process](n),
        RandomDisturbances(process),
        options=EnvOptions(episode_hours=3.0 if process == "hsbro" else 24.0),
    )
    venv.seed(11)
    obs_space, act_space = venv.observation_space, venv.action_space
    assert isinstance(obs_space, spaces.Box) and isinstance(act_space, spaces.Box)
    obs = np.asarray(venv.reset())
    assert obs.shape == (n, *obs_space.shape)
    rng = np.random.default_rng(0)
    dones = 0
    for _ in range(200 if process == "hsbro" else 60):
        actions = rng.uniform(-1.0, 1.0, (n, *act_space.shape))
        step_obs, reward, done, infos = venv.step(actions)
        obs = np.asarray(step_obs)
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
        assert np.all(obs_space.low <= obs) and np.all(obs <= obs_space.high)
        dones += int(done.sum())
        for i in np.flatnonzero(done):
            assert "terminal_observation" in infos[i]
    assert dones >= n  # every plant reached its time limit (or tripped) at least once


def test_hsbro_episode_ends_when_the_batch_is_finished() -> None:
    env = ProcessEnv(
        HsbroModel(1), RandomDisturbances("hsbro"), options=EnvOptions(episode_hours=48.0)
    )
    env.reset(seed=2)
    n_sp = len(env.core_spec.setpoints)
    for step in range(48 * 60):
        action = np.zeros(env.core_spec.size, dtype=np.float32)
        action[n_sp:] = -1.0
        action[n_sp + 1] = 1.0  # end_process_cmd: refused until the rinse tank runs low
        if step % 20 == 5:
            action[n_sp] = 1.0  # end_semibatch_cmd once per cycle
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated, "the batch never finished"
    assert not truncated
    assert info["trip_reason"] == ""
    assert info["hidden"]["finished"] == 1.0
    assert info["hidden"]["cycles"] >= 2
