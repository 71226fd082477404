"""Fault-matrix and fuzz sizes: small in ``make test``, the issue's full size when asked.

Set ``INTELWATT_RELIABILITY_FULL=1`` for the nightly size (100 PLC restarts per protocol, ≥ 10k
fuzz cases for the agent step, more for the other fuzz targets).
"""

from __future__ import annotations

import os

FULL = os.environ.get("INTELWATT_RELIABILITY_FULL", "") not in ("", "0")

PLC_RESTARTS = 100 if FULL else 3
"""Server kill/restart cycles per protocol during AUTOMATIC."""

AGENT_STEP_CASES = 10_000 if FULL else 1_500
"""Random sensor values/qualities pushed through the whole agent step."""

FUZZ_CASES = 3_000 if FULL else 400
"""Cases per other fuzz target (site TOML, packages, scoring responses, Modbus registers)."""
