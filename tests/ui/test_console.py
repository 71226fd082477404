"""The real console window driven like an operator would, against the simulated plant."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QMessageBox

from app.agent_runtime.package import write_package
from app.controllers.ledger import AuditFilter, LedgerReader
from app.controllers.retrain import RetrainFinished, RetrainProgressed, RetrainRequested
from app.controllers.sync import (
    CandidateDownloadFailed,
    CandidateDownloadProgressed,
    CandidateRefused,
)
from app.domain import (
    AlarmState,
    ConnectionChanged,
    ConnectionState,
    Mode,
    RecommendationState,
    RejectReason,
    Slot,
)
from app.ui.agents_panel import RollbackDialog
from app.ui.alarms_panel import NoteDialog
from app.ui.mode_panel import ModeConfirmDialog
from app.ui.recommendation_card import RejectDialog
from tests.agent_runtime.conftest import manifest_fields
from tests.agent_runtime.policies import constant_onnx
from tests.ui.conftest import PASSWORD, Console, F, P, Packages

pytestmark = pytest.mark.slow


def _ok(buttons: QDialogButtonBox) -> None:
    ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok is not None and ok.isEnabled()
    ok.click()


def _ledger(c: Console, *kinds: str) -> list:
    with LedgerReader(c.link.ledger_path) as reader:
        return [
            r.event
            for r in reader.query(AuditFilter(kinds=kinds, newest_first=False), limit=500).records
        ]


def _recommendation(c: Console):
    """Step the agent until the card shows a proposal (a step is skipped while inputs settle)."""
    card = c.window.card

    def shown() -> bool:
        rec = card.recommendation
        return rec is not None and rec.state is RecommendationState.PROPOSED

    for _ in range(10):
        c.step()
        try:
            c.wait(shown, 3000)
        except c.qtbot.TimeoutError:
            continue
        return card.recommendation
    pytest.fail(f"no recommendation after 10 agent steps: {c.core.status().kpis}")


def test_login_fails_then_succeeds_and_roles_gate_the_controls(c: Console) -> None:
    w = c.window
    assert w.banner.user_label.text() == "not logged in"
    assert not w.mode_panel.buttons[Mode.AUTOMATIC].isEnabled()
    w.open_login()
    dialog = w.login_dialog
    assert dialog is not None
    dialog.user.setText("olga")
    dialog.password.setText("wrong password!")
    dialog.submit()
    c.wait(lambda: not dialog.pending and "failed" in dialog.error.text().lower())
    assert w.session is None
    dialog.password.setText(PASSWORD)
    dialog.submit()
    c.wait(lambda: w.session is not None)
    assert w.banner.user_label.text() == "olga (operator)"
    # An operator may not switch to AUTOMATIC; an engineer may.
    assert not w.mode_panel.buttons[Mode.AUTOMATIC].isEnabled()
    c.login("emil")
    assert w.mode_panel.buttons[Mode.AUTOMATIC].isEnabled()
    logins = [e.origin.name for e in _ledger(c, "login")]
    assert logins == ["olga", "emil"]
    assert _ledger(c, "login_failed")[0].origin.name == "olga"


def test_approve_writes_the_recommendation_to_the_plc(c: Console) -> None:
    rec = _recommendation(c)
    card = c.window.card
    proposed = {sp.tag: sp.value for sp in rec.setpoints}
    assert proposed == pytest.approx({P: c.proposal[0], F: c.proposal[1]}, abs=1e-4)
    assert card.approve_button.isEnabled()
    card.approve_button.click()  # nobody logged in: refused before reaching the core
    assert c.window.login_dialog is not None and c.window.last_verdict is None
    c.window.login_dialog.reject()
    c.login("olga")
    card.approve_button.click()
    c.wait(lambda: card.recommendation is not None
           and card.recommendation.state is RecommendationState.CONFIRMED)  # fmt: skip
    assert c.plc(P) == pytest.approx(c.proposal[0], abs=0.01)
    assert c.plc(F) == pytest.approx(c.proposal[1], abs=0.01)
    decision = _ledger(c, "decision")[-1]
    assert decision.data["kind"] == "approve" and decision.origin.name == "olga"
    assert c.window.trends.marker_count >= 1


def test_modify_is_checked_live_against_the_envelope_and_reaches_the_plc(c: Console) -> None:
    c.login("olga")
    _recommendation(c)
    card = c.window.card
    card.modify_button.click()
    spin = card.rows[P][2]
    assert spin.isEnabled()
    spin.setValue(15.8)  # above the operator limit of 15 bar
    c.wait(lambda: "refused" in card.rows[P][3].text())
    assert not card.apply_modified_button.isEnabled()
    assert spin.property("envelope") == "rejected"
    mine = round((c.proposal[0] + c.plc(P)) / 2, 2)
    spin.setValue(mine)
    c.wait(lambda: "within the envelope" in card.rows[P][3].text())
    c.wait(card.apply_modified_button.isEnabled)
    card.apply_modified_button.click()
    c.wait(lambda: card.recommendation is not None
           and card.recommendation.state is RecommendationState.CONFIRMED)  # fmt: skip
    assert c.plc(P) == pytest.approx(mine, abs=0.01)
    assert c.plc(F) == pytest.approx(c.proposal[1], abs=0.01)
    assert _ledger(c, "decision")[-1].data["kind"] == "modify"


def test_reject_keeps_the_plc_setpoints_and_records_the_reason(c: Console) -> None:
    c.login("olga")
    _recommendation(c)
    card = c.window.card
    card.reject_button.click()
    dialog = card.reject_dialog
    assert isinstance(dialog, RejectDialog)
    dialog.reason.setCurrentIndex(dialog.reason.findData(RejectReason.OTHER))
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok is not None and not ok.isEnabled()  # "other" needs an explanation
    dialog.note.setPlainText("feed water change expected at noon")
    _ok(dialog.buttons)
    c.wait(lambda: card.recommendation is not None
           and card.recommendation.state is RecommendationState.REJECTED)  # fmt: skip
    assert not card.approve_button.isEnabled()
    decision = _ledger(c, "decision")[-1]
    assert decision.data["kind"] == "reject" and decision.data["reason"] == "other"
    assert "noon" in decision.data["note"]
    assert _ledger(c, "write_requested") == []  # nothing was sent to the PLC
    assert c.plc(P) != pytest.approx(c.proposal[0], abs=0.05)


def test_automatic_needs_an_engineer_and_a_confirmation(c: Console) -> None:
    w = c.window
    c.login("emil")
    w.mode_panel.buttons[Mode.AUTOMATIC].click()
    dialog = w.mode_panel.dialog
    assert isinstance(dialog, ModeConfirmDialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok is not None and not ok.isEnabled()
    dialog.reason.setText("night shift, stable feed")
    assert not ok.isEnabled()
    dialog.confirm.setChecked(True)
    _ok(dialog.buttons)
    c.wait(lambda: w.banner.mode is Mode.AUTOMATIC)
    assert w.banner.mode_label.property("mode") == "automatic"
    assert c.core.status().mode is Mode.AUTOMATIC
    change = _ledger(c, "mode_change")[-1]
    assert change.data["new"] == "automatic" and change.origin.name == "emil"
    # The hand-back works for anybody, logged in or not.
    w.logout()
    w.banner.return_button.click()
    c.wait(lambda: w.banner.mode is Mode.OFF)
    c.wait(lambda: c.plc("agent_in_control") == 0.0)
    assert _ledger(c, "mode_change")[-1].origin.name == "(not logged in)"


def test_engineer_promotes_and_supervisor_rolls_back(c: Console, packages: Packages) -> None:
    w = c.window
    c.login("emil")
    agent = c.core.agent
    assert agent is not None and c.core.host is not None
    verdict = c.result(agent.load_candidate(packages.b, w.session))
    assert verdict.accepted, verdict.reason
    c.link.add_package(packages.b)
    host = c.core.host
    for _ in range(10):  # one shadow step: the candidate is judged on the same observation
        c.step()
        stats = c.result(host.shadow_stats())
        if stats is not None and stats.steps >= 1:
            break
        c.qtbot.wait(1000)  # a step is skipped while inputs settle
    w.tabs.setCurrentWidget(w.agents)
    c.wait(lambda: w.agents.view is not None and w.agents.view.gates is not None
           and w.agents.promote_button.isEnabled())  # fmt: skip
    assert "ro-ui-b" in w.agents.cards[Slot.CANDIDATE].toPlainText()
    assert "PPO" in w.agents.cards[Slot.ACTIVE].toPlainText()  # the model card from the manifest
    w.agents.promote_button.click()
    box = w.confirm_box
    assert isinstance(box, QMessageBox)
    yes = box.button(QMessageBox.StandardButton.Yes)
    assert yes is not None
    yes.click()
    c.wait(lambda: c.core.host is not None and c.core.host.versions.active is not None
           and c.core.host.versions.active.version == "ro-ui-b")  # fmt: skip
    c.wait(lambda: w.agents.rollback_button.isEnabled())
    # An engineer may not roll back: the console asks for another login.
    w.agents.rollback_button.click()
    dialog = w.agents.rollback_dialog
    assert isinstance(dialog, RollbackDialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert ok is not None and not ok.isEnabled()  # a reason is required
    dialog.reason.setPlainText("rejections doubled since the promotion")
    _ok(dialog.buttons)
    c.wait(lambda: w.login_dialog is not None)
    w.login_dialog.reject()
    assert c.core.host.versions.active.version == "ro-ui-b"
    c.login("sara")
    w.agents.rollback_button.click()
    dialog = w.agents.rollback_dialog
    dialog.reason.setPlainText("rejections doubled since the promotion")
    _ok(dialog.buttons)
    c.wait(lambda: c.core.host.versions.active.version == "ro-ui-a")
    c.wait(lambda: "ro-ui-a" in w.banner.agent_label.text())
    rollback = _ledger(c, "rollback")[-1]
    assert rollback.origin.name == "sara" and "doubled" in rollback.summary + str(rollback.data)


def test_plc_disconnect_shows_on_screen_and_the_operator_acks_the_alarm(c: Console) -> None:
    w = c.window
    c.wait(lambda: not w.overview.schematic.displays["feed_pressure_bar"].bad)
    c.plant.faults.stop_servers()
    try:
        plc = w.banner.connection_labels["plc"]
        c.wait(lambda: plc.property("conn") in ("abnormal", "failed"))
        assert "PLC: " in plc.text() and plc.text() != "PLC: connected"
        c.wait(lambda: w.overview.schematic.displays["feed_pressure_bar"].bad)
        assert "STALE" in w.overview.schematic.displays["feed_pressure_bar"].detail or (
            "COMM" in w.overview.schematic.displays["feed_pressure_bar"].detail
        )
        c.wait(lambda: w.banner.mode is Mode.OFF)
        c.wait(lambda: any(a.alarm_id == "plc.connection" for a in w.alarms.view.alarms))
        assert w.banner.alarm_label.property("alarm") == "critical"
    finally:
        c.plant.faults.start_servers()
    c.wait(lambda: w.banner.connection_labels["plc"].text() == "PLC: connected")
    c.wait(lambda: not w.overview.schematic.displays["feed_pressure_bar"].bad)
    c.login("olga")
    w.tabs.setCurrentWidget(w.alarms)
    c.wait(lambda: w.alarms.select("plc.connection"))
    assert w.alarms.ack_button.isEnabled()
    w.alarms.ack_button.click()
    dialog = w.alarms.note_dialog
    assert isinstance(dialog, NoteDialog)
    dialog.note.setPlainText("switch in cabinet 3 replaced")
    _ok(dialog.buttons)
    c.wait(
        lambda: (
            not any(
                (a.alarm_id == "plc.connection" and a.state is AlarmState.RTN_UNACKED)
                or (a.alarm_id == "plc.connection" and a.state is AlarmState.UNACKED)
                for a in w.alarms.view.alarms
            )
        )
    )
    acks = [e for e in w.alarms.view.journal if e.alarm_id == "plc.connection" and e.user]
    assert acks and acks[-1].user == "olga" and "cabinet" in acks[-1].note


def test_every_panel_opens_and_shows_live_data(c: Console) -> None:
    w = c.window
    for index in range(w.tabs.count()):
        w.tabs.setCurrentIndex(index)
        c.qtbot.wait(50)
        assert w.tabs.currentWidget().isVisible()
    c.wait(lambda: not w.overview.schematic.displays["permeate_flow_m3h"].bad)
    assert "m3/h" in w.overview.schematic.displays["permeate_flow_m3h"].text
    w.tabs.setCurrentWidget(w.trends)
    c.wait(lambda: w.trends.frames > 0 and len(c.core.trends) > 2)
    w.trends.redraw()
    xs, ys = w.trends.curves[(0, P)].getData()
    assert xs is not None and len(xs) >= 2 and not math.isnan(float(ys[-1]))
    w.tabs.setCurrentWidget(w.audit)
    c.wait(lambda: w.audit.page is not None and w.audit.page.total > 0)
    w.audit.kind.setCurrentIndex(w.audit.kind.findText("Mode changes"))
    c.wait(lambda: w.audit.page is not None
           and all(r.event.kind == "mode_change" for r in w.audit.page.records))  # fmt: skip
    assert w.audit.page.total >= 1
    assert w.banner.connection_labels["cloud"].text() == "Cloud: off"
    assert "ro-ui-a" in w.banner.agent_label.text()


def test_window_state_is_kept_in_qsettings(c: Console) -> None:
    w = c.window
    w.tabs.setCurrentIndex(3)
    w.trends.set_span(8 * 3600.0)
    w.save_settings()
    s = w._settings
    assert int(s.value("window/tab")) == 3
    assert float(s.value("trends/span_s")) == 8 * 3600.0
    assert not s.value("window/geometry").isEmpty()
    assert ConnectionState.CONNECTED.value in w.banner.connection_labels["plc"].text()
    assert Qt.WidgetAttribute.WA_DeleteOnClose  # dialogs clean up after themselves


def test_window_fits_a_1366_by_768_screen(c: Console) -> None:
    c.window.resize(1366, 768)
    c.qtbot.wait(50)
    assert (c.window.width(), c.window.height()) == (1366, 768)
    hint = c.window.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 768, (hint.width(), hint.height())
    for index in range(c.window.tabs.count()):
        c.window.tabs.setCurrentIndex(index)
        hint = c.window.minimumSizeHint()
        assert hint.width() <= 1366 and hint.height() <= 768, (index, hint.width(), hint.height())


def test_live_shadow_duel_overlays_both_agents_with_divergence_and_gates(
    c: Console, packages: Packages, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    w = c.window
    # A candidate proposing a pressure halfway between the PLC's and the active agent's.
    halfway = round((c.plc(P) + packages.proposal[0]) / 2, 2)
    out = tmp_path / "ro-ui-c"
    write_package(
        out,
        manifest_fields(version="ro-ui-c", parent_version=None),
        constant_onnx([halfway, packages.proposal[1]]),
        signing_key,
    )
    c.login("emil")
    assert c.core.agent is not None
    verdict = c.result(c.core.agent.load_candidate(out, w.session))
    assert verdict.accepted, verdict.reason
    w.tabs.setCurrentWidget(w.agents)
    duel = w.agents.duel
    for _ in range(10):
        c.step()
        try:
            c.wait(lambda: len(duel.history) > 0, 3000)
            break
        except c.qtbot.TimeoutError:
            continue  # a step is skipped while inputs settle
    step = duel.history[-1]
    assert (step.active.version, step.candidate.version) == ("ro-ui-a", "ro-ui-c")
    assert step.active_action[P] == pytest.approx(packages.proposal[0], abs=1e-4)
    assert step.candidate_action is not None
    assert step.candidate_action[P] == pytest.approx(halfway, abs=1e-4)
    span = next(t.high - t.low for t in c.core.catalog.setpoints if t.name == P)
    assert step.divergence[P] == pytest.approx(abs(halfway - packages.proposal[0]) / span, abs=1e-5)
    assert step.divergence[F] == pytest.approx(0.0, abs=1e-6)
    # Both agents are drawn for every setpoint, on the GUI thread, from the bus event.
    _, active_y = duel.curves[(P, "active")].getData()
    _, candidate_y = duel.curves[(P, "candidate")].getData()
    assert active_y[-1] == pytest.approx(packages.proposal[0], abs=1e-4)
    assert candidate_y[-1] == pytest.approx(halfway, abs=1e-4)
    _, div_y = duel.divergence_curve.getData()
    assert div_y[-1] == pytest.approx(step.divergence_max)
    # min_shadow_steps is 1 on this site: one step passes the gates and enables promotion.
    assert step.gates_passed is True, [g.detail for g in step.gates if not g.passed]
    assert "gates PASSED" in duel.status.text()
    assert w.agents.promote_button.isEnabled()
    statuses = {w.agents.gates.item(r, 0).text(): w.agents.gates.item(r, 1).text()
                for r in range(w.agents.gates.rowCount())}  # fmt: skip
    assert statuses.get("shadow_steps") == "passed"


def test_cloud_and_endpoint_status_and_candidate_progress_show_on_screen(c: Console) -> None:
    w = c.window
    bus = c.core.bus
    bus.publish(ConnectionChanged("cloud", ConnectionState.CONNECTED, "registry reachable"))
    bus.publish(ConnectionChanged("endpoint", ConnectionState.RECONNECTING, "HTTP 503"))
    cloud, endpoint = w.banner.connection_labels["cloud"], w.banner.connection_labels["endpoint"]
    c.wait(lambda: cloud.text() == "Cloud: connected")
    c.wait(lambda: endpoint.text() == "Endpoint: RECONNECTING")
    assert endpoint.property("conn") == "abnormal" and endpoint.toolTip() == "HTTP 503"
    assert cloud.property("conn") == "connected"
    bar, label = w.agents.work_bars["candidate"], w.agents.work_labels["candidate"]
    bus.publish(CandidateDownloadProgressed("ro-7", 250_000, 1_000_000))
    c.wait(lambda: bar.isVisibleTo(w.agents) and bar.value() == 250)
    assert "ro-7" in label.text() and "0.2 of 1.0 MB" in label.text()
    bus.publish(CandidateDownloadProgressed("ro-7", 1_000_000, 1_000_000))
    c.wait(lambda: "verifying" in label.text())
    assert bar.maximum() == 0  # busy: verification has no fraction
    bus.publish(CandidateRefused("ro-7", "signature", "manifest.sig", "untrusted key"))
    c.wait(lambda: "REFUSED" in label.text())
    assert "untrusted key" in label.text()
    bus.publish(CandidateDownloadFailed(None, "connection reset"))
    c.wait(lambda: "registry unreachable" in label.text())


def test_training_status_shows_as_a_progress_bar(c: Console) -> None:
    w = c.window
    bar, label = w.agents.work_bars["training"], w.agents.work_labels["training"]
    bus = c.core.bus
    bus.publish(RetrainRequested("job-1", 2_880, 20_000))
    c.wait(lambda: "job-1 requested: 20,000 logged records" in label.text())
    assert bar.maximum() == 0  # busy until the first progress report
    bus.publish(RetrainProgressed("job-1", "finetune", 0.25, "5,000 of 20,000 steps"))
    c.wait(lambda: bar.maximum() == 1000 and bar.value() == 250)
    assert "finetune, 25 %" in label.text()
    report = Path("/data/retrain/job-1/report.json")
    bus.publish(RetrainFinished("job-1", "candidate", "ro-8", report, "gates passed"))
    c.wait(lambda: "job-1 candidate" in label.text())
    assert "ro-8" in label.text() and str(report) in label.text()
    assert not bar.isVisibleTo(w.agents)


def test_the_rollback_watch_of_a_promoted_agent_shows_on_the_agents_tab(
    c: Console, packages: Packages, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    w = c.window
    out = tmp_path / "ro-ui-w"
    write_package(
        out,
        manifest_fields(version="ro-ui-w", parent_version=None),
        constant_onnx(list(packages.proposal)),
        signing_key,
    )
    c.login("emil")
    assert c.core.agent is not None
    assert c.result(c.core.agent.load_candidate(out, w.session)).accepted
    for _ in range(10):  # min_shadow_steps is 1 on this site
        c.step()
        if w.agents.last_step is not None and w.agents.last_step.gates_passed:
            break
    verdict = c.result(c.core.agent.promote(w.session, "ui test"))
    assert verdict.accepted, verdict.reason
    assert "no agent promoted" in w.agents.watch_label.text()
    for _ in range(10):
        c.step()
        try:
            c.wait(lambda: "Rollback watch on ro-ui-w: step" in w.agents.watch_label.text(), 3000)
            break
        except c.qtbot.TimeoutError:
            continue  # a step is skipped while inputs settle
    text = w.agents.watch_label.text()
    assert "of 96" in text and "refused" in text and "abstained" in text, text
