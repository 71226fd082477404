"""The contract every process model follows.

A model simulates ``n`` independent plants at once. All state lives in numpy arrays whose first axis
is the plant index, so one ``step`` advances every plant with array operations only (no per-plant
Python loop). Fast physics (pressures, flows, flux profile) is solved algebraically each step; only
slow states (fouling, tank levels, actuator positions) are integrated.

Users of a model:
- ``app.plant.envs`` (gymnasium ``Env`` with ``n == 1`` and an SB3 ``VecEnv`` with ``n == N``);
- ``app.plant.server`` (the simulated PLC, stepping one plant in scaled wall-clock time);
- ``app.plant.baselines`` and ``intelwatt eval``;
- the agent runtime's what-if preview (``copy()`` then step ahead).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np

from app.plant.catalog import ProcessCatalog

FloatArray = np.ndarray
"""A float64 array with one entry per plant (shape ``(n,)``) unless stated otherwise."""


@dataclass(slots=True)
class StepResult:
    """What happened in all plants during one ``step``; every array has shape ``(n,)``.

    Attributes:
        product_m3: Net product water delivered (after flushes, backwash water, CIP losses).
        feed_m3: Feed water drawn.
        energy_kwh: Electrical energy used (pumps, heaters, blowers).
        chemicals_eur: Cost of cleaning chemicals used.
        downtime_s: Non-producing time inside the step (CIP, CEB, backwash, trips).
        quality_excess: Relative amount by which product quality exceeded its limit (0 if within).
        pressure_excess: Relative amount by which pressure exceeded its soft limit (0 if within).
        tripped: True where a hard limit was hit (the plant stopped; episode terminates).
        trip_reason: Short reason per plant ("" if not tripped).
        interventions: Count of safety-layer interventions this step, by layer
            (``clip``, ``rate``, ``interlock``).
        cleanings: Number of cleanings started this step, by kind (``cip``, ``ceb``, ``backwash``).
        finished: True where the plant completed its work and stopped without a fault (a batch
            process at the end of its batch); ``None`` for continuous processes.
    """

    product_m3: FloatArray
    feed_m3: FloatArray
    energy_kwh: FloatArray
    chemicals_eur: FloatArray
    downtime_s: FloatArray
    quality_excess: FloatArray
    pressure_excess: FloatArray
    tripped: np.ndarray
    trip_reason: np.ndarray
    interventions: dict[str, FloatArray] = field(default_factory=dict)
    cleanings: dict[str, FloatArray] = field(default_factory=dict)
    finished: np.ndarray | None = None


class ProcessModel(ABC):
    """Base class of the vectorised process models.

    Subclasses define ``catalog`` and ``disturbance_names`` and implement the abstract methods.
    Setpoints are absolute engineering values keyed by the catalogue's SETPOINT and COMMAND tags;
    disturbances are exogenous inputs keyed by ``disturbance_names``.
    """

    catalog: ClassVar[ProcessCatalog]
    disturbance_names: ClassVar[tuple[str, ...]]
    """Exogenous inputs this model accepts, e.g. ``feed_tds_gl``, ``feed_temperature_c``."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"a model needs at least one plant, got n={n}")
        self.n = n

    @abstractmethod
    def reset(
        self,
        rng: np.random.Generator,
        randomize: float = 0.0,
        params: Mapping[str, FloatArray | float] | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Start plants from a clean, running state.

        Args:
            rng: Source of all randomness (initial state, parameter draws).
            randomize: Relative half-width of uniform parameter randomisation (0.2 = ±20 %).
            params: Explicit parameter overrides by name (scalar or per-plant array).
            mask: Boolean array ``(n,)``; only plants where it is True are reset (all if ``None``).
                Used by vectorised envs to restart the plants whose episode ended.
        """

    @abstractmethod
    def step(
        self,
        setpoints: Mapping[str, FloatArray],
        disturbances: Mapping[str, FloatArray],
        dt_s: float,
    ) -> StepResult:
        """Advance every plant by ``dt_s`` seconds holding ``setpoints`` and ``disturbances``."""

    @abstractmethod
    def measurements(self) -> dict[str, FloatArray]:
        """Noise-free values of every OBSERVATION tag and every setpoint readback, by tag name."""

    @abstractmethod
    def hidden(self) -> dict[str, FloatArray]:
        """States a plant cannot measure (fouling resistance, true TDS), for info and tests."""

    @abstractmethod
    def params(self) -> dict[str, FloatArray]:
        """Current physical parameters by name (per plant)."""

    def copy(self) -> Self:
        """An independent deep copy, e.g. to preview a setpoint change without touching the plant."""
        return copy.deepcopy(self)


class Policy(ABC):
    """Anything that chooses setpoints from measurements: baselines, the PLC's base control, agents.

    ``act`` receives the measurements of all ``n`` plants (tag → array ``(n,)``, as returned by
    ``ProcessModel.measurements`` or read from a PLC) and returns absolute setpoints and commands
    (tag → array ``(n,)``) for the catalogue's SETPOINT and COMMAND tags it controls.
    """

    name: str = "policy"

    @abstractmethod
    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget all internal state (integrators, timers) for ``n`` plants."""

    @abstractmethod
    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Setpoints for the next ``dt_s`` seconds at simulation time ``t_s``."""


class DisturbanceSource(ABC):
    """Exogenous inputs over time (feed quality, temperature, demand, tariff, fouling events).

    Implementations: scenario files and seeded random generators in ``app.plant.scenarios``.
    Keys are a model's ``disturbance_names`` plus economic inputs such as ``tariff_eur_kwh``.
    """

    @abstractmethod
    def reset(self, n: int, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Start new disturbance trajectories for ``n`` plants (only where ``mask`` is True)."""

    @abstractmethod
    def at(self, t_s: FloatArray) -> dict[str, FloatArray]:
        """Disturbance values for each plant at its own simulation time ``t_s`` (shape ``(n,)``)."""


class ConstantDisturbances(DisturbanceSource):
    """The same values for every plant at every time; for tests and steady-state checks."""

    def __init__(self, values: Mapping[str, float]) -> None:
        self._values = dict(values)
        self._n = 1

    def reset(self, n: int, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Remember the number of plants; constants need no randomness."""
        self._n = n

    def at(self, t_s: FloatArray) -> dict[str, FloatArray]:
        """The constant values, broadcast to the shape of ``t_s``."""
        shape = np.shape(t_s)
        return {k: np.full(shape, v, dtype=np.float64) for k, v in self._values.items()}
