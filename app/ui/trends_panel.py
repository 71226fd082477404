"""Trends: process values, recommended vs applied setpoints, decision and alarm markers.

Plots pull from the core's ring buffers on a ``QTimer`` (≤ 10 Hz) and reload only when the buffer
gained a row or the visible range changed. Long spans are read from min/max levels of detail
(``TrendLod``: at most two points per pixel, spikes kept), and pyqtgraph draws with peak
downsampling and clip-to-view, so 7 days at 1 Hz per curve stays interactive
(bench/ui_trends.py measures it).
The x axis is wall-clock time (epoch seconds, float64); the buffers' monotonic times are shifted by
the offset between the two clocks taken at start-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from app.controllers.trend_buffer import TrendBuffer
from app.domain import AlarmPriority, TagId
from app.plant.catalog import ProcessCatalog
from app.ui import style
from app.ui.trend_lod import TrendLod

SPANS_S: tuple[tuple[str, float], ...] = (
    ("10 min", 600.0),
    ("1 h", 3600.0),
    ("8 h", 8 * 3600.0),
    ("24 h", 24 * 3600.0),
    ("7 d", 7 * 24 * 3600.0),
)
MAX_MARKERS = 200

pg.setConfigOptions(antialias=False, useOpenGL=False, segmentedLineMode="auto")


@dataclass(frozen=True, slots=True)
class PlotSpec:
    """One plot of the trends view.

    Attributes:
        title: Plot title (with the unit).
        tags: Buffer tags drawn as process curves.
        setpoint: A setpoint tag whose recommended values are overlaid (AI colour, steps).
    """

    title: str
    tags: tuple[TagId, ...]
    setpoint: TagId | None = None


RO_PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec(
        "Feed pressure (bar): setpoint applied, recommended, measured",
        ("feed_pressure_sp_bar", "feed_pressure_bar"),
        setpoint="feed_pressure_sp_bar",
    ),
    PlotSpec(
        "Feed flow (m3/h): setpoint applied, recommended, measured",
        ("feed_flow_sp_m3h", "feed_flow_m3h"),
        setpoint="feed_flow_sp_m3h",
    ),
    PlotSpec("Production (m3/h)", ("permeate_flow_m3h", "concentrate_flow_m3h")),
    PlotSpec("Stage ΔP and permeate pressure (bar)", ("stage_dp_bar", "permeate_pressure_bar")),
    PlotSpec("Permeate conductivity (µS/cm)", ("permeate_conductivity_uscm",)),
    PlotSpec(
        "Recovery, pump speed, concentrate valve (%)",
        ("recovery_pct", "hpp_speed_pct", "conc_valve_pct"),
    ),
)
"""The RO train's trends: 12 tags in 6 plots."""
MAX_UNIT_PLOTS = 4


def default_plots(catalog: ProcessCatalog, buffer_tags: Sequence[TagId]) -> list[PlotSpec]:
    """Plots for ``catalog``: the RO set, or one per setpoint (applied, recommended, its process
    value) and up to ``MAX_UNIT_PLOTS`` plots of process values grouped by unit."""
    available = set(buffer_tags)
    if catalog.process == "ro" and all(t in available for p in RO_PLOTS for t in p.tags):
        return list(RO_PLOTS)
    specs: list[PlotSpec] = []
    used: set[str] = set()
    for sp in catalog.setpoints:
        if sp.name not in available:
            continue
        pv = sp.name.replace("_sp_", "_")
        tags = (sp.name, pv) if pv in available else (sp.name,)
        specs.append(PlotSpec(f"{sp.description} ({sp.unit})", tags, setpoint=sp.name))
        used.update(tags)
    by_unit: dict[str, list[str]] = {}
    for tdef in catalog.observations:
        if tdef.name in available and tdef.name not in used and not tdef.discrete:
            by_unit.setdefault(tdef.unit or "-", []).append(tdef.name)
    for unit, names in list(by_unit.items())[:MAX_UNIT_PLOTS]:
        specs.append(PlotSpec(unit, tuple(names[:4])))
    return specs


