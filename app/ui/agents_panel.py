"""Agents: active / previous / candidate with their model cards, the live shadow duel, promotion
and rollback, acceptance per version, and progress of long work (candidate download and
verification, training jobs).

The panel never reads the agent runtime directly: slot versions, model cards, shadow statistics,
gate reports and acceptance figures arrive as futures from the core and are drawn when they
complete. Promote (engineer) and Rollback (supervisor, reason required) are emitted as signals; the
main window checks roles, asks for confirmation and calls the core.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.agent_runtime.manifest import Manifest
from app.agent_runtime.shadow import GateCheck, GateReport, ShadowStats
from app.controllers.messages import RollbackWatchStepped, ShadowStepped
from app.domain import AgentVersion, Slot, utc_now
from app.ui import style
from app.ui.bridge import UiBridge
from app.ui.coalesce import CoalescedRefresh
from app.ui.shadow_duel import ShadowDuelView

WORK_KINDS = {"candidate": "No candidate download.", "training": "No training job."}
"""Rows of the work-in-progress box, with their idle text."""


@dataclass(frozen=True, slots=True)
class AcceptanceRow:
    """Operator decisions on one agent version (from the core's acceptance statistics)."""

    version: str
    proposed: int
    approved: int
    modified: int
    rejected: int
    expired: int
    auto_applied: int
    rate: float | None


@dataclass(frozen=True, slots=True)
class AgentsView:
    """Everything the agents panel shows, fetched in one go.

    Attributes:
        slots: Version per slot (``None``: empty).
        cards: Manifest per slot when known.
        stats: Shadow-duel statistics (``None`` without a candidate).
        gates: The promotion gate report (``None`` without a candidate).
        acceptance: Decisions per version.
        note: Why part of the view is missing, if it is.
        at: When the gathering began (older than a live shadow step: that step is newer).
    """

    slots: dict[Slot, AgentVersion | None]
    cards: dict[Slot, Manifest | None]
    stats: ShadowStats | None
    gates: GateReport | None
    acceptance: tuple[AcceptanceRow, ...]
    note: str = ""
    at: datetime = field(default_factory=utc_now)


WATCH_IDLE = "Rollback watch: no agent promoted in this session."


def watch_text(event: RollbackWatchStepped) -> str:
    """One paragraph on the rollback watch for the operator (plain text)."""
    who = event.agent.version
    if event.state == "rolled_back":
        head = f"Rollback watch: {who} was rolled back after {event.steps} steps."
    elif event.state == "passed":
        head = f"Rollback watch: {who} passed its {event.watch_steps}-step watch."
    else:
        head = f"Rollback watch on {who}: step {event.steps} of {event.watch_steps}."
    parts = []
    if event.paired_cusum is not None and event.paired_mean_loss_eur_h is not None:
        gain = -event.paired_mean_loss_eur_h
        parts.append(
            f"vs previous agent {gain:+.2f} €/h per step (CUSUM {event.paired_cusum:.1f} of "
            f"{event.threshold:g})"
        )
    if event.sec_cusum is not None:
        parts.append(f"SEC CUSUM {event.sec_cusum:.1f} of {event.threshold:g}")
    parts.append(f"refused {event.constraint_hit_rate:.0%}, abstained {event.abstention_rate:.0%}")
    return head + " " + "; ".join(parts) + "."


def model_card_html(slot: Slot, version: AgentVersion | None, manifest: Manifest | None) -> str:
    """The model card of one slot as simple HTML."""
    if version is None:
        return f"<b>{slot.value.title()}</b><br><i>empty</i>"
    lines = [f"<b>{slot.value.title()}: {version.version}</b>"]
    lines.append(f"package sha256 {version.sha256[:12]}…")
    lines.append(f"signed by {version.signer or 'unknown key'}")
    if version.parent:
        lines.append(f"retrained from {version.parent}")
    if manifest is not None:
        t = manifest.training
        lines.append(f"created {manifest.created.astimezone():%Y-%m-%d %H:%M}")
        lines.append(f"training: {t.algorithm}, {t.env_steps:,} steps, seed {t.seed}")
        lines.append(f"data: {t.source}")
        window = {k: v for k, v in t.details.items() if "window" in k or "from" in k or "to" in k}
        for key, value in window.items():
            lines.append(f"{key}: {value}")
        for key, value in list(manifest.metrics.items())[:8]:
            text = json.dumps(value) if not isinstance(value, float) else f"{value:.4g}"
            lines.append(f"{key}: {text[:80]}")
        actions = ", ".join(a.tag for a in manifest.actions)
        lines.append(f"acts on: {actions}")
    return "<br>".join(lines)


class RollbackDialog(QDialog):
    """Ask a supervisor for the reason of a rollback (required)."""

    def __init__(self, active: str, previous: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("rollback_dialog")
        self.setWindowTitle("Roll back the agent")
        self.reason = QPlainTextEdit()
        self.reason.setObjectName("rollback_reason")
        self.reason.setPlaceholderText("Why? (required; recorded in the ledger)")
        self.reason.setMaximumHeight(style.em(self, 5))
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(QLabel(f"Replace the active agent <b>{active}</b> by <b>{previous}</b>?"))
        form.addRow("Reason", self.reason)
        form.addRow(self.buttons)
        self.reason.textChanged.connect(self._validate)
        self._validate()

    def text(self) -> str:
        """The reason entered."""
        return self.reason.toPlainText().strip()

    def _validate(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok is not None:
            ok.setEnabled(bool(self.text()))


class AgentsPanel(QWidget):
    """Slots, model cards, shadow duel, gates, acceptance and work in progress.

    Signals:
        sig_promote_requested()
        sig_rollback_requested(reason)
    """

    sig_promote_requested = Signal()
    sig_rollback_requested = Signal(str)

    def __init__(
        self,
        fetch: Callable[[], Future[AgentsView]],
        bridge: UiBridge,
        parent: QWidget | None = None,
        *,
        setpoint_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("agents_panel")
        self.view: AgentsView | None = None
        self._refresher = CoalescedRefresh(bridge, fetch, self._on_fetched)
        self.last_step: ShadowStepped | None = None

        cards_box = QGroupBox("Agents")
        cards = QGridLayout(cards_box)
        self.cards: dict[Slot, QTextBrowser] = {}
        for col, slot in enumerate((Slot.ACTIVE, Slot.PREVIOUS, Slot.CANDIDATE)):
            browser = QTextBrowser()
            browser.setObjectName(f"card_{slot.value}")
            browser.setMinimumHeight(style.em(self, 7))
            browser.setOpenLinks(False)
            cards.addWidget(browser, 0, col)
            self.cards[slot] = browser
        self.promote_button = QPushButton("&Promote candidate…")
        self.promote_button.setObjectName("promote")
        self.promote_button.setToolTip("Engineer: make the candidate active (gates must pass)")
        self.rollback_button = QPushButton("Roll &back to previous…")
        self.rollback_button.setObjectName("rollback")
        self.rollback_button.setToolTip("Supervisor: swap the active and previous agent at once")
        self.promote_button.clicked.connect(self.sig_promote_requested.emit)
        self.rollback_button.clicked.connect(self._on_rollback_clicked)
        self.watch_label = QLabel(WATCH_IDLE)
        self.watch_label.setObjectName("rollback_watch")
        self.watch_label.setWordWrap(True)
        self.watch_label.setToolTip(
            "After a promotion the console watches the new agent and rolls back on its own when "
            "a trigger crosses its threshold (site file [agents.rollback])"
        )
        cards.addWidget(self.watch_label, 1, 0)
        cards.addWidget(self.rollback_button, 1, 1)
        cards.addWidget(self.promote_button, 1, 2)

        duel_box = QGroupBox("Shadow duel: active vs candidate")
        duel = QVBoxLayout(duel_box)
        self.duel_summary = QLabel("No candidate in shadow.")
        self.duel_summary.setWordWrap(True)
        self.duel = ShadowDuelView(setpoint_names)
        self.gates = QTableWidget(0, 4)
        self.gates.setObjectName("gate_table")
        self.gates.setHorizontalHeaderLabels(("Gate", "Status", "Value / limit", "Detail"))
        self._setup_table(self.gates)
        duel.addWidget(self.duel_summary)
        duel_row = QHBoxLayout()
        duel_row.addWidget(self.duel, 3)
        duel_row.addWidget(self.gates, 2)
        duel.addLayout(duel_row, 1)

        accept_box = QGroupBox("Operator acceptance per version")
        accept = QVBoxLayout(accept_box)
        self.acceptance = QTableWidget(0, 7)
        self.acceptance.setObjectName("acceptance_table")
        self.acceptance.setHorizontalHeaderLabels(
            ("Version", "Proposed", "Approved", "Modified", "Rejected", "Expired", "Acceptance")
        )
        self._setup_table(self.acceptance)
        self.acceptance.setMaximumHeight(style.em(self, 7))
        accept.addWidget(self.acceptance)

        work_box = QGroupBox("Work in progress")
        work = QVBoxLayout(work_box)
        self.work_labels: dict[str, QLabel] = {}
        self.work_bars: dict[str, QProgressBar] = {}
        for kind, idle in WORK_KINDS.items():
            label = QLabel(idle)
            label.setObjectName(f"work_{kind}_label")
            label.setWordWrap(True)
            bar = QProgressBar()
            bar.setObjectName(f"work_{kind}_progress")
            bar.setVisible(False)
            work.addWidget(label)
            work.addWidget(bar)
            self.work_labels[kind] = label
            self.work_bars[kind] = bar
        work.addStretch(1)
        self.work_label = self.work_labels["candidate"]
        self.progress = self.work_bars["candidate"]

        self.note = QLabel("")
        self.note.setWordWrap(True)
        lower = QHBoxLayout()
        lower.addWidget(accept_box, 3)
        lower.addWidget(work_box, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(cards_box)
        layout.addWidget(duel_box, 1)
        layout.addLayout(lower)
        layout.addWidget(self.note)
        self._render()

    @staticmethod
    def _setup_table(table: QTableWidget) -> None:
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        table.verticalHeader().setVisible(False)
        table.setAlternatingRowColors(True)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

    # --- data --------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch the view from the core (coalesced)."""
        self._refresher.request()

    def _on_fetched(self, future: Future[AgentsView]) -> None:
        try:
            self.view = future.result()
        except Exception as exc:  # noqa: BLE001 - shown; the next refresh tries again
            self.note.setText(f"agent information unavailable: {exc}")
        self._render()

    def on_shadow_step(self, event: ShadowStepped) -> None:
        """One live shadow step: overlay both actions, show the divergence and the gates."""
        self.last_step = event
        self.duel.add_step(event)
        self._render_gates(event.gates)
        candidate = self.view.slots.get(Slot.CANDIDATE) if self.view is not None else None
        if candidate is None or candidate == event.candidate:
            self.promote_button.setEnabled(bool(event.gates_passed))

    def on_watch(self, event: RollbackWatchStepped) -> None:
        """The rollback watch of a newly promoted agent moved: show where each trigger stands."""
        self.watch_label.setText(watch_text(event))

    def set_work(
        self,
        text: str,
        done: float | None = None,
        total: float | None = None,
        *,
        kind: str = "candidate",
        busy: bool = False,
    ) -> None:
        """Show long-running work of ``kind`` (``candidate`` or ``training``).

        Args:
            text: What is happening.
            done: Progress so far, in units of ``total``.
            total: ``None`` (or <= 0): no bar; ``done == total``: finished.
            kind: Which row.
            busy: Show a busy bar without a known fraction (verification, a job starting).

        Raises:
            KeyError: An unknown ``kind``.
        """
        if kind not in self.work_labels:
            raise KeyError(f"unknown kind of work {kind!r}; known: {', '.join(WORK_KINDS)}")
        label, bar = self.work_labels[kind], self.work_bars[kind]
        label.setText(text)
        if busy:
            bar.setVisible(True)
            bar.setRange(0, 0)
            return
        if total is None or total <= 0:
            bar.setVisible(False)
            return
        bar.setVisible(True)
        bar.setRange(0, 1000)
        bar.setValue(round(1000 * min(1.0, max(0.0, (done or 0) / total))))

    # --- rendering ---------------------------------------------------------------------------------

    def _render(self) -> None:
        view = self.view
        slots = view.slots if view is not None else dict.fromkeys(Slot)
        for slot, browser in self.cards.items():
            card = view.cards.get(slot) if view is not None else None
            browser.setHtml(model_card_html(slot, slots.get(slot), card))
        has_previous = slots.get(Slot.PREVIOUS) is not None
        self.rollback_button.setEnabled(has_previous)
        step = self.last_step
        if step is not None and (view is None or view.at < step.at):
            # A live step is newer than the view: it has the candidate and the gates.
            has_candidate, gates_passed, checks = True, bool(step.gates_passed), step.gates
        else:
            has_candidate = slots.get(Slot.CANDIDATE) is not None
            report = view.gates if view is not None else None
            gates_passed = report is not None and report.passed
            checks = report.checks if report is not None else ()
            if not has_candidate and view is not None:
                self.duel.clear()
        self.promote_button.setEnabled(has_candidate and gates_passed)
        self._render_duel(view)
        self._render_gates(checks)
        self.duel.show_stats(view.stats if view is not None else None)
        self._render_acceptance(view)
        self.note.setText(view.note if view is not None else "")

    def _render_duel(self, view: AgentsView | None) -> None:
        stats = view.stats if view is not None else None
        if stats is None:
            self.duel_summary.setText("No candidate in shadow.")
        else:
            gain = stats.kpi_gain_eur_h
            gain_text = "n/a" if gain is None else f"{gain:+.2f} EUR/h"
            self.duel_summary.setText(
                f"{stats.candidate.version} vs {stats.incumbent.version}: {stats.steps} steps, "
                f"divergence mean {stats.divergence_mean:.3f} / max {stats.divergence_max:.3f}, "
                f"hypothetical limit hits {stats.violations} (active {stats.incumbent_violations}),"
                f" candidate errors {stats.candidate_errors}, predicted KPI gain {gain_text}"
            )

    def _render_gates(self, checks: tuple[GateCheck, ...]) -> None:
        self.gates.setRowCount(len(checks))
        for row, check in enumerate(checks):
            value = "n/a" if check.value is None else f"{check.value:.3g}"
            status = QTableWidgetItem("passed" if check.passed else "NOT PASSED")
            if not check.passed:
                status.setBackground(style.ALARM_COLOURS[max(style.ALARM_COLOURS)])
                status.setForeground(style.PANEL)
            cells = (
                QTableWidgetItem(check.name),
                status,
                QTableWidgetItem(f"{value} / {check.limit:g}"),
                QTableWidgetItem(check.detail),
            )
            for col, cell in enumerate(cells):
                self.gates.setItem(row, col, cell)

    def _render_acceptance(self, view: AgentsView | None) -> None:
        rows = view.acceptance if view is not None else ()
        self.acceptance.setRowCount(len(rows))
        for row, acc in enumerate(rows):
            rate = "–" if acc.rate is None else f"{100 * acc.rate:.0f} %"
            cells = (
                acc.version,
                str(acc.proposed),
                str(acc.approved),
                str(acc.modified),
                str(acc.rejected),
                str(acc.expired),
                rate,
            )
            for col, text in enumerate(cells):
                self.acceptance.setItem(row, col, QTableWidgetItem(text))

    # --- actions -----------------------------------------------------------------------------------

    def _on_rollback_clicked(self) -> None:
        view = self.view
        if view is None:
            return
        active, previous = view.slots.get(Slot.ACTIVE), view.slots.get(Slot.PREVIOUS)
        if previous is None:
            return
        dialog = RollbackDialog(
            active.version if active else "(none)", previous.version, parent=self
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.sig_rollback_requested.emit(dialog.text()))
        self.rollback_dialog = dialog
        dialog.open()


__all__ = [
    "AcceptanceRow",
    "AgentsPanel",
    "AgentsView",
    "RollbackDialog",
    "model_card_html",
    "watch_text",
]
