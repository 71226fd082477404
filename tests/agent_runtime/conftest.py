"""Session fixtures: RO-shaped tiny ONNX policies, a test signing key, and a package builder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.keys import TrustStore, public_key_of
from app.agent_runtime.manifest import (
    ManifestFields,
    NormalisationStats,
    TagSpec,
    TrainingSummary,
)
from app.agent_runtime.package import write_package
from app.plant.catalog import RO_CATALOG
from tests.agent_runtime.onnx_graphs import MlpWeights, mlp_onnx, random_weights

OBS_TAGS = tuple(t.name for t in RO_CATALOG.observations)
ACTIONS = (("feed_pressure_sp_bar", "bar", 6.0, 38.0), ("feed_flow_sp_m3h", "m3/h", 25.0, 65.0))
ACTION_LOW = np.array([a[2] for a in ACTIONS])
ACTION_HIGH = np.array([a[3] for a in ACTIONS])


def _stats() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lo = np.array([RO_CATALOG.tag(t).low for t in OBS_TAGS])
    hi = np.array([RO_CATALOG.tag(t).high for t in OBS_TAGS])
    mean = (lo + hi) / 2
    std = (hi - lo) / 8
    return mean, std, mean - 2.5 * std, mean + 2.5 * std


MEAN, STD, TRAIN_LOW, TRAIN_HIGH = _stats()


def obs_spec() -> tuple[TagSpec, ...]:
    return tuple(
        TagSpec(
            tag=t,
            unit=RO_CATALOG.tag(t).unit,
            low=RO_CATALOG.tag(t).low,
            high=RO_CATALOG.tag(t).high,
        )
        for t in OBS_TAGS
    )


def action_spec() -> tuple[TagSpec, ...]:
    return tuple(TagSpec(tag=t, unit=u, low=lo, high=hi) for t, u, lo, hi in ACTIONS)


def manifest_fields(**overrides: Any) -> ManifestFields:
    """Valid RO manifest fields; keyword arguments replace fields."""
    values: dict[str, Any] = dict(
        version="ro-test.1",
        process="ro",
        created=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        parent_version="ro-test.0",
        observations=obs_spec(),
        actions=action_spec(),
        normalisation=NormalisationStats(
            mean=tuple(MEAN),
            std=tuple(STD),
            train_low=tuple(TRAIN_LOW),
            train_high=tuple(TRAIN_HIGH),
        ),
        training=TrainingSummary(
            algorithm="PPO", env_steps=2048, seed=7, source="unit-test graphs", details={"k": 3}
        ),
        metrics={"cost_per_m3_eur": {"agent": 0.31, "fixed_pi": 0.37}, "hard_violations": 0},
        min_app="0.1",
        max_app=None,
    )
    values.update(overrides)
    return ManifestFields(**values)


def weights(
    seed: int,
    n_obs: int = len(OBS_TAGS),
    hidden: Sequence[int] = (16, 16),
    n_act: int = len(ACTIONS),
) -> MlpWeights:
    """Random MLP weights; with the default sizes, outputs span the RO action ranges."""
    mean = np.resize(MEAN, n_obs)
    std = np.resize(STD, n_obs)
    low = ACTION_LOW if n_act == len(ACTIONS) else np.zeros(n_act)
    high = ACTION_HIGH if n_act == len(ACTIONS) else np.ones(n_act)
    return random_weights(n_obs, n_act, hidden, seed, mean, std, low, high)


@dataclass(frozen=True)
class Graphs:
    main: MlpWeights
    members: tuple[MlpWeights, ...]
    main_bytes: bytes
    member_bytes: tuple[bytes, ...]


@pytest.fixture(scope="session")
def graphs() -> Graphs:
    main = weights(0)
    members = (weights(1), weights(2))
    return Graphs(main, members, mlp_onnx(main), tuple(mlp_onnx(m) for m in members))


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def trust_store(signing_key: Ed25519PrivateKey) -> TrustStore:
    return TrustStore([public_key_of(signing_key, "test")])


PackageFactory = Callable[..., Path]


@pytest.fixture
def make_package(tmp_path: Path, graphs: Graphs, signing_key: Ed25519PrivateKey) -> PackageFactory:
    """Write a signed package folder; keyword arguments override manifest fields or the files."""
    counter = iter(range(1000))

    def make(
        *,
        policy: bytes | None = None,
        ensemble: Sequence[bytes] | None = None,
        extra_files: dict[str, bytes] | None = None,
        key: Ed25519PrivateKey | None = None,
        check_graphs: bool = True,
        **fields: Any,
    ) -> Path:
        out = tmp_path / f"pkg{next(counter)}"
        write_package(
            out,
            manifest_fields(**fields),
            graphs.main_bytes if policy is None else policy,
            key or signing_key,
            ensemble=graphs.member_bytes if ensemble is None else ensemble,
            extra_files={"report.md": b"# Evaluation\n\nAhead of every baseline.\n"}
            if extra_files is None
            else extra_files,
            check_graphs=check_graphs,
        )
        return out

    return make


def typical_obs() -> np.ndarray:
    return MEAN.copy()
