"""Latest sample per tag, readable from any thread without blocking the PLC I/O thread.

The I/O thread is the only writer. Each update builds a new dict and swaps the reference (copy on
write), so a reader on another thread always sees a complete, consistent mapping without taking a
lock. A sample that has not been refreshed within ``stale_after_s`` is reported as STALE with a NaN
value: a silent old value is never handed out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from app.domain import Quality, Sample, Snapshot, TagId


@dataclass(frozen=True, slots=True)
class TagState:
    """What the console knows about one tag right now.

    Attributes:
        sample: The sample as received (its original quality and value).
        age_s: Seconds since it was received.
        quality: Effective quality: the sample's, or STALE if it is too old.
    """

    sample: Sample
    age_s: float
    quality: Quality

    @property
    def value(self) -> float:
        """The value if the effective quality is GOOD, otherwise NaN."""
        return self.sample.value if self.quality is Quality.GOOD else math.nan


class SnapshotService:
    """Holds the latest sample of every tag.

    Args:
        stale_after_s: A sample older than this is STALE.
        clock: Monotonic clock (``time.monotonic`` or a test's fake clock), same as ``received_ts``.
    """

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(stale_after_s) and stale_after_s > 0):
            raise ValueError(f"stale_after_s must be positive, got {stale_after_s!r}")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._samples: dict[TagId, Sample] = {}

    # --- writer side (PLC I/O thread only) -----------------------------------------------------

    def update(self, sample: Sample) -> None:
        """Store ``sample`` as the latest of its tag (the I/O thread's ``on_sample`` callback)."""
        samples = dict(self._samples)
        samples[sample.tag] = sample
        self._samples = samples

    def update_many(self, samples: Iterable[Sample]) -> None:
        """Store a batch of samples with one swap."""
        merged = dict(self._samples)
        for sample in samples:
            merged[sample.tag] = sample
        self._samples = merged

    # --- reader side (any thread) ----------------------------------------------------------------

    def _effective(self, sample: Sample, now: float) -> Sample:
        if sample.quality is Quality.GOOD and sample.age_s(now) > self.stale_after_s:
            return replace(sample, value=math.nan, quality=Quality.STALE)
        return sample

    def get(self, tag: TagId) -> TagState | None:
        """State of ``tag``, or ``None`` if no sample arrived yet."""
        sample = self._samples.get(tag)
        if sample is None:
            return None
        now = self._clock()
        age = sample.age_s(now)
        quality = (
            Quality.STALE
            if (sample.quality is Quality.GOOD and age > self.stale_after_s)
            else sample.quality
        )
        return TagState(sample, age, quality)

    def snapshot(self) -> Snapshot:
        """Every tag's latest sample, with stale ones replaced by STALE/NaN samples."""
        samples = self._samples
        now = self._clock()
        return Snapshot({t: self._effective(s, now) for t, s in samples.items()}, now)

    def stale_tags(self) -> list[TagId]:
        """Tags whose last good sample is older than ``stale_after_s``."""
        now = self._clock()
        return [
            t
            for t, s in self._samples.items()
            if s.quality is Quality.GOOD and s.age_s(now) > self.stale_after_s
        ]

    def __len__(self) -> int:
        return len(self._samples)


__all__ = ["SnapshotService", "TagState"]
