"""From trained policies to a signed agent package: manifest fields, evaluation, report, signature.

The evaluation runs the exported ONNX graphs (not SB3) through :class:`PackagePolicy`, on the
held-out scenarios against every baseline of the process, before the package is written, so the
signed manifest carries the table (``metrics``) and ``report.md`` shows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from app import __version__
from app.agent_runtime.ensemble import EnsemblePolicy
from app.agent_runtime.manifest import (
    ManifestFields,
    NormalisationStats,
    TagSpec,
    TrainingSummary,
)
from app.plant.actions import ActionSpec
from app.plant.baselines import baseline_names, make_baseline
from app.plant.catalog import CATALOGS
from app.training.agent_policy import PackagePolicy
from app.training.evaluate import (
    EvalSetup,
    PolicyResult,
    format_table,
    prepare,
    run_policy,
    to_json,
)

JSON = dict[str, Any]


def observation_specs(process: str, tags: Sequence[str]) -> tuple[TagSpec, ...]:
    """Manifest observation specs (tag, unit, physical range) in policy input order."""
    cat = CATALOGS[process]
    return tuple(
        TagSpec(tag=t, unit=cat.tag(t).unit, low=float(cat.tag(t).low), high=float(cat.tag(t).high))
        for t in tags
    )


def action_specs(process: str, spec: ActionSpec) -> tuple[TagSpec, ...]:
    """Manifest action specs: setpoints within the PLC limits, then commands 0 … 1."""
    cat = CATALOGS[process]
    out = [
        TagSpec(tag=t, unit=cat.tag(t).unit, low=float(lo), high=float(hi))
        for t, lo, hi in zip(spec.setpoints, spec.low, spec.high, strict=True)
    ]
    out += [TagSpec(tag=t, unit=cat.tag(t).unit, low=0.0, high=1.0) for t in spec.commands]
    return tuple(out)


def normalisation(
    mean: Sequence[float], std: Sequence[float], low: np.ndarray, high: np.ndarray
) -> NormalisationStats:
    """Training-observation statistics for the manifest (the runtime's OOD score)."""
    return NormalisationStats(
        mean=tuple(float(v) for v in mean),
        std=tuple(max(float(v), 1e-12) for v in std),
        train_low=tuple(float(v) for v in low),
        train_high=tuple(float(v) for v in np.maximum(high, low)),
    )


def app_range() -> tuple[str, str]:
    """Console versions that may load a package built now: this one up to the next minor."""
    major, minor = (int(p) for p in __version__.split(".")[:2])
    return __version__.split("+")[0], f"{major}.{minor + 1}"


def manifest_fields(
    *,
    version: str,
    process: str,
    created: datetime,
    parent: str | None,
    observations: tuple[TagSpec, ...],
    actions: tuple[TagSpec, ...],
    stats: NormalisationStats,
    training: TrainingSummary,
    metrics: JSON,
) -> ManifestFields:
    """Assemble validated manifest fields."""
    min_app, max_app = app_range()
    return ManifestFields(
        version=version,
        process=process,
        created=created,
        parent_version=parent,
        observations=observations,
        actions=actions,
        normalisation=stats,
        training=training,
        metrics=metrics,
        min_app=min_app,
        max_app=max_app,
    )


@dataclass(slots=True)
class Evaluation:
    """The post-training evaluation: setup, results (agent first), and the agent's statistics."""

    setup: EvalSetup
    results: list[PolicyResult]
    mean_uncertainty: float
    mean_ood: float


def evaluate_agent(
    fields: ManifestFields,
    policy: bytes,
    members: Sequence[bytes],
    *,
    episodes: int | None,
    days: float | None,
    seed: int = 0,
    baselines: Sequence[str] | None = None,
) -> Evaluation:
    """Run the ONNX agent and every baseline of the process on the held-out scenarios."""
    process = fields.process
    ensemble = EnsemblePolicy.from_manifest(
        fields, policy, [(f"ensemble/member_{i:02d}.onnx", m) for i, m in enumerate(members)]
    )
    agent = PackagePolicy(fields, ensemble, f"agent:{fields.version}")
    setup = prepare(process, None, episodes, seed, days)
    results = [run_policy(agent, setup, agent.name)]
    for name in baselines if baselines is not None else baseline_names(process):
        results.append(run_policy(make_baseline(name, process), setup, f"baseline:{name}"))
    steps = np.maximum(agent.steps, 1.0)
    return Evaluation(
        setup=setup,
        results=results,
        mean_uncertainty=float(np.mean(agent.uncertainty / steps)),
        mean_ood=float(np.mean(agent.ood / steps)),
    )


def _mean(result: PolicyResult, key: str) -> float:
    return result.summary()[key].mean


def comparison(ev: Evaluation) -> JSON:
    """The agent against each baseline: relative cost per m³, product, net value, trips."""
    agent, *others = ev.results
    out: JSON = {}
    a_cost, a_prod = _mean(agent, "cost_per_m3_eur"), _mean(agent, "product_m3")
    for r in others:
        b_cost, b_prod = _mean(r, "cost_per_m3_eur"), _mean(r, "product_m3")
        entry: JSON = {
            "cost_per_m3_change_pct": _pct(a_cost, b_cost),
            "product_change_pct": _pct(a_prod, b_prod),
            "energy_change_pct": _pct(_energy(agent), _energy(r)),
            "net_value_change_eur_per_h": _finite(
                _mean(agent, "net_value_eur_per_h") - _mean(r, "net_value_eur_per_h")
            ),
        }
        out[r.spec] = entry
    return out


def _energy(result: PolicyResult) -> float:
    """Mean energy per episode (kWh): SEC × product volume."""
    e = result.episodes
    return float(np.nanmean(e["sec_kwh_m3"] * e["product_m3"]))


HSBRO_SEC_LIMIT = 2.5
"""kWh/m³: the rl_hrro cycle-end objective (process-models.md §1.2)."""


def objectives_met(result: PolicyResult) -> np.ndarray:
    """HSBRO episode objectives: no trip, concentrate in band every purge, SEC < 2.5 kWh/m³."""
    e = result.episodes
    sec = np.nan_to_num(e["sec_kwh_m3"], nan=np.inf)
    return np.asarray(
        (e["trips"] == 0) & (e["quality_violation_pct"] <= 0.0) & (sec < HSBRO_SEC_LIMIT)
    )


def _pct(a: float, b: float) -> float | None:
    return _finite(100.0 * (a - b) / b) if b and math.isfinite(b) else None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def metrics(ev: Evaluation, parity: JSON) -> JSON:
    """The manifest's ``metrics``: summary table, comparison, uncertainty, parity."""
    table = to_json(ev.setup, ev.results)
    summary = {spec: body["summary"] for spec, body in table["policies"].items()}
    return {
        "evaluation": {
            "process": table["process"],
            "episodes": table["episodes"],
            "scenarios": table["scenarios"],
            "seed": table["seed"],
            "agent_period_s": table["agent_period_s"],
            "summary": summary,
        },
        "versus_baselines": comparison(ev),
        "objectives_met_pct": {r.spec: float(100.0 * objectives_met(r).mean()) for r in ev.results}
        if ev.setup.process == "hsbro"
        else None,
        "mean_ensemble_uncertainty": _finite(ev.mean_uncertainty),
        "mean_ood_max_abs_z": _finite(ev.mean_ood),
        "onnx_parity": parity,
    }


def report_markdown(fields: ManifestFields, ev: Evaluation, notes: Sequence[str]) -> str:
    """``report.md``: what the agent is, how it was trained, and the evaluation table."""
    t = fields.training
    lines = [
        f"# Agent {fields.version} ({fields.process})",
        "",
        f"Created {fields.created.isoformat()}; parent {fields.parent_version or 'none'}.",
        f"Training: {t.algorithm}, {t.env_steps:,} environment steps, seed {t.seed}; {t.source}.",
        "",
        "## Evaluation on the held-out scenarios",
        "",
        "Same seeded scenario files and model seed for every policy; the agent runs its ONNX graph",
        "through ONNX Runtime (no SB3). Mean ± 95 % CI over episodes.",
        "",
        "```",
        format_table(ev.setup, ev.results),
        "```",
        "",
        "## Agent versus each baseline",
        "",
        "| baseline | cost per m³ | product volume | energy | net value (€/h) |",
        "|---|---|---|---|---|",
    ]
    for spec, entry in comparison(ev).items():
        lines.append(
            f"| {spec} | {_signed(entry['cost_per_m3_change_pct'], '%')} | "
            f"{_signed(entry['product_change_pct'], '%')} | "
            f"{_signed(entry['energy_change_pct'], '%')} | "
            f"{_signed(entry['net_value_change_eur_per_h'], '')} |"
        )
    lines += [
        "",
        f"Mean ensemble uncertainty {ev.mean_uncertainty:.4f} (normalised action spread); "
        f"mean OOD score {ev.mean_ood:.2f} (largest |z|).",
        "",
    ]
    if ev.setup.process == "hsbro":
        lines += [
            "HSBRO objectives met (no trip, concentrate 1.0–1.2 × bath at every purge, SEC <"
            f" {HSBRO_SEC_LIMIT} kWh/m³), share of episodes:",
            "",
        ]
        lines += [f"- {r.spec}: {100.0 * objectives_met(r).mean():.0f} %" for r in ev.results]
        lines.append("")
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def _signed(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:+.2f}{unit}"
