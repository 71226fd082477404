"""The recommendation card: what the agent proposes, how sure it is, what it would do, and the
operator's three answers.

The card shows each proposed setpoint beside its current value, the ensemble uncertainty and the
out-of-distribution score as gauges against the site's limits, a what-if preview (recommended vs
hold, 30–120 min ahead) and a countdown to expiry. Approve (Alt+A), Modify (Alt+M: edit values,
each checked live against the safety envelope) and Reject (Alt+R: reason code and text) are
emitted as signals; the main window checks the role and calls the core. The envelope check and the
preview are futures supplied by the caller: the card never waits on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import datetime

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.agent_runtime.twin import PreviewResult
from app.config import TagLimits
from app.controllers.safety import Verdict
from app.domain import Recommendation, RecommendationState, RejectReason, Setpoint, utc_now
from app.plant.catalog import ProcessCatalog
from app.ui import style
from app.ui.bridge import UiBridge

EnvelopeCheck = Callable[[tuple[Setpoint, ...]], "Future[tuple[Verdict, ...]]"]
PreviewRequest = Callable[[Recommendation, tuple[Setpoint, ...], float], "Future[PreviewResult]"]

PREVIEW_METRICS: tuple[tuple[str, str], ...] = (
    ("permeate_flow_m3h", "Permeate flow (m3/h)"),
    ("dp_bar", "Stage ΔP (bar)"),
    ("permeate_conductivity_uscm", "Permeate conductivity (µS/cm)"),
    ("recovery_pct", "Recovery (%)"),
    ("sec_kwh_m3", "Specific energy (kWh/m3)"),
)
HORIZONS_MIN = (30, 60, 90, 120)
REASON_LABELS: dict[RejectReason, str] = {
    RejectReason.UNSAFE: "Unsafe",
    RejectReason.PROCESS_UPSET: "Process upset",
    RejectReason.MAINTENANCE: "Maintenance",
    RejectReason.DISAGREE: "Disagree with the move",
    RejectReason.QUALITY_RISK: "Permeate quality risk",
    RejectReason.OTHER: "Other (explain)",
}


class RejectDialog(QDialog):
    """Ask for a reject reason code and a note (a note is required for ``Other``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Reject recommendation")
        self.setObjectName("reject_dialog")
        self.reason = QComboBox()
        for reason, label in REASON_LABELS.items():
            self.reason.addItem(label, reason)
        self.note = QPlainTextEdit()
        self.note.setPlaceholderText("What made you reject it? (kept with the decision)")
        self.note.setMaximumHeight(style.em(self, 5))
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Reason", self.reason)
        form.addRow("Note", self.note)
        form.addRow(self.buttons)
        self.reason.currentIndexChanged.connect(self._validate)
        self.note.textChanged.connect(self._validate)
        self._validate()

    def chosen(self) -> tuple[RejectReason, str]:
        """The reason code and the note."""
        # Qt hands enum members back as plain strings.
        reason = RejectReason(self.reason.currentData())
        return reason, self.note.toPlainText().strip()

    def _validate(self) -> None:
        reason, note = self.chosen()
        ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok_button is not None:
            ok_button.setEnabled(reason is not RejectReason.OTHER or bool(note))


class GaugeWidget(QWidget):
    """A labelled bar: value against a limit, coloured only when the limit is exceeded."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel(title)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.value_label = QLabel("–")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.value_label)
        self.exceeded = False

    def set_value(self, value: float | None, limit: float) -> None:
        """Show ``value`` on a 0..2×``limit`` scale (the limit sits in the middle)."""
        if value is None or not math.isfinite(value):
            self.bar.setValue(0)
            self.bar.setFormat("n/a")
            self.value_label.setText("–")
            self.exceeded = False
        else:
            fraction = min(1.0, max(0.0, value / (2 * limit)))
            self.bar.setValue(round(fraction * 1000))
            self.bar.setFormat(f"{value:.2f} (limit {limit:g})")
            self.value_label.setText("ABOVE LIMIT" if value > limit else "within limit")
            self.exceeded = value > limit
        self.value_label.setProperty("alarm", "medium" if self.exceeded else "")
        self.value_label.style().unpolish(self.value_label)
        self.value_label.style().polish(self.value_label)


class RecommendationCard(QFrame):
    """The current recommendation and the operator's answers.

    Signals:
        sig_approve_requested(rec_id)
        sig_modify_requested(rec_id, setpoints)
        sig_reject_requested(rec_id, reason, note)
    """

    sig_approve_requested = Signal(str)
    sig_modify_requested = Signal(str, object)
    sig_reject_requested = Signal(str, object, str)

    def __init__(
        self,
        catalog: ProcessCatalog,
        bridge: UiBridge,
        *,
        limits: dict[str, TagLimits] | None = None,
        max_uncertainty: float = 0.25,
        max_ood_score: float = 4.0,
        envelope_check: EnvelopeCheck | None = None,
        preview_request: PreviewRequest | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("recommendation_card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._catalog = catalog
        self._bridge = bridge
        self._limits = limits or {}
        self._max_uncertainty = max_uncertainty
        self._max_ood = max_ood_score
        self._envelope_check = envelope_check
        self._preview_request = preview_request
        self.recommendation: Recommendation | None = None
        self.envelope: dict[str, Verdict] = {}
        self.preview: PreviewResult | None = None
        self._check_seq = 0
        self._preview_seq = 0
        self.busy = False

        self.title = QLabel("No recommendation pending")
        self.title.setObjectName("card_title")
        self.title.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.countdown = QLabel("")
        self.countdown.setObjectName("countdown")
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.countdown)

        self.grid = QGridLayout()
        for col, text in enumerate(("Setpoint", "Now", "Proposed", "Your value")):
            self.grid.addWidget(QLabel(f"<b>{text}</b>"), 0, col)
        self.rows: dict[str, tuple[QLabel, QLabel, QDoubleSpinBox, QLabel]] = {}
        self.verdicts = QVBoxLayout()
        for row, tdef in enumerate(catalog.setpoints, start=1):
            name = QLabel(f"{short_name(tdef.description)} ({tdef.unit})")
            name.setToolTip(tdef.description)
            current, proposed = QLabel("–"), QLabel("–")
            spin = QDoubleSpinBox()
            spin.setObjectName(f"modify_{tdef.name}")
            low = tdef.plc_low if tdef.plc_low is not None else tdef.low
            high = tdef.plc_high if tdef.plc_high is not None else tdef.high
            spin.setRange(low, high)
            spin.setDecimals(2)
            spin.setSingleStep(0.1 if tdef.high - tdef.low < 100 else 1.0)
            spin.setEnabled(False)
            spin.valueChanged.connect(self._schedule_check)
            verdict = QLabel("")
            verdict.setObjectName(f"verdict_{tdef.name}")
            verdict.setWordWrap(True)
            for col, widget in enumerate((name, current, proposed, spin)):
                self.grid.addWidget(widget, row, col)
            self.verdicts.addWidget(verdict)
            self.rows[tdef.name] = (current, proposed, spin, verdict)
        self.grid.setColumnStretch(0, 1)

        self.uncertainty = GaugeWidget("Uncertainty")
        self.ood = GaugeWidget("Unfamiliarity (OOD)")

        self.preview_plot = pg.PlotWidget()
        self.preview_plot.setBackground(style.BACKGROUND)
        self.preview_plot.setMinimumHeight(style.em(self, 9))
        self.preview_plot.setMenuEnabled(False)
        self.preview_plot.addLegend(offset=(4, 4), labelTextColor=style.TEXT.name())
        self.preview_plot.setLabel("bottom", "minutes ahead")
        self.metric_box = QComboBox()
        self.metric_box.setObjectName("preview_metric")
        for key, label in PREVIEW_METRICS:
            self.metric_box.addItem(label, key)
        self.metric_box.currentIndexChanged.connect(self._draw_preview)
        self.horizon = QComboBox()
        self.horizon.setObjectName("preview_horizon")
        for minutes in HORIZONS_MIN:
            self.horizon.addItem(f"{minutes} min", minutes)
        self.horizon.setCurrentIndex(1)
        self.horizon.currentIndexChanged.connect(lambda _: self.request_preview())
        self.preview_status = QLabel("")
        self.preview_status.setWordWrap(True)
        preview_bar = QHBoxLayout()
        preview_bar.addWidget(QLabel("What-if:"))
        preview_bar.addWidget(self.metric_box, 1)
        preview_bar.addWidget(self.horizon)

        self.approve_button = QPushButton("&Approve")
        self.approve_button.setObjectName("approve")
        self.approve_button.setToolTip("Apply the proposed setpoints (Alt+A)")
        self.modify_button = QPushButton("&Modify")
        self.modify_button.setObjectName("modify")
        self.modify_button.setCheckable(True)
        self.modify_button.setToolTip("Edit the values before applying (Alt+M)")
        self.apply_modified_button = QPushButton("Apply &modified values")
        self.apply_modified_button.setObjectName("apply_modified")
        self.apply_modified_button.setVisible(False)
        self.reject_button = QPushButton("&Reject")
        self.reject_button.setObjectName("reject")
        self.reject_button.setToolTip("Reject with a reason code (Alt+R)")
        self.approve_button.clicked.connect(self._on_approve_clicked)
        self.modify_button.toggled.connect(self._on_modify_toggled)
        self.apply_modified_button.clicked.connect(self._on_apply_modified_clicked)
        self.reject_button.clicked.connect(self._on_reject_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.approve_button)
        buttons.addWidget(self.modify_button)
        buttons.addWidget(self.apply_modified_button)
        buttons.addStretch(1)
        buttons.addWidget(self.reject_button)

        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.status)
        layout.addLayout(self.grid)
        layout.addLayout(self.verdicts)
        layout.addWidget(self.uncertainty)
        layout.addWidget(self.ood)
        layout.addLayout(preview_bar)
        layout.addWidget(self.preview_plot, 1)
        layout.addWidget(self.preview_status)
        layout.addLayout(buttons)

        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(150)
        self._check_timer.timeout.connect(self._run_check)
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._update_countdown)
        self._tick.start()
        self.show_recommendation(None)

    # --- content ---------------------------------------------------------------------------------

    def show_recommendation(self, rec: Recommendation | None, status: str = "") -> None:
        """Show ``rec`` (``None``: nothing pending) and request its preview."""
        self.recommendation = rec
        self.envelope = {}
        self.preview = None
        self.busy = False
        self.modify_button.setChecked(False)
        pending = rec is not None and rec.state is RecommendationState.PROPOSED
        self.setProperty("pending", "true" if pending else "false")
        self.style().unpolish(self)
        self.style().polish(self)
        self.status.setText(status)
        self.preview_plot.clear()
        if rec is None:
            self.title.setText("No recommendation pending")
            for current, proposed, spin, verdict in self.rows.values():
                for label in (current, proposed):
                    label.setText("–")
                verdict.setText("")
                spin.setEnabled(False)
            self.preview_plot.setVisible(False)
            self.uncertainty.set_value(None, self._max_uncertainty)
            self.ood.set_value(None, self._max_ood)
            self.preview_status.setText("")
        else:
            source = "cloud endpoint" if rec.cloud_sourced else f"agent {rec.agent.version}"
            self.title.setText(
                f"Recommendation from {source} · {rec.created_ts.astimezone():%H:%M:%S}"
                f" · {rec.state.value}"
            )
            before = {sp.tag: sp.value for sp in rec.current}
            for sp in rec.setpoints:
                if sp.tag not in self.rows:
                    continue
                cur_label, prop_label, spin, verdict = self.rows[sp.tag]
                old = before.get(sp.tag, math.nan)
                cur_label.setText(f"{old:.2f}")
                delta = sp.value - old
                change = f" ({delta:+.2f})" if math.isfinite(delta) else ""
                prop_label.setText(f"<b>{sp.value:.2f}</b>{change}")
                spin.blockSignals(True)
                spin.setValue(sp.value)
                spin.blockSignals(False)
                verdict.setText("")
            self.preview_plot.setVisible(True)
            self.uncertainty.set_value(rec.uncertainty, self._max_uncertainty)
            self.ood.set_value(rec.ood_score, self._max_ood)
            self.request_preview()
        self._update_buttons()
        self._update_countdown()

    def set_busy(self, busy: bool, status: str = "") -> None:
        """Disable the answers while a decision is on its way to the PLC."""
        self.busy = busy
        if status:
            self.status.setText(status)
        self._update_buttons()

    def _decidable(self) -> bool:
        rec = self.recommendation
        return (
            rec is not None
            and rec.state is RecommendationState.PROPOSED
            and not self.busy
            and rec.expires_ts > utc_now()
        )

    def _update_buttons(self) -> None:
        ok = self._decidable()
        modifying = self.modify_button.isChecked()
        self.approve_button.setEnabled(ok and not modifying)
        self.modify_button.setEnabled(ok)
        self.reject_button.setEnabled(ok)
        self.apply_modified_button.setVisible(modifying)
        envelope_ok = all(v.ok for v in self.envelope.values()) and bool(self.envelope)
        self.apply_modified_button.setEnabled(ok and modifying and envelope_ok)
        for _, _, spin, _ in self.rows.values():
            spin.setEnabled(ok and modifying)

    def _update_countdown(self) -> None:
        rec = self.recommendation
        if rec is None or rec.state is not RecommendationState.PROPOSED:
            self.countdown.setText("")
            return
        left = (rec.expires_ts - utc_now()).total_seconds()
        if left <= 0:
            self.countdown.setText("expired")
            self._update_buttons()
            return
        minutes, seconds = divmod(int(left), 60)
        self.countdown.setText(f"expires in {minutes:d}:{seconds:02d}")

    # --- modify and the live envelope check -------------------------------------------------------

    def modified_setpoints(self) -> tuple[Setpoint, ...]:
        """The values in the edit boxes, for the tags the recommendation proposes."""
        rec = self.recommendation
        if rec is None:
            return ()
        return tuple(Setpoint(sp.tag, self.rows[sp.tag][2].value()) for sp in rec.setpoints)

    def _on_modify_toggled(self, on: bool) -> None:
        self._update_buttons()
        if on:
            self._schedule_check()

    def _schedule_check(self) -> None:
        if self.modify_button.isChecked():
            self._check_timer.start()

    def _run_check(self) -> None:
        if self._envelope_check is None or self.recommendation is None:
            return
        self._check_seq += 1
        seq = self._check_seq
        setpoints = self.modified_setpoints()
        future = self._envelope_check(setpoints)
        self._bridge.when_done(future, lambda f: self._on_check_done(seq, f))
        for tag in (sp.tag for sp in setpoints):
            self.rows[tag][3].setText("checking…")

    def _on_check_done(self, seq: int, future: Future[tuple[Verdict, ...]]) -> None:
        if seq != self._check_seq:
            return
        try:
            verdicts = future.result()
        except Exception as exc:  # noqa: BLE001 - any failure of the check means "not allowed"
            for _, _, _, label in self.rows.values():
                label.setText(f"check failed: {exc}")
            self.envelope = {}
            self._update_buttons()
            return
        self.envelope = {v.setpoint.tag: v for v in verdicts}
        for verdict in verdicts:
            _, _, spin, label = self.rows[verdict.setpoint.tag]
            name = short_name(self._catalog.tag(verdict.setpoint.tag).description)
            if verdict.ok:
                label.setText(f"{name} {verdict.setpoint.value:.2f}: within the envelope")
                spin.setProperty("envelope", "ok")
            else:
                layer = verdict.layer.value if verdict.layer is not None else "envelope"
                label.setText(f"{name}: refused by the {layer} layer: {verdict.reason}")
                spin.setProperty("envelope", "rejected")
            spin.style().unpolish(spin)
            spin.style().polish(spin)
        self._update_buttons()
        self.request_preview()

    # --- preview ---------------------------------------------------------------------------------

    def horizon_s(self) -> float:
        """The preview horizon chosen, seconds."""
        return float(self.horizon.currentData()) * 60.0

    def request_preview(self) -> None:
        """Ask for a what-if preview of the proposed (or modified) values."""
        rec = self.recommendation
        if rec is None or self._preview_request is None:
            return
        setpoints = self.modified_setpoints() if self.modify_button.isChecked() else rec.setpoints
        self._preview_seq += 1
        seq = self._preview_seq
        self.preview_status.setText("computing the what-if preview…")
        try:
            future = self._preview_request(rec, tuple(setpoints), self.horizon_s())
        except Exception as exc:  # noqa: BLE001 - a preview is optional; say why there is none
            self.preview_status.setText(f"no preview: {exc}")
            return
        self._bridge.when_done(future, lambda f: self._on_preview_done(seq, f))

    def _on_preview_done(self, seq: int, future: Future[PreviewResult]) -> None:
        if seq != self._preview_seq:
            return
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - a preview is optional; say why there is none
            self.preview = None
            self.preview_status.setText(f"no preview: {exc}")
            self.preview_plot.clear()
            return
        self.preview = result
        if not result.available:
            self.preview_status.setText(f"no preview: {result.reason}")
            self.preview_plot.clear()
            return
        self.preview_status.setText(self._preview_summary(result))
        self._draw_preview()

    def _preview_summary(self, result: PreviewResult) -> str:
        parts = []
        for name, traj in result.scenarios.items():
            text = f"{name}: {traj.kpi_eur_h:+.1f} EUR/h"
            if traj.trip_reason:
                text += f" (trips: {traj.trip_reason})"
            parts.append(text)
        return " · ".join(parts)

    def _draw_preview(self) -> None:
        self.preview_plot.clear()
        result = self.preview
        if result is None or not result.available:
            return
        key: str = self.metric_box.currentData()
        pens = {"hold": pg.mkPen(style.TEXT_DIM, width=2)}
        for name, traj in result.scenarios.items():
            y = np.asarray(getattr(traj, key), dtype=np.float64)
            x = np.asarray(traj.t_s, dtype=np.float64) / 60.0
            pen = pens.get(name, pg.mkPen(style.AI, width=2, style=Qt.PenStyle.DashLine))
            self.preview_plot.plot(x, y, pen=pen, name=name, connect="finite")

    # --- answers ---------------------------------------------------------------------------------

    def _on_approve_clicked(self) -> None:
        if self._decidable() and self.recommendation is not None:
            self.sig_approve_requested.emit(self.recommendation.rec_id)

    def _on_apply_modified_clicked(self) -> None:
        if self._decidable() and self.recommendation is not None:
            self.sig_modify_requested.emit(self.recommendation.rec_id, self.modified_setpoints())

    def _on_reject_clicked(self) -> None:
        if not self._decidable() or self.recommendation is None:
            return
        rec_id = self.recommendation.rec_id
        dialog = RejectDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.sig_reject_requested.emit(rec_id, *dialog.chosen()))
        dialog.open()
        self.reject_dialog = dialog

    def stop(self) -> None:
        """Stop the timers."""
        self._tick.stop()
        self._check_timer.stop()


def short_name(description: str) -> str:
    """A setpoint's description shortened for narrow columns."""
    text = description.replace("Supervisory ", "").replace(" setpoint", " SP")
    return text[:1].upper() + text[1:]


def expires_in_s(rec: Recommendation, now: datetime | None = None) -> float:
    """Seconds until ``rec`` expires (negative once expired)."""
    return (rec.expires_ts - (now or utc_now())).total_seconds()


def setpoint_values(setpoints: Sequence[Setpoint]) -> dict[str, float]:
    """``{tag: value}`` of a setpoint list."""
    return {sp.tag: sp.value for sp in setpoints}


__all__ = [
    "HORIZONS_MIN",
    "PREVIEW_METRICS",
    "EnvelopeCheck",
    "GaugeWidget",
    "PreviewRequest",
    "RecommendationCard",
    "RejectDialog",
    "expires_in_s",
    "setpoint_values",
    "short_name",
]
