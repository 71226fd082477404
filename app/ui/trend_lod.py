"""Min/max levels of detail over a trend buffer, so a 7-day view draws thousands of points, not
millions.

Level 0 is the buffer itself (one row per second). Level ``k`` holds one bucket per ``factor**k``
rows with the minimum and maximum of each tag (peak decimation, so spikes survive). The levels are
extended incrementally from the rows the buffer gained since the last ``update`` (one row per second
in operation), so a redraw only slices small arrays. ``view`` picks the finest level that gives at
most ``max_buckets`` buckets over the requested span and returns a min/max interleaved series that
pyqtgraph draws as the envelope. NaN rows (no usable value) stay gaps: ``fmin``/``fmax`` ignore NaN
unless a whole bucket is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.controllers.trend_buffer import TrendBuffer
from app.domain import TagId

FloatArray = npt.NDArray[np.float64]


class _Level:
    """Buckets of one size: start time, min and max per tag; grown by doubling, trimmed by age."""

    def __init__(self, n_tags: int) -> None:
        self.n = 0
        self.times: FloatArray = np.empty(1024)
        self.mins: FloatArray = np.empty((1024, n_tags))
        self.maxs: FloatArray = np.empty((1024, n_tags))

    def extend(self, times: FloatArray, mins: FloatArray, maxs: FloatArray) -> None:
        need = self.n + len(times)
        if need > len(self.times):
            size = max(need, 2 * len(self.times))
            for name in ("times", "mins", "maxs"):
                old = getattr(self, name)
                new = np.empty((size, *old.shape[1:]))
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.times[self.n : need] = times
        self.mins[self.n : need] = mins
        self.maxs[self.n : need] = maxs
        self.n = need

    def drop_before(self, t: float) -> None:
        cut = int(np.searchsorted(self.times[: self.n], t, side="left"))
        if cut > self.n // 4:  # compact rarely: a copy costs as much as the whole level
            keep = self.n - cut
            for name in ("times", "mins", "maxs"):
                arr = getattr(self, name)
                arr[:keep] = arr[cut : self.n]
            self.n = keep


class TrendLod:
    """Levels of detail for ``tags`` of ``buffer``; ``update`` from the GUI thread's timer.

    Args:
        buffer: The core's trend buffer (read only).
        tags: Columns to keep.
        factor: Rows per bucket grow by this factor from one level to the next.
        levels: Number of levels above the raw rows (8, 64, 512, 4096 rows with the defaults).
    """

    def __init__(
        self, buffer: TrendBuffer, tags: Sequence[TagId], factor: int = 8, levels: int = 4
    ) -> None:
        if factor < 2 or levels < 1:
            raise ValueError(f"factor must be >= 2 and levels >= 1, got {factor}, {levels}")
        self.buffer = buffer
        self.tags = tuple(tags)
        self.factor = factor
        self.sizes = tuple(factor ** (k + 1) for k in range(levels))
        n_tags = len(self.tags)
        self._levels = [_Level(n_tags) for _ in self.sizes]
        # Entries of the finer level not yet making up a whole bucket of this level, with the
        # time of the last raw row each one covers.
        self._pending: list[tuple[FloatArray, FloatArray, FloatArray, FloatArray]] = [
            (np.empty(0), np.empty(0), np.empty((0, n_tags)), np.empty((0, n_tags)))
            for _ in self.sizes
        ]
        self._covered = [-math.inf for _ in self.sizes]
        """Time of the last raw row included in each level's buckets."""
        self.first_time = math.nan
        self.last_time = -math.inf
        self.rows_seen = 0

    def update(self) -> int:
        """Take in the rows the buffer gained since the last call; returns how many."""
        last = self.buffer.last_time
        if math.isnan(last) or last <= self.last_time:
            return 0
        times, values = self.buffer.window_many(self.tags, self.last_time, math.inf)
        fresh = times > self.last_time
        times, values = times[fresh], values[fresh]
        if len(times) == 0:
            return 0
        if math.isnan(self.first_time):
            self.first_time = float(times[0])
        self.last_time = float(times[-1])
        self.rows_seen += len(times)
        self._push(0, times, times, values, values)
        if self.rows_seen > self.buffer.capacity:
            oldest = self.last_time - (self.last_time - self.first_time) * (
                self.buffer.capacity / self.rows_seen
            )
            for level in self._levels:
                level.drop_before(oldest)
        return len(times)

    def _push(
        self, k: int, times: FloatArray, ends: FloatArray, mins: FloatArray, maxs: FloatArray
    ) -> None:
        """Add finer entries to level ``k``'s pending ones and close every complete bucket."""
        pt, pe, pmin, pmax = self._pending[k]
        t = np.concatenate([pt, times])
        e = np.concatenate([pe, ends])
        lo = np.concatenate([pmin, mins])
        hi = np.concatenate([pmax, maxs])
        step = self.factor
        whole = len(t) // step * step
        self._pending[k] = (t[whole:], e[whole:], lo[whole:], hi[whole:])
        if whole == 0:
            return
        n_tags = len(self.tags)
        bt = t[:whole:step]
        be = e[step - 1 : whole : step]
        bmin = np.fmin.reduce(lo[:whole].reshape(-1, step, n_tags), axis=1)
        bmax = np.fmax.reduce(hi[:whole].reshape(-1, step, n_tags), axis=1)
        self._levels[k].extend(bt, bmin, bmax)
        self._covered[k] = float(be[-1])
        if k + 1 < len(self._levels):
            self._push(k + 1, bt, be, bmin, bmax)

    def rows_per_second(self) -> float:
        """Mean row rate seen so far (1 at the default 1 Hz supervision tick)."""
        span = self.last_time - self.first_time
        return (self.rows_seen - 1) / span if self.rows_seen > 1 and span > 0 else 1.0

    def view(self, t0: float, t1: float, max_buckets: int) -> tuple[FloatArray, FloatArray, int]:
        """Times (n,) and values (n, tags) over ``[t0, t1]``, min/max interleaved when decimated.

        Returns:
            ``(times, values, rows_per_bucket)``; ``rows_per_bucket`` is 1 for raw rows.
        """
        rows = max(0.0, t1 - t0) * self.rows_per_second()
        level = None
        if rows > max_buckets:
            level = len(self.sizes) - 1
            for k, size in enumerate(self.sizes):
                if rows / size <= max_buckets:
                    level = k
                    break
        if level is None or self._levels[level].n == 0:
            times, values = self.buffer.window_many(self.tags, t0, t1)
            return times, values, 1
        lv = self._levels[level]
        lo = int(np.searchsorted(lv.times[: lv.n], t0, side="left"))
        hi = int(np.searchsorted(lv.times[: lv.n], t1, side="right"))
        n = hi - lo
        times = np.repeat(lv.times[lo:hi], 2)
        values = np.empty((2 * n, len(self.tags)))
        values[0::2] = lv.mins[lo:hi]
        values[1::2] = lv.maxs[lo:hi]
        # Raw rows newer than the level's last complete bucket.
        covered = self._covered[level]
        if covered < t1:
            tail_t, tail_v = self.buffer.window_many(self.tags, max(t0, covered), t1)
            newer = tail_t > covered
            times = np.concatenate([times, tail_t[newer]])
            values = np.concatenate([values, tail_v[newer]])
        return times, values, self.sizes[level]


__all__ = ["TrendLod"]
