"""``intelwatt console --demo`` as a process: starts, shows live values, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
