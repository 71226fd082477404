"""The held-out scenario sets shipped in ``resources/scenarios/<process>/``.

Every file is drawn by ``RandomDisturbances`` from a fixed recipe and seed, so the set is
reproducible bit for bit. Regenerate it with::

    .venv/bin/python -m app.plant.scenario_sets --process all --out resources/scenarios
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from app.plant.scenarios import (
    HOUR_S,
    HSBRO_RECIPE,
    RECIPES,
    RO_RECIPE,
    UF_RECIPE,
    Events,
    RandomDisturbances,
    Recipe,
    ScenarioError,
    Signal,
    Tariff,
    sample_series,
    write_scenario,
)


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """One file of a held-out set.

    Attributes:
        name: File stem.
        description: One line for the README and the file header.
        recipe: Generator recipe.
        days: Length.
        step_s: Row spacing (coarse rows keep the set small; values are interpolated linearly).
        seed: Seed of ``numpy.random.default_rng`` for the draw.
    """

    name: str
    description: str
    recipe: Recipe
    days: float
    step_s: float
    seed: int


def _season(recipe: Recipe, day: float) -> Recipe:
    return replace(recipe, start_day=(day, day))


_RO_STEADY = Recipe(
    process="ro",
    signals={
        "feed_tds_gl": Signal(base=(2.0, 2.0), low=0.3, high=6.0),
        "feed_temperature_c": Signal(base=(20.0, 20.0), low=5.0, high=35.0),
        "fouling_factor": Signal(base=(1.0, 1.0), low=0.2, high=20.0),
        "demand_m3h": Signal(base=(18.0, 18.0), low=0.0, high=60.0),
        "feed_ph": Signal(base=(7.5, 7.5), low=5.5, high=9.0),
        "feed_orp_mv": Signal(base=(220.0, 220.0), low=50.0, high=450.0),
    },
    tariff=Tariff(scale=(1.0, 1.0)),
    start_day=(100.0, 100.0),
    start_weekday=(0, 0),
)
"""Constant brackish feed at 20 °C with the nominal tariff: the regression anchor."""


def _ro_specs() -> list[ScenarioSpec]:
    r = RO_RECIPE
    quiet = r.with_signal("fouling_factor", events=None)
    storms = Events(per_day=0.25, factor=(3.0, 10.0), hours=(3.0, 72.0))
    rows: list[tuple[str, str, Recipe]] = [
        ("winter", "January: 8-14 °C feed, nominal salinity", _season(r, 15)),
        ("spring", "April: rising temperature", _season(r, 105)),
        ("summer", "July: 24-30 °C feed", _season(r, 196)),
        ("autumn", "October: falling temperature", _season(r, 288)),
        (
            "high_salinity",
            "Feed 3.5-4.5 g/L with strong diurnal swings (saline intrusion)",
            _season(r.with_signal("feed_tds_gl", base=(3.5, 4.5), diurnal_rel=(0.15, 0.25)), 150),
        ),
        (
            "salinity_step",
            "Salinity +60 % from day 10 to day 20 (source switch)",
            _season(r.with_signal("feed_tds_gl", steps=((240.0, 1.6), (480.0, 1 / 1.6))), 120),
        ),
        (
            "fouling_event",
            "Algal bloom: fouling x8 for 3 days from day 6",
            _season(quiet.with_signal("fouling_factor", scheduled=((144.0, 72.0, 8.0),)), 170),
        ),
        (
            "fouling_storms",
            "Frequent fouling events (one every 4 days on average, x3-10, hours to days)",
            _season(r.with_signal("fouling_factor", events=storms), 230),
        ),
        (
            "startup",
            "Commissioning in late winter: demand ramps up from 30 % over 3 days",
            _season(r.with_signal("demand_m3h", ramp=(0.3, 72.0)), 40),
        ),
        (
            "high_demand",
            "Peak season: demand 22-26 m³/h, warm feed",
            _season(r.with_signal("demand_m3h", base=(22.0, 26.0)), 210),
        ),
        ("steady", "Steady reference: constant 2 g/L, 20 °C, no events", _RO_STEADY),
    ]
    specs = [
        ScenarioSpec(f"ro_{i:02d}_{name}", desc, rec, 30.0, 2 * HOUR_S, 300 + i)
        for i, (name, desc, rec) in enumerate(rows, start=1)
    ]
    specs.append(
        ScenarioSpec(
            "ro_12_long_fouling",
            "60 days under doubled fouling propensity: cleaning timing matters",
            _season(quiet.with_signal("fouling_factor", base=(2.0, 2.0)), 260),
            60.0,
            4 * HOUR_S,
            312,
        )
    )
    return specs


def _hsbro_specs() -> list[ScenarioSpec]:
    rows: list[tuple[str, tuple[float, float], tuple[float, float], tuple[float, float]]] = [
        ("strong_full", (10.0, 10.0), (2500.0, 2500.0), (30.0, 30.0)),
        ("weak_full", (20.0, 20.0), (2500.0, 2500.0), (30.0, 30.0)),
        ("nominal", (15.0, 15.0), (2000.0, 2000.0), (30.0, 30.0)),
        ("strong_small_cold", (12.0, 12.0), (1500.0, 1500.0), (28.0, 28.0)),
        ("weak_small_warm", (18.0, 18.0), (1500.0, 1500.0), (32.0, 32.0)),
        ("random_a", (10.0, 20.0), (1500.0, 2500.0), (28.0, 32.0)),
        ("random_b", (10.0, 20.0), (1500.0, 2500.0), (28.0, 32.0)),
        ("random_c", (10.0, 20.0), (1500.0, 2500.0), (28.0, 32.0)),
        ("strong_warm", (11.0, 11.0), (2400.0, 2400.0), (31.5, 31.5)),
        ("startup_cold", (16.0, 16.0), (1800.0, 1800.0), (28.0, 28.0)),
    ]
    descriptions = {
        "strong_full": "Strongest feed (bath/10), full 2500 L tank, 30 °C",
        "weak_full": "Weakest feed (bath/20), full tank, 30 °C",
        "nominal": "Nominal feed (bath/15), 2000 L, 30 °C",
        "strong_small_cold": "Strong feed (bath/12), small 1500 L batch, 28 °C",
        "weak_small_warm": "Weak feed (bath/18), small batch, 32 °C",
        "random_a": "Random draw: bath/U(10..20), 1500-2500 L, 28-32 °C",
        "random_b": "Random draw: bath/U(10..20), 1500-2500 L, 28-32 °C",
        "random_c": "Random draw: bath/U(10..20), 1500-2500 L, 28-32 °C",
        "strong_warm": "Strong feed (bath/11), 2400 L, 31.5 °C: the pressure cap binds",
        "startup_cold": "First batch of the day: cold rig at 28 °C, bath/16, 1800 L",
    }
    specs = []
    for i, (name, dilution, tank, temp) in enumerate(rows, start=1):
        rec = HSBRO_RECIPE.with_signal("feed_dilution", base=dilution)
        rec = rec.with_signal("feed_tank_volume_l", base=tank)
        rec = rec.with_signal("feed_temperature_c", base=temp)
        specs.append(
            ScenarioSpec(f"hsbro_{i:02d}_{name}", descriptions[name], rec, 0.5, 300.0, 400 + i)
        )
    return specs


def _uf_specs() -> list[ScenarioSpec]:
    r = UF_RECIPE
    quiet = r.with_signal("feed_turbidity_ntu", events=None)
    frequent = Events(per_day=0.33, factor=(3.0, 10.0), hours=(2.0, 48.0))
    rows: list[tuple[str, str, Recipe]] = [
        ("winter", "January: cold feed (viscosity raises TMP)", _season(r, 15)),
        ("spring", "April", _season(r, 105)),
        ("summer", "July: warm feed", _season(r, 196)),
        ("autumn", "October", _season(r, 288)),
        (
            "storm",
            "Storm: turbidity x10 for 36 h from day 4",
            _season(quiet.with_signal("feed_turbidity_ntu", scheduled=((96.0, 36.0, 10.0),)), 300),
        ),
        (
            "frequent_events",
            "Turbidity events every 3 days on average (x3-10, 2-48 h)",
            _season(r.with_signal("feed_turbidity_ntu", events=frequent), 250),
        ),
        (
            "high_solids",
            "Dirty source: base turbidity 20-30 NTU",
            _season(r.with_signal("feed_turbidity_ntu", base=(20.0, 30.0)), 180),
        ),
        (
            "clean",
            "Clean source: 1-3 NTU, no events",
            _season(quiet.with_signal("feed_turbidity_ntu", base=(1.0, 3.0)), 130),
        ),
        (
            "startup",
            "Commissioning: demand ramps up from 30 % over 2 days",
            _season(r.with_signal("demand_m3h", ramp=(0.3, 48.0)), 60),
        ),
        (
            "high_demand",
            "Peak demand 110-130 m³/h, warm feed",
            _season(r.with_signal("demand_m3h", base=(110.0, 130.0)), 200),
        ),
    ]
    return [
        ScenarioSpec(f"uf_{i:02d}_{name}", desc, rec, 14.0, HOUR_S, 500 + i)
        for i, (name, desc, rec) in enumerate(rows, start=1)
    ]


def held_out_specs(process: str) -> list[ScenarioSpec]:
    """The held-out scenario set of ``process``.

    Raises:
        ScenarioError: No set is defined for ``process``.
    """
    builders = {"ro": _ro_specs, "hsbro": _hsbro_specs, "uf": _uf_specs}
    if process not in builders:
        known = ", ".join(sorted(builders))
        raise ScenarioError(f"no held-out scenario set for process {process!r}; known: {known}")
    return builders[process]()


def write_held_out(process: str, out_dir: Path) -> list[Path]:
    """Write the held-out set of ``process`` into ``out_dir`` (same-named files are overwritten)."""
    written = []
    for spec in held_out_specs(process):
        source = RandomDisturbances(spec.recipe)
        t, series = sample_series(source, 1, spec.seed, spec.days, spec.step_s)
        meta = {
            "process": process,
            "description": spec.description,
            "generator": f"app.plant.scenario_sets {spec.name} seed={spec.seed}",
            "duration_days": f"{spec.days:g}",
        }
        cols = {name: v[:, 0] for name, v in series.items()}
        written.append(write_scenario(Path(out_dir) / f"{spec.name}.csv", t, cols, meta))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the held-out scenario files (``--process all`` writes every process)."""
    parser = argparse.ArgumentParser(
        prog="python -m app.plant.scenario_sets", description=main.__doc__
    )
    parser.add_argument("--process", default="all", help="ro, hsbro, uf or all (default)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("resources/scenarios"),
        help="parent folder; files go to <out>/<process>/ (default: resources/scenarios)",
    )
    args = parser.parse_args(argv)
    processes = sorted(RECIPES) if args.process == "all" else [args.process]
    try:
        for proc in processes:
            paths = write_held_out(proc, args.out / proc)
            size = sum(p.stat().st_size for p in paths)
            sys.stdout.write(
                f"{proc}: {len(paths)} files in {args.out / proc} ({size / 1024:.0f} KiB)\n"
            )
    except ScenarioError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
