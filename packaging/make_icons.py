"""Render ``resources/icons/intelwatt.svg`` to the PNG (Linux desktop) and ICO (Windows) icons.

Run once after changing the SVG: ``QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/make_icons.py``.
The outputs are committed, so a package build needs no Qt rendering step.
"""

import sys
from pathlib import Path

# A build tool, not part of the app: the Qt-only-in-app/ui rule does not apply here.
from PySide6.QtCore import Qt  # noqa: TID251, TID253
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: TID251, TID253
from PySide6.QtSvg import QSvgRenderer  # noqa: TID251, TID253

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"


def render(renderer: QSvgRenderer, size: int) -> QImage:
    """The SVG drawn on a transparent ``size`` x ``size`` image."""
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    return image


def main() -> int:
    """Write intelwatt.png (256 px) and intelwatt.ico (256 px)."""
    _app = QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(ICONS / "intelwatt.svg"))
    if not renderer.isValid():
        sys.stderr.write("intelwatt.svg is not a valid SVG\n")
        return 1
    image = render(renderer, 256)
    for name, fmt in (("intelwatt.png", "PNG"), ("intelwatt.ico", "ICO")):
        if not image.save(str(ICONS / name), fmt):
            sys.stderr.write(f"could not write {name} (Qt image format {fmt} missing?)\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
