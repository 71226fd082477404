"""Overview: a schematic of the RO train with live values, and a table of every tag.

The schematic (feed → HP pump → membrane train → permeate / concentrate) is painted to scale with
the widget and the font, so it stays readable from 1366×768 to 4K. Each value box shows the value,
unit and age; a value that is bad, stale or missing is hatched with a magenta outline and its quality
spelled out (ISA-101: data quality is shown, never hidden). Values are pulled from the snapshot
service on a timer; nothing here waits on the PLC.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QBrush, QFont, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.controllers.snapshot import TagState
from app.domain import Quality, TagId
from app.plant.catalog import ProcessCatalog, TagDef
from app.ui import style

StateSource = Callable[[TagId], TagState | None]


@dataclass(frozen=True, slots=True)
class ValueDisplay:
    """What one value box shows.

    Attributes:
        tag: Logical tag.
        label: Short label.
        text: Value and unit, e.g. ``12.3 bar``.
        detail: Quality and age, e.g. ``good · 0.4 s`` or ``STALE · 12 s``.
        bad: True if the value must not be trusted (bad, stale or missing).
    """

    tag: TagId
    label: str
    text: str
    detail: str
    bad: bool


def format_value(value: float, tdef: TagDef) -> str:
    """The value with a precision that suits the tag's range, and its unit."""
    if not math.isfinite(value):
        return "----"
    if tdef.discrete:
        return "ON" if value >= 0.5 else "OFF"
    span = tdef.high - tdef.low
    digits = 0 if span >= 1000 else 1 if span >= 50 else 2
    text = f"{value:.{digits}f}"
    return f"{text} {tdef.unit}".rstrip()


def format_age(age_s: float) -> str:
    """Age in a compact unit (s, min, h)."""
    if age_s < 60:
        return f"{age_s:.1f} s" if age_s < 10 else f"{age_s:.0f} s"
    if age_s < 3600:
        return f"{age_s / 60:.0f} min"
    return f"{age_s / 3600:.1f} h"


def describe(tdef: TagDef, state: TagState | None, label: str | None = None) -> ValueDisplay:
    """Turn a tag's state into what a value box shows."""
    label = label or tdef.description
    if state is None:
        return ValueDisplay(tdef.name, label, "----", "no data", True)
    bad = state.quality is not Quality.GOOD
    text = format_value(state.sample.value, tdef)
    quality = state.quality.value.upper() if bad else state.quality.value
    return ValueDisplay(tdef.name, label, text, f"{quality} · {format_age(state.age_s)}", bad)


# Box positions on a 100 x 60 grid: (tag, label, x, y). Columns at x = 1, 20, 40, 59, 80.
_RO_BOXES: tuple[tuple[str, str, float, float], ...] = (
    ("feed_ph", "Feed pH", 1, 2),
    ("feed_orp_mv", "Feed ORP", 1, 10),
    ("feed_flow_m3h", "Feed flow", 1, 35),
    ("feed_conductivity_uscm", "Feed cond.", 1, 43),
    ("feed_temperature_c", "Feed temp.", 1, 51),
    ("feed_pressure_bar", "Feed pressure", 20, 2),
    ("feed_pressure_sp_bar", "Pressure SP", 20, 10),
    ("feed_flow_sp_m3h", "Flow SP", 20, 18),
    ("hpp_speed_pct", "HP pump speed", 20, 43),
    ("hpp_power_kw", "HP pump power", 20, 51),
    ("stage_dp_bar", "Stage ΔP", 40, 43),
    ("hours_since_cip_h", "Since CIP", 40, 51),
    ("recovery_pct", "Recovery", 59, 2),
    ("permeate_pressure_bar", "Permeate press.", 59, 10),
    ("conc_valve_pct", "Conc. valve", 59, 43),
    ("cip_active", "CIP", 59, 51),
    ("permeate_flow_m3h", "Permeate flow", 80, 2),
    ("permeate_conductivity_uscm", "Permeate cond.", 80, 10),
    ("tank_level_pct", "Permeate tank", 80, 18),
    ("concentrate_flow_m3h", "Conc. flow", 80, 43),
    ("concentrate_pressure_bar", "Conc. pressure", 80, 51),
)
_GRID_W, _GRID_H = 100.0, 60.0
_BOX_W, _BOX_H = 17.0, 7.0


