"""Loading logged transitions (JSONL, outbox SQLite) and the data-quality verdicts."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.plant.baselines import make_baseline
from app.training.data import (
    DataError,
    FilterOptions,
    assess,
    load_transitions,
    require_enough,
)
from app.training.plant_log import EPOCH, simulate_transitions, write_jsonl, write_outbox

REPO = Path(__file__).resolve().parents[2]
STEADY = REPO / "resources" / "scenarios" / "ro" / "ro_11_steady.csv"


@pytest.fixture(scope="module")
def records() -> list[tuple[Any, dict[str, Any]]]:
    """One simulated day of RO transitions (48 records) under the rule-based baseline."""
    return simulate_transitions("ro", STEADY, make_baseline("rule_based", "ro"), days=1.0, seed=1)


def test_jsonl_and_outbox_sqlite_load_the_same_columns(
    records: list[tuple[Any, dict[str, Any]]], tmp_path: Path
) -> None:
    a = load_transitions(write_jsonl(records, tmp_path / "log.jsonl"), "ro")
    b = load_transitions(write_outbox(records, tmp_path / "outbox.sqlite"), "ro")
    assert len(a) == len(b) == 48
    np.testing.assert_allclose(a.times, b.times)
    for tag in ("permeate_flow_m3h", "feed_conductivity_uscm", "hpp_power_kw"):
        np.testing.assert_allclose(a.obs[tag], b.obs[tag])
    np.testing.assert_allclose(a.applied["feed_pressure_sp_bar"], records_applied(records))
    assert set(a.actions) == {"active"}
    report = assess(a)
    assert report.counts["ok"] == 48
    assert report.span_h == pytest.approx(23.5)


def records_applied(records: list[tuple[Any, dict[str, Any]]]) -> list[float]:
    return [float(p["applied"]["feed_pressure_sp_bar"]) for _, p in records]


def test_window_and_folder_of_day_files(
    records: list[tuple[Any, dict[str, Any]]], tmp_path: Path
) -> None:
    write_jsonl(records[:24], tmp_path / "logs" / "2026-01-05.jsonl")
    write_jsonl(records[24:], tmp_path / "logs" / "sub" / "2026-01-05.1.jsonl")
    log = load_transitions(tmp_path / "logs", "ro", since=EPOCH + timedelta(hours=6))
    assert len(log) == 36
    assert log.times[0] == (EPOCH + timedelta(hours=6)).timestamp()
    assert np.all(np.diff(log.times) > 0)


def _edit(records: list[tuple[Any, dict[str, Any]]], i: int, **changes: Any) -> None:
    payload = json.loads(json.dumps(records[i][1]))
    for key, value in changes.items():
        if key in ("labels", "quality"):
            payload[key] = value
        else:
            payload["obs"][key] = value
    records[i] = (records[i][0], payload)


def test_every_bad_record_gets_its_reason_and_culprit(
    records: list[tuple[Any, dict[str, Any]]], tmp_path: Path
) -> None:
    recs = list(records)
    _edit(recs, 3, permeate_flow_m3h=math.nan)
    _edit(recs, 5, quality={"permeate_conductivity_uscm": "bad", "feed_ph": "good"})
    _edit(recs, 7, feed_pressure_bar=60.0)
    for i in range(10, 17):
        _edit(recs, i, hpp_power_kw=12.5)  # frozen transmitter
    for i in (20, 21):
        _edit(recs, i, cip_active=1.0, feed_flow_m3h=0.0, permeate_flow_m3h=0.0)
    _edit(recs, 30, feed_flow_m3h=0.2, permeate_flow_m3h=0.0)
    _edit(recs, 40, labels=["upset"])
    log = load_transitions(write_jsonl(recs, tmp_path / "log.jsonl"), "ro")
    report = assess(log)
    r, c = report.reasons, report.culprits
    assert (r[3], c[3]) == ("missing", "permeate_flow_m3h")
    assert (r[5], c[5]) == ("bad_quality", "permeate_conductivity_uscm")
    assert (r[7], c[7]) == ("out_of_range", "feed_pressure_bar")
    assert r[10:17] == ["stale"] * 7 and c[10] == "hpp_power_kw"
    assert r[20:22] == ["cip", "cip"] and r[22:24] == ["after_event"] * 2
    assert r[30] == "stopped" and r[40] == "upset" and r[41:43] == ["after_event"] * 2
    assert report.counts["ok"] == 48 - 1 - 1 - 1 - 7 - 2 - 2 - 1 - 2 - 1 - 2
    assert not report.good[20] and report.good[0]
    # An engineer-labelled CIP window is kept when asked for.
    kept = assess(log, FilterOptions(include_labels=frozenset({"cip"}), settle_records=0))
    assert kept.reasons[20] == "stopped"  # no flow: still not usable for the steady-state fit


def test_coverage_against_the_incumbents_training_range(
    records: list[tuple[Any, dict[str, Any]]], tmp_path: Path
) -> None:
    log = load_transitions(write_jsonl(records, tmp_path / "log.jsonl"), "ro")
    p = log.obs["feed_pressure_bar"]
    narrow = assess(log, ranges={"feed_pressure_bar": (p.min(), p.max())})
    wide = assess(log, ranges={"feed_pressure_bar": (0.0, 45.0)})
    assert (
        narrow.coverage["feed_pressure_bar"].bins_filled
        > wide.coverage["feed_pressure_bar"].bins_filled
    )
    assert narrow.coverage["feed_pressure_bar"].p05 <= narrow.coverage["feed_pressure_bar"].p95
    with pytest.raises(DataError, match=r"only 48 usable records of 48 \(need 100"):
        require_enough(narrow, min_records=100, min_span_h=1.0)
    with pytest.raises(DataError, match=r"span 23\.5 h"):
        require_enough(narrow, min_records=10, min_span_h=48.0)
    require_enough(narrow, min_records=48, min_span_h=23.0)


def test_bad_sources_name_the_culprit(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_transitions(tmp_path / "nope.jsonl", "ro")
    with pytest.raises(DataError, match="unknown process"):
        load_transitions(tmp_path, "xx")
    bad = tmp_path / "bad.jsonl"
    ok = '{"id":1,"schema":1,"kind":"transition","ts":"2026-01-05T00:00:00+00:00","data":{}}'
    bad.write_text(ok + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not JSON"):
        load_transitions(bad, "ro")
    bad.write_text(ok.replace('"schema":1', '"schema":7') + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: record schema 7"):
        load_transitions(bad, "ro")
    bad.write_text(ok.replace('"data":{}', '"data":{"obs":{"feed_ph":"high"}}') + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: feed_ph is 'high'"):
        load_transitions(bad, "ro")
    bad.write_text(ok.replace("transition", "alarm") + "\n")
    with pytest.raises(DataError, match="no transition records"):
        load_transitions(bad, "ro")
    bad.write_text(ok + "\n")
    with pytest.raises(DataError, match=r"required tag\(s\) \['feed_pressure_bar'"):
        assess(load_transitions(bad, "ro"))
    db = tmp_path / "x.sqlite"
    db.write_bytes(b"not a database at all" * 10)
    with pytest.raises(DataError, match="not an outbox SQLite file"):
        load_transitions(db, "ro")
