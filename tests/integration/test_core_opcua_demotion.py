"""Every automatic demotion of the control core, with the shipped RO agent over OPC UA.

Each case enters AUTOMATIC (engineer, confirmed), lets the shipped agent write once, injects one
fault at the simulated PLC (or the agent worker) and checks the mode, the audited reason, the alarm
and that no agent setpoint reached the PLC after the fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.controllers import alarm_points as ap
from app.domain import Mode, RecommendationState
from app.plant.plc import Refusal, WriteRefused
from app.plant.server import PlantServerThread
from tests.integration.conftest import CoreRig, core_wait_for

P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
RigFactory = Callable[..., CoreRig]


@pytest.fixture
def plc_refuses_setpoints(fast_plant: PlantServerThread) -> Iterator[Callable[[], None]]:
    """Make the PLC program refuse every setpoint write (restored after the test)."""
    core = fast_plant.server.core
    original = core.write

    def refuse() -> None:
        def write(tag: str, value: float, now: float) -> None:
            if tag in (P, F):
                raise WriteRefused(tag, value, Refusal.WRITE_INHIBIT, "test: PLC program refuses")
            original(tag, value, now)

        fast_plant.call(setattr, core, "write", write)

    yield refuse
    fast_plant.call(setattr, core, "write", original)


@pytest.fixture
def slow_inference(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Make every ONNX Runtime session take ``seconds`` longer (the agent worker stalls)."""
    from onnxruntime import InferenceSession

    def slow(seconds: float) -> None:
        run = InferenceSession.run

        def delayed(self: Any, *args: Any, **kwargs: Any) -> Any:
            time.sleep(seconds)
            return run(self, *args, **kwargs)

        monkeypatch.setattr(InferenceSession, "run", delayed)

    return slow


@dataclass(frozen=True)
class Case:
    """One demotion trigger: the fault, the audited reason and where the mode goes."""

    inject: Callable[[CoreRig, dict[str, Any]], None]
    reason: str
    to: Mode = Mode.ADVISORY
    alarm: str = ap.MODE_DEMOTED
    site: dict[str, Any] = field(default_factory=dict)
    steps: int = 1
    seen: tuple[str, float] | None = None
    """A forced reading to wait for in the core's snapshot before stepping."""


def _step_until_demoted(rig: CoreRig, steps: int) -> None:
    for _ in range(steps):
        if rig.core.status().mode is not Mode.AUTOMATIC:
            return
        rig.step()
        time.sleep(0.1)


CASES = {
    "driver_fault": Case(
        lambda rig, fx: fx["plc_refuses_setpoints"](), "driver fault: PLC write failed", steps=1
    ),
    "stale_inputs": Case(
        lambda rig, fx: rig.plant.faults.freeze("feed_conductivity_uscm"),
        "inputs not usable: feed_conductivity_uscm",
        steps=0,
    ),
    "bad_quality_inputs": Case(
        lambda rig, fx: rig.plant.faults.bad_status("feed_temperature_c"),
        "inputs not usable: feed_temperature_c",
        steps=0,
    ),
    "agent_timeout": Case(
        lambda rig, fx: fx["slow_inference"](1.0),
        "agent missed its 0.5 s inference deadline",
        site={"deadline_s": 0.5},
    ),
    "high_uncertainty": Case(
        lambda rig, fx: None,
        "the recommendation goes to the operator",
        site={"modes": "max_uncertainty = 0.002"},
    ),
    "out_of_distribution": Case(
        # Far above anything in the agent's training data (mean 3469 µS/cm, σ 803).
        lambda rig, fx: rig.plant.faults.force("feed_conductivity_uscm", 9500.0),
        "agent abstained: OOD score",
        seen=("feed_conductivity_uscm", 9500.0),
    ),
    "repeated_safety_rejections": Case(
        lambda rig, fx: None,
        "3 safety rejections in a row",
        # The demo site's 15 bar operator limit: the shipped agent wants about 15.8 bar here.
        site={"pressure": (7.0, 15.0, 6.0, 16.0)},
        steps=8,
    ),
    "loss_of_the_plc": Case(
        lambda rig, fx: rig.plant.faults.stop_servers(),
        "PLC connection",
        to=Mode.OFF,
        steps=0,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_automatic_is_demoted(
    name: str,
    core_rig: RigFactory,
    plc_refuses_setpoints: Callable[[], None],
    slow_inference: Callable[[float], None],
) -> None:
    case = CASES[name]
    rig = core_rig(**case.site)
    fixtures = {"plc_refuses_setpoints": plc_refuses_setpoints, "slow_inference": slow_inference}
    rig.automatic()
    if name not in ("high_uncertainty", "repeated_safety_rejections", "agent_timeout"):
        rig.step()
        first = rig.core.status().last_recommendation
        assert first is not None
        rec_id = first.rec_id
        core_wait_for("the first automatic write", lambda: (
            rig.agent.recommendation(rec_id).state is RecommendationState.CONFIRMED
        ))  # fmt: skip
    assert rig.core.status().mode is Mode.AUTOMATIC
    writes_before = len(rig.events("write_requested"))
    case.inject(rig, fixtures)
    if case.seen is not None:
        tag, value = case.seen
        core_wait_for(f"{tag} = {value:g} in the snapshot", lambda: (
            (s := rig.core.snapshot.snapshot().samples.get(tag)) is not None and s.value == value
        ))  # fmt: skip
    _step_until_demoted(rig, case.steps)
    core_wait_for(f"demotion on {name}", lambda: rig.core.status().mode is case.to, timeout=15)
    status = rig.core.status()
    assert case.reason in status.mode_reason, status.mode_reason
    change = rig.events("mode_change")[-1]
    assert change.data["old"] == "automatic" and change.data["new"] == case.to.value
    assert case.reason in change.summary
    assert rig.core.alarms.point(case.alarm).active
    late = rig.events("write_requested")[writes_before:]
    assert all(e.origin.kind.value != "agent" for e in late) or name in (
        "driver_fault",  # the refused write itself is the fault
        "repeated_safety_rejections",  # accepted writes before the limit was met
    ), late
    if name == "high_uncertainty":
        rec = status.last_recommendation
        assert rec is not None and rec.state is RecommendationState.PROPOSED
    if name == "out_of_distribution":
        assert rig.agent.counters.abstentions >= 1
    if name == "agent_timeout":
        assert rig.agent.counters.deadline_misses >= 1
        assert rig.core.alarms.point(ap.AGENT_DEADLINE).active
    if case.to is Mode.ADVISORY:  # the next step only recommends; nothing is written
        after = len(rig.events("write_requested"))
        rig.step()
        assert rig.core.status().mode is Mode.ADVISORY
        assert rig.events("write_requested")[after:] == []
