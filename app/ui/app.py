"""Start the Qt application: (demo plant →) window → control core in the background; stop in reverse.

Cold start (issue 8: ≤ 3 s to the first live value) is a race against three slow things: importing
the console (Qt, pyqtgraph, the control core with asyncua and onnxruntime), building the demo
plant's OPC UA server, and connecting to it. So ``run_console`` starts the demo plant's child
process before importing anything heavy, builds and shows the window as soon as the imports are
done, and starts the control core on a background thread once the plant listens; the window fills
in when the core reports back through the bridge. The GUI thread never waits for the plant, the
core or the PLC. This module imports only the standard library at import time for the same reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QWidget

    from app.config import SiteConfig
    from app.controllers.core import ControlCore, CoreOptions
    from app.ui.core_link import CoreLink
    from app.ui.demo import DemoPlant
    from app.ui.main_window import MainWindow

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
    """Everything ``build_console`` starts, so that it can be stopped in order (tests use it too).

    Attributes:
        core: The control core (started in the background; see ``started``).
        link: The window's non-blocking access to the core.
        window: The main window.
        plant: The demo plant, if any.
        started: Resolved once the core runs (or failed with why it could not start).
    """

    core: ControlCore
    link: CoreLink
    window: MainWindow
    plant: DemoPlant | None = None
    started: Future[None] = field(default_factory=Future)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _starter: threading.Thread | None = None

    def stop(self) -> None:
        """Close the window, stop the core (after its start finished), then the demo plant."""
        self._cancel.set()
        self.window.shutdown()
        self.window.close()
        self.link.close()
        if self._starter is not None:
            self._starter.join(PLANT_START_TIMEOUT_S)
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
    plant: DemoPlant | None = None,
) -> Console:
    """Build the core and the window; the core starts in the background (``Console.started``).

    Args:
        site: The site.
        demo: Serve the site's process from an embedded simulated plant on loopback.
        options: Core build options.
        settings: Where the window keeps its state.
        demo_first_step: In demo mode, run the agent's first step soon after the start.
        plant: A demo plant already starting (``run_console`` starts it before the imports).

    Raises:
        CoreError: The core cannot be built (data folder, users, limits, driver).
    """
    from PySide6.QtCore import QTimer

    hint = ""
    if demo:
        from app.ui.demo import demo_hint

        if plant is None:
            plant = start_demo_plant(site)
        site, hint = plant.site, demo_hint()
    # Building the core (users file and its password hashing, the 7-day trend buffers) runs on
    # another thread while this one imports and builds the window.
    building = _build_core(site, options, demo)
    import pyqtgraph  # noqa: F401 - imported here, in parallel with the core's imports

    from app.ui.core_link import CoreLink
    from app.ui.main_window import MainWindow

    _wait_processing_events(building)
    try:
        core = building.result()
    except BaseException:
        if plant is not None:
            plant.stop()
        raise
    link = CoreLink(core)
    window = MainWindow(link, demo_hint=hint, settings=settings)
    console = Console(core, link, window, plant)

    def on_started() -> None:
        if console._cancel.is_set():
            return
        window.core_started()
        if demo and demo_first_step and core.agent is not None:
            agent = core.agent
            QTimer.singleShot(DEMO_FIRST_STEP_MS, window, lambda: link.in_context(agent.step))

    def on_failed(message: str) -> None:
        if not console._cancel.is_set():
            window.core_failed(message)

    def start() -> None:
        try:
            if plant is not None:
                _wait_for_plant(plant, console._cancel)
            if console._cancel.is_set():
                raise RuntimeError("the console closed before the control core started")
            core.start()
        except BaseException as exc:  # noqa: BLE001 - shown in the window
            log.error("the control core did not start: %s", exc)
            console.started.set_exception(exc)
            window.bridge.post(partial(on_failed, str(exc)))
            return
        console.started.set_result(None)
        window.bridge.post(on_started)

    console._starter = threading.Thread(target=start, name="console-start", daemon=True)
    console._starter.start()
    return console


def _build_core(site: SiteConfig, options: CoreOptions | None, demo: bool) -> Future[ControlCore]:
    """Construct the control core on a short-lived thread (demo: in the demo's data folder)."""
    done: Future[ControlCore] = Future()

    def build() -> None:
        try:
            from app.controllers.core import ControlCore, CoreOptions

            opts = options
            if demo:
                from app.ui.demo import demo_data_dir, ensure_demo_users

                data_dir = opts.data_dir if opts and opts.data_dir else demo_data_dir()
                opts = dataclasses.replace(opts or CoreOptions(), data_dir=data_dir)
                ensure_demo_users(data_dir)
            done.set_result(ControlCore(site, opts))
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            done.set_exception(exc)

    threading.Thread(target=build, name="core-build", daemon=True).start()
    return done


def _wait_processing_events(future: Future[ControlCore]) -> None:
    """Wait for ``future`` while Qt keeps painting (before the main window exists)."""
    from PySide6.QtCore import QCoreApplication

    app = QCoreApplication.instance()
    while not future.done():
        if app is not None:
            app.processEvents()
        try:
            future.exception(0.02)
        except TimeoutError:
            continue


def start_demo_plant(site: SiteConfig) -> DemoPlant:
    """Choose the demo plant's ports and start its process (returns at once)."""
    from app.ui.demo import demo_site, prepare_demo_plant

    plant = prepare_demo_plant(demo_site(site))
    plant.start_in_background()
    return plant


def _wait_for_plant(plant: DemoPlant, cancel: threading.Event) -> None:
    """Block the (starter) thread until the plant listens, the console closes or time runs out."""
    waited = 0.0
    while not cancel.is_set():
        try:
            plant.ready.result(0.1)
            return
        except TimeoutError:
            waited += 0.1
            if waited >= PLANT_START_TIMEOUT_S:
                raise TimeoutError(
                    f"the demo plant did not listen within {PLANT_START_TIMEOUT_S:g} s"
                ) from None


def application() -> QApplication:
    """The themed QApplication of the console (created on first call)."""
    from PySide6.QtWidgets import QApplication

    from app.ui.pyside_guard import guard_none_refcount
    from app.ui.style import load_theme

    guard_none_refcount()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("intelwatt console")
    app.setOrganizationName("intelwatt")
    load_theme(app)
    return app


def _splash(site_name: str) -> QWidget:
    """A small frameless note shown while the window is built (well under a second in)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QLabel

    label = QLabel(f"intelwatt console · {site_name}\nstarting…")
    label.setObjectName("splash")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setWindowFlags(Qt.WindowType.SplashScreen | Qt.WindowType.FramelessWindowHint)
    label.setMargin(24)
    label.show()
    QApplication.processEvents()
    return label


def run_console(site: SiteConfig, site_path: Path, demo: bool) -> int:
    """Run the console until the window closes; returns the exit code."""
    _choose_platform()
    # The plant's process builds its OPC UA server on another core while this one imports Qt,
    # pyqtgraph and the control core.
    plant = start_demo_plant(site) if demo else None
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QMessageBox

    app = application()
    splash = _splash(site.site.name)
    from app.controllers.core import CoreError

    try:
        console = build_console(site, demo=demo, plant=plant)
    except CoreError as exc:
        splash.close()
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
    splash.close()

    def report(started: Future[None]) -> None:
        if started.exception() is None:
            log.info("console started for site %s (%s)", site.site.name, site_path)

    console.started.add_done_callback(report)
    try:
        code = int(app.exec())
    finally:
        heartbeat.stop()
        console.stop()
    return code if code else EXIT_OK


def smoke_test(site: SiteConfig, site_path: Path) -> str:
    """Build the console window offscreen against an unstarted core (``intelwatt --self-test``).

    Proves the Qt libraries, the platform plugin, pyqtgraph and every panel load; nothing connects
    and nothing is written outside a temporary folder.
    """
    import secrets
    import tempfile

    from app.controllers.auth import ScryptParams
    from app.controllers.core import ControlCore, CoreOptions
    from app.ui.core_link import CoreLink
    from app.ui.main_window import MainWindow

    app = application()
    with tempfile.TemporaryDirectory(prefix="intelwatt-selftest-") as tmp:
        from PySide6.QtCore import QSettings

        options = CoreOptions(
            data_dir=Path(tmp),
            scrypt=ScryptParams(n=2**4, r=1, p=1),
            initial_user=("selftest", f"Selftest-{secrets.token_hex(12)}"),
        )
        core = ControlCore(site, options)
        link = CoreLink(core)
        settings = QSettings(str(Path(tmp) / "console.ini"), QSettings.Format.IniFormat)
        window = MainWindow(link, settings=settings)
        try:
            window.resize(1366, 768)
            for index in range(window.tabs.count()):
                window.tabs.setCurrentIndex(index)
            image = window.grab()
            app.processEvents()
            return (
                f"console window built offscreen for {site_path.name}: "
                f"{window.tabs.count()} views, {image.width()}x{image.height()} px"
            )
        finally:
            window.shutdown()
            window.close()
            link.close()
            core.stop()


__all__ = [
    "Console",
    "application",
    "build_console",
    "run_console",
    "smoke_test",
    "start_demo_plant",
]
