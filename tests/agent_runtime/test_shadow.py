"""Shadow-duel statistics on known actions, and the promotion gates."""

from __future__ import annotations

import pytest

from app.agent_runtime.shadow import (
    GateThresholds,
    LimitKind,
    ShadowDuel,
    limit_hit,
)
from app.config import ModePolicy, TagLimits
from app.domain import AgentVersion
from app.plant.catalog import RO_CATALOG

INCUMBENT = AgentVersion("ro", "ro-1", "a" * 64)
CANDIDATE = AgentVersion("ro", "ro-2", "b" * 64, parent="ro-1")
RANGES = {"feed_pressure_sp_bar": (6.0, 38.0), "feed_flow_sp_m3h": (25.0, 65.0)}
LIMITS = {
    "feed_pressure_sp_bar": TagLimits(
        engineer_low=6.0, engineer_high=30.0, operator_low=8.0, operator_high=20.0, max_move=1.5
    ),
}
LAST = {"feed_pressure_sp_bar": 12.0, "feed_flow_sp_m3h": 40.0}


def duel() -> ShadowDuel:
    return ShadowDuel(INCUMBENT, CANDIDATE, RANGES, limits=LIMITS, catalog=RO_CATALOG)


def test_identical_actions_do_not_diverge() -> None:
    d = duel()
    for p in (11.0, 12.0, 13.0):
        a = {"feed_pressure_sp_bar": p, "feed_flow_sp_m3h": 40.0}
        d.record(a, dict(a), LAST, incumbent_uncertainty=0.1, candidate_uncertainty=0.2)
    s = d.stats()
    assert s.steps == 3 and s.candidate_errors == 0
    assert s.divergence_mean == 0.0 and s.divergence_max == 0.0
    assert s.divergence_by_tag == {"feed_pressure_sp_bar": 0.0, "feed_flow_sp_m3h": 0.0}
    assert s.candidate_uncertainty_mean == pytest.approx(0.2)
    assert s.incumbent_uncertainty_mean == pytest.approx(0.1)


def test_known_divergence_is_normalised_by_the_action_range() -> None:
    d = duel()
    a = {"feed_pressure_sp_bar": 12.0, "feed_flow_sp_m3h": 40.0}
    # Step 1: pressure differs by 0.8 bar of a 32 bar range (0.025), flow by 2 of 40 (0.05).
    d.record(a, {"feed_pressure_sp_bar": 12.8, "feed_flow_sp_m3h": 42.0}, LAST)
    # Step 2: pressure by 3.2 bar (0.1), flow equal.
    d.record(a, {"feed_pressure_sp_bar": 8.8, "feed_flow_sp_m3h": 40.0}, LAST)
    s = d.stats()
    assert s.divergence_max == pytest.approx(0.1)
    assert s.divergence_mean == pytest.approx((0.05 + 0.1) / 2)
    assert s.divergence_by_tag["feed_pressure_sp_bar"] == pytest.approx((0.025 + 0.1) / 2)
    assert s.divergence_by_tag["feed_flow_sp_m3h"] == pytest.approx(0.025)
    # 8.8 bar is a move of 3.2 > 1.5 bar max move: one hypothetical hit.
    assert s.violations == 1
    assert s.violations_by_kind == {"feed_pressure_sp_bar:max_move": 1}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (12.0, None),
        (13.5, None),
        (13.6, LimitKind.MAX_MOVE),
        (7.0, LimitKind.OPERATOR),
        (21.0, LimitKind.OPERATOR),
        (31.0, LimitKind.ENGINEER),
        (5.0, LimitKind.ENGINEER),
    ],
)
def test_limit_hits_report_the_worst_kind(value: float, kind: LimitKind | None) -> None:
    assert (
        limit_hit("feed_pressure_sp_bar", value, 12.0, LIMITS["feed_pressure_sp_bar"], 1.0) == kind
    )


def test_catalogue_max_move_applies_without_site_limits() -> None:
    # feed_flow_sp_m3h: no site limits, catalogue max_move 4 m3/h.
    assert limit_hit("feed_flow_sp_m3h", 44.0, 40.0, None, 4.0) is None
    assert limit_hit("feed_flow_sp_m3h", 44.5, 40.0, None, 4.0) is LimitKind.MAX_MOVE
    with pytest.raises(ValueError, match="feed_flow_sp_m3h: proposed value nan"):
        limit_hit("feed_flow_sp_m3h", float("nan"), 40.0, None, 4.0)


