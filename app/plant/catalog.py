"""Logical tags per process: the single source of tag names, units, ranges, roles and PLC limits.

The simulators, the simulated PLC server, the drivers' tag maps, the safety envelope, the UI and the
agent packages all read these definitions. A site TOML maps each logical tag to an OPC UA node id or a
Modbus register; it never redefines units or limits beyond narrowing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.domain import TagRole


@dataclass(frozen=True, slots=True)
class TagDef:
    """Definition of one logical tag.

    Attributes:
        name: Logical name, snake_case with a unit suffix (``feed_pressure_bar``).
        unit: Engineering unit as shown to operators.
        low: Lower end of the physical (sensor or actuator) range.
        high: Upper end of the physical range.
        role: What the tag is for.
        description: One line for operators.
        plc_low: Lowest value the PLC accepts for a writable tag (``None`` for read-only tags).
        plc_high: Highest value the PLC accepts for a writable tag.
        max_rate_per_s: Ramp limit the PLC applies to a setpoint, units per second.
        max_move: Largest change an agent may request in one agent step (setpoints only).
        base_value: Setpoint the PLC's base control uses when no supervisor is active.
        discrete: True for 0/1 tags (commands, flags).
    """

    name: str
    unit: str
    low: float
    high: float
    role: TagRole
    description: str
    plc_low: float | None = None
    plc_high: float | None = None
    max_rate_per_s: float | None = None
    max_move: float | None = None
    base_value: float | None = None
    discrete: bool = False

    @property
    def writable(self) -> bool:
        """True if the console writes this tag (setpoints, commands, the console heartbeat)."""
        return self.role in (TagRole.SETPOINT, TagRole.COMMAND) or self.name == CONSOLE_HEARTBEAT


@dataclass(frozen=True, slots=True)
class ProcessCatalog:
    """All tags of one process, in a fixed order.

    Attributes:
        process: Process name (``ro``, ``hsbro``, ``uf``).
        title: Human-readable process name.
        tags: Tag definitions; the order is the order of observation vectors and register maps.
        agent_period_s: Default time between agent steps.
    """

    process: str
    title: str
    tags: tuple[TagDef, ...]
    agent_period_s: float

    def __post_init__(self) -> None:
        names = [t.name for t in self.tags]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(
                f"catalog {self.process!r} defines tags more than once: {sorted(dupes)}"
            )

    def __iter__(self) -> Iterator[TagDef]:
        return iter(self.tags)

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tags)

    def tag(self, name: str) -> TagDef:
        """Return the definition of ``name``; raises ``KeyError`` naming the tag and process."""
        for t in self.tags:
            if t.name == name:
                return t
        raise KeyError(f"process {self.process!r} has no tag {name!r}")

    def by_role(self, *roles: TagRole) -> tuple[TagDef, ...]:
        """Tags having any of ``roles``, in catalogue order."""
        return tuple(t for t in self.tags if t.role in roles)

    @property
    def observations(self) -> tuple[TagDef, ...]:
        """Measured process values."""
        return self.by_role(TagRole.OBSERVATION)

    @property
    def setpoints(self) -> tuple[TagDef, ...]:
        """Supervisory setpoints (continuous, written by the console)."""
        return self.by_role(TagRole.SETPOINT)

    @property
    def writable(self) -> tuple[TagDef, ...]:
        """Every tag the console may write."""
        return tuple(t for t in self.tags if t.writable)


CONSOLE_HEARTBEAT = "console_heartbeat"
PLC_HEARTBEAT = "plc_heartbeat"
AGENT_IN_CONTROL = "agent_in_control"
SUPERVISORY_ACTIVE = "supervisory_active"
WATCHDOG_TRIPPED = "watchdog_tripped"
REMOTE_MODE = "remote_mode"
WRITE_INHIBIT = "write_inhibit"

_S = TagRole.STATUS

COMMON_TAGS: tuple[TagDef, ...] = (
    TagDef(
        CONSOLE_HEARTBEAT,
        "count",
        0,
        65535,
        TagRole.HEARTBEAT,
        "Counter the console increments while it is healthy (PLC watchdog input)",
        plc_low=0,
        plc_high=65535,
    ),
    TagDef(
        PLC_HEARTBEAT,
        "count",
        0,
        65535,
        TagRole.HEARTBEAT,
        "Counter the PLC increments every second",
    ),
    TagDef(
        AGENT_IN_CONTROL,
        "",
        0,
        1,
        TagRole.COMMAND,
        "Console requests supervisory control (1) or hands back to base control (0)",
        plc_low=0,
        plc_high=1,
        base_value=0,
        discrete=True,
    ),
    TagDef(
        SUPERVISORY_ACTIVE, "", 0, 1, _S, "PLC is following the console's setpoints", discrete=True
    ),
    TagDef(
        WATCHDOG_TRIPPED,
        "",
        0,
        1,
        _S,
        "Console heartbeat stopped; PLC returned to base control",
        discrete=True,
    ),
    TagDef(
        REMOTE_MODE,
        "",
        0,
        1,
        _S,
        "Local/remote selector on the panel is in remote (supervisory writes allowed)",
        discrete=True,
    ),
    TagDef(
        WRITE_INHIBIT,
        "",
        0,
        1,
        _S,
        "PLC refuses supervisory writes (maintenance, interlock)",
        discrete=True,
    ),
)

_O = TagRole.OBSERVATION
_SP = TagRole.SETPOINT

# Continuous brackish-water RO train (industrial process water): 4 vessels x 6 elements (37 m2 each).
RO_CATALOG = ProcessCatalog(
    process="ro",
    title="Reverse osmosis train",
    agent_period_s=1800.0,
    tags=(
        TagDef("feed_pressure_bar", "bar", 0, 45, _O, "HP pump discharge / feed pressure"),
        TagDef(
            "concentrate_pressure_bar",
            "bar",
            0,
            45,
            _O,
            "Concentrate pressure at the vessel outlet",
        ),
        TagDef("permeate_pressure_bar", "bar", 0, 5, _O, "Permeate back-pressure"),
        TagDef("stage_dp_bar", "bar", 0, 5, _O, "Feed-to-concentrate pressure drop"),
        TagDef("feed_flow_m3h", "m3/h", 0, 80, _O, "Feed flow"),
        TagDef("permeate_flow_m3h", "m3/h", 0, 80, _O, "Permeate flow"),
        TagDef("concentrate_flow_m3h", "m3/h", 0, 80, _O, "Concentrate flow"),
        TagDef("feed_conductivity_uscm", "µS/cm", 0, 10000, _O, "Feed conductivity"),
        TagDef("permeate_conductivity_uscm", "µS/cm", 0, 500, _O, "Permeate conductivity"),
        TagDef("feed_temperature_c", "°C", 0, 45, _O, "Feed temperature"),
        TagDef("feed_ph", "pH", 0, 14, _O, "Feed pH"),
        TagDef(
            "feed_orp_mv",
            "mV",
            -500,
            1000,
            _O,
            "Feed ORP (oxidant breakthrough protects membranes)",
        ),
        TagDef("tank_level_pct", "%", 0, 100, _O, "Permeate tank level"),
        TagDef("hpp_speed_pct", "%", 0, 100, _O, "HP pump VFD speed"),
        TagDef("hpp_power_kw", "kW", 0, 150, _O, "HP pump electrical power"),
        TagDef("conc_valve_pct", "%", 0, 100, _O, "Concentrate valve opening"),
        TagDef("recovery_pct", "%", 0, 100, _O, "Permeate / feed flow"),
        TagDef(
            "hours_since_cip_h", "h", 0, 10000, _O, "Operating hours since the last clean-in-place"
        ),
        TagDef(
            "cip_active", "", 0, 1, _O, "Clean-in-place in progress (no production)", discrete=True
        ),
        TagDef(
            "feed_pressure_sp_bar",
            "bar",
            0,
            45,
            _SP,
            "Supervisory feed pressure setpoint",
            plc_low=5.0,
            plc_high=40.0,
            max_rate_per_s=0.7,
            max_move=1.0,
            base_value=12.0,
        ),
        TagDef(
            "feed_flow_sp_m3h",
            "m3/h",
            0,
            80,
            _SP,
            "Supervisory feed flow setpoint",
            plc_low=20.0,
            plc_high=70.0,
            max_rate_per_s=0.5,
            max_move=4.0,
            base_value=40.0,
        ),
        TagDef(
            "cip_request",
            "",
            0,
            1,
            TagRole.COMMAND,
            "Request a clean-in-place now",
            plc_low=0,
            plc_high=1,
            base_value=0,
            discrete=True,
        ),
        *COMMON_TAGS,
    ),
)

# Hybrid semi-batch/batch RO pilot of intelWATT case study 3 (BIA Solingen): 2 x XUS180808 in
# series, 64.6 L piston work exchanger; concentrates Cr(III) rinse water to bath strength [P1, P10].
HSBRO_CATALOG = ProcessCatalog(
    process="hsbro",
    title="Hybrid semi-batch/batch RO (electroplating rinse to bath)",
    agent_period_s=60.0,
    tags=(
        TagDef("feed_tank_volume_l", "L", 0, 3000, _O, "Rinse-water feed tank volume"),
        TagDef("feed_conductivity_uscm", "µS/cm", 0, 30000, _O, "Feed (rinse water) conductivity"),
        TagDef("feed_temperature_c", "°C", 0, 45, _O, "Feed temperature"),
        TagDef("supply_pressure_bar", "bar", 0, 125, _O, "Supply (high-pressure) pump discharge"),
        TagDef("recirc_pressure_bar", "bar", 0, 10, _O, "Recirculation pump differential pressure"),
        TagDef("supply_flow_lpm", "L/min", 0, 16, _O, "Supply pump flow"),
        TagDef("recirc_flow_lpm", "L/min", 0, 75, _O, "Recirculation pump flow"),
        TagDef("permeate_flow_lpm", "L/min", 0, 16, _O, "Permeate flow"),
        TagDef("permeate_conductivity_uscm", "µS/cm", 0, 2000, _O, "Permeate conductivity"),
        TagDef(
            "loop_conductivity_uscm", "µS/cm", 0, 200000, _O, "Module outlet (loop) conductivity"
        ),
        TagDef(
            "piston_position_pct", "%", 0, 100, _O, "Work exchanger concentrate side, % of full"
        ),
        TagDef("phase", "", 0, 3, _O, "0 semi-batch, 1 batch, 2 purge/refill, 3 batch finished"),
        TagDef("phase_time_s", "s", 0, 7200, _O, "Time since the current phase started"),
        TagDef(
            "supply_flow_sp_lpm",
            "L/min",
            0,
            16,
            _SP,
            "Supply pump flow setpoint (permeate flow; purge flow in purge)",
            plc_low=4.0,
            plc_high=15.0,
            max_rate_per_s=1.0,
            max_move=6.0,
            base_value=8.0,
        ),
        TagDef(
            "recirc_flow_sp_lpm",
            "L/min",
            0,
            75,
            _SP,
            "Recirculation flow setpoint (the PLC keeps it ≥ 1.5 × supply)",
            plc_low=20.0,
            plc_high=70.0,
            max_rate_per_s=2.0,
            max_move=25.0,
            base_value=48.0,
        ),
        TagDef(
            "purge_factor_sp",
            "",
            0,
            2,
            _SP,
            "Brine purged per cycle / purgeable loop volume",
            plc_low=0.5,
            plc_high=1.5,
            max_move=0.5,
            base_value=0.703,
        ),
        TagDef(
            "end_semibatch_cmd",
            "",
            0,
            1,
            TagRole.COMMAND,
            "End the semi-batch phase now and start the batch phase",
            plc_low=0,
            plc_high=1,
            base_value=0,
            discrete=True,
        ),
        TagDef(
            "end_process_cmd",
            "",
            0,
            1,
            TagRole.COMMAND,
            "Finish this batch of rinse water when the current cycle ends",
            plc_low=0,
            plc_high=1,
            base_value=0,
            discrete=True,
        ),
        *COMMON_TAGS,
    ),
)

# Pressurised hollow-fibre UF rack (surface water / tertiary effluent): 8 modules x 77 m2, dead-end
# filtration with backwash, CEB and CIP sequenced by the PLC (process-models.md §5).
UF_CATALOG = ProcessCatalog(
    process="uf",
    title="Ultrafiltration with backwash",
    agent_period_s=1800.0,
    tags=(
        TagDef("feed_pressure_bar", "bar", 0, 4, _O, "Feed pressure at the module inlet"),
        TagDef("filtrate_pressure_bar", "bar", 0, 2, _O, "Filtrate pressure"),
        TagDef("tmp_bar", "bar", 0, 2.5, _O, "Transmembrane pressure"),
        TagDef("filtrate_flow_m3h", "m3/h", 0, 100, _O, "Filtrate flow"),
        TagDef("bw_flow_m3h", "m3/h", 0, 150, _O, "Backwash flow"),
        TagDef("feed_turbidity_ntu", "NTU", 0, 400, _O, "Feed turbidity"),
        TagDef("filtrate_turbidity_ntu", "NTU", 0, 1, _O, "Filtrate turbidity"),
        TagDef("feed_temperature_c", "°C", 0, 40, _O, "Feed temperature"),
        TagDef("cycle_time_min", "min", 0, 120, _O, "Filtration time since the last backwash"),
        TagDef(
            "tmp_cycle_start_bar", "bar", 0, 2.5, _O, "TMP at the start of this filtration cycle"
        ),
        TagDef(
            "hours_since_ceb_h", "h", 0, 1000, _O, "Hours since the last chemically enhanced BW"
        ),
        TagDef("hours_since_cip_h", "h", 0, 10000, _O, "Hours since the last clean-in-place"),
        TagDef("uf_state", "", 0, 3, _O, "0 filtration, 1 backwash, 2 CEB, 3 CIP (valve sequence)"),
        TagDef(
            "cip_due",
            "",
            0,
            1,
            _O,
            "TMP after backwash, normalised to 20 °C, is in the CIP trigger region",
            discrete=True,
        ),
        TagDef(
            "flux_sp_lmh",
            "LMH",
            0,
            150,
            _SP,
            "Filtrate flux setpoint (filtrate flow / membrane area)",
            plc_low=40.0,
            plc_high=120.0,
            max_rate_per_s=0.5,
            max_move=10.0,
            base_value=60.0,
        ),
        TagDef(
            "filtration_time_sp_min",
            "min",
            0,
            120,
            _SP,
            "Filtration time between backwashes",
            plc_low=20.0,
            plc_high=60.0,
            max_move=10.0,
            base_value=40.0,
        ),
        TagDef(
            "bw_duration_sp_s",
            "s",
            0,
            120,
            _SP,
            "Backwash duration",
            plc_low=10.0,
            plc_high=60.0,
            max_move=15.0,
            base_value=30.0,
        ),
        TagDef(
            "bw_request",
            "",
            0,
            1,
            TagRole.COMMAND,
            "Backwash now (restarts the filtration cycle)",
            plc_low=0,
            plc_high=1,
            base_value=0,
            discrete=True,
        ),
        TagDef(
            "ceb_request",
            "",
            0,
            1,
            TagRole.COMMAND,
            "Chemically enhanced backwash now",
            plc_low=0,
            plc_high=1,
            base_value=0,
            discrete=True,
        ),
        TagDef(
            "cip_request",
            "",
            0,
            1,
            TagRole.COMMAND,
            "Clean-in-place now",
            plc_low=0,
            plc_high=1,
            base_value=0,
            discrete=True,
        ),
        *COMMON_TAGS,
    ),
)

CATALOGS: dict[str, ProcessCatalog] = {
    c.process: c for c in (RO_CATALOG, HSBRO_CATALOG, UF_CATALOG)
}
"""Every process with a catalogue, by name. Models register theirs here when they land."""


def catalog(process: str) -> ProcessCatalog:
    """Return the catalogue of ``process``; raises ``KeyError`` listing the known processes."""
    try:
        return CATALOGS[process]
    except KeyError:
        raise KeyError(
            f"unknown process {process!r}; known processes: {', '.join(sorted(CATALOGS))}"
        ) from None
