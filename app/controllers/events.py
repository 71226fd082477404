"""Typed publish/subscribe over the event dataclasses of ``app.domain``.

Handlers run synchronously in the publisher's thread (the control context). A handler that raises is
logged and skipped; it never stops delivery to the others. The UI subscribes through its bridge, which
re-posts each event onto the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class EventBus:
    """Deliver events to the handlers subscribed to their exact type."""

    def __init__(self) -> None:
        self._subs: dict[type, list[Callable[[Any], None]]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for every published event of type ``kind``.

        Returns:
            A function that removes the subscription.
        """
        with self._lock:
            self._subs[kind].append(handler)
        return partial(self._unsubscribe, kind, handler)

    def _unsubscribe(self, kind: type, handler: Callable[[Any], None]) -> None:
        with self._lock:
            handlers = self._subs.get(kind, [])
            if handler in handlers:
                handlers.remove(handler)

    def publish(self, event: object) -> None:
        """Deliver ``event`` to its subscribers, in subscription order."""
        with self._lock:
            handlers = tuple(self._subs.get(type(event), ()))
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed on %r", handler, event)
