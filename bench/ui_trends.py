"""Console trends and start-up: redraw time over 7 days of 1 Hz data, GUI-thread CPU at a 10 Hz
refresh, and cold start to the first live value on the demo plant.

Run: ``.venv/bin/python -m bench.ui_trends`` (offscreen by default; ``make bench`` sets
QT_QPA_PLATFORM=offscreen); ``--cold-start-only`` measures only the cold start. Goals (issue 8): redraw ≤ 30 ms per frame for 12 tags × 7 days × 1 Hz
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
from typing import TYPE_CHECKING

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

if TYPE_CHECKING:
    from app.controllers.trend_buffer import TrendBuffer

DAYS7 = 7 * 24 * 3600
N_TAGS = 12
FRAMES = 15
CPU_SECONDS = 10.0
COLD_STARTS = 3


def _filled_buffer() -> TrendBuffer:
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
# The steps of ``intelwatt console --demo`` (app.ui.app.run_console), plus a probe.
from app.config import default_site_path, load_site
from app.ui.app import application, build_console, start_demo_plant
site = load_site(default_site_path())
plant = start_demo_plant(site)
app = application()
from PySide6.QtCore import QTimer
console = build_console(site, demo=True, plant=plant)
console.window.show()
t_shown = time.monotonic()
t_core = []
console.started.add_done_callback(lambda f: t_core.append(time.monotonic()))
def check():
    d = console.window.overview.schematic.displays["permeate_flow_m3h"]
    console.window.overview.refresh()
    if not d.bad:
        core = t_core[0] if t_core else float("nan")
        tck = os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{console.plant.process.pid}/stat") as f:
            plant_cpu = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13]) / tck
        print("FIRST", t_shown - t_start, core - t_start, time.monotonic() - t_start,
              time.process_time(), plant_cpu, flush=True)
        app.quit()
timer = QTimer(); timer.timeout.connect(check); timer.start(10)
QTimer.singleShot(60000, app.quit)
app.exec()
console.stop()
"""


def _cold_start() -> tuple[float, float, float, float, float]:
    """Seconds from process start to: window shown, core started, first live value shown; then
    the CPU seconds the console and the plant process had used by then."""
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
            a, b, c, d, e = (float(x) for x in line.split()[1:])
            return a, b, c, d, e
    raise RuntimeError(f"the demo console did not show a live value:\n{out.stderr[-2000:]}")


def _cold_starts(n: int) -> tuple[float, ...]:
    """Median of ``n`` cold starts, each figure on its own (see ``_cold_start``)."""
    runs = [_cold_start() for _ in range(n)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(5))


def _cold_start_figures() -> dict[str, float]:
    """Run the cold starts, print them, and return their figures."""
    shown_s, core_s, first_s, console_cpu_s, plant_cpu_s = _cold_starts(COLD_STARTS)
    load = os.getloadavg()[0]
    print(
        f"cold start (demo plant, fresh data folder, median of {COLD_STARTS}, load {load:.1f}): "
        f"window shown {shown_s:.2f} s, core started {core_s:.2f} s, first live value "
        f"{first_s:.2f} s; CPU by then: console {console_cpu_s:.2f} s, plant process "
        f"{plant_cpu_s:.2f} s"
    )
    return {
        "cold_start_window_ms": round(shown_s * 1000),
        "cold_start_core_ms": round(core_s * 1000),
        "cold_start_first_value_ms": round(first_s * 1000),
        "cold_start_console_cpu_ms": round(console_cpu_s * 1000),
        "cold_start_plant_cpu_ms": round(plant_cpu_s * 1000),
    }


def main() -> None:
    if "--cold-start-only" in sys.argv:
        cold = _cold_start_figures()
        print(json.dumps({"bench": "ui_trends", **cold}))
        return
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

    print(f"{N_TAGS} tags x {DAYS7:,} points per tag (7 days at 1 Hz), 6 plots, 1600x900 px")
    print(f"{'view':<8}{'median ms':>12}{'p95 ms':>10}   (reload from the ring + full render)")
    for label, med, p95 in rows:
        print(f"{label:<8}{med:>12.1f}{p95:>10.1f}")
    print(f"levels of detail built on first open of the full buffer: {lod_build_ms:.0f} ms")
    print(f"GUI-thread CPU, 7-day view, 10 Hz timer, 1 Hz data: {cpu:.1f} % of one core")
    cold = _cold_start_figures()
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} on {os.cpu_count()} CPUs while measuring)")
    results.update(
        {
            "lod_first_build_ms": round(lod_build_ms),
            "gui_cpu_7d_10hz_pct": round(cpu, 1),
            **cold,
        }
    )
    print(json.dumps({"bench": "ui_trends", **results}))


if __name__ == "__main__":
    main()
