"""Promotion gates of ``intelwatt retrain``: the regression suite, candidate vs incumbent.

Both policies run the same seeded episodes of the fixed regression suite (:data:`RO_SUITE`: the
seasons, a fouling event that calls for a CIP and the recovery after it, commissioning, high
salinity, the steady anchor) on **two** simulators: the calibrated twin (the plant as the data
shows it) and the nominal simulator the incumbent was trained on (the replay: the candidate must
not have forgotten it). A candidate passes when

- it has **zero hard violations** (trips) on every episode of both simulators;
- on the twin its mean cost per m³ is not worse than the incumbent's by more than
  ``max_cost_regression`` (default 1 %) and no single scenario is worse by more than
  ``max_scenario_regression`` (default 5 %);
- its time with permeate quality violations exceeds the incumbent's by at most
  ``max_quality_increase_pp`` percentage points on every simulator;
- on the nominal simulator its mean cost per m³ is not worse than the incumbent's by more than
  ``max_forgetting`` (default 3 %).

An improvement is not required (a fine-tune that only holds the line is still a valid candidate);
the report states the measured change so the site's promotion policy can require one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.plant.models.base import Policy
from app.training.evaluate import (
    DEFAULT_SCENARIO_ROOT,
    EvalSetup,
    PolicyResult,
    driven_names,
    model_class,
    run_policy,
)

RO_SUITE: dict[str, str] = {
    "season_winter": "ro_01_winter.csv",
    "season_summer": "ro_03_summer.csv",
    "cip_recovery": "ro_07_fouling_event.csv",
    "start_up": "ro_09_startup.csv",
    "high_salinity": "ro_05_high_salinity.csv",
    "steady_anchor": "ro_11_steady.csv",
}
"""The fixed regression suite: gate name → held-out scenario file."""
SUITES = {"ro": RO_SUITE}


class GateError(ValueError):
    """The gates cannot run (unknown process, missing scenario file)."""


@dataclass(frozen=True, slots=True)
class GateThresholds:
    """Tolerances of the gates (relative changes are candidate / incumbent − 1).

    Attributes:
        max_cost_regression: Largest accepted mean cost-per-m³ regression on the twin.
        max_scenario_regression: Largest accepted regression on any single scenario (twin).
        max_quality_increase_pp: Largest accepted increase of quality-violation time (pp).
        max_forgetting: Largest accepted mean cost regression on the nominal simulator.
    """

    max_cost_regression: float = 0.01
    max_scenario_regression: float = 0.05
    max_quality_increase_pp: float = 0.5
    max_forgetting: float = 0.03


@dataclass(slots=True)
class GateCheck:
    """One gate: what was compared and whether it passed."""

    name: str
    passed: bool
    detail: str


@dataclass(slots=True)
class GateReport:
    """Outcome of :func:`run_gates`.

    Attributes:
        passed: Every check passed.
        checks: The individual gates.
        scenarios: Gate names of the suite, in episode order.
        metrics: ``simulator → policy → metric → per-episode values``.
        days: Episode length used (``None``: the full scenario files).
    """

    passed: bool
    checks: list[GateCheck]
    scenarios: list[str]
    metrics: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    days: float | None = None

    def improvement_pct(self, simulator: str = "twin") -> float:
        """Mean per-scenario cost-per-m³ change vs the incumbent in % (negative = better).

        The same figure the cost gate checks.
        """
        m = self.metrics[simulator]
        cand = np.asarray(m["candidate"]["cost_per_m3_eur"])
        inc = np.asarray(m["incumbent"]["cost_per_m3_eur"])
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(100.0 * np.mean(cand / inc - 1.0))

    def to_json(self) -> dict[str, Any]:
        """JSON form for the promotion report."""
        return {
            "passed": self.passed,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
            "scenarios": self.scenarios,
            "days": self.days,
            "cost_change_pct": {s: _finite(self.improvement_pct(s)) for s in self.metrics},
            "metrics": self.metrics,
        }

    def markdown(self) -> str:
        """The gate section of the promotion report."""
        verdict = "PASSED" if self.passed else "REJECTED"
        lines = [f"**Gates: {verdict}**", "", "| gate | result | detail |", "|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |")
        for sim, table in self.metrics.items():
            lines += [
                "",
                f"Cost per m³ (€/m³) and trips on the {sim} simulator:",
                "",
                "| scenario | incumbent | candidate | change | trips inc/cand |",
                "|---|---|---|---|---|",
            ]
            inc, cand = table["incumbent"], table["candidate"]
            for i, name in enumerate(self.scenarios):
                a, b = inc["cost_per_m3_eur"][i], cand["cost_per_m3_eur"][i]
                lines.append(
                    f"| {name} | {a:.4f} | {b:.4f} | {100 * (b / a - 1):+.2f} % | "
                    f"{inc['trips'][i]:.0f}/{cand['trips'][i]:.0f} |"
                )
        return "\n".join(lines)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def suite_setup(
    process: str,
    *,
    days: float | None = None,
    seed: int = 0,
    scenario_root: Path | None = None,
) -> tuple[list[str], EvalSetup]:
    """The evaluation setup of the regression suite (one episode per gate scenario).

    Raises:
        GateError: No suite for ``process`` or a missing scenario file.
    """
    suite = SUITES.get(process)
    if suite is None:
        raise GateError(f"no regression suite for process {process!r}; known: {', '.join(SUITES)}")
    root = (scenario_root or DEFAULT_SCENARIO_ROOT) / process
    files = tuple(root / name for name in suite.values())
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise GateError(f"regression scenario file(s) missing: {missing}")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise GateError(f"gate days must be positive, got {days}")
    from app.plant.scenarios import ScenarioFile

    cls = model_class(process)
    driven = driven_names(cls, files[0], process)
    source = ScenarioFile(files, required=driven, process=process)
    horizon = tuple(
        days * 86400.0 if days is not None else source.tables[i].duration_s
        for i in range(len(files))
    )
    return list(suite), EvalSetup(process, files, seed, cls.catalog.agent_period_s, horizon, driven)


def run_gates(
    process: str,
    candidate: Policy,
    incumbent: Policy,
    twin_params: Mapping[str, float],
    *,
    thresholds: GateThresholds | None = None,
    days: float | None = None,
    seed: int = 0,
    simulators: Sequence[str] = ("twin", "nominal"),
) -> GateReport:
    """Run candidate and incumbent on the regression suite and apply the gates.

    Args:
        process: Process name.
        candidate: The fine-tuned policy.
        incumbent: The policy in production (the base package).
        twin_params: Calibrated model parameters (the twin).
        thresholds: Gate tolerances.
        days: Episode length override (shorter for tests; default the full files).
        seed: Model seed of the episodes.
        simulators: ``twin`` and/or ``nominal``.
    """
    th = thresholds or GateThresholds()
    names, setup = suite_setup(process, days=days, seed=seed)
    metrics: dict[str, dict[str, dict[str, list[float]]]] = {}
    results: dict[str, dict[str, PolicyResult]] = {}
    for sim in simulators:
        params = dict(twin_params) if sim == "twin" else None
        results[sim] = {
            "incumbent": run_policy(incumbent, setup, "incumbent", params),
            "candidate": run_policy(candidate, setup, "candidate", params),
        }
        metrics[sim] = {
            who: {k: [float(v) for v in r.episodes[k]] for k in _KEPT}
            for who, r in results[sim].items()
        }
    checks: list[GateCheck] = []
    for sim, pair in results.items():
        trips = pair["candidate"].episodes["trips"]
        bad = [names[i] for i in np.flatnonzero(trips > 0)]
        checks.append(
            GateCheck(
                f"zero hard violations ({sim})",
                not bad,
                f"trips in {bad}" if bad else f"0 trips in {len(names)} episodes",
            )
        )
        q_c = pair["candidate"].episodes["quality_violation_pct"]
        q_i = pair["incumbent"].episodes["quality_violation_pct"]
        worst = float(np.max(q_c - q_i))
        checks.append(
            GateCheck(
                f"permeate quality ({sim})",
                worst <= th.max_quality_increase_pp,
                f"worst increase {worst:+.2f} pp (limit {th.max_quality_increase_pp} pp)",
            )
        )
    if "twin" in results:
        change = _cost_change(results["twin"])
        mean = float(np.mean(change))
        checks.append(
            GateCheck(
                "cost per m³ vs incumbent (twin)",
                bool(np.isfinite(mean)) and mean <= th.max_cost_regression,
                f"mean change {100 * mean:+.2f} % (limit +{100 * th.max_cost_regression:.1f} %)",
            )
        )
        worst_i = int(np.nanargmax(change)) if np.isfinite(change).any() else 0
        worst_v = float(change[worst_i])
        checks.append(
            GateCheck(
                "no scenario regression (twin)",
                bool(np.isfinite(change).all()) and worst_v <= th.max_scenario_regression,
                f"worst {names[worst_i]} {100 * worst_v:+.2f} % "
                f"(limit +{100 * th.max_scenario_regression:.1f} %)",
            )
        )
    if "nominal" in results:
        mean = float(np.mean(_cost_change(results["nominal"])))
        checks.append(
            GateCheck(
                "no forgetting (nominal simulator)",
                bool(np.isfinite(mean)) and mean <= th.max_forgetting,
                f"mean change {100 * mean:+.2f} % (limit +{100 * th.max_forgetting:.1f} %)",
            )
        )
    return GateReport(
        passed=all(c.passed for c in checks),
        checks=checks,
        scenarios=names,
        metrics=metrics,
        days=days,
    )


_KEPT = (
    "cost_per_m3_eur",
    "net_value_eur_per_h",
    "sec_kwh_m3",
    "recovery_pct",
    "product_m3",
    "quality_violation_pct",
    "trips",
    "cleanings",
)


def _cost_change(pair: Mapping[str, PolicyResult]) -> np.ndarray:
    cand = pair["candidate"].episodes["cost_per_m3_eur"]
    inc = pair["incumbent"].episodes["cost_per_m3_eur"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(cand / inc - 1.0, dtype=np.float64)
