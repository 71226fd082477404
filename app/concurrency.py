"""Thread owners: an asyncio loop in a named thread, and a one-thread serial executor.

Each external resource belongs to exactly one thread (architecture.md §5). Other threads reach it by
posting work and receiving a ``concurrent.futures.Future``; nothing here blocks the caller except the
explicit ``stop``/``join`` calls made during shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in its own named daemon thread.

    Usage::

        loop = LoopThread("plc-io")
        loop.start()
        fut = loop.submit(driver.read(tags))      # concurrent.futures.Future
        loop.call_soon(callback, arg)              # run a plain callable on the loop thread
        loop.stop()                                # cancels remaining tasks, joins the thread
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop; raises ``RuntimeError`` if the thread is not started."""
        if self._loop is None:
            raise RuntimeError(f"loop thread {self.name!r} is not running")
        return self._loop

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._thread is not None and self._thread.is_alive()

    def in_thread(self) -> bool:
        """True when called from this loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self) -> None:
        """Start the thread and wait until its loop runs."""
        if self._thread is not None:
            raise RuntimeError(f"loop thread {self.name!r} was already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the loop thread as soon as possible (thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result. Never call this from the GUI thread."""
        if self.in_thread():
            raise RuntimeError("LoopThread.run() called from its own thread would deadlock")
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, cancel its remaining tasks and join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("loop thread %s did not stop within %.1f s", self.name, timeout)
        self._thread = None
        self._loop = None


_STOP = object()
_Job = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class SerialWorker:
    """A single thread that runs submitted callables one after another.

    Because every job runs on the same thread in submission order, state owned by the worker (ONNX
    sessions, agent slots) needs no locks, and a job such as ``promote`` is atomic with respect to
    inference jobs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        """Start the worker thread."""
        if self._started:
            raise RuntimeError(f"worker {self.name!r} was already started")
        self._started = True
        self._thread.start()

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread.is_alive()

    def in_thread(self) -> bool:
        """True when called from the worker's own thread."""
        return threading.current_thread() is self._thread

    def submit(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args, **kwargs)``; the future holds its result or exception."""
        if not self._started:
            raise RuntimeError(f"worker {self.name!r} is not started")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args, kwargs = cast(_Job, job)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - delivered to the submitter
                future.set_exception(exc)
            else:
                future.set_result(result)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued jobs, stop the thread and join it."""
        if not self._started or not self._thread.is_alive():
            return
        self._jobs.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("worker %s did not stop within %.1f s", self.name, timeout)
