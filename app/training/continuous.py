"""``intelwatt retrain``: calibrate the twin on logged plant data, fine-tune, gate, sign, push.

The same entry point runs locally (``intelwatt retrain ...``, a background process of the console)
and as the Azure ML command job (``packaging/azureml/retrain-job.yml``)::

    1 data       load the window's transitions (outbox export or Blob), filter, check coverage
    2 calibrate  system identification of the twin (app.training.calibrate)
    3 fine-tune  continue the base agent on the calibrated twin, mixed with the nominal
                 simulator (the replay of what it was trained on, so it does not forget)
    4 gates      regression suite, candidate vs incumbent, zero hard violations (app.training.gates)
    5 package    only if the gates pass: sign, write, verify, optionally push as ``candidate``

**Where the weights come from.** Packages hold ONNX only and nothing here unpickles anything from
a package. ``--base`` is the training folder of the incumbent (``intelwatt train --out DIR`` or a
previous ``intelwatt retrain --out DIR``): its signed ``package/`` is the incumbent (verified
against the trust store), its latest ``checkpoints/main_*_steps.zip`` provides the policy weights,
read **weights only** (``load_from_zip_file(load_data=False)``, ``torch.load(weights_only=True)``,
library-notes §5.2), and ``vecnormalize.json`` the observation statistics. Fine-tuning the same
network keeps the incumbent's behaviour as the starting point exactly; distilling the ONNX graph
into a fresh network would start from an approximation, and the per-step action limits inside the
graph make the inversion lossy where they bind. A package folder as ``--base`` (the shipped agent,
ONNX only) is warm-started from its ``policy.onnx`` instead: the actor's initialisers carry the SB3
parameter names, the ``mean``/``std`` initialisers the observation statistics; the SB3 policy must
match the graph on the parity observations before training, and its critic starts fresh
(``--critic-warmup``).

Output folder ``DIR``: ``promotion-report.md`` and ``.json`` and ``calibration.json`` always;
``package/`` (the signed candidate, parent version = base), ``checkpoints/``,
``vecnormalize.json`` and ``train.json`` only when the gates pass, so ``DIR`` is a valid ``--base``
for the next retrain.

Exit codes: 0 candidate written (and pushed if asked), 3 rejected by the gates (report written),
2 bad input or data (one line naming the culprit), 1 storage/registry failure while pushing.

Progress: besides the readable lines, the log stream (stderr) gets one machine-readable line per
stage and every tenth of the fine-tuning, ``PROGRESS stage=<stage> fraction=<0..1> msg=<text>``
(:data:`STAGES`; ``fraction`` is of the whole job; ``msg`` runs to the end of the line). The
console's retrain trigger (``app.controllers.retrain``) parses them into progress events.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from app.plant.catalog import CATALOGS
from app.training.calibrate import Calibration, CalibrationError, calibrate_ro
from app.training.data import (
    DataError,
    FilterOptions,
    QualityReport,
    assess,
    load_transitions,
    require_enough,
)
from app.training.gates import GateError, GateReport, GateThresholds
from app.training.train import DEV_KEY, PACKAGE_DIR, PARITY_ATOL, PARITY_SAMPLES, hold_tags

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUST_DIR = REPO_ROOT / "resources" / "trust"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
REPORT_MD = "promotion-report.md"
REPORT_JSON = "promotion-report.json"
STAGES = {
    "data": 0.0,
    "calibrate": 0.05,
    "finetune": 0.15,
    "gates": 0.80,
    "package": 0.95,
    "done": 1.0,
}
"""Stage → job fraction at its start (fine-tuning reports its own steps in between)."""
PROGRESS_PREFIX = "PROGRESS "


def progress_line(stage: str, fraction: float, message: str) -> str:
    """The machine-readable progress line (no newline); ``message`` is flattened to one line."""
    flat = " ".join(message.split())
    return f"{PROGRESS_PREFIX}stage={stage} fraction={min(max(fraction, 0.0), 1.0):.3f} msg={flat}"


class RetrainError(ValueError):
    """Bad retrain input (the message names the option or file)."""


@dataclass(slots=True)
class RetrainConfig:
    """One ``intelwatt retrain`` run.

    Attributes:
        process: Process name.
        data: Outbox SQLite file, JSONL file/folder or ``az://container/prefix``.
        base: Training folder of the incumbent (``package/``, ``checkpoints/``,
            ``vecnormalize.json``).
        out: Output folder.
        steps: Fine-tuning environment steps.
        n_envs: Plants stepped together in fine-tuning.
        replay_fraction: Share of those plants on the nominal simulator (the replay).
        critic_warmup: Share of the PPO steps that fit only the critic (actor frozen) first; 1:
            the actor stays the incumbent's (only the observation statistics follow the twin).
        seed: Seed of fine-tuning and of the gate episodes.
        since: Start of the data window.
        until: End of the data window.
        min_records: Fewest usable records accepted.
        min_span_h: Shortest span of usable records accepted.
        include_labels: Event labels whose records are used anyway.
        time_scale: Plant seconds per logged second (default: from ``hours_since_cip_h``).
        gate_days: Episode length of the gate suite (default: the full scenario files).
        thresholds: Gate tolerances.
        key: Ed25519 key that signs the candidate.
        trust: Trust store folder that must accept the base (and the candidate).
        version: Candidate version (default ``<base>-rt<YYYYmmddHHMM>``).
        push: Push the candidate to the registry and set the ``candidate`` alias.
        site: Site file with the ``[cloud]`` settings for the push (default: environment).
        container: Registry container override.
        threads: torch intra-op threads.
    """

    process: str
    data: str
    base: Path
    out: Path
    steps: int = 20_000
    n_envs: int = 8
    replay_fraction: float = 0.5
    critic_warmup: float = 0.0
    seed: int = 0
    since: datetime | None = None
    until: datetime | None = None
    min_records: int = 96
    min_span_h: float = 24.0
    include_labels: tuple[str, ...] = ()
    time_scale: float | None = None
    gate_days: float | None = None
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    key: Path = DEV_KEY
    trust: Path = TRUST_DIR
    version: str | None = None
    push: bool = False
    site: Path | None = None
    container: str | None = None
    threads: int = 1


@dataclass(slots=True)
class RetrainOutcome:
    """What :func:`retrain` produced.

    Attributes:
        passed: The gates passed and the package was written.
        package: The candidate package (``None`` if rejected).
        report: The promotion report document (also in ``out/promotion-report.json``).
        calibration: The calibration.
        gates: The gate report.
    """

    passed: bool
    package: Path | None
    report: dict[str, Any]
    calibration: Calibration
    gates: GateReport


@dataclass(slots=True)
class _Base:
    package: Path
    checkpoint: Path | None
    """``None``: a package-only base, warm-started from its ``policy.onnx``."""
    stats: Path | None
    algo: str


def _base_folder(base: Path) -> _Base:
    if not base.is_dir():
        raise RetrainError(f"--base {base}: not a folder")
    if (base / "manifest.json").is_file():
        # A package (the shipped agent): ONNX only, warm-started from its policy graph.
        return _Base(base, None, None, "ppo")
    package = base / PACKAGE_DIR
    if not (package / "manifest.json").is_file():
        raise RetrainError(
            f"--base {base}: no {PACKAGE_DIR}/manifest.json; give the training folder of the "
            "incumbent (intelwatt train --out DIR or intelwatt retrain --out DIR)"
        )
    ckpts = sorted(
        (base / "checkpoints").glob("main_*_steps.zip"),
        key=lambda p: int(p.stem.split("_")[-2]) if p.stem.split("_")[-2].isdigit() else -1,
    )
    if not ckpts:
        raise RetrainError(
            f"--base {base}: no checkpoints/main_*_steps.zip; packages hold ONNX only, and "
            "fine-tuning needs the training folder's weights"
        )
    stats = base / "vecnormalize.json"
    if not stats.is_file():
        raise RetrainError(f"--base {base}: no vecnormalize.json")
    algo = "ppo"
    summary = base / "train.json"
    if summary.is_file():
        algo = str(json.loads(summary.read_text("utf-8")).get("algorithm", "ppo")).lower()
    if algo not in ("ppo", "sac"):
        raise RetrainError(f"--base {base}: train.json names algorithm {algo!r}")
    return _Base(package, ckpts[-1], stats, algo)


def check(cfg: RetrainConfig) -> _Base:
    """Validate the configuration before anything heavy runs.

    Raises:
        RetrainError: Naming the bad option.
    """
    if cfg.process not in CATALOGS:
        raise RetrainError(f"--process {cfg.process!r}: known {', '.join(sorted(CATALOGS))}")
    if cfg.process != "ro":
        raise RetrainError(f"--process {cfg.process}: the twin calibration exists for ro only")
    if cfg.steps < 1:
        raise RetrainError(f"--steps must be at least 1, got {cfg.steps}")
    if cfg.n_envs < 2:
        raise RetrainError(f"--n-envs must be at least 2 (twin and replay), got {cfg.n_envs}")
    if not 0.0 <= cfg.critic_warmup <= 1.0:
        raise RetrainError(f"--critic-warmup must be in [0, 1], got {cfg.critic_warmup}")
    if not 0.0 <= cfg.replay_fraction < 1.0:
        raise RetrainError(f"--replay-fraction must be in [0, 1), got {cfg.replay_fraction}")
    if cfg.gate_days is not None and not cfg.gate_days > 0:
        raise RetrainError(f"--gate-days must be positive, got {cfg.gate_days}")
    if not cfg.key.is_file():
        raise RetrainError(f"--key {cfg.key}: no such private key file")
    if not cfg.trust.is_dir():
        raise RetrainError(f"--trust {cfg.trust}: no such folder")
    if (cfg.out / PACKAGE_DIR).exists() and any((cfg.out / PACKAGE_DIR).iterdir()):
        raise RetrainError(f"--out {cfg.out}: already holds a package")
    return _base_folder(cfg.base)


def retrain(cfg: RetrainConfig, log: TextIO | None = None) -> RetrainOutcome:
    """Run the whole pipeline (see the module docstring).

    Raises:
        RetrainError, DataError, CalibrationError, GateError: Bad input, named in the message.
        PackageRefused: The base package fails verification against ``cfg.trust``.
    """
    base = check(cfg)
    out = log or sys.stderr
    started = time.perf_counter()

    def say(text: str) -> None:
        out.write(f"intelwatt retrain: {text}\n")
        out.flush()

    def stage(name: str, text: str, fraction: float | None = None) -> None:
        out.write(progress_line(name, STAGES[name] if fraction is None else fraction, text) + "\n")
        out.flush()

    from app.agent_runtime.keys import TrustStore, load_private_key
    from app.training.agent_policy import PackagePolicy

    store = TrustStore.load(cfg.trust)
    incumbent = PackagePolicy.from_package(base.package, store)
    fields = incumbent.fields
    if fields.process != cfg.process:
        raise RetrainError(f"--base {cfg.base}: package is for {fields.process!r}")
    key = load_private_key(cfg.key)
    cfg.out.mkdir(parents=True, exist_ok=True)

    say(f"1/5 data: {cfg.data}")
    stage("data", f"loading {cfg.data}")
    logged = load_transitions(cfg.data, cfg.process, since=cfg.since, until=cfg.until)
    ranges = {
        s.tag: (lo, hi)
        for s, lo, hi in zip(
            fields.observations,
            fields.normalisation.train_low,
            fields.normalisation.train_high,
            strict=True,
        )
    }
    quality = assess(logged, FilterOptions(include_labels=frozenset(cfg.include_labels)), ranges)
    require_enough(quality, min_records=cfg.min_records, min_span_h=cfg.min_span_h)
    say(
        f"    {len(logged)} records, {quality.counts['ok']} usable over {quality.span_h:.0f} h; "
        + ", ".join(f"{k} {v}" for k, v in quality.counts.items() if v and k != "ok")
    )

    say("2/5 calibrating the twin")
    stage("calibrate", f"calibrating the twin on {quality.counts['ok']} usable records")
    cal = calibrate_ro(logged, quality.good, time_scale=cfg.time_scale)
    (cfg.out / "calibration.json").write_text(
        json.dumps(cal.to_json(), indent=1) + "\n", encoding="utf-8"
    )
    for name, value in cal.params.items():
        say(
            f"    {name} = {value:.4g} ± {100 * cal.rel_std(name):.1f} % "
            f"(default {cal.defaults[name]:.4g})"
        )

    origin = base.checkpoint.name if base.checkpoint else "warm start from policy.onnx"
    say(f"3/5 fine-tuning {fields.version} for {cfg.steps:,} steps ({origin})")
    stage("finetune", f"fine-tuning {fields.version} for {cfg.steps} steps")
    lo, hi = STAGES["finetune"], STAGES["gates"]
    tuned = _finetune(
        cfg,
        base,
        cal.simulator_params(),
        lambda done: stage(
            "finetune", f"{done:.0%} of the fine-tuning", lo + (hi - lo) * min(done, 1.0)
        ),
        tuple(fields.observation_tags),
    )
    policy_bytes, new_fields = _export(cfg, tuned, fields, cal, quality)
    say(f"    {tuned.seconds:.0f} s, ONNX parity |Δa| ≤ {tuned.parity['max_abs_action']:.1e}")

    say(f"4/5 gates on the regression suite ({cfg.gate_days or 'full'} days per scenario)")
    stage("gates", "regression suite, candidate vs incumbent")
    from app.agent_runtime.ensemble import EnsemblePolicy
    from app.training.gates import run_gates

    candidate = PackagePolicy(
        new_fields, EnsemblePolicy.from_manifest(new_fields, policy_bytes, []), "candidate"
    )
    gates = run_gates(
        cfg.process,
        candidate,
        incumbent,
        cal.simulator_params(),
        thresholds=cfg.thresholds,
        days=cfg.gate_days,
        seed=cfg.seed,
    )
    for c in gates.checks:
        say(f"    {'pass' if c.passed else 'FAIL'}  {c.name}: {c.detail}")

    report = _report(cfg, fields.version, new_fields.version, quality, cal, tuned, gates)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    markdown = _markdown(report, cal, gates)
    (cfg.out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (cfg.out / REPORT_MD).write_text(markdown, encoding="utf-8")
    if not gates.passed:
        say(f"REJECTED: {new_fields.version} not written; see {cfg.out / REPORT_MD}")
        failed = "; ".join(c.name for c in gates.checks if not c.passed)
        stage("done", f"rejected by the gates: {failed}")
        return RetrainOutcome(False, None, report, cal, gates)

    say("5/5 signing and writing the candidate")
    stage("package", f"signing {new_fields.version}")
    from app.agent_runtime.package import verify_package, write_package

    final_fields = new_fields.model_copy(
        update={"metrics": {**new_fields.metrics, "promotion": _json_safe(gates.to_json())}}
    )
    package = cfg.out / PACKAGE_DIR
    write_package(
        package,
        final_fields,
        policy_bytes,
        key,
        extra_files={
            REPORT_MD: markdown.encode("utf-8"),
            REPORT_JSON: (json.dumps(report, indent=1) + "\n").encode("utf-8"),
        },
    )
    verify_package(package, store)
    _save_for_next(cfg, tuned, new_fields.version)
    say(f"candidate {new_fields.version} (parent {fields.version}) in {package}")
    stage("done", f"candidate {new_fields.version}")
    return RetrainOutcome(True, package, report, cal, gates)


@dataclass(slots=True)
class _Tuned:
    model: Any
    stats: Any
    obs_low: np.ndarray
    obs_high: np.ndarray
    env_steps: int
    seconds: float
    parity: dict[str, Any]


def _finetune(
    cfg: RetrainConfig,
    base: _Base,
    twin: Mapping[str, float],
    report: Callable[[float], None] | None = None,
    tags: tuple[str, ...] = (),
) -> _Tuned:
    """Continue the base weights on the twin plus the nominal replay (SB3 imported here only).

    ``report`` receives the done share of the steps about every tenth.
    """
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.save_util import load_from_zip_file

    from app.training import sb3
    from app.training.export import NormStats, vecnorm_stats
    from app.training.recipes import recipe_for

    sb3.set_threads(cfg.threads)
    recipe = recipe_for(cfg.process)
    kwargs = sb3.algo_kwargs(recipe, base.algo, cfg.n_envs)
    env = _finetune_env(cfg, recipe, twin, float(kwargs["gamma"]))
    graph = None
    if base.stats is not None:
        stats = NormStats.from_json(base.stats.read_text("utf-8"))
    else:
        graph = _onnx_actor(base.package / "policy.onnx", env)
        stats = graph.stats
    if len(stats.mean) != env.observation_space.shape[0]:
        raise RetrainError(f"--base {cfg.base}: observation statistics do not fit the observation")
    env.obs_rms.mean = np.asarray(stats.mean, dtype=np.float64)
    env.obs_rms.var = np.asarray(stats.var, dtype=np.float64)
    env.obs_rms.count = stats.count
    cls = sb3.ALGORITHMS[base.algo]
    model = cls("MlpPolicy", env, seed=cfg.seed, verbose=0, device="cpu", **kwargs)
    sb3.silence_logger(model)
    if graph is not None:
        _load_onnx_actor(cfg, model, graph, tags)
    else:
        assert base.checkpoint is not None
        # Weights only: the zip's pickled ``data`` is never read (library-notes §5.2).
        _, params, _ = load_from_zip_file(base.checkpoint, load_data=False, device="cpu")
        if params is None or "policy" not in params:
            raise RetrainError(f"{base.checkpoint}: no policy weights")
        weights: Any = params["policy"]
        model.policy.load_state_dict(weights)
    ranges = sb3.ObservationRange(env)

    warm = int(cfg.critic_warmup * cfg.steps) if base.algo == "ppo" else 0
    # PPO collects whole rollouts: each learn() call runs a multiple of n_steps × plants.
    rollout = int(getattr(model, "n_steps", 1)) * int(model.n_envs)
    planned = sum(-(-n // rollout) * rollout for n in (warm, cfg.steps - warm) if n > 0)

    class _Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = 0.1

        def _on_step(self) -> bool:
            done = min(self.num_timesteps / max(planned, 1), 1.0)
            if report is not None and done >= self.next:
                report(done)
                self.next = (int(done * 10) + 1) / 10
            return True

    callbacks = CallbackList([ranges, _Progress()])
    started = time.perf_counter()
    if warm > 0:
        # The reward normaliser starts afresh (its statistics are not saved), so the loaded critic
        # is off scale: its advantages would push the actor at random. Fit the critic first with
        # the actor frozen; the policy then starts from the incumbent exactly.
        actor = _actor_parameters(model.policy)
        for prm in actor:
            prm.requires_grad_(False)
        model.learn(total_timesteps=warm, callback=callbacks, progress_bar=False)
        for prm in actor:
            prm.requires_grad_(True)
    if cfg.steps - warm > 0:
        model.learn(
            total_timesteps=cfg.steps - warm,
            callback=callbacks,
            progress_bar=False,
            reset_num_timesteps=warm == 0,
        )
    seconds = time.perf_counter() - started
    env.training = False
    box = env.observation_space
    low = ranges.low if ranges.low is not None else box.low
    high = ranges.high if ranges.high is not None else box.high
    return _Tuned(
        model=model,
        stats=vecnorm_stats(env),
        obs_low=np.asarray(low, dtype=np.float64),
        obs_high=np.asarray(high, dtype=np.float64),
        env_steps=int(model.num_timesteps),
        seconds=seconds,
        parity={},
    )


ONNX_LOG_STD = -1.0
"""Initial log std of a policy warm-started from ONNX (the graph is deterministic) [judgement]."""


@dataclass(slots=True)
class _OnnxActor:
    path: Path
    stats: Any
    weights: dict[str, np.ndarray]
    graph: bytes


def _onnx_actor(path: Path, env: Any) -> _OnnxActor:
    """The actor weights and observation statistics inside an exported ``policy.onnx``.

    The TorchScript export keeps the SB3 parameter names (``policy.mlp_extractor.policy_net.*``,
    ``policy.action_net.*``) and stores the normalisation as the ``mean`` / ``std`` initialisers.
    Read with ``onnx.numpy_helper``: no pickle anywhere.
    """
    import onnx
    from onnx import numpy_helper

    from app.training.export import NormStats

    raw = path.read_bytes()
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(raw).graph.initializer}
    prefix = "policy."
    weights = {
        k.removeprefix(prefix): np.array(v, dtype=np.float32, copy=True)
        for k, v in inits.items()
        if k.startswith(prefix + "mlp_extractor.policy_net.")
        or k.startswith(prefix + "action_net.")
    }
    if not weights or "mean" not in inits or "std" not in inits:
        raise RetrainError(
            f"{path}: not an intelwatt policy graph (actor or normalisation missing)"
        )
    eps = float(env.epsilon)
    std = np.asarray(inits["std"], dtype=np.float64)
    stats = NormStats(
        mean=tuple(float(x) for x in np.asarray(inits["mean"], dtype=np.float64)),
        var=tuple(float(x) for x in np.maximum(std**2 - eps, 0.0)),
        clip_obs=float(env.clip_obs),
        epsilon=eps,
        count=1e6,
    )
    return _OnnxActor(path, stats, weights, raw)


def _load_onnx_actor(
    cfg: RetrainConfig, model: Any, actor: _OnnxActor, tags: tuple[str, ...]
) -> None:
    """Load the graph's actor into ``model`` and prove it acts like the graph (critic stays new).

    Raises:
        RetrainError: Shapes differ from the recipe's network, or the ONNX parity check fails.
    """
    import torch as th

    from app.plant.actions import ActionSpec
    from app.training.export import GraphSpec, parity, random_observations

    state = model.policy.state_dict()
    for name, value in actor.weights.items():
        if name not in state or tuple(state[name].shape) != value.shape:
            raise RetrainError(
                f"{actor.path}: {name} {value.shape} does not fit the recipe's network"
            )
        state[name] = th.as_tensor(value)
    model.policy.load_state_dict(state)
    with th.no_grad():
        model.policy.log_std.fill_(ONNX_LOG_STD)
    cat = CATALOGS[cfg.process]
    box = model.observation_space
    spec = GraphSpec.from_env(
        tags,
        box.low,
        box.high,
        hold_tags(cfg.process),
        ActionSpec.from_catalog(cat, cat.agent_period_s),
    )
    rep = parity(
        model,
        actor.graph,
        actor.stats,
        spec,
        random_observations(spec, PARITY_SAMPLES, np.random.default_rng(cfg.seed)),
    )
    if rep.max_abs_action > PARITY_ATOL or rep.command_mismatches:
        raise RetrainError(
            f"{actor.path}: the warm-started SB3 policy differs from the graph "
            f"(|Δa| {rep.max_abs_action:.2e}, {rep.command_mismatches} command mismatches)"
        )


def _actor_parameters(policy: Any) -> list[Any]:
    """The PPO actor's parameters: its MLP branch, action head and log std."""
    params = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    if getattr(policy, "log_std", None) is not None:
        params.append(policy.log_std)
    return params


