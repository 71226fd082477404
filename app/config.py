"""Site configuration: one TOML file per plant, validated into frozen pydantic models.

A bad file is reported with one line per problem, each naming the key and, where the key appears in
the file, its line number. Secrets never live in the file: it names an environment variable or an OS
keyring entry instead (see ``app.secrets``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
"""Version of the site file format this console writes and reads natively."""

_SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|keyring:[^/\s]+/[^/\s]+)$")


class ConfigError(Exception):
    """A site file could not be loaded; ``problems`` holds one readable line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s) in the site file:\n{lines}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_ref(value: str | None) -> str | None:
    if value is not None and not _SECRET_REF.match(value):
        raise ValueError(
            "must name where the secret lives, as 'env:VARIABLE' or 'keyring:service/user' "
            "(secrets are never written in the site file)"
        )
    return value


class SiteInfo(_Model):
    """Which plant this is."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    process: Literal["ro", "hsbro", "uf", "md"]
    description: str = ""


class OpcUaSecurity(_Model):
    """OPC UA secure channel and user identity."""

    policy: Literal["None", "Basic256Sha256"] = "Basic256Sha256"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    """Pinned server certificate; the connection is refused if the server presents another."""
    trusted_certificates: tuple[Path, ...] = ()
    username: str | None = None
    password: str | None = None
    """Secret reference for the password: ``env:NAME`` or ``keyring:service/user``."""

    _check_password = field_validator("password")(_secret_ref)

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be 'None' or both name a secure setting")
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"policy {self.policy!r} needs 'certificate' and 'private_key'")
        if self.username is not None and self.password is None:
            raise ValueError("a 'username' needs a 'password' secret reference")
        return self


class OpcUaConnection(_Model):
    """Where and how to reach an OPC UA server."""

    endpoint: str = Field(pattern=r"^opc\.tcp://[^\s/:]+(:\d{1,5})?(/.*)?$")
    namespace_uri: str = "urn:intelwatt:plant"
    application_uri: str = "urn:intelwatt:console"
    timeout_s: float = Field(default=4.0, gt=0, le=60)
    publishing_interval_ms: int = Field(default=100, ge=10, le=10_000)
    reconnect_max_delay_s: float = Field(default=2.0, gt=0, le=300)
    security: OpcUaSecurity = OpcUaSecurity(policy="None", mode="None")


class ModbusConnection(_Model):
    """Where and how to reach a Modbus TCP server."""

    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    device_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    reconnect_delay_max_s: float = Field(default=5.0, gt=0, le=300)
    poll_period_s: float = Field(default=0.5, gt=0, le=60)


class PlantConnection(_Model):
    """The PLC connection: exactly one protocol is active."""

    protocol: Literal["opcua", "modbus"]
    opcua: OpcUaConnection | None = None
    modbus: ModbusConnection | None = None
    stale_after_s: float = Field(default=5.0, gt=0, le=3600)
    """A sample older than this may not be acted on."""
    heartbeat_period_s: float = Field(default=1.0, gt=0, le=60)
    watchdog_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """The PLC's watchdog timeout (must exceed the heartbeat period)."""

    @model_validator(mode="after")
    def _protocol_section(self) -> PlantConnection:
        if getattr(self, self.protocol) is None:
            raise ValueError(
                f"protocol is {self.protocol!r} but the [plant.{self.protocol}] table is missing"
            )
        if self.watchdog_timeout_s <= 2 * self.heartbeat_period_s:
            raise ValueError("watchdog_timeout_s must be more than twice heartbeat_period_s")
        return self


