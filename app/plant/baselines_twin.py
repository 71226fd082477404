"""Hourly re-optimised setpoints by closed-loop look-ahead on a copy of the plant model.

``optimal_hourly`` for processes whose economics hinge on sequences (UF filtration/backwash
cycles, HSBRO semi-batch/batch/purge cycles) rather than on a steady state: every ``period_s``
the policy copies the plant model once per candidate setpoint plan, runs each copy for
``horizon_s`` with the plan held and the process's own rule policy issuing the commands (backwash,
CEB, CIP, phase switch), and keeps per plant the feasible plan with the lowest economic cost per m³
of product (``app.plant.economics``, the reward's prices). Between re-optimisations the plan is
held and the same rule policy runs the plant.

What the look-ahead may see:

- The plant model's current state and parameters (``ProcessModel.copy()``): an oracle twin, the
  ``rto`` "oracle" variant of process-models.md §12 (the RO ``optimal_hourly`` instead calibrates
  A and B from measurements).
- Disturbances: a persistence forecast built from the *measured* feed values at decision time
  (``forecast``), the published tariff held at its current value; never the scenario's future
  values nor its unmeasured inputs (e.g. the UF fouling factor stays at its nominal 1).

A plan is feasible if no copy trips, no step shows quality or pressure excess and the optional
end condition holds; without a feasible plan the plan with the least pressure excess is used, the
design plan if every plan trips.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import numpy as np

from app.plant.economics import step_cost_eur
from app.plant.models.base import FloatArray, Policy, ProcessModel

Plan = dict[str, FloatArray]
"""Setpoint tag → value per plant, held for one period."""


class PlannedRule(Protocol):
    """A rule policy whose continuous setpoints follow a plan (commands stay its own)."""

    def set_plan(self, plan: Plan) -> None:
        """Use ``plan`` (tag → value per plant) from the next ``act`` on."""

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget rule state for ``n`` plants."""

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Setpoints (from the plan) and commands (from the rule)."""


Forecast = Callable[[Mapping[str, FloatArray]], dict[str, FloatArray]]
"""Measured values → the disturbances the look-ahead holds constant."""


class TwinOptimalHourly(Policy):
    """Hourly plan choice by closed-loop look-ahead on copies of the plant model.

    Args:
        process: Process name (prices, cost function).
        rule: The rule policy that runs the plant under a plan (and inside every look-ahead).
        grid: Candidate values per setpoint tag; the plans are their Cartesian product.
        design: The design plan (always a candidate; the fallback if every plan trips).
        forecast: Disturbances of the look-ahead from the measurements at decision time.
        period_s: Re-optimisation period.
        horizon_s: Look-ahead length.
        active: Plants worth a look-ahead (e.g. an HSBRO batch not yet finished); default all.
            Inactive plants keep their plan.
        end_check: Condition on the twin's measurements at the end of the look-ahead that a
            feasible plan must meet (e.g. UF: no CIP due), so a plan cannot spend the headroom
            the next hours need.
        watch: Measured feed values whose relative change by more than ``watch_change`` since
            the plan was made triggers an early re-optimisation of the plants concerned (an
            event-triggered RTO: a turbidity surge cannot wait for the next hour).
        watch_change: Relative change that triggers.
    """

    name = "optimal_hourly"

    def __init__(
        self,
        process: str,
        rule: PlannedRule,
        grid: Mapping[str, Sequence[float]],
        design: Mapping[str, float],
        forecast: Forecast,
        period_s: float = 3600.0,
        horizon_s: float = 3600.0,
        active: Callable[[Mapping[str, FloatArray]], np.ndarray] | None = None,
        end_check: Callable[[Mapping[str, FloatArray]], np.ndarray] | None = None,
        watch: Sequence[str] = (),
        watch_change: float = 0.3,
    ) -> None:
        if set(grid) != set(design):
            raise ValueError(f"grid tags {sorted(grid)} differ from design tags {sorted(design)}")
        if period_s <= 0 or horizon_s <= 0:
            raise ValueError(f"period_s and horizon_s must be positive: {period_s}, {horizon_s}")
        self.process = process
        self.rule = rule
        self.tags = tuple(grid)
        combos = {tuple(float(design[k]) for k in self.tags)}
        combos |= set(itertools.product(*(tuple(map(float, grid[k])) for k in self.tags)))
        self.plans: tuple[tuple[float, ...], ...] = tuple(sorted(combos))
        self.design = {k: float(v) for k, v in design.items()}
        self.forecast = forecast
        self.period_s, self.horizon_s = period_s, horizon_s
        self.active, self.end_check = active, end_check
        self.watch, self.watch_change = tuple(watch), watch_change
        self._watched: dict[str, FloatArray] = {}
        self._model: ProcessModel | None = None
        self._next_t = 0.0
        self._plan: Plan = {}
        self.last_cost_per_m3: FloatArray = np.zeros(0)

    def bind(self, model: ProcessModel) -> None:
        """Use ``model`` (the plant) as the template of the look-ahead copies."""
        self._model = model

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget the plan and the rule state."""
        self.rule.reset(n, rng)
        self._next_t = 0.0
        self._plan = {}
        self._watched = {}
        self.last_cost_per_m3 = np.full(n, np.nan)

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """The rule's commands under the held plan; a new plan when the period has elapsed."""
        if self._model is None:
            raise RuntimeError("optimal_hourly needs the plant model: call bind(model) first")
        n = self._model.n
        if not self._plan or t_s >= self._next_t - 1e-6:
            self._next_t = t_s + self.period_s
            due = np.ones(n, dtype=bool)
        else:
            due = self._changed(measurements)
        if self.active is not None and self._plan:
            due &= np.asarray(self.active(measurements), dtype=bool)
        if due.any():
            plan = self._optimise(measurements, t_s, dt_s)
            if self._plan:
                plan = {k: np.where(due, v, self._plan[k]) for k, v in plan.items()}
            self._plan = plan
            self.rule.set_plan(self._plan)
            for key in self.watch:
                now = np.asarray(measurements[key], dtype=np.float64)
                self._watched[key] = np.where(due, now, self._watched.get(key, now))
        return self.rule.act(measurements, t_s, dt_s)

    def _changed(self, m: Mapping[str, FloatArray]) -> np.ndarray:
        """Plants whose watched measurements moved by more than ``watch_change`` since the plan."""
        assert self._model is not None
        out = np.zeros(self._model.n, dtype=bool)
        for key, then in self._watched.items():
            now = np.asarray(m[key], dtype=np.float64)
            out |= np.abs(now - then) > self.watch_change * np.abs(then)
        return out

    def _optimise(self, m: Mapping[str, FloatArray], t_s: float, dt_s: float) -> Plan:
        assert self._model is not None
        n, g = self._model.n, len(self.plans)
        dist = {
            k: np.repeat(np.asarray(v, dtype=np.float64), g) for k, v in self.forecast(m).items()
        }
        tariff = np.asarray(m.get("tariff_eur_kwh", np.full(n, np.nan)), dtype=np.float64)
        if np.all(np.isfinite(tariff)):
            dist["tariff_eur_kwh"] = np.repeat(tariff, g)
        plans = np.asarray(self.plans)
        # One twin of n·g plants, plant-major: row i·g + k is plant i under plan k.
        twin = tile(self._model.copy(), n, g)
        rule = tile(copy.deepcopy(self.rule), n, g)
        rule.set_plan({k: np.tile(plans[:, i], n) for i, k in enumerate(self.tags)})
        steps = max(1, round(self.horizon_s / dt_s))
        cost_m3, excess = self._look_ahead(twin, rule, dist, t_s, dt_s, steps)
        cost_m3, excess = cost_m3.reshape(n, g), excess.reshape(n, g)
        choice = np.argmin(cost_m3, axis=1)
        rows = np.arange(n)
        best = cost_m3[rows, choice]
        found = np.isfinite(best)
        self.last_cost_per_m3 = np.where(found, best, np.nan)
        # Without a feasible plan: the one with the least pressure excess, if one avoids a trip.
        gentle = np.argmin(excess, axis=1)
        choice = np.where(found, choice, gentle)
        usable = found | np.isfinite(excess[rows, gentle])
        design = np.asarray([self.design[k] for k in self.tags])
        chosen = np.where(usable[:, None], plans[choice], design[None, :])
        return {k: chosen[:, i].copy() for i, k in enumerate(self.tags)}

    def _look_ahead(
        self,
        twin: ProcessModel,
        rule: PlannedRule,
        dist: Mapping[str, FloatArray],
        t_s: float,
        dt_s: float,
        steps: int,
    ) -> tuple[FloatArray, FloatArray]:
        """Per twin plant: cost per m³ (inf where infeasible) and the peak pressure excess.

        The excess is inf where the twin tripped.
        """
        size = twin.n
        cost = np.zeros(size)
        product = np.zeros(size)
        peak = np.zeros(size)
        ok = np.ones(size, dtype=bool)
        seen = {k: v for k, v in dist.items() if k in _SEEN}
        for k in range(steps):
            sp = rule.act({**twin.measurements(), **seen}, t_s + k * dt_s, dt_s)
            r = twin.step(sp, dist, dt_s)
            c, _ = step_cost_eur(self.process, r, dist, dt_s)
            cost += c
            product += np.asarray(r.product_m3, dtype=np.float64)
            ok &= ~np.asarray(r.tripped, dtype=bool)
            ok &= np.asarray(r.quality_excess) <= 0.0
            peak = np.maximum(peak, np.asarray(r.pressure_excess, dtype=np.float64))
            peak = np.where(np.asarray(r.tripped, dtype=bool), np.inf, peak)
        ok &= peak <= 0.0
        if self.end_check is not None:
            ok &= np.asarray(self.end_check(twin.measurements()), dtype=bool)
        ok &= (product > 0.0) & np.isfinite(cost)
        with np.errstate(divide="ignore", invalid="ignore"):
            cost_m3 = np.asarray(np.where(ok, cost / product, np.inf), dtype=np.float64)
        return cost_m3, peak


T = TypeVar("T")


def tile(obj: T, n: int, g: int) -> T:
    """``obj`` (a model or rule of ``n`` plants) turned into ``n·g`` plants, each repeated ``g`` times.

    Every per-plant array attribute (first axis ``n``, also inside dict attributes) is repeated
    plant-major, and the plant count (``n``/``_n``) set to ``n·g``. Works for models and rules
    whose per-plant state lives in such attributes (UF, HSBRO, their rules); ``obj`` is changed
    in place and returned.
    """

    def rep(value: object) -> object:
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
            return np.repeat(value, g, axis=0)
        return value

    for name, value in list(vars(obj).items()):
        if name in ("n", "_n") and isinstance(value, int) and value == n:
            setattr(obj, name, n * g)
        elif isinstance(value, dict):
            setattr(obj, name, {k: rep(v) for k, v in value.items()})
        else:
            setattr(obj, name, rep(value))
    return obj


_SEEN = ("tariff_eur_kwh", "demand_m3h")
"""Published inputs a rule may read, as ``intelwatt eval`` hands them to every policy."""
