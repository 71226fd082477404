"""Fault-matrix and fuzz sizes: small in ``make test``, the issue's full size when asked.

Set ``INTELWATT_RELIABILITY_FULL=1`` for the nightly size (100 PLC restarts per protocol, ≥ 10k
fuzz cases for the agent step, more for the other fuzz targets).
``INTELWATT_PLC_RESTARTS=N`` sets only the restart count.
"""

from __future__ import annotations

import os

FULL = os.environ.get("INTELWATT_RELIABILITY_FULL", "") not in ("", "0")

_RESTARTS = int(os.environ.get("INTELWATT_PLC_RESTARTS", "0"))

PLC_RESTARTS = _RESTARTS or (100 if FULL else 3)
"""Server kill/restart cycles per protocol during AUTOMATIC (``INTELWATT_PLC_RESTARTS`` overrides,
e.g. to time a 10× run before the nightly 100×)."""

AGENT_STEP_CASES = 10_000 if FULL else 1_500
"""Random sensor values/qualities pushed through the whole agent step."""

FUZZ_CASES = 3_000 if FULL else 400
"""Cases per other fuzz target (site TOML, packages, scoring responses, Modbus registers)."""

TIMEOUT_S = 3600 if FULL or _RESTARTS else 120
"""Per-test timeout of the size-scaled tests: the project's 120 s (pyproject) at CI size; the
nightly size needs minutes per test (10k agent steps took > 2 min on a loaded 2-core machine)."""
