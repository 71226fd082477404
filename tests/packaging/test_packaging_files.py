"""Packaging files: one version everywhere, the .deb layout and maintainer scripts, the NSIS script.

The .deb and NSIS builds here use a tiny stand-in bundle, so they take about a second; the real
bundle is built and installed by ``test_deb_install.py`` (slow).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app import __version__

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
sys_path_version_info = PACKAGING / "version_info.py"


def _version_info() -> tuple[str, str]:
    run = [str(ROOT / ".venv" / "bin" / "python"), str(sys_path_version_info)]
    plain = subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()
    four = subprocess.run([*run, "--windows"], capture_output=True, text=True, check=True)
    return plain, four.stdout.strip()


def test_version_info_reads_app_version() -> None:
    plain, four = _version_info()
    assert plain == __version__
    assert four == ".".join(__version__.split(".")[:3]) + ".0"


def test_no_packaging_file_hard_codes_the_version() -> None:
    literal = re.compile(r"\b\d+\.\d+\.\d+\b")
    for path in (
        PACKAGING / "windows" / "intelwatt.nsi",
        PACKAGING / "linux" / "debian" / "control.in",
        PACKAGING / "pyinstaller" / "intelwatt.spec",
    ):
        text = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(";"))
        assert not literal.findall(code), f"{path.name} hard-codes a version"
    assert (
        "from app import __version__" in (PACKAGING / "pyinstaller" / "intelwatt.spec").read_text()
    )
    assert "Version: @VERSION@" in (PACKAGING / "linux" / "debian" / "control.in").read_text()
    nsi = (PACKAGING / "windows" / "intelwatt.nsi").read_text()
    assert 'VIProductVersion "${VERSION4}"' in nsi and '"DisplayVersion" "${VERSION}"' in nsi


@pytest.mark.parametrize("name", ["headless.Dockerfile", "training.Dockerfile"])
def test_container_labels_take_the_version_from_the_build(name: str) -> None:
    text = (PACKAGING / "docker" / name).read_text(encoding="utf-8")
    assert re.search(r"^ARG VERSION$", text, re.MULTILINE)
    assert 'org.opencontainers.image.version="${VERSION}"' in text
    assert '--build-arg VERSION="$(python3 packaging/version_info.py)"' in text


def test_changelog_and_workflow_follow_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(
        rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M
    )
    workflow = (ROOT / ".github" / "workflows" / "windows.yml").read_text(encoding="utf-8")
    assert "python packaging/version_info.py" in workflow
    assert 'ne "v$v"' in workflow  # a release tag must match app.__version__


def test_headless_container_has_no_gui_or_training_extra() -> None:
    text = (PACKAGING / "docker" / "headless.Dockerfile").read_text(encoding="utf-8")
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert any("pip install --no-cache-dir /wheels/*.whl" in line for line in installs)
    assert not any("[" in line for line in installs), installs  # no extras at all
    assert re.search(r"^USER 10001:10001$", text, re.M)


def _stand_in_bundle(root: Path) -> Path:
    bundle = root / "intelwatt"
    resources = bundle / "_internal" / "resources"
    for sub in ("sites", "icons", "trust"):
        shutil.copytree(ROOT / "resources" / sub, resources / sub)
    exe = bundle / "intelwatt"
    exe.write_text("#!/bin/sh\necho intelwatt-console stand-in\n", encoding="utf-8")
    exe.chmod(0o755)
    return bundle


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_deb_layout_version_and_maintainer_scripts(tmp_path: Path) -> None:
    bundle = _stand_in_bundle(tmp_path)
    out = subprocess.run(
        ["bash", str(PACKAGING / "linux" / "build-deb.sh"), str(bundle), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    deb = Path(out.stdout.strip().splitlines()[-1])
    assert deb.name.startswith(f"intelwatt-console_{__version__}_")

    def field(name: str) -> str:
        return subprocess.run(
            ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert field("Version") == __version__
    assert field("Package") == "intelwatt-console"
    assert "adduser" in field("Depends")
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./opt/intelwatt-console/intelwatt",
        "./usr/bin/intelwatt -> /opt/intelwatt-console/intelwatt",
        "./usr/share/applications/intelwatt-console.desktop",
        "./usr/share/icons/hicolor/256x256/apps/intelwatt-console.png",
        "./lib/systemd/system/intelwatt-headless.service",
        "./etc/intelwatt/site.toml",
        "./etc/intelwatt/trust/intelwatt-dev.pub",
    ):
        assert path in listing, path
    assert " root/root " in listing and "resources/keys" not in listing

    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert (control / "conffiles").read_text().split() == [
        "/etc/intelwatt/site.toml",
        "/etc/intelwatt/trust/intelwatt-dev.pub",
    ]
    for script in ("postinst", "prerm", "postrm"):
        assert (control / script).stat().st_mode & 0o111, script
        subprocess.run(["sh", "-n", str(control / script)], check=True)
    postrm = (control / "postrm").read_text()
    assert "rm -rf /var/lib/intelwatt" in postrm.split("purge)")[1]
    assert "rm -rf" not in postrm.split("purge)")[0]  # plain remove keeps the data

    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    site = (tree / "etc" / "intelwatt" / "site.toml").read_text()
    assert 'package = "/opt/intelwatt-console/_internal/resources/agents/ro"' in site
    assert 'trust_store = "/etc/intelwatt/trust"' in site
    assert 'staging_dir = "/var/lib/intelwatt/staging"' in site
    from app.config import parse_site

    parsed = parse_site(site)
    assert parsed.agents.trust_store == Path("/etc/intelwatt/trust")
    unit = (tree / "lib" / "systemd" / "system" / "intelwatt-headless.service").read_text()
    assert "User=intelwatt" in unit
    assert "headless --site /etc/intelwatt/site.toml" in unit


@pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis is not installed (nsis)")
@pytest.mark.parametrize("service", [False, True], ids=["plain", "with-service"])
def test_nsis_script_compiles_without_warnings(tmp_path: Path, service: bool) -> None:
    bundle = _stand_in_bundle(tmp_path)
    (bundle / "intelwatt.exe").write_bytes(b"MZ stand-in")
    out = tmp_path / f"intelwatt-console-{__version__}-setup.exe"  # the name CI writes
    args = [
        "makensis",
        "-WX",
        "-V2",
        f"-DVERSION={__version__}",
        f"-DVERSION4={_version_info()[1]}",
        f"-DPAYLOAD={bundle}",
        f"-DOUTFILE={out}",
    ]
    if service:
        winsw = tmp_path / "WinSW-x64.exe"
        winsw.write_bytes(b"MZ stand-in for WinSW")
        args.append(f"-DWINSW={winsw}")
    subprocess.run([*args, str(PACKAGING / "windows" / "intelwatt.nsi")], check=True)
    data = out.read_bytes()
    assert data[:2] == b"MZ" and b"NullsoftInst" in data


@pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis is not installed (nsis)")
def test_nsis_script_refuses_a_missing_version(tmp_path: Path) -> None:
    bundle = _stand_in_bundle(tmp_path)
    result = subprocess.run(
        [
            "makensis",
            "-V2",
            f"-DPAYLOAD={bundle}",
            f"-DOUTFILE={tmp_path / 'x.exe'}",
            str(PACKAGING / "windows" / "intelwatt.nsi"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "define VERSION" in result.stdout + result.stderr