class SchematicWidget(QWidget):
    """The painted process schematic; ``displays`` holds what every box currently shows."""

    def __init__(self, catalog: ProcessCatalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("schematic")
        self._catalog = catalog
        self._boxes = [b for b in _RO_BOXES if b[0] in catalog]
        self.displays: dict[TagId, ValueDisplay] = {
            tag: describe(catalog.tag(tag), None, label) for tag, label, _, _ in self._boxes
        }
        self.vessels = 4 if catalog.process == "ro" else 2
        self.setMinimumSize(style.em(self, 30), style.em(self, 16))

    def sizeHint(self) -> QSize:
        return QSize(style.em(self, 60), style.em(self, 32))

    def update_from(self, source: StateSource) -> None:
        """Refresh every box from ``source`` and repaint."""
        for tag, label, _, _ in self._boxes:
            self.displays[tag] = describe(self._catalog.tag(tag), source(tag), label)
        self.update()

    # --- painting ------------------------------------------------------------------------------

    def _scale(self) -> tuple[float, float, float]:
        sx = self.width() / _GRID_W
        sy = self.height() / _GRID_H
        return sx, sy, min(sx, sy)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(self.rect(), style.BACKGROUND)
        sx, sy, _ = self._scale()

        def r(x: float, y: float, w: float, h: float) -> QRectF:
            return QRectF(x * sx, y * sy, w * sx, h * sy)

        def p(x: float, y: float) -> QPointF:
            return QPointF(x * sx, y * sy)

        pipe = QPen(style.PIPE, max(2.0, sy * 0.8))
        painter.setPen(pipe)
        # Feed → HP pump → membrane train; permeate leaves at the top, concentrate at the bottom.
        painter.drawLine(p(0, 31), p(24, 31))
        painter.drawLine(p(32, 31), p(40, 31))
        painter.drawLine(p(70, 27), p(100, 27))
        painter.drawLine(p(70, 35), p(72, 35))
        painter.drawLine(p(72, 35), p(72, 40))
        painter.drawLine(p(72, 40), p(100, 40))
        equipment = QPen(style.LINE, max(1.5, sy * 0.4))
        painter.setPen(equipment)
        painter.setBrush(QBrush(style.PANEL))
        # HP pump: a circle with a triangle.
        centre, radius = p(28, 31), 4 * min(sx, sy)
        painter.drawEllipse(centre, radius, radius)
        tri = QPainterPath()
        tri.moveTo(centre + QPointF(-radius * 0.5, -radius * 0.6))
        tri.lineTo(centre + QPointF(radius * 0.7, 0))
        tri.lineTo(centre + QPointF(-radius * 0.5, radius * 0.6))
        tri.closeSubpath()
        painter.drawPath(tri)
        # Membrane train: pressure vessels in parallel.
        top, height = 25.0, 12.0
        for i in range(self.vessels):
            h = height / self.vessels
            painter.drawRoundedRect(r(40, top + i * h + 0.4, 30, h - 0.8), sy * 0.8, sy * 0.8)
        painter.setPen(QPen(style.TEXT_DIM))
        font = QFont(self.font())
        font.setPixelSize(max(8, round(min(sx, sy) * 2.2)))
        painter.setFont(font)
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        painter.drawText(r(40, 37.5, 30, 3.5), Qt.AlignmentFlag.AlignCenter, "Membrane train")
        painter.drawText(r(1, 27, 16, 3.5), left, "Feed")
        painter.drawText(r(74, 28, 20, 3.5), left, "Permeate →")
        painter.drawText(r(74, 36, 20, 3.5), left, "Concentrate →")
        for tag, _, x, y in self._boxes:
            self._paint_box(painter, r(x, y, _BOX_W, _BOX_H), self.displays[tag])
        painter.end()

    def _paint_box(self, painter: QPainter, rect: QRectF, display: ValueDisplay) -> None:
        if display.bad:
            painter.setPen(QPen(style.BAD_DATA, 2, Qt.PenStyle.DashLine))
            painter.setBrush(QBrush(style.PANEL))
            painter.drawRect(rect)
            painter.setBrush(QBrush(style.BAD_DATA, Qt.BrushStyle.BDiagPattern))
            painter.drawRect(rect)
        else:
            painter.setPen(QPen(style.LINE, 1))
            painter.setBrush(QBrush(style.PANEL))
            painter.drawRect(rect)
        inner = rect.adjusted(rect.height() * 0.08, 0, -rect.height() * 0.08, 0)
        third = inner.height() / 3
        base = QFont(self.font())
        size = max(6.0, third * 0.62)
        base.setPixelSize(round(size))
        painter.setFont(base)
        painter.setPen(QPen(style.TEXT_DIM))
        painter.drawText(
            QRectF(inner.x(), inner.y(), inner.width(), third),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            display.label,
        )
        value_font = QFont(base)
        value_font.setBold(True)
        value_font.setPixelSize(round(size * 1.25))
        painter.setFont(value_font)
        painter.setPen(QPen(style.TEXT_DIM if display.bad else style.TEXT))
        painter.drawText(
            QRectF(inner.x(), inner.y() + third, inner.width(), third),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            display.text,
        )
        painter.setFont(base)
        painter.setPen(QPen(style.BAD_DATA if display.bad else style.TEXT_DIM))
        painter.drawText(
            QRectF(inner.x(), inner.y() + 2 * third, inner.width(), third),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            display.detail,
        )


class TagTableWidget(QTableWidget):
    """Every tag of the catalogue: value, unit, quality, age, description."""

    COLUMNS = ("Tag", "Value", "Quality", "Age", "Description")

    def __init__(self, catalog: ProcessCatalog, parent: QWidget | None = None) -> None:
        super().__init__(len(catalog.tags), len(self.COLUMNS), parent)
        self._catalog = catalog
        self.setObjectName("tag_table")
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self._cells: list[list[QTableWidgetItem]] = []
        for row, tdef in enumerate(catalog.tags):
            cells = [QTableWidgetItem(tdef.name), *(QTableWidgetItem("") for _ in range(3))]
            cells.append(QTableWidgetItem(tdef.description))
            for col, item in enumerate(cells):
                self.setItem(row, col, item)
            self._cells.append(cells)

    def update_from(self, source: StateSource) -> None:
        """Refresh values, qualities and ages."""
        for row, tdef in enumerate(self._catalog.tags):
            shown = describe(tdef, source(tdef.name))
            quality, _, age = shown.detail.partition(" · ")
            cells = self._cells[row]
            cells[1].setText(shown.text)
            cells[2].setText(quality)
            cells[3].setText(age)
            colour = style.BAD_DATA if shown.bad else style.TEXT
            for col in (1, 2, 3):
                cells[col].setForeground(colour)


class OverviewPanel(QWidget):
    """Schematic above the tag table, refreshed from ``source`` at ``refresh_hz``."""

    def __init__(
        self,
        catalog: ProcessCatalog,
        source: StateSource,
        refresh_hz: float = 2.0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("overview_panel")
        self._source = source
        self.schematic = SchematicWidget(catalog)
        self.table = TagTableWidget(catalog)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.schematic)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)
        self._timer = QTimer(self)
        self._timer.setInterval(round(1000 / refresh_hz))
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def refresh(self) -> None:
        """Pull the latest state of every tag."""
        self.schematic.update_from(self._source)
        if self.table.isVisible():
            self.table.update_from(self._source)

    def stop(self) -> None:
        """Stop the refresh timer."""
        self._timer.stop()
