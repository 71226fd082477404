"""Logged transitions of a simulated plant, in the console's outbox format.

A plant with its own hidden parameters (``params``, e.g. a membrane that is less permeable than
the simulator default) is driven by a scenario file and a policy, its measurements get the PLC's
sensor noise, and every agent period becomes one ``transition`` record exactly as
``CloudSync.enqueue_transition`` writes it. The records go to a JSONL export (the append-blob line
format) or through :class:`app.cloud.outbox.Outbox` into an outbox SQLite file.

Used by the tests, ``bench/continuous.py`` and the docs to produce plant data whose truth is
known; the console produces the same records from a real or simulated plant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app.domain import TagRole
from app.plant.catalog import CATALOGS
from app.plant.models.base import Policy
from app.plant.noise import plc_noise
from app.plant.scenarios import ScenarioFile

EPOCH = datetime(2026, 1, 5, tzinfo=UTC)


def simulate_transitions(
    process: str,
    scenario: Path,
    policy: Policy,
    *,
    days: float,
    params: Mapping[str, float] | None = None,
    seed: int = 0,
    noise: bool = True,
    start: datetime = EPOCH,
    agent: str | None = None,
    clear_trips: bool = True,
) -> list[tuple[datetime, dict[str, Any]]]:
    """Run one plant and return ``(time, transition payload)`` per agent period.

    Args:
        process: Process name.
        scenario: Scenario CSV driving the disturbances.
        policy: Chooses the set-points (a baseline or an agent package policy).
        days: Plant days to log.
        params: Hidden parameters of this plant (``RoModel`` names).
        seed: Seed of the sensor noise.
        noise: Add the PLC's sensor noise to the observations.
        start: Time stamp of the first record.
        agent: Agent version written into the records.
        clear_trips: Acknowledge a trip after the step it happened in (as an operator would), so
            the plant restarts instead of staying down for the rest of the log.
    """
    from app.training.evaluate import model_class

    cls = model_class(process)
    cat = CATALOGS[process]
    source = ScenarioFile([scenario], required=cls.disturbance_names, process=process)
    source.reset(1, np.random.default_rng(seed))
    model = cls(1)
    first = source.at(np.zeros(1))
    initial: dict[str, Any] = {k: first[k] for k in cls.disturbance_names if k in first}
    model.reset(np.random.default_rng(seed), params={**(params or {}), **initial})
    policy.reset(1, np.random.default_rng(seed + 1))
    measure = plc_noise(cat, np.random.default_rng(seed + 2)) if noise else None
    dt = cat.agent_period_s
    obs_tags = [t.name for t in cat.observations] + [t.name for t in cat.setpoints]
    act_tags = [t.name for t in cat.by_role(TagRole.SETPOINT, TagRole.COMMAND)]
    out: list[tuple[datetime, dict[str, Any]]] = []
    steps = round(days * 86400.0 / dt)
    for k in range(steps):
        t = k * dt
        dist = source.at(np.full(1, t))
        meas = model.measurements()
        true = {name: float(meas[name][0]) for name in obs_tags}
        seen_obs = measure(true) if measure is not None else true
        seen: dict[str, Any] = {name: np.array([v]) for name, v in seen_obs.items()}
        for key in ("tariff_eur_kwh", "demand_m3h"):
            if key in dist:
                seen[key] = dist[key]
        action = policy.act(seen, t, dt)
        applied = {name: float(np.asarray(action[name])[0]) for name in act_tags if name in action}
        out.append(
            (
                start + timedelta(seconds=t),
                {
                    "obs": seen_obs,
                    "actions": {"active": dict(applied)},
                    "applied": applied,
                    "reward": None,
                    "kpis": {},
                    "agent": agent,
                    "cloud_sourced": False,
                },
            )
        )
        result = model.step(action, dist, dt)
        clear = getattr(model, "clear_trip", None)
        if clear_trips and callable(clear) and np.asarray(result.tripped).any():
            # The operator acknowledges the trip; the plant restarts on the next step.
            clear()
    return out


def write_jsonl(records: list[tuple[datetime, dict[str, Any]]], path: Path) -> Path:
    """Write records as outbox JSONL lines (the append-blob format)."""
    from app.cloud.outbox import RECORD_SCHEMA, dumps_payload

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (when, payload) in enumerate(records, start=1):
        data = json.loads(dumps_payload(payload))
        line = {
            "id": i,
            "ob": "synthetic",
            "schema": RECORD_SCHEMA,
            "kind": "transition",
            "ts": when.isoformat(),
            "data": data,
        }
        lines.append(json.dumps(line, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_outbox(records: list[tuple[datetime, dict[str, Any]]], path: Path) -> Path:
    """Enqueue records into an outbox SQLite file (what a console holds before draining)."""
    from app.cloud.outbox import Outbox, OutboxLimits, RecordKind

    box = Outbox(path, OutboxLimits.from_mb(512.0))
    try:
        for when, payload in records:
            if not box.enqueue(RecordKind.TRANSITION, payload, at=when).accepted:
                raise RuntimeError(f"{path}: outbox refused a record (disk bound)")
    finally:
        box.close()
    return path
