"""``intelwatt eval``: agents and baselines on the same seeded held-out scenarios.

Every policy runs the process model directly (no gymnasium), one plant per episode, all episodes
of a policy stepped together as one vectorised model. Every policy sees the same scenario files,
the same model seed and the same agent period, so differences in the table are the policies'.

Per episode (process-models.md §13): cost per m³ (``app.plant.economics``), SEC, recovery, net
product volume, quality violations (% of running time), hard violations (trips), cleanings,
downtime % and safety-layer interventions; aggregated as mean ± 95 % CI (Student t over episodes).

The policy sees the model's measurements plus the published inputs a real controller knows: the
electricity tariff (``tariff_eur_kwh``) and, where scenarios carry it, ``demand_m3h``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from app.plant.baselines import BaselineError, make_baseline
from app.plant.economics import step_cost_eur
from app.plant.models import registry
from app.plant.models.base import Policy, ProcessModel, StepResult
from app.plant.scenarios import ScenarioError, ScenarioFile, read_scenario, scenario_files
from app.training.stats import Interval, mean_ci

DEFAULT_SCENARIO_ROOT = Path(__file__).resolve().parents[2] / "resources" / "scenarios"
PUBLISHED_INPUTS = ("tariff_eur_kwh", "demand_m3h")
"""Disturbances a policy may see: they are published (tariff) or known to operations (demand)."""


class EvalError(ValueError):
    """Bad evaluation input (unknown process or policy, bad scenarios, bad numbers)."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One column of the evaluation table.

    Attributes:
        key: JSON key (unit in the name).
        label: Row label in the table.
        fmt: Format of mean and half-width.
    """

    key: str
    label: str
    fmt: str


METRICS: tuple[Metric, ...] = (
    Metric("cost_per_m3_eur", "cost per m³ (€/m³)", "{:.4f}"),
    Metric("net_value_eur_per_h", "net economic rate (€/h)", "{:.2f}"),
    Metric("sec_kwh_m3", "SEC (kWh/m³)", "{:.3f}"),
    Metric("recovery_pct", "recovery (%)", "{:.1f}"),
    Metric("product_m3", "product volume (m³)", "{:.1f}"),
    Metric("quality_violation_pct", "quality violations (% time)", "{:.2f}"),
    Metric("trips", "hard violations (trips)", "{:.2f}"),
    Metric("cleanings", "cleanings", "{:.2f}"),
    Metric("downtime_pct", "downtime (%)", "{:.2f}"),
    Metric("interventions", "safety interventions", "{:.1f}"),
)


@dataclass(slots=True)
class PolicyResult:
    """Per-episode metrics of one policy.

    Attributes:
        spec: The policy as given (``baseline:NAME`` or a folder).
        episodes: Metric key → one value per episode.
        scenarios: Scenario file stem per episode.
        cleanings_by_kind: Cleaning kind → count per episode.
        interventions_by_layer: Safety layer → count per episode.
    """

    spec: str
    episodes: dict[str, np.ndarray]
    scenarios: list[str]
    cleanings_by_kind: dict[str, np.ndarray] = field(default_factory=dict)
    interventions_by_layer: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, Interval]:
        """Mean ± 95 % CI of every metric."""
        return {m.key: mean_ci(self.episodes[m.key]) for m in METRICS}


@dataclass(frozen=True, slots=True)
class EvalSetup:
    """What every policy is evaluated on.

    Attributes:
        process: Process name.
        files: Scenario file per episode.
        seed: Model seed.
        dt_s: Agent period (policy step).
        horizon_s: Episode length per episode.
        driven: Model disturbances the scenario files provide.
    """

    process: str
    files: tuple[Path, ...]
    seed: int
    dt_s: float
    horizon_s: tuple[float, ...]
    driven: tuple[str, ...]


def model_class(process: str) -> type[ProcessModel]:
    """The process model class of ``process``.

    Raises:
        EvalError: No simulator for ``process``.
    """
    try:
        return registry.model_class(process)
    except KeyError as exc:
        raise EvalError(exc.args[0]) from None


def resolve_policy(spec: str, process: str) -> Policy:
    """Turn ``baseline:NAME`` or an agent package (folder or zip) into a policy.

    A package is verified against the default trust store (``resources/trust``: signature, every
    sha256, spec against the catalogue) and run through ONNX Runtime; no pickle, no SB3. A
    training folder (``intelwatt train --out DIR``) is accepted for its ``DIR/package``.

    Raises:
        EvalError: Unknown baseline, a package that fails verification or is for another
            process, or a path that is neither.
    """
    if spec.startswith("baseline:"):
        try:
            return make_baseline(spec.removeprefix("baseline:"), process)
        except BaselineError as exc:
            raise EvalError(str(exc)) from None
    path = Path(spec)
    if path.is_dir() and not (path / "manifest.json").exists() and (path / "package").is_dir():
        path = path / "package"
    if path.is_dir() or path.suffix == ".zip":
        from app.agent_runtime.errors import KeyFileError, PackageRefused
        from app.training.agent_policy import PackagePolicy

        try:
            policy = PackagePolicy.from_package(path)
        except (PackageRefused, KeyFileError) as exc:
            raise EvalError(f"policy {spec!r}: agent package refused: {exc}") from None
        if policy.fields.process != process:
            raise EvalError(
                f"policy {spec!r}: agent package is for process {policy.fields.process!r}, "
                f"not {process!r}"
            )
        return policy
    raise EvalError(f"policy {spec!r} is neither baseline:NAME nor an agent package folder")


def prepare(
    process: str,
    scenarios: Path | None,
    episodes: int | None,
    seed: int,
    days: float | None,
) -> EvalSetup:
    """Check the inputs and choose the scenario file and length of every episode.

    Episode ``i`` follows file ``i mod k`` of the folder's ``k`` files (sorted by name).

    Raises:
        EvalError: Unknown process, bad folder or file, ``episodes < 1``, ``days <= 0``.
    """
    cls = model_class(process)
    if episodes is not None and episodes < 1:
        raise EvalError(f"--episodes must be at least 1, got {episodes}")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise EvalError(f"--days must be a positive number, got {days}")
    folder = scenarios if scenarios is not None else DEFAULT_SCENARIO_ROOT / process
    try:
        files = scenario_files(folder)
        count = episodes if episodes is not None else len(files)
        chosen = tuple(files[i % len(files)] for i in range(count))
        required = driven_names(cls, chosen[0], process)
        source = ScenarioFile(chosen, required=required, process=process)
    except ScenarioError as exc:
        raise EvalError(str(exc)) from None
    horizon = tuple(
        days * 86400.0 if days is not None else source.tables[i].duration_s for i in range(count)
    )
    return EvalSetup(process, chosen, seed, cls.catalog.agent_period_s, horizon, required)


def driven_names(cls: type[ProcessModel], first: Path, process: str) -> tuple[str, ...]:
    """The model disturbances the first scenario file drives; every other file must have them.

    Models fill disturbances a source lacks with defaults (some are alternatives, e.g. HSBRO's
    ``feed_tds_gl`` or ``feed_dilution``), so not every name is required, but a file that drives
    none of them is a mistake.

    Raises:
        ScenarioError: The file has none of the model's disturbance columns.
    """
    columns = read_scenario(first, process=process).columns
    names = tuple(n for n in cls.disturbance_names if n in columns)
    if not names:
        raise ScenarioError(
            f"{first}: has none of the {process} disturbance columns "
            f"{list(cls.disturbance_names)}; the file has {list(columns)}"
        )
    return names


def run_policy(
    policy: Policy,
    setup: EvalSetup,
    spec: str | None = None,
    params: Mapping[str, float] | None = None,
) -> PolicyResult:
    """Run one policy on every episode of ``setup`` (all episodes in one vectorised model).

    ``params`` overrides model parameters (a calibrated twin); default: the simulator's values.
    """
    cls = model_class(setup.process)
    n = len(setup.files)
    source = ScenarioFile(setup.files, required=setup.driven, process=setup.process)
    source.reset(n, np.random.default_rng(setup.seed + 2))
    model = cls(n, params=params) if params else cls(n)  # type: ignore[call-arg]
    _reset_model(model, source, setup.seed)
    bind = getattr(policy, "bind", None)
    if callable(bind):
        bind(model)
    policy.reset(n, np.random.default_rng(setup.seed + 1))

    horizon = np.asarray(setup.horizon_s)
    dt = setup.dt_s
    acc = _Accumulator(n)
    t = 0.0
    active = np.ones(n, dtype=bool)
    while bool(active.any()):
        now = np.full(n, t)
        dist = source.at(now)
        meas = model.measurements()
        seen = dict(meas)
        for key in PUBLISHED_INPUTS:
            if key in dist:
                seen[key] = dist[key]
        setpoints = policy.act(seen, t, dt)
        step_dt = np.minimum(dt, horizon - t)
        result = model.step(setpoints, dist, dt)
        cost = step_cost_eur(
            setup.process, result, dist, dt, unmet_demand_m3=model.hidden().get("unmet_demand_m3")
        )
        acc.add(result, cost, np.where(active, step_dt, 0.0) / dt, active, dt)
        active &= ~np.asarray(result.tripped, dtype=bool)
        t += dt
        active &= t < horizon - 1e-6
    return acc.result(spec or str(getattr(policy, "name", "policy")), setup)


def _reset_model(model: ProcessModel, source: ScenarioFile, seed: int) -> None:
    """Reset clean and unrandomised; hand the t = 0 disturbances to models that accept them."""
    first = source.at(np.zeros(model.n))
    initial = {k: first[k] for k in model.disturbance_names if k in first}
    # Models that take the t = 0 disturbances as reset params start consistent with the scenario.
    try:
        model.reset(np.random.default_rng(seed), params=initial)
    except (ValueError, KeyError):
        model.reset(np.random.default_rng(seed))


class _Accumulator:
    """Sums per episode; ``weight`` is the fraction of the step inside the episode."""

    def __init__(self, n: int) -> None:
        self.n = n
        z = np.zeros
        self.product = z(n)
        self.feed = z(n)
        self.energy = z(n)
        self.cost = z(n)
        self.value = z(n)
        self.time = z(n)
        self.bad_quality_time = z(n)
        self.downtime = z(n)
        self.trips = z(n)
        self.cleanings: dict[str, np.ndarray] = {}
        self.interventions: dict[str, np.ndarray] = {}

    def add(
        self,
        r: StepResult,
        cost: tuple[np.ndarray, np.ndarray],
        weight: np.ndarray,
        active: np.ndarray,
        dt: float,
    ) -> None:
        cost_eur, value_eur = cost
        w = np.where(active, weight, 0.0)
        self.product += w * np.nan_to_num(r.product_m3)
        self.feed += w * np.nan_to_num(r.feed_m3)
        self.energy += w * np.nan_to_num(r.energy_kwh)
        self.cost += w * np.nan_to_num(cost_eur)
        self.value += w * np.nan_to_num(value_eur)
        self.time += w * dt
        running = dt - np.clip(np.nan_to_num(r.downtime_s), 0.0, dt)
        self.downtime += w * (dt - running)
        self.bad_quality_time += w * np.where(np.nan_to_num(r.quality_excess) > 0.0, running, 0.0)
        self.trips += np.where(active & np.asarray(r.tripped, dtype=bool), 1.0, 0.0)
        for kind, count in r.cleanings.items():
            self.cleanings.setdefault(kind, np.zeros(self.n))
            self.cleanings[kind] += np.where(active, np.nan_to_num(count), 0.0)
        for layer, count in r.interventions.items():
            self.interventions.setdefault(layer, np.zeros(self.n))
            self.interventions[layer] += np.where(active, np.nan_to_num(count), 0.0)

    def result(self, spec: str, setup: EvalSetup) -> PolicyResult:
        with np.errstate(divide="ignore", invalid="ignore"):
            product = self.product
            running = np.maximum(self.time - self.downtime, 0.0)
            episodes = {
                "cost_per_m3_eur": np.where(product > 0, self.cost / product, np.nan),
                "net_value_eur_per_h": np.where(
                    self.time > 0, (self.value - self.cost) / (self.time / 3600.0), np.nan
                ),
                "sec_kwh_m3": np.where(product > 0, self.energy / product, np.nan),
                "recovery_pct": np.where(self.feed > 0, 100.0 * product / self.feed, np.nan),
                "product_m3": product.copy(),
                "quality_violation_pct": np.where(
                    running > 0, 100.0 * self.bad_quality_time / running, 0.0
                ),
                "trips": self.trips.copy(),
                "cleanings": sum(self.cleanings.values(), np.zeros(self.n)),
                "downtime_pct": np.where(self.time > 0, 100.0 * self.downtime / self.time, np.nan),
                "interventions": sum(self.interventions.values(), np.zeros(self.n)),
            }
        return PolicyResult(
            spec=spec,
            episodes=episodes,
            scenarios=[f.stem for f in setup.files],
            cleanings_by_kind=dict(self.cleanings),
            interventions_by_layer=dict(self.interventions),
        )


def evaluate(
    process: str,
    policies: Sequence[str],
    scenarios: Path | None = None,
    episodes: int | None = None,
    seed: int = 0,
    days: float | None = None,
) -> tuple[EvalSetup, list[PolicyResult]]:
    """Evaluate every policy spec on the same episodes.

    Raises:
        EvalError: Any bad input (checked before any policy runs).
    """
    if not policies:
        raise EvalError("no policy given; use --policy baseline:NAME ...")
    setup = prepare(process, scenarios, episodes, seed, days)
    resolved = [(spec, resolve_policy(spec, process)) for spec in policies]
    return setup, [run_policy(policy, setup, spec) for spec, policy in resolved]


def format_table(setup: EvalSetup, results: Sequence[PolicyResult]) -> str:
    """A readable table: one row per metric, one column per policy, ``mean ± CI95``."""
    head = ["metric", *(r.spec for r in results)]
    rows = [head]
    for m in METRICS:
        row = [m.label]
        for r in results:
            iv = r.summary()[m.key]
            row.append(_fmt_interval(iv, m.fmt))
        rows.append(row)
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = []
    n_ep = len(setup.files)
    lines.append(
        f"process {setup.process}: {n_ep} episodes, agent period {setup.dt_s:g} s, seed "
        f"{setup.seed}, mean ± 95 % CI (t, n = {n_ep})"
    )
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt_interval(iv: Interval, fmt: str) -> str:
    if iv.n == 0:
        return "n/a"
    mean = fmt.format(iv.mean)
    if not math.isfinite(iv.half_width):
        return mean
    return f"{mean} ± {fmt.format(iv.half_width)}"


def to_json(setup: EvalSetup, results: Sequence[PolicyResult]) -> dict[str, Any]:
    """The evaluation as one JSON-serialisable object (NaN becomes ``null``)."""

    def num(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    out: dict[str, Any] = {
        "process": setup.process,
        "seed": setup.seed,
        "agent_period_s": setup.dt_s,
        "episodes": len(setup.files),
        "scenarios": [f.stem for f in setup.files],
        "policies": {},
    }
    for r in results:
        summary = {
            key: {"mean": num(iv.mean), "ci95": num(iv.half_width), "n": iv.n}
            for key, iv in r.summary().items()
        }
        per_episode = [
            {
                "scenario": r.scenarios[i],
                **{m.key: num(float(r.episodes[m.key][i])) for m in METRICS},
                "cleanings_by_kind": {k: float(v[i]) for k, v in r.cleanings_by_kind.items()},
                "interventions_by_layer": {
                    k: float(v[i]) for k, v in r.interventions_by_layer.items()
                },
            }
            for i in range(len(r.scenarios))
        ]
        out["policies"][r.spec] = {"summary": summary, "episodes": per_episode}
    return out


def run_cli(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point of ``intelwatt eval``.

    ``args`` carries ``process``, ``policy`` (list of specs), ``scenarios`` (folder or ``None``),
    ``episodes``, ``json``, ``seed`` and ``days``. Prints the table (or one JSON object with
    ``--json``) and returns 0; on bad input prints one line to ``err`` and returns 2.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        setup, results = evaluate(
            process=str(args.process),
            policies=list(args.policy or []),
            scenarios=Path(args.scenarios) if args.scenarios is not None else None,
            episodes=args.episodes,
            seed=int(args.seed),
            days=args.days,
        )
    except EvalError as exc:
        err.write(f"intelwatt eval: error: {exc}\n")
        return 2
    if args.json:
        out.write(json.dumps(to_json(setup, results), allow_nan=False) + "\n")
    else:
        out.write(format_table(setup, results) + "\n")
    return 0
