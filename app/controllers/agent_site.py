"""Agent controller settings from the site file's ``[agents.rollback]`` and ``[agents.gates]``.

The site file states rollback triggers and promotion gates in its own validated models
(:class:`app.config.RollbackConfig`, :class:`app.config.GateConfig`); this module turns them into the
controller's :class:`~app.controllers.agent.AgentSettings`. A rate of 0 in the file means "off",
which the controller spells ``None``.
"""

from __future__ import annotations

from dataclasses import replace

from app.agent_runtime.shadow import GateThresholds
from app.config import AgentSettings as SiteAgents
from app.config import GateConfig, RollbackConfig
from app.controllers.agent import AgentSettings
from app.controllers.agent_rollback import RollbackSettings


def _rate(value: float) -> float | None:
    return value if value > 0 else None


def rollback_settings(cfg: RollbackConfig) -> RollbackSettings:
    """The rollback watch settings stated by ``[agents.rollback]``."""
    return RollbackSettings(
        watch_steps=cfg.watch_steps,
        min_steps=cfg.min_steps,
        baseline_steps=cfg.baseline_steps,
        cusum=cfg.cusum,
        cusum_k=cfg.cusum_k,
        cusum_h=cfg.cusum_h,
        cusum_min_sigma_frac=cfg.cusum_min_sigma_frac,
        paired=cfg.paired,
        paired_tolerance=cfg.paired_tolerance,
        paired_min_eur_h=cfg.paired_min_eur_h,
        constraint_hit_rate=_rate(cfg.constraint_hit_rate),
        abstention_rate=_rate(cfg.abstention_rate),
        rejection_rate=_rate(cfg.rejection_rate),
        min_decisions=cfg.min_decisions,
    )


def gate_thresholds(cfg: GateConfig) -> GateThresholds:
    """The promotion gate thresholds stated by ``[agents.gates]``."""
    return GateThresholds(
        max_violations=cfg.max_violations,
        kpi_tolerance_eur_h=cfg.kpi_tolerance_eur_h,
        min_kpi_samples=cfg.min_kpi_samples,
        max_candidate_errors=cfg.max_candidate_errors,
    )


def agent_settings_from_site(
    agents: SiteAgents, base: AgentSettings | None = None
) -> AgentSettings:
    """``base`` (default: the controller defaults) with the site's rollback triggers and gates.

    Args:
        agents: The site's ``[agents]`` table.
        base: Settings the site file does not state (recovery steps, deadband, shadow KPI cadence).
    """
    return replace(
        base or AgentSettings(),
        rollback=rollback_settings(agents.rollback),
        gates=gate_thresholds(agents.gates),
    )


__all__ = ["agent_settings_from_site", "gate_thresholds", "rollback_settings"]
