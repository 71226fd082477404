"""Build the real bundle and .deb, install it on this machine, self-test the installed tree, purge.

A real ``dpkg -i`` / ``dpkg -P`` rather than a fake root: the maintainer scripts (system user,
folders, permissions) only prove something when dpkg runs them. The test machine and CI are
disposable; the test refuses to touch a machine where the package is already installed, and needs
root. The bundle is reused when ``dist/intelwatt`` was already built from this version.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import __version__
from tests.packaging.conftest import AgentSite

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "intelwatt-console"
BUILD_TIMEOUT_S = 1200


def _installed() -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True
    )
    return result.returncode == 0 and "installed" in result.stdout.split()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


pytestmark = [
    pytest.mark.package,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a dpkg system"),
    pytest.mark.skipif(os.geteuid() != 0, reason="installing a .deb needs root"),
]


@pytest.fixture(scope="module")
def deb() -> Path:
    subprocess.run(
        ["bash", str(ROOT / "packaging" / "build.sh"), "--reuse-bundle", "--no-nsis"],
        cwd=ROOT,
        check=True,
        timeout=BUILD_TIMEOUT_S,
        env={**os.environ, "DEB_COMPRESSION": "fast"},  # xz of the 290 MB tree takes minutes
    )
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = ROOT / "dist" / f"{PACKAGE}_{__version__}_{arch}.deb"
    assert path.is_file()
    return path


@pytest.fixture
def installed(deb: Path) -> Iterator[Path]:
    if _installed():
        pytest.skip(f"{PACKAGE} is already installed here; not touching a real installation")
    subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True, timeout=300)
    try:
        yield Path("/opt/intelwatt-console")
    finally:
        subprocess.run(["dpkg", "-P", PACKAGE], check=True, capture_output=True, timeout=300)


@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_install_self_test_and_purge(installed: Path, agent_site: AgentSite) -> None:
    # Installed layout and maintainer-script effects.
    assert os.path.realpath("/usr/bin/intelwatt") == str(installed / "intelwatt")
    assert Path("/usr/share/applications/intelwatt-console.desktop").is_file()
    assert Path("/lib/systemd/system/intelwatt-headless.service").is_file()
    assert not Path(
        "/etc/systemd/system/multi-user.target.wants/intelwatt-headless.service"
    ).exists()  # installed, not enabled
    assert _user_exists("intelwatt")
    data = Path("/var/lib/intelwatt")
    assert data.is_dir() and data.stat().st_uid == pwd.getpwnam("intelwatt").pw_uid
    assert oct(Path("/etc/intelwatt/site.toml").stat().st_mode & 0o777) == "0o640"

    version = subprocess.run(
        ["/usr/bin/intelwatt", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"intelwatt-console {__version__}"
    check = subprocess.run(
        ["/usr/bin/intelwatt", "console", "--site", "/etc/intelwatt/site.toml", "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr

    # The installed tree runs the whole self-test (Qt offscreen, both drivers, agent, core).
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        ["/usr/bin/intelwatt", "--self-test", "--site", str(agent_site.site)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(frozen bundle)" in result.stdout
    assert "self-test passed" in result.stdout
    if (installed / "_internal" / "resources" / "agents" / "ro").is_dir():
        # The shipped agent and the shipped site file, exactly as the service would use them.
        shipped = subprocess.run(
            ["/usr/bin/intelwatt", "--self-test", "--site", "/etc/intelwatt/site.toml"],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=180,
        )
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr


def test_purge_leaves_nothing_behind(deb: Path) -> None:
    if _installed():
        pytest.skip(f"{PACKAGE} is already installed here; not touching a real installation")
    subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True, timeout=300)
    Path("/var/lib/intelwatt/ledger-from-a-run.sqlite").write_bytes(b"data")
    subprocess.run(["dpkg", "-r", PACKAGE], check=True, capture_output=True, timeout=300)
    # remove: program gone, configuration and data kept
    assert not Path("/opt/intelwatt-console").exists()
    assert not Path("/usr/bin/intelwatt").exists()
    assert Path("/etc/intelwatt/site.toml").is_file()
    assert Path("/var/lib/intelwatt/ledger-from-a-run.sqlite").is_file()
    subprocess.run(["dpkg", "-P", PACKAGE], check=True, capture_output=True, timeout=300)
    # purge: configuration, data, logs and the system user gone too
    for path in ("/etc/intelwatt", "/var/lib/intelwatt", "/var/log/intelwatt"):
        assert not Path(path).exists(), path
    assert not _user_exists("intelwatt")
    assert not _installed()
