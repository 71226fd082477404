"""The layer rules of architecture.md §4 hold, and the checks really catch violations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(BIN / "lint-imports"), "--no-cache", "--config", "pyproject.toml"], cwd)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """A scratch copy of the package and its lint configuration, safe to break."""
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_real_tree_keeps_its_layers() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_qt_outside_ui_is_caught_by_both_checks(tree_copy: Path) -> None:
    planted = tree_copy / "app" / "controllers" / "sneaky.py"
    planted.write_text(
        '"""Planted violation."""\n\nfrom PySide6.QtCore import QObject\n\n_ = QObject\n'
    )
    result = _lint_imports(tree_copy)
    assert result.returncode != 0
    assert "Qt only in app.ui" in result.stdout
    assert "app.controllers.sneaky -> PySide6" in result.stdout
    ruff = _run([str(BIN / "ruff"), "check", "--no-cache", "app/controllers/sneaky.py"], tree_copy)
    assert ruff.returncode != 0
    assert "TID251" in ruff.stdout and "app/ui only" in ruff.stdout


def test_upward_import_is_caught(tree_copy: Path) -> None:
    planted = tree_copy / "app" / "drivers" / "upward.py"
    planted.write_text(
        '"""Planted violation."""\n\nimport app.controllers\n\n_ = app.controllers\n'
    )
    result = _lint_imports(tree_copy)
    assert result.returncode != 0
    assert "app.drivers.upward -> app.controllers" in result.stdout


def test_bottom_layer_importing_the_plant_is_caught(tree_copy: Path) -> None:
    domain = tree_copy / "app" / "domain.py"
    domain.write_text(domain.read_text() + "\nimport app.plant.catalog  # noqa: E402\n")
    result = _lint_imports(tree_copy)
    assert result.returncode != 0
    assert "app.domain -> app.plant.catalog" in result.stdout


def test_heavy_module_level_import_is_caught_by_ruff(tree_copy: Path) -> None:
    planted = tree_copy / "app" / "plant" / "heavy.py"
    planted.write_text('"""Planted violation."""\n\nimport torch\n\n_ = torch\n')
    ruff = _run([str(BIN / "ruff"), "check", "--no-cache", "app/plant/heavy.py"], tree_copy)
    assert ruff.returncode != 0
    assert "TID253" in ruff.stdout


def test_headless_core_loads_neither_qt_nor_torch() -> None:
    probe = (
        "import sys, app.cli, app.config, app.domain, app.concurrency, app.plant.catalog, "
        "app.plant.plc_map, app.plant.models.base\n"
        "import pkgutil, importlib\n"
        "for pkg in ('app.drivers', 'app.controllers', 'app.agent_runtime', 'app.cloud'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "heavy = sorted(n for n in ('PySide6', 'torch', 'gymnasium', 'stable_baselines3', 'pyqtgraph')"
        " if n in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"headless core imported {result.stdout.strip()}"
