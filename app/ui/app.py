"""Start the Qt application and the main window."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QVBoxLayout, QWidget

from app import __version__
from app.config import SiteConfig

log = logging.getLogger(__name__)


class StatusWindow(QMainWindow):
    """The main window: site identity and the state of every connection."""

    def __init__(self, site: SiteConfig, site_path: Path, demo: bool) -> None:
        super().__init__()
        self.setWindowTitle(f"intelwatt console {__version__} - {site.site.name}")
        self.resize(900, 560)
        body = QWidget()
        layout = QVBoxLayout(body)
        title = QLabel(f"<h2>{site.site.name}</h2><p>{site.site.description}</p>")
        layout.addWidget(title)
        if site.plant.protocol == "opcua" and site.plant.opcua is not None:
            endpoint = site.plant.opcua.endpoint
        elif site.plant.modbus is not None:
            endpoint = f"modbus://{site.plant.modbus.host}:{site.plant.modbus.port}"
        else:
            endpoint = "?"
        self.connection_label = QLabel(
            f"Site file: {site_path}\nProcess: {site.site.process}\nPLC ({site.plant.protocol}): "
            f"{endpoint} - not connected\nMode: OFF (the PLC's base control runs the plant)\n"
            f"Cloud: {'enabled' if site.cloud.enabled else 'disabled'}\n"
            f"Demo plant: {'requested' if demo else 'no'}"
        )
        self.connection_label.setObjectName("connection_label")
        self.connection_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.connection_label)
        layout.addStretch(1)
        self.setCentralWidget(body)


def _choose_platform() -> None:
    """Fall back to the offscreen platform on a Linux machine without any display."""
    if sys.platform.startswith("linux") and not any(
        os.environ.get(var) for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")
    ):
        log.warning("no display found (DISPLAY/WAYLAND_DISPLAY unset): running offscreen")
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


def run_console(site: SiteConfig, site_path: Path, demo: bool) -> int:
    """Run the console until the window closes; returns the exit code."""
    _choose_platform()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = StatusWindow(site, site_path, demo)
    window.show()
    log.info("console started for site %s", site.site.name)
    return int(app.exec())
