"""Latency of ``OnnxPolicy.act`` for a 64×64 MLP (19 RO observations → 2 setpoints).

Run: ``.venv/bin/python -m bench.onnx_policy [--calls N]``. Compares, in the same run, the bare
``InferenceSession.run`` call (the peer: what the wrapper costs on top), ``OnnxPolicy.act`` (checks
the observation and the action), and ``EnsemblePolicy.act`` with two members (three sessions).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.agent_runtime.ensemble import EnsemblePolicy
from app.agent_runtime.manifest import (
    ManifestFields,
    NormalisationStats,
    TagSpec,
    TrainingSummary,
)
from app.agent_runtime.onnx_policy import OnnxPolicy
from app.plant.catalog import RO_CATALOG

HIDDEN = (64, 64)
ACTIONS = (("feed_pressure_sp_bar", "bar", 6.0, 38.0), ("feed_flow_sp_m3h", "m3/h", 25.0, 65.0))


def _manifest() -> ManifestFields:
    tags = RO_CATALOG.observations
    lo = np.array([t.low for t in tags])
    hi = np.array([t.high for t in tags])
    mean, std = (lo + hi) / 2, (hi - lo) / 8
    return ManifestFields(
        version="bench.1",
        process="ro",
        created=datetime.now(UTC),
        observations=tuple(TagSpec(tag=t.name, unit=t.unit, low=t.low, high=t.high) for t in tags),
        actions=tuple(TagSpec(tag=n, unit=u, low=a, high=b) for n, u, a, b in ACTIONS),
        normalisation=NormalisationStats(
            mean=tuple(mean), std=tuple(std), train_low=tuple(lo), train_high=tuple(hi)
        ),
        training=TrainingSummary(algorithm="none", env_steps=0, source="benchmark"),
        min_app="0.1",
    )


def _mlp(manifest: ManifestFields, seed: int) -> bytes:
    """The exported-policy shape: normalise, 64×64 tanh MLP, tanh output scaled to the range."""
    rng = np.random.default_rng(seed)
    n_obs, n_act = len(manifest.observations), len(manifest.actions)
    low = np.array([a.low for a in manifest.actions], np.float32)
    high = np.array([a.high for a in manifest.actions], np.float32)
    inits = [
        numpy_helper.from_array(np.array(manifest.normalisation.mean, np.float32), "mean"),
        numpy_helper.from_array(np.array(manifest.normalisation.std, np.float32), "std"),
        numpy_helper.from_array((high - low) / 2, "half"),
        numpy_helper.from_array((high + low) / 2, "centre"),
    ]
    nodes = [
        helper.make_node("Sub", ["obs", "mean"], ["c"]),
        helper.make_node("Div", ["c", "std"], ["h0"]),
    ]
    sizes = [n_obs, *HIDDEN, n_act]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(weight, f"W{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", [f"h{i}", f"W{i}", f"b{i}"], [f"z{i}"]),
            helper.make_node("Tanh", [f"z{i}"], [f"h{i + 1}"]),
        ]
    nodes += [
        helper.make_node("Mul", [f"h{len(sizes) - 1}", "half"], ["s"]),
        helper.make_node("Add", ["s", "centre"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, n_act])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _interleaved_us(
    fns: list[Callable[[np.ndarray], object]], inputs: list[np.ndarray], calls: int
) -> list[np.ndarray]:
    """Time each function once per observation, in turn, so machine noise hits all alike."""
    for i in range(1000):  # warm-up: first runs allocate ORT's buffers
        for fn, obs in zip(fns, inputs, strict=True):
            fn(obs[i % len(obs)])
    out = np.empty((len(fns), calls))
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(calls):
            for k, (fn, obs) in enumerate(zip(fns, inputs, strict=True)):
                o = obs[i % len(obs)]
                t0 = clock()
                fn(o)
                out[k, i] = clock() - t0
    finally:
        gc.enable()
    return list(out / 1000.0)


def main() -> None:
    """Print a latency table and, as the last line, the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()

    manifest = _manifest()
    main_bytes = _mlp(manifest, 0)
    policy = OnnxPolicy.from_bytes(main_bytes, manifest)
    ensemble = EnsemblePolicy.from_manifest(
        manifest, main_bytes, [(f"ensemble/m{i}.onnx", _mlp(manifest, i)) for i in (1, 2)]
    )
    rng = np.random.default_rng(0)
    mean = np.array(manifest.normalisation.mean)
    std = np.array(manifest.normalisation.std)
    obs = mean + std * rng.standard_normal((4096, len(mean)))
    obs32 = obs.astype(np.float32).reshape(-1, 1, len(mean))

    session = policy._session  # the bare peer: no checks, float32 input prepared in advance

    def bare(o: np.ndarray) -> object:
        return session.run(["action"], {"obs": o})

    names = ["session.run (bare peer)", "OnnxPolicy.act", "EnsemblePolicy.act (1+2)"]
    timings = _interleaved_us([bare, policy.act, ensemble.act], [obs32, obs, obs], args.calls)
    rows = dict(zip(names, timings, strict=True))
    print(
        f"64x64 MLP, {len(mean)} obs -> {len(ACTIONS)} actions, {args.calls} calls each, 1 thread"
    )
    print(f"{'':28s} {'p50 µs':>8s} {'p99 µs':>8s} {'mean µs':>8s} {'max µs':>8s}")
    for name, lat in rows.items():
        p50, p99 = np.percentile(lat, [50, 99])
        print(f"{name:28s} {p50:8.1f} {p99:8.1f} {lat.mean():8.1f} {lat.max():8.1f}")
    bare_lat, act_lat, ens_lat = rows.values()
    figures = {
        "bench": "onnx_policy",
        "calls": args.calls,
        "act_p50_us": round(float(np.percentile(act_lat, 50)), 2),
        "act_p99_us": round(float(np.percentile(act_lat, 99)), 2),
        "bare_run_p50_us": round(float(np.percentile(bare_lat, 50)), 2),
        "bare_run_p99_us": round(float(np.percentile(bare_lat, 99)), 2),
        "ensemble3_p50_us": round(float(np.percentile(ens_lat, 50)), 2),
        "ensemble3_p99_us": round(float(np.percentile(ens_lat, 99)), 2),
        "act_over_bare_p50_x": round(
            float(np.percentile(act_lat, 50) / np.percentile(bare_lat, 50)), 3
        ),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
