"""Decoding of an agent's normalised action into setpoints and commands (clip → rate-limit → interlock).

The exported ONNX policy and the console's runtime must reproduce this exactly, so it is one small
pure function of arrays: no state, no randomness, float64 throughout.

Action layout (``Box(-1, 1)``): one dimension per SETPOINT tag of the catalogue, in catalogue order
(the increment is ``a·max_move``), then one per agent COMMAND (requested where ``a > 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.domain import TagRole
from app.plant.catalog import COMMON_TAGS, ProcessCatalog

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_COMMON = frozenset(t.name for t in COMMON_TAGS)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What an action vector means for one process at one agent period.

    Attributes:
        setpoints: SETPOINT tags, in action order.
        commands: COMMAND tags the agent may use (the process's own, not the common
            ``agent_in_control``), in action order after the setpoints.
        max_move: Increment at ``a = ±1`` per setpoint.
        low: Lowest value the PLC accepts per setpoint.
        high: Highest value the PLC accepts per setpoint.
        max_step: Largest change per agent step: min(max_move, max_rate_per_s·period).
    """

    setpoints: tuple[str, ...]
    commands: tuple[str, ...]
    max_move: F64
    low: F64
    high: F64
    max_step: F64

    @classmethod
    def from_catalog(cls, catalog: ProcessCatalog, agent_period_s: float) -> ActionSpec:
        """Build the spec from a catalogue.

        Raises:
            ValueError: If a setpoint lacks ``max_move`` or PLC limits, or the period is not positive.
        """
        if not agent_period_s > 0:
            raise ValueError(f"agent_period_s must be positive, got {agent_period_s}")
        sps = catalog.setpoints
        for t in sps:
            if t.max_move is None or t.plc_low is None or t.plc_high is None:
                raise ValueError(
                    f"setpoint {t.name!r} of {catalog.process!r} needs max_move, plc_low and plc_high"
                )
        max_move = np.array([t.max_move for t in sps], dtype=np.float64)
        rate = np.array(
            [np.inf if t.max_rate_per_s is None else t.max_rate_per_s for t in sps],
            dtype=np.float64,
        )
        commands = tuple(t.name for t in catalog.by_role(TagRole.COMMAND) if t.name not in _COMMON)
        return cls(
            setpoints=tuple(t.name for t in sps),
            commands=commands,
            max_move=max_move,
            low=np.array([t.plc_low for t in sps], dtype=np.float64),
            high=np.array([t.plc_high for t in sps], dtype=np.float64),
            max_step=np.minimum(max_move, rate * agent_period_s),
        )

    @property
    def size(self) -> int:
        """Length of the action vector."""
        return len(self.setpoints) + len(self.commands)


@dataclass(frozen=True, slots=True)
class DecodedAction:
    """Result of :func:`decode_action` for n plants.

    Attributes:
        setpoints: New setpoints (n, n_setpoints).
        commands: Command requests as 0.0/1.0 (n, n_commands).
        moves: Applied setpoint change divided by ``max_move`` (n, n_setpoints), for smoothness costs.
        clipped: Setpoints changed by the PLC-limit clip, per plant.
        rate_limited: Setpoints changed by the per-step rate limit, per plant.
        interlocked: Setpoints held and commands refused by the interlock, per plant.
    """

    setpoints: F64
    commands: F64
    moves: F64
    clipped: F64
    rate_limited: F64
    interlocked: F64


def decode_action(
    action: npt.ArrayLike,
    current_setpoints: npt.ArrayLike,
    spec: ActionSpec,
    *,
    hold: npt.ArrayLike | None = None,
    command_allowed: npt.ArrayLike | None = None,
) -> DecodedAction:
    """Turn normalised actions into setpoints and commands: clip → rate-limit → interlock.

    1. target = current + a·max_move;
    2. clip to the PLC limits [low, high];
    3. limit the change from ``current`` to ±max_step;
    4. interlock: where ``hold`` is set (plant stopped: CIP, trip) the setpoints stay at ``current``;
       a command is issued only where ``a > 0``, not held and ``command_allowed`` (e.g. the minimum
       interval between cleanings has passed).

    Each stage counts the values it changed. Actions outside [-1, 1] are allowed; stage 3 bounds them.

    Args:
        action: Shape (n, spec.size) or (spec.size,).
        current_setpoints: Shape (n, n_setpoints) or (n_setpoints,).
        spec: Meaning of the action vector.
        hold: Boolean (n,), plants whose setpoints and commands are interlocked.
        command_allowed: Boolean (n, n_commands), commands that may be issued now.

    Raises:
        ValueError: On wrong shapes or non-finite actions.
    """
    a = np.atleast_2d(np.asarray(action, dtype=np.float64))
    cur = np.atleast_2d(np.asarray(current_setpoints, dtype=np.float64))
    n_sp = len(spec.setpoints)
    if a.ndim != 2 or a.shape[1] != spec.size:
        raise ValueError(f"action must have {spec.size} columns, got shape {np.shape(action)}")
    if cur.shape != (a.shape[0], n_sp):
        raise ValueError(
            f"current_setpoints must have shape ({a.shape[0]}, {n_sp}), got {cur.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError("action contains NaN or infinity")
    n = a.shape[0]
    held = np.zeros(n, dtype=bool) if hold is None else np.asarray(hold, dtype=bool).reshape(n)
    target = cur + a[:, :n_sp] * spec.max_move
    clipped = np.minimum(np.maximum(target, spec.low), spec.high)
    stepped = cur + np.minimum(np.maximum(clipped - cur, -spec.max_step), spec.max_step)
    new = np.where(held[:, None], cur, stepped)
    want = a[:, n_sp:] > 0.0
    allowed = (
        np.ones_like(want) if command_allowed is None else np.asarray(command_allowed, dtype=bool)
    )
    allowed = allowed.reshape(want.shape) & ~held[:, None]
    commands = want & allowed
    return DecodedAction(
        setpoints=new,
        commands=commands.astype(np.float64),
        moves=(new - cur) / spec.max_move,
        clipped=(clipped != target).sum(axis=1).astype(np.float64),
        rate_limited=(stepped != clipped).sum(axis=1).astype(np.float64),
        interlocked=((new != stepped).sum(axis=1) + (want & ~allowed).sum(axis=1)).astype(
            np.float64
        ),
    )