def step_arrays(
    points: Sequence[tuple[float, float]], end: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """x, y of a staircase through ``points`` (each value holds until the next), up to ``end``.

    Built explicitly rather than with pyqtgraph's ``stepMode``, which breaks under clip-to-view.
    """
    times = [t for t, _ in points] + [max(points[-1][0], end)]
    xs = np.repeat(np.asarray(times, dtype=np.float64), 2)[1:-1]
    ys = np.repeat(np.asarray([v for _, v in points], dtype=np.float64), 2)
    return xs, ys


class TrendsPanel(QWidget):
    """Linked pyqtgraph plots over one trend buffer.

    Args:
        buffer: The core's trend buffer (read only, from this thread).
        catalog: Units and descriptions.
        plots: What to draw (default: ``default_plots``).
        refresh_hz: Redraw timer rate (≤ 20).
        clock_offset_s: Added to buffer times to get epoch seconds (default: now's offset between
            ``time.time()`` and ``time.monotonic()``).
    """

    def __init__(
        self,
        buffer: TrendBuffer,
        catalog: ProcessCatalog,
        plots: Sequence[PlotSpec] | None = None,
        refresh_hz: float = 10.0,
        clock_offset_s: float | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("trends_panel")
        self._buffer = buffer
        self._catalog = catalog
        self.offset_s = time.time() - time.monotonic() if clock_offset_s is None else clock_offset_s
        self.specs = list(plots) if plots is not None else default_plots(catalog, buffer.tags)
        self.span_s = 3600.0
        self.live = True
        self._loaded: tuple[float, float, float] | None = None
        self.lod = TrendLod(
            buffer, list(dict.fromkeys(t for spec in self.specs for t in spec.tags))
        )
        self.rows_per_point = 1
        self._range_dirty = True
        self._recommended: dict[TagId, list[tuple[float, float]]] = {}
        self._markers: list[tuple[float, list[pg.InfiniteLine]]] = []
        self.frames = 0

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground(style.BACKGROUND)
        self.plots: list[pg.PlotItem] = []
        self.curves: dict[tuple[int, TagId], pg.PlotDataItem] = {}
        self.recommended_curves: dict[int, pg.PlotDataItem] = {}
        for row, spec in enumerate(self.specs):
            self._add_plot(row, spec)
        for plot in self.plots[:-1]:
            plot.getAxis("bottom").setStyle(showValues=False)

        bar = QHBoxLayout()
        self._span_group = QButtonGroup(self)
        for label, span in SPANS_S:
            button = QPushButton(label)
            button.setCheckable(True)
            button.setChecked(span == self.span_s)
            button.clicked.connect(lambda _=False, s=span: self.set_span(s))
            self._span_group.addButton(button)
            bar.addWidget(button)
        bar.addStretch(1)
        self.live_button = QPushButton("Live")
        self.live_button.setObjectName("trend_live")
        self.live_button.setCheckable(True)
        self.live_button.setChecked(True)
        self.live_button.setToolTip("Follow the newest values (panning or zooming stops following)")
        self.live_button.toggled.connect(self.set_live)
        bar.addWidget(self.live_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.graphics, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(max(50, round(1000 / min(refresh_hz, 20.0))))
        self._timer.timeout.connect(self.redraw)
        self._timer.start()

    # --- construction ----------------------------------------------------------------------------

    def _add_plot(self, row: int, spec: PlotSpec) -> None:
        axis = pg.DateAxisItem(orientation="bottom")
        plot = self.graphics.addPlot(row=row, col=0, axisItems={"bottom": axis})
        plot.setTitle(spec.title, color=style.TEXT.name(), size="9pt")
        # No grid: ISA-101 keeps trends uncluttered, and pyqtgraph's translucent grid costs
        # ~10 ms per plot per frame (bench/ui_trends.py), far more than the curves.
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        plot.setMenuEnabled(False)
        legend = plot.addLegend(offset=(4, 4), labelTextColor=style.TEXT.name())
        legend.setBrush(pg.mkBrush(226, 226, 226, 200))
        for axis_name in ("left", "bottom"):
            ax = plot.getAxis(axis_name)
            ax.setPen(pg.mkPen(style.LINE))
            ax.setTextPen(pg.mkPen(style.TEXT))
        for i, tag in enumerate(spec.tags):
            colour = style.TREND_PENS[i % len(style.TREND_PENS)]
            width = 2 if tag == spec.setpoint else 1
            name = self._catalog.tag(tag).description if tag in self._catalog else tag
            if tag == spec.setpoint:
                name = f"applied: {name}"
            curve = plot.plot(pen=pg.mkPen(colour, width=width), name=name, connect="finite")
            self.curves[(row, tag)] = curve
        if spec.setpoint is not None:
            rec = plot.plot(
                pen=pg.mkPen(style.AI, width=2, style=Qt.PenStyle.DashLine), name="recommended"
            )
            self.recommended_curves[row] = rec
        if self.plots:
            plot.setXLink(self.plots[0])
        plot.sigXRangeChanged.connect(self._on_plot_range_changed)
        plot.getViewBox().sigRangeChangedManually.connect(self._on_user_panned)
        self.plots.append(plot)

    # --- controls --------------------------------------------------------------------------------

    def set_span(self, span_s: float) -> None:
        """Show the last ``span_s`` seconds and follow the newest values."""
        self.span_s = span_s
        self.set_live(True)
        self._apply_live_range()

    def set_live(self, live: bool) -> None:
        """Follow (or stop following) the newest values."""
        self.live = live
        if self.live_button.isChecked() != live:
            self.live_button.setChecked(live)
        self._range_dirty = True

    def _on_user_panned(self, *_: object) -> None:
        self.set_live(False)

    def _on_plot_range_changed(self, *_: object) -> None:
        self._range_dirty = True

    def now_epoch(self) -> float:
        """The newest buffer time as epoch seconds (now if the buffer is empty)."""
        last = self._buffer.last_time
        return time.time() if math.isnan(last) else last + self.offset_s

    def _apply_live_range(self) -> None:
        if not self.plots:
            return
        end = self.now_epoch()
        self.plots[0].setXRange(end - self.span_s, end, padding=0.0)

    # --- markers and recommendations ---------------------------------------------------------------

    def add_recommendation(self, at: datetime, values: dict[TagId, float]) -> None:
        """Overlay recommended setpoint values from ``at`` on (steps)."""
        t = at.timestamp()
        for tag, value in values.items():
            self._recommended.setdefault(tag, []).append((t, value))
        self._draw_recommended()

    def _draw_recommended(self) -> None:
        for row, curve in self.recommended_curves.items():
            tag = self.specs[row].setpoint
            points = self._recommended.get(tag or "", [])
            if not points:
                continue
            curve.setData(*step_arrays(points, self.now_epoch()))

    def add_marker(self, at: datetime, label: str, priority: AlarmPriority | None = None) -> None:
        """A vertical marker on every plot: a decision (``priority`` None) or an alarm."""
        t = at.timestamp()
        if priority is None:
            pen = pg.mkPen(style.AI, width=1, style=Qt.PenStyle.DashLine)
        else:
            pen = pg.mkPen(style.ALARM_COLOURS[priority], width=2)
        lines = []
        for i, plot in enumerate(self.plots):
            line = pg.InfiniteLine(
                pos=t,
                angle=90,
                pen=pen,
                movable=False,
                label=label if i == 0 else None,
                labelOpts={"position": 0.92, "color": style.TEXT.name(), "rotateAxis": (1, 0)},
            )
            line.setToolTip(label)
            plot.addItem(line, ignoreBounds=True)
            lines.append(line)
        self._markers.append((t, lines))
        while len(self._markers) > MAX_MARKERS:
            _, old = self._markers.pop(0)
            for plot, line in zip(self.plots, old, strict=True):
                plot.removeItem(line)

    @property
    def marker_count(self) -> int:
        """Markers currently drawn."""
        return len(self._markers)

    # --- redraw ------------------------------------------------------------------------------------

    def visible_range(self) -> tuple[float, float]:
        """The x range shown, epoch seconds."""
        (x0, x1), _ = self.plots[0].getViewBox().viewRange()
        return float(x0), float(x1)

    def redraw(self) -> None:
        """Reload the curves if the buffer or the visible range changed (the timer's slot)."""
        if not self.plots or (not self.isVisible() and self.frames > 0):
            return
        if self.live:
            self._apply_live_range()
        last = self._buffer.last_time
        x0, x1 = self.visible_range()
        state = (last, x0, x1)
        if state == self._loaded and not self._range_dirty:
            return
        self._range_dirty = False
        self._loaded = state
        self.load(x0, x1)

    def load(self, x0: float, x1: float) -> None:
        """Read ``[x0, x1]`` (epoch seconds, plus one span of margin each side) into the curves."""
        margin = max(0.0, x1 - x0)
        t0, t1 = x0 - margin - self.offset_s, x1 + margin - self.offset_s
        self.lod.update()
        width = max(200, self.graphics.width())
        times, values, self.rows_per_point = self.lod.view(t0, t1, 2 * width)
        xs = times + self.offset_s
        column = {tag: i for i, tag in enumerate(self.lod.tags)}
        for (_, tag), curve in self.curves.items():
            curve.setData(xs, values[:, column[tag]], connect="finite", skipFiniteCheck=True)
        self._draw_recommended()
        self.frames += 1

    def start(self) -> None:
        """(Re)start the redraw timer."""
        self._timer.start()

    def stop(self) -> None:
        """Stop the redraw timer."""
        self._timer.stop()


__all__ = ["RO_PLOTS", "SPANS_S", "PlotSpec", "TrendsPanel", "default_plots", "step_arrays"]
