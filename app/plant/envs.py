"""Gymnasium and Stable-Baselines3 environments over any process model (process-models.md §2.3).

- :class:`ProcessEnv`: a ``gymnasium.Env`` around a model with one plant (tests, evaluation).
- :class:`ProcessVecEnv`: an SB3 ``VecEnv`` stepping all plants of one model as array operations
  (no per-environment Python loop); finished plants restart through the model's reset mask.

Both share :class:`_Core`, so a vectorised environment equals n single ones for the same seeds
(deterministic disturbances, no parameter randomisation; sensor noise is counter-based per plant).

Observation: the catalogue's OBSERVATION tags then SETPOINT readbacks, in catalogue order, raw
engineering units as float32, clipped to the tag ranges (a transmitter saturates at its span); the
exported policy carries its own normalisation. Action: ``Box(-1, 1)`` decoded by
:func:`app.plant.actions.decode_action` (clip → rate-limit → interlock). Reward:
:mod:`app.plant.economics`. Hidden states go to ``info`` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from app.domain import TagRole
from app.plant.actions import ActionSpec, DecodedAction, decode_action
from app.plant.economics import ProcessPrices, prices_for, step_costs, step_reward, terminal_reward
from app.plant.models.base import DisturbanceSource, ProcessModel, StepResult
from app.plant.noise import SensorNoise, plant_key

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class EnvOptions:
    """Episode and realism options shared by both environments.

    Attributes:
        episode_hours: Episode length (time limit → truncation with the terminal value).
        agent_period_s: Time per agent step (default: the catalogue's ``agent_period_s``).
        randomize: Relative half-width of model-parameter randomisation at reset (0.2 = ±20 %).
        sensor_noise: Add Gaussian sensor noise to observations (``app.plant.noise``).
        params: Model-parameter overrides applied at every reset.
        min_command_interval_h: Minimum time between two requests of a command (e.g. CIP); a
            request inside the interval is refused by the interlock and counted.
        initial_disturbances: Hand the scenario's t = 0 values to models that accept them at reset.
    """

    episode_hours: float = 30 * 24.0
    agent_period_s: float | None = None
    randomize: float = 0.0
    sensor_noise: bool = False
    params: Mapping[str, float] = field(default_factory=dict)
    min_command_interval_h: Mapping[str, float] = field(
        default_factory=lambda: {"cip_request": 48.0}
    )
    initial_disturbances: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.episode_hours) and self.episode_hours > 0):
            raise ValueError(f"episode_hours must be positive, got {self.episode_hours}")
        if self.agent_period_s is not None and not (
            math.isfinite(self.agent_period_s) and self.agent_period_s > 0
        ):
            raise ValueError(f"agent_period_s must be positive, got {self.agent_period_s}")
        if not 0.0 <= self.randomize < 1.0:
            raise ValueError(f"randomize must be within [0, 1), got {self.randomize}")
        for name, hours in self.min_command_interval_h.items():
            if not (math.isfinite(hours) and hours >= 0):
                raise ValueError(f"min_command_interval_h[{name!r}] must be >= 0, got {hours}")


@dataclass(slots=True)
class StepOutcome:
    """Everything one vectorised step produced, as arrays over plants (for callbacks and tests)."""

    result: StepResult
    decoded: DecodedAction
    disturbances: dict[str, F64]
    reward: F64
    cost_eur: F64
    value_eur: F64
    terminated: B
    truncated: B
    hidden: dict[str, F64]


class _Core:
    """The vectorised environment logic for ``model.n`` plants."""

    def __init__(
        self,
        model: ProcessModel,
        source: DisturbanceSource,
        prices: ProcessPrices | None,
        options: EnvOptions,
    ) -> None:
        cat = model.catalog
        self.model, self.source, self.options = model, source, options
        self.prices = prices or prices_for(cat.process)
        self.period = float(options.agent_period_s or cat.agent_period_s)
        self.max_steps = max(1, round(options.episode_hours * 3600.0 / self.period))
        self.spec = ActionSpec.from_catalog(cat, self.period)
        unknown = set(options.min_command_interval_h) - set(self.spec.commands)
        if unknown - {"cip_request"}:
            raise ValueError(
                f"min_command_interval_h names commands {sorted(unknown)} that "
                f"{cat.process!r} agents do not have; commands: {self.spec.commands}"
            )
        obs_defs = cat.by_role(TagRole.OBSERVATION, TagRole.SETPOINT)
        self.obs_tags = tuple(t.name for t in obs_defs)
        self.low = np.array([t.low for t in obs_defs], dtype=np.float32)
        self.high = np.array([t.high for t in obs_defs], dtype=np.float32)
        self.hold_tags = tuple(
            t.name for t in cat.observations if t.discrete and t.name.endswith("_active")
        )
        self.noise = SensorNoise(cat, self.obs_tags) if options.sensor_noise else None
        self.min_interval = np.array(
            [options.min_command_interval_h.get(c, 0.0) * 3600.0 for c in self.spec.commands]
        )
        self.pass_initial = options.initial_disturbances and bool(
            getattr(type(model), "accepts_initial_disturbances", False)
        )
        n = model.n
        self.n = n
        self.t = np.zeros(n)
        self.steps = np.zeros(n, dtype=np.int64)
        self.setpoints = np.zeros((n, len(self.spec.setpoints)))
        self.last_command_t = np.full((n, len(self.spec.commands)), -np.inf)
        self.seeds = np.zeros(n, dtype=np.uint64)
        self.episodes = np.zeros(n, dtype=np.int64)
        self.keys = np.zeros(n, dtype=np.uint64)
        self.meas: dict[str, F64] = {}
        self.obs = np.zeros((n, len(self.obs_tags)), dtype=np.float32)
        self.last: StepOutcome | None = None

    def reset(self, mask: B | None, rng: np.random.Generator, seeds: Sequence[int | None]) -> F32:
        """Restart the plants in ``mask`` (all if ``None``); ``seeds[i]`` re-seeds plant i's noise."""
        n = self.n
        sel = np.ones(n, dtype=bool) if mask is None else mask
        for i, seed in enumerate(seeds):
            if seed is not None:
                self.seeds[i] = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
                self.episodes[i] = -1
        self.source.reset(n, rng, None if mask is None else mask)
        self.t = np.where(sel, 0.0, self.t)
        params: dict[str, Any] = dict(self.options.params)
        if self.pass_initial:
            first = self.source.at(self.t)
            params.update({k: first[k] for k in self.model.disturbance_names if k in first})
        self.model.reset(rng, self.options.randomize, params, None if mask is None else mask)
        self.steps = np.where(sel, 0, self.steps)
        self.episodes = np.where(sel, self.episodes + 1, self.episodes)
        if self.noise is not None:
            for plant in np.flatnonzero(sel):
                self.keys[plant] = plant_key(self.seeds[plant], self.episodes[plant])
        self.last_command_t[sel] = -np.inf
        self.meas = self.model.measurements()
        readback = np.stack([self.meas[name] for name in self.spec.setpoints], axis=1)
        self.setpoints = np.where(sel[:, None], readback, self.setpoints)
        self.obs = self._observe()
        return self.obs

    def _observe(self) -> F32:
        values = np.stack([self.meas[name] for name in self.obs_tags], axis=1)
        if self.noise is not None:
            values = self.noise.apply(values, self.keys, self.steps)
        return np.minimum(np.maximum(values.astype(np.float32), self.low), self.high)

    def step(self, action: npt.ArrayLike) -> StepOutcome:
        """Advance every plant by one agent step."""
        if not self.meas:
            raise RuntimeError("environment stepped before reset")
        action = np.asarray(action, dtype=np.float64).reshape(self.n, self.spec.size)
        hold = np.zeros(self.n, dtype=bool)
        for name in self.hold_tags:
            hold |= self.meas[name] > 0.5
        allowed = (self.t[:, None] - self.last_command_t) >= self.min_interval
        dec = decode_action(action, self.setpoints, self.spec, hold=hold, command_allowed=allowed)
        setpoints = {name: dec.setpoints[:, i] for i, name in enumerate(self.spec.setpoints)}
        setpoints.update({name: dec.commands[:, i] for i, name in enumerate(self.spec.commands)})
        dist = self.source.at(self.t)
        result = self.model.step(setpoints, dist, self.period)
        self.setpoints = dec.setpoints
        self.last_command_t = np.where(dec.commands > 0.5, self.t[:, None], self.last_command_t)
        self.t = self.t + self.period
        self.steps = self.steps + 1
        self.meas = self.model.measurements()
        self.obs = self._observe()
        hidden = self.model.hidden()
        unmet = hidden.get("unmet_demand_m3")
        costs = step_costs(result, self.prices, dist, self.period, unmet_demand_m3=unmet)
        reward = step_reward(
            result, self.prices, dist, self.period, setpoint_moves=dec.moves, costs=costs
        )
        tripped = np.asarray(result.tripped, dtype=bool)
        # A batch plant that finished its batch ends the episode like the time limit: no penalty,
        # the terminal value of the state it leaves, but it is a true end (terminated).
        finished = (
            np.zeros_like(tripped)
            if result.finished is None
            else np.asarray(result.finished, dtype=bool) & ~tripped
        )
        terminated = tripped | finished
        truncated = (self.steps >= self.max_steps) & ~terminated
        reward = reward - self.prices.trip_penalty * tripped
        ends = truncated | finished
        if ends.any():
            reward = reward + np.where(ends, terminal_reward(hidden, self.prices, self.period), 0.0)
        interventions = dict(result.interventions)
        for layer, count in (
            ("clip", dec.clipped),
            ("rate", dec.rate_limited),
            ("interlock", dec.interlocked),
        ):
            interventions[layer] = interventions.get(layer, 0.0) + count
        result.interventions = interventions
        self.last = StepOutcome(
            result=result,
            decoded=dec,
            disturbances={k: np.asarray(v, dtype=np.float64) for k, v in dist.items()},
            reward=reward,
            cost_eur=costs.cost,
            value_eur=costs.water_value,
            terminated=terminated,
            truncated=truncated,
            hidden=hidden,
        )
        return self.last

    def info(self, i: int) -> dict[str, Any]:
        """Per-plant info of the last step (or reset) for plant ``i``."""
        info: dict[str, Any] = {"t_s": float(self.t[i])}
        out = self.last
        if out is None:
            info["hidden"] = {k: _scalar(v[i]) for k, v in self.model.hidden().items()}
            return info
        r = out.result
        info.update(
            product_m3=float(r.product_m3[i]),
            feed_m3=float(r.feed_m3[i]),
            energy_kwh=float(r.energy_kwh[i]),
            chemicals_eur=float(r.chemicals_eur[i]),
            downtime_s=float(r.downtime_s[i]),
            quality_excess=float(r.quality_excess[i]),
            pressure_excess=float(r.pressure_excess[i]),
            trip_reason=str(r.trip_reason[i]),
            cost_eur=float(out.cost_eur[i]),
            value_eur=float(out.value_eur[i]),
            interventions={k: float(np.asarray(v)[i]) for k, v in r.interventions.items()},
            cleanings={k: float(np.asarray(v)[i]) for k, v in r.cleanings.items()},
            hidden={k: _scalar(v[i]) for k, v in out.hidden.items()},
        )
        return info


def _scalar(value: npt.ArrayLike) -> float | F64:
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr.copy()


def _spaces(core: _Core) -> tuple[spaces.Box, spaces.Box]:
    obs = spaces.Box(low=core.low, high=core.high, dtype=np.float32)
    act = spaces.Box(low=-1.0, high=1.0, shape=(core.spec.size,), dtype=np.float32)
    return obs, act


class ProcessEnv(gym.Env[npt.NDArray[Any], npt.NDArray[Any]]):
    """One plant of any process model as a ``gymnasium.Env``.

    Args:
        model: A process model with ``n == 1`` (reset and stepped by the environment).
        disturbances: Source of the exogenous inputs (scenario file, random, constant).
        prices: Price set (default: :func:`app.plant.economics.prices_for` of the process).
        options: Episode and realism options.

    Raises:
        ValueError: If the model has more than one plant or an option is invalid.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(
        self,
        model: ProcessModel,
        disturbances: DisturbanceSource,
        prices: ProcessPrices | None = None,
        options: EnvOptions | None = None,
    ) -> None:
        if model.n != 1:
            raise ValueError(f"ProcessEnv needs a model with one plant, got n={model.n}")
        self._core = _Core(model, disturbances, prices, options or EnvOptions())
        self._core.seeds[:] = np.random.SeedSequence().generate_state(1, np.uint64)
        self.observation_space, self.action_space = _spaces(self._core)
        self.render_mode = None

    @property
    def core_spec(self) -> ActionSpec:
        """Meaning of the action vector."""
        return self._core.spec

    @property
    def observation_tags(self) -> tuple[str, ...]:
        """Tag of each observation column."""
        return self._core.obs_tags

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Start a new episode (``seed`` re-seeds parameters, disturbances and noise)."""
        super().reset(seed=seed)
        self._core.last = None
        obs = self._core.reset(None, self.np_random, [seed])
        return obs[0].copy(), self._core.info(0)

    def step(self, action: npt.NDArray[Any]) -> tuple[F32, float, bool, bool, dict[str, Any]]:
        """One agent step."""
        out = self._core.step(np.asarray(action, dtype=np.float64).reshape(1, -1))
        return (
            self._core.obs[0].copy(),
            float(out.reward[0]),
            bool(out.terminated[0]),
            bool(out.truncated[0]),
            self._core.info(0),
        )


class ProcessVecEnv(VecEnv):
    """All plants of one model as an SB3 ``VecEnv``, stepped as array operations.

    Finished plants (trip or time limit) restart at once through the model's reset mask; their
    ``info`` carries ``terminal_observation`` and ``TimeLimit.truncated`` as SB3 expects. Per-plant
    info dicts are empty otherwise unless ``info_detail`` is set (building them is a Python loop);
    :attr:`last` holds the step's arrays (result, rewards, costs, hidden states) for callbacks.

    Args:
        model: A process model with ``n`` plants (one per environment).
        disturbances: Source of the exogenous inputs for ``n`` plants.
        prices: Price set (default: that of the process).
        options: Episode and realism options.
        info_detail: Fill every info dict like :class:`ProcessEnv` does.
    """

    render_mode = None

    def __init__(
        self,
        model: ProcessModel,
        disturbances: DisturbanceSource,
        prices: ProcessPrices | None = None,
        options: EnvOptions | None = None,
        *,
        info_detail: bool = False,
    ) -> None:
        self._core = _Core(model, disturbances, prices, options or EnvOptions())
        obs_space, act_space = _spaces(self._core)
        super().__init__(model.n, obs_space, act_space)
        self.info_detail = info_detail
        self._rng = np.random.default_rng()
        self._actions: F64 | None = None
        self._core.seeds[:] = np.random.SeedSequence().generate_state(model.n, np.uint64)

    @property
    def last(self) -> StepOutcome | None:
        """Arrays of the last step (``None`` before the first step)."""
        return self._core.last

    @property
    def observation_tags(self) -> tuple[str, ...]:
        """Tag of each observation column."""
        return self._core.obs_tags

    def reset(self) -> VecEnvObs:
        """Reset every plant; seeds set by ``seed()`` apply to this reset only."""
        given = [s for s in self._seeds if s is not None]
        if given:
            self._rng = np.random.default_rng(given)
        self._core.last = None
        obs = self._core.reset(None, self._rng, self._seeds).copy()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions of the next step."""
        self._actions = np.asarray(actions, dtype=np.float64)

    def step_wait(self) -> VecEnvStepReturn:
        """Step all plants, auto-resetting the finished ones."""
        if self._actions is None:
            raise RuntimeError("step_wait called without step_async")
        out = self._core.step(self._actions)
        self._actions = None
        obs = self._core.obs.copy()
        done = out.terminated | out.truncated
        if self.info_detail:
            infos = [self._core.info(i) for i in range(self.num_envs)]
        else:
            infos = [{} for _ in range(self.num_envs)]
        if done.any():
            finished = np.flatnonzero(done)
            for i in finished:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(out.truncated[i])
            obs = self._core.reset(done, self._rng, ()).copy()
        return obs, out.reward.astype(np.float32), done, infos

    def close(self) -> None:
        """Nothing to release (no subprocesses)."""

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices if isinstance(indices, Iterable) else [indices])

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vectorised environment's own attribute, once per selected environment."""
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vectorised environment (shared by all plants)."""
        setattr(self, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of the vectorised environment once per selected environment."""
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Plants are never wrapped individually."""
        return [False for _ in self._indices(indices)]