def test_incumbent_hits_and_candidate_errors_are_counted_apart() -> None:
    d = duel()
    d.record({"feed_pressure_sp_bar": 25.0, "feed_flow_sp_m3h": 40.0}, None, LAST)
    d.record(
        {"feed_pressure_sp_bar": 25.0, "feed_flow_sp_m3h": 40.0},
        {"feed_pressure_sp_bar": 12.5, "feed_flow_sp_m3h": 46.0},
        LAST,
    )
    s = d.stats()
    assert s.candidate_errors == 1 and s.steps == 1
    assert s.incumbent_violations == 1  # 25 bar: operator limit
    assert s.violations_by_kind == {"feed_flow_sp_m3h:max_move": 1}


def _clean_steps(d: ShadowDuel, n: int, gap: float = 0.5) -> None:
    for _ in range(n):
        d.record(
            {"feed_pressure_sp_bar": 12.0, "feed_flow_sp_m3h": 40.0},
            {"feed_pressure_sp_bar": 12.0 + gap, "feed_flow_sp_m3h": 40.0},
            LAST,
            candidate_uncertainty=0.05,
        )


def test_gates_pass_with_enough_clean_steps_and_a_better_kpi() -> None:
    d = duel()
    _clean_steps(d, 5)
    d.record_kpi(10.0, 10.5)
    d.record_kpi(10.0, 10.3)
    report = d.gates(ModePolicy(min_shadow_steps=5), GateThresholds())
    assert report.passed, report.failures
    assert {c.name for c in report.checks} == {
        "shadow_steps", "violations", "candidate_errors", "kpi", "uncertainty",
    }  # fmt: skip
    assert report.stats.kpi_gain_eur_h == pytest.approx(0.4)
    assert (report.candidate, report.incumbent) == (CANDIDATE, INCUMBENT)


@pytest.mark.parametrize(
    ("setup", "failed"),
    [
        (lambda d: _clean_steps(d, 4), "shadow_steps"),
        (lambda d: _clean_steps(d, 5, gap=2.0), "violations"),
        (
            lambda d: (_clean_steps(d, 5), d.record({"feed_pressure_sp_bar": 12.0}, None, LAST)),
            "candidate_errors",
        ),
    ],
)
def test_gates_fail_for_each_reason(setup: object, failed: str) -> None:
    d = duel()
    setup(d)  # type: ignore[operator]
    d.record_kpi(10.0, 10.0)
    report = d.gates(ModePolicy(min_shadow_steps=5), GateThresholds())
    assert not report.passed
    assert [c.name for c in report.checks if not c.passed] == [failed]
    assert report.failures[0].startswith(failed)


def test_kpi_gate() -> None:
    d = duel()
    _clean_steps(d, 5)
    policy = ModePolicy(min_shadow_steps=5)
    missing = d.gates(policy, GateThresholds(min_kpi_samples=1))
    assert [c.name for c in missing.checks if not c.passed] == ["kpi"]
    assert "0 twin KPI evaluations, 1 required" in missing.failures[0]
    assert d.gates(policy, GateThresholds(min_kpi_samples=0)).passed
    d.record_kpi(10.0, 9.0)
    worse = d.gates(policy, GateThresholds())
    assert not worse.passed and "-1.00" in worse.failures[0]
    assert d.gates(policy, GateThresholds(kpi_tolerance_eur_h=1.0)).passed
    with pytest.raises(ValueError, match="finite"):
        d.record_kpi(float("nan"), 1.0)


def test_uncertain_candidate_fails_the_uncertainty_gate() -> None:
    d = duel()
    for _ in range(5):
        d.record(LAST, dict(LAST), LAST, candidate_uncertainty=0.6)
    report = d.gates(ModePolicy(min_shadow_steps=5, max_uncertainty=0.25), GateThresholds(0, 0, 0))
    assert [c.name for c in report.checks if not c.passed] == ["uncertainty"]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="action range of 'x' is empty"):
        ShadowDuel(INCUMBENT, CANDIDATE, {"x": (1.0, 1.0)})
    with pytest.raises(ValueError, match="kpi_tolerance_eur_h"):
        GateThresholds(kpi_tolerance_eur_h=-1.0)
