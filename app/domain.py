"""Domain types shared by every layer.

Everything that crosses a thread boundary is one of these frozen dataclasses or enums. They carry
no behaviour beyond small derived properties, so any layer may import them without pulling in I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TagId = str
"""Logical tag name, e.g. ``feed_pressure_bar`` (see ``app.plant.catalog``)."""


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Quality(enum.StrEnum):
    """Quality of a sample, after OPC UA status codes (good / uncertain / bad)."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"
    STALE = "stale"
    """Value has not been refreshed within its freshness budget."""
    OUT_OF_RANGE = "out_of_range"
    """Finite value outside the tag's physical range."""
    NOT_A_NUMBER = "nan"
    """NaN or infinity received from the source."""
    COMM_FAILURE = "comm_failure"
    """No value could be read: the connection is down or the request failed."""
    CONFIG_ERROR = "config_error"
    """The tag's address is wrong (unknown node id or register, type mismatch)."""

    @property
    def usable(self) -> bool:
        """True if a controller may act on a value of this quality."""
        return self is Quality.GOOD


class TagRole(enum.StrEnum):
    """What a tag is for."""

    OBSERVATION = "observation"
    """A measured process value (read only)."""
    SETPOINT = "setpoint"
    """A supervisory setpoint written by the console, read back for verification."""
    STATUS = "status"
    """A PLC status value (read only), e.g. watchdog tripped or remote mode."""
    HEARTBEAT = "heartbeat"
    """A heartbeat counter (console → PLC or PLC → console)."""
    COMMAND = "command"
    """A discrete request written by the console, e.g. ``agent_in_control`` or ``cip_request``."""


class ConnectionState(enum.StrEnum):
    """State of a connection to an external system (PLC, cloud, scoring endpoint)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    AUTH_FAILED = "auth_failed"
    """Credentials or certificates were refused; retrying will not help without a change."""
    CONFIG_ERROR = "config_error"
    """The configuration is wrong (bad endpoint, unknown node ids); retrying will not help."""
    CLOSED = "closed"


class Mode(enum.StrEnum):
    """Operating mode of the control core."""

    OFF = "off"
    """The PLC's own base control runs the plant; the console only watches."""
    ADVISORY = "advisory"
    """The agent recommends; an operator approves, modifies or rejects each recommendation."""
    AUTOMATIC = "automatic"
    """Closed loop: safe recommendations are written without an operator decision."""


class Role(enum.IntEnum):
    """User roles, ordered by authority (a higher role may do what a lower one may)."""

    VIEWER = 0
    OPERATOR = 1
    ENGINEER = 2
    SUPERVISOR = 3


class RecommendationState(enum.StrEnum):
    """Life cycle of a recommendation."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    MODIFIED = "modified"
    REJECTED = "rejected"
    EXPIRED = "expired"
    APPLIED = "applied"
    CONFIRMED = "confirmed"
    """Applied and the PLC readback matches."""
    FAILED = "failed"


class DecisionKind(enum.StrEnum):
    """What an operator (or the automatic policy) decided about a recommendation."""

    APPROVE = "approve"
    MODIFY = "modify"
    REJECT = "reject"
    EXPIRE = "expire"
    AUTO_APPLY = "auto_apply"


class RejectReason(enum.StrEnum):
    """Reason codes an operator chooses when rejecting a recommendation."""

    UNSAFE = "unsafe"
    PROCESS_UPSET = "process_upset"
    MAINTENANCE = "maintenance"
    DISAGREE = "disagree"
    QUALITY_RISK = "quality_risk"
    OTHER = "other"


class AlarmPriority(enum.IntEnum):
    """Alarm priority after ISA-18.2 (higher value, more urgent)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class AlarmState(enum.StrEnum):
    """ISA-18.2 alarm states."""

    NORMAL = "normal"
    UNACKED = "unacked"
    ACKED = "acked"
    RTN_UNACKED = "rtn_unacked"
    """Returned to normal but not yet acknowledged."""
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"


class Slot(enum.StrEnum):
    """Agent slots in the policy host."""

    ACTIVE = "active"
    PREVIOUS = "previous"
    CANDIDATE = "candidate"


