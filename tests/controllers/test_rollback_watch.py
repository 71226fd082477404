"""The rollback watch's triggers as pure arithmetic (the controller tests drive them end to end)."""

from __future__ import annotations

import pytest

from app.controllers.agent_rollback import RollbackSettings, RollbackWatch
from app.domain import AgentVersion

AGENT = AgentVersion(process="ro", version="ro-b", sha256="0" * 64)


def _watch(**settings: object) -> RollbackWatch:
    return RollbackWatch(AGENT, RollbackSettings(**settings), ())  # type: ignore[arg-type]


def _steps_to_trip(watch: RollbackWatch, new: float, old: float, limit: int = 200) -> int | None:
    for n in range(1, limit + 1):
        if watch.paired(new, old) is not None:
            return n
    return None


def test_a_steady_five_percent_loss_trips_the_paired_cusum_in_three_steps() -> None:
    # loss 0.5 EUR/h = 2.5 units of 2 % of 10 EUR/h; S grows by 2.5 - k = 2 per step, h = 5.
    watch = _watch()
    assert _steps_to_trip(watch, 9.5, 10.0) == 3
    trip = _watch().paired(5.0, 10.0)
    assert trip is not None and trip.trigger == "paired_kpi"
    assert "mean loss 5 EUR/h over 1 steps" in trip.reason


def test_losses_within_the_slack_and_gains_never_trip() -> None:
    assert _steps_to_trip(_watch(), 9.9, 10.0) is None  # 1 %: 0.5 units, equal to the slack k
    assert _steps_to_trip(_watch(), 11.0, 10.0) is None  # the new agent earns more
    watch = _watch()
    for _ in range(50):  # a gain followed by the same loss: the CUSUM restarts from zero
        watch.paired(12.0, 10.0)
    assert watch.paired_cusum == 0.0
    assert watch.paired_samples == 50


def test_the_unit_has_a_floor_for_rates_near_zero_and_the_trigger_can_be_off() -> None:
    # 2 % of 0.01 EUR/h would make noise a trip; the floor 0.1 EUR/h keeps a 0.04 loss inside k.
    assert _steps_to_trip(_watch(), -0.03, 0.01) is None
    assert _steps_to_trip(_watch(paired=False), 0.0, 10.0) is None
    assert _watch().paired(float("nan"), 10.0) is None


@pytest.mark.parametrize("name", ["paired_tolerance", "paired_min_eur_h"])
def test_paired_settings_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RollbackSettings(**{name: 0.0})  # type: ignore[arg-type]


def test_the_watch_reports_its_figures_as_an_event() -> None:
    watch = _watch(watch_steps=10)
    for _ in range(4):
        watch.step(None, constraint_hit=True)
    watch.step(None, abstained=True)
    watch.paired(9.8, 10.0)
    event = watch.stepped()
    assert (event.agent, event.state, event.steps, event.watch_steps) == (AGENT, "watching", 5, 10)
    assert event.sec_cusum is None  # no SEC baseline was given
    assert event.paired_samples == 1 and event.paired_mean_loss_eur_h == pytest.approx(0.2)
    assert event.paired_cusum == pytest.approx(0.5)  # 0.2 / (2 % of 10) - k
    assert event.constraint_hit_rate == pytest.approx(0.8) and event.abstention_rate == 0.2
    assert watch.stepped("passed").state == "passed"
