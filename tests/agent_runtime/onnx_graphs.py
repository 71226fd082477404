"""Tiny real ONNX policies built with ``onnx.helper`` (no torch export, so no exporter warnings).

Each policy is the graph the training export produces: raw observation → (x − mean) / std → MLP with
tanh → action scaled from [−1, 1] to [low, high]. ``reference_action`` computes the same in numpy.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


@dataclass(frozen=True)
class MlpWeights:
    mean: np.ndarray
    std: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    low: np.ndarray
    high: np.ndarray


def random_weights(
    n_obs: int,
    n_act: int,
    hidden: Sequence[int],
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
) -> MlpWeights:
    rng = np.random.default_rng(seed)
    sizes = [n_obs, *hidden, n_act]
    layers = tuple(
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (0.1 * rng.standard_normal(b)).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    )
    return MlpWeights(
        np.asarray(mean, np.float32),
        np.asarray(std, np.float32),
        layers,
        np.asarray(low, np.float32),
        np.asarray(high, np.float32),
    )


def mlp_onnx(w: MlpWeights) -> bytes:
    """Serialise ``w`` as an ONNX graph (float32 ``obs`` 1 × n_obs → ``action`` 1 × n_act)."""
    n_obs = w.layers[0][0].shape[0]
    n_act = w.layers[-1][0].shape[1]
    inits = [
        numpy_helper.from_array(w.mean, "mean"),
        numpy_helper.from_array(w.std, "std"),
        numpy_helper.from_array(((w.high - w.low) / 2).astype(np.float32), "half_span"),
        numpy_helper.from_array(((w.high + w.low) / 2).astype(np.float32), "centre"),
    ]
    nodes = [
        helper.make_node("Sub", ["obs", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["h0"]),
    ]
    for i, (weight, bias) in enumerate(w.layers):
        inits += [numpy_helper.from_array(weight, f"W{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [
            helper.make_node("Gemm", [f"h{i}", f"W{i}", f"b{i}"], [f"z{i}"]),
            helper.make_node("Tanh", [f"z{i}"], [f"h{i + 1}"]),
        ]
    last = f"h{len(w.layers)}"
    nodes += [
        helper.make_node("Mul", [last, "half_span"], ["scaled"]),
        helper.make_node("Add", ["scaled", "centre"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, n_act])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_action(w: MlpWeights, obs: np.ndarray) -> np.ndarray:
    h = (obs.astype(np.float64) - w.mean) / w.std
    for weight, bias in w.layers:
        h = np.tanh(h @ weight.astype(np.float64) + bias)
    return (w.low + w.high) / 2 + h * (w.high - w.low) / 2


def lookup_onnx(n_obs: int, n_act: int) -> bytes:
    """A policy whose action is row ``int(obs[0])`` of a 4-row table, plus ``0 * sqrt(obs[1])``.

    Valid for 0 ≤ obs[0] < 4 and obs[1] ≥ 0; a larger obs[0] makes ONNX Runtime fail (index out of
    bounds) and a negative obs[1] makes the action NaN.
    """
    table = np.arange(4 * n_act, dtype=np.float32).reshape(4, n_act) + 10.0
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([1], np.int64), "flat"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Slice", ["obs", "s0", "s1", "axis1"], ["first"]),
        helper.make_node("Slice", ["obs", "s1", "s2", "axis1"], ["second"]),
        helper.make_node("Cast", ["first"], ["first_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["first_i", "flat"], ["index"]),
        helper.make_node("Gather", ["table", "index"], ["row"], axis=0),
        helper.make_node("Sqrt", ["second"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["row", "nan_or_zero"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, n_act])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def double_input_onnx(n_obs: int, n_act: int) -> bytes:
    """A graph taking float64 observations (the runtime only feeds float32)."""
    inits = [numpy_helper.from_array(np.zeros((n_obs, n_act)), "W")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["action"])],
        "double",
        [helper.make_tensor_value_info("obs", TensorProto.DOUBLE, [1, n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.DOUBLE, [1, n_act])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()
