"""Project-wide test settings: offscreen Qt, private log folder, and a guard against leaked threads."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_THREAD_GRACE_S = 2.0
# Threads owned by libraries for the whole process (not started by our code under test).
_IGNORED_THREAD_PREFIXES = ("pytest_timeout", "asyncio_", "ThreadPoolExecutor", "QDBusConnection")


@pytest.fixture(scope="session", autouse=True)
def _private_log_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["INTELWATT_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread it started running (napari's dangling-thread guard)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + _THREAD_GRACE_S
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_IGNORED_THREAD_PREFIXES)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if leaked:
        pytest.fail(f"test left threads running: {[t.name for t in leaked]}")
