"""Baseline policies per process (process-models.md §12), by name.

| name | what it does |
|---|---|
| ``fixed_pi`` | The PLC's base control (``app.plant.base_control``): how most plants run |
| ``rule_based`` | Base control plus operator cleaning rules on normalised KPIs (``app.kpi``) |
| ``optimal_hourly`` | Hourly re-optimised setpoints on a twin of the model: steady-state grid |
| | search with calibrated A/B (RO), closed-loop look-ahead on a model copy (UF, HSBRO) |
| ``random`` | Random setpoint moves within the agent move limits: a sanity floor |
| ``hold`` | Keeps the setpoints it finds and never cleans: do nothing |
| ``switch_rule`` | HSBRO only: the published pressure-cap phase-switch rule with fixed flows (the |
| | HSBRO base control is exactly this rule, so it equals ``fixed_pi`` there); HSBRO's |
| | ``rule_based`` adds pressure-scheduled supply flow and a recirculation ratio |

``make_baseline(name, process)`` builds one; unknown names raise ``BaselineError`` listing the
known ones. Policies that need the plant model (``optimal_hourly``) expose ``bind(model)``, which
``intelwatt eval`` calls before ``reset``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from app.plant.base_control import controlled_tags, setpoint_limits
from app.plant.catalog import CATALOGS, ProcessCatalog
from app.plant.models.base import FloatArray, Policy


class BaselineError(ValueError):
    """Unknown baseline or process."""


class HoldPolicy(Policy):
    """Keeps every setpoint at the value read back at the first step; never requests cleaning."""

    name = "hold"

    def __init__(self, catalog: ProcessCatalog) -> None:
        self.catalog = catalog
        self._tags = controlled_tags(catalog)
        self._held: dict[str, FloatArray] = {}

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Forget the held values."""
        self._held = {}

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """The held setpoints; commands 0."""
        n = np.asarray(next(iter(measurements.values()))).size
        if not self._held:
            for name in self._tags:
                tag = self.catalog.tag(name)
                if tag.discrete:
                    continue
                default = float(tag.base_value if tag.base_value is not None else tag.low)
                value = np.asarray(measurements.get(name, np.full(n, default)), dtype=np.float64)
                self._held[name] = np.where(np.isfinite(value), value, default)
        out = {name: v.copy() for name, v in self._held.items()}
        for name in self._tags:
            if self.catalog.tag(name).discrete:
                out[name] = np.zeros(n)
        return out


class RandomPolicy(Policy):
    """Random setpoint moves of up to ``max_move`` per step; random commands at a low rate.

    Args:
        catalog: The process catalogue (moves, limits).
        command_period_s: Mean time between random requests of each command (cleaning, phase
            switch), so the policy does not clean every step.
    """

    name = "random"

    def __init__(self, catalog: ProcessCatalog, command_period_s: float = 7 * 86400.0) -> None:
        self.catalog = catalog
        self._tags = controlled_tags(catalog)
        self._period = command_period_s
        self._rng = np.random.default_rng(0)
        self._sp: dict[str, FloatArray] = {}

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """Take a new random stream."""
        self._rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
        self._sp = {}

    def act(
        self, measurements: Mapping[str, FloatArray], t_s: float, dt_s: float
    ) -> dict[str, FloatArray]:
        """Current setpoints plus uniform moves within ±max_move, clipped to the PLC range."""
        n = np.asarray(next(iter(measurements.values()))).size
        out: dict[str, FloatArray] = {}
        p_cmd = -np.expm1(-dt_s / self._period)
        for name in self._tags:
            tag = self.catalog.tag(name)
            if tag.discrete:
                out[name] = (self._rng.uniform(size=n) < p_cmd).astype(np.float64)
                continue
            low, high = setpoint_limits(self.catalog, name)
            default = float(tag.base_value if tag.base_value is not None else low)
            cur = self._sp.get(name)
            if cur is None:
                cur = np.asarray(measurements.get(name, np.full(n, default)), dtype=np.float64)
                cur = np.where(np.isfinite(cur), cur, default)
            move = tag.max_move if tag.max_move is not None else 0.05 * (high - low)
            new = np.clip(cur + self._rng.uniform(-move, move, size=n), low, high)
            self._sp[name] = new
            out[name] = new.copy()
        return out


Factory = Callable[[ProcessCatalog], Policy]


def _registry() -> dict[str, dict[str, Factory]]:
    # Imported here: the process-specific modules import this one's helpers.
    from app.plant import baselines_hsbro, baselines_ro, baselines_uf

    common: dict[str, Factory] = {"random": RandomPolicy, "hold": HoldPolicy}
    # A new process (``md``) adds its module's FACTORIES here; the rest is generic.
    return {
        "ro": {**baselines_ro.FACTORIES, **common},
        "hsbro": {**baselines_hsbro.FACTORIES, **common},
        "uf": {**baselines_uf.FACTORIES, **common},
    }


def baseline_names(process: str) -> tuple[str, ...]:
    """Names of the baselines defined for ``process``, sorted.

    Raises:
        BaselineError: ``process`` has no baselines.
    """
    reg = _registry()
    if process not in reg:
        raise BaselineError(
            f"no baselines for process {process!r}; processes with baselines: {', '.join(sorted(reg))}"
        )
    return tuple(sorted(reg[process]))


def make_baseline(name: str, process: str) -> Policy:
    """Build baseline ``name`` for ``process``.

    Raises:
        BaselineError: Unknown process or name; the message lists the known names.
    """
    names = baseline_names(process)
    if name not in names:
        raise BaselineError(
            f"unknown baseline {name!r} for process {process!r}; known: {', '.join(names)}"
        )
    policy = _registry()[process][name](CATALOGS[process])
    policy.name = name
    return policy
