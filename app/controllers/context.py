"""Where controller code runs: the control context.

All controller state is confined to one thread. Controller entry points post work into the context;
``LoopContext`` runs it on the PLC asyncio loop thread, ``ManualContext`` runs it deterministically in
tests on a fake clock advanced by hand (no threads, no sleeps).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    """A scheduled call that can be cancelled."""

    def cancel(self) -> None:
        """Do not run the call if it has not run yet."""


class ControlContext(Protocol):
    """The single thread of control in which controllers run."""

    def post(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the context as soon as possible; callable from any thread."""

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> Cancellable:
        """Run ``fn`` in the context after ``delay_s`` seconds (context thread only)."""

    def monotonic(self) -> float:
        """The context's clock in seconds."""


class LoopContext:
    """A control context on an asyncio loop (the PLC I/O loop thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the context runs on."""
        return self._loop

    def post(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop thread as soon as possible."""
        self._loop.call_soon_threadsafe(fn)

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> Cancellable:
        """Run ``fn`` on the loop after ``delay_s`` seconds."""
        return self._loop.call_later(delay_s, fn)

    def monotonic(self) -> float:
        """``time.monotonic()``; the loop's clock."""
        return time.monotonic()


class _ManualHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualContext:
    """A deterministic control context for tests: a fake clock and an explicit run queue.

    ``post`` queues work; ``run_pending()`` runs everything that is due; ``advance(s)`` moves the clock
    forward, running timers in time order as it goes.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._ready: list[Callable[[], object]] = []
        self._timers: list[tuple[float, int, _ManualHandle, Callable[[], object]]] = []
        self._seq = itertools.count()

    def post(self, fn: Callable[[], object]) -> None:
        """Queue ``fn``; it runs at the next ``run_pending`` or ``advance``."""
        self._ready.append(fn)

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> Cancellable:
        """Run ``fn`` when the fake clock reaches now + ``delay_s``."""
        handle = _ManualHandle()
        heapq.heappush(self._timers, (self._now + max(0.0, delay_s), next(self._seq), handle, fn))
        return handle

    def monotonic(self) -> float:
        """The fake clock."""
        return self._now

    def run_pending(self) -> int:
        """Run queued work (including work it queues) and due timers; returns how many ran."""
        ran = 0
        while True:
            if self._ready:
                self._ready.pop(0)()
                ran += 1
                continue
            if self._timers and self._timers[0][0] <= self._now:
                _, _, handle, fn = heapq.heappop(self._timers)
                if not handle.cancelled:
                    fn()
                    ran += 1
                continue
            return ran

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``, running timers at their due times."""
        end = self._now + seconds
        self.run_pending()
        while self._timers and self._timers[0][0] <= end:
            self._now = max(self._now, self._timers[0][0])
            self.run_pending()
        self._now = end
        self.run_pending()