def _finetune_env(cfg: RetrainConfig, recipe: Any, twin: Mapping[str, float], gamma: float) -> Any:
    """The recipe's training environment with per-plant parameters: twin plants and replay plants.

    The first ``replay_fraction`` of the plants keep the simulator's nominal parameters (the
    distribution the incumbent was trained on); the others get the calibrated values. Both keep
    the recipe's parameter randomisation and draw fresh disturbance series.
    """
    from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

    from app.plant.envs import EnvOptions, ProcessVecEnv
    from app.plant.scenarios import RandomDisturbances
    from app.training.evaluate import model_class
    from app.training.vec import DemandBaseline, GuidelinePenalty

    cls = model_class(recipe.process)
    n = cfg.n_envs
    n_replay = round(cfg.replay_fraction * n)
    defaults = {k: spec.default for k, spec in cls.parameters.items()}  # type: ignore[attr-defined]
    per_plant: dict[str, Any] = {}
    for name, value in twin.items():
        arr = np.full(n, float(value))
        arr[:n_replay] = defaults[name]
        per_plant[name] = arr
    options = EnvOptions(
        episode_hours=recipe.episode_hours,
        randomize=recipe.randomize,
        sensor_noise=True,
        params=per_plant,
        min_command_interval_h=dict(recipe.min_command_interval_h),
    )
    raw = ProcessVecEnv(cls(n), RandomDisturbances(recipe.process), options=options)
    raw.seed(cfg.seed + 1000)
    env: VecEnv = raw
    if recipe.guidelines:
        env = GuidelinePenalty(env, raw.observation_tags, recipe.guidelines)
    if recipe.demand_baseline:
        env = DemandBaseline(env, raw, recipe.process)
    return VecNormalize(VecMonitor(env), norm_obs=True, norm_reward=True, gamma=gamma)


