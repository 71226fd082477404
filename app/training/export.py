"""ONNX export of a trained SB3 policy with everything the console needs inside the graph.

The exported graph maps the raw engineering-unit observation (1 × n_obs, float32, the order of
``ProcessEnv.observation_tags``) to absolute setpoints and commands (1 × n_act, the catalogue's
setpoints then commands), in this order:

1. clip the observation to the tag ranges (a transmitter saturates at its span, as in the env);
2. VecNormalize: ``clip((x − mean)/sqrt(var + eps), ±clip_obs)``;
3. the policy's deterministic action (PPO: Gaussian mean; SAC: tanh of the mean);
4. clip the action to ``[-1, 1]`` (what SB3 ``predict`` does);
5. :func:`app.plant.actions.decode_action`: setpoint readbacks from the observation plus
   ``a·max_move``, clipped to the PLC limits, limited to ``±max_step``, held where a ``*_active``
   observation (CIP, CEB, …) says the plant is stopped; commands are ``a > 0`` → 1.0 unless held.

The minimum interval between two commands (``EnvOptions.min_command_interval_h``) depends on time
the observation does not carry, so it stays with the runtime (the safety envelope; the evaluation
wrapper in :mod:`app.training.agent_policy`).

VecNormalize statistics travel as JSON (:func:`vecnorm_stats` / :class:`NormStats`), never pickle.
torch and SB3 are imported inside functions: this module is imported by the CLI.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from app.plant.actions import ActionSpec, decode_action
from app.training.residual import BaseRule, rule_action, torch_rule_action

if TYPE_CHECKING:
    import torch

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NormStats:
    """VecNormalize observation statistics as plain numbers (JSON, never pickle).

    Attributes:
        mean: Running mean per observation.
        var: Running variance per observation.
        clip_obs: Clip of the normalised observation.
        epsilon: Added to the variance before the square root.
        count: Number of observations the statistics saw.
    """

    mean: tuple[float, ...]
    var: tuple[float, ...]
    clip_obs: float
    epsilon: float
    count: float

    @property
    def std(self) -> F64:
        """``sqrt(var + epsilon)`` per observation."""
        return np.sqrt(np.asarray(self.var, dtype=np.float64) + self.epsilon)

    def normalize(self, obs: npt.ArrayLike) -> F64:
        """What ``VecNormalize.normalize_obs`` does, in float64."""
        x = np.asarray(obs, dtype=np.float64)
        z = (x - np.asarray(self.mean)) / self.std
        return np.asarray(np.clip(z, -self.clip_obs, self.clip_obs))

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(asdict(self), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> NormStats:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: Missing keys or lengths that differ.
        """
        doc = json.loads(text)
        try:
            stats = cls(
                mean=tuple(float(v) for v in doc["mean"]),
                var=tuple(float(v) for v in doc["var"]),
                clip_obs=float(doc["clip_obs"]),
                epsilon=float(doc["epsilon"]),
                count=float(doc["count"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"normalisation statistics: bad JSON ({exc})") from None
        if len(stats.mean) != len(stats.var):
            raise ValueError("normalisation statistics: mean and var differ in length")
        return stats

    def save(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        path.write_text(self.to_json() + "\n", encoding="utf-8")


def vecnorm_stats(vec_normalize: Any) -> NormStats:
    """Observation statistics of an SB3 ``VecNormalize`` (flat Box observations)."""
    rms = vec_normalize.obs_rms
    return NormStats(
        mean=tuple(float(v) for v in np.asarray(rms.mean).ravel()),
        var=tuple(float(v) for v in np.asarray(rms.var).ravel()),
        clip_obs=float(vec_normalize.clip_obs),
        epsilon=float(vec_normalize.epsilon),
        count=float(rms.count),
    )


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """Everything of the environment the graph reproduces.

    Attributes:
        obs_low: Lower tag range per observation (the env clips to it).
        obs_high: Upper tag range per observation.
        readback_index: Observation column of each setpoint's readback, in action order.
        hold_index: Observation columns whose value > 0.5 interlocks the plant (``*_active``).
        action: The action spec (moves, PLC limits, per-step limits, commands).
        residual: The base rule of a residual policy (``None``: the policy's action is the
            environment's action); its inputs are observation columns ``rule_index``.
        rule_index: Observation column of each of the rule's input tags (``rule.inputs``).
    """

    obs_low: tuple[float, ...]
    obs_high: tuple[float, ...]
    readback_index: tuple[int, ...]
    hold_index: tuple[int, ...]
    action: ActionSpec
    residual: BaseRule | None = None
    rule_index: tuple[int, ...] = ()

    @classmethod
    def from_env(
        cls,
        obs_tags: tuple[str, ...],
        obs_low: npt.ArrayLike,
        obs_high: npt.ArrayLike,
        hold_tags: tuple[str, ...],
        action: ActionSpec,
        residual: BaseRule | None = None,
    ) -> GraphSpec:
        """Build the spec from an environment's observation tags, bounds and action spec.

        Raises:
            ValueError: A setpoint readback, hold tag or rule input is not among the observations.
        """
        index = {name: i for i, name in enumerate(obs_tags)}
        rule_tags = residual.inputs if residual is not None else ()
        missing = [n for n in (*action.setpoints, *hold_tags, *rule_tags) if n not in index]
        if missing:
            raise ValueError(f"the observation lacks {missing}; the graph needs them")
        return cls(
            obs_low=tuple(float(v) for v in np.asarray(obs_low).ravel()),
            obs_high=tuple(float(v) for v in np.asarray(obs_high).ravel()),
            readback_index=tuple(index[n] for n in action.setpoints),
            hold_index=tuple(index[n] for n in hold_tags),
            action=action,
            residual=residual,
            rule_index=tuple(index[n] for n in rule_tags),
        )

    def env_action(self, clipped_obs: npt.ArrayLike, action: npt.ArrayLike) -> F64:
        """The environment's normalised action for a policy output (through the rule if any)."""
        a = np.clip(np.atleast_2d(np.asarray(action, dtype=np.float64)), -1.0, 1.0)
        if self.residual is None:
            return a
        return rule_action(self.residual, clipped_obs, self.rule_index, self.action, a)

    def decode(self, obs: npt.ArrayLike, action: npt.ArrayLike) -> F64:
        """The numpy reference of graph steps 1 and 5: absolute setpoints then commands."""
        x = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        x = np.clip(x, self.obs_low, self.obs_high)
        a = self.env_action(x, action)
        cur = x[:, list(self.readback_index)]
        hold = (x[:, list(self.hold_index)] > 0.5).any(axis=1) if self.hold_index else None
        dec = decode_action(a, cur, self.action, hold=hold)
        return np.concatenate([dec.setpoints, dec.commands], axis=1)


def _deterministic_action(policy: Any, x: torch.Tensor) -> torch.Tensor:
    """The deterministic action of an SB3 policy, written out so tracing sees plain tensor ops."""
    import torch as th
    from stable_baselines3.common.policies import ActorCriticPolicy

    if isinstance(policy, ActorCriticPolicy):
        features: th.Tensor = policy.extract_features(x, policy.pi_features_extractor)  # type: ignore[assignment]
        latent = policy.mlp_extractor.forward_actor(features)
        return policy.action_net(latent)  # type: ignore[no-any-return]
    actor = getattr(policy, "actor", None)
    if actor is None:
        raise TypeError(f"cannot export a {type(policy).__name__}: no actor network")
    mean, _, _ = actor.get_action_dist_params(x)
    return th.tanh(mean)


def export_module(policy: Any, stats: NormStats, spec: GraphSpec) -> torch.nn.Module:
    """The :class:`ExportPolicy` module for ``policy`` (built lazily: torch is optional)."""
    import torch as th

    class ExportPolicy(th.nn.Module):
        """Raw engineering-unit observation in, absolute setpoints and 0/1 commands out."""

        obs_low: th.Tensor
        obs_high: th.Tensor
        mean: th.Tensor
        std: th.Tensor
        max_move: th.Tensor
        sp_low: th.Tensor
        sp_high: th.Tensor
        max_step: th.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.policy = policy
            act = spec.action
            f32 = th.float32

            def buf(name: str, values: npt.ArrayLike) -> None:
                self.register_buffer(name, th.as_tensor(np.asarray(values), dtype=f32))

            buf("obs_low", spec.obs_low)
            buf("obs_high", spec.obs_high)
            buf("mean", stats.mean)
            buf("std", stats.std)
            buf("max_move", act.max_move)
            buf("sp_low", act.low)
            buf("sp_high", act.high)
            buf("max_step", act.max_step)
            self.clip_obs = float(stats.clip_obs)
            self.n_sp = len(act.setpoints)
            self.readback = list(spec.readback_index)
            self.hold = list(spec.hold_index)

        def forward(self, obs: th.Tensor) -> th.Tensor:
            x = th.minimum(th.maximum(obs, self.obs_low), self.obs_high)
            z = th.clamp((x - self.mean) / self.std, -self.clip_obs, self.clip_obs)
            a = th.clamp(_deterministic_action(self.policy, z), -1.0, 1.0)
            if spec.residual is not None:
                a = torch_rule_action(spec.residual, x, spec.rule_index, spec.action, a)
            cur = x[:, self.readback]
            target = cur + a[:, : self.n_sp] * self.max_move
            clipped = th.minimum(th.maximum(target, self.sp_low), self.sp_high)
            stepped = cur + th.minimum(th.maximum(clipped - cur, -self.max_step), self.max_step)
            want = (a[:, self.n_sp :] > 0.0).to(th.float32)
            if self.hold:
                held = (x[:, self.hold] > 0.5).any(dim=1, keepdim=True)
                stepped = th.where(held, cur, stepped)
                want = th.where(held, th.zeros_like(want), want)
            return th.cat([stepped, want], dim=1)

    module = ExportPolicy()
    module.eval()
    return module


def export_onnx(policy: Any, stats: NormStats, spec: GraphSpec, n_obs: int) -> bytes:
    """Export ``policy`` with normalisation, clipping and decoding inside; return the ONNX bytes.

    Uses the TorchScript exporter (``dynamo=False``), whose deprecation warning is silenced here
    only; opset 17, input ``obs`` (1 × n_obs), output ``action``.
    """
    import torch as th

    module = export_module(policy, stats, spec)
    with tempfile.TemporaryDirectory(prefix="intelwatt-export-") as tmp:
        path = Path(tmp) / "policy.onnx"
        with warnings.catch_warnings(), th.no_grad():
            warnings.simplefilter("ignore")
            th.onnx.export(
                module,
                (th.zeros(1, n_obs, dtype=th.float32),),
                str(path),
                input_names=["obs"],
                output_names=["action"],
                opset_version=17,
                dynamo=False,
            )
        return path.read_bytes()


@dataclass(frozen=True, slots=True)
class ParityReport:
    """How closely the ONNX graph follows SB3 ``predict`` plus the numpy decoder.

    Attributes:
        n: Observations compared.
        max_abs_action: Largest |ONNX-internal − SB3| on the normalised action (``[-1, 1]``).
        max_abs_setpoint: Largest |ONNX − numpy decode| on the absolute setpoints (engineering
            units).
        command_mismatches: Commands on which ONNX and numpy disagree (0/1).
    """

    n: int
    max_abs_action: float
    max_abs_setpoint: float
    command_mismatches: int


def random_observations(spec: GraphSpec, n: int, rng: np.random.Generator) -> F32:
    """``n`` observations uniform over the tag ranges; readbacks within the PLC limits, holds 0/1."""
    low = np.asarray(spec.obs_low)
    high = np.asarray(spec.obs_high)
    obs = rng.uniform(low, high, size=(n, low.size))
    act = spec.action
    for j, col in enumerate(spec.readback_index):
        obs[:, col] = rng.uniform(act.low[j], act.high[j], size=n)
    for col in spec.hold_index:
        obs[:, col] = (rng.uniform(size=n) < 0.2).astype(np.float64)
    return obs.astype(np.float32)


def parity(
    model: Any, onnx_bytes: bytes, stats: NormStats, spec: GraphSpec, obs: F32
) -> ParityReport:
    """Compare the ONNX graph with ``model.predict`` (+ :meth:`GraphSpec.decode`) on ``obs``.

    The normalised action inside the graph is compared through the decoded setpoints: where
    neither the PLC limits nor the per-step limit bind and the plant is not held,
    ``setpoint − readback = a·max_move``, so the graph's action is recovered from its setpoints
    (float32 rounding of the readback divided by ``max_move`` is included in the error).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    onnx_out = np.concatenate(
        [session.run(["action"], {"obs": obs[i : i + 1]})[0] for i in range(obs.shape[0])]
    ).astype(np.float64)
    clipped = np.clip(obs.astype(np.float64), spec.obs_low, spec.obs_high).astype(np.float32)
    sb3_action, _ = model.predict(stats.normalize(clipped).astype(np.float32), deterministic=True)
    sb3_action = np.clip(np.asarray(sb3_action, dtype=np.float64), -1.0, 1.0)
    reference = spec.decode(obs, sb3_action)
    n_sp = len(spec.action.setpoints)
    sp_err = np.abs(onnx_out[:, :n_sp] - reference[:, :n_sp])
    cur = np.clip(obs.astype(np.float64), spec.obs_low, spec.obs_high)[:, list(spec.readback_index)]
    ref_sp = reference[:, :n_sp]
    margin = 1e-6 * (spec.action.high - spec.action.low)
    free = (np.abs(ref_sp - cur) < spec.action.max_step - margin) & (
        (ref_sp > spec.action.low + margin) & (ref_sp < spec.action.high - margin)
    )
    if spec.hold_index:
        free &= ~(obs[:, list(spec.hold_index)] > 0.5).any(axis=1, keepdims=True)
    onnx_a = (onnx_out[:, :n_sp] - cur) / spec.action.max_move
    env_a = spec.env_action(clipped.astype(np.float64), sb3_action)
    act_err = np.where(free, np.abs(onnx_a - env_a[:, :n_sp]), 0.0)
    mismatches = int((onnx_out[:, n_sp:] != reference[:, n_sp:]).sum())
    return ParityReport(
        n=int(obs.shape[0]),
        max_abs_action=float(act_err.max(initial=0.0)),
        max_abs_setpoint=float(sp_err.max(initial=0.0)),
        command_mismatches=mismatches,
    )
