"""Continuous training, end to end on one machine: a plant unlike the simulator → logged transitions
→ ``intelwatt retrain`` → gates → candidate → old vs new agent on the *true* plant.

1. ``intelwatt train`` a base agent on the nominal simulator (``--base-steps``), or reuse ``--base``.
2. A plant with different hidden parameters (``--plant``, :data:`PLANTS`) runs the base agent for ``--days`` on a held-out scenario; every agent
   period is one outbox transition (SQLite), as the console logs it.
3. ``intelwatt retrain`` on that outbox: calibration, fine-tuning (``--steps``), gates.
4. Old and new agent on the regression suite with the plant's **true** parameters (not the twin):
   the improvement that matters.

    .venv/bin/python -m bench.continuous [--base-steps N] [--steps N] [--days D] [--gate-days D]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLANTS = {
    # A tighter, saltier, faster-fouling membrane and a worn pump.
    "tight": {
        "water_permeability_lmh_bar": 2.6,
        "salt_permeability_m_s": 8.0e-8,
        "fouling_rate_pa_s_m2": 6.75e8,
        "pump_efficiency": 0.68,
    },
    # Membrane to spec, but fouling four times faster than assumed and a worn pump.
    "fouling": {
        "water_permeability_lmh_bar": 3.3,
        "salt_permeability_m_s": 5.7e-8,
        "fouling_rate_pa_s_m2": 9.0e8,
        "pump_efficiency": 0.68,
    },
}
REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last line printed is one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m bench.continuous")
    parser.add_argument("--base", type=Path, help="existing training folder of the base agent")
    parser.add_argument("--base-steps", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--gate-days", type=float, default=10.0)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--plant", choices=sorted(PLANTS), default="tight", help="hidden plant")
    args = parser.parse_args(argv)
    hidden = PLANTS[args.plant]

    from app.training.agent_policy import PackagePolicy
    from app.training.continuous import RetrainConfig, retrain
    from app.training.gates import run_gates
    from app.training.plant_log import simulate_transitions, write_outbox
    from app.training.train import TrainConfig, train

    work = args.work or Path(tempfile.mkdtemp(prefix="intelwatt-ct-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = args.base
    if base is None:
        base = work / "base"
        train(
            TrainConfig(
                process="ro",
                out=base,
                steps=args.base_steps,
                ensemble=0,
                eval_episodes=1,
                eval_days=1.0,
                baselines=("fixed_pi",),
                tensorboard=False,
                progress=False,
            ),
            io.StringIO(),
        )
    t_base = time.perf_counter() - t0
    incumbent = PackagePolicy.from_package(base / "package")
    t1 = time.perf_counter()
    records = simulate_transitions(
        "ro",
        REPO / "resources" / "scenarios" / "ro" / "ro_02_spring.csv",
        incumbent,
        days=args.days,
        params=hidden,
        seed=11,
        agent=incumbent.fields.version,
    )
    outbox = write_outbox(records, work / "outbox.sqlite")
    t_log = time.perf_counter() - t1
    t2 = time.perf_counter()
    out = retrain(
        RetrainConfig(
            process="ro",
            data=str(outbox),
            base=base,
            out=work / "candidate",
            steps=args.steps,
            gate_days=args.gate_days,
        ),
        sys.stdout,
    )
    t_retrain = time.perf_counter() - t2
    cal = out.calibration
    print()
    print(f"{'parameter':<28} {'truth':>10} {'estimate':>10} {'error':>8} {'±std':>8}")
    errors = {}
    for name, truth in hidden.items():
        est = cal.params[name]
        errors[name] = 100.0 * (est / truth - 1.0)
        print(
            f"{name:<28} {truth:>10.4g} {est:>10.4g} {errors[name]:>+7.2f}% "
            f"{100 * cal.rel_std(name):>7.2f}%"
        )
    true_change = None
    true_trips = None
    if out.passed and out.package is not None:
        candidate = PackagePolicy.from_package(out.package)
        on_truth = run_gates(
            "ro",
            candidate,
            PackagePolicy.from_package(base / "package"),
            hidden,
            days=args.gate_days,
            simulators=("twin",),
        )
        true_change = on_truth.improvement_pct("twin")
        true_trips = float(np.sum(on_truth.metrics["twin"]["candidate"]["trips"]))
        print(
            f"\non the true plant ({len(on_truth.scenarios)} scenarios × {args.gate_days} d): "
            f"cost per m³ {true_change:+.2f} % vs the base agent, candidate trips {true_trips:.0f}"
        )
    print(
        f"\nwall: base {t_base:.0f} s, plant log {t_log:.1f} s ({len(records)} records), "
        f"retrain {t_retrain:.0f} s; gates {'passed' if out.passed else 'REJECTED'}"
    )
    print(f"work folder: {work}")
    result = {
        "bench": "continuous",
        "plant": args.plant,
        "records": len(records),
        "retrain_wall_ms": round(1000 * t_retrain),
        "calibration_replays": cal.replays,
        "a_error_pct": round(errors["water_permeability_lmh_bar"], 3),
        "b_error_pct": round(errors["salt_permeability_m_s"], 3),
        "kfp_error_pct": round(errors["fouling_rate_pa_s_m2"], 3),
        "eta_error_pct": round(errors["pump_efficiency"], 3),
        "gates_passed": out.passed,
        "twin_cost_change_pct": round(out.gates.improvement_pct("twin"), 3),
        "true_plant_cost_change_pct": None if true_change is None else round(true_change, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
