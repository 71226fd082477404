"""The training environment: ``ProcessVecEnv`` with random disturbances, guidelines, normalisation.

Stack (inside out): :class:`app.plant.envs.ProcessVecEnv` (all plants stepped as arrays, random
disturbance series, ±20 % parameter randomisation, sensor noise) → the residual rule (HSBRO,
:class:`app.training.residual.ResidualRuleEnv`) → :class:`GuidelinePenalty`
(design rules the model does not enforce) → ``VecMonitor`` (episode returns for the logs) →
``VecNormalize`` (observation and reward normalisation; its observation statistics are exported as
JSON and baked into the ONNX graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from app.plant.actions import ActionSpec
from app.plant.catalog import CATALOGS
from app.plant.economics import prices_for
from app.plant.envs import EnvOptions, ProcessVecEnv
from app.plant.scenarios import RandomDisturbances
from app.training.evaluate import model_class
from app.training.recipes import Guideline, Recipe
from app.training.residual import OFFSPEC_PENALTY, ResidualRuleEnv, rule_for


class GuidelinePenalty(VecEnvWrapper):
    """Subtracts ``weight × relative violation`` of each guideline from the reward.

    The violation is read from the observation after the step (for a finished episode, from its
    terminal observation). Per-step sums are kept in :attr:`violation_steps` for logging.

    Args:
        venv: The environment (its observation tags name the columns).
        tags: Observation tag of each column.
        guidelines: Rules to apply.

    Raises:
        ValueError: A guideline names a tag that is not observed.
    """

    def __init__(
        self, venv: VecEnv, tags: tuple[str, ...], guidelines: tuple[Guideline, ...]
    ) -> None:
        super().__init__(venv)
        index = {t: i for i, t in enumerate(tags)}
        for g in guidelines:
            for tag in (g.tag, g.active_tag):
                if tag not in index:
                    raise ValueError(f"guideline on {tag!r}: not an observation of this process")
        self.guidelines = guidelines
        self._col = [index[g.tag] for g in guidelines]
        self._active = [index[g.active_tag] for g in guidelines]
        self.violation_steps = 0
        self.steps = 0

    def reset(self) -> VecEnvObs:
        """Reset the wrapped environment."""
        return self.venv.reset()

    def penalty(self, obs: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """Penalty per plant for observations ``obs`` (n, n_obs)."""
        x = np.asarray(obs, dtype=np.float64)
        total = np.zeros(x.shape[0])
        for g, col, act in zip(self.guidelines, self._col, self._active, strict=True):
            v = x[:, col]
            rel = np.zeros_like(v)
            if g.low is not None:
                rel += np.maximum(g.low - v, 0.0) / abs(g.low)
            if g.high is not None:
                rel += np.maximum(v - g.high, 0.0) / abs(g.high)
            total += g.weight * np.where(x[:, act] > g.active_above, rel, 0.0)
        return total

    def step_wait(self) -> VecEnvStepReturn:
        """Step and subtract the guideline penalty."""
        obs, reward, done, infos = self.venv.step_wait()
        after = np.array(obs, dtype=np.float64, copy=True)
        for i in np.flatnonzero(done):
            terminal = infos[i].get("terminal_observation")
            if terminal is not None:
                after[i] = terminal
        pen = self.penalty(after)
        self.violation_steps += int((pen > 0).sum())
        self.steps += pen.size
        return obs, (reward - pen).astype(np.float32), done, infos


class DemandBaseline(VecEnvWrapper):
    """Subtracts the value of the step's demand, ``demand · water price / reward scale``.

    Demand is exogenous (no action changes it), so this removes variance from the return without
    changing which policy is optimal.

    Args:
        venv: The wrapped environment.
        raw: The ``ProcessVecEnv`` underneath (its last step holds the disturbances).
        process: Process name (its price set).
    """

    def __init__(self, venv: VecEnv, raw: ProcessVecEnv, process: str) -> None:
        super().__init__(venv)
        self.raw = raw
        prices = prices_for(process)
        self.scale = prices.water_eur_m3 / prices.reward_scale_eur_h

    def reset(self) -> VecEnvObs:
        """Reset the wrapped environment."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Step and subtract the demand's value."""
        obs, reward, done, infos = self.venv.step_wait()
        last = self.raw.last
        if last is not None and "demand_m3h" in last.disturbances:
            reward = reward - self.scale * last.disturbances["demand_m3h"]
        return obs, np.asarray(reward, dtype=np.float32), done, infos


class TripPenalty(VecEnvWrapper):
    """Subtracts ``penalty`` from the reward of every step that ends in a hard trip.

    Args:
        venv: The wrapped environment.
        raw: The ``ProcessVecEnv`` underneath (its last step says which plants tripped).
        penalty: Reward units per trip, on top of the price set's ``trip_penalty``.
    """

    def __init__(self, venv: VecEnv, raw: ProcessVecEnv, penalty: float) -> None:
        super().__init__(venv)
        self.raw = raw
        self.penalty = penalty

    def reset(self) -> VecEnvObs:
        """Reset the wrapped environment."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Step and subtract the extra trip penalty."""
        obs, reward, done, infos = self.venv.step_wait()
        last = self.raw.last
        if last is not None:
            reward = reward - self.penalty * last.terminated
        return obs, np.asarray(reward, dtype=np.float32), done, infos


