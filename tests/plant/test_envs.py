"""Gymnasium / SB3 environments (app.plant.envs) and action decoding (app.plant.actions)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from app.plant.actions import ActionSpec, decode_action
from app.plant.catalog import RO_CATALOG
from app.plant.economics import prices_for
from app.plant.envs import EnvOptions, ProcessEnv, ProcessVecEnv
from app.plant.models.base import ConstantDisturbances, DisturbanceSource, FloatArray
from app.plant.models.ro import RoModel

FEED = {"feed_tds_gl": 2.0, "feed_temperature_c": 20.0, "demand_m3h": 20.0}


def _env(**options: object) -> ProcessEnv:
    return ProcessEnv(RoModel(1), ConstantDisturbances(FEED), options=EnvOptions(**options))  # type: ignore[arg-type]


def _vec(n: int, source: DisturbanceSource | None = None, **options: object) -> ProcessVecEnv:
    return ProcessVecEnv(
        RoModel(n),
        source or ConstantDisturbances(FEED),
        options=EnvOptions(**options),  # type: ignore[arg-type]
    )


def test_single_env_passes_the_gymnasium_and_sb3_checkers() -> None:
    env = _env(episode_hours=12.0, sensor_noise=True, randomize=0.2)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def test_observation_is_catalogue_observations_then_setpoint_readbacks() -> None:
    env = _env()
    expected = [t.name for t in RO_CATALOG.observations] + [t.name for t in RO_CATALOG.setpoints]
    assert list(env.observation_tags) == expected
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (len(expected),)
    tags = dict(zip(expected, obs, strict=True))
    assert tags["feed_pressure_sp_bar"] == RO_CATALOG.tag("feed_pressure_sp_bar").base_value
    assert tags["feed_flow_m3h"] == pytest.approx(40.0, rel=1e-3)
    assert "fouling_ratio" in info["hidden"]
    assert env.action_space.shape == (3,)  # two setpoints and the CIP request


def test_vec_env_equals_n_single_envs_for_the_same_seeds() -> None:
    n, seed, steps = 4, 11, 30
    opts = {"episode_hours": 7.0, "sensor_noise": True}
    rng = np.random.default_rng(5)
    actions = rng.uniform(-1.0, 1.0, (steps, n, 3)).astype(np.float32)
    vec = _vec(n, **opts)
    vec.seed(seed)
    vec_obs = [vec.reset()]
    vec_rew, vec_done = [], []
    for k in range(steps):
        obs, rew, done, infos = vec.step(actions[k])
        vec_obs.append(obs)
        vec_rew.append(rew)
        vec_done.append(done)
        for i in np.flatnonzero(done):
            assert "terminal_observation" in infos[i]
    assert np.array(vec_done).sum() >= n  # at least one auto-reset per plant
    for i in range(n):
        env = _env(**opts)
        obs, _ = env.reset(seed=seed + i)
        np.testing.assert_allclose(obs, vec_obs[0][i], rtol=1e-6)
        for k in range(steps):
            obs, rew, term, trunc, _ = env.step(actions[k, i])
            assert (term or trunc) == vec_done[k][i]
            assert rew == pytest.approx(float(vec_rew[k][i]), rel=1e-5, abs=1e-6)
            if term or trunc:
                obs, _ = env.reset()
            np.testing.assert_allclose(obs, vec_obs[k + 1][i], rtol=1e-6)


class _OrpSpike(DisturbanceSource):
    """Nominal feed, but plant ``victim`` sees an oxidant breakthrough from ``at_s`` on."""

    def __init__(self, victim: int, at_s: float) -> None:
        self.victim, self.at_s = victim, at_s

    def reset(self, n: int, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        self.n = n

    def at(self, t_s: FloatArray) -> dict[str, FloatArray]:
        t = np.asarray(t_s)
        orp = np.full(t.shape, 200.0)
        orp[self.victim] = np.where(t[self.victim] >= self.at_s, 600.0, 200.0)
        return {**{k: np.full(t.shape, v) for k, v in FEED.items()}, "feed_orp_mv": orp}


def test_trip_terminates_one_plant_with_a_penalty_and_resets_only_it() -> None:
    n, period = 3, RO_CATALOG.agent_period_s
    hold = np.zeros((n, 3), dtype=np.float32)
    spiked = _vec(n, _OrpSpike(victim=1, at_s=3 * period))
    calm = _vec(n, _OrpSpike(victim=1, at_s=1e12))
    for env in (spiked, calm):
        env.seed(0)
        env.reset()
    first = spiked.reset().copy()
    calm.reset()
    for k in range(6):
        obs, rew, done, infos = spiked.step(hold)
        calm_obs, calm_rew, _, _ = calm.step(hold)
        if k == 3:
            assert done.tolist() == [False, True, False]
            assert infos[1]["TimeLimit.truncated"] is False
            assert spiked.last is not None and spiked.last.result.trip_reason[1] == "feed_orp"
            assert rew[1] < calm_rew[1] - prices_for("ro").trip_penalty + 1.0
            np.testing.assert_array_equal(obs[1], first[1])  # fresh episode
            assert (
                infos[1]["terminal_observation"][
                    list(spiked.observation_tags).index("feed_flow_m3h")
                ]
                == 0.0
            )  # the tripped plant had stopped
        else:
            assert not done.any()
        # The other plants never notice.
        np.testing.assert_array_equal(obs[[0, 2]], calm_obs[[0, 2]])
        np.testing.assert_array_equal(rew[[0, 2]], calm_rew[[0, 2]])


def test_time_limit_truncates_with_the_terminal_fouling_value() -> None:
    env = _env(episode_hours=2.0)
    env.reset(seed=1)
    hold = np.zeros(3, dtype=np.float32)
    rewards, infos = [], []
    for _ in range(4):
        _, r, term, trunc, info = env.step(hold)
        rewards.append(r)
        infos.append(info)
    assert trunc and not term
    prices = prices_for("ro")
    dt_h = RO_CATALOG.agent_period_s / 3600.0
    expected = (
        -prices.terminal_state_eur
        * infos[-1]["hidden"]["fouling_ratio"]
        / (prices.reward_scale_eur_h * dt_h)
    )
    assert expected < 0
    assert rewards[-1] - rewards[-2] == pytest.approx(expected, rel=0.05)


def test_cip_requests_respect_the_minimum_interval() -> None:
    env = _env(episode_hours=200.0, min_command_interval_h={"cip_request": 24.0})
    env.reset(seed=2)
    clean = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    started = []
    refused = 0.0
    for _ in range(100):  # 50 h
        _, _, _, _, info = env.step(clean)
        started.append(info["cleanings"]["cip"])
        refused += info["interventions"]["interlock"]
    starts = np.flatnonzero(np.array(started) > 0)
    assert starts.tolist() == [0, 48, 96]
    assert refused > 50


@pytest.mark.slow
def test_ppo_trains_a_few_steps_on_the_vec_env() -> None:
    from stable_baselines3 import PPO

    vec = _vec(8, episode_hours=3.0)
    model = PPO("MlpPolicy", vec, n_steps=8, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    action, _ = model.predict(vec.reset(), deterministic=True)
    assert action.shape == (8, 3)


SPEC = ActionSpec.from_catalog(RO_CATALOG, RO_CATALOG.agent_period_s)


def test_action_spec_of_ro() -> None:
    assert SPEC.setpoints == ("feed_pressure_sp_bar", "feed_flow_sp_m3h")
    assert SPEC.commands == ("cip_request",)
    np.testing.assert_array_equal(SPEC.max_move, [1.0, 4.0])
    np.testing.assert_array_equal(SPEC.max_step, [1.0, 4.0])  # ramps allow more per 30 min
    short = ActionSpec.from_catalog(RO_CATALOG, 1.0)  # PLC ramps: 0.7 bar/s, 0.5 m³/h/s
    np.testing.assert_allclose(short.max_step, [0.7, 0.5])


def test_decode_clips_then_rate_limits_then_interlocks() -> None:
    cur = np.array([[39.5, 40.0], [12.0, 40.0], [12.0, 40.0], [12.0, 40.0]])
    act = np.array(
        [
            [1.0, 0.0, 0.0],  # +1 bar → 40.5, clipped to 40
            [3.0, -2.0, 0.0],  # beyond the box: +3 bar → rate-limited to +1, −8 m³/h → −4
            [1.0, 1.0, 1.0],  # held (CIP running): nothing moves, CIP refused
            [-0.5, 0.25, 1.0],  # normal move and a CIP request
        ]
    )
    hold = np.array([False, False, True, False])
    dec = decode_action(act, cur, SPEC, hold=hold)
    np.testing.assert_allclose(
        dec.setpoints, [[40.0, 40.0], [13.0, 36.0], [12.0, 40.0], [11.5, 41.0]]
    )
    np.testing.assert_array_equal(dec.commands[:, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(dec.clipped, [1, 0, 0, 0])
    np.testing.assert_array_equal(dec.rate_limited, [0, 2, 0, 0])
    np.testing.assert_array_equal(dec.interlocked, [0, 0, 3, 0])
    np.testing.assert_allclose(dec.moves[3], [-0.5, 0.25])


def test_decode_refuses_commands_inside_the_interval_and_bad_input() -> None:
    dec = decode_action([0.0, 0.0, 0.9], [12.0, 40.0], SPEC, command_allowed=[[False]])
    assert dec.commands[0, 0] == 0.0 and dec.interlocked[0] == 1.0
    with pytest.raises(ValueError, match="3 columns"):
        decode_action([0.0, 0.0], [12.0, 40.0], SPEC)
    with pytest.raises(ValueError, match="NaN"):
        decode_action([np.nan, 0.0, 0.0], [12.0, 40.0], SPEC)


def test_env_options_are_validated() -> None:
    with pytest.raises(ValueError, match="randomize"):
        EnvOptions(randomize=1.5)
    with pytest.raises(ValueError, match="episode_hours"):
        EnvOptions(episode_hours=0.0)
    with pytest.raises(ValueError, match="one plant"):
        ProcessEnv(RoModel(2), ConstantDisturbances(FEED))


def _rollout(seed: int, opts: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
    env = _env(**opts)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace, rewards = [obs], []
    for _ in range(20):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        trace.append(obs)
        rewards.append(r)
        if term or trunc:
            obs, _ = env.reset()
    return np.array(trace), np.array(rewards)


def test_same_seed_same_trajectory_with_noise_and_randomisation() -> None:
    opts = {"episode_hours": 4.0, "sensor_noise": True, "randomize": 0.2}
    a, ra = _rollout(3, opts)
    b, rb = _rollout(3, opts)
    c, _ = _rollout(4, opts)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)
    assert not np.array_equal(a, c)
