"""Footprint of the packaged console: sizes, cold start, memory growth of a running demo console.

    .venv/bin/python -m bench.footprint [--minutes 2] [--runs 3] [--bundle dist/intelwatt]

Figures (goals from issue 11):
- ``bundle_mb``: the PyInstaller one-folder bundle (``make package`` builds it).
- ``installed_mb``: what the .deb installs (its ``Installed-Size``; goal ≤ 400 MB).
- ``deb_mb``: the .deb file.
- ``cold_start_ms``: spawn of the frozen executable to its first live PLC value: process start,
  imports, site file, Qt modules offscreen, OPC UA connect and a read of every tag. Timed from the
  arrival of the self-test's live ``driver.opcua`` step line, minus the embedded plant's start-up
  (a real plant is already running); median of ``--runs`` (goal ≤ 3 s). ``selftest_exit_ms`` is
  the process's shutdown after its last step, reported apart (before 2026-11-24 it was counted in
  the cold start). ``venv_cold_start_ms`` is the same from the development venv, and
  ``cold_start_x`` the ratio.
- ``rss_start_mb`` / ``rss_end_mb`` / ``rss_growth_mb_per_h``: ``intelwatt console --demo`` sampled
  every 5 s for ``--minutes``; the growth is a least-squares slope, ``rss_1h_mb`` its extrapolation
  to one hour (goal ≤ 400 MB). A short window is an estimate: ``bench.console_rss`` measures the
  full hour.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_mb(path: Path) -> float:
    """Apparent size of every regular file under ``path``, in MB."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 1e6


def deb_figures(dist: Path) -> tuple[float | None, float | None]:
    debs = sorted(dist.glob("intelwatt-console_*.deb"))
    if not debs:
        return None, None
    deb = debs[-1]
    out = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Installed-Size"], capture_output=True, text=True
    )
    if out.returncode != 0:  # being written by a concurrent build
        return None, None
    kb = out.stdout.strip()
    return deb.stat().st_size / 1e6, int(kb) * 1024 / 1e6


STEP_LINE = re.compile(r"^\s+(?P<status>\S+)\s+(?P<name>\S+)\s+(?P<seconds>[\d.]+) s\b")


@dataclass(frozen=True)
class ColdStart:
    """One self-test run, timed from its live step lines."""

    start_ms: float  # spawn -> first live value, embedded plant start-up excluded
    exit_ms: float  # last step line -> process gone (interpreter and Qt teardown)


def cold_start(command: list[str], site: Path | None) -> ColdStart:
    """Spawn → first live value, from the self-test's step lines as they are printed.

    The self-test flushes one line per finished step; the arrival time of the ``driver.opcua``
    line (the first read of every tag) minus the embedded plant's own start-up (its step's
    duration: a real plant is already running) is the start-up figure. The process's exit after
    the last step is reported apart: it is shutdown, not start-up.
    """
    args = [*command, "--cycles", "1"] + (["--site", str(site)] if site else [])
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    seen: dict[str, tuple[float, float]] = {}
    lines: list[str] = []
    last = start
    for line in proc.stdout:
        last = time.perf_counter()
        lines.append(line.rstrip())
        m = STEP_LINE.match(line)
        if m:
            seen[m["name"]] = (last - start, float(m["seconds"]))
    proc.wait(300)
    gone = time.perf_counter()
    if proc.returncode != 0 or "driver.opcua" not in seen or "plant" not in seen:
        raise RuntimeError(f"self-test failed ({proc.returncode}): " + " | ".join(lines[-12:]))
    first_read_s = seen["driver.opcua"][0]
    return ColdStart((first_read_s - seen["plant"][1]) * 1000, (gone - last) * 1000)


