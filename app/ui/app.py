"""Start the Qt application: (demo plant →) control core → main window; stop in reverse order."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.config import SiteConfig
from app.controllers.core import ControlCore, CoreError, CoreOptions
from app.ui.core_link import CoreLink
from app.ui.main_window import MainWindow
from app.ui.pyside_guard import guard_none_refcount
from app.ui.style import load_theme

if TYPE_CHECKING:
    from app.ui.demo import DemoPlant

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
PLANT_START_TIMEOUT_S = 60.0
DEMO_FIRST_STEP_MS = 8000
"""In demo mode the agent's first step runs this soon after start instead of one period later."""


def _choose_platform() -> None:
    """Fall back to the offscreen platform on a Linux machine without any display."""
    if sys.platform.startswith("linux") and not any(
        os.environ.get(var) for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")
    ):
        log.warning("no display found (DISPLAY/WAYLAND_DISPLAY unset): running offscreen")
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


@dataclass
class Console:
    """Everything ``run_console`` starts, so that it can be stopped in order (tests use it too)."""

    core: ControlCore
    link: CoreLink
    window: MainWindow
    plant: DemoPlant | None = None

    def stop(self) -> None:
        """Close the window, stop the core, then the demo plant."""
        self.window.shutdown()
        self.window.close()
        self.link.close()
        self.core.stop()
        if self.plant is not None:
            self.plant.stop()


def build_console(
    site: SiteConfig,
    *,
    demo: bool,
    options: CoreOptions | None = None,
    settings: QSettings | None = None,
    demo_first_step: bool = True,
) -> Console:
    """Start the (demo plant and the) core and open the window; raises ``CoreError``.

    In demo mode the plant server starts in the background while the core and the window are
    built, and the core starts once the plant listens (cold start to first live value).
    """
    plant: DemoPlant | None = None
    plant_up: Future[None] | None = None
    hint = ""
    if demo:
        from app.ui.demo import (
            demo_data_dir,
            demo_hint,
            demo_site,
            ensure_demo_users,
            prepare_demo_plant,
        )

        plant = prepare_demo_plant(demo_site(site))
        plant_up = plant.start_in_background()
        site, hint = plant.site, demo_hint()
        data_dir = options.data_dir if options and options.data_dir else demo_data_dir()
        options = dataclasses.replace(options or CoreOptions(), data_dir=data_dir)
    core: ControlCore | None = None
    link: CoreLink | None = None
    try:
        if demo and options is not None and options.data_dir is not None:
            ensure_demo_users(options.data_dir)
        core = ControlCore(site, options)
        link = CoreLink(core)
        window = MainWindow(link, demo_hint=hint, settings=settings)
        if plant_up is not None:
            plant_up.result(PLANT_START_TIMEOUT_S)
        core.start()
    except BaseException:
        if link is not None:
            link.close()
        if core is not None:
            core.stop()
        if plant is not None:
            if plant_up is not None:
                plant_up.exception(PLANT_START_TIMEOUT_S)
            plant.stop()
        raise
    window.core_started()
    console = Console(core, link, window, plant)
    if demo and demo_first_step and core.agent is not None:
        agent = core.agent
        QTimer.singleShot(DEMO_FIRST_STEP_MS, window, lambda: link.in_context(agent.step))
    return console


def run_console(site: SiteConfig, site_path: Path, demo: bool) -> int:
    """Run the console until the window closes; returns the exit code."""
    _choose_platform()
    guard_none_refcount()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("intelwatt console")
    app.setOrganizationName("intelwatt")
    load_theme(app)
    try:
        console = build_console(site, demo=demo)
    except CoreError as exc:
        log.error("console cannot start: %s", exc)
        box = QMessageBox(QMessageBox.Icon.Critical, "intelwatt console", str(exc))
        box.exec()
        return EXIT_FAILURE
    # Ctrl+C / SIGTERM close the window normally (the core hands back to base control on stop).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: app.quit())
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: None)  # lets Python run signal handlers during exec()
    heartbeat.start(250)
    console.window.show()
    log.info("console started for site %s (%s)", site.site.name, site_path)
    try:
        code = int(app.exec())
    finally:
        heartbeat.stop()
        console.stop()
    return code if code else EXIT_OK


__all__ = ["Console", "build_console", "run_console"]
