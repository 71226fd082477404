"""The live shadow duel: the active agent's and the candidate's actions overlaid step by step.

One small plot per setpoint (active solid grey, candidate dashed in the AI colour) and one of the
per-step divergence, with a marker per step that is filled once the promotion gates pass. The plots
share one time axis, shown under the last. The
history is fed by :class:`~app.controllers.messages.ShadowStepped` events through the bridge and
starts over whenever the pair of agents changes. Before the first step (e.g. the console started
while a duel was already running) the mean divergence per setpoint from the duel's statistics is
shown instead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.agent_runtime.shadow import ShadowStats
from app.controllers.messages import ShadowStepped
from app.ui import style

MAX_DUEL_STEPS = 500
"""Steps kept in the overlay (at the demo's 2-minute cadence: about 17 hours)."""


def gate_status_text(event: ShadowStepped) -> str:
    """One line on where the duel stands after ``event``."""
    head = (
        f"step {event.shadow_steps}: {event.candidate.version} vs {event.active.version}, "
        f"divergence {event.divergence_max:.3f}"
    )
    if event.candidate_error is not None:
        head += f", CANDIDATE FAILED ({event.candidate_error})"
    if event.gates_passed is None:
        return head + "; gates unavailable"
    if event.gates_passed:
        return head + "; gates PASSED: the candidate may be promoted"
    failing = ", ".join(g.name for g in event.gates if not g.passed)
    return head + f"; gates not passed ({failing})"


class ShadowDuelView(QWidget):
    """Overlay of both agents' actions per setpoint, the divergence and the gate status."""

    def __init__(
        self, names: Mapping[str, str] | None = None, parent: QWidget | None = None
    ) -> None:
        """Create an empty duel view.

        Args:
            names: Display name per setpoint tag (default: the tag).
            parent: Parent widget.
        """
        super().__init__(parent)
        self.setObjectName("shadow_duel")
        self._names = dict(names or {})
        self.history: deque[ShadowStepped] = deque(maxlen=MAX_DUEL_STEPS)
        self.status = QLabel("No candidate in shadow.")
        self.status.setObjectName("duel_status")
        self.status.setWordWrap(True)
        key = QLabel(
            "active agent: solid grey · candidate: dashed blue · marker filled: gates pass"
        )
        key.setObjectName("duel_key")
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground(style.BACKGROUND)
        self.graphics.setMinimumHeight(style.em(self, 8))
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.divergence_plot = self._new_plot("divergence (fraction of range)")
        self.divergence_plot.getAxis("left").enableAutoSIPrefix(False)
        self.divergence_curve = self.divergence_plot.plot(pen=pg.mkPen(style.LINE, width=1))
        self.gate_markers = pg.ScatterPlotItem(size=7, pen=pg.mkPen(style.AI))
        self.divergence_plot.addItem(self.gate_markers)
        self._bars: pg.BarGraphItem | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status)
        layout.addWidget(key)
        layout.addWidget(self.graphics, 1)

    def _new_plot(self, title: str) -> pg.PlotItem:
        plot = self.graphics.addPlot(row=0, col=0, axisItems={"bottom": pg.DateAxisItem()})
        self._style(plot, title)
        return plot

    def _style(self, plot: pg.PlotItem, title: str) -> None:
        plot.setMenuEnabled(False)
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.setTitle(title, size="8pt", color=style.TEXT.name())
        plot.getAxis("left").setWidth(style.em(self, 3))

    def _plot_for(self, tag: str) -> pg.PlotItem:
        plot = self.plots.get(tag)
        if plot is not None:
            return plot
        # Setpoint plots go above the divergence plot, which stays last.
        self.graphics.removeItem(self.divergence_plot)
        plot = self.graphics.addPlot(row=len(self.plots), col=0)
        self._style(plot, self._names.get(tag, tag))
        plot.hideAxis("bottom")
        self.curves[(tag, "active")] = plot.plot(
            pen=pg.mkPen(style.TREND_PENS[0], width=2), name="active"
        )
        self.curves[(tag, "candidate")] = plot.plot(
            pen=pg.mkPen(style.AI, width=2, style=Qt.PenStyle.DashLine), name="candidate"
        )
        plot.setXLink(self.divergence_plot)
        self.plots[tag] = plot
        self.graphics.addItem(self.divergence_plot, row=len(self.plots), col=0)
        return plot

    # --- data --------------------------------------------------------------------------------------

    def add_step(self, event: ShadowStepped) -> None:
        """Add one shadow step (a new pair of agents starts a new history)."""
        last = self.history[-1] if self.history else None
        if last is not None and (last.active, last.candidate) != (event.active, event.candidate):
            self.history.clear()
        self.history.append(event)
        self.status.setText(gate_status_text(event))
        self.redraw()

    def clear(self) -> None:
        """Forget the history (no candidate any more)."""
        self.history.clear()
        self.status.setText("No candidate in shadow.")
        self.redraw()

    def show_stats(self, stats: ShadowStats | None) -> None:
        """Without steps seen yet, show the duel's mean divergence per setpoint."""
        if self.history:
            return
        if stats is None:
            self.status.setText("No candidate in shadow.")
        else:
            self.status.setText(
                f"{stats.candidate.version} vs {stats.incumbent.version}: {stats.steps} steps "
                "before this console started (per-step overlay from the next step)"
            )
        self._draw_bars(stats)

    def redraw(self) -> None:
        """Draw the history."""
        steps = list(self.history)
        if self._bars is not None and steps:
            self.divergence_plot.removeItem(self._bars)
            self._bars = None
            self.divergence_plot.getAxis("bottom").setTicks(None)
        xs = np.array([e.step_at.timestamp() for e in steps], dtype=np.float64)
        tags = sorted({t for e in steps for t in e.active_action})
        for tag in tags:
            self._plot_for(tag)
        for (tag, who), curve in self.curves.items():
            if who == "active":
                ys = [e.active_action.get(tag, math.nan) for e in steps]
            else:
                ys = [
                    math.nan
                    if e.candidate_action is None
                    else e.candidate_action.get(tag, math.nan)
                    for e in steps
                ]
            curve.setData(xs, np.array(ys, dtype=np.float64), connect="finite")
        div = np.array(
            [math.nan if e.candidate_action is None else e.divergence_max for e in steps],
            dtype=np.float64,
        )
        self.divergence_curve.setData(xs, div, connect="finite")
        brushes = [pg.mkBrush(style.AI) if e.gates_passed else pg.mkBrush(None) for e in steps]
        finite = ~np.isnan(div)
        self.gate_markers.setData(
            x=xs[finite],
            y=div[finite],
            brush=[b for b, f in zip(brushes, finite, strict=True) if f],
        )

    def _draw_bars(self, stats: ShadowStats | None) -> None:
        if self._bars is not None:
            self.divergence_plot.removeItem(self._bars)
            self._bars = None
        if stats is None or not stats.divergence_by_tag:
            return
        tags = sorted(stats.divergence_by_tag)
        heights = [stats.divergence_by_tag[t] for t in tags]
        self._bars = pg.BarGraphItem(
            x=np.arange(len(tags)), height=heights, width=0.6, brush=pg.mkBrush(style.AI)
        )
        self.divergence_plot.addItem(self._bars)
        self.divergence_plot.getAxis("bottom").setTicks([[(i, t) for i, t in enumerate(tags)]])


__all__ = ["MAX_DUEL_STEPS", "ShadowDuelView", "gate_status_text"]
