"""Stable-Baselines3 runs: the main policy and the ensemble members (torch/SB3 live here only).

Members are the cheaper ensemble variant: each starts from the trained main policy (weights and
normalisation statistics) and continues training for a fraction of the steps with its own seed,
so members agree where the training data was dense and drift apart where it was not.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecNormalize

from app.training.export import NormStats, vecnorm_stats
from app.training.recipes import Recipe
from app.training.vec import GuidelinePenalty, make_vec_env

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}


class ObservationRange(BaseCallback):
    """Tracks the smallest and largest raw observation seen in training (for the OOD range)."""

    def __init__(self, vec_normalize: VecNormalize) -> None:
        super().__init__()
        self.vec_normalize = vec_normalize
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def _on_step(self) -> bool:
        obs = np.asarray(self.vec_normalize.get_original_obs(), dtype=np.float64)
        lo, hi = obs.min(axis=0), obs.max(axis=0)
        self.low = lo if self.low is None else np.minimum(self.low, lo)
        self.high = hi if self.high is None else np.maximum(self.high, hi)
        return True


@dataclass(slots=True)
class TrainedPolicy:
    """One trained policy and what the export needs.

    Attributes:
        model: The SB3 algorithm (its ``policy`` is exported).
        stats: VecNormalize observation statistics (frozen at the end of training).
        obs_low: Smallest raw observation seen.
        obs_high: Largest raw observation seen.
        env_steps: Environment steps of this run.
        seconds: Wall time of ``learn``.
        guideline_violation_pct: Share of steps with a guideline penalty (last run).
        seed: Seed of the run.
    """

    model: BaseAlgorithm
    stats: NormStats
    obs_low: np.ndarray
    obs_high: np.ndarray
    env_steps: int
    seconds: float
    guideline_violation_pct: float
    seed: int


def algo_kwargs(recipe: Recipe, algo: str, n_envs: int) -> dict[str, Any]:
    """Keyword arguments of the SB3 constructor for ``algo`` under ``recipe``."""
    arch = list(recipe.net_arch)
    if algo == "ppo":
        kwargs = dict(recipe.ppo)
        batch = kwargs["n_steps"] * n_envs
        kwargs["batch_size"] = min(kwargs["batch_size"], batch)
        kwargs["policy_kwargs"] = {
            "net_arch": {"pi": arch, "vf": arch},
            "log_std_init": recipe.log_std_init,
        }
        return kwargs
    kwargs = dict(recipe.sac)
    kwargs["policy_kwargs"] = {"net_arch": {"pi": arch, "qf": arch}}
    return kwargs


def run(
    recipe: Recipe,
    algo: str,
    steps: int,
    seed: int,
    n_envs: int,
    workdir: Path,
    *,
    name: str = "main",
    start_from: TrainedPolicy | None = None,
    tensorboard: bool = True,
    progress: bool = False,
    checkpoints: int = 4,
) -> TrainedPolicy:
    """Train one policy (from scratch, or continuing ``start_from`` with a new seed).

    Args:
        recipe: Process recipe.
        algo: ``ppo`` or ``sac``.
        steps: Environment steps.
        seed: Seed of the environment, the network initialisation and the sampling.
        n_envs: Plants in the vectorised environment.
        workdir: Training folder (``tb/`` and ``checkpoints/`` go here, never into the package).
        name: Run name (TensorBoard, checkpoints).
        start_from: Continue this policy's weights and normalisation statistics.
        tensorboard: Write TensorBoard logs under ``workdir/tb``.
        progress: Show the tqdm/rich progress bar.
        checkpoints: SB3 checkpoints to keep over the run (0: none).
    """
    cls = ALGORITHMS[algo]
    kwargs = algo_kwargs(recipe, algo, n_envs)
    env, raw = make_vec_env(recipe, n_envs, seed, gamma=float(kwargs["gamma"]))
    if start_from is not None:
        src = start_from.model.get_env()
        if isinstance(src, VecNormalize):
            env.obs_rms = copy.deepcopy(src.obs_rms)
            env.ret_rms = copy.deepcopy(src.ret_rms)
    tb = str(workdir / "tb") if tensorboard else None
    model = cls("MlpPolicy", env, seed=seed, verbose=0, tensorboard_log=tb, device="cpu", **kwargs)
    if tb is None:
        silence_logger(model)
    if start_from is not None:
        model.policy.load_state_dict(start_from.model.policy.state_dict())
    elif recipe.residual_rule:
        zero_residual(model)
    else:
        bias_commands(model, recipe)
    ranges = ObservationRange(env)
    callbacks: list[BaseCallback] = [ranges]
    if checkpoints > 0:
        every = max(steps // (checkpoints * n_envs), 1)
        callbacks.append(
            CheckpointCallback(every, str(workdir / "checkpoints"), name_prefix=name, verbose=0)
        )
    guide = _find_guideline(env)
    before = (guide.violation_steps, guide.steps) if guide is not None else (0, 0)
    started = time.perf_counter()
    try:
        model.learn(
            total_timesteps=steps,
            callback=CallbackList(callbacks),
            tb_log_name=name,
            progress_bar=progress,
        )
    finally:
        model.logger.close()
    seconds = time.perf_counter() - started
    env.training = False
    violated = 0.0
    if guide is not None and guide.steps > before[1]:
        violated = 100.0 * (guide.violation_steps - before[0]) / (guide.steps - before[1])
    box = raw.observation_space
    assert isinstance(box, spaces.Box)
    low = ranges.low if ranges.low is not None else box.low
    high = ranges.high if ranges.high is not None else box.high
    return TrainedPolicy(
        model=model,
        stats=vecnorm_stats(env),
        obs_low=np.asarray(low, dtype=np.float64),
        obs_high=np.asarray(high, dtype=np.float64),
        env_steps=int(model.num_timesteps),
        seconds=seconds,
        guideline_violation_pct=violated,
        seed=seed,
    )


def silence_logger(model: BaseAlgorithm) -> None:
    """Give ``model`` a logger that records nowhere and creates no folder.

    Without a TensorBoard folder, SB3's ``learn`` otherwise configures its default logger, which
    creates an empty ``<tmp>/SB3-<date>`` folder on every run. A logger set here is kept by every
    later ``learn`` call (SB3 reconfigures only loggers it made itself).
    """
    model.set_logger(Logger(folder=None, output_formats=[]))


def bias_commands(model: BaseAlgorithm, recipe: Recipe) -> None:
    """Start the command outputs at ``recipe.command_bias_init`` (no command requested)."""
    from app.plant.actions import ActionSpec
    from app.plant.catalog import CATALOGS

    cat = CATALOGS[recipe.process]
    n_sp = len(ActionSpec.from_catalog(cat, cat.agent_period_s).setpoints)
    policy: Any = model.policy
    layer = getattr(policy, "action_net", None)
    if layer is None:
        layer = getattr(getattr(policy, "actor", None), "mu", None)
    if layer is None or getattr(layer, "bias", None) is None:
        return
    with th.no_grad():
        layer.bias[n_sp:] = recipe.command_bias_init


def zero_residual(model: BaseAlgorithm) -> None:
    """Start a residual policy at a zero output (the base rule) with zero output weights."""
    layer = getattr(model.policy, "action_net", None)
    if layer is None:
        return
    with th.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()


def _find_guideline(env: Any) -> GuidelinePenalty | None:
    while env is not None:
        if isinstance(env, GuidelinePenalty):
            return env
        env = getattr(env, "venv", None)
    return None


def set_threads(threads: int) -> None:
    """Limit torch's intra-op threads (the environment runs in the same process)."""
    th.set_num_threads(max(1, threads))
