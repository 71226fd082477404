"""Prices, the per-step economic reward and cost per m³ (process-models.md §11, §13).

Generic over processes: everything is computed from a :class:`StepResult` plus the electricity
tariff (``tariff_eur_kwh`` in the disturbances, else the price set's default). Adding a process is
one entry in :data:`PRICES`.

Reward per agent step (§11.1), in units of ``reward_scale_eur_h`` so |r| ≲ 1 at the design point:

    r = (water value − energy − chemicals − downtime − unmet demand − membrane wear)
        / (reward_scale_eur_h · Δt[h])
        − λ_q·soft(quality excess) − λ_P·soft(pressure excess) − λ_u·Σ(Δsetpoint/max_move)²

with soft(x) = (softplus(k·x) − ln 2)/k (zero at the limit, slope → 1 far beyond it). A trip adds
−``trip_penalty``; the time limit adds −``terminal_state_eur``·state (e.g. the fouling left on the
membrane, so the agent does not skip cleaning near the end). SEC is never rewarded directly: it is a
ratio an agent can improve by producing less (§11.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.plant.models.base import StepResult

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ProcessPrices:
    """Prices (EUR) and reward weights of one process; all [J] unless a site supplies its own.

    Attributes:
        water_eur_m3: Value of one m³ of product water delivered.
        energy_eur_kwh: Electricity price when the disturbances carry no ``tariff_eur_kwh``.
        downtime_eur_h: Cost of an hour without production beyond the water not produced (staff,
            downstream disruption).
        unmet_demand_eur_m3: Cost of one m³ of demand the product tank could not serve.
        membrane_eur_h: Amortised membrane replacement per hour of plant time.
        reward_scale_eur_h: Net value rate that maps to a reward of 1 per step.
        quality_weight: λ_q of the product-quality margin.
        pressure_weight: λ_P of the pressure margin.
        smoothness_weight: λ_u of the squared normalised setpoint moves.
        trip_penalty: Reward added (negated) on a hard trip.
        terminal_state_key: Key of ``model.hidden()`` valued at the time limit.
        terminal_state_eur: EUR per unit of that state (negative value at the time limit).
        softplus_sharpness: k of the soft margins.
    """

    water_eur_m3: float
    energy_eur_kwh: float
    downtime_eur_h: float
    unmet_demand_eur_m3: float
    membrane_eur_h: float
    reward_scale_eur_h: float
    quality_weight: float
    pressure_weight: float
    smoothness_weight: float
    trip_penalty: float
    terminal_state_key: str
    terminal_state_eur: float
    softplus_sharpness: float = 10.0

    def __post_init__(self) -> None:
        for name in (
            "water_eur_m3",
            "energy_eur_kwh",
            "downtime_eur_h",
            "unmet_demand_eur_m3",
            "membrane_eur_h",
            "quality_weight",
            "pressure_weight",
            "smoothness_weight",
            "trip_penalty",
            "terminal_state_eur",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"price {name!r} must be finite and >= 0, got {value}")
        for name in ("reward_scale_eur_h", "softplus_sharpness"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"price {name!r} must be finite and > 0, got {value}")


PRICES: dict[str, ProcessPrices] = {
    # Industrial brackish RO train (25 m³/h design permeate): process water valued like bought-in
    # water, 0.15 EUR/kWh, a CIP (300 EUR chemicals + 6 h) is worth about 10 % of fouling
    # resistance, so a fouling ratio of 1 is valued at about 4500 EUR.
    "ro": ProcessPrices(
        water_eur_m3=1.0,
        energy_eur_kwh=0.15,
        downtime_eur_h=10.0,
        unmet_demand_eur_m3=3.0,
        membrane_eur_h=0.5,
        reward_scale_eur_h=25.0,
        quality_weight=2.0,
        pressure_weight=2.0,
        smoothness_weight=0.01,
        trip_penalty=50.0,
        terminal_state_key="fouling_ratio",
        terminal_state_eur=4500.0,
    ),
    # HSBRO pilot on Cr(III) rinse water (≈ 0.5 m³/h permeate): a m³ of permeate stands for a m³
    # of rinse water neither treated nor disposed of plus the electrolyte returned to the bath
    # (Karimi 2024 reports a 50x saving over treatment and disposal); purge time is downtime;
    # ``quality_excess`` is the concentrate's distance from bath strength, booked per cycle; the
    # permeate still owed to the permeate line at the time limit is water not delivered.
    "hsbro": ProcessPrices(
        water_eur_m3=40.0,
        energy_eur_kwh=0.15,
        downtime_eur_h=5.0,
        unmet_demand_eur_m3=0.0,
        membrane_eur_h=0.2,
        reward_scale_eur_h=20.0,
        quality_weight=30.0,
        pressure_weight=5.0,
        smoothness_weight=0.01,
        trip_penalty=500.0,  # rl_hrro: -500/-1000; below ~55 draining to the trip pays
        terminal_state_key="permeate_line_deficit_l",
        terminal_state_eur=0.04,
    ),
    # UF rack (≈ 37 m³/h filtrate at 60 LMH): filtrate valued as RO/potable pre-treatment; CEB and
    # CIP chemicals come from the model; irreversible fouling left at the time limit is valued
    # at roughly a CIP (chemicals, 4 h downtime) per doubling of the membrane resistance.
    "uf": ProcessPrices(
        water_eur_m3=0.3,
        energy_eur_kwh=0.15,
        downtime_eur_h=5.0,
        unmet_demand_eur_m3=0.0,
        membrane_eur_h=0.3,
        reward_scale_eur_h=10.0,
        quality_weight=2.0,
        pressure_weight=2.0,
        smoothness_weight=0.01,
        trip_penalty=500.0,
        terminal_state_key="fouling_ratio",
        terminal_state_eur=500.0,
    ),
}
"""Price set per process name. HSBRO/UF add theirs here."""


def prices_for(process: str) -> ProcessPrices:
    """The price set of ``process``; raises ``KeyError`` listing the known processes."""
    try:
        return PRICES[process]
    except KeyError:
        raise KeyError(
            f"no prices for process {process!r}; known: {', '.join(sorted(PRICES))}"
        ) from None


@dataclass(frozen=True, slots=True)
class StepCosts:
    """Money flows of one step per plant (EUR, arrays (n,))."""

    water_value: F64
    energy: F64
    chemicals: F64
    downtime: F64
    unmet_demand: F64
    membrane: F64

    @property
    def cost(self) -> F64:
        """Everything except the water value."""
        return self.energy + self.chemicals + self.downtime + self.unmet_demand + self.membrane

    @property
    def net(self) -> F64:
        """Water value minus cost."""
        return self.water_value - self.cost


def _f64(x: npt.ArrayLike) -> F64:
    return np.asarray(x, dtype=np.float64)


def step_costs(
    result: StepResult,
    prices: ProcessPrices,
    disturbances: Mapping[str, npt.ArrayLike],
    dt_s: float,
    *,
    unmet_demand_m3: npt.ArrayLike | None = None,
) -> StepCosts:
    """Money flows of one model step.

    Args:
        result: What the model reported for the step.
        prices: Price set of the process.
        disturbances: The step's disturbances; ``tariff_eur_kwh`` overrides the energy price.
        dt_s: Step length in seconds.
        unmet_demand_m3: Demand the product tank could not serve (e.g. ``model.hidden()``).
    """
    product = _f64(result.product_m3)
    tariff = _f64(disturbances.get("tariff_eur_kwh", prices.energy_eur_kwh))
    zero = np.zeros_like(product)
    unmet = zero if unmet_demand_m3 is None else _f64(unmet_demand_m3)
    return StepCosts(
        water_value=product * prices.water_eur_m3,
        energy=_f64(result.energy_kwh) * tariff,
        chemicals=_f64(result.chemicals_eur) + zero,
        downtime=_f64(result.downtime_s) * (prices.downtime_eur_h / 3600.0),
        unmet_demand=unmet * prices.unmet_demand_eur_m3,
        membrane=zero + prices.membrane_eur_h * dt_s / 3600.0,
    )


def step_cost_eur(
    process: str,
    result: StepResult,
    disturbances: Mapping[str, npt.ArrayLike],
    dt_s: float,
    *,
    unmet_demand_m3: npt.ArrayLike | None = None,
) -> tuple[F64, F64]:
    """(cost, water value) in EUR per plant for one step, with the prices of ``process``."""
    costs = step_costs(
        result, prices_for(process), disturbances, dt_s, unmet_demand_m3=unmet_demand_m3
    )
    return costs.cost, costs.water_value


def soft_margin(excess: npt.ArrayLike, sharpness: float) -> F64:
    """(softplus(k·x) − ln 2)/k for x ≥ 0: zero at the limit, slope ½ there, → x far beyond."""
    x = np.maximum(_f64(excess), 0.0) * sharpness
    return (np.logaddexp(0.0, x) - math.log(2.0)) / sharpness


def step_reward(
    result: StepResult,
    prices: ProcessPrices,
    disturbances: Mapping[str, npt.ArrayLike],
    dt_s: float,
    *,
    setpoint_moves: npt.ArrayLike | None = None,
    unmet_demand_m3: npt.ArrayLike | None = None,
    costs: StepCosts | None = None,
) -> F64:
    """Economic reward of one agent step per plant (trip and terminal terms excluded).

    Args:
        result: What the model reported for the step.
        prices: Price set of the process.
        disturbances: The step's disturbances (``tariff_eur_kwh`` if priced).
        dt_s: Agent step in seconds.
        setpoint_moves: Applied setpoint changes divided by ``max_move``, shape (n, n_setpoints).
        unmet_demand_m3: Demand the product tank could not serve.
        costs: The step's :func:`step_costs` if already computed (then ``unmet_demand_m3`` is
            ignored).
    """
    if costs is None:
        costs = step_costs(result, prices, disturbances, dt_s, unmet_demand_m3=unmet_demand_m3)
    k = prices.softplus_sharpness
    reward = costs.net / (prices.reward_scale_eur_h * dt_s / 3600.0)
    reward = reward - prices.quality_weight * soft_margin(result.quality_excess, k)
    reward = reward - prices.pressure_weight * soft_margin(result.pressure_excess, k)
    if setpoint_moves is not None:
        moves = np.atleast_2d(_f64(setpoint_moves))
        reward = reward - prices.smoothness_weight * np.sum(moves * moves, axis=1)
    return np.asarray(reward, dtype=np.float64)


def terminal_reward(hidden: Mapping[str, npt.ArrayLike], prices: ProcessPrices, dt_s: float) -> F64:
    """Value of the plant state at the time limit, in reward units of a ``dt_s`` step.

    Raises:
        KeyError: If the model's hidden states lack the price set's ``terminal_state_key``.
    """
    try:
        state = _f64(hidden[prices.terminal_state_key])
    except KeyError:
        raise KeyError(
            f"terminal value needs hidden state {prices.terminal_state_key!r}; "
            f"the model provides {sorted(hidden)}"
        ) from None
    return -prices.terminal_state_eur * state / (prices.reward_scale_eur_h * dt_s / 3600.0)


def cost_per_m3(cost_eur: npt.ArrayLike, product_m3: npt.ArrayLike) -> F64:
    """Cost per m³ of product (NaN where nothing was produced)."""
    cost, product = np.broadcast_arrays(_f64(cost_eur), _f64(product_m3))
    out = np.full(cost.shape, np.nan)
    np.divide(cost, product, out=out, where=product > 0.0)
    return out
