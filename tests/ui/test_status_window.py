"""The console window opens on the demo site, offscreen, and `console --demo` does not crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.config import default_site_path, load_site
from app.ui.app import StatusWindow

ROOT = Path(__file__).resolve().parents[2]


def test_window_shows_site_and_connection(qtbot: QtBot) -> None:
    site = load_site(default_site_path())
    window = StatusWindow(site, default_site_path(), demo=True)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    text = window.connection_label.text()
    assert "opc.tcp://127.0.0.1:48400/intelwatt/plant/" in text
    assert "Mode: OFF" in text
    assert "demo-ro" in window.windowTitle()


def test_console_demo_process_starts_and_stays_up(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "INTELWATT_LOG_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        log_file = tmp_path / "intelwatt.log"
        while time.monotonic() < deadline and proc.poll() is None:
            if log_file.exists() and "console started" in log_file.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"console exited early: {proc.communicate()[1]}"
        assert "console started for site demo-ro" in log_file.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