def _export(
    cfg: RetrainConfig, tuned: _Tuned, base_fields: Any, cal: Calibration, quality: QualityReport
) -> tuple[bytes, Any]:
    """ONNX export with parity check and the candidate's manifest fields."""
    from app.agent_runtime.manifest import TrainingSummary
    from app.plant.actions import ActionSpec
    from app.training import package_build as pb
    from app.training.export import GraphSpec, export_onnx, parity, random_observations

    cat = CATALOGS[cfg.process]
    action = ActionSpec.from_catalog(cat, cat.agent_period_s)
    box = tuned.model.observation_space
    tags = base_fields.observation_tags
    spec = GraphSpec.from_env(tags, box.low, box.high, hold_tags(cfg.process), action)
    policy_bytes = export_onnx(tuned.model.policy, tuned.stats, spec, len(tags))
    rep = parity(
        tuned.model,
        policy_bytes,
        tuned.stats,
        spec,
        random_observations(spec, PARITY_SAMPLES, np.random.default_rng(cfg.seed)),
    )
    tuned.parity = {
        "samples": rep.n,
        "max_abs_action": rep.max_abs_action,
        "max_abs_setpoint": rep.max_abs_setpoint,
        "command_mismatches": rep.command_mismatches,
        "atol_action": PARITY_ATOL,
    }
    if rep.max_abs_action > PARITY_ATOL or rep.command_mismatches:
        raise RetrainError(f"ONNX export differs from SB3: {tuned.parity}")
    created = datetime.now(UTC).replace(microsecond=0)
    version = cfg.version or f"{base_fields.version}-rt{created:%Y%m%d%H%M}"[:64]
    old = base_fields.normalisation
    low = np.minimum(np.asarray(old.train_low), tuned.obs_low)
    high = np.maximum(np.asarray(old.train_high), tuned.obs_high)
    stats = pb.normalisation(tuned.stats.mean, tuned.stats.std.tolist(), low, high)
    details = dict(base_fields.training.details)
    details.update(
        {
            "retrain": {
                "base_version": base_fields.version,
                "data": cfg.data,
                "records_used": quality.counts["ok"],
                "steps": tuned.env_steps,
                "n_envs": cfg.n_envs,
                "replay_fraction": cfg.replay_fraction,
                "twin_params": cal.simulator_params(),
                "train_seconds": round(tuned.seconds, 1),
            }
        }
    )
    training = TrainingSummary(
        algorithm=base_fields.training.algorithm,
        env_steps=base_fields.training.env_steps + tuned.env_steps,
        seed=cfg.seed,
        source=f"fine-tuned from {base_fields.version} on the twin calibrated from {cfg.data} "
        f"({1 - cfg.replay_fraction:.0%} of plants) and the nominal simulator (replay)",
        details=_json_safe(details),
    )
    fields = pb.manifest_fields(
        version=version,
        process=cfg.process,
        created=created,
        parent=base_fields.version,
        observations=base_fields.observations,
        actions=base_fields.actions,
        stats=stats,
        training=training,
        metrics={
            "onnx_parity": _json_safe(tuned.parity),
            "calibration": _json_safe(cal.to_json()),
        },
    )
    return policy_bytes, fields


