"""``intelwatt train``: train an agent on the simulator and write a signed agent package.

Output folder ``DIR``::

    DIR/package/          the signed agent package (manifest.json, manifest.sig, policy.onnx,
                          ensemble/member_XX.onnx, report.md)
    DIR/tb/               TensorBoard logs
    DIR/checkpoints/      SB3 checkpoints (zip with pickled data: they never leave DIR)
    DIR/vecnormalize.json observation statistics of the main policy (JSON, not pickle)
    DIR/train.json        what was run and what came out (one JSON object)

torch and SB3 are imported only inside :func:`train`, so ``intelwatt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from app.plant.actions import ActionSpec
from app.plant.catalog import CATALOGS
from app.training.recipes import RECIPES, Recipe, recipe_for

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_KEY = REPO_ROOT / "resources" / "keys" / "intelwatt-dev.key"
PACKAGE_DIR = "package"
PARITY_SAMPLES = 1000
PARITY_ATOL = 1e-5
"""Largest accepted |ONNX − SB3| on the normalised action."""


class TrainError(ValueError):
    """Bad training input (named in the message)."""


@dataclass(slots=True)
class TrainConfig:
    """One ``intelwatt train`` run.

    Attributes:
        process: Process name.
        out: Training folder (the package goes to ``out/package``).
        steps: Environment steps of the main policy (default: the recipe's).
        seed: Seed of the main run; members use ``seed + 1 …``.
        algo: ``ppo`` or ``sac`` (default: the recipe's).
        n_envs: Plants stepped together (default: the recipe's).
        ensemble: Extra members for the uncertainty estimate (0: none).
        member_fraction: Steps of each member as a fraction of ``steps``.
        key: Ed25519 private key that signs the package (default: the development key).
        version: Agent version (default ``<process>-YYYY.MM.DDHHMM``).
        parent: Parent version, if retrained from one.
        eval_episodes: Held-out episodes in the post-training evaluation (default: every file).
        eval_days: Episode length override of that evaluation.
        baselines: Baselines to compare with (default: every baseline of the process).
        tensorboard: Write TensorBoard logs.
        progress: Show a progress bar.
        threads: torch intra-op threads.
        recipe: Recipe to train with instead of the process's default (``None``: the default).
    """

    process: str
    out: Path
    steps: int | None = None
    seed: int = 0
    algo: str | None = None
    n_envs: int | None = None
    ensemble: int = 3
    member_fraction: float = 0.1
    key: Path = DEV_KEY
    version: str | None = None
    parent: str | None = None
    eval_episodes: int | None = None
    eval_days: float | None = None
    baselines: tuple[str, ...] | None = None
    tensorboard: bool = True
    progress: bool = True
    threads: int = 1
    notes: list[str] = field(default_factory=list)
    recipe: Recipe | None = None

    def check(self) -> None:
        """Validate everything that can be checked before training.

        Raises:
            TrainError: Naming the bad option.
        """
        if self.process not in RECIPES:
            raise TrainError(
                f"--process {self.process!r}: no training recipe; known: {', '.join(RECIPES)}"
            )
        if self.steps is not None and self.steps < 1:
            raise TrainError(f"--steps must be at least 1, got {self.steps}")
        if self.algo is not None and self.algo not in ("ppo", "sac"):
            raise TrainError(f"--algo must be ppo or sac, got {self.algo!r}")
        if self.n_envs is not None and self.n_envs < 1:
            raise TrainError(f"--n-envs must be at least 1, got {self.n_envs}")
        if self.ensemble < 0:
            raise TrainError(f"--ensemble must be >= 0, got {self.ensemble}")
        if not 0.0 < self.member_fraction <= 1.0:
            raise TrainError(f"--member-fraction must be in (0, 1], got {self.member_fraction}")
        if self.eval_episodes is not None and self.eval_episodes < 1:
            raise TrainError(f"--eval-episodes must be at least 1, got {self.eval_episodes}")
        if self.eval_days is not None and not self.eval_days > 0:
            raise TrainError(f"--eval-days must be positive, got {self.eval_days}")
        if self.threads < 1:
            raise TrainError(f"--threads must be at least 1, got {self.threads}")
        if not self.key.is_file():
            raise TrainError(f"--key {self.key}: no such private key file")
        package = self.out / PACKAGE_DIR
        if self.out.exists() and not self.out.is_dir():
            raise TrainError(f"--out {self.out}: exists and is not a folder")
        if package.exists() and any(package.iterdir()):
            raise TrainError(f"--out {self.out}: already holds a package ({package})")
        if self.baselines is not None:
            from app.plant.baselines import BaselineError, baseline_names

            try:
                known = baseline_names(self.process)
            except BaselineError as exc:
                raise TrainError(str(exc)) from None
            unknown = [b for b in self.baselines if b not in known]
            if unknown:
                raise TrainError(f"--baselines {unknown}: unknown; known: {', '.join(known)}")


@dataclass(slots=True)
class TrainOutcome:
    """What :func:`train` produced.

    Attributes:
        package: The package folder.
        summary: The ``train.json`` document.
    """

    package: Path
    summary: dict[str, Any]


def hold_tags(process: str) -> tuple[str, ...]:
    """Observations whose value > 0.5 interlocks the setpoints (as ``ProcessEnv`` does)."""
    cat = CATALOGS[process]
    return tuple(t.name for t in cat.observations if t.discrete and t.name.endswith("_active"))


def train(cfg: TrainConfig, log: TextIO | None = None) -> TrainOutcome:
    """Train, export, evaluate, sign and write the package (see the module docstring).

    Raises:
        TrainError: Bad configuration, or an export that fails the parity check.
    """
    cfg.check()
    log = log or sys.stderr
    from gymnasium.spaces import Box

    from app.agent_runtime.keys import TrustStore, load_private_key, public_key_of
    from app.agent_runtime.manifest import TrainingSummary
    from app.agent_runtime.package import verify_package, write_package
    from app.training import package_build as pb
    from app.training import sb3
    from app.training.export import GraphSpec, export_onnx, parity, random_observations
    from app.training.residual import rule_for

    key = load_private_key(cfg.key)
    recipe = cfg.recipe or recipe_for(cfg.process)
    if recipe.process != cfg.process:
        raise TrainError(f"recipe for {recipe.process!r} given to train {cfg.process!r}")
    algo = cfg.algo or recipe.algo
    steps = cfg.steps or recipe.steps
    n_envs = cfg.n_envs or recipe.n_envs
    cfg.out.mkdir(parents=True, exist_ok=True)
    sb3.set_threads(cfg.threads)
    started = time.perf_counter()

    def say(text: str) -> None:
        log.write(f"intelwatt train: {text}\n")
        log.flush()

    say(f"{cfg.process}: {algo.upper()} for {steps:,} steps on {n_envs} plants (seed {cfg.seed})")
    main = sb3.run(
        recipe,
        algo,
        steps,
        cfg.seed,
        n_envs,
        cfg.out,
        tensorboard=cfg.tensorboard,
        progress=cfg.progress,
    )
    say(
        f"main policy: {main.env_steps:,} steps in {main.seconds:.0f} s "
        f"({main.env_steps / max(main.seconds, 1e-9):,.0f} steps/s)"
    )
    main.stats.save(cfg.out / "vecnormalize.json")
    members = []
    member_steps = max(1, round(steps * cfg.member_fraction))
    for k in range(cfg.ensemble):
        members.append(
            sb3.run(
                recipe,
                algo,
                member_steps,
                cfg.seed + 1 + k,
                n_envs,
                cfg.out,
                name=f"member_{k:02d}",
                start_from=main,
                tensorboard=cfg.tensorboard,
                progress=cfg.progress,
                checkpoints=0,
            )
        )
        say(f"member {k}: {member_steps:,} steps in {members[-1].seconds:.0f} s")

    cat = CATALOGS[cfg.process]
    action = ActionSpec.from_catalog(cat, cat.agent_period_s)
    env_obs = main.model.observation_space
    assert isinstance(env_obs, Box)
    tags = tuple(t.name for t in cat.by_role(*_obs_roles()))
    residual = rule_for(cfg.process) if recipe.residual_rule else None
    spec = GraphSpec.from_env(
        tags, env_obs.low, env_obs.high, hold_tags(cfg.process), action, residual=residual
    )
    n_obs = len(tags)
    policy_bytes = export_onnx(main.model.policy, main.stats, spec, n_obs)
    member_bytes = [export_onnx(m.model.policy, m.stats, spec, n_obs) for m in members]
    check = parity(
        main.model,
        policy_bytes,
        main.stats,
        spec,
        random_observations(spec, PARITY_SAMPLES, np.random.default_rng(cfg.seed)),
    )
    parity_doc = {
        "samples": check.n,
        "max_abs_action": check.max_abs_action,
        "max_abs_setpoint": check.max_abs_setpoint,
        "command_mismatches": check.command_mismatches,
        "atol_action": PARITY_ATOL,
    }
    say(
        f"ONNX parity on {check.n} observations: |Δa| ≤ {check.max_abs_action:.2e}, "
        f"|Δsetpoint| ≤ {check.max_abs_setpoint:.2e}, command mismatches {check.command_mismatches}"
    )
    if check.max_abs_action > PARITY_ATOL or check.command_mismatches:
        raise TrainError(f"ONNX export differs from SB3: {parity_doc}")

    created = datetime.now(UTC).replace(microsecond=0)
    version = cfg.version or f"{cfg.process}-{created:%Y.%m.%d%H%M}"
    obs_std = main.stats.std
    stats = pb.normalisation(main.stats.mean, obs_std.tolist(), main.obs_low, main.obs_high)
    total_steps = main.env_steps + sum(m.env_steps for m in members)
    details: dict[str, Any] = {
        "n_envs": n_envs,
        "main_steps": main.env_steps,
        "member_steps": member_steps if members else 0,
        "ensemble": f"{len(members)} members fine-tuned from the main policy with seeds "
        f"{cfg.seed + 1}..{cfg.seed + len(members)}"
        if members
        else "none",
        "hyperparameters": _jsonable(sb3.algo_kwargs(recipe, algo, n_envs)),
        "episode_hours": recipe.episode_hours,
        "randomize": recipe.randomize,
        "sensor_noise": True,
        "guidelines": [
            {"tag": g.tag, "low": g.low, "high": g.high, "weight": g.weight, "doc": g.doc}
            for g in recipe.guidelines
        ],
        "guideline_violation_pct": main.guideline_violation_pct,
        "demand_baseline": recipe.demand_baseline,
        "extra_trip_penalty": recipe.extra_trip_penalty,
        "command_bias_init": recipe.command_bias_init,
        "min_command_interval_h": dict(recipe.min_command_interval_h),
        "production_target_m3h": recipe.production_target_m3h,
        "shortfall_eur_m3": recipe.shortfall_eur_m3
        if recipe.production_target_m3h is not None
        else None,
        "residual_rule": recipe.residual_rule,
        "vecnormalize": {"clip_obs": main.stats.clip_obs, "epsilon": main.stats.epsilon},
        "train_seconds": round(main.seconds + sum(m.seconds for m in members), 1),
    }
    training = TrainingSummary(
        algorithm=algo.upper(),
        env_steps=total_steps,
        seed=cfg.seed,
        source=f"simulator {cfg.process}: random disturbance series (app.plant.scenarios), "
        f"±{recipe.randomize * 100:.0f} % parameter randomisation, sensor noise",
        details=details,
    )
    obs_specs = pb.observation_specs(cfg.process, tags)
    act_specs = pb.action_specs(cfg.process, action)
    draft = pb.manifest_fields(
        version=version,
        process=cfg.process,
        created=created,
        parent=cfg.parent,
        observations=obs_specs,
        actions=act_specs,
        stats=stats,
        training=training,
        metrics={},
    )
    say("evaluating the ONNX agent against the baselines on the held-out scenarios")
    ev = pb.evaluate_agent(
        draft,
        policy_bytes,
        member_bytes,
        episodes=cfg.eval_episodes,
        days=cfg.eval_days,
        baselines=cfg.baselines,
    )
    fields = draft.model_copy(update={"metrics": pb.metrics(ev, parity_doc)})
    report = pb.report_markdown(fields, ev, cfg.notes)
    package = cfg.out / PACKAGE_DIR
    write_package(
        package,
        fields,
        policy_bytes,
        key,
        ensemble=member_bytes,
        extra_files={"report.md": report.encode("utf-8")},
    )
    verify_package(package, TrustStore([public_key_of(key, "signer")]))
    summary = {
        "process": cfg.process,
        "version": version,
        "algorithm": algo,
        "env_steps": total_steps,
        "steps_per_s": main.env_steps / max(main.seconds, 1e-9),
        "wall_s": round(time.perf_counter() - started, 1),
        "parity": parity_doc,
        "versus_baselines": pb.comparison(ev),
        "package": str(package),
    }
    (cfg.out / "train.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    say(f"package {package} ({_size_kb(package):.0f} KB)")
    log.write(report + "\n")
    return TrainOutcome(package, summary)


def _obs_roles() -> tuple[Any, ...]:
    from app.domain import TagRole

    return (TagRole.OBSERVATION, TagRole.SETPOINT)


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(doc, default=str))
    return out


def _size_kb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024.0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``intelwatt train`` beyond ``--process/--out/--steps/--seed``."""
    p.add_argument("--algo", choices=("ppo", "sac"), help="algorithm (default: the recipe's)")
    p.add_argument("--n-envs", type=int, help="plants stepped together (default: the recipe's)")
    p.add_argument("--ensemble", type=int, default=3, help="extra ensemble members (default: 3)")
    p.add_argument("--key", type=Path, default=DEV_KEY, help="Ed25519 signing key (default: dev)")
    p.add_argument("--version", dest="agent_version", help="agent version (default: dated)")
    p.add_argument("--eval-episodes", type=int, help="held-out episodes to evaluate on")
    p.add_argument("--eval-days", type=float, help="episode length of that evaluation (days)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard logs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed arguments (options the parser lacks take defaults)."""

    def opt(name: str, default: Any = None) -> Any:
        value = getattr(args, name, default)
        return default if value is None else value

    baselines = opt("baselines")
    return TrainConfig(
        process=str(args.process),
        out=Path(args.out),
        steps=getattr(args, "steps", None),
        seed=int(opt("seed", 0)),
        algo=opt("algo"),
        n_envs=opt("n_envs"),
        ensemble=int(opt("ensemble", 3)),
        key=Path(opt("key", DEV_KEY)),
        version=opt("agent_version"),
        eval_episodes=opt("eval_episodes"),
        eval_days=opt("eval_days"),
        baselines=tuple(baselines) if baselines is not None else None,
        tensorboard=not bool(opt("no_tensorboard", False)),
        progress=not bool(opt("no_progress", False)) and sys.stderr.isatty(),
        threads=int(opt("threads", 1)),
    )


def run_train_cli(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Entry point of ``intelwatt train``: 0 on success, 2 with one line on bad input."""
    err = err or sys.stderr
    try:
        cfg = config_from_args(args)
        cfg.check()
    except (TrainError, ValueError, TypeError) as exc:
        err.write(f"intelwatt train: error: {exc}\n")
        return 2
    try:
        train(cfg, err)
    except TrainError as exc:
        err.write(f"intelwatt train: error: {exc}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app.training.train`` (the same options as ``intelwatt train``)."""
    parser = argparse.ArgumentParser(prog="intelwatt train", description=__doc__.splitlines()[0])
    parser.add_argument("--process", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    add_train_arguments(parser)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    return run_train_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
