"""Run a driver coroutine from controller code, in whatever control context the core runs in.

On a :class:`~app.controllers.context.LoopContext` the coroutine becomes a task on the PLC loop. On
any other context (the tests' :class:`~app.controllers.context.ManualContext`) it is driven to its
end at once: the fake driver's coroutines never suspend, so controller tests stay synchronous and
deterministic. Either way the caller gets a ``concurrent.futures.Future`` whose callbacks run in the
control context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from app.controllers.context import ControlContext, LoopContext

T = TypeVar("T")


class SuspendedCoroutine(RuntimeError):
    """A coroutine awaited real I/O in a context that has no event loop."""


class TaskCancelledError(RuntimeError):
    """The task was cancelled, e.g. because the PLC loop is shutting down."""


def spawn(ctx: ControlContext, coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Start ``coro`` in ``ctx``; call from the control context only.

    Returns:
        A future with the coroutine's result or exception. A cancelled task (loop shutdown)
        completes it with ``TaskCancelledError`` rather than cancelling it, so done-callbacks can
        always call ``exception()``.
    """
    done: Future[T] = Future()
    if isinstance(ctx, LoopContext):
        task = asyncio.ensure_future(coro, loop=ctx.loop)

        def copy(t: asyncio.Future[T]) -> None:
            if t.cancelled():
                done.set_exception(TaskCancelledError(f"{coro!r} was cancelled"))
            elif (exc := t.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(t.result())

        task.add_done_callback(copy)
        return done
    try:
        coro.send(None)
    except StopIteration as stop:
        done.set_result(stop.value)
    except BaseException as exc:  # noqa: BLE001 - delivered through the future
        done.set_exception(exc)
    else:
        coro.close()
        done.set_exception(
            SuspendedCoroutine(f"{coro!r} suspended; only a LoopContext can run real I/O")
        )
    return done


__all__ = ["SuspendedCoroutine", "TaskCancelledError", "spawn"]
