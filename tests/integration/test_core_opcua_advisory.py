"""Advisory and automatic flows of the control core with the shipped RO agent over OPC UA.

One fast simulated plant per module; each test builds its own core (ledger, users) on it and drives
the agent steps itself. Setpoints are read back from the PLC.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import pytest

from app.controllers.safety import Layer
from app.domain import Mode, RecommendationState, RejectReason
from tests.integration.conftest import ROOT, SHIPPED_VERSION, CoreRig, core_wait_for

P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
RigFactory = Callable[..., CoreRig]


def _proposed(rig: CoreRig) -> str:
    before = rig.agent.counters.recommendations
    rig.step()
    assert rig.agent.counters.recommendations == before + 1, rig.agent.counters
    rec = rig.core.status().last_recommendation
    assert rec is not None and rec.state is RecommendationState.PROPOSED
    assert rec.agent.version == SHIPPED_VERSION
    return str(rec.rec_id)


def _settled(rig: CoreRig, rec_id: str) -> bool:
    state = rig.agent.recommendation(rec_id).state
    return state in (RecommendationState.CONFIRMED, RecommendationState.FAILED)


def test_advisory_approve_modify_reject_expire_with_the_shipped_agent(
    core_rig: RigFactory,
) -> None:
    rig = core_rig(ttl_s=2.0)
    op = rig.sessions["op"]

    rec_id = _proposed(rig)
    rec = rig.agent.recommendation(rec_id)
    verdict = rig.agent.approve(rec_id, op).result(15)
    assert verdict.accepted and verdict.state is RecommendationState.CONFIRMED, verdict
    wanted = {sp.tag: sp.value for sp in rec.setpoints}
    pressure, flow = rig.setpoints()
    assert pressure == pytest.approx(wanted.get(P, pressure), abs=1e-3)
    assert flow == pytest.approx(wanted.get(F, flow), abs=1e-3)

    rec_id = _proposed(rig)
    mine = {P: round(pressure - 0.5, 2), F: round(flow - 2.0, 2)}
    verdict = rig.agent.modify(rec_id, mine, op).result(15)
    assert verdict.accepted and verdict.state is RecommendationState.CONFIRMED, verdict
    assert rig.setpoints() == pytest.approx((mine[P], mine[F]), abs=1e-3)

    rec_id = _proposed(rig)
    verdict = rig.agent.reject(rec_id, RejectReason.PROCESS_UPSET, "", op).result(10)
    assert not verdict.accepted and "reason code and a text" in verdict.reason
    verdict = rig.agent.reject(rec_id, RejectReason.PROCESS_UPSET, "feed tank low", op).result(10)
    assert verdict.accepted and verdict.state is RecommendationState.REJECTED
    assert rig.setpoints() == pytest.approx((mine[P], mine[F]), abs=1e-3)  # nothing written

    rec_id = _proposed(rig)
    core_wait_for("the recommendation to expire", lambda: (
        rig.agent.recommendation(rec_id).state is RecommendationState.EXPIRED
    ))  # fmt: skip
    verdict = rig.agent.approve(rec_id, op).result(10)
    assert not verdict.accepted and "expired" in verdict.reason
    assert rig.setpoints() == pytest.approx((mine[P], mine[F]), abs=1e-3)

    decisions = [e.data for e in rig.events("decision")]
    assert [d["kind"] for d in decisions] == ["approve", "modify", "reject", "expire"]
    assert decisions[2]["reason"] == "process_upset" and decisions[2]["note"] == "feed tank low"
    assert decisions[1]["setpoints"] == mine
    assert all(d["agent"] == SHIPPED_VERSION for d in decisions)
    (stats,) = rig.core.status().acceptance
    assert (stats.approved, stats.modified, stats.rejected, stats.expired) == (1, 1, 1, 1)
    assert stats.acceptance_rate == pytest.approx(0.5)
    writes = [e for e in rig.events("write_result")]
    assert len(writes) == 2 and all(e.origin.name == "op" for e in writes)


def test_automatic_writes_only_inside_engineer_and_operator_limits(core_rig: RigFactory) -> None:
    rig = core_rig()
    verdict = rig.core.request_mode(Mode.AUTOMATIC, rig.sessions["eng"]).result(10)
    assert not verdict.accepted and "confirm" in verdict.reason
    rig.automatic()
    seen = []
    for _ in range(6):
        rig.step()
        rec = rig.core.status().last_recommendation
        if rec is not None:
            core_wait_for(
                f"the write of {rec.rec_id} to settle", partial(_settled, rig, rec.rec_id)
            )
        seen.append(rig.setpoints())
        time.sleep(0.1)
    assert rig.core.status().mode is Mode.AUTOMATIC
    assert rig.agent.counters.auto_writes >= 1
    for pressure, flow in seen:
        assert 7.0 <= pressure <= 19.0 and 6.0 <= pressure <= 20.0
        assert 28.0 <= flow <= 62.0 and 25.0 <= flow <= 65.0
    limits = rig.site.limits
    requested = [e for e in rig.events("write_requested") if e.origin.kind.value == "agent"]
    assert requested, "no agent write was audited"
    for event in requested:
        assert event.origin.name == SHIPPED_VERSION
        for tag, change in event.data["setpoints"].items():
            value, lim = change["new"], limits[tag]
            assert lim.operator_low is not None and lim.operator_high is not None
            assert lim.operator_low <= value <= lim.operator_high, (tag, value)
    results = {e.data["request_id"]: e for e in rig.events("write_result")}
    assert {e.data["request_id"] for e in requested} <= set(results)
    auto = [e.data for e in rig.events("decision") if e.data["kind"] == "auto_apply"]
    assert len(auto) == rig.agent.counters.auto_writes


def test_safety_envelope_rejects_with_reason_and_layer(core_rig: RigFactory) -> None:
    rig = core_rig()
    op = rig.sessions["op"]
    pressure, flow = rig.setpoints()
    rec_id = _proposed(rig)
    cases = {
        Layer.OPERATOR_LIMITS: {P: 19.5},  # inside the engineer limits, outside the operator's
        Layer.ENGINEER_LIMITS: {F: 66.0},
        Layer.MAX_MOVE: {P: pressure + 1.6 if pressure + 1.6 <= 19.0 else pressure - 1.6},
    }
    for layer, values in cases.items():
        verdict = rig.agent.modify(rec_id, values, op).result(10)
        assert not verdict.accepted, (layer, verdict)
        assert f"({layer.value})" in verdict.reason, (layer, verdict.reason)
    assert rig.setpoints() == pytest.approx((pressure, flow), abs=1e-3)
    # The agent's own proposals meet an interlock: the panel selector goes to local.
    rig.plant.faults.set_remote(False)
    core_wait_for("the local-mode reading", lambda: (
        (s := rig.core.snapshot.snapshot().samples.get("remote_mode")) is not None
        and s.value == 0.0
    ))  # fmt: skip
    refused = rig.agent.counters.proposals_refused
    rig.step()
    assert rig.agent.counters.proposals_refused == refused + 1, rig.agent.counters
    step = rig.events("agent_step")[-1]
    assert step.data["outcome"] == "proposal_refused"
    assert step.data["detail"].startswith("interlock:") and "local mode" in step.data["detail"]
    assert rig.events("write_requested") == []  # nothing reached the driver


def test_roles_are_enforced_on_every_command(core_rig: RigFactory) -> None:
    rig = core_rig()
    s = rig.sessions
    verdict = rig.core.request_mode(Mode.AUTOMATIC, s["op"], confirm=True).result(10)
    assert not verdict.accepted and "engineer" in verdict.reason
    verdict = rig.core.request_mode(Mode.ADVISORY, s["view"]).result(10)
    assert not verdict.accepted and "operator" in verdict.reason
    swap = rig.agent.promote(s["op"]).result(10)
    assert not swap.accepted and "engineer" in swap.reason
    swap = rig.agent.rollback(s["eng"], "engineer tries").result(10)
    assert not swap.accepted and "supervisor" in swap.reason
    rec_id = _proposed(rig)
    verdict = rig.agent.approve(rec_id, s["view"]).result(10)
    assert not verdict.accepted and "operator" in verdict.reason
    # Emergency return to base control needs no login at all.
    verdict = rig.core.return_to_base_control(None).result(10)
    assert verdict.accepted and verdict.mode is Mode.OFF
    denied = [e.data["action"] for e in rig.events("permission_denied")]
    assert {"mode_automatic", "promote", "rollback", "approve"} <= set(denied)


def test_alarm_commands_check_the_session_and_role(core_rig: RigFactory) -> None:
    from app.controllers import alarm_points as ap
    from app.domain import AlarmState

    rig = core_rig()
    s = rig.sessions
    rig.plant.faults.bad_status("feed_temperature_c")
    core_wait_for("the inputs alarm", lambda: rig.core.alarms.point(ap.PLC_INPUTS).active)
    verdict = rig.core.ack_alarm(ap.PLC_INPUTS, s["view"], "seen").result(10)
    assert not verdict.accepted and "operator" in verdict.reason
    verdict = rig.core.ack_alarm("no.such.alarm", s["op"]).result(10)
    assert not verdict.accepted and "unknown alarm" in verdict.reason
    verdict = rig.core.ack_alarm(ap.PLC_INPUTS, s["op"], "technician called").result(10)
    assert verdict.accepted and verdict.state is AlarmState.ACKED
    verdict = rig.core.shelve_alarm(ap.PLC_INPUTS, s["op"], 60.0, "").result(10)
    assert not verdict.accepted and "reason" in verdict.reason
    verdict = rig.core.shelve_alarm(ap.PLC_INPUTS, s["op"], 60.0, "sensor swap").result(10)
    assert verdict.accepted and verdict.state is AlarmState.SHELVED
    rig.core._call(lambda: rig.core.auth.logout(s["op"]))
    verdict = rig.core.unshelve_alarm(ap.PLC_INPUTS, s["op"]).result(10)
    assert not verdict.accepted and "ended" in verdict.reason
    verdict = rig.core.unshelve_alarm(ap.PLC_INPUTS, s["eng"]).result(10)
    assert verdict.accepted and verdict.state is AlarmState.UNACKED  # condition still active
    journal = [e for e in rig.events("alarm") if e.data["alarm_id"] == ap.PLC_INPUTS]
    ops = [
        (e.data["event"], e.origin.name, e.data["note"])
        for e in journal
        if e.origin.name != "alarms"
    ]
    assert ops == [("ack", "op", "technician called"), ("shelve", "op", "sensor swap"),
                   ("unshelve", "eng", "")]  # fmt: skip
    refused = [e.data["reason"] for e in rig.events("alarm_command_refused")]
    assert len(refused) == 4 and any("unknown alarm" in r for r in refused)


def test_audit_verify_detects_an_edited_and_a_deleted_row(core_rig: RigFactory) -> None:
    import shutil
    import sqlite3

    rig = core_rig()
    for _ in range(2):
        rig.step()
    rig.close()
    ledger = rig.core.data_dir / "ledger.sqlite"

    def audit_verify(path: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "audit", "verify", str(path)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip

    assert audit_verify(ledger).returncode == 0
    edited, deleted = ledger.with_name("edited.sqlite"), ledger.with_name("deleted.sqlite")
    shutil.copy(ledger, edited)
    shutil.copy(ledger, deleted)
    with sqlite3.connect(edited) as conn:
        conn.execute("DROP TRIGGER ledger_no_update")
        conn.execute(
            "UPDATE ledger SET summary = 'nothing happened' WHERE seq = "
            "(SELECT MIN(seq) FROM ledger WHERE kind = 'agent_step')"
        )
    with sqlite3.connect(deleted) as conn:
        conn.execute("DROP TRIGGER ledger_no_delete")
        conn.execute(
            "DELETE FROM ledger WHERE seq = (SELECT MIN(seq) FROM ledger WHERE kind = 'agent_step')"
        )
    out = audit_verify(edited)
    assert out.returncode == 1 and "row edited" in out.stderr, out
    out = audit_verify(deleted)
    assert out.returncode == 1 and "missing (deleted)" in out.stderr, out