class TagAddressOverride(_Model):
    """Where one logical tag lives in the PLC, overriding the standard map.

    Any field left out keeps the standard map's value (see ``app.plant.plc_map``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    node_id: str | None = Field(default=None, min_length=3)
    """OPC UA node id, e.g. ``ns=2;s=ro.feed_pressure_bar`` or ``s=...`` in the site namespace."""
    modbus_register: int | None = Field(default=None, ge=0, le=65535, alias="register")
    """First Modbus register (0-based protocol address); written ``register`` in the file."""
    table: Literal["input", "holding"] | None = None
    datatype: Literal["int16", "uint16", "int32", "uint32", "float32"] | None = None
    word_order: Literal["big", "little"] | None = None
    byte_swap: bool | None = None
    scale: float | None = None
    offset: float | None = None

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, v: float | None) -> float | None:
        if v == 0:
            raise ValueError("scale must not be zero")
        return v


class TagLimits(_Model):
    """Limits of one setpoint: engineering limits contain operator limits."""

    engineer_low: float
    engineer_high: float
    operator_low: float | None = None
    operator_high: float | None = None
    max_move: float | None = Field(default=None, gt=0)
    """Largest change accepted in one write."""
    max_rate_per_s: float | None = Field(default=None, gt=0)
    min_dwell_s: float = Field(default=0.0, ge=0)
    """Minimum time between two changes of this setpoint."""

    @model_validator(mode="after")
    def _nested(self) -> TagLimits:
        if self.engineer_low >= self.engineer_high:
            raise ValueError("engineer_low must be below engineer_high")
        lo = self.engineer_low if self.operator_low is None else self.operator_low
        hi = self.engineer_high if self.operator_high is None else self.operator_high
        if not (self.engineer_low <= lo < hi <= self.engineer_high):
            raise ValueError(
                "operator limits must lie inside the engineer limits "
                f"[{self.engineer_low}, {self.engineer_high}] and operator_low < operator_high"
            )
        return self


class ControlSettings(_Model):
    """Cadences and deadlines of the control core."""

    agent_period_s: float = Field(default=1800.0, gt=0, le=86_400)
    supervision_period_s: float = Field(default=1.0, gt=0, le=60)
    inference_deadline_s: float = Field(default=2.0, gt=0, le=60)
    recommendation_ttl_s: float = Field(default=900.0, gt=0)
    safe_hold_s: float = Field(default=300.0, ge=0, le=86_400)
    """How long the last safe setpoints are held before handing back to base control."""

    @model_validator(mode="after")
    def _ordering(self) -> ControlSettings:
        if self.inference_deadline_s >= self.agent_period_s:
            raise ValueError("inference_deadline_s must be shorter than agent_period_s")
        if self.recommendation_ttl_s > self.agent_period_s:
            raise ValueError("recommendation_ttl_s must not exceed agent_period_s")
        return self


class ModePolicy(_Model):
    """When the console may be in which mode."""

    initial: Literal["off", "advisory"] = "advisory"
    """Mode at start-up. AUTOMATIC is never entered at start-up: it needs an engineer's confirmation."""
    automatic_min_role: Literal["engineer", "supervisor"] = "engineer"
    max_uncertainty: float = Field(default=0.25, gt=0, le=1)
    """Above this ensemble spread an automatic recommendation goes to the operator instead."""
    max_ood_score: float = Field(default=4.0, gt=0)
    max_consecutive_rejections: int = Field(default=3, ge=1)
    """Safety rejections in a row that demote AUTOMATIC to ADVISORY."""
    promotion: Literal["manual", "automatic"] = "manual"
    """Whether a candidate that passes its gates is promoted automatically or needs an engineer."""
    min_shadow_steps: int = Field(default=48, ge=1)


class RollbackConfig(_Model):
    """Automatic rollback triggers on a newly promoted agent (``[agents.rollback]``).

    Mirrors ``app.controllers.agent_rollback.RollbackSettings``; a rate of 0 switches that trigger
    off (TOML has no null).
    """

    watch_steps: int = Field(default=96, ge=1)
    """Agent steps after a promotion during which the triggers are armed."""
    min_steps: int = Field(default=8, ge=1)
    """Agent steps before a rate trigger may fire."""
    baseline_steps: int = Field(default=24, ge=1)
    """Agent steps before the promotion whose SEC forms the CUSUM reference."""
    cusum: bool = True
    """Enable the CUSUM trigger on normalised SEC."""
    cusum_k: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    """CUSUM slack, in baseline standard deviations."""
    cusum_h: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """CUSUM decision threshold, in baseline standard deviations."""
    cusum_min_sigma_frac: float = Field(default=0.02, gt=0, le=1)
    """Floor of the baseline standard deviation, as a fraction of the baseline mean."""
    paired: bool = True
    """Compare the promoted agent with the previous one on the live-aligned twin at every step."""
    paired_tolerance: float = Field(default=0.02, gt=0, le=1)
    """Relative loss of economic rate that counts as one unit of the paired CUSUM."""
    paired_min_eur_h: float = Field(default=0.1, gt=0, allow_inf_nan=False)
    """Floor of that unit, in EUR/h."""
    constraint_hit_rate: float = Field(default=0.25, ge=0, le=1)
    """Share of proposals refused by the safety envelope that fires (0: off)."""
    abstention_rate: float = Field(default=0.5, ge=0, le=1)
    """Share of steps on which the agent abstained that fires (0: off)."""
    rejection_rate: float = Field(default=0.5, ge=0, le=1)
    """Share of decided recommendations operators rejected that fires (0: off)."""
    min_decisions: int = Field(default=4, ge=1)
    """Decided recommendations before the rejection trigger may fire."""

    @model_validator(mode="after")
    def _window(self) -> RollbackConfig:
        if self.min_steps > self.watch_steps:
            raise ValueError("min_steps must not exceed watch_steps")
        return self


