"""The per-step shadow event: both agents' actions, divergence and the gates after each step."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.agent_runtime.keys import TrustStore
from app.agent_runtime.shadow import GateThresholds
from app.config import ModePolicy
from app.controllers.agent import AgentSettings
from app.controllers.messages import AgentSwapped, ShadowStepped
from app.domain import Mode, Slot, utc_now
from app.plant.catalog import RO_CATALOG
from tests.agent_runtime.conftest import PackageFactory
from tests.controllers.conftest import F, P, Rig, constant_package

SPAN = {t.name: t.high - t.low for t in RO_CATALOG.setpoints}
GATES = GateThresholds(min_kpi_samples=0, max_violations=10)


def _rig(tmp_path: Path, trust: TrustStore, promotion: str = "manual") -> Rig:
    policy = ModePolicy(min_shadow_steps=2, promotion=promotion)  # type: ignore[arg-type]
    return Rig(
        tmp_path, trust, policy=policy, settings=AgentSettings(shadow_kpi_every=0, gates=GATES)
    )


def _advisory_with_candidate(rig: Rig, make_package: PackageFactory) -> None:
    rig.load(constant_package(make_package, 12.2, 40.0, "ro-a"))
    assert rig.run(rig.mode.request_mode(Mode.ADVISORY, rig.login("op"))).accepted
    rig.load(constant_package(make_package, 12.6, 43.0, "ro-b"), Slot.CANDIDATE)


def test_each_shadow_step_publishes_both_actions_divergence_and_gates(
    tmp_path: Path, trust_store: TrustStore, make_package: PackageFactory
) -> None:
    rig = _rig(tmp_path, trust_store)
    try:
        events = rig.record(ShadowStepped)
        rig.load(constant_package(make_package, 12.2, 40.0, "ro-a"))
        assert rig.run(rig.mode.request_mode(Mode.ADVISORY, rig.login("op"))).accepted
        rig.step()
        assert events == []  # no candidate, no duel
        rig.load(constant_package(make_package, 12.6, 43.0, "ro-b"), Slot.CANDIDATE)
        rig.step()
        rig.advance(61)
        rig.step()
        assert [e.step for e in events] == sorted({e.step for e in events}) and len(events) == 2
        first, second = events
        assert (first.active.version, first.candidate.version) == ("ro-a", "ro-b")
        assert first.active_action == pytest.approx({P: 12.2, F: 40.0}, abs=1e-4)
        assert first.candidate_action == pytest.approx({P: 12.6, F: 43.0}, abs=1e-4)
        assert first.divergence == pytest.approx({P: 0.4 / SPAN[P], F: 3.0 / SPAN[F]}, abs=1e-5)
        assert first.divergence_max == pytest.approx(3.0 / SPAN[F], abs=1e-5)
        assert first.candidate_error is None
        # One step is short of min_shadow_steps = 2: the shadow_steps gate fails, then passes.
        assert (first.shadow_steps, first.gates_passed) == (1, False)
        failing = [g.name for g in first.gates if not g.passed]
        assert failing == ["shadow_steps"]
        assert (second.shadow_steps, second.gates_passed) == (2, True)
        assert all(g.passed for g in second.gates)
        assert rig.host.versions.active is not None
        assert rig.host.versions.active.version == "ro-a"  # manual promotion: nothing swapped
    finally:
        rig.close()


def test_automatic_promotion_acts_on_the_report_published_with_the_step(
    tmp_path: Path, trust_store: TrustStore, make_package: PackageFactory
) -> None:
    rig = _rig(tmp_path, trust_store, promotion="automatic")
    try:
        events = rig.record(ShadowStepped, AgentSwapped)
        _advisory_with_candidate(rig, make_package)
        rig.step()
        rig.advance(61)
        rig.step()
        seen = [e for e in events if not isinstance(e, AgentSwapped) or e.kind == "promote"]
        assert [type(e).__name__ for e in seen] == [
            "ShadowStepped",
            "ShadowStepped",
            "AgentSwapped",
        ]
        assert seen[0].gates_passed is False and seen[1].gates_passed is True
        assert rig.host.versions.active is not None
        assert rig.host.versions.active.version == "ro-b"
    finally:
        rig.close()


def test_an_event_needs_a_candidate_outcome_and_positive_ranges(
    tmp_path: Path, trust_store: TrustStore, make_package: PackageFactory
) -> None:
    rig = _rig(tmp_path, trust_store)
    try:
        _advisory_with_candidate(rig, make_package)
        result = rig.host.infer(dict(rig.snapshot.snapshot().samples), {}).result(10)
        event = ShadowStepped.of(result, utc_now(), SPAN, None)
        assert event.gates_passed is None and event.gates == () and event.shadow_steps == 0
        with pytest.raises(ValueError, match="feed_pressure_sp_bar"):
            ShadowStepped.of(result, utc_now(), {**SPAN, P: 0.0}, None)
        solo = rig.host.discard_candidate()
        solo.result(10)
        alone = rig.host.infer(dict(rig.snapshot.snapshot().samples), {}).result(10)
        with pytest.raises(ValueError, match="no candidate"):
            ShadowStepped.of(alone, utc_now(), SPAN, None)
    finally:
        rig.close()
