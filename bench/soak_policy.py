"""A signed random-MLP RO agent package for benchmarks (no dependency on the test tree).

The graph is what the training export produces: raw observation → (x − mean) / std → MLP with
tanh → action scaled from [−1, 1] to the action range. Means and spreads come from the RO catalog,
so a random MLP's actions span the whole action range and the safety envelope gets exercised.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from app.agent_runtime.manifest import (
    ManifestFields,
    NormalisationStats,
    TagSpec,
    TrainingSummary,
)
from app.agent_runtime.package import write_package
from app.plant.catalog import RO_CATALOG

OPSET = 17
IR_VERSION = 8
ACTIONS = (("feed_pressure_sp_bar", "bar", 6.0, 38.0), ("feed_flow_sp_m3h", "m3/h", 25.0, 65.0))
"""(tag, unit, low, high) of the RO actions the package drives."""


def _obs_specs() -> tuple[TagSpec, ...]:
    return tuple(
        TagSpec(tag=t.name, unit=t.unit, low=t.low, high=t.high) for t in RO_CATALOG.observations
    )


def _stats() -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([t.low for t in RO_CATALOG.observations], np.float32)
    hi = np.array([t.high for t in RO_CATALOG.observations], np.float32)
    return (lo + hi) / 2, (hi - lo) / 8


def manifest_fields(version: str) -> ManifestFields:
    """Valid RO manifest fields for a random-MLP package called ``version``."""
    mean, std = _stats()
    return ManifestFields(
        version=version,
        process="ro",
        created=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        parent_version=None,
        observations=_obs_specs(),
        actions=tuple(TagSpec(tag=t, unit=u, low=lo, high=hi) for t, u, lo, hi in ACTIONS),
        normalisation=NormalisationStats(
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            train_low=tuple(float(m - 2.5 * s) for m, s in zip(mean, std, strict=True)),
            train_high=tuple(float(m + 2.5 * s) for m, s in zip(mean, std, strict=True)),
        ),
        training=TrainingSummary(
            algorithm="PPO", env_steps=0, seed=0, source="bench random MLP", details={}
        ),
        metrics={"hard_violations": 0},
        min_app="0.1",
        max_app=None,
    )


def random_mlp_onnx(seed: int, hidden: tuple[int, ...] = (16, 16)) -> bytes:
    """A random RO policy graph (float32 ``obs`` 1 × n_obs → ``action`` 1 × n_act)."""
    rng = np.random.default_rng(seed)
    mean, std = _stats()
    low = np.array([a[2] for a in ACTIONS], np.float32)
    high = np.array([a[3] for a in ACTIONS], np.float32)
    sizes = [len(mean), *hidden, len(ACTIONS)]
    inits = [
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(std, "std"),
        numpy_helper.from_array((high - low) / 2, "half_span"),
        numpy_helper.from_array((high + low) / 2, "centre"),
    ]
    nodes = [
        helper.make_node("Sub", ["obs", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["h0"]),
    ]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(b)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"W{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [
            helper.make_node("Gemm", [f"h{i}", f"W{i}", f"b{i}"], [f"z{i}"]),
            helper.make_node("Tanh", [f"z{i}"], [f"h{i + 1}"]),
        ]
    nodes += [
        helper.make_node("Mul", [f"h{len(sizes) - 1}", "half_span"], ["scaled"]),
        helper.make_node("Add", ["scaled", "centre"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, len(mean)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, len(ACTIONS)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def write_random_mlp_package(
    folder: Path, key: Ed25519PrivateKey, version: str = "ro-soak", seed: int = 0
) -> Path:
    """Write a signed random-MLP RO package into ``folder`` and return the folder."""
    write_package(folder, manifest_fields(version), random_mlp_onnx(seed), key)
    return folder
