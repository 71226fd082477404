"""The event bus and the control contexts."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from app.concurrency import LoopThread
from app.controllers.context import LoopContext, ManualContext
from app.controllers.events import EventBus


@dataclass(frozen=True, slots=True)
class Ping:
    n: int


@dataclass(frozen=True, slots=True)
class Pong:
    n: int


def test_bus_delivers_by_exact_type_in_order() -> None:
    bus = EventBus()
    got: list[object] = []
    bus.subscribe(Ping, lambda e: got.append(("a", e.n)))
    bus.subscribe(Ping, lambda e: got.append(("b", e.n)))
    bus.subscribe(Pong, lambda e: got.append(("pong", e.n)))
    bus.publish(Ping(1))
    assert got == [("a", 1), ("b", 1)]


def test_failing_handler_does_not_stop_delivery(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    got: list[int] = []

    def broken(_: Ping) -> None:
        raise RuntimeError("boom")

    bus.subscribe(Ping, broken)
    bus.subscribe(Ping, lambda e: got.append(e.n))
    bus.publish(Ping(7))
    assert got == [7]
    assert "event handler" in caplog.text
    assert "boom" in caplog.text


def test_unsubscribe() -> None:
    bus = EventBus()
    got: list[int] = []
    unsubscribe = bus.subscribe(Ping, lambda e: got.append(e.n))
    bus.publish(Ping(1))
    unsubscribe()
    unsubscribe()
    bus.publish(Ping(2))
    assert got == [1]


def test_manual_context_runs_timers_in_time_order() -> None:
    ctx = ManualContext(start=0.0)
    log: list[tuple[float, str]] = []
    ctx.call_later(5, lambda: log.append((ctx.monotonic(), "b")))
    ctx.call_later(1, lambda: log.append((ctx.monotonic(), "a")))
    cancelled = ctx.call_later(3, lambda: log.append((ctx.monotonic(), "never")))
    cancelled.cancel()
    ctx.post(lambda: log.append((ctx.monotonic(), "posted")))
    ctx.advance(4)
    assert log == [(0.0, "posted"), (1.0, "a")]
    ctx.advance(10)
    assert log[-1] == (5.0, "b")
    assert ctx.monotonic() == 14.0


def test_manual_context_timer_can_reschedule_itself() -> None:
    ctx = ManualContext(start=0.0)
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(ctx.monotonic())
        ctx.call_later(1.0, tick)

    ctx.call_later(1.0, tick)
    ctx.advance(3.5)
    assert ticks == [1.0, 2.0, 3.0]


def test_loop_context_runs_posted_work_on_the_loop_thread() -> None:
    thread = LoopThread("ctx-test")
    thread.start()
    try:
        ctx = LoopContext(thread.loop)
        seen = threading.Event()
        names: list[str] = []

        def work() -> None:
            names.append(threading.current_thread().name)
            ctx.call_later(0.01, seen.set)

        ctx.post(work)
        assert seen.wait(5)
        assert names == ["ctx-test"]
        assert thread.run(asyncio.sleep(0, result=1)) == 1
    finally:
        thread.stop()
