"""docs/plc-interface.md shows the register map the simulated PLC actually serves."""

from __future__ import annotations

from pathlib import Path

from app.plant.plc_doc import register_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "plc-interface.md"


def test_ro_register_table_in_the_doc_matches_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- register-table:ro:begin -->\n", "<!-- register-table:ro:end -->"
    assert begin in text and end in text
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == register_table("ro"), "regenerate with: python -m app.plant.plc_doc ro"
