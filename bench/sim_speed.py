"""Simulator speed: plant-steps per second, single plant and 1024 plants, per process.

Raw model ``step`` at the agent period with base-control setpoints and constant disturbances, and
(if ``app.plant.envs`` exists) the vectorised environment's ``step``. Goals for ``ro`` on 2 cores:
≥ 30k/s single, ≥ 1M/s vectorised.

    .venv/bin/python -m bench.sim_speed [--seconds S] [--clock wall|cpu] [--process ro ...]

``--clock cpu`` divides by this process's CPU time instead of wall time: on a shared, overloaded
machine wall time counts the time other jobs hold the cores, CPU time does not (it still pays
for their cache pressure, so it is an upper bound on a quiet machine's figure only roughly).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.plant.base_control import base_control
from app.plant.catalog import CATALOGS
from app.plant.models.base import ProcessModel
from app.plant.models.registry import MODEL_CLASSES
from app.plant.scenarios import RECIPES, RandomDisturbances

PROCESSES = ("ro", "hsbro", "uf")
VECTOR_N = 1024


def _model_class(process: str) -> type[ProcessModel] | None:
    return MODEL_CLASSES.get(process)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock: Callable[[], float] = time.perf_counter


def _rate(step: Callable[[], object], n: int, seconds: float) -> float:
    """Plant-steps per second of ``step`` (``n`` plants per call), timed for about ``seconds``."""
    step()
    calls, start = 0, _clock()
    while True:
        step()
        calls += 1
        elapsed = _clock() - start
        if elapsed >= seconds:
            return calls * n / elapsed


def model_rate(process: str, n: int, seconds: float) -> float | None:
    """Raw ``model.step`` rate with fixed base-control setpoints and one disturbance sample."""
    cls = _model_class(process)
    if cls is None:
        return None
    model = cls(n)
    model.reset(np.random.default_rng(0))
    catalog = CATALOGS[process]
    policy = base_control(process, catalog)
    policy.reset(n, np.random.default_rng(0))
    source = RandomDisturbances(RECIPES[process])
    source.reset(n, np.random.default_rng(0))
    dist = source.at(np.zeros(n))
    dist = {k: v for k, v in dist.items() if k in cls.disturbance_names}
    setpoints = policy.act(model.measurements(), 0.0, catalog.agent_period_s)
    held = {k: v for k, v in setpoints.items() if not catalog.tag(k).discrete}
    dt = catalog.agent_period_s
    return _rate(lambda: model.step(held, dist, dt), n, seconds)


def vecenv_rate(process: str, n: int, seconds: float) -> float | None:
    """``ProcessVecEnv.step`` rate with random actions, if ``app.plant.envs`` exists."""
    cls = _model_class(process)
    try:
        envs: Any = importlib.import_module("app.plant.envs")
    except ImportError:
        return None
    if cls is None or not hasattr(envs, "ProcessVecEnv"):
        return None
    model = cls(n)
    model.reset(np.random.default_rng(0))
    venv = envs.ProcessVecEnv(model, RandomDisturbances(RECIPES[process]))
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    low, high = venv.action_space.low, venv.action_space.high
    actions = rng.uniform(low, high, size=(n, *low.shape)).astype(np.float32)
    rate = _rate(lambda: venv.step(actions), n, seconds)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per figure")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="time base")
    parser.add_argument("--process", nargs="+", choices=PROCESSES, default=list(PROCESSES))
    args = parser.parse_args()
    global _clock
    _clock = CLOCKS[args.clock]
    figures: dict[str, float | int | str] = {
        "bench": "sim_speed",
        "cores": os.cpu_count() or 0,
        "clock": args.clock,
    }
    rows = []
    for process in args.process:
        for kind, fn in (("model", model_rate), ("vecenv", vecenv_rate)):
            single = fn(process, 1, args.seconds)
            vector = fn(process, VECTOR_N, args.seconds)
            if single is None or vector is None:
                rows.append((process, kind, "n/a", "n/a"))
                continue
            rows.append((process, kind, f"{single:,.0f}", f"{vector:,.0f}"))
            figures[f"{process}_{kind}_single_steps_per_s"] = round(single, 1)
            figures[f"{process}_{kind}_vector{VECTOR_N}_steps_per_s"] = round(vector, 1)
            figures[f"{process}_{kind}_vector_over_single_x"] = round(vector / single, 2)
    print(
        f"plant-steps per {args.clock}-clock second ({os.cpu_count()} cores; vector = "
        f"{VECTOR_N} plants per call)"
    )
    print(f"{'process':8} {'what':7} {'single':>12} {'vector':>14}")
    for process, kind, single_txt, vector_txt in rows:
        print(f"{process:8} {kind:7} {single_txt:>12} {vector_txt:>14}")
    goal_single = figures.get("ro_model_single_steps_per_s", 0.0)
    goal_vector = figures.get("ro_model_vector1024_steps_per_s", 0.0)
    print(
        f"ro goals: single ≥ 30,000/s (reached {goal_single:,.0f}); vector ≥ 1,000,000/s "
        f"(reached {goal_vector:,.0f})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