class OriginKind(enum.StrEnum):
    """Who asked for an action."""

    OPERATOR = "operator"
    AGENT = "agent"
    CLOUD_AGENT = "cloud_agent"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Origin:
    """The originator of a write or command, recorded on every ledger entry.

    Attributes:
        kind: Operator, agent, cloud agent or the system itself.
        name: User name, agent version or subsystem name.
        role: Role of the user for operator actions, else ``None``.
    """

    kind: OriginKind
    name: str
    role: Role | None = None

    @classmethod
    def operator(cls, user: str, role: Role) -> Origin:
        """Origin for an action by a logged-in user."""
        return cls(OriginKind.OPERATOR, user, role)

    @classmethod
    def agent(cls, version: str) -> Origin:
        """Origin for an action proposed by a local agent version."""
        return cls(OriginKind.AGENT, version)

    @classmethod
    def system(cls, subsystem: str) -> Origin:
        """Origin for an action taken by the console itself (fallback, watchdog, shutdown)."""
        return cls(OriginKind.SYSTEM, subsystem)


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one tag.

    Attributes:
        tag: Logical tag name.
        value: Value in engineering units (NaN when no value is available).
        quality: Quality of the value.
        source_ts: Time stamp given by the source (PLC), UTC.
        received_ts: ``time.monotonic()`` when the console received it.
    """

    tag: TagId
    value: float
    quality: Quality
    source_ts: datetime
    received_ts: float

    def age_s(self, now_monotonic: float) -> float:
        """Seconds since the console received this sample."""
        return max(0.0, now_monotonic - self.received_ts)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest sample of every tag at one instant.

    Attributes:
        samples: Latest sample per tag.
        taken_ts: ``time.monotonic()`` when the snapshot was taken.
    """

    samples: dict[TagId, Sample]
    taken_ts: float

    def value(self, tag: TagId) -> float:
        """Value of ``tag``; raises ``KeyError`` naming the tag if it is absent."""
        try:
            return self.samples[tag].value
        except KeyError:
            raise KeyError(f"tag {tag!r} is not in the snapshot") from None

    def unusable(self, max_age_s: float) -> dict[TagId, str]:
        """Tags whose sample may not be acted on, with the reason."""
        bad: dict[TagId, str] = {}
        for tag, sample in self.samples.items():
            if not sample.quality.usable:
                bad[tag] = sample.quality.value
            elif sample.age_s(self.taken_ts) > max_age_s:
                bad[tag] = Quality.STALE.value
        return bad


@dataclass(frozen=True, slots=True)
class Setpoint:
    """A request to set one supervisory setpoint.

    Attributes:
        tag: Setpoint tag.
        value: Target value in engineering units.
    """

    tag: TagId
    value: float


@dataclass(frozen=True, slots=True)
class AgentVersion:
    """Identity of an agent package.

    Attributes:
        process: Process name (``ro``, ``hsbro``, ``uf``, ``md``).
        version: Version string from the manifest.
        sha256: Hash of ``manifest.json``; identifies the exact package.
        parent: Version this one was retrained from, if any.
        signer: Fingerprint of the key that signed the manifest.
    """

    process: str
    version: str
    sha256: str
    parent: str | None = None
    signer: str | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Setpoint changes proposed by an agent at one control step.

    Attributes:
        rec_id: Unique id.
        agent: Agent that proposed it.
        setpoints: Proposed setpoints.
        current: Current setpoint values at proposal time.
        uncertainty: Ensemble spread, normalised to the action range (0 = members agree).
        ood_score: Out-of-distribution score of the observation (0 = typical).
        created_ts: Wall-clock creation time, UTC.
        expires_ts: After this the recommendation may no longer be applied.
        state: Life-cycle state.
        cloud_sourced: True if the answer came from the cloud endpoint.
    """

    rec_id: str
    agent: AgentVersion
    setpoints: tuple[Setpoint, ...]
    current: tuple[Setpoint, ...]
    uncertainty: float
    ood_score: float
    created_ts: datetime
    expires_ts: datetime
    state: RecommendationState = RecommendationState.PROPOSED
    cloud_sourced: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What was decided about a recommendation, stored as data.

    Attributes:
        rec_id: Recommendation decided on.
        kind: Approve, modify, reject, expire or automatic apply.
        origin: Who decided.
        setpoints: Setpoints to apply (modified values for MODIFY; empty for REJECT/EXPIRE).
        reason: Reject reason code, if rejected.
        note: Free text.
        at: Wall-clock time, UTC.
    """

    rec_id: str
    kind: DecisionKind
    origin: Origin
    setpoints: tuple[Setpoint, ...] = ()
    reason: RejectReason | None = None
    note: str = ""
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the audit ledger.

    Attributes:
        kind: Event kind, e.g. ``write``, ``mode_change``, ``login``, ``model_load``, ``rollback``.
        origin: Who caused it.
        summary: One human-readable line.
        data: JSON-serialisable details.
        at: Wall-clock time, UTC.
    """

    kind: str
    origin: Origin
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm instance as the operator sees it.

    Attributes:
        alarm_id: Stable id of the alarm point, e.g. ``plc.connection`` or ``agent.timeout``.
        priority: ISA-18.2 priority.
        state: Current state.
        message: What is wrong and what to do.
        raised_at: When it last became active, UTC.
        acked_by: User who acknowledged it, if acknowledged.
        note: Operator note.
    """

    alarm_id: str
    priority: AlarmPriority
    state: AlarmState
    message: str
    raised_at: datetime
    acked_by: str | None = None
    note: str = ""


# --- Events published on the event bus (past-tense names) -------------------------------------


@dataclass(frozen=True, slots=True)
class ModeChanged:
    """The operating mode changed."""

    old: Mode
    new: Mode
    reason: str
    origin: Origin
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """A connection to an external system changed state."""

    system: str
    """``plc``, ``cloud`` or ``endpoint``."""
    state: ConnectionState
    detail: str = ""
    at: datetime = field(default_factory=utc_now)
