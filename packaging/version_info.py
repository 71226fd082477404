"""The version number for the packaging files, from its one source: ``app.__version__``.

``python packaging/version_info.py`` prints it (build.sh, CI); the spec calls
:func:`write_windows_version_file` for the Windows file properties.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)
_NUMERIC = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def app_version(root: Path = ROOT) -> str:
    """``__version__`` as written in ``app/__init__.py`` (read as text, nothing is imported).

    Raises:
        ValueError: The file has no ``__version__ = "..."`` line.
    """
    path = root / "app" / "__init__.py"
    match = _VERSION.search(path.read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f'{path}: no __version__ = "..." line')
    return match.group(1)


def windows_version(version: str) -> tuple[int, int, int, int]:
    """The four-part numeric version Windows resources and NSIS ``VIProductVersion`` need.

    Raises:
        ValueError: ``version`` does not start with MAJOR.MINOR.PATCH.
    """
    match = _NUMERIC.match(version)
    if match is None:
        raise ValueError(f"version {version!r} does not start with MAJOR.MINOR.PATCH")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch, 0


def write_windows_version_file(path: Path, version: str) -> str:
    """Write a PyInstaller ``VSVersionInfo`` file for ``version``; returns its path."""
    numbers = windows_version(version)
    text = f"""VSVersionInfo(
  ffi=FixedFileInfo(filevers={numbers}, prodvers={numbers}, mask=0x3f, flags=0x0, OS=0x40004,
                    fileType=0x1, subtype=0x0, date=(0, 0)),
  kids=[
    StringFileInfo([StringTable('040904B0', [
      StringStruct('CompanyName', 'intelWATT'),
      StringStruct('FileDescription', 'intelwatt console'),
      StringStruct('FileVersion', '{version}'),
      StringStruct('InternalName', 'intelwatt'),
      StringStruct('OriginalFilename', 'intelwatt.exe'),
      StringStruct('ProductName', 'intelwatt-console'),
      StringStruct('ProductVersion', '{version}')])]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--windows"]:
        sys.stdout.write(".".join(str(n) for n in windows_version(app_version())) + "\n")
    else:
        sys.stdout.write(app_version() + "\n")
