"""Helpers for the policy-host tests: constant-action ONNX graphs and RO measurements."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.domain import Quality
from app.plant.models.ro import RoModel
from tests.agent_runtime.conftest import OBS_TAGS
from tests.agent_runtime.onnx_graphs import IR_VERSION, OPSET


def constant_onnx(values: Sequence[float], n_obs: int = len(OBS_TAGS)) -> bytes:
    """A policy whose action is always ``values`` (0 · obs + values): its version is its action."""
    n_act = len(values)
    inits = [
        numpy_helper.from_array(np.zeros((n_obs, n_act), np.float32), "W"),
        numpy_helper.from_array(np.asarray(values, np.float32).reshape(1, n_act), "c"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["obs", "W"], ["zero"]),
            helper.make_node("Add", ["zero", "c"], ["action"]),
        ],
        "constant",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, n_act])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def ro_measurements(
    fouling: float = 0.3, pressure_bar: float = 12.0, minutes: int = 30
) -> dict[str, float]:
    """Noise-free measurements of a simulated RO plant after ``minutes`` at ``pressure_bar``."""
    live = RoModel(1)
    live.reset(np.random.default_rng(0), params={"initial_fouling_ratio": fouling})
    for _ in range(minutes):
        live.step({"feed_pressure_sp_bar": np.array([pressure_bar])}, {}, 60.0)
    return {k: float(v[0]) for k, v in live.measurements().items()}


def good(values: dict[str, float]) -> dict[str, tuple[float, Quality]]:
    """The same values, each with GOOD quality (the shape ``PolicyHost.infer`` takes)."""
    return {k: (v, Quality.GOOD) for k, v in values.items()}
