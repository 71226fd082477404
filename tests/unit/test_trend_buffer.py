"""Trend ring buffers: preallocated, NaN gaps, windows across the wrap, concurrent readers."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from app.controllers.trend_buffer import SEVEN_DAYS_AT_1_HZ, TrendBuffer
from app.domain import Quality, Sample, Snapshot


def test_seven_days_preallocated_with_float64_time_axis() -> None:
    buf = TrendBuffer(["a", "b"])
    assert buf.capacity == SEVEN_DAYS_AT_1_HZ == 604_800
    assert buf.nbytes == 604_800 * 8 + 604_800 * 2 * 4
    t, v = buf.window("a", 0, 1e12)
    assert t.dtype == np.float64 and len(t) == 0 and v.shape == (0,)


def test_window_before_wrap_and_missing_values_are_nan() -> None:
    buf = TrendBuffer(["a", "b"], capacity=10)
    for i in range(5):
        buf.append(float(i), {"a": i * 1.5} if i != 2 else {"b": 9.0})
    t, v = buf.window("a", 1.0, 3.0)
    assert t.tolist() == [1.0, 2.0, 3.0]
    assert v[0] == 1.5 and math.isnan(v[1]) and v[2] == 4.5


def test_window_across_the_wrap_keeps_order_and_drops_overwritten() -> None:
    buf = TrendBuffer(["a"], capacity=8, value_dtype=np.float64)
    for i in range(21):  # slots wrap twice; rows 13..20 remain
        buf.append(float(i), {"a": float(i) * 10})
    assert len(buf) == 8
    t, v = buf.window("a", -100, 100)
    assert t.tolist() == [float(i) for i in range(13, 21)]
    assert v.tolist() == [i * 10.0 for i in range(13, 21)]
    for t0, t1 in [(14.5, 18.0), (15.0, 20.0), (13.0, 13.0), (20.0, 25.0), (0.0, 12.9)]:
        t, _ = buf.window("a", t0, t1)
        expected = [float(i) for i in range(13, 21) if t0 <= i <= t1]
        assert t.tolist() == expected, (t0, t1)


def test_duplicate_times_and_time_going_back() -> None:
    buf = TrendBuffer(["a"], capacity=4)
    buf.append(1.0, {"a": 1.0})
    buf.append(1.0, {"a": 2.0})
    with pytest.raises(ValueError, match="earlier than the newest row"):
        buf.append(0.5, {"a": 3.0})
    with pytest.raises(ValueError, match="not in this trend buffer"):
        buf.append(2.0, {"zzz": 1.0})
    with pytest.raises(KeyError, match="zzz"):
        buf.window("zzz", 0, 1)


def test_record_from_snapshot_leaves_gaps_for_unusable_samples() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    snap = Snapshot(
        {
            "a": Sample("a", 3.0, Quality.GOOD, ts, 0.0),
            "b": Sample("b", 99.0, Quality.OUT_OF_RANGE, ts, 0.0),
        },
        0.0,
    )
    buf = TrendBuffer(["a", "b"], capacity=4)
    buf.record(10.0, snap)
    _, values = buf.window_many(["a", "b"], 0, 20)
    assert values[0, 0] == 3.0 and math.isnan(values[0, 1])


def test_reader_never_sees_a_torn_or_unordered_window() -> None:
    buf = TrendBuffer(["a", "b"], capacity=256, value_dtype=np.float64)
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            t, v = buf.window_many(["a", "b"], -1.0, 1e9)
            if len(t) and (
                np.any(np.diff(t) < 0)
                or not np.array_equal(v[:, 0], t)
                or not np.array_equal(v[:, 1], -t)
            ):
                problems.append(f"inconsistent window of {len(t)} rows")

    thread = threading.Thread(target=reader, name="trend-reader")
    thread.start()
    try:
        for i in range(20_000):
            buf.append(float(i), {"a": float(i), "b": -float(i)})
    finally:
        stop.set()
        thread.join()
    assert problems == []
