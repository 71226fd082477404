"""``intelwatt console --demo`` as a process: starts, shows live values, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from app.config import default_site_path, load_site
from app.controllers.core import CoreOptions
from app.ui.app import build_console
from app.ui.demo import DemoPlant, DemoPlantError, InProcessPlant, demo_site
from tests.ui.conftest import CHEAP

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_console_runs_and_hands_back_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "INTELWATT_LOG_DIR": str(tmp_path),
        "INTELWATT_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_file = tmp_path / "intelwatt.log"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            text = log_file.read_text() if log_file.exists() else ""
            if "console started" in text and "mode off -> advisory" in text:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"console exited early: {proc.communicate()[1][-3000:]}"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    text = log_file.read_text()
    assert "console started for site demo-ro" in text
    assert "mode advisory -> off: control core shutting down" in text
    assert (tmp_path / "data" / "demo" / "users.json").exists()
    # The demo plant ran in its own process and is gone with the console.
    match = re.search(r"demo plant process (\d+) serving ro", text)
    assert match is not None, text[-2000:]
    pid = int(match.group(1))
    assert pid != proc.pid
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_a_core_that_cannot_start_is_reported_in_the_open_window(
    qtbot: QtBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = demo_site(load_site(default_site_path()))
    runner = InProcessPlant({})
    runner.ready.set_exception(DemoPlantError("the demo plant did not start: port 4840 taken"))
    settings = QSettings(str(tmp_path / "console.ini"), QSettings.Format.IniFormat)
    options = CoreOptions(data_dir=tmp_path / "data", scrypt=CHEAP)
    console = build_console(
        site, demo=True, plant=DemoPlant(runner, site), options=options, settings=settings
    )
    try:
        qtbot.waitUntil(console.started.done, timeout=30_000)
        assert isinstance(console.started.exception(), DemoPlantError)
        window = console.window
        qtbot.waitUntil(lambda: "CONTROL CORE NOT STARTED" in window.health_label.text())
        assert "port 4840 taken" in window.failure_box.text()
        assert window.isEnabled()  # the window stays usable to read why
    finally:
        console.stop()
    assert console.core.agent is None  # the core never started
    caplog.clear()  # the error logged above is the expected one
