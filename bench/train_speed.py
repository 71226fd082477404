"""Training speed on RO: env-steps/s while training, and wall time until the agent beats every baseline.

PPO with the RO recipe trains in chunks; after each chunk the policy is exported to ONNX and run
(ONNX Runtime, as the console runs it) on a reduced held-out set next to every baseline, whose
results are computed once up front. "Beats every baseline" means: lower mean cost per m³ than each
baseline, with at least ``1 − PRODUCT_TOLERANCE`` of its mean product volume and no trip.

Training wall time counts only ``learn``; the evaluation after each chunk is reported separately.

    .venv/bin/python -m bench.train_speed [--max-steps N] [--chunk N] [--episodes N] [--days D]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import numpy as np

PRODUCT_TOLERANCE = 0.01


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last line printed is one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed")
    parser.add_argument("--max-steps", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=131_072)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from gymnasium.spaces import Box
    from stable_baselines3 import PPO

    from app.agent_runtime.ensemble import EnsemblePolicy
    from app.agent_runtime.manifest import TrainingSummary
    from app.domain import TagRole
    from app.plant.actions import ActionSpec
    from app.plant.baselines import baseline_names, make_baseline
    from app.plant.catalog import CATALOGS
    from app.training import package_build as pb
    from app.training.agent_policy import PackagePolicy
    from app.training.evaluate import prepare, run_policy
    from app.training.export import GraphSpec, export_onnx, vecnorm_stats
    from app.training.recipes import recipe_for
    from app.training.sb3 import algo_kwargs, bias_commands, set_threads, silence_logger
    from app.training.train import hold_tags
    from app.training.vec import make_vec_env

    process = "ro"
    set_threads(1)
    recipe = recipe_for(process)
    setup = prepare(process, None, args.episodes, 0, args.days)
    t0 = time.perf_counter()
    baselines = [
        run_policy(make_baseline(name, process), setup, name)
        for name in baseline_names(process)
        if name != "random"
    ]
    baseline_s = time.perf_counter() - t0

    def mean(r: object, key: str) -> float:
        return float(r.summary()[key].mean)  # type: ignore[attr-defined]

    kwargs = algo_kwargs(recipe, "ppo", recipe.n_envs)
    env, _ = make_vec_env(recipe, recipe.n_envs, args.seed, gamma=float(kwargs["gamma"]))
    model = PPO("MlpPolicy", env, seed=args.seed, verbose=0, device="cpu", **kwargs)
    silence_logger(model)  # no TensorBoard here: no SB3-* folder in the temp dir either
    bias_commands(model, recipe)
    cat = CATALOGS[process]
    action = ActionSpec.from_catalog(cat, cat.agent_period_s)
    obs_space = env.observation_space
    assert isinstance(obs_space, Box)
    tags = tuple(t.name for t in cat.by_role(TagRole.OBSERVATION, TagRole.SETPOINT))
    spec = GraphSpec.from_env(tags, obs_space.low, obs_space.high, hold_tags(process), action)

    train_s = eval_s = 0.0
    beat_s: float | None = None
    beat_steps: int | None = None
    rows: list[tuple[int, float, float, float, float, str]] = []
    while model.num_timesteps < args.max_steps:
        started = time.perf_counter()
        model.learn(args.chunk, reset_num_timesteps=False)
        train_s += time.perf_counter() - started
        started = time.perf_counter()
        env.training = False
        stats = vecnorm_stats(env)
        onnx = export_onnx(model.policy, stats, spec, len(tags))
        fields = pb.manifest_fields(
            version="bench",
            process=process,
            created=datetime.now(UTC),
            parent=None,
            observations=pb.observation_specs(process, tags),
            actions=pb.action_specs(process, action),
            stats=pb.normalisation(stats.mean, stats.std.tolist(), obs_space.low, obs_space.high),
            training=TrainingSummary(
                algorithm="PPO",
                env_steps=int(model.num_timesteps),
                source="bench",
                details={"min_command_interval_h": dict(recipe.min_command_interval_h)},
            ),
            metrics={},
        )
        agent = PackagePolicy(fields, EnsemblePolicy.from_manifest(fields, onnx), "agent")
        result = run_policy(agent, setup, "agent")
        env.training = True
        eval_s += time.perf_counter() - started
        cost, product = mean(result, "cost_per_m3_eur"), mean(result, "product_m3")
        trips = float(np.sum(result.episodes["trips"]))
        best = min(mean(b, "cost_per_m3_eur") for b in baselines)
        beaten = trips == 0 and all(
            cost < mean(b, "cost_per_m3_eur")
            and product >= (1 - PRODUCT_TOLERANCE) * mean(b, "product_m3")
            for b in baselines
        )
        rows.append(
            (int(model.num_timesteps), train_s, cost, best, product, "yes" if beaten else "")
        )
        print(
            f"{model.num_timesteps:>9,} steps  {train_s:7.1f} s  cost {cost:.4f} €/m³ "
            f"(best baseline {best:.4f})  product {product:8.1f} m³  trips {trips:.0f}  "
            f"{'beats every baseline' if beaten else ''}",
            flush=True,
        )
        if beaten:
            beat_s, beat_steps = train_s, int(model.num_timesteps)
            break

    steps_per_s = model.num_timesteps / max(train_s, 1e-9)
    print()
    print(
        f"baselines ({', '.join(b.spec for b in baselines)}) on {args.episodes} episodes × "
        f"{args.days:g} days: {baseline_s:.1f} s"
    )
    print(
        f"training: {model.num_timesteps:,} env steps in {train_s:.1f} s = {steps_per_s:,.0f}/s "
        f"({recipe.n_envs} plants, PPO, 1 torch thread); evaluations {eval_s:.1f} s"
    )
    if beat_s is None:
        print(f"the agent did not beat every baseline within {args.max_steps:,} steps")
    else:
        print(f"beats every baseline after {beat_steps:,} steps, {beat_s:.1f} s of training")
    doc = {
        "bench": "train_speed",
        "env_steps_per_s": round(steps_per_s, 1),
        "train_wall_s": round(train_s, 1),
        "beat_all_wall_s": None if beat_s is None else round(beat_s, 1),
        "beat_all_env_steps": beat_steps,
        "eval_wall_s": round(eval_s, 1),
        "episodes": args.episodes,
        "days": args.days,
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
