"""Build the wheel, install it (not editable) into a fresh venv and self-test the installed copy.

The source tree is copied first so the build never touches the shared ``build/`` folder, and the
copy leaves out ``resources/keys`` only by virtue of pyproject's package configuration. Offline:
the wheel goes in with ``--no-deps --no-index``; the runtime dependencies come from the
development venv's site-packages, appended to the new venv's path by a ``.pth`` file written
*after* the install (so pip never sees, or tries to replace, the development venv's editable
install). Paths in a ``.pth``-added folder are not themselves processed, so the editable finder
of the development venv stays off and ``app`` can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEVER_SHIPPED = ("keys",)

pytestmark = [pytest.mark.package, pytest.mark.slow]


def _shipped_resources() -> set[str]:
    """Every file under resources/ that an install must carry, as wheel paths."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "resources").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.relative_to(ROOT / "resources").parts[0] not in NEVER_SHIPPED
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("app", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(out), str(src)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (whl,) = out.glob("intelwatt_console-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", "--no-compile", str(wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dev_site = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "zz_dev_site_packages.pth").write_text(dev_site + "\n", encoding="utf-8")
    return root


def test_wheel_carries_resources_but_not_the_private_key(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if n.startswith("resources/")}
    missing = _shipped_resources() - names
    assert not missing, f"pyproject [tool.setuptools.package-data] misses {sorted(missing)}"
    assert not [n for n in names if n.split("/")[1] in NEVER_SHIPPED], "private key in the wheel"
    assert "resources/sites/demo-ro.toml" in names
    assert any(n.startswith("resources/agents/ro/") and n.endswith(".onnx") for n in names)


def test_installed_self_test_uses_the_installed_resources(venv: Path, tmp_path: Path) -> None:
    python = venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c",
         "import app, app.config; print(app.__file__); print(app.config.resources_dir())"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    assert not where[0].startswith(str(ROOT)), f"app imported from the checkout: {where[0]}"
    assert Path(where[1]).is_relative_to(venv), f"resources resolved outside the venv: {where[1]}"

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    # cwd outside the checkout: relative site paths must resolve against the install, not cwd.
    result = subprocess.run(
        [str(venv / "bin" / "intelwatt"), "--self-test", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert result.stdout.strip(), f"no report; stderr:\n{result.stderr[-2000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and report["ok"], f"self-test failed: {report}"
    details = {s["name"]: s["detail"] for s in report["steps"]}
    assert str(venv) in details["site"], details["site"]
    assert str(venv) in details["agent.verify"], details["agent.verify"]
