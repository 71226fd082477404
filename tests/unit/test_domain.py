"""Domain types: immutable, slot-based, and the few derived properties they carry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from app import domain as d

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def sample(tag: str, quality: d.Quality = d.Quality.GOOD, received: float = 100.0) -> d.Sample:
    return d.Sample(tag, 1.0, quality, NOW, received)


MESSAGE_TYPES = [
    obj
    for obj in vars(d).values()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == d.__name__
]


@pytest.mark.parametrize("kind", MESSAGE_TYPES, ids=lambda k: k.__name__)
def test_every_message_type_is_frozen_with_slots(kind: type) -> None:
    params = kind.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen, f"{kind.__name__} must be frozen: it crosses threads"
    assert hasattr(kind, "__slots__"), f"{kind.__name__} must use slots"


def test_sample_cannot_be_mutated() -> None:
    s = sample("feed_pressure_bar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.value = 2.0  # type: ignore[misc]


def test_only_good_quality_is_usable() -> None:
    assert [q for q in d.Quality if q.usable] == [d.Quality.GOOD]


def test_sample_age_is_never_negative() -> None:
    s = sample("x", received=100.0)
    assert s.age_s(103.5) == pytest.approx(3.5)
    assert s.age_s(99.0) == 0.0


def test_snapshot_reports_bad_and_stale_tags() -> None:
    snap = d.Snapshot(
        {
            "a": sample("a", received=99.0),
            "b": sample("b", d.Quality.NOT_A_NUMBER, received=99.0),
            "c": sample("c", received=90.0),
        },
        taken_ts=100.0,
    )
    assert snap.unusable(max_age_s=5.0) == {"b": "nan", "c": "stale"}
    assert snap.value("a") == 1.0
    with pytest.raises(KeyError, match="'zz' is not in the snapshot"):
        snap.value("zz")


def test_roles_are_ordered_by_authority() -> None:
    assert d.Role.VIEWER < d.Role.OPERATOR < d.Role.ENGINEER < d.Role.SUPERVISOR


def test_origin_constructors() -> None:
    assert d.Origin.operator("ann", d.Role.OPERATOR) == d.Origin(
        d.OriginKind.OPERATOR, "ann", d.Role.OPERATOR
    )
    assert d.Origin.agent("2026.11.1").kind is d.OriginKind.AGENT
    assert d.Origin.system("watchdog").role is None


def test_messages_are_hashable_values() -> None:
    a = d.Setpoint("feed_pressure_sp_bar", 12.0)
    assert a == d.Setpoint("feed_pressure_sp_bar", 12.0)
    assert len({a, d.Setpoint("feed_pressure_sp_bar", 12.0)}) == 1


def test_utc_now_is_aware() -> None:
    assert d.utc_now().tzinfo is UTC


def test_enums_round_trip_from_their_values() -> None:
    for enum in (d.Quality, d.Mode, d.RecommendationState, d.DecisionKind, d.AlarmState, d.Slot):
        for member in enum:
            assert enum(member.value) is member
