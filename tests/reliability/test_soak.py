"""The soak (bench/soak.py) at CI size: random faults over 20,000 control ticks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak


@pytest.mark.slow
def test_short_soak_keeps_every_record_and_writes_nothing_unsafe(tmp_path: Path) -> None:
    result = run_soak(20_000, tmp_path, seed=1)
    print(f"\nsoak (CI size): {result}")
    assert result.faults > 10 and result.plc_writes > 0 and result.agent_steps > 100
    assert result.unsafe_writes == 0
    assert result.ledger_ok and result.ledger_rows > 0
    assert result.outbox_enqueued == result.outbox_delivered == result.ledger_rows
    assert result.outbox_pending == 0 and result.outbox_refused == 0
    # RSS over 15,000 ticks is noisy; the ≤ 5 % figure is the 1M-tick run's (docs/reliability.md).
    assert result.rss_growth_pct <= 10.0
