"""Store-and-forward outbox: a durable local SQLite queue drained to daily append blobs.

Every transition, decision, audit event and alarm is written here first (:meth:`Outbox.enqueue`,
cheap enough for the control context: one autocommitted insert in WAL mode). The
:class:`OutboxDrainer` on the cloud loop ships them in id order, in batches, to one append blob per
console and UTC day::

    logs/<site>/<console>/<yyyy-mm-dd>.jsonl          (then <yyyy-mm-dd>.1.jsonl ... when a blob
                                                        nears Azure's 50,000-block limit)

one JSON object per line: ``{"id": 17, "ob": "<outbox id>", "schema": 1, "kind": "transition",
"ts": "...", "data": {...}}``.

**Exactly once.** Every append carries ``appendpos_condition`` (the blob's size as last known). After
any failure whose outcome is unknown (a timeout, a dropped connection, a 412) the drainer forgets
what it knew about the blob, reads its committed size and the id of its last line, deletes the
records that are already in the blob, and only then appends the rest. A late-landing earlier attempt
cannot slip in twice either: the position condition of one of the two appends fails. Record ids come
from ``AUTOINCREMENT`` and are never reused; the ``ob`` field tells lines of a recreated outbox apart.

**No loss.** Rows are deleted (that is the delivery mark) only in the transaction that follows a
successful append; while the storage is unreachable they stay on disk and the drainer backs off
exponentially up to a cap. Offline for days is fine as long as the disk bound allows.

**Bounded disk** (``CloudSettings.outbox_max_mb``, accounted as payload bytes plus a fixed per-row
overhead): at 80 % a ``WARNING`` level event (raise an alarm), at 90 % new *low-priority* records
(transitions) are refused, at 100 % every new record is refused. Older records are never dropped to
make room: what is in the outbox will be delivered. Refusals are counted and reported in the
backlog gauge. Decisions, audit events and alarms therefore keep 10 % of the space to themselves.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob.aio import BlobClient, ContainerClient

from app.cloud.events import (
    OutboxBacklogChanged,
    OutboxDeliveryFailed,
    OutboxLevel,
    OutboxLevelChanged,
)
from app.domain import utc_now

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1
"""Schema version written into every record line."""
DB_SCHEMA = 1
MAX_RECORD_BYTES = 1024 * 1024
ROW_OVERHEAD_BYTES = 64
"""Accounted per record on top of its payload (row header, index entry, timestamps)."""
MAX_BLOCK_BYTES = 4 * 1024 * 1024
"""Largest append block Azure accepts."""
MAX_BLOCKS_PER_BLOB = 49_000
"""Roll over to the next part before Azure's limit of 50,000 blocks per append blob."""
_TAIL_BYTES = 64 * 1024

EventSink = Callable[[object], None]


class RecordKind(enum.StrEnum):
    """What a record is; transitions are the low-priority kind (see the disk policy)."""

    TRANSITION = "transition"
    DECISION = "decision"
    AUDIT = "audit"
    ALARM = "alarm"

    @property
    def low_priority(self) -> bool:
        """True for records refused first when the outbox is nearly full."""
        return self is RecordKind.TRANSITION


class EnqueueResult(enum.StrEnum):
    """What :meth:`Outbox.enqueue` did with a record."""

    ACCEPTED = "accepted"
    REFUSED_LOW_PRIORITY = "refused_low_priority"
    REFUSED_FULL = "refused_full"

    @property
    def accepted(self) -> bool:
        """True if the record is stored."""
        return self is EnqueueResult.ACCEPTED


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    """Fill thresholds of the outbox.

    Attributes:
        max_bytes: The bound (``CloudSettings.outbox_max_mb`` in bytes).
        warning_fraction: From here on the level is ``WARNING``.
        low_priority_fraction: From here on transitions are refused.
        hysteresis: A level is left only this far below its threshold (no alarm flapping).
    """

    max_bytes: int
    warning_fraction: float = 0.8
    low_priority_fraction: float = 0.9
    hysteresis: float = 0.05

    @classmethod
    def from_mb(cls, max_mb: float) -> OutboxLimits:
        """Limits for ``outbox_max_mb``."""
        return cls(max_bytes=int(max_mb * 1024 * 1024))

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("outbox max_bytes must be positive")
        if not 0 < self.warning_fraction < self.low_priority_fraction <= 1:
            raise ValueError("need 0 < warning_fraction < low_priority_fraction <= 1")

    def level(self, pending_bytes: int, current: OutboxLevel) -> OutboxLevel:
        """Level for ``pending_bytes``, leaving ``current`` only past the hysteresis band."""
        fraction = pending_bytes / self.max_bytes
        ladder = (
            (OutboxLevel.FULL, 1.0),
            (OutboxLevel.LOW_PRIORITY_REFUSED, self.low_priority_fraction),
            (OutboxLevel.WARNING, self.warning_fraction),
        )
        for level, threshold in ladder:
            if fraction >= threshold:
                return level
            if _RANK[current] >= _RANK[level] and fraction >= threshold - self.hysteresis:
                return level
        return OutboxLevel.NORMAL


