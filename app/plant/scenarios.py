"""Disturbance scenarios: CSV time-series files and seeded random generators.

A scenario file is a CSV table with a ``t_s`` column (seconds from the start of the episode,
strictly increasing) and one column per disturbance (``feed_tds_gl``, ``feed_temperature_c``,
...). Lines starting with ``#`` before the header carry metadata (``# process: ro``). Values between rows are
interpolated linearly; before the first and after the last row the end values hold (or the series
repeats with ``wrap=True``).

``ScenarioFile`` serves one or many files to ``n`` plants at once; ``RandomDisturbances`` draws
the same kinds of series from a seed (process-models.md §10). Both are ``DisturbanceSource``s, so
models, environments, baselines and ``intelwatt eval`` see identical inputs from either.

The held-out test sets in ``resources/scenarios/<process>/`` are defined and written by
``app.plant.scenario_sets``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from app.plant.catalog import CATALOGS
from app.plant.models.base import DisturbanceSource, FloatArray

TIME_COLUMN = "t_s"
DAY_S = 86400.0
HOUR_S = 3600.0

PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "feed_tds_gl": (0.0, 150.0),
    "feed_temperature_c": (0.0, 45.0),
    "fouling_factor": (0.0, 50.0),
    "demand_m3h": (0.0, 10000.0),
    "feed_ph": (0.0, 14.0),
    "feed_orp_mv": (-500.0, 1000.0),
    "tariff_eur_kwh": (-1.0, 10.0),
    "feed_turbidity_ntu": (0.0, 4000.0),
    "feed_dilution": (1.0, 1000.0),
    "feed_tank_volume_l": (0.0, 10000.0),
}
"""Physically plausible range per disturbance; a value outside it is a data error, not a scenario.

Catalogue tags of the same name take precedence (see ``column_range``)."""


class ScenarioError(ValueError):
    """A scenario file or request is unusable; the message names the file, line and column."""


def column_range(name: str, process: str | None = None) -> tuple[float, float] | None:
    """Allowed range of a scenario column, or ``None`` if only finiteness is checked.

    The range of a catalogue tag with the same name wins (e.g. ``feed_temperature_c`` 0–45 °C for
    RO), so scenario validation and the tag catalogue cannot disagree.
    """
    catalogs = [CATALOGS[process]] if process in CATALOGS else list(CATALOGS.values())
    for cat in catalogs:
        if name in cat:
            tag = cat.tag(name)
            return (float(tag.low), float(tag.high))
    return PLAUSIBLE_RANGES.get(name)


# --- Files --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioTable:
    """One scenario file in memory.

    Attributes:
        path: Where it was read from (or will be written to).
        t_s: Time of each row, strictly increasing, shape ``(m,)``.
        columns: Disturbance name → values, each shape ``(m,)``.
        meta: Metadata from the ``# key: value`` lines above the header.
    """

    path: Path
    t_s: np.ndarray
    columns: dict[str, np.ndarray]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last row."""
        return float(self.t_s[-1] - self.t_s[0])


