"""Logging to the platform's log folder with rotation, plus stderr for command-line tools."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

import platformdirs

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
_MAX_BYTES = 10 * 1024 * 1024
_BACKUPS = 10

# Libraries that log a traceback every second during an outage; the console shows the state instead.
_QUIET = {
    "asyncua": logging.WARNING,
    "asyncua.client.ua_session": logging.CRITICAL,
    "asyncua.client.ua_client.UASocketProtocol": logging.CRITICAL,
    "pymodbus": logging.WARNING,
    "azure": logging.WARNING,
    "urllib3": logging.WARNING,
}


def default_log_dir() -> Path:
    """``$INTELWATT_LOG_DIR`` if set, else the platform's user log folder for intelwatt."""
    override = os.environ.get("INTELWATT_LOG_DIR")
    if override:
        return Path(override)
    return Path(platformdirs.user_log_dir("intelwatt", appauthor=False))


def configure_logging(
    level: str = "info", log_dir: Path | None = None, *, console: bool = True
) -> Path:
    """Send logs to a rotating file in ``log_dir`` (and to stderr if ``console``).

    Args:
        level: One of ``LOG_LEVELS``.
        log_dir: Folder for ``intelwatt.log``; the platform default if ``None``.
        console: Also log to stderr (command-line tools and headless mode).

    Returns:
        The log file path.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    folder = log_dir or default_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "intelwatt.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_intelwatt", False):
            root.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(LOG_FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [file_handler]
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._intelwatt = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet_level in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet_level, root.level))
    return path
