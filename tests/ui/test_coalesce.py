"""CoalescedRefresh: one fetch in flight at most; a burst of requests gives one follow-up fetch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import pytest
from pytestqt.qtbot import QtBot

from app.ui.alarms_panel import AlarmsPanel, AlarmView
from app.ui.bridge import UiBridge
from app.ui.coalesce import CoalescedRefresh

WAIT_MS = 5_000


class FakeCore:
    """Hands out futures the test completes by hand, and records what the GUI thread saw."""

    def __init__(self) -> None:
        self.started: list[Future[int]] = []
        self.handled: list[int | BaseException] = []
        self.handled_on: list[threading.Thread] = []

    def fetch(self) -> Future[int]:
        future: Future[int] = Future()
        self.started.append(future)
        return future

    def on_done(self, future: Future[int]) -> None:
        self.handled_on.append(threading.current_thread())
        exc = future.exception()
        self.handled.append(exc if exc is not None else future.result())


@pytest.fixture
def bridge(qtbot: QtBot) -> UiBridge:
    return UiBridge()


def test_a_burst_while_in_flight_gives_exactly_one_follow_up(
    qtbot: QtBot, bridge: UiBridge
) -> None:
    core = FakeCore()
    refresh = CoalescedRefresh(bridge, core.fetch, core.on_done)

    for _ in range(25):
        refresh.request()
    assert len(core.started) == 1
    assert refresh.in_flight

    core.started[0].set_result(1)
    qtbot.waitUntil(lambda: len(core.started) == 2, timeout=WAIT_MS)
    assert core.handled == [1]
    assert refresh.in_flight

    core.started[1].set_result(2)
    qtbot.waitUntil(lambda: not refresh.in_flight, timeout=WAIT_MS)
    assert core.handled == [1, 2]
    qtbot.wait(50)  # any stray third fetch would have been posted by now
    assert len(core.started) == 2


def test_a_request_after_completion_fetches_again(qtbot: QtBot, bridge: UiBridge) -> None:
    core = FakeCore()
    refresh = CoalescedRefresh(bridge, core.fetch, core.on_done)

    refresh.request()
    core.started[0].set_result(7)
    qtbot.waitUntil(lambda: not refresh.in_flight, timeout=WAIT_MS)
    assert len(core.started) == 1

    refresh.request()
    assert len(core.started) == 2
    core.started[1].set_result(8)
    qtbot.waitUntil(lambda: not refresh.in_flight, timeout=WAIT_MS)
    assert core.handled == [7, 8]


def test_completion_from_a_worker_thread_is_handled_on_the_gui_thread(
    qtbot: QtBot, bridge: UiBridge
) -> None:
    core = FakeCore()
    refresh = CoalescedRefresh(bridge, core.fetch, core.on_done)
    refresh.request()
    worker = threading.Thread(target=core.started[0].set_result, args=(3,))
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: core.handled == [3], timeout=WAIT_MS)
    assert core.handled_on == [threading.main_thread()]


def test_a_failed_fetch_is_handed_over_and_the_pending_request_still_runs(
    qtbot: QtBot, bridge: UiBridge
) -> None:
    core = FakeCore()
    refresh = CoalescedRefresh(bridge, core.fetch, core.on_done)
    refresh.request()
    refresh.request()
    boom = ConnectionError("core gone")
    core.started[0].set_exception(boom)
    qtbot.waitUntil(lambda: len(core.started) == 2, timeout=WAIT_MS)
    assert core.handled == [boom]


def test_a_fetch_that_throws_does_not_wedge_later_requests(bridge: UiBridge) -> None:
    core = FakeCore()
    calls = 0

    def flaky() -> Future[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("link down")
        return core.fetch()

    refresh = CoalescedRefresh(bridge, flaky, core.on_done)
    with pytest.raises(RuntimeError, match="link down"):
        refresh.request()
    assert not refresh.in_flight
    refresh.request()
    assert len(core.started) == 1


def _hand_completed_fetch() -> tuple[list[Future[AlarmView]], Callable[[], Future[AlarmView]]]:
    """A fetch whose futures the test completes; the list holds every fetch started."""
    started: list[Future[AlarmView]] = []

    def fetch() -> Future[AlarmView]:
        future: Future[AlarmView] = Future()
        started.append(future)
        return future

    return started, fetch


def test_alarms_panel_coalesces_a_flood_of_refreshes(qtbot: QtBot, bridge: UiBridge) -> None:
    started, fetch = _hand_completed_fetch()
    panel = AlarmsPanel(fetch, bridge)
    qtbot.addWidget(panel)
    for _ in range(10):
        panel.refresh()
    assert len(started) == 1
    started[0].set_result(AlarmView((), ()))
    qtbot.waitUntil(lambda: len(started) == 2, timeout=WAIT_MS)
    latest = AlarmView((), ())
    started[1].set_result(latest)
    qtbot.waitUntil(lambda: panel.view is latest, timeout=WAIT_MS)
    qtbot.wait(50)  # any stray third fetch would have been posted by now
    assert len(started) == 2


def test_alarms_panel_says_when_its_list_is_not_current(qtbot: QtBot, bridge: UiBridge) -> None:
    started, fetch = _hand_completed_fetch()
    panel = AlarmsPanel(fetch, bridge)
    qtbot.addWidget(panel)
    panel.refresh()
    started[0].set_exception(TimeoutError("core busy"))
    qtbot.waitUntil(lambda: "unavailable" in panel.summary.text(), timeout=WAIT_MS)
    assert "core busy" in panel.summary.text()
    panel.refresh()
    started[1].set_result(AlarmView((), ()))
    qtbot.waitUntil(lambda: "unavailable" not in panel.summary.text(), timeout=WAIT_MS)
