"""HSBRO baselines beyond the published switch rule (``fixed_pi``/``switch_rule``, §1.2, §12).

- ``rule_based``: the switch rule plus the operators' flow rules: the supply flow is derated
  linearly with supply pressure (design flow up to ``derate_start_bar``, the 4 L/min minimum at the
  back-off pressure) instead of the base control's single step, and the recirculation keeps at
  least ``recirc_ratio`` × supply (a margin over the PLC's 1.5 interlock [P1]).
- ``optimal_hourly``: supply flow, recirculation flow and purge factor re-chosen every hour by
  closed-loop look-ahead on a copy of the model (``app.plant.baselines_twin``), the switch rule
  issuing the phase commands; the rule's concentrate gain follows the planned supply flow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import cast

import numpy as np

from app.plant.base_control import HsbroBaseControl, HsbroDesign
from app.plant.catalog import ProcessCatalog
from app.plant.models.base import FloatArray, Policy

_MIN_SUPPLY_LPM = 4.0
_BRINE_GAIN_SUPPLY_LPM = (5.0, 8.0, 12.0)
_BRINE_GAIN_GL_PER_MS_CM = (1.52, 1.48, 1.40)
"""Concentrate TDS per mS/cm of loop conductivity at the switch vs supply flow (pilot model,
``HsbroDesign.brine_gl_per_ms_cm``)."""


def brine_gain(supply_lpm: FloatArray) -> FloatArray:
    """The switch rule's concentrate gain at ``supply_lpm`` (interpolated, held at the ends)."""
    return np.asarray(
        np.interp(supply_lpm, _BRINE_GAIN_SUPPLY_LPM, _BRINE_GAIN_GL_PER_MS_CM), dtype=np.float64
    )


class HsbroRuleBased(HsbroBaseControl):
    """The published switch rule with pressure-scheduled supply and a recirculation ratio.

    Args:
        catalog: The HSBRO catalogue.
        design: Flows, purge factor and switch-rule settings.
        derate_start_bar: Supply pressure from which the supply flow is derated.
        recirc_ratio: Lowest recirculation / supply flow ratio the rule keeps.
    """

    name = "rule_based"

    def __init__(
        self,
        catalog: ProcessCatalog,
        design: HsbroDesign | None = None,
        derate_start_bar: float = 100.0,
        recirc_ratio: float = 2.0,
    ) -> None:
        super().__init__(catalog, design)
        if not derate_start_bar < self.design.backoff_bar:
            raise ValueError(
                f"derate_start_bar {derate_start_bar} must be below the back-off pressure "
                f"{self.design.backoff_bar}"
            )
        self.derate_start_bar = derate_start_bar
        self.recirc_ratio = recirc_ratio

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Switch-rule commands; supply derated on pressure; recirculation ratio kept."""
        out = super().act(measurements, t_s, dt_s)
        p_sup = np.asarray(measurements["supply_pressure_bar"], dtype=np.float64)
        d = self.design
        span = d.backoff_bar - self.derate_start_bar
        share = np.clip((p_sup - self.derate_start_bar) / span, 0.0, 1.0)
        supply = d.supply_lpm - share * (d.supply_lpm - _MIN_SUPPLY_LPM)
        out["supply_flow_sp_lpm"] = np.asarray(supply, dtype=np.float64)
        out["recirc_flow_sp_lpm"] = np.maximum(
            out["recirc_flow_sp_lpm"], self.recirc_ratio * out["supply_flow_sp_lpm"]
        )
        return out


class HsbroPlannedRule(HsbroBaseControl):
    """The switch rule (``fixed_pi``) run at planned supply, recirculation and purge factor."""

    def __init__(self, catalog: ProcessCatalog) -> None:
        super().__init__(catalog)
        self._base_design = self.design

    def set_plan(self, plan: Mapping[str, FloatArray]) -> None:
        """Hold ``plan`` (per-plant flows and purge factor) from the next ``act`` on."""
        supply = np.asarray(plan["supply_flow_sp_lpm"], dtype=np.float64).copy()
        # The rule's design fields broadcast per plant: the switch rule, the pressure back-off and
        # the outputs are all array expressions of them.
        self.design = dataclasses.replace(
            self._base_design,
            supply_lpm=cast(float, supply),
            recirc_lpm=cast(float, np.asarray(plan["recirc_flow_sp_lpm"], dtype=np.float64)),
            purge_factor=cast(float, np.asarray(plan["purge_factor_sp"], dtype=np.float64)),
            brine_gl_per_ms_cm=cast(float, brine_gain(supply)),
        )


def _hsbro_forecast(m: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """Look-ahead disturbances: measured feed conductivity (as TDS) and temperature held."""
    from app.plant.models.hsbro import conductivity_uscm

    ec1 = float(conductivity_uscm(np.asarray(1.0)))
    exponent = float(np.log(conductivity_uscm(np.asarray(np.e)) / ec1))
    ec = np.maximum(np.asarray(m["feed_conductivity_uscm"], dtype=np.float64), 0.0)
    return {
        "feed_tds_gl": np.asarray((ec / ec1) ** (1.0 / exponent), dtype=np.float64),
        "feed_temperature_c": np.asarray(m["feed_temperature_c"], dtype=np.float64).copy(),
    }


def hsbro_optimal_hourly(catalog: ProcessCatalog) -> Policy:
    """``optimal_hourly`` for HSBRO: flows and purge factor every hour, one hour look-ahead."""
    from app.plant.baselines_twin import TwinOptimalHourly

    design = HsbroDesign()
    return TwinOptimalHourly(
        "hsbro",
        HsbroPlannedRule(catalog),
        grid={
            "supply_flow_sp_lpm": (5.0, 6.5, 8.0, 10.0, 12.0),
            "recirc_flow_sp_lpm": (30.0, 48.0, 65.0),
            "purge_factor_sp": (0.6, 0.703, 0.85),
        },
        design={
            "supply_flow_sp_lpm": design.supply_lpm,
            "recirc_flow_sp_lpm": design.recirc_lpm,
            "purge_factor_sp": design.purge_factor,
        },
        forecast=_hsbro_forecast,
        period_s=3600.0,
        horizon_s=3600.0,
        active=_unfinished,
    )


def _unfinished(m: Mapping[str, FloatArray]) -> np.ndarray:
    return np.asarray(m["phase"], dtype=np.float64) < 3.0


FACTORIES: dict[str, Callable[[ProcessCatalog], Policy]] = {
    "fixed_pi": HsbroBaseControl,
    "switch_rule": HsbroBaseControl,
    "rule_based": HsbroRuleBased,
    "optimal_hourly": hsbro_optimal_hourly,
}
