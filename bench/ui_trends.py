"""Console trends and start-up: redraw time over 7 days of 1 Hz data, GUI-thread CPU at a 10 Hz
refresh, and cold start to the first live value on the demo plant.

Run: ``.venv/bin/python -m bench.ui_trends`` (offscreen by default; ``make bench`` sets
QT_QPA_PLATFORM=offscreen). Goals (issue 8): redraw ≤ 30 ms per frame for 12 tags × 7 days × 1 Hz
(604,800 points per tag); cold start to the first live value ≤ 3 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

DAYS7 = 7 * 24 * 3600
N_TAGS = 12
FRAMES = 15
CPU_SECONDS = 10.0


def _filled_buffer():  # type: ignore[no-untyped-def]
    from app.controllers.trend_buffer import TrendBuffer
    from app.ui.trends_panel import RO_PLOTS

    tags = [t for spec in RO_PLOTS for t in spec.tags]
    assert len(tags) == N_TAGS, tags
    buf = TrendBuffer(tags, DAYS7)
    rng = np.random.default_rng(1)
    t_end = time.monotonic()
    times = t_end - DAYS7 + np.arange(DAYS7, dtype=np.float64)
    walk = np.cumsum(rng.normal(0, 0.05, (DAYS7, N_TAGS)), axis=0).astype(np.float32) + 20
    walk[DAYS7 // 3 : DAYS7 // 3 + 600] = np.nan  # a 10-minute gap (driver down)
    # Fill the ring through its private arrays: appending 604,800 rows one by one takes minutes
    # and measures nothing about drawing.
    buf._times[:] = times
    buf._values[:] = walk
    buf._written = buf._claimed = DAYS7
    return buf


def _redraw_ms(panel, app, span_s: float) -> list[float]:  # type: ignore[no-untyped-def]
    panel.set_span(span_s)
    app.processEvents()
    out = []
    for _ in range(FRAMES):
        x0, x1 = panel.visible_range()
        t0 = time.perf_counter()
        panel.load(x0, x1)
        panel.graphics.grab()  # renders every plot into a pixmap: the full paint cost
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _gui_cpu(panel, app, buf) -> float:  # type: ignore[no-untyped-def]
    """GUI-thread CPU share with the panel's 10 Hz timer running and a writer appending 1 row/s."""
    from PySide6.QtCore import QTimer

    stop = threading.Event()
    tags = buf.tags

    def writer() -> None:
        rng = np.random.default_rng(2)
        while not stop.wait(1.0):
            buf.append(time.monotonic(), dict(zip(tags, rng.normal(20, 1, len(tags)), strict=True)))

    thread = threading.Thread(target=writer, name="bench-writer")
    panel.set_span(float(DAYS7))
    panel.show()
    thread.start()
    cpu0, wall0 = time.thread_time(), time.monotonic()
    QTimer.singleShot(int(CPU_SECONDS * 1000), app.quit)
    app.exec()
    cpu = time.thread_time() - cpu0
    wall = time.monotonic() - wall0
    stop.set()
    thread.join()
    return 100.0 * cpu / wall


_CHILD = r"""
import os, sys, time
t_start = float(sys.argv[1])
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QTimer
from app.config import default_site_path, load_site
from app.ui.app import build_console
from app.ui.style import load_theme
from app.ui.pyside_guard import guard_none_refcount
guard_none_refcount()
t_import = time.monotonic()
app = QApplication([])
load_theme(app)
console = build_console(load_site(default_site_path()), demo=True)
console.window.show()
t_built = time.monotonic()
def check():
    d = console.window.overview.schematic.displays["permeate_flow_m3h"]
    console.window.overview.refresh()
    if not d.bad:
        print("FIRST", t_import - t_start, t_built - t_start, time.monotonic() - t_start, flush=True)
        app.quit()
timer = QTimer(); timer.timeout.connect(check); timer.start(10)
QTimer.singleShot(60000, app.quit)
app.exec()
console.stop()
"""


def _cold_start() -> tuple[float, float, float]:
    """Seconds from process start to: imports done, window built, first live value shown."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "INTELWATT_DATA_DIR": str(Path(tmp) / "data"),
            "INTELWATT_LOG_DIR": tmp,
            "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
        }
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(t0)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    for line in out.stdout.splitlines():
        if line.startswith("FIRST"):
            _, a, b, c = line.split()
            return float(a), float(b), float(c)
    raise RuntimeError(f"the demo console did not show a live value:\n{out.stderr[-2000:]}")


def main() -> None:
    from PySide6.QtWidgets import QApplication

    from app.plant.catalog import RO_CATALOG
    from app.ui.pyside_guard import guard_none_refcount
    from app.ui.style import load_theme
    from app.ui.trends_panel import TrendsPanel

    guard_none_refcount()  # as run_console does
    app = QApplication.instance() or QApplication([])
    load_theme(app)  # type: ignore[arg-type]
    buf = _filled_buffer()
    panel = TrendsPanel(buf, RO_CATALOG, refresh_hz=10.0)
    panel.stop()  # frames below are driven by hand; the CPU figure restarts the timer
    panel.resize(1600, 900)
    panel.show()
    t0 = time.perf_counter()
    panel.lod.update()  # first open of a full 7-day buffer: build the levels of detail
    lod_build_ms = (time.perf_counter() - t0) * 1000
    app.processEvents()
    rows = []
    results: dict[str, float] = {}
    for label, span in (("1 h", 3600.0), ("24 h", 86400.0), ("7 d", float(DAYS7))):
        times = _redraw_ms(panel, app, span)
        med = statistics.median(times)
        p95 = sorted(times)[int(0.95 * (len(times) - 1))]
        rows.append((label, med, p95))
        key = label.replace(" ", "")
        results[f"redraw_{key}_median_ms"] = round(med, 1)
        results[f"redraw_{key}_p95_ms"] = round(p95, 1)
    panel.start()
    cpu = _gui_cpu(panel, app, buf)
    panel.stop()
    imports_s, built_s, first_s = _cold_start()

    print(f"{N_TAGS} tags x {DAYS7:,} points per tag (7 days at 1 Hz), 6 plots, 1600x900 px")
    print(f"{'view':<8}{'median ms':>12}{'p95 ms':>10}   (reload from the ring + full render)")
    for label, med, p95 in rows:
        print(f"{label:<8}{med:>12.1f}{p95:>10.1f}")
    print(f"levels of detail built on first open of the full buffer: {lod_build_ms:.0f} ms")
    print(f"GUI-thread CPU, 7-day view, 10 Hz timer, 1 Hz data: {cpu:.1f} % of one core")
    print(
        f"cold start (demo plant, fresh data folder): imports {imports_s:.2f} s, window and core "
        f"built {built_s:.2f} s, first live value {first_s:.2f} s"
    )
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} on {os.cpu_count()} CPUs while measuring)")
    results.update(
        {
            "lod_first_build_ms": round(lod_build_ms),
            "gui_cpu_7d_10hz_pct": round(cpu, 1),
            "cold_start_imports_ms": round(imports_s * 1000),
            "cold_start_built_ms": round(built_s * 1000),
            "cold_start_first_value_ms": round(first_s * 1000),
        }
    )
    print(json.dumps({"bench": "ui_trends", **results}))


if __name__ == "__main__":
    main()
