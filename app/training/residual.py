"""Residual agents: a learned, bounded correction on top of a stateless base rule (HSBRO).

The HSBRO phase switch and the end of the batch depend on the history of the batch, which a
one-observation MLP does not see (docs/agents.md). The base rule below needs no memory: every
input is a sensor tag a real skid has (phase, loop and feed conductivity, supply pressure, feed
tank level, piston position, setpoint readbacks), so it is written out twice, in numpy (training
environment, parity reference) and in torch (inside the exported ONNX graph), and the policy only
outputs corrections:

====  ====================================  =================
 a     correction (at a = ±1)                rule value
====  ====================================  =================
 a0    semi-batch supply flow ±3 L/min        12.5 L/min
 a1    batch/purge supply flow ±3 L/min       8 L/min
 a2    recirculation flow ±12 L/min           48 L/min
 a3    purge factor ±0.1                      0.703
 a4    switch point ±0.03 × bath              1.19 × bath
====  ====================================  =================

so a zero output is the rule, and training can only move it within these bounds. The rule then
yields setpoint targets and the two commands, which are converted into the environment's
normalised action (``(target − readback)/max_move`` for setpoints, ±1 for commands) and decoded by
:func:`app.plant.actions.decode_action` (clip → rate-limit → interlock) as for every agent.

The rule (process-models.md §1.2, §4; the published pressure-cap switch rule of
``app.plant.base_control.HsbroBaseControl`` without its run-to-run memory):

- switch semi-batch → batch when the loop conductivity reaches the value at which the batch phase
  ends at the target concentrate (``switch_ratio`` × bath; the loop concentrates ≈ 3×), or when the
  feed tank is within 150 L of its low-level trip;
- in batch, drop the supply flow to its minimum above 113 bar (pressure back-off);
- request the end of the batch of rinse water once the tank, after what the current cycle still
  draws, could not supply another full cycle (salt balance from the feed conductivity) with
  ``end_margin_l`` to spare above the 250 L trip; the PLC accepts that request only below 700 L, so
  a last cycle that would end above it stays in semi-batch a little longer (switch point up to
  ``switch_ratio + extend_ratio``, whatever the residual).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from app.plant.actions import ActionSpec

if TYPE_CHECKING:
    import torch

F64 = npt.NDArray[np.float64]

OFFSPEC_PENALTY = 20.0
"""Reward units per purge whose concentrate leaves 1.0–1.2 × bath (training only): the price
set's soft quality margin is ≈ 0 for a concentrate just outside the band, which the objective
counts as a failed episode."""

RULE_INPUTS = (
    "phase",
    "loop_conductivity_uscm",
    "supply_pressure_bar",
    "feed_tank_volume_l",
    "feed_conductivity_uscm",
    "piston_position_pct",
    "supply_flow_sp_lpm",
    "recirc_flow_sp_lpm",
    "purge_factor_sp",
)
"""Observation tags the HSBRO rule reads (all measured on the pilot, or setpoint readbacks)."""


@dataclass(frozen=True, slots=True)
class HsbroRule:
    """Constants of the stateless HSBRO base rule and the bounds of the residual.

    Attributes:
        semibatch_supply_lpm: Supply flow in semi-batch (high: a weak feed must reach the switch
            point before the PLC forces it after 3600 s).
        batch_supply_lpm: Supply flow in batch and purge.
        recirc_lpm: Recirculation flow.
        purge_factor: Purge factor.
        switch_ratio: Target concentrate, × bath, that sets the switch conductivity.
        bath_tds_gl: Bath concentration.
        brine_gl_per_ms_cm: Concentrate TDS per mS/cm of loop conductivity at the switch.
        backoff_bar: In batch, the supply flow drops to 4 L/min above this pressure.
        end_margin_l: Feed left above the 250 L trip after the last cycle.
        loop_mean_ratio: Mean loop concentration / module-outlet concentration at the switch
            (the outlet conductivity leads the loop's salt inventory; fitted on the pilot model:
            feed drawn per cycle at bath/20 and bath/10).
        low_tank_l: Switch to batch at once below this tank level (batch and purge still draw
            ≈ 85 L before the 250 L trip).
        accept_below_l: Tank level a last cycle must reach before its purge ends (the PLC accepts
            ``end_process_cmd`` below 700 L), with margin.
        extend_ratio: How far (× bath) above ``switch_ratio`` the switch point may move to get
            there (a fixed cap: the residual's switch correction does not move it).
        loop_l: Loop volume (work exchanger, pipes, module and ports).
        work_exchanger_l: Work exchanger volume (fed in the batch phase).
        purgeable_l: Purgeable volume (module, ports, purge pipe).
        bounds: Residual correction at ``a = ±1``, in the order of the module table.
    """

    semibatch_supply_lpm: float = 12.5
    batch_supply_lpm: float = 8.0
    recirc_lpm: float = 48.0
    purge_factor: float = 0.703
    switch_ratio: float = 1.19
    bath_tds_gl: float = 76.0
    brine_gl_per_ms_cm: float = 1.48
    backoff_bar: float = 113.0
    end_margin_l: float = 60.0
    loop_mean_ratio: float = 0.68
    low_tank_l: float = 360.0
    accept_below_l: float = 680.0
    extend_ratio: float = 0.04
    loop_l: float = 95.2
    work_exchanger_l: float = 64.6
    purgeable_l: float = 28.4
    bounds: tuple[float, ...] = (3.0, 3.0, 12.0, 0.1, 0.03)

    @property
    def size(self) -> int:
        """Length of the residual action."""
        return len(self.bounds)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Observation tags the rule reads."""
        return RULE_INPUTS


UF_RULE_INPUTS = (
    "uf_state",
    "hours_since_ceb_h",
    "hours_since_cip_h",
    "flux_sp_lmh",
    "filtration_time_sp_min",
    "bw_duration_sp_s",
)
"""Observation tags the UF rule reads (sequence state, cleaning counters, setpoint readbacks)."""


@dataclass(frozen=True, slots=True)
class UfRule:
    """The UF fixed backwash schedule (``UfBaseControl``) and the bounds of its residual.

    The schedule is stateless on the PLC's own counters: fixed flux, filtration time and backwash
    duration; a CEB every ``ceb_interval_h`` (``hours_since_ceb_h``), a CIP every
    ``cip_interval_h``. The residual corrects flux, filtration time, backwash duration and the CEB
    interval within ``bounds`` (in that order); a zero output is the schedule.

    Attributes:
        flux_lmh: Filtrate flux.
        filtration_min: Filtration time between backwashes.
        bw_duration_s: Backwash duration.
        ceb_interval_h: Hours between CEBs.
        cip_interval_h: Hours between CIPs.
        bounds: Residual correction at ``a = ±1``.
    """

    flux_lmh: float = 60.0
    filtration_min: float = 40.0
    bw_duration_s: float = 30.0
    ceb_interval_h: float = 24.0
    cip_interval_h: float = 720.0
    bounds: tuple[float, ...] = (10.0, 20.0, 15.0, 12.0)

    @property
    def size(self) -> int:
        """Length of the residual action."""
        return len(self.bounds)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Observation tags the rule reads."""
        return UF_RULE_INPUTS


BaseRule = HsbroRule | UfRule
"""A stateless base rule under a residual policy."""


def rule_for(process: str) -> BaseRule:
    """The base rule of ``process``.

    Raises:
        KeyError: No residual rule for ``process``.
    """
    rules: dict[str, BaseRule] = {"hsbro": HsbroRule(), "uf": UfRule()}
    if process not in rules:
        raise KeyError(f"no residual rule for process {process!r}; known: {sorted(rules)}")
    return rules[process]


def _floor(v: Any, low: float, xp: Any) -> Any:
    return np.maximum(v, low) if xp is np else v.clamp(min=low)


def _tds_gl(ec_uscm: Any, xp: Any) -> Any:
    """NaCl-equivalent TDS from conductivity: inverse of ``EC = 1900·c^0.92`` (hsbro model)."""
    return (_floor(ec_uscm, 0.0, xp) / 1900.0) ** (1.0 / 0.92)


def rule_action(
    rule: BaseRule, obs: npt.ArrayLike, index: Sequence[int], spec: ActionSpec, residual: Any
) -> F64:
    """The environment's normalised action for observations ``obs`` and residual ``residual``.

    Args:
        rule: Rule constants and residual bounds.
        obs: Raw observations (n, n_obs), clipped to the tag ranges.
        index: Column of each ``rule.inputs`` tag in ``obs``.
        spec: The process's action spec (setpoint order, ``max_move``).
        residual: Policy output (n, ``rule.size``), clipped to [-1, 1] here.

    Returns:
        Shape (n, spec.size): setpoint increments / max_move then commands (±1).
    """
    x = np.atleast_2d(np.asarray(obs, dtype=np.float64))
    r = np.clip(np.atleast_2d(np.asarray(residual, dtype=np.float64)), -1.0, 1.0)
    return np.asarray(_rule(rule, x, list(index), spec, r, np))


def _rule(rule: BaseRule, x: Any, index: list[int], spec: ActionSpec, r: Any, xp: Any) -> Any:
    """The rule on arrays of module ``xp`` (numpy or torch; same operations, same order)."""
    if isinstance(rule, UfRule):
        return _uf_rule(rule, x, index, spec, r, xp)
    col = dict(zip(RULE_INPUTS, index, strict=True))
    phase = x[:, col["phase"]]
    ec = x[:, col["loop_conductivity_uscm"]]
    p_sup = x[:, col["supply_pressure_bar"]]
    tank = x[:, col["feed_tank_volume_l"]]
    c_feed = _floor(_tds_gl(x[:, col["feed_conductivity_uscm"]], xp), 0.1, xp)
    piston = x[:, col["piston_position_pct"]] / 100.0
    b = rule.bounds
    semi_flow = rule.semibatch_supply_lpm + b[0] * r[:, 0]
    batch_flow = rule.batch_supply_lpm + b[1] * r[:, 1]
    recirc = rule.recirc_lpm + b[2] * r[:, 2] + 0.0 * phase
    purge = rule.purge_factor + b[3] * r[:, 3]
    ratio = rule.switch_ratio + b[4] * r[:, 4]
    semi = phase < 0.5
    batch = (phase > 0.5) & (phase < 1.5)
    running = phase < 2.5
    ec_switch = 1000.0 * ratio * rule.bath_tds_gl / rule.brine_gl_per_ms_cm
    c_switch = _tds_gl(ec_switch, xp)
    low_tank = tank < rule.low_tank_l
    purge_l = purge * rule.purgeable_l
    semi_rest = (
        rule.loop_mean_ratio * _floor(c_switch - _tds_gl(ec, xp), 0.0, xp) * rule.loop_l / c_feed
        + rule.work_exchanger_l
        + purge_l
    )
    rest = xp.where(
        semi,
        semi_rest,
        xp.where(batch, piston * rule.work_exchanger_l + purge_l, (1.0 - piston) * purge_l),
    )
    cycle_salt = _floor(rule.loop_mean_ratio * c_switch - c_feed, 0.0, xp) * rule.loop_l
    cycle = cycle_salt / c_feed + rule.work_exchanger_l + purge_l
    end = ((tank - rest - cycle < 250.0 + rule.end_margin_l) | low_tank) & running
    # The PLC accepts the end request only below 700 L: a last cycle that would end above it
    # stays in semi-batch (up to the extended switch point) until batch and purge take the tank
    # below 700 L, rather than start a cycle the tank cannot finish.
    ec_cap = 1000.0 * (rule.switch_ratio + rule.extend_ratio) * rule.bath_tds_gl
    ec_cap = ec_cap / rule.brine_gl_per_ms_cm
    extend = end & (tank - rule.work_exchanger_l - purge_l >= rule.accept_below_l) & (ec < ec_cap)
    switch = semi & (((ec >= ec_switch) & ~extend) | low_tank)
    supply = xp.where(
        semi,
        semi_flow,
        xp.where(batch & (p_sup >= rule.backoff_bar), 4.0 + 0.0 * p_sup, batch_flow),
    )
    targets = {
        "supply_flow_sp_lpm": supply,
        "recirc_flow_sp_lpm": recirc,
        "purge_factor_sp": purge,
    }
    columns = []
    for j, name in enumerate(spec.setpoints):
        readback = x[:, col[name]]
        columns.append(xp.clip((targets[name] - readback) / float(spec.max_move[j]), -1.0, 1.0))
    commands = {"end_semibatch_cmd": switch, "end_process_cmd": end}
    for name in spec.commands:
        flag = commands[name]
        columns.append(xp.where(flag, 1.0 + 0.0 * phase, -1.0 + 0.0 * phase))
    return xp.stack(columns, 1)


def _uf_rule(rule: UfRule, x: Any, index: list[int], spec: ActionSpec, r: Any, xp: Any) -> Any:
    col = dict(zip(UF_RULE_INPUTS, index, strict=True))
    state = x[:, col["uf_state"]]
    b = rule.bounds
    targets = {
        "flux_sp_lmh": rule.flux_lmh + b[0] * r[:, 0],
        "filtration_time_sp_min": rule.filtration_min + b[1] * r[:, 1],
        "bw_duration_sp_s": rule.bw_duration_s + b[2] * r[:, 2],
    }
    cip = (x[:, col["hours_since_cip_h"]] >= rule.cip_interval_h) & ((state < 2.5) | (state > 3.5))
    ceb_due = x[:, col["hours_since_ceb_h"]] >= rule.ceb_interval_h + b[3] * r[:, 3]
    ceb = ~cip & ceb_due & (state < 1.5)
    commands = {"bw_request": state < -1.0, "ceb_request": ceb, "cip_request": cip}
    columns = []
    for j, name in enumerate(spec.setpoints):
        step = (targets[name] - x[:, col[name]]) / float(spec.max_move[j])
        columns.append(xp.clip(step, -1.0, 1.0))
    for name in spec.commands:
        columns.append(xp.where(commands[name], 1.0 + 0.0 * state, -1.0 + 0.0 * state))
    return xp.stack(columns, 1)


def torch_rule_action(
    rule: BaseRule, x: torch.Tensor, index: Sequence[int], spec: ActionSpec, r: torch.Tensor
) -> torch.Tensor:
    """:func:`rule_action` in torch (float32) for the exported graph; ``r`` already clipped."""
    import torch as th

    return _rule(rule, x, list(index), spec, r, th)  # type: ignore[no-any-return]


class ResidualRuleEnv(VecEnvWrapper):
    """Turns the policy's residual into the environment's action through the rule.

    Sits directly on the raw ``ProcessVecEnv`` (the rule reads raw engineering units); the
    action space becomes ``Box(-1, 1, (rule.size,))``.

    Args:
        venv: The raw environment.
        tags: Its observation tags.
        spec: Its action spec.
        rule: Rule constants and residual bounds.
        raw: The ``ProcessVecEnv`` (its last step's ``quality_excess``) for the off-spec penalty.
        offspec_penalty: Reward units per off-spec purge (needs ``raw``).

    Raises:
        ValueError: A rule input is not observed.
    """

    def __init__(
        self,
        venv: VecEnv,
        tags: Sequence[str],
        spec: ActionSpec,
        rule: BaseRule,
        *,
        raw: Any = None,
        offspec_penalty: float = 0.0,
    ) -> None:
        from gymnasium import spaces

        missing = [t for t in rule.inputs if t not in tags]
        if missing:
            raise ValueError(f"the residual rule needs observations {missing}")
        box = spaces.Box(-1.0, 1.0, shape=(rule.size,), dtype=np.float32)
        super().__init__(venv, action_space=box)
        self.index = [list(tags).index(t) for t in rule.inputs]
        self.action_spec = spec
        self.rule = rule
        self.raw = raw
        self.offspec_penalty = offspec_penalty
        self._obs: F64 | None = None

    def reset(self) -> VecEnvObs:
        """Reset and remember the observation the next action is computed from."""
        obs = self.venv.reset()
        self._obs = np.asarray(obs, dtype=np.float64)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Apply the rule with the residual to the last observation."""
        if self._obs is None:
            raise RuntimeError("ResidualRuleEnv stepped before reset")
        self.venv.step_async(
            rule_action(self.rule, self._obs, self.index, self.action_spec, actions)
        )

    def step_wait(self) -> VecEnvStepReturn:
        """Step; the returned observations (reset ones for finished plants) feed the next rule."""
        obs, reward, done, infos = self.venv.step_wait()
        self._obs = np.asarray(obs, dtype=np.float64)
        last = getattr(self.raw, "last", None)
        if last is not None and self.offspec_penalty > 0:
            off = np.asarray(last.result.quality_excess, dtype=np.float64) > 0.0
            reward = np.asarray(reward - self.offspec_penalty * off, dtype=np.float32)
        return obs, reward, done, infos
