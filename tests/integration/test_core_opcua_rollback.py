"""Rollback from a newly promoted agent to the shipped RO agent, over OPC UA.

A crafted, signed agent (test key, trusted beside the shipped key) is loaded as candidate, shadows
the shipped agent for the site's ``min_shadow_steps``, is promoted by an engineer and then
misbehaves; the triggers come from the site's ``[agents.rollback]`` table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.keys import public_key_of
from app.agent_runtime.manifest import NormalisationStats
from app.controllers import alarm_points as ap
from app.controllers.agent_rollback import RollbackSettings
from app.domain import Mode, RecommendationState, RejectReason
from tests.agent_runtime.conftest import (  # noqa: F401 - fixtures
    MEAN,
    STD,
    TRAIN_HIGH,
    TRAIN_LOW,
    PackageFactory,
    graphs,
    make_package,
    signing_key,
)
from tests.agent_runtime.policies import constant_onnx
from tests.integration.conftest import SHIPPED_VERSION, CoreRig, core_site_text, core_wait_for

P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
RigFactory = Callable[..., CoreRig]
WATCH = "watch_steps = 30\nmin_steps = 2\nmin_decisions = 2\nbaseline_steps = 4\n"
# Each test shows one trigger; the paired twin comparison is switched on only in its own test.
ONE = WATCH + "paired = false\n"


@pytest.fixture
def rig_with_test_key(
    core_rig: RigFactory,
    signing_key: Ed25519PrivateKey,  # noqa: F811
) -> Callable[..., CoreRig]:
    def make(**site: Any) -> CoreRig:
        return core_rig(extra_keys=(public_key_of(signing_key, "test"),), **site)

    return make


def _promote(
    rig: CoreRig, package: Path, version: str, *, shadow_steps: int = 2, pause_s: float = 0.0
) -> None:
    verdict = rig.agent.load_candidate(package, rig.sessions["op"]).result(15)
    assert not verdict.accepted and "engineer" in verdict.reason
    verdict = rig.agent.load_candidate(package, rig.sessions["eng"]).result(15)
    assert verdict.accepted, verdict
    for _ in range(shadow_steps):
        rig.step()
        time.sleep(pause_s)
    swap = rig.agent.promote(rig.sessions["eng"], "crafted for the test").result(15)
    assert swap.accepted, swap
    assert swap.active is not None and swap.active.version == version
    assert swap.previous is not None and swap.previous.version == SHIPPED_VERSION
    assert rig.agent.watch is not None and rig.agent.watch.agent.version == version


def _rolled_back(rig: CoreRig, trigger: str) -> dict[str, Any]:
    core_wait_for(f"rollback on {trigger}", lambda: (
        (a := rig.core.status().active) is not None and a.version == SHIPPED_VERSION
    ))  # fmt: skip
    (tripped,) = rig.events("rollback_triggered")
    assert tripped.data["trigger"] == trigger, tripped.data
    done = rig.events("rollback")[-1]
    assert done.data["accepted"] and done.data["trigger"] == trigger
    assert rig.core.alarms.point(ap.AGENT_ROLLBACK).active
    return dict(tripped.data)


def _step_until_a_trigger(rig: CoreRig, *, pause_s: float, steps: int = 12) -> None:
    """Drive agent steps (each write settled) until a rollback trigger fires or ``steps`` ran."""
    for _ in range(steps):
        if rig.events("rollback_triggered"):
            return
        rig.step()
        _settle(rig)
        time.sleep(pause_s)


def _settle(rig: CoreRig) -> None:
    rec = rig.core.status().last_recommendation
    if rec is not None and rec.state is not RecommendationState.PROPOSED:
        core_wait_for(f"{rec.rec_id} to settle", lambda: rig.agent.recommendation(rec.rec_id).state
                      in (RecommendationState.CONFIRMED, RecommendationState.FAILED,
                          RecommendationState.REJECTED, RecommendationState.EXPIRED))  # fmt: skip


def test_site_rollback_and_gate_keys_reach_the_agent_controller(fast_plant: Any) -> None:
    from app.config import parse_site
    from app.controllers.agent_site import agent_settings_from_site

    text = core_site_text(
        fast_plant.opcua_endpoint,
        rollback=ONE + "cusum = false\nabstention_rate = 0\nconstraint_hit_rate = 0.4\n",
        gates="max_violations = 3\nkpi_tolerance_eur_h = 0.5\n",
    )
    settings = agent_settings_from_site(parse_site(text).agents)
    assert settings.rollback == RollbackSettings(
        watch_steps=30, min_steps=2, min_decisions=2, baseline_steps=4, cusum=False,
        paired=False, abstention_rate=None, constraint_hit_rate=0.4,
    )  # fmt: skip
    assert (settings.gates.max_violations, settings.gates.kpi_tolerance_eur_h) == (3, 0.5)
    assert settings.gates.min_kpi_samples == 1  # left out: the default


def test_site_defaults_mirror_the_controller_and_every_key_is_documented() -> None:
    from app.config import GateConfig, RollbackConfig, default_site_path, key_lines, parse_site
    from app.controllers.agent import AgentSettings
    from app.controllers.agent_site import agent_settings_from_site

    minimal = 'schema_version = 1\n[site]\nname = "m"\nprocess = "ro"\n[plant]\n'
    minimal += 'protocol = "modbus"\n[plant.modbus]\nhost = "10.0.0.5"\n'
    assert agent_settings_from_site(parse_site(minimal).agents) == AgentSettings()
    documented = key_lines(default_site_path().read_text())
    for table, model in (("rollback", RollbackConfig), ("gates", GateConfig)):
        for key in model.model_fields:
            assert ("agents", table, key) in documented, f"[agents.{table}] {key} not documented"


def test_core_takes_rollback_settings_from_the_site_unless_given(
    fast_plant: Any, tmp_path: Path
) -> None:
    from app.agent_runtime.keys import TrustStore
    from app.config import parse_site
    from app.controllers.agent import AgentSettings
    from app.controllers.auth import ScryptParams
    from app.controllers.core import ControlCore, CoreOptions
    from tests.integration.conftest import SHIPPED_TRUST

    site = parse_site(
        core_site_text(fast_plant.opcua_endpoint, rollback="min_steps = 3\nrejection_rate = 0\n")
    )
    for given, expected in ((None, (3, None)), (AgentSettings(), (8, 0.5))):
        core = ControlCore(site, CoreOptions(
            data_dir=tmp_path / str(given is None), trust_store=TrustStore.load(SHIPPED_TRUST),
            scrypt=ScryptParams(n=2**4, r=1, p=1), initial_user=("sup", "correct-horse-battery"),
            trend_capacity=100, agent=given,
        ))  # fmt: skip
        core.start()
        try:
            connected = partial(lambda c: c.status().plc.value == "connected", core)
            core_wait_for("the PLC connection", connected)
            assert core.agent is not None
            got = core.agent.settings.rollback
            assert (got.min_steps, got.rejection_rate) == expected
        finally:
            core.stop()


def test_supervisor_rollback_needs_the_role_and_a_reason(
    rig_with_test_key: Callable[..., CoreRig],
    make_package: PackageFactory,  # noqa: F811
) -> None:
    rig = rig_with_test_key(rollback=ONE + "cusum = false\n")
    pressure, flow = rig.setpoints()
    pkg = make_package(policy=constant_onnx([pressure, flow]), ensemble=(), version="ro-crafted.1")
    _promote(rig, pkg, "ro-crafted.1")
    swap = rig.agent.rollback(rig.sessions["eng"], "engineer wants it back").result(15)
    assert not swap.accepted and "supervisor" in swap.reason
    swap = rig.agent.rollback(rig.sessions["sup"], "  ").result(15)
    assert not swap.accepted and "reason" in swap.reason
    swap = rig.agent.rollback(rig.sessions["sup"], "operators distrust ro-crafted.1").result(15)
    assert swap.accepted and swap.active is not None and swap.active.version == SHIPPED_VERSION
    requested = rig.events("rollback_requested")[-1]
    assert requested.origin.name == "sup"
    assert requested.data["reason"] == "operators distrust ro-crafted.1"
    assert rig.events("rollback")[-1].data["trigger"] == "supervisor"
    assert rig.agent.watch is None
    rig.step()  # the shipped agent is in charge again
    rec = rig.core.status().last_recommendation
    assert rec is not None and rec.agent.version == SHIPPED_VERSION


def test_rollback_on_operator_rejection_rate(
    rig_with_test_key: Callable[..., CoreRig],
    make_package: PackageFactory,  # noqa: F811
) -> None:
    rig = rig_with_test_key(rollback=ONE + "cusum = false\n")
    pressure, flow = rig.setpoints()
    target = [min(pressure + 0.5, 16.4), max(flow - 3.0, 29.0)]
    pkg = make_package(policy=constant_onnx(target), ensemble=(), version="ro-crafted.2")
    _promote(rig, pkg, "ro-crafted.2")
    for _ in range(2):
        rig.step()
        rec = rig.core.status().last_recommendation
        assert rec is not None and rec.agent.version == "ro-crafted.2"
        verdict = rig.agent.reject(rec.rec_id, RejectReason.DISAGREE, "no", rig.sessions["op"])
        assert verdict.result(10).accepted
    data = _rolled_back(rig, "operator_rejections")
    assert "rejected 2 of 2" in data["reason"]


def test_rollback_on_constraint_hit_rate(
    rig_with_test_key: Callable[..., CoreRig],
    make_package: PackageFactory,  # noqa: F811
) -> None:
    rig = rig_with_test_key(rollback=ONE + "cusum = false\n")
    pressure, _ = rig.setpoints()
    # Drives the feed flow below the operators' 28 m³/h: ramped down 5 m³/h per step, then refused.
    pkg = make_package(policy=constant_onnx([pressure, 26.0]), ensemble=(), version="ro-crafted.3")
    _promote(rig, pkg, "ro-crafted.3")
    rig.automatic()
    for _ in range(12):
        if rig.events("rollback_triggered"):
            break
        rig.step()
        _settle(rig)
    data = _rolled_back(rig, "constraint_hits")
    assert "refused by the safety envelope" in data["reason"]
    refused = [e for e in rig.events("agent_step") if e.data["outcome"] == "proposal_refused"]
    details = [e.data["detail"] for e in refused]
    assert details and all(d.startswith("operator_limits:") for d in details), details
    assert rig.setpoints()[1] >= 28.0  # nothing below the operator limit reached the PLC


def test_rollback_on_abstention_rate(
    rig_with_test_key: Callable[..., CoreRig],
    make_package: PackageFactory,  # noqa: F811
) -> None:
    rig = rig_with_test_key(rollback=ONE + "cusum = false\n")
    pressure, flow = rig.setpoints()
    # Trained on a far narrower distribution: every plant reading is out of distribution for it.
    narrow = NormalisationStats(
        mean=tuple(MEAN), std=tuple(np.asarray(STD) * 0.02),
        train_low=tuple(TRAIN_LOW), train_high=tuple(TRAIN_HIGH),
    )  # fmt: skip
    pkg = make_package(policy=constant_onnx([pressure, flow]), ensemble=(),
                       version="ro-crafted.4", normalisation=narrow)  # fmt: skip
    _promote(rig, pkg, "ro-crafted.4")
    for _ in range(2):
        rig.step()
    data = _rolled_back(rig, "abstention")
    assert "abstained on 2 of 2" in data["reason"]
    assert rig.core.status().mode is Mode.ADVISORY


def test_rollback_on_cusum_of_normalised_sec(
    rig_with_test_key: Callable[..., CoreRig],
    make_package: PackageFactory,  # noqa: F811
) -> None:
    rig = rig_with_test_key(
        rollback=ONE + "constraint_hit_rate = 0\nabstention_rate = 0\nrejection_rate = 0\n"
    )
    pressure, _ = rig.setpoints()
    # Pushes far more feed through the pumps for the same permeate: energy per m³ rises.
    target = [pressure, 61.0]
    pkg = make_package(policy=constant_onnx(target), ensemble=(), version="ro-crafted.5")
    # Four shadow steps under the shipped agent form the SEC baseline (advisory: nothing written).
    _promote(rig, pkg, "ro-crafted.5", shadow_steps=4, pause_s=0.3)
    watch = rig.agent.watch
    assert watch is not None and watch.mu is not None
    baseline = watch.mu
    rig.automatic()
    _step_until_a_trigger(rig, pause_s=0.5)
    data = _rolled_back(rig, "cusum_sec")
    assert "CUSUM of normalised SEC" in data["reason"]
    last = rig.events("agent_step")[-1]
    assert (
        last.data["observation"]["hpp_power_kw"]["value"]
        / max(last.data["observation"]["permeate_flow_m3h"]["value"], 1e-6)
        > baseline
    )


def test_rollback_on_paired_twin_loss_against_the_shipped_agent(
    rig_with_test_key: Callable[..., CoreRig],
    make_package: PackageFactory,  # noqa: F811
) -> None:
    rig = rig_with_test_key(
        rollback=WATCH
        + "cusum = false\nconstraint_hit_rate = 0\nabstention_rate = 0\nrejection_rate = 0\n"
    )
    pressure, _ = rig.setpoints()
    # The same feed pressure with half again as much feed: the pumps work for nothing.
    pkg = make_package(policy=constant_onnx([pressure, 61.0]), ensemble=(), version="ro-crafted.6")
    _promote(rig, pkg, "ro-crafted.6", shadow_steps=2)
    rig.automatic()
    _step_until_a_trigger(rig, pause_s=0.3)
    data = _rolled_back(rig, "paired_kpi")
    assert "against the previous agent on the live-aligned twin" in data["reason"]
    # The watched steps ran the shipped agent beside the promoted one (audited with the step).
    paired = [e for e in rig.events("agent_step") if "previous" in e.data.get("actions", {})]
    assert paired and all(e.data["actions"]["previous"]["version"] == SHIPPED_VERSION
                          for e in paired)  # fmt: skip
