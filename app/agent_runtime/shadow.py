"""The shadow duel: a candidate agent judged live, on the same observations, before it may act.

Each control step the candidate infers on the observation the active agent sees
(:class:`~app.agent_runtime.host.PolicyHost` does both in one job). :class:`ShadowDuel` accumulates,
per candidate/incumbent pair:

- **divergence**: per step, the largest |candidate − active| over the common action tags, each
  divided by its action range (the incumbent manifest's ``high − low``); mean and max over steps;
- **hypothetical limit hits**: per step and tag, whether the candidate's action would have left the
  site's engineer limits, its operator limits, or moved more than ``max_move`` from the last applied
  setpoint (``TagLimits.max_move``, else the catalogue's). A (step, tag) counts once, under the
  worst kind. The incumbent's hits are counted the same way for comparison;
- **uncertainty**: the candidate's ensemble spread (mean and max), and the incumbent's;
- **twin-predicted KPI**: the economic rate (EUR/h) the process twin predicts for each agent's action
  over the preview horizon (:mod:`app.agent_runtime.twin`), recorded when the host evaluates it.

:meth:`ShadowDuel.gates` turns the statistics into a frozen :class:`GateReport`: the evidence a
promotion needs, kept in the ledger.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from app.config import ModePolicy, TagLimits
from app.domain import AgentVersion, utc_now
from app.plant.catalog import ProcessCatalog


class LimitKind(enum.StrEnum):
    """Which limit a hypothetical action would have hit (worst first)."""

    ENGINEER = "engineer_limit"
    OPERATOR = "operator_limit"
    MAX_MOVE = "max_move"


def limit_hit(
    tag: str,
    value: float,
    last_applied: float | None,
    limits: TagLimits | None,
    catalog_max_move: float | None,
) -> LimitKind | None:
    """The worst limit ``value`` for ``tag`` would hit, or ``None``.

    Args:
        tag: Setpoint tag (for error messages only).
        value: Proposed value.
        last_applied: Last applied value of the setpoint (``None``: no move check).
        limits: The site's limits of the tag (``None``: only the move check).
        catalog_max_move: The catalogue's ``max_move``, used when ``limits`` has none.

    Raises:
        ValueError: ``value`` is not finite.
    """
    if not math.isfinite(value):
        raise ValueError(f"{tag}: proposed value {value} is not finite")
    if limits is not None:
        if not limits.engineer_low <= value <= limits.engineer_high:
            return LimitKind.ENGINEER
        lo = limits.engineer_low if limits.operator_low is None else limits.operator_low
        hi = limits.engineer_high if limits.operator_high is None else limits.operator_high
        if not lo <= value <= hi:
            return LimitKind.OPERATOR
    max_move = limits.max_move if limits is not None and limits.max_move is not None else None
    max_move = catalog_max_move if max_move is None else max_move
    if max_move is not None and last_applied is not None and abs(value - last_applied) > max_move:
        return LimitKind.MAX_MOVE
    return None


@dataclass(frozen=True, slots=True)
class GateThresholds:
    """Promotion gate settings beyond :class:`~app.config.ModePolicy`.

    Attributes:
        max_violations: Most hypothetical limit hits (step × tag) the candidate may have.
        kpi_tolerance_eur_h: How much worse (EUR/h) the candidate's mean twin-predicted KPI may be
            than the incumbent's (0: not worse at all).
        min_kpi_samples: Twin KPI evaluations needed before the KPI gate can pass.
        max_candidate_errors: Steps the candidate may have failed (refused observation excluded:
            the incumbent saw the same observation).
    """

    max_violations: int = 0
    kpi_tolerance_eur_h: float = 0.0
    min_kpi_samples: int = 1
    max_candidate_errors: int = 0

    def __post_init__(self) -> None:
        if self.max_violations < 0 or self.min_kpi_samples < 0 or self.max_candidate_errors < 0:
            raise ValueError("gate counts must be >= 0")
        if not (math.isfinite(self.kpi_tolerance_eur_h) and self.kpi_tolerance_eur_h >= 0):
            raise ValueError(
                f"kpi_tolerance_eur_h must be finite and >= 0, got {self.kpi_tolerance_eur_h}"
            )


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """A snapshot of one duel's statistics.

    Attributes:
        incumbent: The active agent the candidate is compared with.
        candidate: The candidate in shadow.
        steps: Steps on which both agents produced an action.
        candidate_errors: Steps on which the incumbent acted but the candidate failed.
        divergence_mean: Mean over steps of the largest normalised action difference.
        divergence_max: Largest normalised action difference seen.
        divergence_by_tag: Mean normalised |difference| per common action tag.
        violations: Candidate's hypothetical limit hits (step × tag).
        violations_by_kind: Those hits by ``"<tag>:<kind>"``.
        incumbent_violations: The incumbent's hits counted the same way.
        candidate_uncertainty_mean: Mean ensemble spread of the candidate (``None``: no ensemble).
        candidate_uncertainty_max: Largest spread of the candidate.
        incumbent_uncertainty_mean: Mean spread of the incumbent.
        kpi_samples: Twin KPI evaluations recorded.
        incumbent_kpi_eur_h: Mean twin-predicted KPI of the incumbent's actions.
        candidate_kpi_eur_h: Mean twin-predicted KPI of the candidate's actions.
    """

    incumbent: AgentVersion
    candidate: AgentVersion
    steps: int
    candidate_errors: int
    divergence_mean: float
    divergence_max: float
    divergence_by_tag: dict[str, float]
    violations: int
    violations_by_kind: dict[str, int]
    incumbent_violations: int
    candidate_uncertainty_mean: float | None
    candidate_uncertainty_max: float | None
    incumbent_uncertainty_mean: float | None
    kpi_samples: int
    incumbent_kpi_eur_h: float | None
    candidate_kpi_eur_h: float | None

    @property
    def kpi_gain_eur_h(self) -> float | None:
        """Candidate minus incumbent mean KPI (positive: the candidate is predicted better)."""
        if self.candidate_kpi_eur_h is None or self.incumbent_kpi_eur_h is None:
            return None
        return self.candidate_kpi_eur_h - self.incumbent_kpi_eur_h


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One promotion gate.

    Attributes:
        name: ``shadow_steps``, ``violations``, ``kpi``, ``candidate_errors`` or ``uncertainty``.
        passed: Whether the gate passed.
        value: The measured figure (``None`` if not available).
        limit: The threshold it was compared with.
        detail: One line for the operator and the ledger.
    """

    name: str
    passed: bool
    value: float | None
    limit: float
    detail: str


