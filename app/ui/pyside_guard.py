"""Guard against a PySide6 6.12.0 reference-count bug that crashes long-running consoles.

PySide6 6.12.0 returns ``None`` from void C++ calls (``QPainter.drawLine``, an overridden
``paintEvent``, ``QObject.property`` of an unset property, ...) and ``True``/``False`` from some
bool-returning ones without taking a reference. On Python 3.12+ these singletons are immortal and
nothing happens; on Python 3.11 every such call lowers their reference count by one until the
interpreter aborts with "Fatal Python error: none_dealloc: deallocating None" (or ``bool_dealloc``)
- after minutes of trend redraws (measured: about 100 lost references to ``None`` per trends
frame). PySide6 6.11.3 does not have the bug; the project should pin below 6.12. If an affected
build is installed anyway, ``guard_none_refcount`` gives these singletons the reference count
Python 3.12 gives them (effectively immortal) and logs a warning.
"""

from __future__ import annotations

import ctypes
import logging
import sys

import PySide6

log = logging.getLogger(__name__)

AFFECTED = ("6.12.",)
_IMMORTAL = 1 << 40


def affected(version: str = PySide6.__version__, python: tuple[int, int] | None = None) -> bool:
    """True if this PySide6 build on this Python loses references to ``None``."""
    major_minor = python or (sys.version_info.major, sys.version_info.minor)
    return major_minor < (3, 12) and version.startswith(AFFECTED)


def guard_none_refcount() -> bool:
    """Make ``None``, ``True`` and ``False`` effectively immortal on an affected build.

    Returns:
        True if this build is affected (the guard is in place).
    """
    if not affected() or sys.implementation.name != "cpython":
        return False
    applied = False
    for singleton in (None, True, False):
        refcount = ctypes.c_ssize_t.from_address(id(singleton))
        if refcount.value < _IMMORTAL:
            refcount.value += _IMMORTAL
            applied = True
    if applied:
        log.warning(
            "PySide6 %s on Python %d.%d loses references to None/True/False; applied the guard "
            "(install PySide6-Essentials < 6.12 to remove the need for it)",
            PySide6.__version__,
            *sys.version_info[:2],
        )
    return True


__all__ = ["AFFECTED", "affected", "guard_none_refcount"]