class GateConfig(_Model):
    """Promotion gates beyond ``[modes]`` (``[agents.gates]``).

    Mirrors ``app.agent_runtime.shadow.GateThresholds``.
    """

    max_violations: int = Field(default=0, ge=0)
    """Hypothetical limit hits (step x tag) the candidate may have in shadow."""
    kpi_tolerance_eur_h: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """How much worse (EUR/h) the candidate's twin-predicted KPI may be than the incumbent's."""
    min_kpi_samples: int = Field(default=1, ge=0)
    """Twin KPI evaluations needed before the KPI gate can pass."""
    max_candidate_errors: int = Field(default=0, ge=0)
    """Shadow steps on which the candidate may have failed."""


class AgentSettings(_Model):
    """Where agent packages and trusted signing keys live, and how new agents are judged."""

    package: Path | None = None
    """The agent package (folder or zip) to load as active at start-up."""
    trust_store: Path = Path("resources/trust")
    staging_dir: Path | None = None
    """Where downloaded packages are staged; default under the platform data dir."""
    rollback: RollbackConfig = RollbackConfig()
    gates: GateConfig = GateConfig()


class CloudSettings(_Model):
    """Azure Blob registry, log shipping and the cloud scoring endpoint."""

    enabled: bool = False
    connection_string: str | None = None
    """Secret reference for the storage connection string."""
    container: str = Field(
        default="intelwatt", min_length=3, max_length=63, pattern=r"^[a-z0-9-]+$"
    )
    poll_period_s: float = Field(default=300.0, gt=0)
    scoring_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    scoring_key: str | None = None
    """Secret reference for the endpoint key."""
    scoring_deployment: str | None = None
    """Pinned Azure ML deployment name (``azureml-model-deployment`` header)."""
    scoring_budget_s: float = Field(default=2.0, gt=0, le=60)
    outbox_max_mb: float = Field(default=512.0, gt=0)

    _check_secrets = field_validator("connection_string", "scoring_key")(_secret_ref)

    @model_validator(mode="after")
    def _complete(self) -> CloudSettings:
        if self.enabled and self.connection_string is None:
            raise ValueError(
                "cloud is enabled but 'connection_string' (a secret reference) is missing"
            )
        if self.scoring_url is not None and self.scoring_key is None:
            raise ValueError("'scoring_url' needs a 'scoring_key' secret reference")
        return self


class RetrainSettings(_Model):
    """Continuous training started by the console (``[retrain]``; ``app.controllers.retrain``)."""

    enabled: bool = False
    """Request a retrain job after every ``every_n_steps`` inference steps of the active agent."""
    every_n_steps: int = Field(default=336, ge=1)
    """Inference steps of the active agent between two requests (336 = 7 days at 30 min)."""
    min_good_fraction: float = Field(default=0.8, gt=0, le=1)
    """Share of the window's logged steps that must pass the data checks (quality, no CIP/upset)."""
    min_records: int = Field(default=96, ge=2)
    """Fewest usable records in the window (also passed to the job)."""
    min_span_h: float = Field(default=24.0, ge=0, allow_inf_nan=False)
    """Shortest span of usable records, hours (also passed to the job)."""
    window_steps: int = Field(default=672, ge=2)
    """Most recent logged steps handed to the job (672 = 14 days at 30 min)."""
    steps: int = Field(default=20_000, ge=1)
    """Fine-tuning environment steps of the job."""
    base: Path | None = None
    """Training folder of the running agent (``package/``, ``checkpoints/``, ``vecnormalize.json``);
    default: ``[agents] package``, warm-started from its ``policy.onnx``."""
    extra_args: tuple[str, ...] = ()
    """More ``intelwatt retrain`` options, e.g. ``["--gate-days", "10", "--n-envs", "8"]``."""


