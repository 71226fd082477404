"""Gaussian sensor noise per tag (process-models.md §10), seeded and vectorised over plants.

Standard deviations by engineering unit (the "±" of §10 read as one standard deviation) [J]:
pressure 0.5 % of full scale, flow 1.5 % of reading, conductivity 3 % of reading, temperature
0.2 K; pH 0.05, ORP 5 mV, percentages 0.5 % of full scale, power 1 % of reading. Setpoint
readbacks, counters and discrete tags are exact. Noisy values are clipped to the tag's range, as a
transmitter saturates at its span.

Two sources of randomness:
- :meth:`SensorNoise.apply` draws counter-based normals from a per-plant key and step counter, so a
  plant's noise does not depend on how many plants are stepped together (vectorised environments
  equal single ones for the same seeds);
- :func:`plc_noise` wraps a :class:`numpy.random.Generator` for the simulated PLC (one plant).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.domain import TagRole
from app.plant.catalog import ProcessCatalog

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class NoiseSpec:
    """Standard deviation of one sensor: σ = full_scale·(high − low) + reading·|x| + absolute."""

    full_scale: float = 0.0
    reading: float = 0.0
    absolute: float = 0.0


NOISE_BY_UNIT: dict[str, NoiseSpec] = {
    "bar": NoiseSpec(full_scale=0.005),
    "m3/h": NoiseSpec(reading=0.015),
    "L/min": NoiseSpec(reading=0.015),
    "µS/cm": NoiseSpec(reading=0.03),
    "°C": NoiseSpec(absolute=0.2),
    "pH": NoiseSpec(absolute=0.05),
    "mV": NoiseSpec(absolute=5.0),
    "%": NoiseSpec(full_scale=0.005),
    "kW": NoiseSpec(reading=0.01),
    "L": NoiseSpec(full_scale=0.005),
    "NTU": NoiseSpec(reading=0.05),
}
"""Default noise per engineering unit; units not listed are exact (hours, counters, phases)."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LANE = np.uint64(0xD1B54A32D192ED03)


def _splitmix(z: U64) -> U64:
    """SplitMix64 finaliser: a bijective 64-bit mix (Steele, Lea, Flood 2014)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def counter_normals(keys: U64, counters: npt.NDArray[np.integer], k: int) -> F64:
    """Standard normals (n, k) that depend only on each plant's key, counter and column.

    Args:
        keys: Per-plant 64-bit keys, shape (n,).
        counters: Per-plant draw counters (e.g. the step index), shape (n,).
        k: Normals per plant.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    base = _splitmix(keys ^ (np.asarray(counters).astype(np.uint64) * _GOLDEN))
    lane = np.arange(2 * k, dtype=np.uint64) * _LANE
    bits = _splitmix(base[:, None] + lane[None, :])
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2.0**53)
    u1, u2 = u[:, :k], u[:, k:]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def plant_key(seed: int | np.integer, episode: int | np.integer = 0) -> np.uint64:
    """The 64-bit noise key of a plant from its seed and episode number."""
    mixed = _splitmix(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return np.uint64(_splitmix(mixed ^ np.array([int(episode)], dtype=np.uint64) * _GOLDEN)[0])


class SensorNoise:
    """Noise model for a set of tags of one catalogue, in a fixed column order.

    Args:
        catalog: Process catalogue (units and ranges).
        tags: Tags in column order (default: the OBSERVATION tags in catalogue order). Tags that are
            not observations, discrete tags and units without a default are exact.
        overrides: Noise per tag name, replacing the unit default.

    Raises:
        KeyError: If a tag is not in the catalogue.
    """

    def __init__(
        self,
        catalog: ProcessCatalog,
        tags: Sequence[str] | None = None,
        overrides: Mapping[str, NoiseSpec] | None = None,
    ) -> None:
        names = tuple(tags) if tags is not None else tuple(t.name for t in catalog.observations)
        defs = [catalog.tag(name) for name in names]
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(names)
        if unknown:
            raise KeyError(f"noise overrides for tags not in the noise set: {sorted(unknown)}")
        absolute, reading = [], []
        for t in defs:
            spec = overrides.get(t.name)
            if spec is None:
                exact = t.role is not TagRole.OBSERVATION or t.discrete
                spec = NoiseSpec() if exact else NOISE_BY_UNIT.get(t.unit, NoiseSpec())
            absolute.append(spec.full_scale * (t.high - t.low) + spec.absolute)
            reading.append(spec.reading)
        self.tags = names
        self.low = np.array([t.low for t in defs], dtype=np.float64)
        self.high = np.array([t.high for t in defs], dtype=np.float64)
        self.sigma_absolute = np.array(absolute, dtype=np.float64)
        self.sigma_reading = np.array(reading, dtype=np.float64)

    def sigma(self, values: F64) -> F64:
        """Standard deviation of each value (n, k)."""
        return self.sigma_absolute + self.sigma_reading * np.abs(values)

    def add(self, values: F64, normals: F64) -> F64:
        """``values`` (n, k) plus σ·``normals``, clipped to the tag ranges."""
        noisy = values + self.sigma(values) * normals
        return np.clip(noisy, self.low, self.high)

    def apply(self, values: F64, keys: U64, counters: npt.NDArray[np.integer]) -> F64:
        """Noisy ``values`` (n, k) from counter-based normals (see :func:`counter_normals`)."""
        values = np.asarray(values, dtype=np.float64)
        return self.add(values, counter_normals(keys, counters, values.shape[1]))


def plc_noise(
    catalog: ProcessCatalog, rng: np.random.Generator
) -> Callable[[Mapping[str, float]], dict[str, float]]:
    """Noise for the simulated PLC: true tag values in, measured values out (same keys).

    Only the catalogue's OBSERVATION tags receive noise; every other key passes through.
    """
    noise = SensorNoise(catalog)
    index = {name: i for i, name in enumerate(noise.tags)}

    def measure(values: Mapping[str, float]) -> dict[str, float]:
        out = dict(values)
        present = [name for name in values if name in index]
        if not present:
            return out
        cols = np.array([index[name] for name in present])
        true = np.array([float(values[name]) for name in present])
        sigma = noise.sigma_absolute[cols] + noise.sigma_reading[cols] * np.abs(true)
        noisy = np.clip(
            true + sigma * rng.standard_normal(len(present)), noise.low[cols], noise.high[cols]
        )
        out.update(zip(present, (float(v) for v in noisy), strict=True))
        return out

    return measure
