"""Scenario files and seeded random disturbance generators (app.plant.scenarios)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.plant.scenario_sets import held_out_specs
from app.plant.scenarios import (
    HOUR_S,
    RECIPES,
    RO_RECIPE,
    RandomDisturbances,
    ScenarioError,
    ScenarioFile,
    read_scenario,
    sample_series,
    scenario_files,
    write_scenario,
)

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = REPO / "resources" / "scenarios"
HEADER = "t_s,feed_tds_gl,feed_temperature_c\n"


def _write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_keeps_values_and_metadata(tmp_path: Path) -> None:
    t = np.arange(0.0, 10 * HOUR_S, HOUR_S)
    cols = {"feed_tds_gl": 2.0 + 0.1 * np.sin(t / 5000.0), "feed_temperature_c": 15.0 + t / 1e4}
    path = write_scenario(tmp_path / "a" / "x.csv", t, cols, {"process": "ro", "note": "k"})
    table = read_scenario(path, required=["feed_tds_gl"], process="ro")
    assert table.meta == {"process": "ro", "note": "k"}
    np.testing.assert_array_equal(table.t_s, t)
    for name, col in cols.items():
        np.testing.assert_allclose(table.columns[name], col, rtol=1e-4)


def test_linear_interpolation_offsets_and_holding_the_ends(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "0,1.0,10\n100,3.0,20\n300,3.0,40\n")
    src = ScenarioFile(path, offsets_s=[0.0, 50.0])
    src.reset(2, np.random.default_rng(0))
    d = src.at(np.array([25.0, 25.0]))
    np.testing.assert_allclose(d["feed_tds_gl"], [1.5, 2.5])
    np.testing.assert_allclose(d["feed_temperature_c"], [12.5, 17.5])
    d = src.at(np.array([200.0, 1000.0]))
    np.testing.assert_allclose(d["feed_temperature_c"], [30.0, 40.0])
    d = src.at(np.array([-10.0, -100.0]))
    np.testing.assert_allclose(d["feed_tds_gl"], [1.0, 1.0])


def test_many_files_one_per_plant_on_different_grids(tmp_path: Path) -> None:
    a = _write(tmp_path, HEADER + "0,1.0,10\n100,2.0,10\n", "a.csv")
    b = _write(tmp_path, HEADER + "0,5.0,20\n30,5.0,20\n60,8.0,20\n", "b.csv")
    src = ScenarioFile([a, b])
    src.reset(3, np.random.default_rng(0))
    d = src.at(np.array([45.0, 45.0, 90.0]))
    np.testing.assert_allclose(d["feed_tds_gl"], [1.45, 6.5, 1.9])
    np.testing.assert_allclose(d["feed_temperature_c"], [10.0, 20.0, 10.0])


def test_wrap_repeats_the_series(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "0,1.0,10\n100,2.0,20\n")
    src = ScenarioFile(path, wrap=True)
    src.reset(1, np.random.default_rng(0))
    np.testing.assert_allclose(src.at(np.array([150.0]))["feed_tds_gl"], [1.5])


@pytest.mark.parametrize(
    ("text", "required", "expected"),
    [
        (
            HEADER + "0,1,10\n",
            ["feed_tds_gl", "fouling_factor"],
            "missing column(s) ['fouling_factor']",
        ),
        (
            HEADER + "0,1,10\n60,1,10\n60,1,10\n",
            (),
            "line 4, column 't_s': time 60 s does not increase",
        ),
        (HEADER + "0,1,10\n60,nan,10\n", (), "line 3, column 'feed_tds_gl': value is nan"),
        (HEADER + "0,1,10\n60,1,99\n", (), "line 3, column 'feed_temperature_c': 99 is outside"),
        (HEADER + "0,1,10\n60,abc,10\n", (), "line 3, column 'feed_tds_gl': 'abc' is not a number"),
        (HEADER + "0,1\n", (), "line 2 has 2 fields, the header has 3"),
        ("feed_tds_gl,t_s\n1,0\n", (), "the first column must be 't_s'"),
        (HEADER, (), "no data rows"),
        ("# process: ro\n", (), "no header row"),
    ],
)
def test_bad_files_are_rejected_naming_the_culprit(
    tmp_path: Path, text: str, required: list[str], expected: str
) -> None:
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(ScenarioError) as err:
        ScenarioFile(path, required=required or None, process="ro")
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_second_file_missing_a_column_is_named(tmp_path: Path) -> None:
    a = _write(tmp_path, HEADER + "0,1,10\n", "a.csv")
    b = _write(tmp_path, "t_s,feed_tds_gl\n0,1\n", "b.csv")
    required = ["feed_tds_gl", "feed_temperature_c"]
    with pytest.raises(
        ScenarioError, match=r"b\.csv: missing column\(s\) \['feed_temperature_c'\]"
    ):
        ScenarioFile([a, b], required=required)
    # Without a requirement the source serves the columns every file has.
    assert ScenarioFile([a, b]).names == ("feed_tds_gl",)


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        ScenarioFile(tmp_path / "nope.csv")
    with pytest.raises(ScenarioError, match="holds no"):
        scenario_files(tmp_path)


@pytest.mark.parametrize("process", sorted(RECIPES))
def test_same_seed_same_series_other_seed_other_series(process: str) -> None:
    _, a = sample_series(RandomDisturbances(process), 4, seed=7, days=3, step_s=1800)
    _, b = sample_series(RandomDisturbances(process), 4, seed=7, days=3, step_s=1800)
    _, c = sample_series(RandomDisturbances(process), 4, seed=8, days=3, step_s=1800)
    assert set(a) == set(RECIPES[process].names)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert np.all(np.isfinite(a[name]))
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_plant_series_does_not_depend_on_how_it_is_queried() -> None:
    a, b = RandomDisturbances("ro"), RandomDisturbances("ro")
    a.reset(3, np.random.default_rng(5))
    b.reset(3, np.random.default_rng(5))
    for t in np.arange(0.0, 12 * 86400.0, 1800.0):
        da = a.at(np.full(3, t))
        # Plant 1 of b lags behind (as after a masked reset in a vector env); 0 and 2 must agree.
        db = b.at(np.array([t, min(t, 86400.0), t]))
        for name in da:
            np.testing.assert_array_equal(da[name][[0, 2]], db[name][[0, 2]])


def test_masked_reset_redraws_only_the_masked_plants() -> None:
    src = RandomDisturbances("ro")
    src.reset(3, np.random.default_rng(1))
    before = src.at(np.full(3, 5 * HOUR_S))
    src.reset(3, np.random.default_rng(2), mask=np.array([False, True, False]))
    after = src.at(np.full(3, 5 * HOUR_S))
    assert after["feed_tds_gl"][0] == before["feed_tds_gl"][0]
    assert after["feed_tds_gl"][2] == before["feed_tds_gl"][2]
    assert after["feed_tds_gl"][1] != before["feed_tds_gl"][1]


def test_ro_generator_follows_the_recipe_statistics() -> None:
    t, s = sample_series(RandomDisturbances(RO_RECIPE), 64, seed=3, days=30, step_s=HOUR_S)
    days = s["feed_tds_gl"][:720].reshape(30, 24, 64)
    rel_day_swing = (days.max(axis=1) / days.min(axis=1)).mean()
    assert 1.05 < rel_day_swing < 1.6  # ±5–15 % diurnal plus walk
    temp = s["feed_temperature_c"]
    assert temp.min() >= 5.0 and temp.max() <= 35.0
    fouling = s["fouling_factor"]
    assert fouling.max() > 3.0  # events ×3–10 happen over 64 plant-months
    assert np.median(fouling) < 1.5
    tariff = s["tariff_eur_kwh"]
    hour = (t / HOUR_S) % 24
    assert tariff[(hour >= 17) & (hour < 21)].mean() > tariff[hour < 7].mean()


@pytest.mark.parametrize("process", ["ro", "hsbro", "uf"])
def test_held_out_set_loads(process: str) -> None:
    files = scenario_files(HELD_OUT / process)
    assert len(files) >= 10
    assert [f.stem for f in files] == sorted(s.name for s in held_out_specs(process))
    src = ScenarioFile(files, required=list(RECIPES[process].names), process=process)
    src.reset(len(files), np.random.default_rng(0))
    for t in (0.0, 3600.0, 1e9):
        for v in src.at(np.full(len(files), t)).values():
            assert np.all(np.isfinite(v))
    size = sum(f.stat().st_size for f in (HELD_OUT / process).iterdir())
    assert size < 400_000
