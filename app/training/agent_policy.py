"""An agent package as an evaluation policy: verified, run through ONNX Runtime, no SB3, no pickle.

The observation is built exactly as the console builds it (``ObservationBuilder`` over the tag
values, all of quality GOOD in simulation), the action comes from ``EnsemblePolicy`` (main policy;
members give the uncertainty), and the one rule the graph cannot apply, the minimum interval
between two requests of a command, is applied here as the training environment applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from app.agent_runtime.ensemble import EnsemblePolicy
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.manifest import ManifestFields
from app.agent_runtime.observation import ObservationBuilder
from app.agent_runtime.package import verify_package
from app.domain import Quality
from app.plant.models.base import FloatArray, Policy

DEFAULT_TRUST_STORE = Path(__file__).resolve().parents[2] / "resources" / "trust"
MIN_INTERVAL_KEY = "min_command_interval_h"
"""Key of ``training.details`` holding the command intervals the agent was trained with."""


class PackagePolicy(Policy):
    """Runs an agent package's ONNX graphs on every plant, one observation at a time.

    Args:
        fields: The package's manifest (or manifest fields before writing).
        ensemble: The opened main policy and members.
        name: Name in evaluation tables.

    Attributes:
        uncertainty: Sum of the per-step ensemble uncertainty, per plant (``None`` values count 0).
        ood: Sum of the per-step OOD score (largest |z|), per plant.
        steps: Steps taken per plant.
    """

    def __init__(self, fields: ManifestFields, ensemble: EnsemblePolicy, name: str) -> None:
        self.name = name
        self.fields = fields
        self.ensemble = ensemble
        self.builder = ObservationBuilder(fields)
        self.action_tags = fields.action_tags
        details = fields.training.details.get(MIN_INTERVAL_KEY) or {}
        intervals = details if isinstance(details, dict) else {}
        self._interval_s = np.array(
            [float(intervals.get(tag, 0.0) or 0.0) * 3600.0 for tag in self.action_tags]  # type: ignore[arg-type]
        )
        self._last = np.zeros((0, len(self.action_tags)))
        self.uncertainty = np.zeros(0)
        self.ood = np.zeros(0)
        self.steps = np.zeros(0)

    @classmethod
    def from_package(cls, path: Path, trust_store: TrustStore | None = None) -> PackagePolicy:
        """Verify ``path`` (signature, hashes, spec) against ``trust_store`` and open it.

        Raises:
            PackageRefused: Verification failed (subclass names the reason and culprit).
            PolicyGraphInvalid: An ONNX file does not fit the manifest.
        """
        store = trust_store if trust_store is not None else TrustStore.load(DEFAULT_TRUST_STORE)
        package = verify_package(path, store)
        name = f"agent:{package.manifest.version}"
        return cls(package.manifest, EnsemblePolicy.from_package(package), name)

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget command times and statistics."""
        self._last = np.full((n, len(self.action_tags)), -np.inf)
        self.uncertainty = np.zeros(n)
        self.ood = np.zeros(n)
        self.steps = np.zeros(n)

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Absolute setpoints and commands for every plant."""
        n = self._last.shape[0]
        tags = self.builder.tags
        columns = {tag: np.asarray(measurements[tag], dtype=np.float64).reshape(n) for tag in tags}
        out = np.empty((n, len(self.action_tags)))
        for i in range(n):
            obs = self.builder.build({tag: (float(columns[tag][i]), Quality.GOOD) for tag in tags})
            step = self.ensemble.act(obs)
            out[i] = step.action
            self.uncertainty[i] += step.uncertainty or 0.0
            self.ood[i] += self.builder.ood(obs).score
        self.steps += 1
        is_command = self._interval_s > 0
        requested = (out > 0.5) & is_command
        allowed = (t_s - self._last) >= self._interval_s
        out = np.where(is_command & ~allowed, 0.0, out)
        self._last = np.where(requested & allowed, t_s, self._last)
        return {tag: out[:, j].copy() for j, tag in enumerate(self.action_tags)}
