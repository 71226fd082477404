"""The address-map table of docs/plc-interface.md, generated from the standard map.

Regenerate the table after a catalogue change with::

    .venv/bin/python -m app.plant.plc_doc ro
"""

from __future__ import annotations

import sys

from app.plant.catalog import catalog
from app.plant.plc_map import standard_map


def register_table(process: str) -> str:
    """A Markdown table of every tag of ``process``: node id, Modbus table and register, limits."""
    cat = catalog(process)
    rows = [
        "| Tag | Unit | Role | OPC UA node id (ns=urn:intelwatt:plant) | Modbus table | Registers "
        "| Writable | PLC limits | Ramp /s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, address in standard_map(cat).items():
        tag = cat.tag(name)
        limits = (
            f"{tag.plc_low:g} … {tag.plc_high:g}"
            if tag.plc_low is not None and tag.plc_high is not None
            else ""
        )
        ramp = f"{tag.max_rate_per_s:g}" if tag.max_rate_per_s is not None else ""
        rows.append(
            f"| `{name}` | {tag.unit} | {tag.role} | `{address.node_id}` | {address.table} "
            f"| {address.register}–{address.register + address.width - 1} "
            f"| {'yes' if address.writable else 'no'} | {limits} | {ramp} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(register_table(sys.argv[1] if len(sys.argv) > 1 else "ro"))
