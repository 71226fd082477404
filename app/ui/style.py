"""ISA-101 colours for custom painting and plots, and loading of the QSS theme.

Normal values are drawn in dark grey on grey. Colour appears only when something is abnormal: bad or
stale data (magenta outline, hatched), alarm priorities (red, yellow, blue) and the AI's state.
"""

from __future__ import annotations

import logging

from PySide6.QtGui import QColor, QFont, QFontMetrics
from PySide6.QtWidgets import QApplication, QWidget

from app.config import resources_dir
from app.domain import AlarmPriority, Quality

log = logging.getLogger(__name__)

BACKGROUND = QColor("#d6d6d6")
PANEL = QColor("#e2e2e2")
LINE = QColor("#6a6a6a")
PIPE = QColor("#8c8c8c")
TEXT = QColor("#1e1e1e")
TEXT_DIM = QColor("#6a6a6a")
BAD_DATA = QColor("#b000b0")
"""Outline of a value that is bad, stale or missing (ISA-101: a data-quality colour, not an alarm)."""
AI = QColor("#4a6a99")
"""The AI's proposals and state (recommended setpoints, decision markers)."""
APPLIED = QColor("#1e1e1e")
ALARM_COLOURS: dict[AlarmPriority, QColor] = {
    AlarmPriority.CRITICAL: QColor("#c00000"),
    AlarmPriority.HIGH: QColor("#c00000"),
    AlarmPriority.MEDIUM: QColor("#f2c400"),
    AlarmPriority.LOW: QColor("#4fa3d1"),
}
TREND_PENS = ("#1e1e1e", "#505050", "#7a7a7a", "#2f2f6f", "#5a3a1a", "#3a5a3a")
"""Greys and muted tones: trend lines are normal data, not alarms."""


def quality_is_bad(quality: Quality | None) -> bool:
    """True if a value of this quality must be shown as not trustworthy."""
    return quality is None or quality is not Quality.GOOD


def em(widget: QWidget | None = None, factor: float = 1.0) -> int:
    """``factor`` times the height of the widget's (or the application's) font, in pixels."""
    font = widget.font() if widget is not None else QFont()
    return max(1, round(QFontMetrics(font).height() * factor))


def load_theme(app: QApplication) -> None:
    """Apply ``resources/theme/console.qss`` (missing file: log and keep Qt's default look)."""
    path = resources_dir() / "theme" / "console.qss"
    try:
        app.setStyleSheet(path.read_text(encoding="utf-8"))
    except OSError as exc:
        log.warning("theme %s not loaded: %s", path, exc)


__all__ = [
    "AI",
    "ALARM_COLOURS",
    "APPLIED",
    "BACKGROUND",
    "BAD_DATA",
    "LINE",
    "PANEL",
    "PIPE",
    "TEXT",
    "TEXT_DIM",
    "TREND_PENS",
    "em",
    "load_theme",
    "quality_is_bad",
]
