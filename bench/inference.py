"""Per-step agent latency through ``PolicyHost`` vs bare ONNX Runtime vs SB3, and swap cost.

Run: ``.venv/bin/python -m bench.inference [--steps N] [--swaps N]``.

Two untrained SB3 PPO ``MlpPolicy`` 64×64 agents (19 RO observations → 2 setpoints) are exported to
ONNX (normalisation and action unscaling inside the graph), signed into agent packages and loaded
into a ``PolicyHost`` as active and candidate. On the same observations, interleaved:

- ``onnx pair``: the bare ``InferenceSession.run`` of both graphs (the floor);
- ``host pair``: ``host.infer(obs).result()``, active + candidate in one job, including the hop to
  the worker thread and back, the observation check, the OOD score and the shadow statistics;
- ``sb3 pair``: ``model.predict`` of both SB3 models (normalised observation in, unscaled out), the
  peer the ONNX path is compared with.

Then ``--swaps`` promote/rollback jobs run while a control loop infers at a fixed cadence; a cycle
whose result is not back before the next cycle starts is a missed cycle.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import tempfile
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from stable_baselines3 import PPO

from app.agent_runtime.host import PolicyHost, SwapResult
from app.agent_runtime.keys import TrustStore, public_key_of
from app.agent_runtime.manifest import ManifestFields, NormalisationStats, TagSpec, TrainingSummary
from app.agent_runtime.package import write_package
from app.agent_runtime.shadow import GateThresholds
from app.config import ControlSettings, ModePolicy
from app.domain import Quality, Slot
from app.plant.catalog import RO_CATALOG

ACTIONS = (("feed_pressure_sp_bar", "bar", 6.0, 38.0), ("feed_flow_sp_m3h", "m3/h", 25.0, 65.0))
OBS_TAGS = tuple(t.name for t in RO_CATALOG.observations)
LOW = np.array([t.low for t in RO_CATALOG.observations], dtype=np.float32)
HIGH = np.array([t.high for t in RO_CATALOG.observations], dtype=np.float32)
MEAN, STD = (LOW + HIGH) / 2, (HIGH - LOW) / 8
ACT_LOW = np.array([a[2] for a in ACTIONS], dtype=np.float32)
ACT_HIGH = np.array([a[3] for a in ACTIONS], dtype=np.float32)


class _BoxEnv(gym.Env[np.ndarray, np.ndarray]):
    """Spaces only: normalised RO observations in, [-1, 1] actions out (no training here)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (len(OBS_TAGS),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (len(ACTIONS),), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(len(OBS_TAGS), np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(len(OBS_TAGS), np.float32), 0.0, False, False, {}


class _Export(torch.nn.Module):
    """Raw observation → normalise → PPO mean action → clip to [-1, 1] → engineering units."""

    def __init__(self, model: PPO) -> None:
        super().__init__()
        self.policy = model.policy
        self.register_buffer("mean", torch.as_tensor(MEAN))
        self.register_buffer("std", torch.as_tensor(STD))
        self.register_buffer("low", torch.as_tensor(ACT_LOW))
        self.register_buffer("high", torch.as_tensor(ACT_HIGH))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs - self.mean) / self.std
        a = torch.clamp(self.policy._predict(x, deterministic=True), -1.0, 1.0)
        return self.low + 0.5 * (a + 1.0) * (self.high - self.low)


def _onnx(model: PPO) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Export(model).eval(),
            (torch.zeros(1, len(OBS_TAGS)),),
            buf,
            input_names=["obs"],
            output_names=["action"],
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def _fields(version: str) -> ManifestFields:
    return ManifestFields(
        version=version,
        process="ro",
        created=datetime.now(UTC),
        observations=tuple(
            TagSpec(tag=t.name, unit=t.unit, low=t.low, high=t.high)
            for t in RO_CATALOG.observations
        ),
        actions=tuple(TagSpec(tag=n, unit=u, low=lo, high=hi) for n, u, lo, hi in ACTIONS),
        normalisation=NormalisationStats(
            mean=tuple(map(float, MEAN)),
            std=tuple(map(float, STD)),
            train_low=tuple(map(float, LOW)),
            train_high=tuple(map(float, HIGH)),
        ),
        training=TrainingSummary(algorithm="PPO", env_steps=0, source="bench: untrained"),
        min_app="0.1",
    )


def _session(data: bytes) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e6, q))


