"""Training recipes per process: algorithm hyperparameters, episode length, operating guidelines.

A recipe is data only (no torch): the CLI validates against it and ``docs/agents.md`` quotes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Guideline:
    """A design guideline the agent is trained to respect (soft penalty in the training reward).

    The plant model does not enforce it (nothing trips), but a vendor or design rule does, and the
    ``optimal_hourly`` baseline honours it too, so an agent must not win by breaking it.

    Attributes:
        tag: Observation tag checked after every step.
        low: Lowest allowed value (``None``: no lower bound).
        high: Highest allowed value (``None``: no upper bound).
        active_tag: The rule applies only where this observation exceeds ``active_above``
            (e.g. only while the plant produces).
        active_above: Threshold of ``active_tag``.
        weight: Penalty per unit of relative violation, in reward units per step.
        doc: Where the rule comes from.
    """

    tag: str
    low: float | None
    high: float | None
    active_tag: str
    active_above: float
    weight: float
    doc: str


@dataclass(frozen=True, slots=True)
class Recipe:
    """How one process is trained by default.

    Attributes:
        process: Process name.
        algo: ``ppo`` or ``sac``.
        steps: Default environment steps of the main policy.
        n_envs: Parallel plants in the vectorised environment.
        episode_hours: Training episode length (time limit).
        randomize: Relative half-width of parameter randomisation at reset.
        ppo: PPO keyword arguments.
        sac: SAC keyword arguments.
        net_arch: Hidden layers of actor and critic.
        log_std_init: Initial log standard deviation of the PPO action noise.
        command_bias_init: Initial output bias of the command dimensions (below 0: the untrained
            policy does not request cleanings, so exploration does not start with a CIP every
            48 h).
        demand_baseline: Subtract the value of the current demand from the reward (exogenous,
            so the optimal policy is unchanged; removes the demand's variance from the return).
        extra_trip_penalty: Added (negated) to the reward on a hard trip, on top of the price
            set's ``trip_penalty`` (see docs/agents.md: HSBRO's former 50 was less than the value of the
            water processed by running the feed tank dry, so a trip paid off).
        guidelines: Operating guidelines penalised during training.
        min_command_interval_h: Minimum time between two requests of a command.
        production_target_m3h: Net production the agent must reach (``None``: none). The training
            reward then values water only up to the target (production beyond it is worth
            nothing) and charges ``shortfall_eur_m3`` per m³ of cumulative shortfall on top
            (``app.training.vec.ProductionTarget``).
        shortfall_eur_m3: Penalty per m³ of net production below the target.
        residual_rule: Train a residual on the process's base rule (``app.training.residual``):
            the policy outputs bounded corrections to the rule's setpoints and thresholds, so a
            zero output is the rule itself.
    """

    process: str
    algo: str = "ppo"
    steps: int = 1_000_000
    n_envs: int = 32
    episode_hours: float = 30 * 24.0
    randomize: float = 0.2
    ppo: dict[str, Any] = field(
        default_factory=lambda: {
            "n_steps": 256,
            "batch_size": 1024,
            "n_epochs": 10,
            "learning_rate": 3e-4,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "clip_range": 0.2,
            "ent_coef": 0.0,
        }
    )
    sac: dict[str, Any] = field(
        default_factory=lambda: {
            "learning_rate": 3e-4,
            "buffer_size": 300_000,
            "batch_size": 256,
            "gamma": 0.99,
            "tau": 0.005,
            "train_freq": 1,
            "gradient_steps": 4,
            "learning_starts": 5_000,
        }
    )
    net_arch: tuple[int, ...] = (64, 64)
    log_std_init: float = -1.0
    command_bias_init: float = -1.0
    demand_baseline: bool = False
    extra_trip_penalty: float = 0.0
    guidelines: tuple[Guideline, ...] = ()
    min_command_interval_h: dict[str, float] = field(default_factory=lambda: {"cip_request": 48.0})
    production_target_m3h: float | None = None
    shortfall_eur_m3: float = 3.0
    residual_rule: bool = False


RO_GUIDELINES = (
    Guideline(
        tag="concentrate_flow_m3h",
        low=14.4,
        high=None,
        active_tag="feed_flow_m3h",
        active_above=1.0,
        weight=2.0,
        doc="minimum concentrate flow 3.6 m³/h per 8-inch vessel × 4 vessels [P14]",
    ),
    Guideline(
        tag="recovery_pct",
        low=None,
        high=75.0,
        active_tag="feed_flow_m3h",
        active_above=1.0,
        weight=2.0,
        doc="recovery ≤ 75 % against scaling at the tail (CF 4) [J]",
    ),
)

RO_QUALITY_GUIDELINES = (
    Guideline(
        tag="permeate_conductivity_uscm",
        low=None,
        high=100.0,
        active_tag="feed_flow_m3h",
        active_above=1.0,
        weight=8.0,
        doc="permeate within the site's 100 µS/cm limit (RO model permeate_limit_uscm); the "
        "price set's soft quality margin alone left the agent off-spec 5.2 % of the time",
    ),
    Guideline(
        tag="tank_level_pct",
        low=60.0,
        high=None,
        active_tag="feed_flow_m3h",
        active_above=1.0,
        weight=2.0,
        doc="product tank kept at least 60 % full: a reserve for demand peaks and stops",
    ),
)

UF_FIXED_SCHEDULE_NET_M3H = 35.0
"""Net filtrate of the UF base control (60 LMH, 40 min cycles, 30 s backwash, daily CEB): 11,760 m³
in the 14-day held-out episodes (``intelwatt eval --process uf --policy baseline:fixed_pi``)."""

RECIPES: dict[str, Recipe] = {
    "ro": Recipe(
        process="ro",
        steps=3_000_000,
        guidelines=RO_GUIDELINES + RO_QUALITY_GUIDELINES,
        demand_baseline=True,
    ),
    "hsbro": Recipe(
        process="hsbro",
        steps=1_000_000,
        episode_hours=12.0,
        min_command_interval_h={},
        command_bias_init=0.0,
        residual_rule=True,
    ),
    "uf": Recipe(
        process="uf",
        steps=800_000,
        episode_hours=14 * 24.0,
        production_target_m3h=UF_FIXED_SCHEDULE_NET_M3H * 1.005,
        # A plain MLP never learned when to CEB (trips in 2–7 of 10 held-out episodes); the
        # residual starts from the fixed schedule, which never trips.
        residual_rule=True,
        min_command_interval_h={"ceb_request": 12.0, "cip_request": 168.0},
    ),
}
"""Default recipe per process."""


def recipe_for(process: str) -> Recipe:
    """The recipe of ``process``.

    Raises:
        KeyError: No recipe; the message lists the processes that have one.
    """
    try:
        return RECIPES[process]
    except KeyError:
        raise KeyError(
            f"no training recipe for process {process!r}; known: {', '.join(sorted(RECIPES))}"
        ) from None
