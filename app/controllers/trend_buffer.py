"""Fixed-size, preallocated ring buffers for trends: one row per record time, one column per tag.

The control context appends one row per supervision tick (1 Hz: 7 days = 604,800 rows). Missing or
unusable values are stored as NaN, so plots show gaps instead of invented lines. Readers on other
threads copy a window without a lock: the writer fills a row before publishing it, and a reader
discards any row the writer may have overwritten while it was copying.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from app.domain import Snapshot, TagId

SEVEN_DAYS_AT_1_HZ = 7 * 24 * 3600

FloatArray = npt.NDArray[np.float64]


class TrendBuffer:
    """Ring buffer of ``capacity`` rows for ``tags``.

    Args:
        tags: Column order.
        capacity: Rows kept; the oldest row is overwritten when full.
        value_dtype: ``float32`` halves memory (7 days x 30 tags: 73 MB instead of 145 MB);
            ``float64`` keeps full precision. Times are always float64.
    """

    def __init__(
        self,
        tags: Sequence[TagId],
        capacity: int = SEVEN_DAYS_AT_1_HZ,
        value_dtype: npt.DTypeLike = np.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        if len(set(tags)) != len(tags) or not tags:
            raise ValueError(
                f"tags must be a non-empty list without duplicates, got {list(tags)!r}"
            )
        self.tags: tuple[TagId, ...] = tuple(tags)
        self.capacity = capacity
        self._column = {t: i for i, t in enumerate(self.tags)}
        self._times: FloatArray = np.full(capacity, np.nan, dtype=np.float64)
        self._values = np.full((capacity, len(self.tags)), np.nan, dtype=value_dtype)
        self._written = 0
        """Rows ever published; row ``k`` lives in slot ``k % capacity``."""
        self._claimed = 0
        """Rows the writer has started; exceeds ``_written`` by one while a row is being written."""

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(self._times.nbytes + self._values.nbytes)

    def __len__(self) -> int:
        return min(self._written, self.capacity)

    @property
    def last_time(self) -> float:
        """Time of the newest row (NaN when empty)."""
        if self._written == 0:
            return math.nan
        return float(self._times[(self._written - 1) % self.capacity])

    # --- writer ---------------------------------------------------------------------------------

    def append(self, t: float, values: Mapping[TagId, float]) -> None:
        """Add a row at time ``t``; tags missing from ``values`` get NaN.

        Raises:
            ValueError: ``t`` is not finite or is earlier than the newest row, or a tag is unknown.
        """
        if not math.isfinite(t):
            raise ValueError(f"trend time must be finite, got {t!r}")
        if self._written and t < self.last_time:
            raise ValueError(f"trend time {t!r} is earlier than the newest row {self.last_time!r}")
        unknown = [tag for tag in values if tag not in self._column]
        if unknown:
            raise ValueError(f"tags {unknown} are not in this trend buffer")
        slot = self._written % self.capacity
        self._claimed = self._written + 1
        row = self._values[slot]
        row[:] = np.nan
        for tag, value in values.items():
            row[self._column[tag]] = value
        self._times[slot] = t
        self._written += 1

    def record(self, t: float, snapshot: Snapshot) -> None:
        """Add a row from a snapshot: usable (GOOD) values, NaN for everything else."""
        self.append(
            t,
            {
                tag: sample.value
                for tag, sample in snapshot.samples.items()
                if tag in self._column and sample.quality.usable
            },
        )

    # --- readers (any thread) ---------------------------------------------------------------------

    def window(self, tag: TagId, t0: float, t1: float) -> tuple[FloatArray, FloatArray]:
        """Times and values of ``tag`` with ``t0 <= t <= t1``, oldest first (copies).

        Raises:
            KeyError: ``tag`` is not in the buffer.
        """
        times, values = self.window_many([tag], t0, t1)
        return times, values[:, 0]

    def window_many(
        self, tags: Sequence[TagId], t0: float, t1: float
    ) -> tuple[FloatArray, FloatArray]:
        """Times (n,) and values (n, len(tags)) as float64 for ``t0 <= t <= t1``, oldest first."""
        missing = [t for t in tags if t not in self._column]
        if missing:
            raise KeyError(f"tags {missing} are not in this trend buffer")
        columns = np.array([self._column[t] for t in tags], dtype=np.intp)
        written_before = self._written
        first = max(0, written_before - self.capacity)
        lo = self._search(first, written_before, t0, "left")
        hi = self._search(first, written_before, t1, "right")
        if hi <= lo:
            return np.empty(0), np.empty((0, len(columns)))
        slots = np.arange(lo, hi) % self.capacity
        times = self._times[slots]
        values = self._values[np.ix_(slots, columns)].astype(np.float64)
        # Row k is overwritten by row k + capacity: any row below claimed - capacity may have
        # changed while we copied, so drop it rather than return a torn row.
        oldest_safe = self._claimed - self.capacity
        if lo < oldest_safe:
            keep = max(0, oldest_safe - lo)
            times, values = times[keep:], values[keep:]
        return times, values

    def _search(self, first: int, end: int, t: float, side: str) -> int:
        """Logical row index of ``t`` in rows ``[first, end)``, whose times are sorted."""
        if end <= first:
            return first
        start_slot = first % self.capacity
        n = end - first
        head = self._times[start_slot : min(self.capacity, start_slot + n)]
        tail = self._times[: n - len(head)]
        if len(tail) == 0:
            in_tail = False
        elif side == "left":
            in_tail = t > head[-1]
        else:
            in_tail = t >= tail[0]
        if in_tail:
            return first + len(head) + int(np.searchsorted(tail, t, side=side))  # type: ignore[call-overload]
        return first + int(np.searchsorted(head, t, side=side))  # type: ignore[call-overload]


__all__ = ["SEVEN_DAYS_AT_1_HZ", "TrendBuffer"]