def _control_loop(
    host: PolicyHost,
    obs: dict[str, tuple[float, Quality]],
    period_s: float,
    stop: threading.Event,
    out: dict[str, int],
) -> None:
    """Infer every ``period_s``; a result not back before the next cycle is a missed cycle."""
    next_t = time.perf_counter()
    while not stop.is_set():
        fut = host.infer(obs, {})
        next_t += period_s
        try:
            fut.result(timeout=max(next_t - time.perf_counter(), 0.0))
        except Exception:  # noqa: BLE001 - any failure to deliver in time is a missed cycle
            out["missed"] += 1
            out.setdefault("first_missed", out["cycles"])
        out["cycles"] += 1
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def main() -> None:
    """Run the benchmark and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--swaps", type=int, default=1000)
    parser.add_argument("--period-ms", type=float, default=5.0, help="control loop cadence")
    args = parser.parse_args()
    torch.set_num_threads(1)

    models = [PPO("MlpPolicy", _BoxEnv(), seed=s, device="cpu",
                  policy_kwargs={"net_arch": [64, 64]}) for s in (0, 1)]  # fmt: skip
    graphs = [_onnx(m) for m in models]
    key = Ed25519PrivateKey.generate()
    trust = TrustStore([public_key_of(key, "bench")])
    rng = np.random.default_rng(7)
    obs_rows = (MEAN + STD * rng.standard_normal((args.steps, len(OBS_TAGS)))).astype(np.float32)
    obs_rows = np.clip(obs_rows, LOW, HIGH)

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, graph in enumerate(graphs):
            path = Path(tmp) / f"pkg{i}"
            write_package(path, _fields(f"bench-{i}"), graph, key)
            paths.append(path)
        host = PolicyHost(trust, RO_CATALOG, control=ControlSettings(inference_deadline_s=1.0))
        try:
            host.load(paths[0], Slot.ACTIVE).result(30)
            host.load(paths[1]).result(30)
            sessions = [_session(g) for g in graphs]
            results = _latency(host, sessions, models, obs_rows)
            swap = _swaps(host, obs_rows[0], args.swaps, args.period_ms / 1e3)
        finally:
            host.close()

    onnx_pair, host_pair, host_job, sb3_pair, parity = results
    rows = [("onnx pair (bare run)", onnx_pair), ("host job (on the worker)", host_job),
            ("host pair (infer().result())", host_pair),
            ("sb3 pair (model.predict)", sb3_pair)]  # fmt: skip
    print(f"Per-step latency, active + candidate, {args.steps} observations (µs)")
    print(f"{'path':32} {'p50':>9} {'p99':>9}")
    for name, samples in rows:
        print(f"{name:32} {_pct(samples, 50):9.1f} {_pct(samples, 99):9.1f}")
    ratio50 = _pct(sb3_pair, 50) / _pct(onnx_pair, 50)
    ratio99 = _pct(sb3_pair, 99) / _pct(onnx_pair, 99)
    host_ratio = _pct(sb3_pair, 50) / _pct(host_pair, 50)
    print(f"sb3 / onnx pair: {ratio50:.1f}x at p50, {ratio99:.1f}x at p99; "
          f"sb3 / host pair: {host_ratio:.1f}x at p50; ONNX vs SB3 max |Δ| {parity:.2e}")  # fmt: skip
    in_job, round_trip, cycles, missed = swap
    print(f"\n{args.swaps} swaps (promote + rollbacks) while a control loop infers every "
          f"{args.period_ms:g} ms")  # fmt: skip
    print(f"{'swap':32} {'p50':>9} {'p99':>9} {'max':>9}")
    for name, samples in (("in the job (ms)", in_job), ("submit → result (ms)", round_trip)):
        ms = np.asarray(samples) * 1e3
        print(f"{name:32} {np.percentile(ms, 50):9.4f} {np.percentile(ms, 99):9.4f} "
              f"{ms.max():9.4f}")  # fmt: skip
    print(f"control cycles {cycles}, missed {missed}")
    figures = {
        "bench": "inference",
        "onnx_pair_p50_us": round(_pct(onnx_pair, 50), 2),
        "onnx_pair_p99_us": round(_pct(onnx_pair, 99), 2),
        "host_job_p50_us": round(_pct(host_job, 50), 2),
        "host_job_p99_us": round(_pct(host_job, 99), 2),
        "host_pair_p50_us": round(_pct(host_pair, 50), 2),
        "host_pair_p99_us": round(_pct(host_pair, 99), 2),
        "sb3_pair_p50_us": round(_pct(sb3_pair, 50), 2),
        "sb3_pair_p99_us": round(_pct(sb3_pair, 99), 2),
        "sb3_over_onnx_p50_x": round(ratio50, 2),
        "sb3_over_onnx_p99_x": round(ratio99, 2),
        "sb3_over_host_p50_x": round(host_ratio, 2),
        "swap_in_job_p99_ms": round(float(np.percentile(in_job, 99)) * 1e3, 4),
        "swap_round_trip_p99_ms": round(float(np.percentile(round_trip, 99)) * 1e3, 4),
        "swap_round_trip_max_ms": round(float(np.max(round_trip)) * 1e3, 4),
        "control_cycles": cycles,
        "missed_cycles": missed,
    }
    print(json.dumps(figures))


def _latency(
    host: PolicyHost, sessions: list[Any], models: list[PPO], obs_rows: np.ndarray
) -> tuple[list[float], list[float], list[float], list[float], float]:
    onnx_pair: list[float] = []
    host_pair: list[float] = []
    host_job: list[float] = []
    sb3_pair: list[float] = []
    parity = 0.0
    names = [(s.get_inputs()[0].name, s.get_outputs()[0].name) for s in sessions]
    warm = obs_rows[: min(200, len(obs_rows))]
    gc.collect()
    gc.disable()
    try:
        for phase, rows in (("warm", warm), ("timed", obs_rows)):
            for row in rows:
                x = row.reshape(1, -1)
                t0 = time.perf_counter()
                out = [s.run([o], {i: x})[0] for s, (i, o) in zip(sessions, names, strict=True)]
                t1 = time.perf_counter()
                observations = {
                    t: (float(v), Quality.GOOD) for t, v in zip(OBS_TAGS, row, strict=True)
                }
                t2 = time.perf_counter()
                job = host.infer(observations, {}).result(5)
                t3 = time.perf_counter()
                norm = (row - MEAN) / STD
                sb3 = []
                for m in models:
                    a, _ = m.predict(norm, deterministic=True)
                    sb3.append(ACT_LOW + 0.5 * (np.clip(a, -1, 1) + 1.0) * (ACT_HIGH - ACT_LOW))
                t4 = time.perf_counter()
                if phase == "timed":
                    onnx_pair.append(t1 - t0)
                    host_pair.append(t3 - t2)
                    host_job.append(job.elapsed_s)
                    sb3_pair.append(t4 - t3)
                    parity = max(parity, float(np.max(np.abs(np.asarray(out)[:, 0] - sb3))))
    finally:
        gc.enable()
    return onnx_pair, host_pair, host_job, sb3_pair, parity


def _swaps(
    host: PolicyHost, row: np.ndarray, n: int, period_s: float
) -> tuple[list[float], list[float], int, int]:
    obs = {t: (float(v), Quality.GOOD) for t, v in zip(OBS_TAGS, row, strict=True)}
    host.infer(obs, {}).result(5)
    report = host.gate_report(
        ModePolicy(min_shadow_steps=1), GateThresholds(max_violations=10**9, min_kpi_samples=0)
    ).result(5)
    counts = {"cycles": 0, "missed": 0}
    stop = threading.Event()
    loop = threading.Thread(
        target=_control_loop, args=(host, obs, period_s, stop, counts), name="bench-control"
    )
    loop.start()
    in_job: list[float] = []
    round_trip: list[float] = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            fut = host.promote(report) if i == 0 else host.rollback("bench")
            result: SwapResult = fut.result(5)
            round_trip.append(time.perf_counter() - t0)
            if not result.accepted:
                raise RuntimeError(f"swap {i} refused: {result.reason}")
            in_job.append(result.elapsed_s)
            time.sleep(period_s / 5)
    finally:
        stop.set()
        loop.join()
    if counts["missed"]:
        print(f"first missed control cycle: #{counts['first_missed']}")
    return in_job, round_trip, counts["cycles"], counts["missed"]


if __name__ == "__main__":
    main()
