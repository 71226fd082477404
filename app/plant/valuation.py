"""Money per step for evaluation and the ``optimal_hourly`` objective (process-models.md §11, §13).

cost = energy · tariff + cleaning chemicals;  value = product · water value;  net = value − cost.
Cost per m³ of an episode is Σ cost / Σ product (energy and chemicals; lost production shows in
the net value instead). The electricity price is the scenario's ``tariff_eur_kwh`` where given.

The prices are judgement [J] and belong to one place: when ``app.plant.economics`` (the training
reward) lands, ``step_money`` should delegate to it so evaluation and reward use the same prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from app.plant.models.base import FloatArray, StepResult


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices of one process.

    Attributes:
        water_eur_m3: Value of one m³ of net product.
        electricity_eur_kwh: Electricity price where the scenario has no tariff.
    """

    water_eur_m3: float
    electricity_eur_kwh: float = 0.15


PRICES: dict[str, Prices] = {
    "ro": Prices(water_eur_m3=1.0),
    "uf": Prices(water_eur_m3=0.3),
    # Recovered rinse water replaces fresh deionised water and avoids waste treatment [P10].
    "hsbro": Prices(water_eur_m3=5.0),
}


def step_money(
    process: str,
    result: StepResult,
    disturbances: Mapping[str, FloatArray],
    dt_s: float,
) -> tuple[FloatArray, FloatArray]:
    """Cost and value (€) of one step for every plant.

    Raises:
        KeyError: No prices for ``process``.
    """
    if process not in PRICES:
        raise KeyError(f"no prices for process {process!r}; known: {', '.join(sorted(PRICES))}")
    prices = PRICES[process]
    energy = np.nan_to_num(np.asarray(result.energy_kwh, dtype=np.float64))
    tariff = np.asarray(
        disturbances.get("tariff_eur_kwh", np.full(energy.shape, prices.electricity_eur_kwh)),
        dtype=np.float64,
    )
    tariff = np.where(np.isfinite(tariff), tariff, prices.electricity_eur_kwh)
    cost = energy * tariff + np.nan_to_num(np.asarray(result.chemicals_eur, dtype=np.float64))
    value = np.nan_to_num(np.asarray(result.product_m3, dtype=np.float64)) * prices.water_eur_m3
    return cost, value