class ProductionTarget(VecEnvWrapper):
    """Values net production only up to a target rate (training reward only).

    Per plant the wrapper keeps the cumulative shortfall ``D = target·t − V_net`` since the episode
    started. The water value the environment paid is replaced by the value of ``min(V_net,
    target·t)`` (its increase each step: the target's water value minus the increase of
    ``max(D, 0)``), and the increase of ``max(D, 0)`` is charged at ``shortfall_eur_m3`` on top.
    So production beyond the target is worth nothing, a shortfall costs water value plus penalty
    (a backwash's lost minutes can be made up later: the terms telescope over the episode), and a
    running plant still earns the target's value each step, so a trip that ends the episode
    early never pays.

    Args:
        venv: The wrapped environment.
        raw: The ``ProcessVecEnv`` underneath (its last step holds product and water value).
        process: Process name (its price set).
        target_m3h: Net production rate to reach.
        shortfall_eur_m3: Penalty per m³ below the target, on top of the water value.
    """

    def __init__(
        self,
        venv: VecEnv,
        raw: ProcessVecEnv,
        process: str,
        target_m3h: float,
        shortfall_eur_m3: float,
    ) -> None:
        super().__init__(venv)
        if not (target_m3h > 0 and shortfall_eur_m3 > 0):
            raise ValueError(
                f"production target {target_m3h} m³/h and shortfall price {shortfall_eur_m3} "
                "must be positive"
            )
        self.raw = raw
        prices = prices_for(process)
        self.scale = prices.reward_scale_eur_h
        self.water = prices.water_eur_m3
        self.target_m3h = target_m3h
        self.price = shortfall_eur_m3
        self.dt_h = CATALOGS[process].agent_period_s / 3600.0
        self.deficit = np.zeros(venv.num_envs)

    def reset(self) -> VecEnvObs:
        """Reset the wrapped environment and the shortfall."""
        self.deficit[:] = 0.0
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Step and revalue the water: up to the target, minus the shortfall's increase."""
        obs, reward, done, infos = self.venv.step_wait()
        last = self.raw.last
        if last is None:
            return obs, reward, done, infos
        dt_h = self.dt_h
        before = np.maximum(self.deficit, 0.0)
        self.deficit = self.deficit + self.target_m3h * dt_h - np.asarray(last.result.product_m3)
        grown = np.maximum(self.deficit, 0.0) - before
        valued = self.water * self.target_m3h * dt_h - (self.water + self.price) * grown
        out = reward + (valued - np.asarray(last.value_eur)) / (self.scale * dt_h)
        self.deficit = np.where(done, 0.0, self.deficit)
        return obs, np.asarray(out, dtype=np.float32), done, infos


def make_vec_env(
    recipe: Recipe, n_envs: int, seed: int, *, norm_reward: bool = True, gamma: float = 0.99
) -> tuple[VecNormalize, ProcessVecEnv]:
    """The normalised training environment and the raw ``ProcessVecEnv`` under it.

    Args:
        recipe: Process recipe (episode length, randomisation, guidelines, command intervals).
        n_envs: Number of plants.
        seed: Seeds parameters, disturbances and sensor noise.
        norm_reward: Normalise rewards by the running return's standard deviation.
        gamma: Discount used by the reward normalisation (the algorithm's).
    """
    model = model_class(recipe.process)(n_envs)
    options = EnvOptions(
        episode_hours=recipe.episode_hours,
        randomize=recipe.randomize,
        sensor_noise=True,
        min_command_interval_h=dict(recipe.min_command_interval_h),
    )
    raw = ProcessVecEnv(model, RandomDisturbances(recipe.process), options=options)
    raw.seed(seed)
    env: VecEnv = raw
    if recipe.residual_rule:
        cat = CATALOGS[recipe.process]
        spec = ActionSpec.from_catalog(cat, cat.agent_period_s)
        penalty = OFFSPEC_PENALTY if recipe.process == "hsbro" else 0.0
        env = ResidualRuleEnv(
            env,
            raw.observation_tags,
            spec,
            rule_for(recipe.process),
            raw=raw,
            offspec_penalty=penalty,
        )
    if recipe.guidelines:
        env = GuidelinePenalty(env, raw.observation_tags, recipe.guidelines)
    if recipe.demand_baseline:
        env = DemandBaseline(env, raw, recipe.process)
    if recipe.extra_trip_penalty > 0:
        env = TripPenalty(env, raw, recipe.extra_trip_penalty)
    if recipe.production_target_m3h is not None:
        env = ProductionTarget(
            env, raw, recipe.process, recipe.production_target_m3h, recipe.shortfall_eur_m3
        )
    env = VecMonitor(env)
    return VecNormalize(env, norm_obs=True, norm_reward=norm_reward, gamma=gamma), raw
