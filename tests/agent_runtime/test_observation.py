"""Observation vectors in manifest order and the OOD score."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from app.agent_runtime.errors import ObservationRefused
from app.agent_runtime.observation import ObservationBuilder
from app.domain import Quality, Sample
from tests.agent_runtime.conftest import (
    MEAN,
    OBS_TAGS,
    STD,
    TRAIN_HIGH,
    TRAIN_LOW,
    manifest_fields,
)


@pytest.fixture
def builder() -> ObservationBuilder:
    return ObservationBuilder(manifest_fields())


def _good(values: np.ndarray) -> dict[str, tuple[float, Quality]]:
    # Reverse insertion order: the builder must follow the manifest, not the mapping.
    return {
        t: (float(v), Quality.GOOD) for t, v in reversed(list(zip(OBS_TAGS, values, strict=True)))
    }


def test_builds_in_manifest_order(builder: ObservationBuilder) -> None:
    values = np.arange(len(OBS_TAGS), dtype=float) * 1.5
    mapping: dict[str, tuple[float, Quality] | Sample] = dict(_good(values))
    mapping["unrelated_tag"] = (99.0, Quality.BAD)
    mapping["feed_ph"] = Sample(
        "feed_ph", values[OBS_TAGS.index("feed_ph")], Quality.GOOD, datetime.now(UTC), 0.0
    )
    np.testing.assert_array_equal(builder.build(mapping), values)


def test_refusal_names_every_bad_tag(builder: ObservationBuilder) -> None:
    values = _good(MEAN)
    del values["feed_flow_m3h"]
    values["feed_ph"] = (7.0, Quality.BAD)
    values["tank_level_pct"] = (50.0, Quality.STALE)
    values["feed_orp_mv"] = (float("nan"), Quality.GOOD)
    values["hpp_power_kw"] = (float("inf"), Quality.GOOD)
    with pytest.raises(ObservationRefused) as exc:
        builder.build(values)
    assert exc.value.problems == {
        "feed_flow_m3h": "missing",
        "feed_ph": "quality bad",
        "feed_orp_mv": "not finite (nan)",
        "tank_level_pct": "quality stale",
        "hpp_power_kw": "not finite (inf)",
    }
    assert list(exc.value.problems) == [t for t in OBS_TAGS if t in exc.value.problems]
    assert "5 tag(s)" in str(exc.value)


def test_ood_in_distribution(builder: ObservationBuilder) -> None:
    score = builder.ood(MEAN)
    assert score.score == score.max_abs_z == 0.0
    assert score.rms_z == 0.0
    assert score.fraction_outside == 0.0 and score.outside_tags == ()

    rng = np.random.default_rng(1)
    inside = np.clip(MEAN + STD * rng.standard_normal(len(OBS_TAGS)) * 0.5, TRAIN_LOW, TRAIN_HIGH)
    typical = builder.ood(inside)
    assert typical.max_abs_z < 2.5 and typical.fraction_outside == 0.0


def test_ood_out_of_distribution(builder: ObservationBuilder) -> None:
    obs = MEAN.copy()
    i = OBS_TAGS.index("feed_conductivity_uscm")
    obs[i] = MEAN[i] + 6 * STD[i]
    j = OBS_TAGS.index("feed_temperature_c")
    obs[j] = MEAN[j] - 3 * STD[j]
    score = builder.ood(obs)
    assert score.max_abs_z == pytest.approx(6.0)
    assert score.worst_tag == "feed_conductivity_uscm"
    assert score.rms_z == pytest.approx(np.sqrt((36 + 9) / len(OBS_TAGS)))
    assert score.outside_tags == ("feed_conductivity_uscm", "feed_temperature_c")
    assert score.fraction_outside == pytest.approx(2 / len(OBS_TAGS))


def test_ood_rejects_bad_vectors(builder: ObservationBuilder) -> None:
    with pytest.raises(ObservationRefused, match="3 values, the manifest lists 19"):
        builder.ood(np.zeros(3))
    obs = MEAN.copy()
    obs[0] = np.nan
    with pytest.raises(ObservationRefused, match=OBS_TAGS[0]):
        builder.ood(obs)