def read_scenario(
    path: Path,
    required: Sequence[str] = (),
    process: str | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> ScenarioTable:
    """Read and validate one scenario file.

    Args:
        path: CSV file.
        required: Columns that must be present (besides ``t_s``).
        process: Process whose catalogue ranges apply to same-named columns.
        ranges: Extra or overriding ``name → (low, high)`` ranges.

    Raises:
        ScenarioError: Missing file or column, unparsable or non-finite value, value out of range,
            time not strictly increasing. The message names the file, line and column.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: scenario file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario file: {exc}") from None

    meta: dict[str, str] = {}
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, list[str]]] = []
    for lineno, fields in _csv_lines(text):
        if header is None:
            if fields and fields[0].lstrip().startswith("#"):
                key, _, value = ",".join(fields).lstrip()[1:].partition(":")
                if value:
                    meta[key.strip()] = value.strip()
                continue
            header = [f.strip() for f in fields]
            header_line = lineno
            continue
        rows.append((lineno, fields))
    if header is None:
        raise ScenarioError(f"{path}: no header row (expected '{TIME_COLUMN},<disturbance>,...')")
    _check_header(path, header, header_line, required)
    if not rows:
        raise ScenarioError(f"{path}: no data rows below the header (line {header_line})")

    data = np.empty((len(rows), len(header)), dtype=np.float64)
    for r, (lineno, fields) in enumerate(rows):
        if len(fields) != len(header):
            raise ScenarioError(
                f"{path}: line {lineno} has {len(fields)} fields, the header has {len(header)}"
            )
        for c, raw in enumerate(fields):
            try:
                data[r, c] = float(raw)
            except ValueError:
                raise ScenarioError(
                    f"{path}: line {lineno}, column {header[c]!r}: {raw.strip()!r} is not a number"
                ) from None

    linenos = [ln for ln, _ in rows]
    limits = dict(ranges or {})
    for c, name in enumerate(header):
        col = data[:, c]
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            i = int(bad[0])
            raise ScenarioError(
                f"{path}: line {linenos[i]}, column {name!r}: value is {col[i]} (must be finite)"
            )
        rng = limits.get(name) or (None if name == TIME_COLUMN else column_range(name, process))
        if rng is not None:
            lo, hi = rng
            out = np.flatnonzero((col < lo) | (col > hi))
            if out.size:
                i = int(out[0])
                raise ScenarioError(
                    f"{path}: line {linenos[i]}, column {name!r}: {col[i]:g} is outside the "
                    f"plausible range [{lo:g}, {hi:g}]"
                )
    t = data[:, 0]
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise ScenarioError(
            f"{path}: line {linenos[i]}, column {TIME_COLUMN!r}: time {t[i]:g} s does not "
            f"increase (previous row has {t[i - 1]:g} s)"
        )
    columns = {name: data[:, c].copy() for c, name in enumerate(header) if c > 0}
    return ScenarioTable(path=path, t_s=t.copy(), columns=columns, meta=meta)


def _csv_lines(text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV lines with their 1-based line numbers."""
    out: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        out.append((lineno, next(csv.reader([line]))))
    return out


def _check_header(path: Path, header: list[str], line: int, required: Sequence[str]) -> None:
    if not header or header[0] != TIME_COLUMN:
        first = header[0] if header else ""
        raise ScenarioError(
            f"{path}: line {line}: the first column must be {TIME_COLUMN!r}, found {first!r}"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ScenarioError(f"{path}: line {line}: column(s) {dupes} appear more than once")
    if any(not h for h in header):
        raise ScenarioError(f"{path}: line {line}: a column has an empty name")
    missing = [name for name in required if name not in header]
    if missing:
        raise ScenarioError(f"{path}: missing column(s) {missing}; the file has {header[1:]}")


def write_scenario(
    path: Path,
    t_s: np.ndarray,
    columns: Mapping[str, np.ndarray],
    meta: Mapping[str, str] | None = None,
) -> Path:
    """Write a scenario file (compact: 5 significant digits; times in whole seconds if integral).

    Args:
        path: Destination; parent folders are created.
        t_s: Row times, strictly increasing.
        columns: Disturbance name → values, same length as ``t_s``.
        meta: Written as ``# key: value`` lines above the header.

    Raises:
        ScenarioError: Lengths differ, time does not increase or a value is not finite.
    """
    path = Path(path)
    t = np.asarray(t_s, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
        raise ScenarioError(
            f"{path}: {TIME_COLUMN} must be a non-empty, strictly increasing series"
        )
    for name, col in columns.items():
        arr = np.asarray(col)
        if arr.shape != t.shape:
            raise ScenarioError(
                f"{path}: column {name!r} has shape {arr.shape}, time has {t.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ScenarioError(f"{path}: column {name!r} contains NaN or infinity")
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    with path.open("w", encoding="utf-8", newline="") as fh:
        for key, value in (meta or {}).items():
            fh.write(f"# {key}: {value}\n")
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([TIME_COLUMN, *names])
        cols = [np.asarray(columns[name], dtype=np.float64) for name in names]
        for i, ti in enumerate(t):
            t_txt = str(int(ti)) if float(ti).is_integer() else f"{ti:.6g}"
            writer.writerow([t_txt, *(_fmt(c[i]) for c in cols)])
    return path


def _fmt(v: float) -> str:
    txt = f"{v:.5g}"
    return "0" if txt == "-0" else txt


def scenario_files(folder: Path) -> list[Path]:
    """The ``*.csv`` files of a scenario folder, sorted by name.

    Raises:
        ScenarioError: The folder does not exist or holds no CSV file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScenarioError(f"{folder}: scenario folder does not exist")
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise ScenarioError(f"{folder}: scenario folder holds no *.csv file")
    return files


class ScenarioFile(DisturbanceSource):
    """Disturbances read from one or many scenario files.

    Plant ``i`` follows file ``i mod len(paths)`` shifted by its time offset: plant time ``t``
    reads the file at ``t + offset_i``. All files are put on the union of their time grids once,
    so a lookup for all plants is a single vectorised interpolation.

    Args:
        paths: One file or several.
        required: Columns every file must have (typically the model's ``disturbance_names``).
            The source serves every column that all files have.
        process: Process whose catalogue ranges validate same-named columns.
        offsets_s: Time offset per plant (cycled if shorter than the number of plants).
        random_offset: Draw each plant's offset uniformly over the file's duration at ``reset``.
        wrap: Repeat the series after its last row instead of holding the last value.
        ranges: Extra or overriding value ranges by column.

    Raises:
        ScenarioError: Any file is missing or invalid (see ``read_scenario``).
    """

    def __init__(
        self,
        paths: Path | Sequence[Path],
        required: Sequence[str] | None = None,
        process: str | None = None,
        offsets_s: float | Sequence[float] = 0.0,
        random_offset: bool = False,
        wrap: bool = False,
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
        if not path_list:
            raise ScenarioError("no scenario file given")
        must = tuple(required or ())
        tables = [read_scenario(p, must, process, ranges) for p in path_list]
        self.tables = tables
        names = tuple(c for c in tables[0].columns if all(c in tb.columns for tb in tables))
        self.names = names
        grid = np.unique(np.concatenate([tb.t_s for tb in tables]))
        self._grid = grid
        self._values = np.empty((len(names), len(tables), grid.size), dtype=np.float64)
        for f, tb in enumerate(tables):
            for c, name in enumerate(names):
                self._values[c, f] = np.interp(grid, tb.t_s, tb.columns[name])
        self._starts = np.array([tb.t_s[0] for tb in tables])
        self._spans = np.array([max(tb.duration_s, 1e-9) for tb in tables])
        offs = np.atleast_1d(np.asarray(offsets_s, dtype=np.float64))
        if offs.size == 0 or not np.all(np.isfinite(offs)):
            raise ScenarioError(f"offsets_s must be finite numbers, got {offsets_s!r}")
        self._offset_pattern = offs
        self._random_offset = random_offset
        self._wrap = wrap
        self._file = np.zeros(1, dtype=np.intp)
        self._offset = np.zeros(1)

    @property
    def paths(self) -> list[Path]:
        """The files, in plant-assignment order."""
        return [tb.path for tb in self.tables]

    def duration_s(self, plant: int = 0) -> float:
        """Duration of the file plant ``plant`` follows (after the latest ``reset``)."""
        return float(self._spans[self._file[plant]])

    def reset(self, n: int, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Assign files and offsets to ``n`` plants (only where ``mask`` is True)."""
        if self._file.size != n:
            self._file = np.arange(n, dtype=np.intp) % len(self.tables)
            self._offset = np.resize(self._offset_pattern, n).astype(np.float64)
            mask = None
        sel = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if self._random_offset:
            draw = rng.uniform(0.0, 1.0, size=n) * self._spans[self._file]
            self._offset = np.where(sel, draw, self._offset)

    def at(self, t_s: FloatArray) -> dict[str, FloatArray]:
        """Interpolated disturbances for each plant at its own time ``t_s`` (shape ``(n,)``)."""
        t = np.broadcast_to(np.asarray(t_s, dtype=np.float64), self._file.shape) + self._offset
        if self._wrap:
            start = self._starts[self._file]
            t = start + np.mod(t - start, self._spans[self._file])
        grid = self._grid
        if grid.size == 1:
            vals = self._values[:, self._file, 0]
        else:
            idx = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, grid.size - 2)
            t0 = grid[idx]
            w = np.clip((t - t0) / (grid[idx + 1] - t0), 0.0, 1.0)
            vals = (
                self._values[:, self._file, idx] * (1.0 - w)
                + self._values[:, self._file, idx + 1] * w
            )
        return {name: vals[c] for c, name in enumerate(self.names)}


# --- Seeded random generators ---------------------------------------------------------------------

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-mixed 64-bit hash of each element (uint64 wraps by design)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _M1
    z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def _uniform(seed: np.ndarray, stream: int | np.ndarray, k: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) draw for (plant seed, stream, index), computable in any order.

    Counter-based draws make a plant's series independent of which other plants were queried
    together or when: the series is a pure function of the seed.
    """
    key = _splitmix(
        seed
        ^ _splitmix(
            np.asarray(k, dtype=np.int64).astype(_U64)
            + (np.asarray(stream, dtype=_U64) << _U64(40))
        )
    )
    return (key >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _normal(seed: np.ndarray, stream: int | np.ndarray, k: np.ndarray) -> np.ndarray:
    s2 = np.asarray(stream, dtype=_U64) * _U64(2)
    u1 = _uniform(seed, s2, k)
    u2 = _uniform(seed, s2 + _U64(1), k)
    return np.asarray(np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2))


@dataclass(frozen=True, slots=True)
class Events:
    """Random multiplicative events (fouling or turbidity episodes).

    Attributes:
        per_day: Mean number of events per day (at most one starts per day).
        factor: Range of the event's peak multiplier.
        hours: Range of event duration (drawn log-uniformly).
    """

    per_day: float
    factor: tuple[float, float] = (3.0, 10.0)
    hours: tuple[float, float] = (2.0, 72.0)


@dataclass(frozen=True, slots=True)
class Signal:
    """Recipe of one random disturbance; each range is drawn per plant at ``reset``.

    value = (base · (1 + diurnal_rel · cos) · exp(walk_rel) + diurnal_abs · cos + seasonal
             + walk_abs) · events, clipped to [low, high]

    Attributes:
        base: Range of the plant's base level.
        low: Lower clip.
        high: Upper clip.
        diurnal_rel: Range of the relative daily amplitude.
        diurnal_abs: Range of the absolute daily amplitude.
        peak_hour: Range of the hour of day of the daily maximum.
        seasonal_abs: Range of the absolute annual amplitude (maximum at day 200, late July).
        walk_rel: Stationary standard deviation of a multiplicative (log) random walk.
        walk_abs: Stationary standard deviation of an additive random walk.
        walk_hours: Correlation time of the random walks.
        events: Random multiplicative events, if any.
        scheduled: Fixed events for every plant: (start h, duration h, factor).
        ramp: Multiplicative start-up ramp: (initial factor, hours to reach 1).
        steps: Fixed multiplicative steps for every plant: (start h, factor).
    """

    base: tuple[float, float]
    low: float
    high: float
    diurnal_rel: tuple[float, float] = (0.0, 0.0)
    diurnal_abs: tuple[float, float] = (0.0, 0.0)
    peak_hour: tuple[float, float] = (0.0, 24.0)
    seasonal_abs: tuple[float, float] = (0.0, 0.0)
    walk_rel: float = 0.0
    walk_abs: float = 0.0
    walk_hours: float = 48.0
    events: Events | None = None
    scheduled: tuple[tuple[float, float, float], ...] = ()
    ramp: tuple[float, float] | None = None
    steps: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Tariff:
    """Time-of-use electricity price (€/kWh); weekends are off-peak all day.

    Attributes:
        off_peak: Price 23:00–07:00 and at weekends.
        mid: Price 07:00–17:00 and 21:00–23:00.
        peak: Price 17:00–21:00.
        scale: Range of a per-plant factor on all three prices (different contracts).
    """

    off_peak: float = 0.10
    mid: float = 0.18
    peak: float = 0.30
    scale: tuple[float, float] = (0.85, 1.15)


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a random scenario of one process contains.

    Attributes:
        process: Process name.
        signals: Disturbance name → recipe.
        tariff: Time-of-use tariff written as ``tariff_eur_kwh`` (``None``: no tariff column).
        start_day: Range of the day of year at ``t = 0`` (season).
        start_weekday: Range of the weekday at ``t = 0`` (0 = Monday).
    """

    process: str
    signals: dict[str, Signal]
    tariff: Tariff | None = field(default_factory=Tariff)
    start_day: tuple[float, float] = (0.0, 365.0)
    start_weekday: tuple[int, int] = (0, 6)

    @property
    def names(self) -> tuple[str, ...]:
        """Columns this recipe produces, in order."""
        extra = ("tariff_eur_kwh",) if self.tariff is not None else ()
        return (*self.signals, *extra)

    def with_signal(self, name: str, **changes: object) -> Recipe:
        """A copy with some fields of one signal replaced."""
        if name not in self.signals:
            raise KeyError(f"recipe {self.process!r} has no signal {name!r}")
        signals = dict(self.signals)
        signals[name] = replace(signals[name], **changes)  # type: ignore[arg-type]
        return replace(self, signals=signals)


RO_RECIPE = Recipe(
    process="ro",
    signals={
        "feed_tds_gl": Signal(
            base=(1.5, 3.0),
            low=0.3,
            high=6.0,
            diurnal_rel=(0.05, 0.15),
            peak_hour=(12, 20),
            walk_rel=0.10,
            walk_hours=48.0,
        ),
        "feed_temperature_c": Signal(
            base=(17.0, 22.0),
            low=5.0,
            high=35.0,
            diurnal_abs=(1.0, 3.0),
            peak_hour=(14, 17),
            seasonal_abs=(5.0, 9.0),
            walk_abs=0.7,
            walk_hours=72.0,
        ),
        "fouling_factor": Signal(
            base=(1.0, 1.0),
            low=0.2,
            high=20.0,
            walk_rel=0.15,
            walk_hours=96.0,
            events=Events(per_day=0.08, factor=(3.0, 10.0), hours=(3.0, 72.0)),
        ),
        "demand_m3h": Signal(
            base=(14.0, 20.0),
            low=0.0,
            high=60.0,
            diurnal_rel=(0.15, 0.35),
            peak_hour=(17, 20),
            walk_rel=0.05,
            walk_hours=24.0,
        ),
        "feed_ph": Signal(
            base=(7.0, 7.8),
            low=5.5,
            high=9.0,
            diurnal_abs=(0.05, 0.15),
            walk_abs=0.1,
            walk_hours=48.0,
        ),
        "feed_orp_mv": Signal(
            base=(180.0, 260.0),
            low=50.0,
            high=450.0,
            diurnal_abs=(5.0, 20.0),
            walk_abs=15.0,
            walk_hours=24.0,
        ),
    },
)
"""Brackish RO feed (industrial process water, 1.5–3 g/L) after process-models.md §10."""

HSBRO_RECIPE = Recipe(
    process="hsbro",
    signals={
        "feed_dilution": Signal(base=(10.0, 20.0), low=5.0, high=40.0),
        "feed_temperature_c": Signal(
            base=(28.0, 32.0), low=25.0, high=35.0, walk_abs=0.4, walk_hours=2.0
        ),
        "feed_tank_volume_l": Signal(base=(1500.0, 2500.0), low=200.0, high=2500.0),
    },
    start_weekday=(0, 4),
)
"""HSBRO batch feed (process-models.md §1.2): rinse water at bath/U(10..20), 28–32 °C, 1.5–2.5 m³"""

UF_RECIPE = Recipe(
    process="uf",
    signals={
        "feed_turbidity_ntu": Signal(
            base=(3.0, 10.0),
            low=0.2,
            high=400.0,
            diurnal_rel=(0.05, 0.2),
            walk_rel=0.3,
            walk_hours=36.0,
            events=Events(per_day=0.12, factor=(3.0, 10.0), hours=(2.0, 48.0)),
        ),
        "feed_temperature_c": Signal(
            base=(14.0, 20.0),
            low=2.0,
            high=32.0,
            diurnal_abs=(0.5, 2.0),
            peak_hour=(14, 17),
            seasonal_abs=(5.0, 9.0),
            walk_abs=0.5,
            walk_hours=72.0,
        ),
        "fouling_factor": Signal(
            base=(1.0, 1.0), low=0.2, high=20.0, walk_rel=0.1, walk_hours=96.0
        ),
        "demand_m3h": Signal(
            base=(60.0, 90.0),
            low=0.0,
            high=400.0,
            diurnal_rel=(0.15, 0.35),
            peak_hour=(17, 20),
            walk_rel=0.05,
            walk_hours=24.0,
        ),
    },
)
"""UF on surface water: turbidity with storm events ×3–10, seasonal temperature, diurnal demand."""

RECIPES: dict[str, Recipe] = {r.process: r for r in (RO_RECIPE, HSBRO_RECIPE, UF_RECIPE)}


class RandomDisturbances(DisturbanceSource):
    """Seeded random disturbance series for ``n`` plants (process-models.md §10).

    Each plant draws its levels, amplitudes, phases, season and a 64-bit noise seed from ``rng``
    at ``reset``. Random walks (AR(1) on hourly knots, linearly interpolated) and events are
    counter-based functions of that seed, so a plant's series depends only on the ``rng`` state
    at reset, not on when or together with which plants it is queried. Queries for one plant
    should move forward in time; a step back recomputes that plant's walks from the start.

    Args:
        recipe: What to generate; a process name picks the default recipe.
        knot_s: Spacing of random-walk knots.
    """

    def __init__(self, recipe: Recipe | str, knot_s: float = HOUR_S) -> None:
        if isinstance(recipe, str):
            if recipe not in RECIPES:
                known = ", ".join(sorted(RECIPES))
                raise ScenarioError(
                    f"no random scenario recipe for process {recipe!r}; known: {known}"
                )
            recipe = RECIPES[recipe]
        if knot_s <= 0:
            raise ScenarioError(f"knot_s must be positive, got {knot_s}")
        self.recipe = recipe
        self.names = recipe.names
        self._knot = float(knot_s)
        sig = list(recipe.signals.values())
        self._signals = sig
        self._low = np.array([[s.low] for s in sig])
        self._high = np.array([[s.high] for s in sig])
        # One random walk per signal and kind (relative, absolute); all advance on the same knots.
        sigma = [s.walk_rel for s in sig] + [s.walk_abs for s in sig]
        hours = [s.walk_hours for s in sig] * 2
        self._rho = np.array([[math.exp(-self._knot / (h * HOUR_S))] for h in hours])
        self._innov = np.sqrt(1.0 - self._rho**2)
        self._sigma = np.array([[v] for v in sigma])
        self._walk_streams = np.arange(len(sigma), dtype=np.uint64)[:, None]
        self._event_rows = [i for i, s in enumerate(sig) if s.events is not None]
        self._fixed_rows = [i for i, s in enumerate(sig) if s.scheduled or s.steps or s.ramp]
        self._n = 0
        self._p: dict[str, np.ndarray] = {}
        self._k = np.zeros(0, dtype=np.int64)
        self._x = np.zeros((2, 2 * len(sig), 0))
        self._event_day = np.full(0, -1, dtype=np.int64)
        self._event_cache: dict[int, tuple[np.ndarray, ...]] = {}

    def reset(self, n: int, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Draw new series for ``n`` plants (only where ``mask`` is True)."""
        if n != self._n:
            self._n = n
            self._p = {}
            self._k = np.zeros(n, dtype=np.int64)
            self._x = np.zeros((2, 2 * len(self._signals), n))
            mask = None
        sel = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        r = self.recipe
        sig = self._signals

        def draws(ranges: list[tuple[float, float]]) -> np.ndarray:
            lo = np.array([[a] for a, _ in ranges])
            hi = np.array([[b] for _, b in ranges])
            return np.asarray(lo + (hi - lo) * rng.uniform(size=(len(ranges), n)))

        new: dict[str, np.ndarray] = {
            "seed": rng.integers(0, 2**63 - 1, size=n, dtype=np.int64).astype(_U64),
            "start_day": rng.uniform(*r.start_day, size=n),
            "weekday": rng.integers(r.start_weekday[0], r.start_weekday[1] + 1, size=n).astype(
                np.float64
            ),
            "tariff_scale": rng.uniform(*(r.tariff.scale if r.tariff else (1.0, 1.0)), size=n),
            "base": draws([s.base for s in sig]),
            "drel": draws([s.diurnal_rel for s in sig]),
            "dabs": draws([s.diurnal_abs for s in sig]),
            "peak": draws([s.peak_hour for s in sig]),
            "sabs": draws([s.seasonal_abs for s in sig]),
        }
        for key, value in new.items():
            old = self._p.get(key)
            self._p[key] = value if old is None else np.where(sel, value, old)
        self._k[sel] = 0
        self._x[:, :, sel] = self._walk_start(self._p["seed"])[:, :, sel]
        self._event_day = np.full(n, -1, dtype=np.int64)

    def at(self, t_s: FloatArray) -> dict[str, FloatArray]:
        """Disturbance values for each plant at its own time ``t_s`` (shape ``(n,)``)."""
        if self._n == 0:
            raise RuntimeError("RandomDisturbances.at() called before reset()")
        t = np.broadcast_to(np.asarray(t_s, dtype=np.float64), (self._n,))
        p = self._p
        hour = np.mod(t / HOUR_S, 24.0)
        cyc = np.cos((2.0 * np.pi / 24.0) * (hour - p["peak"]))
        season = np.cos((2.0 * np.pi / 365.0) * (p["start_day"] + t / DAY_S - 200.0))
        walks = self._walks(t)
        s_count = len(self._signals)
        v = p["base"] * (1.0 + p["drel"] * cyc) * np.exp(walks[:s_count])
        v += p["dabs"] * cyc + p["sabs"] * season + walks[s_count:]
        for i in self._fixed_rows:
            v[i] *= self._fixed_multiplier(self._signals[i], t)
        if self._event_rows:
            self._event_multipliers(t, v)
        np.clip(v, self._low, self._high, out=v)
        out: dict[str, FloatArray] = {name: v[i] for i, name in enumerate(self.recipe.signals)}
        if self.recipe.tariff is not None:
            out["tariff_eur_kwh"] = self._tariff(t, self.recipe.tariff)
        return out

    # Random walks: AR(1) knots x_{k+1} = rho x_k + sqrt(1 - rho^2) eps_k (stationary, unit
    # variance), scaled by sigma and interpolated linearly between knots.

    def _walk_start(self, seed: np.ndarray) -> np.ndarray:
        k0 = np.zeros(seed.shape, dtype=np.int64)
        x = np.empty((2, len(self._walk_streams), seed.size))
        x[0] = _normal(seed, self._walk_streams, k0)
        x[1] = self._rho * x[0] + self._innov * _normal(seed, self._walk_streams + 64, k0 + 1)
        return x

    def _walks(self, t: np.ndarray) -> np.ndarray:
        pos = np.maximum(t, 0.0) / self._knot
        k, x = self._k, self._x
        back = pos < k
        if np.any(back):
            k[back] = 0
            x[:, :, back] = self._walk_start(self._p["seed"][back])
        while True:
            ahead = np.flatnonzero(pos >= k + 1)
            if ahead.size == 0:
                break
            k[ahead] += 1
            x1 = x[1][:, ahead]
            eps = _normal(self._p["seed"][ahead], self._walk_streams + 64, k[ahead] + 1)
            x[0][:, ahead] = x1
            x[1][:, ahead] = self._rho * x1 + self._innov * eps
        w = pos - k
        return np.asarray(self._sigma * (x[0] + (x[1] - x[0]) * w))

    @staticmethod
    def _fixed_multiplier(s: Signal, t: np.ndarray) -> np.ndarray:
        m = np.ones_like(t)
        h = t / HOUR_S
        for start_h, dur_h, factor in s.scheduled:
            m *= 1.0 + (factor - 1.0) * _pulse(h, start_h, dur_h)
        for start_h, factor in s.steps:
            m = np.where(h >= start_h, m * factor, m)
        if s.ramp is not None:
            f0, ramp_h = s.ramp
            m *= f0 + (1.0 - f0) * np.clip(h / ramp_h, 0.0, 1.0)
        return m

    def _event_multipliers(self, t: np.ndarray, v: np.ndarray) -> None:
        """Multiply the event rows of ``v`` by their events (at most one starts per plant-day)."""
        day = np.floor(np.maximum(t, 0.0) / DAY_S).astype(np.int64)
        if np.any(day != self._event_day):
            self._event_day = day
            self._event_cache = {i: self._event_table(i, day) for i in self._event_rows}
        h = t / HOUR_S
        for i, (start_h, dur_h, factor) in self._event_cache.items():
            bump = 1.0 + (factor - 1.0) * _pulse(h, start_h, dur_h)
            v[i] *= bump.max(axis=0)

    def _event_table(self, i: int, day: np.ndarray) -> tuple[np.ndarray, ...]:
        """Start, duration and factor of the events that can be active on ``day`` (shape (L, n))."""
        ev = self._signals[i].events
        assert ev is not None
        seed = self._p["seed"]
        lookback = math.ceil(ev.hours[1] / 24.0) + 1
        d = day - np.arange(lookback + 1)[:, None]
        stream = 200 + 8 * i
        happens = (_uniform(seed, stream, d) < 1.0 - math.exp(-ev.per_day)) & (d >= 0)
        start_h = (d + _uniform(seed, stream + 1, d)) * 24.0
        lo, hi = math.log(ev.hours[0]), math.log(ev.hours[1])
        dur_h = np.exp(lo + (hi - lo) * _uniform(seed, stream + 2, d))
        f_lo, f_hi = ev.factor
        factor = np.where(happens, f_lo + (f_hi - f_lo) * _uniform(seed, stream + 3, d), 1.0)
        return start_h, dur_h, factor

    def _tariff(self, t: np.ndarray, tar: Tariff) -> np.ndarray:
        hour = np.mod(t / HOUR_S, 24.0)
        weekday = np.mod(self._p["weekday"] + np.floor(t / DAY_S), 7.0)
        price = np.where((hour >= 17) & (hour < 21), tar.peak, tar.mid)
        price = np.where((hour < 7) | (hour >= 23) | (weekday >= 5), tar.off_peak, price)
        return np.asarray(price * self._p["tariff_scale"])


def _pulse(h: np.ndarray, start_h: np.ndarray | float, dur_h: np.ndarray | float) -> np.ndarray:
    """Trapezoid 0 → 1 → 0 over [start, start + duration] with ramps of min(1 h, duration/4)."""
    ramp = np.minimum(1.0, np.asarray(dur_h) / 4.0)
    rise = np.clip((h - start_h) / ramp, 0.0, 1.0)
    fall = np.clip((np.asarray(start_h) + dur_h - h) / ramp, 0.0, 1.0)
    return np.asarray(np.minimum(rise, fall))


def sample_series(
    source: DisturbanceSource, n: int, seed: int, days: float, step_s: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sample a source on a regular grid for ``n`` plants.

    Returns:
        Times ``(m,)`` and name → values ``(m, n)``.
    """
    if days <= 0 or step_s <= 0:
        raise ScenarioError(f"days and step_s must be positive, got {days} and {step_s}")
    source.reset(n, np.random.default_rng(seed))
    t = np.arange(0.0, days * DAY_S + 0.5 * step_s, step_s)
    rows = [source.at(np.full(n, ti)) for ti in t]
    return t, {name: np.stack([r[name] for r in rows]) for name in rows[0]}
