"""The one way controller threads reach the GUI thread: a queued signal on a QObject.

EventBus handlers run in the control context (the PLC loop thread). ``UiBridge.on`` wraps a GUI
handler so the event is re-emitted through a queued connection and the handler runs on the thread
that owns the bridge (the GUI thread). ``UiBridge.post`` does the same for any callable, which is how
``concurrent.futures.Future`` done-callbacks come back: submit, then react, never wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal, Slot

from app.controllers.events import EventBus

log = logging.getLogger(__name__)

E = TypeVar("E")
T = TypeVar("T")


class UiBridge(QObject):
    """Lives on the GUI thread; delivers controller events and posted callables there.

    Args:
        bus: The control core's event bus (``None`` before a core exists; ``attach`` later).
    """

    _sig_deliver = Signal(object, object)

    def __init__(self, bus: EventBus | None = None) -> None:
        super().__init__()
        self._bus = bus
        self._unsubscribe: list[Callable[[], None]] = []
        self._pending: list[tuple[type, Callable[[Any], None]]] = []
        self._closed = False
        self._sig_deliver.connect(self._on_deliver, Qt.ConnectionType.QueuedConnection)

    def attach(self, bus: EventBus) -> None:
        """Bind to ``bus`` and subscribe every handler registered before."""
        self._bus = bus
        pending, self._pending = self._pending, []
        for kind, handler in pending:
            self.on(kind, handler)

    def on(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Run ``handler(event)`` on the GUI thread for every ``kind`` event published."""
        if self._bus is None:
            self._pending.append((kind, handler))
            return
        self._unsubscribe.append(self._bus.subscribe(kind, partial(self._emit, handler)))

    def _emit(self, handler: Callable[[Any], None], event: object) -> None:
        if not self._closed:
            self._sig_deliver.emit(handler, event)

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the GUI thread soon; callable from any thread."""
        if not self._closed:
            self._sig_deliver.emit(_call_only, fn)

    def when_done(self, future: Future[T], handler: Callable[[Future[T]], None]) -> None:
        """Run ``handler(future)`` on the GUI thread once ``future`` is done (never blocks)."""
        future.add_done_callback(lambda f: self.post(partial(handler, f)))

    def close(self) -> None:
        """Unsubscribe everything; later events and posts are dropped."""
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    @Slot(object, object)
    def _on_deliver(self, handler: Callable[[Any], None], event: object) -> None:
        if self._closed:
            return
        try:
            handler(event)
        except Exception:
            log.exception("UI handler %r failed on %r", handler, event)


def _call_only(fn: Callable[[], None]) -> None:
    fn()


__all__ = ["UiBridge"]
