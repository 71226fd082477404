"""Snapshot service: latest sample per tag, staleness, and lock-free reads from other threads."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

import pytest

from app.controllers.snapshot import SnapshotService
from app.domain import Quality, Sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _s(tag: str, value: float, received: float, quality: Quality = Quality.GOOD) -> Sample:
    return Sample(tag, value, quality, T0, received)


def test_latest_sample_wins_and_age_is_reported() -> None:
    clock = Clock()
    snap = SnapshotService(stale_after_s=5.0, clock=clock)
    snap.update(_s("a", 1.0, 100.0))
    snap.update(_s("a", 2.0, 101.0))
    clock.now = 103.0
    state = snap.get("a")
    assert state is not None
    assert (state.value, state.quality, state.age_s) == (2.0, Quality.GOOD, 2.0)
    assert snap.get("missing") is None


def test_old_sample_becomes_stale_never_a_silent_value() -> None:
    clock = Clock()
    snap = SnapshotService(stale_after_s=5.0, clock=clock)
    snap.update_many([_s("a", 1.0, 100.0), _s("b", 7.0, 104.0)])
    clock.now = 105.5
    state = snap.get("a")
    assert state is not None and state.quality is Quality.STALE and math.isnan(state.value)
    assert state.sample.value == 1.0  # the raw sample stays available for diagnostics
    taken = snap.snapshot()
    assert taken.samples["a"].quality is Quality.STALE and math.isnan(taken.samples["a"].value)
    assert taken.samples["b"].quality is Quality.GOOD
    assert snap.stale_tags() == ["a"]
    assert taken.unusable(max_age_s=5.0) == {"a": "stale"}


def test_bad_quality_is_kept_not_masked_as_stale() -> None:
    clock = Clock()
    snap = SnapshotService(stale_after_s=1.0, clock=clock)
    snap.update(_s("a", math.nan, 100.0, Quality.COMM_FAILURE))
    clock.now = 200.0
    state = snap.get("a")
    assert state is not None and state.quality is Quality.COMM_FAILURE


def test_rejects_bad_stale_after() -> None:
    with pytest.raises(ValueError, match="stale_after_s"):
        SnapshotService(stale_after_s=0)


def test_readers_on_other_threads_always_see_complete_snapshots() -> None:
    snap = SnapshotService(stale_after_s=1e9)
    tags = [f"t{i}" for i in range(20)]
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            taken = snap.snapshot()
            values = {s.value for s in taken.samples.values()}
            # update_many writes one generation for all tags at once: never a mix
            if len(taken.samples) not in (0, len(tags)) or len(values) > 1:
                errors.append(f"torn snapshot: {len(taken.samples)} tags, values {values}")

    thread = threading.Thread(target=reader, name="snapshot-reader")
    thread.start()
    try:
        for generation in range(3000):
            snap.update_many(_s(t, float(generation), 0.0) for t in tags)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert snap.snapshot().value("t0") == 2999.0
