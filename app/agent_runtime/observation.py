"""Observation vectors in manifest order, and how far an observation is from the training data.

The control core passes the latest value and quality of each tag; an observation is refused as a
whole (naming every offending tag) if any tag is missing, not GOOD, or not finite, so a policy never
acts on a guess. The out-of-distribution (OOD) score compares the observation with the training
statistics stored in the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.agent_runtime.errors import ObservationRefused
from app.agent_runtime.manifest import ManifestFields
from app.agent_runtime.onnx_policy import FloatArray
from app.domain import Quality, Sample


@dataclass(frozen=True, slots=True)
class OodScore:
    """How unusual an observation is compared with the training data.

    Attributes:
        max_abs_z: Largest |value − mean| / std over the observations (the OOD score; 0 = typical).
        worst_tag: Tag with the largest |z|.
        rms_z: Root mean square of z: the diagonal Mahalanobis distance divided by √n.
        fraction_outside: Share of observations outside their training min … max range.
        outside_tags: Those tags, in manifest order.
    """

    max_abs_z: float
    worst_tag: str
    rms_z: float
    fraction_outside: float
    outside_tags: tuple[str, ...]

    @property
    def score(self) -> float:
        """The single OOD figure used for abstention (``max_abs_z``)."""
        return self.max_abs_z


class ObservationBuilder:
    """Builds observation vectors and OOD scores for one manifest."""

    __slots__ = ("_high", "_low", "_mean", "_std", "tags")

    def __init__(self, manifest: ManifestFields) -> None:
        self.tags = manifest.observation_tags
        stats = manifest.normalisation
        self._mean = np.asarray(stats.mean, dtype=np.float64)
        self._std = np.asarray(stats.std, dtype=np.float64)
        self._low = np.asarray(stats.train_low, dtype=np.float64)
        self._high = np.asarray(stats.train_high, dtype=np.float64)

    def build(self, values: Mapping[str, tuple[float, Quality] | Sample]) -> FloatArray:
        """The observation vector in manifest order.

        Args:
            values: Latest (value, quality) or :class:`~app.domain.Sample` per tag; extra tags are
                ignored.

        Raises:
            ObservationRefused: Naming every tag that is missing, not GOOD, or not finite.
        """
        obs = np.empty(len(self.tags), dtype=np.float64)
        problems: dict[str, str] = {}
        for i, tag in enumerate(self.tags):
            item = values.get(tag)
            if item is None:
                problems[tag] = "missing"
                continue
            value, quality = (item.value, item.quality) if isinstance(item, Sample) else item
            if quality != Quality.GOOD:
                problems[tag] = f"quality {Quality(quality).value}"
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                problems[tag] = f"not a number ({value!r})"
                continue
            if not math.isfinite(number):
                problems[tag] = f"not finite ({number})"
                continue
            obs[i] = number
        if problems:
            raise ObservationRefused(problems)
        return obs

    def ood(self, obs: npt.ArrayLike) -> OodScore:
        """Score ``obs`` (manifest order) against the training statistics.

        Raises:
            ObservationRefused: ``obs`` has the wrong length or is not finite.
        """
        x = np.asarray(obs, dtype=np.float64).reshape(-1)
        if x.shape != self._mean.shape:
            raise ObservationRefused(
                {"observation": f"{x.size} values, the manifest lists {self._mean.size}"}
            )
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x))
            raise ObservationRefused({self.tags[i]: f"not finite ({x[i]})" for i in bad})
        z = np.abs(x - self._mean) / self._std
        worst = int(np.argmax(z))
        outside = (x < self._low) | (x > self._high)
        return OodScore(
            max_abs_z=float(z[worst]),
            worst_tag=self.tags[worst],
            rms_z=float(np.sqrt(np.mean(z * z))),
            fraction_outside=float(outside.mean()),
            outside_tags=tuple(self.tags[i] for i in np.flatnonzero(outside)),
        )


__all__ = ["ObservationBuilder", "OodScore"]
