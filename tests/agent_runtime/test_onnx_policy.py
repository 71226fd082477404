"""OnnxPolicy: real ONNX Runtime sessions checked against the manifest."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.agent_runtime.errors import ObservationRefused, PolicyGraphInvalid, PolicyRuntimeError
from app.agent_runtime.onnx_policy import OnnxPolicy
from tests.agent_runtime.conftest import (
    ACTION_HIGH,
    ACTION_LOW,
    MEAN,
    OBS_TAGS,
    STD,
    Graphs,
    manifest_fields,
    typical_obs,
    weights,
)
from tests.agent_runtime.onnx_graphs import (
    double_input_onnx,
    lookup_onnx,
    mlp_onnx,
    reference_action,
)


def test_act_matches_the_reference_network(graphs: Graphs) -> None:
    policy = OnnxPolicy.from_bytes(graphs.main_bytes, manifest_fields())
    assert (policy.n_obs, policy.n_act) == (len(OBS_TAGS), 2)
    rng = np.random.default_rng(11)
    for _ in range(200):
        obs = MEAN + STD * rng.standard_normal(len(OBS_TAGS))
        action = policy.act(obs)
        assert action.dtype == np.float64 and action.shape == (2,)
        np.testing.assert_allclose(action, reference_action(graphs.main, obs), rtol=1e-4, atol=1e-4)
        assert np.all(action >= ACTION_LOW) and np.all(action <= ACTION_HIGH)
    np.testing.assert_array_equal(
        policy.act(typical_obs().reshape(1, -1)), policy.act(typical_obs())
    )


def test_wrong_input_size_is_refused() -> None:
    wide = mlp_onnx(weights(4, n_obs=len(OBS_TAGS) + 1))
    with pytest.raises(PolicyGraphInvalid, match=r"shape \[1, 20\].*lists 19 observations") as exc:
        OnnxPolicy.from_bytes(wide, manifest_fields(), name="ensemble/member_03.onnx")
    assert exc.value.culprit == "ensemble/member_03.onnx"


def test_wrong_output_size_is_refused() -> None:
    three = mlp_onnx(weights(4, n_act=3))
    with pytest.raises(PolicyGraphInvalid, match=r"output 'action' has shape \[1, 3\].*2 actions"):
        OnnxPolicy.from_bytes(three, manifest_fields())


def test_float64_graph_and_garbage_are_refused() -> None:
    with pytest.raises(PolicyGraphInvalid, match=r"tensor.double.*expected float32"):
        OnnxPolicy.from_bytes(double_input_onnx(len(OBS_TAGS), 2), manifest_fields())
    with pytest.raises(PolicyGraphInvalid, match="not a loadable ONNX model"):
        OnnxPolicy.from_bytes(b"\x80\x04 a pickle, perhaps", manifest_fields())


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (np.nan, "not finite"),
        (np.inf, "not finite"),
        (-np.inf, "not finite"),
        (1e39, "1e[+]39 is beyond float32 range"),
    ],
)
def test_non_finite_observation_is_refused_before_inference(
    graphs: Graphs, bad: float, why: str
) -> None:
    policy = OnnxPolicy.from_bytes(graphs.main_bytes, manifest_fields())
    obs = typical_obs()
    i = OBS_TAGS.index("feed_ph")
    obs[i] = bad
    with pytest.raises(ObservationRefused, match=f"feed_ph: {why}") as exc:
        policy.act(obs)
    assert list(exc.value.problems) == ["feed_ph"]


def test_wrong_observation_shape(graphs: Graphs) -> None:
    policy = OnnxPolicy.from_bytes(graphs.main_bytes, manifest_fields())
    for obs in (np.zeros(3), np.zeros((2, len(OBS_TAGS))), np.zeros((1, 1, len(OBS_TAGS) + 1))):
        with pytest.raises(ObservationRefused, match="the policy expects"):
            policy.act(obs)


def test_runtime_failure_and_nan_action_are_typed() -> None:
    policy = OnnxPolicy.from_bytes(
        lookup_onnx(len(OBS_TAGS), 2),
        manifest_fields(
            normalisation=manifest_fields().normalisation.model_copy(
                update={"mean": (1.0, 4.0, *MEAN[2:])}
            )
        ),
    )
    obs = typical_obs()
    obs[0], obs[1] = 2.0, 9.0
    np.testing.assert_array_equal(policy.act(obs), [14.0, 15.0])
    obs[0] = 7.0  # row 7 of a 4-row table
    with pytest.raises(PolicyRuntimeError, match=r"policy.onnx: ONNX Runtime failed"):
        policy.act(obs)
    obs[0], obs[1] = 1.0, -1.0  # sqrt(-1) → NaN action
    with pytest.raises(PolicyRuntimeError, match=r"returned \[nan, nan\]"):
        policy.act(obs)


def test_dry_run_catches_a_graph_that_fails_on_the_training_mean() -> None:
    fields = manifest_fields()
    stats = fields.normalisation.model_copy(update={"mean": (9.0, *MEAN[1:])})
    with pytest.raises(PolicyGraphInvalid, match="dry run"):
        OnnxPolicy.from_bytes(lookup_onnx(len(OBS_TAGS), 2), manifest_fields(normalisation=stats))


def test_one_session_per_thread_gives_identical_results(graphs: Graphs) -> None:
    """Each worker owns its own session (as the PolicyHost will); results are deterministic."""
    obs = np.random.default_rng(3).normal(MEAN, STD, size=(50, len(OBS_TAGS)))
    expected = OnnxPolicy.from_bytes(graphs.main_bytes, manifest_fields())
    reference = np.array([expected.act(o) for o in obs])
    results: list[np.ndarray] = []

    def work() -> None:
        own = OnnxPolicy.from_bytes(graphs.main_bytes, manifest_fields())
        results.append(np.array([own.act(o) for o in obs]))

    threads = [threading.Thread(target=work, name=f"onnx-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    for r in results:
        np.testing.assert_array_equal(r, reference)


def test_huge_but_float32_representable_values_pass(graphs: Graphs) -> None:
    """The fast finiteness check falls back to a per-value check instead of refusing."""
    policy = OnnxPolicy.from_bytes(graphs.main_bytes, manifest_fields())
    obs = typical_obs()
    obs[0] = obs[1] = 3.0e38  # their squares overflow the fast check's bound
    action = policy.act(obs)
    np.testing.assert_allclose(action, reference_action(graphs.main, obs), atol=1e-3)
