"""Coalesce refresh requests: at most one fetch in flight, bursts collapse into one follow-up.

Panels refresh on every core event, and events come in bursts (an alarm flood, a shadow step per
control cycle). Starting a fetch per event would queue stale work on the core; instead a request
that arrives while a fetch is on its way only marks that one more fetch is wanted after it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from app.ui.bridge import UiBridge

T = TypeVar("T")


class CoalescedRefresh(Generic[T]):
    """Runs ``fetch`` on request, with never more than one fetch outstanding.

    Requests made while a fetch is in flight are merged: when it completes, ``on_done`` runs and
    then exactly one more fetch starts, however many requests came in meanwhile.

    Args:
        bridge: Delivers the fetch's completion on the GUI thread.
        fetch: Starts the fetch and returns its future (called on the GUI thread).
        on_done: Handles the completed future on the GUI thread, failed or not.
    """

    def __init__(
        self,
        bridge: UiBridge,
        fetch: Callable[[], Future[T]],
        on_done: Callable[[Future[T]], None],
    ) -> None:
        self._bridge = bridge
        self._fetch = fetch
        self._on_done = on_done
        self._in_flight = False
        self._again = False

    @property
    def in_flight(self) -> bool:
        """Whether a fetch has been started and its result not handled yet."""
        return self._in_flight

    def request(self) -> None:
        """Start a fetch now, or once the one in flight has been handled."""
        if self._in_flight:
            self._again = True
            return
        # fetch() before raising the flag: if it throws, later requests must still be able to start.
        future = self._fetch()
        self._in_flight = True
        self._bridge.when_done(future, self._handle)

    def _handle(self, future: Future[T]) -> None:
        self._in_flight = False
        try:
            self._on_done(future)
        finally:
            if self._again:
                self._again = False
                self.request()


__all__ = ["CoalescedRefresh"]
