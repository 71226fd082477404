"""The fallback chain: every (state, event) pair, each step down, recovery, and the hold clock."""

from __future__ import annotations

import itertools

import pytest

from app.agent_runtime.fallback import (
    ChainContext,
    CloudAnswer,
    FallbackChain,
    FallbackEvent,
    FallbackState,
    cloud_failure_event,
    judge_cloud_answer,
    next_state,
)
from app.config import ControlSettings

S, E = FallbackState, FallbackEvent
A, P, C, H, B = S.ACTIVE_LOCAL, S.PREVIOUS_LOCAL, S.CLOUD, S.SAFE_HOLD, S.BASE_CONTROL

# Expected next state with a previous agent and a cloud endpoint available, the recovery streak
# not yet complete and the hold not expired. Written out in full: one row per state.
TABLE: dict[FallbackState, dict[FallbackEvent, FallbackState]] = {
    A: {
        E.ACTIVE_OK: A, E.ACTIVE_ERROR: P, E.PACKAGE_CORRUPT: P, E.DEADLINE_MISS: P,
        E.OBSERVATION_REFUSED: H, E.PREVIOUS_OK: A, E.PREVIOUS_ERROR: A, E.CLOUD_OK: A,
        E.CLOUD_ERROR: A, E.CLOUD_TIMEOUT: A, E.CLOUD_STALE: A, E.HOLD_TIMEOUT: A,
        E.OPERATOR_RESUME: A,
    },
    P: {
        E.ACTIVE_OK: P, E.ACTIVE_ERROR: P, E.PACKAGE_CORRUPT: P, E.DEADLINE_MISS: C,
        E.OBSERVATION_REFUSED: H, E.PREVIOUS_OK: P, E.PREVIOUS_ERROR: C, E.CLOUD_OK: P,
        E.CLOUD_ERROR: P, E.CLOUD_TIMEOUT: P, E.CLOUD_STALE: P, E.HOLD_TIMEOUT: P,
        E.OPERATOR_RESUME: P,
    },
    C: {
        E.ACTIVE_OK: C, E.ACTIVE_ERROR: C, E.PACKAGE_CORRUPT: C, E.DEADLINE_MISS: C,
        E.OBSERVATION_REFUSED: H, E.PREVIOUS_OK: C, E.PREVIOUS_ERROR: C, E.CLOUD_OK: C,
        E.CLOUD_ERROR: H, E.CLOUD_TIMEOUT: H, E.CLOUD_STALE: H, E.HOLD_TIMEOUT: C,
        E.OPERATOR_RESUME: C,
    },
    H: {
        E.ACTIVE_OK: H, E.ACTIVE_ERROR: H, E.PACKAGE_CORRUPT: H, E.DEADLINE_MISS: H,
        E.OBSERVATION_REFUSED: H, E.PREVIOUS_OK: H, E.PREVIOUS_ERROR: H, E.CLOUD_OK: H,
        E.CLOUD_ERROR: H, E.CLOUD_TIMEOUT: H, E.CLOUD_STALE: H, E.HOLD_TIMEOUT: H,
        E.OPERATOR_RESUME: H,
    },
    B: {**dict.fromkeys(E, B), E.OPERATOR_RESUME: A},
}  # fmt: skip

FULL = ChainContext(
    previous_available=True, cloud_available=True, good_streak=1, recovery_steps=3,
    hold_expired=False,
)  # fmt: skip


def test_the_table_covers_every_pair() -> None:
    assert set(TABLE) == set(S)
    assert all(set(row) == set(E) for row in TABLE.values())


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_state_event_pair(state: FallbackState, event: FallbackEvent) -> None:
    assert next_state(state, event, FULL) is TABLE[state][event]


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_pair_with_the_streak_complete_and_the_hold_expired(
    state: FallbackState, event: FallbackEvent
) -> None:
    ctx = ChainContext(True, True, good_streak=3, recovery_steps=3, hold_expired=True)
    expected = TABLE[state][event]
    if state in (P, C, H) and event is E.ACTIVE_OK:
        expected = A  # recovery
    if state is H and event is E.HOLD_TIMEOUT:
        expected = B
    assert next_state(state, event, ctx) is expected


@pytest.mark.parametrize(
    ("previous", "cloud", "after_active_fault", "after_previous_fault"),
    [(True, True, P, C), (True, False, P, H), (False, True, C, C), (False, False, H, H)],
)
def test_unavailable_levels_are_skipped(
    previous: bool,
    cloud: bool,
    after_active_fault: FallbackState,
    after_previous_fault: FallbackState,
) -> None:
    ctx = ChainContext(previous, cloud, 0, 3, False)
    assert next_state(A, E.ACTIVE_ERROR, ctx) is after_active_fault
    assert next_state(P, E.PREVIOUS_ERROR, ctx) is after_previous_fault


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_whole_chain_down_to_base_control_and_back() -> None:
    clock = Clock()
    chain = FallbackChain(
        ControlSettings(safe_hold_s=300.0), clock, recovery_steps=3,
        previous_available=True, cloud_available=True,
    )  # fmt: skip
    (t,) = chain.handle(E.ACTIVE_ERROR, "ONNX Runtime failed")
    assert (t.old, t.new, t.event) == (A, P, E.ACTIVE_ERROR)
    assert "ONNX Runtime failed" in t.reason and "previous agent takes over" in t.reason
    (t,) = chain.handle(E.DEADLINE_MISS)
    assert (t.old, t.new) == (P, C)
    clock.now = 110.0
    (t,) = chain.handle(E.CLOUD_TIMEOUT)
    assert (t.old, t.new) == (C, H)
    assert t.hold_until == 410.0 and "for at most 300 s" in t.reason  # announced, time-boxed
    clock.now = 409.9
    assert chain.tick() == ()
    clock.now = 410.0
    (t,) = chain.tick()
    assert (t.old, t.new, t.event) == (H, B, E.HOLD_TIMEOUT)
    assert chain.hold_until is None
    # In base control healthy answers do not take control back: an operator does.
    for _ in range(10):
        assert chain.handle(E.ACTIVE_OK) == ()
    (t,) = chain.handle(E.OPERATOR_RESUME, "operator alice")
    assert (t.old, t.new) == (B, A)