class SiteConfig(_Model):
    """A whole site file."""

    schema_version: Annotated[int, Field(ge=1)]
    site: SiteInfo
    plant: PlantConnection
    tags: dict[str, TagAddressOverride] = {}
    limits: dict[str, TagLimits] = {}
    control: ControlSettings = ControlSettings()
    modes: ModePolicy = ModePolicy()
    agents: AgentSettings = AgentSettings()
    cloud: CloudSettings = CloudSettings()
    retrain: RetrainSettings = RetrainSettings()

    @model_validator(mode="after")
    def _agent_period(self) -> SiteConfig:
        if self.control.supervision_period_s > self.plant.watchdog_timeout_s / 2:
            raise ValueError(
                "control.supervision_period_s must be at most half the plant watchdog_timeout_s"
            )
        return self


# --- migrations -------------------------------------------------------------------------------

Migration = Callable[[dict[str, Any]], dict[str, Any]]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` turns a version-``v`` document into a version ``v + 1`` document."""


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a parsed site document up to ``SCHEMA_VERSION``.

    Raises:
        ValueError: The document has no usable ``schema_version`` or is newer than this console.
    """
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError("schema_version: missing or not an integer (this console writes 1)")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version: file is version {version}, this console reads up to {SCHEMA_VERSION}; "
            "update the console"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ValueError(f"schema_version: no migration from version {version}")
        doc = step(doc)
        version += 1
        doc["schema_version"] = version
    return doc


# --- loading ----------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table and key path in a TOML text to the 1-based line where it is defined.

    Only the forms the site files use are understood (tables, dotted table headers, plain keys);
    it is a locator for error messages, not a parser.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = tuple(part.strip().strip('"') for part in header.group(1).split("."))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, key.group(1).strip('"')), number)
    return lines


def _locate(loc: tuple[str | int, ...], lines: Mapping[tuple[str, ...], int]) -> str:
    path = tuple(str(p) for p in loc if not isinstance(p, int))
    dotted = ".".join(str(p) for p in loc) or "(file)"
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return f"{dotted} (line {lines[path[:end]]})"
    return dotted


def parse_site(text: str, path: Path | str = "<site>") -> SiteConfig:
    """Validate the TOML ``text`` of a site file.

    Raises:
        ConfigError: With one line per problem, naming the key and its line where known.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    try:
        doc = migrate(doc)
    except ValueError as exc:
        raise ConfigError(path, [str(exc)]) from None
    try:
        return SiteConfig.model_validate(doc)
    except ValidationError as exc:
        lines = key_lines(text)
        problems = []
        for err in exc.errors(include_url=False):
            where = _locate(tuple(err["loc"]), lines)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (misspelt, or not part of this schema version)"
            problems.append(f"{where}: {message}")
        raise ConfigError(path, problems) from None


def load_site(path: Path | str) -> SiteConfig:
    """Read and validate a site file.

    Relative paths inside the file (certificates, packages, trust store) stay relative to the
    current directory, as an operator types them on the command line.

    Raises:
        ConfigError: The file is missing, unreadable or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read the file: {exc}"]) from None
    return parse_site(text, path)


def default_site_path() -> Path:
    """The demo site shipped with the console (``resources/sites/demo-ro.toml``)."""
    return resources_dir() / "sites" / "demo-ro.toml"


def resources_dir() -> Path:
    """The ``resources/`` folder: beside the package in a checkout or inside a frozen bundle."""
    import sys

    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root is not None:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AgentSettings",
    "CloudSettings",
    "ConfigError",
    "ControlSettings",
    "GateConfig",
    "ModbusConnection",
    "ModePolicy",
    "OpcUaConnection",
    "OpcUaSecurity",
    "PlantConnection",
    "RetrainSettings",
    "RollbackConfig",
    "SiteConfig",
    "SiteInfo",
    "TagAddressOverride",
    "TagLimits",
    "default_site_path",
    "key_lines",
    "load_site",
    "migrate",
    "parse_site",
    "resources_dir",
]
