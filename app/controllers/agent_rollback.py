"""Automatic rollback triggers that watch a newly promoted agent.

After a promotion the :class:`RollbackWatch` follows the new agent for ``watch_steps`` agent steps
and fires the first trigger that trips:

- ``cusum_sec``: a one-sided CUSUM on the step's specific energy consumption normalised by the
  baseline measured under the previous agent (``S = max(0, S + (x − μ)/σ − k)``, fires at
  ``S > h``);
- ``paired_kpi``: at every watched step the previous agent (still loaded) answers the same
  observation, and the live-aligned twin (``app.agent_runtime.twin``: fouling and salt passage refit
  to the plant's measurements at this step) predicts the economic rate of both proposals; a
  one-sided CUSUM on the promoted agent's loss, in units of ``paired_tolerance`` of the previous
  agent's rate, fires at ``S > h``. Both agents are judged from the same live state, so feed
  drift (temperature, salinity, demand) cancels, which the SEC baseline from before the promotion
  cannot do;
- ``constraint_hits``: share of steps whose proposal the safety envelope refused;
- ``abstention``: share of steps on which the agent abstained (uncertainty or OOD);
- ``operator_rejections``: share of the agent's decided recommendations that operators rejected.

Each trigger can be switched off (``None`` / ``False``). The watch is pure data: the agent controller
feeds it and performs the rollback.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from app.controllers.messages import RollbackWatchStepped
from app.domain import AgentVersion


@dataclass(frozen=True, slots=True)
class RollbackSettings:
    """Automatic rollback triggers (defaults are conservative; the site may tune them).

    Attributes:
        watch_steps: Agent steps after a promotion during which the triggers are armed.
        min_steps: Steps before a rate trigger may fire (avoids firing on one bad step).
        baseline_steps: KPI samples before the promotion that form the CUSUM reference.
        cusum: Enable the CUSUM trigger.
        cusum_k: CUSUM slack, in baseline standard deviations.
        cusum_h: CUSUM decision threshold, in baseline standard deviations.
        cusum_min_sigma_frac: Floor of the baseline standard deviation, as a fraction of |mean|.
        paired: Enable the paired twin comparison with the previous agent.
        paired_tolerance: Relative loss of economic rate that counts as one unit of the paired
            CUSUM (the slack ``cusum_k`` and threshold ``cusum_h`` are shared with the SEC CUSUM).
        paired_min_eur_h: Floor of that unit in EUR/h (rates near zero).
        constraint_hit_rate: Share of refused proposals that fires (``None``: off).
        abstention_rate: Share of abstentions that fires (``None``: off).
        rejection_rate: Share of operator rejections that fires (``None``: off).
        min_decisions: Decided recommendations before the rejection trigger may fire.
    """

    watch_steps: int = 96
    min_steps: int = 8
    baseline_steps: int = 24
    cusum: bool = True
    cusum_k: float = 0.5
    cusum_h: float = 5.0
    cusum_min_sigma_frac: float = 0.02
    paired: bool = True
    paired_tolerance: float = 0.02
    paired_min_eur_h: float = 0.1
    constraint_hit_rate: float | None = 0.25
    abstention_rate: float | None = 0.5
    rejection_rate: float | None = 0.5
    min_decisions: int = 4

    def __post_init__(self) -> None:
        for name in ("watch_steps", "min_steps", "baseline_steps", "min_decisions"):
            if getattr(self, name) < 1:
                raise ValueError(f"RollbackSettings.{name} must be at least 1")
        for name in (
            "cusum_k",
            "cusum_h",
            "cusum_min_sigma_frac",
            "paired_tolerance",
            "paired_min_eur_h",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RollbackSettings.{name} must be positive, got {value!r}")
        for name in ("constraint_hit_rate", "abstention_rate", "rejection_rate"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"RollbackSettings.{name} must be in (0, 1] or None")


@dataclass(frozen=True, slots=True)
class Trip:
    """A trigger that fired.

    Attributes:
        trigger: ``cusum_sec``, ``paired_kpi``, ``constraint_hits``, ``abstention`` or
            ``operator_rejections``.
        reason: One line with the figures, for the ledger and the alarm.
    """

    trigger: str
    reason: str


class KpiHistory:
    """Recent KPI values (one per agent step) forming the CUSUM reference at the next promotion."""

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float | None) -> None:
        """Record a finite value (others are ignored)."""
        if value is not None and math.isfinite(value):
            self._values.append(value)

    def values(self) -> tuple[float, ...]:
        """The values, oldest first."""
        return tuple(self._values)


class RollbackWatch:
    """Counters and the CUSUM of one newly promoted agent.

    Args:
        agent: The promoted agent.
        settings: Trigger settings.
        baseline: KPI values measured before the promotion (CUSUM reference; fewer than three
            disable the CUSUM for this watch).
    """

    def __init__(
        self, agent: AgentVersion, settings: RollbackSettings, baseline: Iterable[float]
    ) -> None:
        self.agent = agent
        self.settings = settings
        values = [v for v in baseline if math.isfinite(v)]
        self.mu: float | None = None
        self.sigma: float | None = None
        if settings.cusum and len(values) >= 3:
            self.mu = statistics.fmean(values)
            floor = settings.cusum_min_sigma_frac * max(abs(self.mu), 1e-12)
            self.sigma = max(statistics.pstdev(values), floor)
        self.cusum = 0.0
        self.paired_cusum = 0.0
        self.paired_samples = 0
        self.paired_loss_eur_h = 0.0
        self.steps = 0
        self.constraint_hits = 0
        self.abstentions = 0
        self.decided = 0
        self.rejected = 0

    @property
    def expired(self) -> bool:
        """True once ``watch_steps`` steps have passed."""
        return self.steps >= self.settings.watch_steps

    def step(
        self, kpi: float | None, *, constraint_hit: bool = False, abstained: bool = False
    ) -> Trip | None:
        """Account one agent step of the watched agent; returns the trigger that fired, if any."""
        self.steps += 1
        self.constraint_hits += int(constraint_hit)
        self.abstentions += int(abstained)
        s = self.settings
        if (
            self.mu is not None
            and self.sigma is not None
            and kpi is not None
            and math.isfinite(kpi)
        ):
            z = (kpi - self.mu) / self.sigma
            self.cusum = max(0.0, self.cusum + z - s.cusum_k)
            if self.cusum > s.cusum_h:
                return Trip(
                    "cusum_sec",
                    f"CUSUM of normalised SEC {self.cusum:.2f} > {s.cusum_h:g} "
                    f"(last {kpi:.4g}, baseline {self.mu:.4g} ± {self.sigma:.2g})",
                )
        if self.steps >= s.min_steps:
            if s.constraint_hit_rate is not None:
                rate = self.constraint_hits / self.steps
                if rate > s.constraint_hit_rate:
                    return Trip(
                        "constraint_hits",
                        f"{self.constraint_hits} of {self.steps} proposals refused by the safety "
                        f"envelope ({rate:.0%} > {s.constraint_hit_rate:.0%})",
                    )
            if s.abstention_rate is not None:
                rate = self.abstentions / self.steps
                if rate > s.abstention_rate:
                    return Trip(
                        "abstention",
                        f"abstained on {self.abstentions} of {self.steps} steps "
                        f"({rate:.0%} > {s.abstention_rate:.0%})",
                    )
        return None

    def paired(self, new_eur_h: float, previous_eur_h: float) -> Trip | None:
        """Account one paired twin prediction (same live state) of the new and the previous agent.

        Args:
            new_eur_h: Economic rate the twin predicts for the promoted agent's proposal.
            previous_eur_h: Economic rate it predicts for the previous agent's proposal.

        Returns:
            The ``paired_kpi`` trip once the CUSUM of the loss crosses ``cusum_h``, else ``None``.
        """
        s = self.settings
        if not (s.paired and math.isfinite(new_eur_h) and math.isfinite(previous_eur_h)):
            return None
        self.paired_samples += 1
        loss = previous_eur_h - new_eur_h
        self.paired_loss_eur_h += loss
        unit = max(s.paired_tolerance * abs(previous_eur_h), s.paired_min_eur_h)
        self.paired_cusum = max(0.0, self.paired_cusum + loss / unit - s.cusum_k)
        if self.paired_cusum > s.cusum_h:
            mean = self.paired_loss_eur_h / self.paired_samples
            return Trip(
                "paired_kpi",
                f"CUSUM of the loss against the previous agent on the live-aligned twin "
                f"{self.paired_cusum:.2f} > {s.cusum_h:g} (mean loss {mean:.3g} EUR/h over "
                f"{self.paired_samples} steps; last {new_eur_h:.4g} vs {previous_eur_h:.4g} EUR/h)",
            )
        return None

    def stepped(self, state: str = "watching") -> RollbackWatchStepped:
        """The watch's figures as an event (``state``: watching, passed or rolled_back)."""
        s = self.settings
        n = max(self.steps, 1)
        return RollbackWatchStepped(
            agent=self.agent,
            state=state,
            steps=self.steps,
            watch_steps=s.watch_steps,
            threshold=s.cusum_h,
            sec_cusum=self.cusum if self.mu is not None else None,
            paired_cusum=self.paired_cusum if s.paired and self.paired_samples else None,
            paired_mean_loss_eur_h=(
                self.paired_loss_eur_h / self.paired_samples if self.paired_samples else None
            ),
            paired_samples=self.paired_samples,
            constraint_hit_rate=self.constraint_hits / n,
            abstention_rate=self.abstentions / n,
        )

    def decision(self, rejected: bool) -> Trip | None:
        """Account one operator decision on the watched agent's recommendation."""
        self.decided += 1
        self.rejected += int(rejected)
        s = self.settings
        if s.rejection_rate is not None and self.decided >= s.min_decisions:
            rate = self.rejected / self.decided
            if rate > s.rejection_rate:
                return Trip(
                    "operator_rejections",
                    f"operators rejected {self.rejected} of {self.decided} recommendations "
                    f"({rate:.0%} > {s.rejection_rate:.0%})",
                )
        return None


__all__ = ["KpiHistory", "RollbackSettings", "RollbackWatch", "Trip"]