@dataclass(frozen=True, slots=True)
class GateReport:
    """The evidence for (or against) promoting a candidate; stored in the ledger.

    Attributes:
        incumbent: Active agent at the time of the report.
        candidate: Candidate judged.
        stats: The shadow statistics the gates were computed from.
        checks: Every gate, passed or not.
        at: When the report was made, UTC.
    """

    incumbent: AgentVersion
    candidate: AgentVersion
    stats: ShadowStats
    checks: tuple[GateCheck, ...]
    at: datetime = field(default_factory=utc_now)

    @property
    def passed(self) -> bool:
        """True if every gate passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[str, ...]:
        """Details of the gates that failed."""
        return tuple(f"{c.name}: {c.detail}" for c in self.checks if not c.passed)


class ShadowDuel:
    """Accumulates the duel of one candidate against one incumbent (owned by the agent worker)."""

    def __init__(
        self,
        incumbent: AgentVersion,
        candidate: AgentVersion,
        action_ranges: Mapping[str, tuple[float, float]],
        *,
        limits: Mapping[str, TagLimits] | None = None,
        catalog: ProcessCatalog | None = None,
    ) -> None:
        """Start an empty duel.

        Args:
            incumbent: Active agent.
            candidate: Candidate agent.
            action_ranges: (low, high) per action tag, normalising the divergence.
            limits: The site's limits per setpoint tag.
            catalog: Process catalogue, for ``max_move`` where the site gives none.

        Raises:
            ValueError: An empty or inverted action range.
        """
        for tag, (lo, hi) in action_ranges.items():
            if not hi > lo:
                raise ValueError(f"action range of {tag!r} is empty: [{lo}, {hi}]")
        self.incumbent = incumbent
        self.candidate = candidate
        self._span = {tag: hi - lo for tag, (lo, hi) in action_ranges.items()}
        self._limits = dict(limits or {})
        self._catalog_move: dict[str, float | None] = {}
        if catalog is not None:
            self._catalog_move = {t.name: t.max_move for t in catalog.writable}
        self._steps = 0
        self._errors = 0
        self._div_sum = 0.0
        self._div_max = 0.0
        self._div_tag: dict[str, float] = {}
        self._hits: dict[str, int] = {}
        self._violations = 0
        self._incumbent_violations = 0
        self._unc_c: list[float] = []
        self._unc_a: list[float] = []
        self._kpi: list[tuple[float, float]] = []

    def _hit_count(
        self, action: Mapping[str, float], last_applied: Mapping[str, float], record: bool
    ) -> int:
        count = 0
        for tag, value in action.items():
            kind = limit_hit(
                tag,
                value,
                last_applied.get(tag),
                self._limits.get(tag),
                self._catalog_move.get(tag),
            )
            if kind is None:
                continue
            count += 1
            if record:
                key = f"{tag}:{kind.value}"
                self._hits[key] = self._hits.get(key, 0) + 1
        return count

    def record(
        self,
        incumbent_action: Mapping[str, float],
        candidate_action: Mapping[str, float] | None,
        last_applied: Mapping[str, float],
        *,
        incumbent_uncertainty: float | None = None,
        candidate_uncertainty: float | None = None,
    ) -> None:
        """Record one step on which the incumbent acted.

        Args:
            incumbent_action: The active agent's raw action per tag.
            candidate_action: The candidate's action per tag, or ``None`` if it failed.
            last_applied: Last applied setpoint per tag (reference of the move check).
            incumbent_uncertainty: The active agent's ensemble spread, if any.
            candidate_uncertainty: The candidate's ensemble spread, if any.
        """
        if candidate_action is None:
            self._errors += 1
            return
        self._steps += 1
        worst = 0.0
        for tag, span in self._span.items():
            if tag in candidate_action and tag in incumbent_action:
                d = abs(candidate_action[tag] - incumbent_action[tag]) / span
                self._div_tag[tag] = self._div_tag.get(tag, 0.0) + d
                worst = max(worst, d)
        self._div_sum += worst
        self._div_max = max(self._div_max, worst)
        self._violations += self._hit_count(candidate_action, last_applied, record=True)
        self._incumbent_violations += self._hit_count(incumbent_action, last_applied, record=False)
        if candidate_uncertainty is not None:
            self._unc_c.append(candidate_uncertainty)
        if incumbent_uncertainty is not None:
            self._unc_a.append(incumbent_uncertainty)

    def record_kpi(self, incumbent_eur_h: float, candidate_eur_h: float) -> None:
        """Record one twin-predicted KPI of each agent's action.

        Raises:
            ValueError: A KPI that is not finite.
        """
        if not (math.isfinite(incumbent_eur_h) and math.isfinite(candidate_eur_h)):
            raise ValueError(
                f"twin KPIs must be finite, got {incumbent_eur_h} and {candidate_eur_h}"
            )
        self._kpi.append((incumbent_eur_h, candidate_eur_h))

    def stats(self) -> ShadowStats:
        """A frozen snapshot of the statistics so far."""
        n = self._steps
        kpi_a = sum(k[0] for k in self._kpi) / len(self._kpi) if self._kpi else None
        kpi_c = sum(k[1] for k in self._kpi) / len(self._kpi) if self._kpi else None
        return ShadowStats(
            incumbent=self.incumbent,
            candidate=self.candidate,
            steps=n,
            candidate_errors=self._errors,
            divergence_mean=self._div_sum / n if n else 0.0,
            divergence_max=self._div_max,
            divergence_by_tag={t: s / n for t, s in self._div_tag.items()} if n else {},
            violations=self._violations,
            violations_by_kind=dict(sorted(self._hits.items())),
            incumbent_violations=self._incumbent_violations,
            candidate_uncertainty_mean=_mean(self._unc_c),
            candidate_uncertainty_max=max(self._unc_c) if self._unc_c else None,
            incumbent_uncertainty_mean=_mean(self._unc_a),
            kpi_samples=len(self._kpi),
            incumbent_kpi_eur_h=kpi_a,
            candidate_kpi_eur_h=kpi_c,
        )

    def gates(self, policy: ModePolicy, thresholds: GateThresholds) -> GateReport:
        """Judge the candidate: the promotion gates and their evidence.

        Gates: at least ``policy.min_shadow_steps`` steps; at most ``thresholds.max_violations``
        hypothetical limit hits; at most ``thresholds.max_candidate_errors`` failed steps; a mean
        twin KPI not worse than the incumbent's by more than the tolerance, over at least
        ``thresholds.min_kpi_samples`` evaluations; and, if the candidate has an ensemble, a mean
        uncertainty within ``policy.max_uncertainty`` (a candidate that would mostly abstain is no
        improvement).
        """
        return evaluate_gates(self.stats(), policy, thresholds)


def evaluate_gates(
    stats: ShadowStats, policy: ModePolicy, thresholds: GateThresholds
) -> GateReport:
    """The gate report for ``stats`` (see :meth:`ShadowDuel.gates`)."""
    need = policy.min_shadow_steps
    checks = [
        GateCheck(
            "shadow_steps",
            stats.steps >= need,
            float(stats.steps),
            float(need),
            f"{stats.steps} shadow steps, {need} required",
        ),
        GateCheck(
            "violations",
            stats.violations <= thresholds.max_violations,
            float(stats.violations),
            float(thresholds.max_violations),
            f"{stats.violations} hypothetical limit hits "
            f"(incumbent {stats.incumbent_violations}), at most {thresholds.max_violations} allowed"
            + (f": {stats.violations_by_kind}" if stats.violations_by_kind else ""),
        ),
        GateCheck(
            "candidate_errors",
            stats.candidate_errors <= thresholds.max_candidate_errors,
            float(stats.candidate_errors),
            float(thresholds.max_candidate_errors),
            f"{stats.candidate_errors} failed candidate steps, "
            f"at most {thresholds.max_candidate_errors} allowed",
        ),
    ]
    gain = stats.kpi_gain_eur_h
    tol = thresholds.kpi_tolerance_eur_h
    if stats.kpi_samples < thresholds.min_kpi_samples:
        kpi = GateCheck(
            "kpi",
            False,
            gain,
            -tol,
            f"{stats.kpi_samples} twin KPI evaluations, {thresholds.min_kpi_samples} required",
        )
    elif gain is None:
        kpi = GateCheck("kpi", True, None, -tol, "no twin KPI evaluations (none required)")
    else:
        kpi = GateCheck(
            "kpi",
            gain >= -tol,
            gain,
            -tol,
            f"candidate {stats.candidate_kpi_eur_h:.2f} EUR/h vs incumbent "
            f"{stats.incumbent_kpi_eur_h:.2f} EUR/h ({gain:+.2f}, tolerance {tol:g}) over "
            f"{stats.kpi_samples} evaluations",
        )
    checks.append(kpi)
    if stats.candidate_uncertainty_mean is not None:
        checks.append(
            GateCheck(
                "uncertainty",
                stats.candidate_uncertainty_mean <= policy.max_uncertainty,
                stats.candidate_uncertainty_mean,
                policy.max_uncertainty,
                f"mean ensemble spread {stats.candidate_uncertainty_mean:.3f}, "
                f"at most {policy.max_uncertainty:g}",
            )
        )
    return GateReport(stats.incumbent, stats.candidate, stats, tuple(checks))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


__all__ = [
    "GateCheck",
    "GateReport",
    "GateThresholds",
    "LimitKind",
    "ShadowDuel",
    "ShadowStats",
    "evaluate_gates",
    "limit_hit",
]