_RANK = {
    OutboxLevel.NORMAL: 0,
    OutboxLevel.WARNING: 1,
    OutboxLevel.LOW_PRIORITY_REFUSED: 2,
    OutboxLevel.FULL: 3,
}


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A stored, undelivered record."""

    id: int
    kind: str
    schema: int
    ts: str
    day: str
    payload: str


def _plain(value: Any) -> Any:
    """JSON fallback for datetimes, enums, dataclasses, numpy values and tuples."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} in the outbox")


def _finite_only(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(v) for v in value]
    return value


def dumps_payload(payload: Mapping[str, Any]) -> str:
    """Compact ASCII JSON of a payload; NaN and infinity become ``null`` (standard JSON)."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=_plain)
    except ValueError:
        plain = json.loads(json.dumps(payload, default=_plain))
        return json.dumps(_finite_only(plain), separators=(",", ":"), allow_nan=False)


class Outbox:
    """The durable queue (thread-safe; ``enqueue`` is meant for the control context).

    Args:
        path: SQLite file (created with its folder if missing).
        limits: Disk bound and thresholds.
        on_event: Receives :class:`OutboxLevelChanged` events, on the thread that caused them.
        clock: Wall clock for record time stamps (the day blob is the UTC date of the record).
        durable: ``synchronous=FULL`` (survives power loss, ≈ one fsync per record) instead of
            ``NORMAL`` (survives a crash of the console; the last records may be lost on power
            loss).
    """

    def __init__(
        self,
        path: Path,
        limits: OutboxLimits,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], datetime] = utc_now,
        durable: bool = False,
    ) -> None:
        self.path = path
        self.limits = limits
        self._on_event = on_event
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._setup(durable)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records").fetchone()
        self._pending_records = int(row[0])
        self._pending_bytes = int(row[1])
        self._refused = 0
        self._level = limits.level(self._pending_bytes, OutboxLevel.NORMAL)
        self.uid = self._meta("outbox_uid")

    def _setup(self, durable: bool) -> None:
        db = self._db
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute(
            "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, schema INTEGER NOT NULL, ts TEXT NOT NULL, day TEXT NOT NULL, "
            "payload TEXT NOT NULL, size INTEGER NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('db_schema', ?), ('outbox_uid', ?)",
            (str(DB_SCHEMA), uuid.uuid4().hex[:12]),
        )
        version = int(self._meta("db_schema"))
        if version != DB_SCHEMA:
            raise RuntimeError(
                f"{self.path}: outbox schema {version}, this console reads {DB_SCHEMA}"
            )

    def _meta(self, key: str) -> str:
        return str(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # --- producer side ----------------------------------------------------------------------

    def enqueue(
        self, kind: RecordKind | str, payload: Mapping[str, Any], *, at: datetime | None = None
    ) -> EnqueueResult:
        """Store one record; never blocks on the network.

        Args:
            kind: Record kind.
            payload: JSON-serialisable mapping (datetimes, enums, dataclasses and numpy values are
                converted; NaN and infinity become ``null``).
            at: Record time (default: the outbox clock); decides the day blob.

        Returns:
            Whether the record was stored or refused by the disk policy.

        Raises:
            ValueError: Unknown kind, or a payload over 1 MiB.
            TypeError: A payload value that cannot be stored.
        """
        kind = RecordKind(kind)
        text = dumps_payload(payload)
        if len(text) > MAX_RECORD_BYTES:
            raise ValueError(f"{kind.value} record is {len(text)} bytes (> {MAX_RECORD_BYTES})")
        when = (at or self._clock()).astimezone(UTC)
        size = len(text) + ROW_OVERHEAD_BYTES
        with self._lock:
            after = self._pending_bytes + size
            if after > self.limits.max_bytes:
                result = EnqueueResult.REFUSED_FULL
            elif (
                kind.low_priority
                and after > self.limits.low_priority_fraction * self.limits.max_bytes
            ):
                result = EnqueueResult.REFUSED_LOW_PRIORITY
            else:
                result = EnqueueResult.ACCEPTED
                self._db.execute(
                    "INSERT INTO records (kind, schema, ts, day, payload, size) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        kind.value,
                        RECORD_SCHEMA,
                        when.isoformat(),
                        when.date().isoformat(),
                        text,
                        size,
                    ),
                )
                self._pending_records += 1
                self._pending_bytes = after
            if not result.accepted:
                self._refused += 1
            change = self._update_level(refused=result)
        if change is not None:
            self._emit(change)
        return result

    def _update_level(self, *, refused: EnqueueResult | None = None) -> OutboxLevelChanged | None:
        new = self.limits.level(self._pending_bytes, self._level)
        # A refusal proves the level, even if the bytes sit just below its threshold.
        forced = {
            EnqueueResult.REFUSED_LOW_PRIORITY: OutboxLevel.LOW_PRIORITY_REFUSED,
            EnqueueResult.REFUSED_FULL: OutboxLevel.FULL,
        }.get(refused or EnqueueResult.ACCEPTED)
        if forced is not None and _RANK[forced] > _RANK[new]:
            new = forced
        if new is self._level:
            return None
        old, self._level = self._level, new
        pct = 100.0 * self._pending_bytes / self.limits.max_bytes
        limit_mb = self.limits.max_bytes / 1024 / 1024
        messages = {
            OutboxLevel.NORMAL: f"cloud outbox back to normal ({pct:.0f} % of {limit_mb:g} MB)",
            OutboxLevel.WARNING: (
                f"cloud outbox {pct:.0f} % full ({limit_mb:g} MB limit): the cloud has not taken "
                "records for a while; check the storage connection"
            ),
            OutboxLevel.LOW_PRIORITY_REFUSED: (
                f"cloud outbox {pct:.0f} % full: new transition records are refused; decisions, "
                "audit events and alarms are still kept"
            ),
            OutboxLevel.FULL: (
                f"cloud outbox full ({limit_mb:g} MB): new records are refused until the cloud "
                "takes the backlog; nothing stored is dropped"
            ),
        }
        return OutboxLevelChanged(
            old, new, self._pending_bytes, self.limits.max_bytes, messages[new]
        )

    def _emit(self, event: object) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("outbox event handler failed on %r", type(event).__name__)

    # --- state ------------------------------------------------------------------------------

    @property
    def level(self) -> OutboxLevel:
        """Current fill level."""
        return self._level

    @property
    def pending_records(self) -> int:
        """Records not yet delivered."""
        return self._pending_records

    @property
    def pending_bytes(self) -> int:
        """Accounted bytes of the undelivered records."""
        return self._pending_bytes

    @property
    def refused_records(self) -> int:
        """Records refused by the disk policy since the outbox was opened."""
        return self._refused

    def backlog(self, *, connected: bool) -> OutboxBacklogChanged:
        """A gauge event describing the backlog now."""
        with self._lock:
            row = self._db.execute("SELECT MIN(id) FROM records").fetchone()
            return OutboxBacklogChanged(
                pending_records=self._pending_records,
                pending_bytes=self._pending_bytes,
                limit_bytes=self.limits.max_bytes,
                level=self._level,
                refused_records=self._refused,
                oldest_pending_id=None if row[0] is None else int(row[0]),
                connected=connected,
            )

    # --- consumer side (the drainer) --------------------------------------------------------

    def peek(self, max_records: int, max_bytes: int) -> list[PendingRecord]:
        """The oldest pending records of one UTC day, at most ``max_records``/``max_bytes``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, schema, ts, day, payload FROM records ORDER BY id LIMIT ?",
                (max_records,),
            ).fetchall()
        batch: list[PendingRecord] = []
        total = 0
        for row in rows:
            record = PendingRecord(*row)
            total += len(record.payload) + 120
            if batch and (record.day != batch[0].day or total > max_bytes):
                break
            batch.append(record)
        return batch

    def oldest_ts(self) -> datetime | None:
        """Time stamp of the oldest pending record."""
        with self._lock:
            row = self._db.execute("SELECT ts FROM records ORDER BY id LIMIT 1").fetchone()
        return None if row is None else datetime.fromisoformat(row[0])

    def mark_delivered(self, through_id: int) -> int:
        """Delete every record with ``id <= through_id`` (they are in the cloud); returns count."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE id <= ?",
                    (through_id,),
                ).fetchone()
                self._db.execute("DELETE FROM records WHERE id <= ?", (through_id,))
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('delivered_through', ?)",
                    (str(through_id),),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pending_records -= int(row[0])
            self._pending_bytes -= int(row[1])
            change = self._update_level()
        if change is not None:
            self._emit(change)
        return int(row[0])

    def compact(self) -> None:
        """Return free pages to the file system and truncate the WAL."""
        with self._lock:
            self._db.execute("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


@dataclass(slots=True)
class _BlobState:
    name: str
    part: int
    size: int
    last_id: int
    blocks: int


def blob_name(site: str, console: str, day: str, part: int = 0) -> str:
    """``logs/<site>/<console>/<day>.jsonl`` (``<day>.<part>.jsonl`` for later parts)."""
    suffix = f".{part}" if part else ""
    return f"logs/{site}/{console}/{day}{suffix}.jsonl"


class OutboxDrainer:
    """Ships the outbox to append blobs; runs on the cloud loop.

    Args:
        outbox: The outbox to drain.
        container: Async container client (not closed by the drainer).
        site: Site name (blob path).
        console: Console name (blob path), unique per console of a site.
        batch_records: Most records per append.
        batch_bytes: Most bytes per append (≤ 4 MiB).
        max_delay_s: A non-full batch waits at most this long for more records (keeps the number
            of blocks per day blob low).
        poll_s: How often an idle drainer looks for new records.
        backoff_initial_s: First retry delay after a failure.
        backoff_cap_s: Longest retry delay.
        on_event: Receives backlog gauges and delivery failures (on the cloud thread).
    """

    def __init__(
        self,
        outbox: Outbox,
        container: ContainerClient,
        *,
        site: str,
        console: str,
        batch_records: int = 5000,
        batch_bytes: int = MAX_BLOCK_BYTES,
        max_delay_s: float = 30.0,
        poll_s: float = 1.0,
        backoff_initial_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        on_event: EventSink | None = None,
    ) -> None:
        if not 0 < batch_bytes <= MAX_BLOCK_BYTES:
            raise ValueError(f"batch_bytes must be in (0, {MAX_BLOCK_BYTES}]")
        self._outbox = outbox
        self._container = container
        self.site = site
        self.console = console
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._max_delay_s = max_delay_s
        self._poll_s = poll_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_cap_s = backoff_cap_s
        self._on_event = on_event
        self._states: dict[str, _BlobState] = {}
        self._connected = True
        self._last_attempt = float("-inf")
        self.delivered = 0
        self.skipped_duplicates = 0
        self.appends = 0

    @property
    def connected(self) -> bool:
        """False while the last delivery attempt failed."""
        return self._connected

    def _emit(self, event: object) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("drainer event handler failed on %r", type(event).__name__)

    async def run(self) -> None:
        """Drain forever: ship what is due, back off exponentially after failures."""
        backoff = self._backoff_initial_s
        while True:
            try:
                shipped = await self.drain(force=False)
            except AzureError as exc:
                self._connected = False
                wait = min(backoff, self._backoff_cap_s) * random.uniform(0.8, 1.0)
                self._emit(OutboxDeliveryFailed(self._current_blob(), _brief(exc), wait))
                self._emit(self._outbox.backlog(connected=False))
                log.warning("outbox delivery failed (%s); retry in %.1f s", _brief(exc), wait)
                backoff = min(backoff * 2, self._backoff_cap_s)
                await asyncio.sleep(wait)
                continue
            backoff = self._backoff_initial_s
            if shipped:
                self._outbox.compact()
            await asyncio.sleep(self._poll_s)

    def _current_blob(self) -> str:
        batch = self._outbox.peek(1, MAX_BLOCK_BYTES)
        return blob_name(self.site, self.console, batch[0].day) if batch else ""

    def _due(self) -> bool:
        pending = self._outbox.pending_records
        if pending >= self._batch_records:
            return True
        return pending > 0 and time.monotonic() - self._last_attempt >= self._max_delay_s

    async def drain(self, *, force: bool = True) -> int:
        """Ship pending records until none is left (or, unless ``force``, none is due).

        Returns:
            Records delivered (including records found already delivered).

        Raises:
            AzureError: The storage failed; nothing is lost, the next call resumes.
        """
        total = 0
        if not force and not self._due():
            return 0
        self._last_attempt = time.monotonic()
        while True:
            batch = self._outbox.peek(self._batch_records, self._batch_bytes)
            if not batch:
                break
            total += await self._ship(batch)
        if not self._connected or total:
            self._connected = True
            self._emit(self._outbox.backlog(connected=True))
        return total

    async def _ship(self, batch: list[PendingRecord]) -> int:
        state = await self._state_for(batch[0].day)
        fresh = [r for r in batch if r.id > state.last_id]
        if len(fresh) < len(batch):
            # Already in the blob: an earlier append landed but its answer was lost.
            skipped = len(batch) - len(fresh)
            self.skipped_duplicates += skipped
            self._outbox.mark_delivered(batch[-1].id if not fresh else fresh[0].id - 1)
            if not fresh:
                return skipped
        chunk = self._lines(fresh)
        blob = self._container.get_blob_client(state.name)
        try:
            await blob.append_block(chunk, appendpos_condition=state.size)
        except BaseException:
            # Outcome unknown (or position mismatch): re-read the blob before the next attempt.
            self._states.pop(batch[0].day, None)
            raise
        state.size += len(chunk)
        state.last_id = fresh[-1].id
        state.blocks += 1
        self.appends += 1
        self._outbox.mark_delivered(fresh[-1].id)
        self.delivered += len(fresh)
        return len(batch)

    def _lines(self, records: list[PendingRecord]) -> bytes:
        ob = json.dumps(self._outbox.uid)
        parts = [
            f'{{"id":{r.id},"ob":{ob},"schema":{r.schema},"kind":"{r.kind}",'
            f'"ts":"{r.ts}","data":{r.payload}}}\n'
            for r in records
        ]
        return "".join(parts).encode()

    async def _state_for(self, day: str) -> _BlobState:
        state = self._states.get(day)
        if state is not None and state.blocks < MAX_BLOCKS_PER_BLOB:
            return state
        part = 0 if state is None else state.part + 1
        while True:
            blob = self._container.get_blob_client(blob_name(self.site, self.console, day, part))
            state = await self._read_state(blob, part)
            if state.blocks < MAX_BLOCKS_PER_BLOB:
                self._states[day] = state
                return state
            part += 1

    async def _read_state(self, blob: BlobClient, part: int) -> _BlobState:
        try:
            props = await blob.get_blob_properties()
        except ResourceNotFoundError:
            try:
                await blob.create_append_blob(if_none_match="*")
            except ResourceExistsError:
                props = await blob.get_blob_properties()
            else:
                return _BlobState(blob.blob_name, part, 0, 0, 0)
        size = int(props.size)
        blocks = int(props.append_blob_committed_block_count or 0)
        last_id = await self._last_id(blob, size) if size else 0
        return _BlobState(blob.blob_name, part, size, last_id, blocks)

    async def _last_id(self, blob: BlobClient, size: int) -> int:
        """Id of the blob's last line if this outbox wrote it, else 0."""
        window = _TAIL_BYTES
        while True:
            offset = max(0, size - window)
            stream = await blob.download_blob(offset=offset, length=size - offset)
            tail = await stream.readall()
            body = tail.rstrip(b"\n")
            cut = body.rfind(b"\n")
            if cut >= 0 or offset == 0:
                line = body[cut + 1 :]
                break
            window *= 4
        try:
            doc = json.loads(line)
        except ValueError:
            log.error("last line of %s is not JSON; assuming none of ours", blob.blob_name)
            return 0
        if not isinstance(doc, dict) or doc.get("ob") != self._outbox.uid:
            return 0
        return int(doc.get("id", 0))


def _brief(exc: BaseException) -> str:
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or ""
        return f"{type(exc).__name__} {exc.status_code} {code}".strip()
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


__all__ = [
    "MAX_RECORD_BYTES",
    "RECORD_SCHEMA",
    "EnqueueResult",
    "Outbox",
    "OutboxDrainer",
    "OutboxLimits",
    "PendingRecord",
    "RecordKind",
    "blob_name",
    "dumps_payload",
]
