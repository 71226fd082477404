"""Agents: active / previous / candidate with their model cards, the live shadow duel, promotion
and rollback, acceptance per version, and progress of long work (downloads, verification).

The panel never reads the agent runtime directly: slot versions, model cards, shadow statistics,
gate reports and acceptance figures arrive as futures from the core and are drawn when they
complete. Promote (engineer) and Rollback (supervisor, reason required) are emitted as signals; the
main window checks roles, asks for confirmation and calls the core.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyqtgraph as pg
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
from app.agent_runtime.shadow import GateReport, ShadowStats
from app.domain import AgentVersion, Slot
from app.ui import style
from app.ui.bridge import UiBridge

MAX_DUEL_POINTS = 500


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
    """

    slots: dict[Slot, AgentVersion | None]
    cards: dict[Slot, Manifest | None]
    stats: ShadowStats | None
    gates: GateReport | None
    acceptance: tuple[AcceptanceRow, ...]
    note: str = ""


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
    ) -> None:
        super().__init__(parent)
        self.setObjectName("agents_panel")
        self._fetch = fetch
        self._bridge = bridge
        self.view: AgentsView | None = None
        self._fetching = False
        self._again = False
        self._duel: list[tuple[float, dict[str, float], dict[str, float]]] = []

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
        cards.addWidget(self.rollback_button, 1, 1)
        cards.addWidget(self.promote_button, 1, 2)

        duel_box = QGroupBox("Shadow duel: active vs candidate")
        duel = QVBoxLayout(duel_box)
        self.duel_summary = QLabel("No candidate in shadow.")
        self.duel_summary.setWordWrap(True)
        self.duel_plot = pg.PlotWidget()
        self.duel_plot.setBackground(style.BACKGROUND)
        self.duel_plot.setMinimumHeight(style.em(self, 8))
        self.duel_plot.setMenuEnabled(False)
        self.duel_plot.addLegend(offset=(4, 4), labelTextColor=style.TEXT.name())
        self.gates = QTableWidget(0, 4)
        self.gates.setObjectName("gate_table")
        self.gates.setHorizontalHeaderLabels(("Gate", "Status", "Value / limit", "Detail"))
        self._setup_table(self.gates)
        duel.addWidget(self.duel_summary)
        duel.addWidget(self.duel_plot, 1)
        duel.addWidget(self.gates)

        accept_box = QGroupBox("Operator acceptance per version")
        accept = QVBoxLayout(accept_box)
        self.acceptance = QTableWidget(0, 7)
        self.acceptance.setObjectName("acceptance_table")
        self.acceptance.setHorizontalHeaderLabels(
            ("Version", "Proposed", "Approved", "Modified", "Rejected", "Expired", "Acceptance")
        )
        self._setup_table(self.acceptance)
        accept.addWidget(self.acceptance)

        work_box = QGroupBox("Work in progress")
        work = QVBoxLayout(work_box)
        self.work_label = QLabel("Nothing running.")
        self.work_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("work_progress")
        self.progress.setVisible(False)
        work.addWidget(self.work_label)
        work.addWidget(self.progress)

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
        if self._fetching:
            self._again = True
            return
        self._fetching = True
        self._bridge.when_done(self._fetch(), self._on_fetched)

    def _on_fetched(self, future: Future[AgentsView]) -> None:
        self._fetching = False
        try:
            self.view = future.result()
        except Exception as exc:  # noqa: BLE001 - shown; the next refresh tries again
            self.note.setText(f"agent information unavailable: {exc}")
        self._render()
        if self._again:
            self._again = False
            self.refresh()

    def add_shadow_step(
        self, at: datetime, active: dict[str, float], candidate: dict[str, float]
    ) -> None:
        """Add one step of both agents' actions to the duel plot."""
        self._duel.append((at.timestamp(), dict(active), dict(candidate)))
        del self._duel[:-MAX_DUEL_POINTS]
        self._draw_duel()

    def _draw_duel(self) -> None:
        self.duel_plot.clear()
        if not self._duel:
            self._draw_divergence()
            return
        xs = np.array([p[0] for p in self._duel], dtype=np.float64)
        tags = sorted({t for _, a, c in self._duel for t in (*a, *c)})
        for i, tag in enumerate(tags):
            grey = style.TREND_PENS[i % len(style.TREND_PENS)]
            ya = np.array([a.get(tag, math.nan) for _, a, _ in self._duel], dtype=np.float64)
            yc = np.array([c.get(tag, math.nan) for _, _, c in self._duel], dtype=np.float64)
            self.duel_plot.plot(xs, ya, pen=pg.mkPen(grey, width=2), name=f"active {tag}")
            self.duel_plot.plot(
                xs,
                yc,
                pen=pg.mkPen(style.AI, width=2, style=Qt.PenStyle.DashLine),
                name=f"candidate {tag}",
            )

    def _draw_divergence(self) -> None:
        """Without per-step actions, show the mean divergence per setpoint from the statistics."""
        stats = self.view.stats if self.view is not None else None
        if stats is None or not stats.divergence_by_tag:
            return
        tags = sorted(stats.divergence_by_tag)
        heights = [stats.divergence_by_tag[t] for t in tags]
        bars = pg.BarGraphItem(
            x=np.arange(len(tags)), height=heights, width=0.6, brush=pg.mkBrush(style.AI)
        )
        self.duel_plot.addItem(bars)
        axis = self.duel_plot.getAxis("bottom")
        axis.setTicks([[(i, t) for i, t in enumerate(tags)]])
        self.duel_plot.setLabel("left", "mean divergence")

    def set_work(self, text: str, done: int | None = None, total: int | None = None) -> None:
        """Show long-running work (``total`` None: no bar; ``done == total``: finished)."""
        self.work_label.setText(text)
        if total is None or total <= 0:
            self.progress.setVisible(False)
            return
        self.progress.setVisible(True)
        self.progress.setRange(0, 1000)
        self.progress.setValue(round(1000 * min(1.0, (done or 0) / total)))

    # --- rendering ---------------------------------------------------------------------------------

    def _render(self) -> None:
        view = self.view
        slots = view.slots if view is not None else dict.fromkeys(Slot)
        for slot, browser in self.cards.items():
            card = view.cards.get(slot) if view is not None else None
            browser.setHtml(model_card_html(slot, slots.get(slot), card))
        has_previous = slots.get(Slot.PREVIOUS) is not None
        has_candidate = slots.get(Slot.CANDIDATE) is not None
        self.rollback_button.setEnabled(has_previous)
        gates_passed = view is not None and view.gates is not None and view.gates.passed
        self.promote_button.setEnabled(has_candidate and gates_passed)
        self._render_duel(view)
        self._draw_duel()
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
        checks = view.gates.checks if view is not None and view.gates is not None else ()
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


__all__ = ["AcceptanceRow", "AgentsPanel", "AgentsView", "RollbackDialog", "model_card_html"]
