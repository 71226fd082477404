"""The console's main window: banner on top, process views in tabs, the recommendation card and
the mode panel on the right, a status bar below.

Every command follows "submit, then react": the window calls the core through ``CoreLink`` (which
answers with futures at once) and handles the verdict in a done-callback posted back through the
``UiBridge``. Controller events arrive through the same bridge. Window geometry, splitter and tab
state, and the trend span live in ``QSettings`` (never in the site file).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import __version__
from app.agent_runtime.fallback import FallbackState
from app.controllers import alarm_points as ap
from app.controllers.alarm_commands import AlarmVerdict
from app.controllers.auth import Action, Session, permitted
from app.controllers.core import CoreStatus
from app.controllers.messages import (
    AgentAbstained,
    AgentSwapped,
    AlarmChanged,
    DecisionRecorded,
    DecisionVerdict,
    FallbackChanged,
    HealthChanged,
    InputsChanged,
    ModeVerdict,
    ProposalRejected,
    RecommendationReady,
    RecommendationUpdated,
    RollbackTriggered,
    RollbackWatchStepped,
    ShadowStepped,
    SupervisionChanged,
    SwapVerdict,
    WriteCompleted,
    WriteRejected,
)
from app.controllers.retrain import RetrainFinished, RetrainProgressed, RetrainRequested
from app.controllers.sync import (
    CandidateDownloadFailed,
    CandidateDownloadProgressed,
    CandidateRefused,
    CandidateStaged,
)
from app.domain import (
    AlarmPriority,
    AlarmState,
    ConnectionChanged,
    ConnectionState,
    Mode,
    ModeChanged,
    Recommendation,
    RecommendationState,
    RejectReason,
    Role,
    Setpoint,
)
from app.ui import style
from app.ui.agents_panel import AgentsPanel
from app.ui.alarms_panel import AlarmsPanel
from app.ui.audit_panel import AuditPanel
from app.ui.bridge import UiBridge
from app.ui.core_link import CoreLink
from app.ui.login_dialog import LoginDialog
from app.ui.mode_banner import ModeBanner
from app.ui.mode_panel import ModePanel
from app.ui.overview_panel import OverviewPanel
from app.ui.recommendation_card import RecommendationCard, short_name
from app.ui.trends_panel import TrendsPanel

log = logging.getLogger(__name__)

STATUS_POLL_MS = 2000
AGENTS_POLL_MS = 5000
"""The shadow duel and the gates change with every agent step; refreshed while the tab shows."""
SESSION_POLL_MS = 5000
ALARM_PRIORITY = {d.alarm_id: d.priority for d in ap.CORE_ALARMS}
TABS = ("overview", "trends", "agents", "alarms", "audit")
TRENDS_TITLE = "&2 Trends"
TRENDS_BUILD_DELAY_MS = 3000
"""The trends panel is built this long after the core started (or when first shown)."""
MAX_EARLY_MARKERS = 1000
_OPEN_STATES = (RecommendationState.PROPOSED,)


class MainWindow(QMainWindow):
    """The operator console.

    Args:
        link: Non-blocking access to a started control core.
        settings: Where the window state is kept (default: the user's QSettings).
        demo_hint: Text for the login dialog in demo mode (accounts and passwords); empty otherwise.
    """

    sig_session_changed = Signal(object)

    def __init__(
        self,
        link: CoreLink,
        *,
        settings: QSettings | None = None,
        demo_hint: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.link = link
        self.site = link.site
        self.demo_hint = demo_hint
        self._settings = settings or QSettings("intelwatt", "console")
        self.session: Session | None = None
        self.status_snapshot: CoreStatus | None = None
        self.last_verdict: object | None = None
        self.login_dialog: LoginDialog | None = None
        self._closed = False
        self.setObjectName("main_window")
        self.setWindowTitle(f"intelwatt console {__version__} · {self.site.site.name}")
        self.bridge = UiBridge(link.bus)
        self.bridge.setParent(self)

        self.banner = ModeBanner()
        self.overview = OverviewPanel(link.catalog, lambda tag: link.snapshot.get(tag))
        # The trends panel (six pyqtgraph plots) is built when first shown or shortly after the
        # core starts, not before the first live value; what it must show meanwhile is replayed.
        self._trends: TrendsPanel | None = None
        self._trends_slot = QWidget()
        self._trend_calls: deque[Callable[[TrendsPanel], None]] = deque(maxlen=MAX_EARLY_MARKERS)
        self._trend_span: float | None = None
        self.agents = AgentsPanel(
            link.agents_view,
            self.bridge,
            setpoint_names={
                t.name: short_name(t.description) + (f" ({t.unit})" if t.unit else "")
                for t in link.catalog.tags
            },
        )
        self.alarms = AlarmsPanel(link.alarm_view, self.bridge)
        self.audit = AuditPanel(link.ledger_path, self.bridge)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("main_tabs")
        for widget, title in (
            (self.overview, "&1 Overview"),
            (self._trends_slot, TRENDS_TITLE),
            (self.agents, "&3 Agents"),
            (self.alarms, "&4 Alarms"),
            (self.audit, "&5 Event log"),
        ):
            self.tabs.addTab(widget, title)
        self.tabs.currentChanged.connect(self._on_tab_changed)

        self.card = RecommendationCard(
            link.catalog,
            self.bridge,
            limits=dict(self.site.limits),
            max_uncertainty=self.site.modes.max_uncertainty,
            max_ood_score=self.site.modes.max_ood_score,
            envelope_check=lambda sps: link.check_setpoints(sps, self.session),
            preview_request=link.preview,
        )
        self.mode_panel = ModePanel(self.site.modes)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.card, 1)
        side_layout.addWidget(self.mode_panel)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(side)
        scroll.setMinimumWidth(style.em(self, 24))

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("main_splitter")
        self.splitter.addWidget(self.tabs)
        self.splitter.addWidget(scroll)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(body)

        self.health_label = QLabel("")
        self.health_label.setObjectName("health_label")
        self.supervision_label = QLabel("")
        self.statusBar().addPermanentWidget(self.supervision_label)
        self.statusBar().addPermanentWidget(self.health_label)

        self._connect_signals()
        self._subscribe()
        self._restore_settings()
        self.banner.set_connection("plc", None)
        self.banner.set_connection("cloud", None)
        self.banner.set_connection(
            "endpoint", None if self.site.cloud.scoring_url is None else ConnectionState.CONNECTING
        )
        if self.site.cloud.enabled:
            self.banner.set_connection("cloud", ConnectionState.CONNECTING)

        self._status_timer = QTimer(self)
        self._status_timer.setInterval(STATUS_POLL_MS)
        self._status_timer.timeout.connect(self.refresh_status)
        self._status_timer.start()
        self._agents_timer = QTimer(self)
        self._agents_timer.setInterval(AGENTS_POLL_MS)
        self._agents_timer.timeout.connect(self._refresh_agents_if_shown)
        self._agents_timer.start()
        self._session_timer = QTimer(self)
        self._session_timer.setInterval(SESSION_POLL_MS)
        self._session_timer.timeout.connect(self._check_session)
        self._session_timer.start()
        self.refresh_status()

    @property
    def trends(self) -> TrendsPanel:
        """The trends panel (built on first use)."""
        if self._trends is None:
            panel = TrendsPanel(self.link.trends, self.link.catalog)
            if self._trend_span is not None:
                panel.set_span(self._trend_span)
            for call in self._trend_calls:
                call(panel)
            self._trend_calls.clear()
            self._trends = panel
            index, current = self.tabs.indexOf(self._trends_slot), self.tabs.currentIndex()
            self.tabs.blockSignals(True)
            self.tabs.removeTab(index)
            self.tabs.insertTab(index, panel, TRENDS_TITLE)
            self.tabs.setCurrentIndex(current)
            self.tabs.blockSignals(False)
            self._trends_slot.deleteLater()
        return self._trends

    def _on_trends(self, call: Callable[[TrendsPanel], None]) -> None:
        """Apply ``call`` to the trends panel now, or when it is built."""
        if self._trends is None:
            self._trend_calls.append(call)
        else:
            call(self._trends)

    def core_started(self) -> None:
        """Fetch everything once the core runs (the window may be built before it starts)."""
        QTimer.singleShot(
            TRENDS_BUILD_DELAY_MS, self, lambda: None if self._closed else self.trends
        )
        self.refresh_status()
        self.alarms.refresh()
        self.agents.refresh()
        self.audit.reload()
        self.bridge.when_done(self.link.pending(), self._on_pending_fetched)

    def core_failed(self, message: str) -> None:
        """Say that the core could not start (the window stays open to show why)."""
        self.health_label.setText(f"CONTROL CORE NOT STARTED: {message}")
        box = QMessageBox(
            QMessageBox.Icon.Critical,
            "intelwatt console",
            f"The control core could not start:\n{message}",
            QMessageBox.StandardButton.Close,
            self,
        )
        box.setObjectName("core_failed")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.failure_box = box
        box.open()

    # --- wiring ------------------------------------------------------------------------------------

    def _connect_signals(self) -> None:
        self.banner.sig_return_to_base_requested.connect(self.return_to_base_control)
        self.banner.sig_login_requested.connect(self.open_login)
        self.banner.sig_logout_requested.connect(self.logout)
        self.card.sig_approve_requested.connect(self.approve)
        self.card.sig_modify_requested.connect(self.modify)
        self.card.sig_reject_requested.connect(self.reject)
        self.mode_panel.sig_mode_requested.connect(self.request_mode)
        self.agents.sig_promote_requested.connect(self.promote)
        self.agents.sig_rollback_requested.connect(self.rollback)
        self.alarms.sig_ack_requested.connect(self.ack_alarm)
        self.alarms.sig_shelve_requested.connect(self.shelve_alarm)
        self.alarms.sig_unshelve_requested.connect(self.unshelve_alarm)
        for index, _ in enumerate(TABS):
            shortcut = QShortcut(QKeySequence(f"Ctrl+{index + 1}"), self)
            shortcut.activated.connect(partial(self.tabs.setCurrentIndex, index))

    def _subscribe(self) -> None:
        on = self.bridge.on
        on(ModeChanged, self._on_mode_changed)
        on(FallbackChanged, self._on_fallback_changed)
        on(ConnectionChanged, self._on_connection_changed)
        on(RecommendationReady, self._on_recommendation_ready)
        on(RecommendationUpdated, self._on_recommendation_updated)
        on(DecisionRecorded, self._on_decision_recorded)
        on(WriteCompleted, self._on_write_completed)
        on(WriteRejected, self._on_write_rejected)
        on(AlarmChanged, self._on_alarm_changed)
        on(AgentSwapped, self._on_agent_swapped)
        on(RollbackTriggered, self._on_rollback_triggered)
        on(AgentAbstained, self._on_agent_abstained)
        on(ProposalRejected, self._on_proposal_rejected)
        on(HealthChanged, self._on_health_changed)
        on(SupervisionChanged, self._on_supervision_changed)
        on(InputsChanged, self._on_inputs_changed)
        on(CandidateDownloadProgressed, self._on_download_progress)
        on(CandidateStaged, self._on_candidate_staged)
        on(CandidateRefused, self._on_candidate_refused)
        on(CandidateDownloadFailed, self._on_download_failed)
        on(ShadowStepped, self.agents.on_shadow_step)
        on(RollbackWatchStepped, self.agents.on_watch)
        on(RetrainRequested, self._on_retrain_requested)
        on(RetrainProgressed, self._on_retrain_progressed)
        on(RetrainFinished, self._on_retrain_finished)

    def message(self, text: str, timeout_ms: int = 15000) -> None:
        """Show ``text`` in the status bar (and the log)."""
        log.info("console: %s", text)
        self.statusBar().showMessage(text, timeout_ms)

    # --- status ------------------------------------------------------------------------------------

    def refresh_status(self) -> None:
        """Ask the core for its status (answers arrive later)."""
        self.bridge.when_done(self.link.status(), self._on_status)

    def _on_status(self, future: Future[CoreStatus]) -> None:
        try:
            status = future.result()
        except Exception as exc:  # noqa: BLE001 - shown; the next poll tries again
            self.health_label.setText(f"core status unavailable: {exc}")
            return
        self.status_snapshot = status
        self.banner.set_mode(status.mode, status.mode_reason)
        self.mode_panel.set_mode(status.mode)
        self.banner.set_fallback(status.fallback)
        self.banner.set_connection("plc", status.plc)
        self.banner.set_agent(status.active, status.candidate)
        self.banner.set_alarms(status.alarms.unacked, status.alarms.highest)
        self.health_label.setText(
            "core healthy" if status.healthy else "NOT HEALTHY: " + "; ".join(status.health_reasons)
        )

    def _on_pending_fetched(self, future: Future[tuple[Recommendation, ...]]) -> None:
        try:
            pending = future.result()
        except Exception:  # noqa: BLE001 - the next recommendation event fills the card
            return
        if pending and self.card.recommendation is None:
            self.card.show_recommendation(pending[-1])

    # --- sessions ----------------------------------------------------------------------------------

    @property
    def role(self) -> Role | None:
        """Role of the logged-in user."""
        return self.session.role if self.session is not None else None

    def open_login(self) -> None:
        """Show the login dialog (also used to switch users)."""
        if self.login_dialog is not None:
            self.login_dialog.raise_()
            return
        dialog = LoginDialog(self.link.login, self.bridge, demo_hint=self.demo_hint, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.sig_logged_in.connect(self.set_session)
        dialog.finished.connect(self._on_login_closed)
        self.login_dialog = dialog
        dialog.open()

    def _on_login_closed(self, _: int) -> None:
        self.login_dialog = None

    def set_session(self, session: Session | None) -> None:
        """Make ``session`` the console's user (``None``: nobody logged in)."""
        old = self.session
        if old is not None and session is not None and old.token != session.token:
            self.link.logout(old)
        self.session = session
        role = session.role.name.lower() if session is not None else None
        self.banner.set_user(session.user if session else None, role)
        self.mode_panel.set_role(session.role if session else None)
        self.sig_session_changed.emit(session)
        if session is not None:
            self.message(f"{session.user} logged in as {role}")

    def logout(self) -> None:
        """End the current session."""
        if self.session is not None:
            self.link.logout(self.session)
            self.message(f"{self.session.user} logged out")
        self.set_session(None)

    def _check_session(self) -> None:
        session = self.session
        if session is None:
            return
        self.bridge.when_done(
            self.link.session_alive(session), partial(self._on_session_checked, session)
        )

    def _on_session_checked(self, session: Session, future: Future[bool]) -> None:
        try:
            alive = future.result()
        except Exception:  # noqa: BLE001 - keep the session; the next check decides
            return
        if not alive and self.session is not None and self.session.token == session.token:
            self.set_session(None)
            self.message(f"the session of {session.user} locked after inactivity: log in again")

    def _require(self, action: Action, what: str) -> bool:
        """True if the logged-in role may ``action``; otherwise say so and offer the login."""
        if permitted(self.role, action):
            return True
        who = "nobody is logged in" if self.session is None else f"{self.session.user} may not"
        self.message(f"{what}: {who}; log in with a suitable role")
        self.open_login()
        return False

    # --- commands ------------------------------------------------------------------------------------

    def _submit(self, future: Future[Any], handler: Callable[[Any], None], what: str) -> None:
        def done(f: Future[Any]) -> None:
            try:
                result = f.result()
            except Exception as exc:  # noqa: BLE001 - every refusal is shown to the operator
                self.message(f"{what} refused: {exc}")
                handler(None)
                return
            self.last_verdict = result
            handler(result)

        self.bridge.when_done(future, done)

    def return_to_base_control(self) -> None:
        """Hand the plant back to the PLC (no login, no confirmation: the safe direction)."""
        self.message("returning to base control…")
        self._submit(
            self.link.return_to_base_control(self.session), self._on_mode_verdict, "return"
        )

    def request_mode(self, mode: Mode, confirmed: bool, reason: str) -> None:
        """Ask the core for ``mode`` (the panel has confirmed it with the user)."""
        if mode is Mode.OFF:
            self.return_to_base_control()
            return
        action = Action.MODE_AUTOMATIC if mode is Mode.AUTOMATIC else Action.MODE_ADVISORY
        if not self._require(action, f"switching to {mode.value.upper()}"):
            return
        future = self.link.request_mode(mode, self.session, confirm=confirmed, reason=reason)
        self._submit(future, self._on_mode_verdict, f"mode {mode.value}")

    def _on_mode_verdict(self, verdict: ModeVerdict | None) -> None:
        if verdict is None:
            return
        if verdict.accepted:
            self.message(f"mode is now {verdict.mode.value.upper()}")
        else:
            self.message(f"mode change refused: {verdict.reason}")
        self.mode_panel.result.setText("" if verdict.accepted else f"Refused: {verdict.reason}")
        self.refresh_status()

    def approve(self, rec_id: str) -> None:
        """Approve the recommendation as proposed."""
        if not self._require(Action.APPROVE, "approving"):
            return
        self.card.set_busy(True, "approved: writing to the PLC…")
        self._submit(self.link.approve(rec_id, self.session), self._on_decision_verdict, "approve")

    def modify(self, rec_id: str, setpoints: tuple[Setpoint, ...]) -> None:
        """Apply the operator's values instead of the proposal."""
        if not self._require(Action.MODIFY, "modifying"):
            return
        self.card.set_busy(True, "modified: writing to the PLC…")
        future = self.link.modify(rec_id, setpoints, self.session)
        self._submit(future, self._on_decision_verdict, "modify")

    def reject(self, rec_id: str, reason: RejectReason, note: str) -> None:
        """Reject the recommendation with a reason code and a note."""
        if not self._require(Action.REJECT, "rejecting"):
            return
        self.card.set_busy(True, "rejecting…")
        future = self.link.reject(rec_id, reason, note, self.session)
        self._submit(future, self._on_decision_verdict, "reject")

    def _on_decision_verdict(self, verdict: DecisionVerdict | None) -> None:
        if verdict is None:
            self.card.set_busy(False)
            return
        state = verdict.state.value if verdict.state is not None else "unchanged"
        if verdict.accepted:
            detail = f": {verdict.reason}" if verdict.reason else ""
            self.message(f"decision recorded, recommendation {state}{detail}")
        else:
            self.message(f"decision refused: {verdict.reason}")
            self.card.set_busy(False, f"Refused: {verdict.reason}")

    def promote(self) -> None:
        """Promote the candidate after a confirmation (engineer)."""
        if not self._require(Action.PROMOTE, "promoting"):
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Promote candidate",
            "Make the candidate the active agent? The current one stays loaded as 'previous' "
            "for an instant rollback.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setObjectName("promote_confirm")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.accepted.connect(self._promote_confirmed)
        self.confirm_box = box
        box.open()

    def _promote_confirmed(self) -> None:
        self._submit(self.link.promote(self.session), self._on_swap_verdict, "promote")

    def rollback(self, reason: str) -> None:
        """Roll back to the previous agent (supervisor; the dialog asked for the reason)."""
        if not self._require(Action.ROLLBACK, "rolling back"):
            return
        self._submit(self.link.rollback(self.session, reason), self._on_swap_verdict, "rollback")

    def _on_swap_verdict(self, verdict: SwapVerdict | None) -> None:
        if verdict is None:
            return
        if verdict.accepted:
            active = verdict.active.version if verdict.active else "none"
            self.message(f"{verdict.kind}: the active agent is now {active}")
        else:
            self.message(f"{verdict.kind} refused: {verdict.reason}")
        self.agents.refresh()
        self.refresh_status()

    def ack_alarm(self, alarm_id: str, note: str) -> None:
        """Acknowledge an alarm with a note."""
        if not self._require(Action.ACK_ALARM, "acknowledging"):
            return
        future = self.link.ack_alarm(alarm_id, note, self.session)
        self._submit(future, self._on_alarm_done, f"acknowledge {alarm_id}")

    def shelve_alarm(self, alarm_id: str, duration_s: float, reason: str) -> None:
        """Shelve an alarm for a time."""
        if not self._require(Action.SHELVE_ALARM, "shelving"):
            return
        future = self.link.shelve_alarm(alarm_id, duration_s, reason, self.session)
        self._submit(future, self._on_alarm_done, f"shelve {alarm_id}")

    def unshelve_alarm(self, alarm_id: str) -> None:
        """End a shelve early."""
        if not self._require(Action.SHELVE_ALARM, "unshelving"):
            return
        future = self.link.unshelve_alarm(alarm_id, self.session)
        self._submit(future, self._on_alarm_done, f"unshelve {alarm_id}")

    def _on_alarm_done(self, verdict: AlarmVerdict | None) -> None:
        if verdict is not None:
            self.message(f"alarm {verdict.alarm_id}: {verdict.reason}")
        self.alarms.refresh()

    # --- events --------------------------------------------------------------------------------------

    def _on_mode_changed(self, event: ModeChanged) -> None:
        self.banner.set_mode(event.new, event.reason)
        self.mode_panel.set_mode(event.new)
        self._on_trends(lambda t: t.add_marker(event.at, f"mode {event.new.value}"))

    def _on_fallback_changed(self, event: FallbackChanged) -> None:
        self.banner.set_fallback(event.new)
        if event.new is not FallbackState.ACTIVE_LOCAL:
            self.message(f"fallback: {event.old.value} → {event.new.value} ({event.reason})")

    def _on_connection_changed(self, event: ConnectionChanged) -> None:
        self.banner.set_connection(event.system, event.state, event.detail)
        if event.system == "plc" and event.state is not ConnectionState.CONNECTED:
            self.message(f"PLC connection {event.state.value}: {event.detail}")

    def _on_recommendation_ready(self, event: RecommendationReady) -> None:
        rec = event.recommendation
        self.card.show_recommendation(rec)
        values = {sp.tag: sp.value for sp in rec.setpoints}
        self._on_trends(lambda t: t.add_recommendation(rec.created_ts, values))
        self.message(f"new recommendation from agent {rec.agent.version}")

    def _on_recommendation_updated(self, event: RecommendationUpdated) -> None:
        rec = event.recommendation
        shown = self.card.recommendation
        if shown is not None and shown.rec_id != rec.rec_id:
            return
        detail = event.detail or rec.state.value
        self.card.show_recommendation(rec, status=f"{rec.state.value}: {detail}")

    def _on_decision_recorded(self, event: DecisionRecorded) -> None:
        d = event.decision
        self._on_trends(lambda t: t.add_marker(d.at, f"{d.kind.value} ({d.origin.name})"))

    def _on_write_completed(self, event: WriteCompleted) -> None:
        o = event.outcome
        values = ", ".join(f"{sp.tag} = {sp.value:.2f}" for sp in o.setpoints)
        if o.ok:
            self.message(f"written and confirmed by the PLC: {values}")
        else:
            self.message(f"write {o.kind.value}: {o.reason} ({values})")

    def _on_write_rejected(self, event: WriteRejected) -> None:
        o = event.outcome
        layer = o.rejected_layer.value if o.rejected_layer is not None else "envelope"
        self.message(f"write refused by the {layer} layer: {o.reason}")

    def _on_alarm_changed(self, event: AlarmChanged) -> None:
        self.alarms.refresh()
        if event.new_state == AlarmState.UNACKED.value and event.old_state != event.new_state:
            priority = ALARM_PRIORITY.get(event.alarm_id, AlarmPriority.MEDIUM)
            self._on_trends(lambda t: t.add_marker(event.at, event.alarm_id, priority))
        self.refresh_status()

    def _on_agent_swapped(self, event: AgentSwapped) -> None:
        self.banner.set_agent(event.active, event.candidate)
        self.agents.refresh()
        active = event.active.version if event.active else "none"
        self.message(f"agents {event.kind}: active {active} ({event.reason})")

    def _on_rollback_triggered(self, event: RollbackTriggered) -> None:
        self.message(f"rollback ({event.trigger}): {event.reason}")
        self.agents.refresh()

    def _on_agent_abstained(self, event: AgentAbstained) -> None:
        self.message(f"agent {event.agent.version} abstained: {event.reason}")

    def _on_proposal_rejected(self, event: ProposalRejected) -> None:
        self.message(f"agent proposal refused by the {event.layer.value} layer: {event.reason}")

    def _on_health_changed(self, event: HealthChanged) -> None:
        self.health_label.setText(
            "core healthy" if event.healthy else "NOT HEALTHY: " + "; ".join(event.reasons)
        )

    def _on_supervision_changed(self, event: SupervisionChanged) -> None:
        if event.watchdog_tripped:
            text = "PLC watchdog TRIPPED"
        elif event.active:
            text = "PLC follows the console"
        else:
            text = "PLC base control"
        self.supervision_label.setText(text)

    def _on_inputs_changed(self, event: InputsChanged) -> None:
        if event.unusable:
            tags = ", ".join(f"{t} ({why})" for t, why in event.unusable[:4])
            more = "" if len(event.unusable) <= 4 else f" and {len(event.unusable) - 4} more"
            self.message(f"unusable inputs: {tags}{more}")

    def _on_download_progress(self, event: CandidateDownloadProgressed) -> None:
        if event.total_bytes > 0 and event.done_bytes >= event.total_bytes:
            # Downloaded; CandidateStaged or CandidateRefused ends the verification.
            self.agents.set_work(
                f"candidate {event.version} downloaded ({event.total_bytes / 1e6:.1f} MB): "
                "verifying hashes and signature…",
                busy=True,
            )
            return
        self.agents.set_work(
            f"downloading candidate {event.version}: {event.done_bytes / 1e6:.1f} of "
            f"{event.total_bytes / 1e6:.1f} MB",
            event.done_bytes,
            event.total_bytes,
        )

    def _on_candidate_staged(self, event: CandidateStaged) -> None:
        self.link.add_package(event.path)
        self.agents.set_work(f"candidate {event.version.version} verified and staged", 1, 1)
        self.agents.refresh()

    def _on_candidate_refused(self, event: CandidateRefused) -> None:
        self.agents.set_work(f"candidate {event.version} REFUSED ({event.reason}): {event.message}")

    def _on_download_failed(self, event: CandidateDownloadFailed) -> None:
        self.agents.set_work(f"registry unreachable: {event.error}")

    def _on_retrain_requested(self, event: RetrainRequested) -> None:
        self.agents.set_work(
            f"training job {event.job_id} requested: {event.window:,} logged records, "
            f"{event.steps:,} agent steps since the last job",
            kind="training",
            busy=True,
        )

    def _on_retrain_progressed(self, event: RetrainProgressed) -> None:
        text = f"training job {event.job_id}: {event.stage}, {100 * event.fraction:.0f} %"
        text += f" ({event.message})" if event.message else ""
        self.agents.set_work(text, event.fraction, 1.0, kind="training")

    def _on_retrain_finished(self, event: RetrainFinished) -> None:
        text = f"training job {event.job_id} {event.outcome}"
        if event.candidate_version:
            text += f": candidate {event.candidate_version}"
        text += f" ({event.message})" if event.message else ""
        if event.report_path:
            text += f"; report {event.report_path}"
        self.agents.set_work(text, kind="training")
        self.message(text)

    def _refresh_agents_if_shown(self) -> None:
        if self.tabs.currentWidget() is self.agents:
            self.agents.refresh()

    def _on_tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self._trends_slot:
            self.trends  # noqa: B018 - builds the panel in place of the placeholder
        elif self.tabs.widget(index) is self.agents:
            self.agents.refresh()
        elif self.tabs.widget(index) is self.audit:
            self.audit.reload()

    # --- settings and shutdown -----------------------------------------------------------------------

    def _restore_settings(self) -> None:
        s = self._settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(style.em(self, 80), style.em(self, 45))
        state = s.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        split = s.value("window/splitter")
        if isinstance(split, QByteArray) and not split.isEmpty():
            self.splitter.restoreState(split)
        else:
            width = self.width()
            self.splitter.setSizes([width * 3 // 5, width * 2 // 5])
        tab = str(s.value("window/tab", 0))
        self.tabs.setCurrentIndex(int(tab) if tab.isdigit() else 0)
        span = s.value("trends/span_s")
        if span is not None:
            try:
                self._trend_span = float(str(span))
                if self._trends is not None:
                    self._trends.set_span(self._trend_span)
            except (TypeError, ValueError):
                log.warning("ignoring a bad trends/span_s setting: %r", span)

    def save_settings(self) -> None:
        """Store the window state in QSettings."""
        s = self._settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("window/tab", self.tabs.currentIndex())
        span = self._trends.span_s if self._trends is not None else self._trend_span
        if span is not None:
            s.setValue("trends/span_s", span)
        s.sync()

    def shutdown(self) -> None:
        """Stop timers and threads the window owns (the core is stopped by its owner)."""
        if self._closed:
            return
        self._closed = True
        self.save_settings()
        for timer in (self._status_timer, self._session_timer, self._agents_timer):
            timer.stop()
        self.overview.stop()
        if self._trends is not None:
            self._trends.stop()
        self.card.stop()
        self.audit.stop()
        self.bridge.close()
        if self.session is not None:
            self.link.logout(self.session)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)


__all__ = ["MainWindow"]
