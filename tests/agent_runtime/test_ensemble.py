"""Ensemble uncertainty from member spread."""

from __future__ import annotations

import numpy as np
import pytest

from app.agent_runtime.ensemble import EnsemblePolicy
from app.agent_runtime.errors import ObservationRefused
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.onnx_policy import OnnxPolicy
from app.agent_runtime.package import verify_package
from tests.agent_runtime.conftest import (
    ACTION_HIGH,
    ACTION_LOW,
    MEAN,
    OBS_TAGS,
    STD,
    Graphs,
    PackageFactory,
    manifest_fields,
    typical_obs,
)
from tests.agent_runtime.onnx_graphs import reference_action


def test_identical_members_give_zero_uncertainty(
    make_package: PackageFactory, trust_store: TrustStore, graphs: Graphs
) -> None:
    folder = make_package(ensemble=[graphs.main_bytes, graphs.main_bytes])
    ensemble = EnsemblePolicy.from_package(verify_package(folder, trust_store))
    result = ensemble.act(typical_obs())
    assert result.uncertainty == 0.0
    assert result.member_actions.shape == (3, 2)
    np.testing.assert_array_equal(result.spread, [0.0, 0.0])


def test_different_members_give_their_normalised_spread(
    make_package: PackageFactory, trust_store: TrustStore, graphs: Graphs
) -> None:
    ensemble = EnsemblePolicy.from_package(verify_package(make_package(), trust_store))
    rng = np.random.default_rng(5)
    for _ in range(20):
        obs = MEAN + STD * rng.standard_normal(len(OBS_TAGS))
        result = ensemble.act(obs)
        rows = np.array([reference_action(w, obs) for w in (graphs.main, *graphs.members)])
        expected = (rows.max(0) - rows.min(0)) / (ACTION_HIGH - ACTION_LOW)
        np.testing.assert_allclose(result.spread, expected, atol=1e-5)
        assert result.uncertainty == pytest.approx(expected.max(), abs=1e-5)
        assert 0.0 < result.uncertainty <= 1.0
        # The action is the main policy's, not an average.
        np.testing.assert_allclose(result.action, rows[0], atol=1e-4)


def test_no_members_means_no_uncertainty_estimate(
    make_package: PackageFactory, trust_store: TrustStore
) -> None:
    ensemble = EnsemblePolicy.from_package(verify_package(make_package(ensemble=()), trust_store))
    result = ensemble.act(typical_obs())
    assert result.uncertainty is None and result.spread is None
    assert result.member_actions.shape == (1, 2)


def test_nan_observation_is_refused_for_the_whole_ensemble(
    make_package: PackageFactory, trust_store: TrustStore
) -> None:
    ensemble = EnsemblePolicy.from_package(verify_package(make_package(), trust_store))
    obs = typical_obs()
    obs[OBS_TAGS.index("tank_level_pct")] = np.nan
    with pytest.raises(ObservationRefused, match="tank_level_pct"):
        ensemble.act(obs)


def test_action_range_is_checked(graphs: Graphs) -> None:
    fields = manifest_fields()
    main = OnnxPolicy.from_bytes(graphs.main_bytes, fields)
    with pytest.raises(ValueError, match="action_high must exceed"):
        EnsemblePolicy(main, [], ACTION_HIGH, ACTION_LOW)
    with pytest.raises(ValueError, match="2 entries"):
        EnsemblePolicy(main, [], [0.0], [1.0])