def _save_for_next(cfg: RetrainConfig, tuned: _Tuned, version: str) -> None:
    """Weights and statistics in the training-folder layout, so ``out`` can be the next base."""
    ckpt = cfg.out / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    tuned.model.save(ckpt / f"main_{tuned.env_steps}_steps.zip")
    tuned.stats.save(cfg.out / "vecnormalize.json")
    summary = {"process": cfg.process, "version": version, "algorithm": _algo_name(tuned.model)}
    (cfg.out / "train.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def _algo_name(model: Any) -> str:
    return type(model).__name__.lower()


def _json_safe(doc: Any) -> Any:
    """Round-trip through JSON with NaN → null (manifest metrics must be strict JSON)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(doc, default=str)))


def _report(
    cfg: RetrainConfig,
    base_version: str,
    version: str,
    quality: QualityReport,
    cal: Calibration,
    tuned: _Tuned,
    gates: GateReport,
) -> dict[str, Any]:
    doc: dict[str, Any] = _json_safe(
        {
            "process": cfg.process,
            "candidate": version,
            "parent": base_version,
            "verdict": "candidate" if gates.passed else "rejected",
            "data": {"source": cfg.data, **quality.to_json()},
            "calibration": cal.to_json(),
            "fine_tune": {
                "steps": tuned.env_steps,
                "n_envs": cfg.n_envs,
                "replay_fraction": cfg.replay_fraction,
                "seconds": round(tuned.seconds, 1),
                "parity": tuned.parity,
            },
            "gates": gates.to_json(),
        }
    )
    return doc


def _markdown(report: dict[str, Any], cal: Calibration, gates: GateReport) -> str:
    d = report["data"]
    lines = [
        f"# Promotion report: {report['candidate']} (parent {report['parent']})",
        "",
        f"Verdict: **{report['verdict']}**.",
        "",
        "## Data",
        "",
        f"Source `{d['source']}`: {d['records']} records, {d['counts']['ok']} usable over "
        f"{d['span_h']:.0f} h. Dropped: "
        + (", ".join(f"{k} {v}" for k, v in d["counts"].items() if v and k != "ok") or "none")
        + ".",
        "",
        "| tag | p05 | p95 | range bins filled |",
        "|---|---|---|---|",
    ]
    for tag, c in d["coverage"].items():
        lines.append(f"| {tag} | {c['p05']} | {c['p95']} | {100 * c['bins_filled']:.0f} % |")
    lines += [
        "",
        "## Calibration of the twin",
        "",
        f"{cal.n_records} records, {cal.plant_hours:.0f} plant hours, reduced χ² "
        f"{cal.reduced_chi2:.2f}, {cal.iterations} LM iterations, {cal.replays} replays.",
        "",
        cal.table(),
        "",
        *[f"- {n}" for n in cal.notes],
        "",
        "## Fine-tuning",
        "",
        f"{report['fine_tune']['steps']:,} steps on {report['fine_tune']['n_envs']} plants "
        f"({100 * report['fine_tune']['replay_fraction']:.0f} % nominal replay), "
        f"{report['fine_tune']['seconds']} s.",
        "",
        "## Gates",
        "",
        gates.markdown(),
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI


def add_retrain_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``intelwatt retrain`` beyond ``--process --data --base --out``."""
    p.add_argument("--steps", type=int, default=20_000, help="fine-tuning steps (default 20000)")
    p.add_argument("--n-envs", type=int, default=8, help="plants in fine-tuning (default 8)")
    p.add_argument(
        "--replay-fraction", type=float, default=0.5, help="share of nominal plants (default 0.5)"
    )
    p.add_argument(
        "--critic-warmup",
        type=float,
        default=0.0,
        help="share of PPO steps fitting only the critic first (default 0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--since", type=datetime.fromisoformat, help="window start (ISO 8601)")
    p.add_argument("--until", type=datetime.fromisoformat, help="window end (ISO 8601)")
    p.add_argument("--min-records", type=int, default=96, help="fewest usable records")
    p.add_argument("--min-span-h", type=float, default=24.0, help="shortest usable span, hours")
    p.add_argument(
        "--include-label", action="append", default=[], help="event label to keep (e.g. cip)"
    )
    p.add_argument("--time-scale", type=float, help="plant s per logged s (default: estimated)")
    p.add_argument("--gate-days", type=float, help="days per gate scenario (default: full files)")
    p.add_argument("--key", type=Path, default=DEV_KEY, help="signing key (default: dev key)")
    p.add_argument("--trust", type=Path, default=TRUST_DIR, help="trust store folder")
    p.add_argument("--version", help="candidate version (default <base>-rtYYYYmmddHHMM)")
    p.add_argument("--push", action="store_true", help="push as 'candidate' to the registry")
    p.add_argument("--site", type=Path, help="site file with [cloud] settings for --push")
    p.add_argument("--container", help="registry container (default: site file or intelwatt)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")


def config_from_args(args: argparse.Namespace) -> RetrainConfig:
    """Build the configuration from parsed arguments (missing options take the defaults)."""

    def opt(name: str, default: Any = None) -> Any:
        return getattr(args, name, default)

    return RetrainConfig(
        process=str(args.process),
        data=str(args.data),
        base=Path(args.base),
        out=Path(args.out),
        steps=int(opt("steps", 20_000)),
        n_envs=int(opt("n_envs", 8)),
        replay_fraction=float(opt("replay_fraction", 0.5)),
        critic_warmup=float(opt("critic_warmup", 0.0)),
        seed=int(opt("seed", 0)),
        since=opt("since"),
        until=opt("until"),
        min_records=int(opt("min_records", 96)),
        min_span_h=float(opt("min_span_h", 24.0)),
        include_labels=tuple(opt("include_label", []) or []),
        time_scale=opt("time_scale"),
        gate_days=opt("gate_days"),
        key=Path(opt("key") or DEV_KEY),
        trust=Path(opt("trust") or TRUST_DIR),
        version=opt("version"),
        push=bool(opt("push", False)),
        site=opt("site"),
        container=opt("container"),
        threads=int(opt("threads", 1)),
    )


def push_candidate(package: Path, process: str, site: Path | None, container: str | None) -> str:
    """Push ``package`` to the registry and point ``candidate`` at it; returns the version."""
    from app.cloud.registry import SyncRegistry
    from app.cloud.storage import storage_connection_string
    from app.config import load_site

    cloud = load_site(site).cloud if site is not None else None
    name = container or (cloud.container if cloud is not None else "intelwatt")
    with SyncRegistry(storage_connection_string(cloud), str(name), process) as reg:
        reg.ensure_container()
        info = reg.push(package, alias="candidate")
    return str(info.version)


def run_retrain_cli(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Back ``intelwatt retrain``; returns the exit code (see the module docstring)."""
    stream = err or sys.stderr
    try:
        cfg = config_from_args(args)
        outcome = retrain(cfg, stream)
    except (RetrainError, DataError, CalibrationError, GateError) as exc:
        stream.write(f"intelwatt retrain: {exc}\n")
        return EXIT_USAGE
    except Exception as exc:
        from app.agent_runtime.errors import KeyFileError, PackageRefused

        if isinstance(exc, PackageRefused | KeyFileError):
            stream.write(f"intelwatt retrain: --base package refused: {exc}\n")
            return EXIT_USAGE
        raise
    if not outcome.passed or outcome.package is None:
        return EXIT_REJECTED
    if cfg.push:
        from azure.core.exceptions import AzureError

        from app.cloud.errors import RegistryError
        from app.secrets import SecretError

        try:
            version = push_candidate(outcome.package, cfg.process, cfg.site, cfg.container)
        except (AzureError, RegistryError, SecretError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            stream.write(f"intelwatt retrain: push failed: {type(exc).__name__}: {first}\n")
            return EXIT_FAILURE
        stream.write(f"intelwatt retrain: pushed {version} as candidate\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser of ``python -m app.training.continuous`` (the Azure ML job)."""
    p = argparse.ArgumentParser(prog="intelwatt retrain", description=__doc__.splitlines()[0])
    p.add_argument("--process", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    add_retrain_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m app.training.continuous`` (the Azure ML command job's entry point)."""
    return run_retrain_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