@pytest.mark.parametrize("degraded_by", [E.ACTIVE_ERROR, E.OBSERVATION_REFUSED])
def test_recovery_needs_m_consecutive_healthy_answers(degraded_by: FallbackEvent) -> None:
    chain = FallbackChain(ControlSettings(), Clock(), recovery_steps=3, previous_available=True)
    chain.handle(degraded_by)
    degraded = chain.state
    assert degraded in (P, H)
    assert chain.handle(E.ACTIVE_OK) == ()
    assert chain.handle(E.ACTIVE_OK) == ()
    chain.handle(E.ACTIVE_ERROR)  # breaks the streak
    assert chain.state is degraded and chain.good_streak == 0
    assert chain.handle(E.ACTIVE_OK) == () and chain.handle(E.ACTIVE_OK) == ()
    (t,) = chain.handle(E.ACTIVE_OK)
    assert (t.old, t.new) == (degraded, A)
    assert "3 consecutive healthy answers" in t.reason


def test_recovery_from_the_cloud_state() -> None:
    chain = FallbackChain(ControlSettings(), Clock(), recovery_steps=2, cloud_available=True)
    (t,) = chain.handle(E.PACKAGE_CORRUPT)
    assert t.new is C
    assert chain.handle(E.CLOUD_OK) == ()
    chain.handle(E.ACTIVE_OK)
    (t,) = chain.handle(E.ACTIVE_OK)
    assert (t.old, t.new) == (C, A)


def test_an_event_after_the_hold_expired_ends_the_hold_first() -> None:
    clock = Clock()
    chain = FallbackChain(ControlSettings(safe_hold_s=60.0), clock, recovery_steps=1)
    chain.handle(E.OBSERVATION_REFUSED, "feed_ph: not finite (nan)")
    clock.now += 61.0
    transitions = chain.handle(E.ACTIVE_OK)
    assert [(t.old, t.new) for t in transitions] == [(H, B)]
    assert chain.state is B


def test_zero_safe_hold_hands_back_at_the_next_tick() -> None:
    chain = FallbackChain(ControlSettings(safe_hold_s=0.0), Clock())
    (t,) = chain.handle(E.DEADLINE_MISS)
    assert t.new is H and t.hold_until == t.at
    (t,) = chain.tick()
    assert t.new is B


def test_a_hold_timeout_event_before_the_deadline_changes_nothing() -> None:
    chain = FallbackChain(ControlSettings(), Clock())
    chain.handle(E.OBSERVATION_REFUSED)
    assert chain.handle(E.HOLD_TIMEOUT) == ()
    assert chain.state is H


def test_bad_recovery_steps() -> None:
    with pytest.raises(ValueError, match="recovery_steps"):
        FallbackChain(ControlSettings(), Clock(), recovery_steps=0)


def _answer(**kw: object) -> CloudAnswer:
    values: dict[str, object] = dict(
        action={"feed_pressure_sp_bar": 12.0}, policy_version="ro-1", deployment="blue",
        requested_at=10.0, received_at=11.0,
    )  # fmt: skip
    values.update(kw)
    return CloudAnswer(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "event", "why"),
    [
        (_answer(), E.CLOUD_OK, ""),
        (_answer(received_at=12.5), E.CLOUD_STALE, "took 2.5 s, budget 2 s"),
        (_answer(deployment="green"), E.CLOUD_STALE, "pinned 'blue'"),
        (_answer(policy_version="ro-0"), E.CLOUD_STALE, "expected 'ro-1'"),
        (_answer(action={}), E.CLOUD_STALE, "lacks feed_pressure_sp_bar"),
        (_answer(action={"feed_pressure_sp_bar": float("nan")}), E.CLOUD_STALE, "non-finite"),
    ],
)
def test_cloud_answers_are_judged(answer: CloudAnswer, event: FallbackEvent, why: str) -> None:
    got, reason = judge_cloud_answer(
        answer, expected_version="ro-1", pinned_deployment="blue", budget_s=2.0,
        action_tags=("feed_pressure_sp_bar",),
    )  # fmt: skip
    assert got is event
    assert why in reason


def test_cloud_failures() -> None:
    assert cloud_failure_event(TimeoutError()) is E.CLOUD_TIMEOUT
    assert cloud_failure_event(ConnectionError("refused")) is E.CLOUD_ERROR