def median_cold_start(command: list[str], site: Path | None, runs: int) -> ColdStart:
    """Median over ``runs`` (the machine is shared: single runs swing by a second)."""
    results = [cold_start(command, site) for _ in range(runs)]
    return ColdStart(
        statistics.median(r.start_ms for r in results),
        statistics.median(r.exit_ms for r in results),
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def rss_series(
    command: list[str], minutes: float, data_dir: Path, period_s: float = 5.0
) -> list[tuple[float, float]]:
    # A throwaway data folder and first supervisor: the console's core refuses to start without
    # a user, and the bench must not touch the real ledger.
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "INTELWATT_DATA_DIR": str(data_dir),
        "INTELWATT_USER": "bench",
        "INTELWATT_PASSWORD": "Bench-" + secrets.token_urlsafe(18),
    }
    proc = subprocess.Popen(
        [*command, "console", "--demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    series: list[tuple[float, float]] = []
    try:
        time.sleep(period_s)  # start-up transient
        t0 = time.monotonic()
        while time.monotonic() - t0 <= minutes * 60:
            if proc.poll() is not None:
                raise RuntimeError(f"the console exited with {proc.returncode} during the run")
            series.append((time.monotonic() - t0, rss_mb(proc.pid)))
            time.sleep(period_s)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return series


def slope_per_h(series: list[tuple[float, float]]) -> float:
    n = len(series)
    mt = sum(t for t, _ in series) / n
    mr = sum(r for _, r in series) / n
    var = sum((t - mt) ** 2 for t, _ in series)
    if var == 0:
        return 0.0
    return sum((t - mt) * (r - mr) for t, r in series) / var * 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / "intelwatt")
    parser.add_argument(
        "--minutes", type=float, default=2.0, help="RSS window (default 2; 0 skips it)"
    )
    parser.add_argument("--site", type=Path, help="site for the cold-start self-test")
    parser.add_argument("--runs", type=int, default=3, help="cold-start runs, median (default 3)")
    args = parser.parse_args()

    exe = args.bundle / "intelwatt"
    frozen = exe.is_file()
    result: dict[str, object] = {"bench": "footprint"}
    rows: list[tuple[str, str, str]] = []
    if frozen:
        bundle = tree_mb(args.bundle)
        result["bundle_mb"] = round(bundle, 1)
        rows.append(("bundle (onedir)", f"{bundle:.1f} MB", ""))
    deb, installed = deb_figures(args.bundle.parent)
    if deb is not None and installed is not None:
        result["deb_mb"] = round(deb, 1)
        result["installed_mb"] = round(installed, 1)
        rows.append((".deb file", f"{deb:.1f} MB", ""))
        rows.append(("installed (.deb)", f"{installed:.1f} MB", "goal <= 400 MB"))

    venv_cmd = [sys.executable, "-m", "app.selftest"]
    venv = median_cold_start(venv_cmd, args.site, args.runs)
    result["venv_cold_start_ms"] = round(venv.start_ms)
    rows.append(("cold start, venv", f"{venv.start_ms:.0f} ms", f"median of {args.runs}"))
    app_cmd = [str(exe)] if frozen else [sys.executable, "-m", "app.cli"]
    if frozen:
        run = median_cold_start([str(exe), "--self-test"], args.site, args.runs)
        result["cold_start_ms"] = round(run.start_ms)
        result["cold_start_x"] = round(run.start_ms / venv.start_ms, 2)
        result["selftest_exit_ms"] = round(run.exit_ms)
        rows.append(("cold start, bundle", f"{run.start_ms:.0f} ms", "goal <= 3000 ms"))
        rows.append(("self-test exit, bundle", f"{run.exit_ms:.0f} ms", "not start-up"))
    if args.minutes <= 0:
        width = max(len(r[0]) for r in rows)
        for name, value, goal in rows:
            print(f"{name:<{width}}  {value:>12}  {goal}")
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="intelwatt-bench-") as data_dir:
        series = rss_series(app_cmd, args.minutes, Path(data_dir))
    growth = slope_per_h(series)
    end = series[-1][1]
    one_hour = end + growth * max(0.0, 1 - series[-1][0] / 3600)
    result.update(
        rss_start_mb=round(series[0][1], 1),
        rss_end_mb=round(end, 1),
        rss_growth_mb_per_h=round(growth, 1),
        rss_1h_mb=round(one_hour, 1),
        rss_window_s=round(series[-1][0]),
    )
    where = "bundle" if frozen else "venv"
    rows.append((f"console RSS ({where}), start", f"{series[0][1]:.1f} MB", ""))
    rows.append((f"console RSS after {series[-1][0]:.0f} s", f"{end:.1f} MB", ""))
    rows.append(("RSS growth (fit)", f"{growth:.1f} MB/h", ""))
    rows.append(("RSS at 1 h (extrapolated)", f"{one_hour:.1f} MB", "goal <= 400 MB"))

    width = max(len(r[0]) for r in rows)
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>12}  {goal}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
