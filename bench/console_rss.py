"""Resident memory of the demo console over a long run (goal from issue 11: ≤ 400 MB after 1 h).

    .venv/bin/python -m bench.console_rss [--minutes 60] [--period-s 60] [--bundle dist/intelwatt]
        [--display xvfb|offscreen] [--log rss.jsonl]

Starts ``intelwatt console --demo`` (the frozen bundle if it exists, else the venv) with a throwaway
data folder and supervisor, and samples the resident set of the console *and every descendant
process* from /proc every ``--period-s``. ``--display xvfb`` runs it on a virtual X server
(``xvfb-run``; the X server itself is not counted), ``offscreen`` on Qt's offscreen platform.

The bundle is copied to a temporary folder first, so a ``make package`` during the run cannot
swap the executable under it. Each sample is appended to ``--log`` as it is taken, so a run that
is cut short still leaves its series. Figures: ``rss_start_mb`` (first sample, after a 60 s
start-up transient), ``rss_peak_mb``, ``rss_end_mb``, ``rss_growth_mb`` (end - start) and the
least-squares slope ``rss_slope_mb_per_h``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from the kernel's per-thread child lists."""
    found = [pid]
    i = 0
    while i < len(found):
        task_dir = Path(f"/proc/{found[i]}/task")
        try:
            tids = list(task_dir.iterdir())
        except (FileNotFoundError, ProcessLookupError):
            tids = []
        for tid in tids:
            try:
                children = (tid / "children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(int(c) for c in children if int(c) not in found)
        i += 1
    return found


def rss_mb(pid: int) -> float:
    """Resident set of one process in MB (0 if it has just exited)."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return int(fields[1]) * PAGE_KB / 1024


def find_console(root_pid: int, exe_name: str) -> int:
    """The console process under ``root_pid`` (xvfb-run is a shell wrapping it)."""
    for pid in descendants(root_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if any(exe_name.encode() in part for part in cmdline[:3]) and b"console" in cmdline:
            return pid
    raise RuntimeError(f"no console process ({exe_name}) under pid {root_pid}")


def launch(command: list[str], display: str, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start the demo console with a throwaway data folder and first supervisor."""
    env = {
        **os.environ,
        "INTELWATT_DATA_DIR": str(data_dir),
        "INTELWATT_USER": "bench",
        "INTELWATT_PASSWORD": "Bench-" + secrets.token_urlsafe(18),
    }
    if display == "offscreen":
        env["QT_QPA_PLATFORM"] = "offscreen"
        argv = [*command, "console", "--demo"]
    else:
        if shutil.which("xvfb-run") is None:
            raise SystemExit("xvfb-run not found: install xvfb or use --display offscreen")
        env["QT_QPA_PLATFORM"] = "xcb"
        argv = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", *command, "console", "--demo"]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process group the run started (xvfb-run, Xvfb, console)."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def slope_per_h(series: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS against time, in MB per hour."""
    n = len(series)
    mt = sum(t for t, _ in series) / n
    mr = sum(r for _, r in series) / n
    var = sum((t - mt) ** 2 for t, _ in series)
    if var == 0:
        return 0.0
    return sum((t - mt) * (r - mr) for t, r in series) / var * 3600


def run(
    command: list[str],
    exe_name: str,
    minutes: float,
    period_s: float,
    display: str,
    warmup_s: float,
    log: Path | None,
) -> list[tuple[float, float, int]]:
    """Sample (elapsed s, tree RSS MB, process count) until ``minutes`` have passed."""
    series: list[tuple[float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="intelwatt-rss-") as data_dir:
        proc = launch(command, display, Path(data_dir))
        try:
            time.sleep(warmup_s)
            if proc.poll() is not None:
                raise RuntimeError(f"the console exited with {proc.returncode} during start-up")
            console = find_console(proc.pid, exe_name)
            t0 = time.monotonic()
            while True:
                elapsed = time.monotonic() - t0
                if not Path(f"/proc/{console}").exists() or proc.poll() is not None:
                    raise RuntimeError(f"the console exited after {elapsed:.0f} s")
                pids = descendants(console)
                rss = sum(rss_mb(p) for p in pids)
                series.append((elapsed, rss, len(pids)))
                if log is not None:
                    with log.open("a") as fh:
                        fh.write(
                            json.dumps({"t_s": round(elapsed), "rss_mb": round(rss, 1)}) + "\n"
                        )
                print(
                    f"{elapsed / 60:6.1f} min  {rss:8.1f} MB  ({len(pids)} processes)", flush=True
                )
                if elapsed >= minutes * 60:
                    break
                time.sleep(max(0.0, period_s - (time.monotonic() - t0 - elapsed)))
        finally:
            stop(proc)
    return series


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / "intelwatt")
    parser.add_argument("--venv", action="store_true", help="run the venv console, not the bundle")
    parser.add_argument("--minutes", type=float, default=60.0, help="run length (default 60)")
    parser.add_argument("--period-s", type=float, default=60.0, help="sampling period (default 60)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="start-up transient (60)")
    parser.add_argument("--display", choices=("xvfb", "offscreen"), default="xvfb")
    parser.add_argument("--log", type=Path, help="append each sample to this JSON-lines file")
    args = parser.parse_args()
    if args.minutes <= 0 or args.period_s <= 0 or args.warmup_s < 0:
        parser.error("--minutes and --period-s must be > 0, --warmup-s >= 0")

    exe = args.bundle / "intelwatt"
    frozen = not args.venv and exe.is_file()
    with tempfile.TemporaryDirectory(prefix="intelwatt-rss-bundle-") as copy_dir:
        if frozen:
            copy = Path(copy_dir) / "intelwatt"
            shutil.copytree(args.bundle, copy, symlinks=True)
            command, exe_name = [str(copy / "intelwatt")], str(copy / "intelwatt")
        else:
            command, exe_name = [sys.executable, "-m", "app.cli"], "app.cli"
        series3 = run(
            command, exe_name, args.minutes, args.period_s, args.display, args.warmup_s, args.log
        )
    series = [(t, r) for t, r, _ in series3]
    start, end = series[0][1], series[-1][1]
    peak = max(r for _, r in series)
    slope = slope_per_h(series)
    result = {
        "bench": "console_rss",
        "rss_start_mb": round(start, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_mb": round(end - start, 1),
        "rss_slope_mb_per_h": round(slope, 1),
        "window_min": round(series[-1][0] / 60, 1),
        "samples": len(series),
        "frozen": frozen,
        "display": args.display,
    }
    rows = [
        ("console", "bundle (copy)" if frozen else "venv", ""),
        ("display", args.display, ""),
        ("window", f"{series[-1][0] / 60:.1f} min", f"{len(series)} samples"),
        ("RSS start", f"{start:.1f} MB", ""),
        ("RSS peak", f"{peak:.1f} MB", "goal <= 400 MB"),
        ("RSS end", f"{end:.1f} MB", "goal <= 400 MB"),
        ("growth (end - start)", f"{end - start:+.1f} MB", ""),
        ("slope (fit)", f"{slope:+.1f} MB/h", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
