"""The headless container's install, outside Docker: ``pip install .`` without extras in a fresh
venv gives a working ``intelwatt`` with no Qt and no torch (library-notes.md §6.5).

The venv is cached under ``build/headless-venv`` and reinstalled when pyproject.toml or app/ is
newer than it, so a re-run takes seconds; the first run downloads nothing beyond the base
dependencies' wheels, but takes about a minute.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from app import __version__

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "build" / "headless-venv"
STAMP = VENV / ".installed"


def _stale() -> bool:
    if not STAMP.exists():
        return True
    built = STAMP.stat().st_mtime
    sources = [ROOT / "pyproject.toml", *(ROOT / "app").rglob("*.py")]
    return any(p.stat().st_mtime > built for p in sources)


@pytest.fixture(scope="module")
def headless_venv() -> Path:
    python = VENV / "bin" / "python"
    if _stale():
        if not python.exists():
            venv.create(VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", str(ROOT)],
            check=True,
            timeout=600,
        )
        STAMP.touch()
    return python


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_base_install_runs_headless_without_qt_or_torch(headless_venv: Path) -> None:
    bin_dir = headless_venv.parent
    version = subprocess.run(
        [str(bin_dir / "intelwatt"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"intelwatt-console {__version__}"
    help_text = subprocess.run(
        [str(bin_dir / "intelwatt"), "headless", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--site" in help_text
    absent = subprocess.run(
        [
            str(headless_venv),
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('PySide6', 'pyqtgraph', 'torch', 'gymnasium', "
            "'stable_baselines3') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert absent.stdout.strip() == "[]"
    # The core's whole import graph loads in the base install (the container's command).
    core = subprocess.run(
        [
            str(headless_venv),
            "-c",
            "import app.controllers.headless, app.selftest, sys; "
            "print(sorted(m for m in ('PySide6', 'torch') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT / "build",
    )
    assert core.returncode == 0, core.stderr
    assert core.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_base_install_self_test_skips_the_gui_and_passes_the_rest(
    headless_venv: Path, agent_site: object
) -> None:
    site = agent_site.site  # type: ignore[attr-defined]
    result = subprocess.run(
        [str(headless_venv), "-m", "app.selftest", "--site", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT / "build",
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped  gui" in result.stdout and "PySide6 is not installed" in result.stdout
    assert sys.executable != str(headless_venv)
