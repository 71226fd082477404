"""Logged plant transitions as data: columns, per-record verdicts, coverage (numpy only).

The pure part of ``intelwatt retrain``'s data stage, importable at runtime: the console's retrain
trigger (:mod:`app.controllers.retrain`) judges the data it has logged with exactly the rules the
job applies (``app.training.data`` adds the loaders for outbox SQLite files and Blob and
re-exports everything here).

Records are the payload of ``CloudSync.enqueue_transition`` (``obs``, ``actions``, ``applied``,
``reward``, ``kpis``, ``agent``, ``cloud_sourced``) plus two optional fields a site may add:
``quality`` (tag → ``good``/``uncertain``/``bad``) and ``labels`` (e.g. ``["cip"]``, ``["upset"]``).
Every record gets a verdict (:data:`REASONS`); only ``ok`` records are used for fitting and
scoring, but all of them stay in the log so a replay keeps the plant's time line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.plant.catalog import CATALOGS, ProcessCatalog

F64 = npt.NDArray[np.float64]

RECORD_SCHEMA = 1
"""Outbox record schema this reader understands."""
REASONS = (
    "ok",
    "missing",
    "bad_quality",
    "out_of_range",
    "saturated",
    "stale",
    "cip",
    "stopped",
    "upset",
    "after_event",
)
"""Verdicts, in the order they are checked (the first that applies wins)."""
EVENT_LABELS = frozenset({"cip", "upset", "trip"})
SATURATING_UNITS = frozenset({"bar", "m3/h", "L/min", "µS/cm", "kW", "NTU"})
"""Units of noisy transmitters: a reading at the top of the span is a bound, and exact repeats
mean a frozen value (tank levels and actuator positions legitimately sit at 100 %; counters,
discrete tags and slow feed properties legitimately repeat)."""


class DataError(ValueError):
    """Unusable training data; the message names the source, record or tag."""


@dataclass(slots=True)
class TransitionLog:
    """Logged control steps in time order, columnar.

    Attributes:
        process: Process name.
        source: Where the records came from.
        times: Record time, seconds since the Unix epoch.
        obs: Observation tag → value per record (NaN where missing or null).
        applied: Set-point/command tag → value written per record (NaN where missing).
        actions: Agent slot → action tag → proposed value per record.
        rewards: Step reward per record (NaN if none).
        agents: Agent version in charge per record.
        labels: Labels per record.
        bad_quality: Per record, the tags the site flagged as not ``good``.
    """

    process: str
    source: str
    times: F64
    obs: dict[str, F64]
    applied: dict[str, F64]
    actions: dict[str, dict[str, F64]]
    rewards: F64
    agents: list[str | None]
    labels: list[frozenset[str]]
    bad_quality: list[frozenset[str]]

    def __len__(self) -> int:
        return int(self.times.size)


@dataclass(slots=True)
class Coverage:
    """How much of one tag's range the good data spans.

    Attributes:
        tag: Tag name.
        low: Low end of the operating range measured against.
        high: High end.
        p05: 5th percentile of the good data.
        p95: 95th percentile.
        bins_filled: Share of ten equal bins between ``low`` and ``high`` that hold data.
    """

    tag: str
    low: float
    high: float
    p05: float
    p95: float
    bins_filled: float


@dataclass(slots=True)
class QualityReport:
    """The verdict on every record and what the good data covers.

    Attributes:
        reasons: Verdict per record (one of :data:`REASONS`).
        culprits: Per record, the tag that decided a bad verdict ("" if none).
        counts: Records per verdict.
        coverage: Coverage of the key operating tags.
        span_h: Hours between the first and the last good record.
    """

    reasons: list[str]
    culprits: list[str]
    counts: dict[str, int]
    coverage: dict[str, Coverage] = field(default_factory=dict)
    span_h: float = 0.0

    @property
    def good(self) -> npt.NDArray[np.bool_]:
        """Mask of the records used for fitting and scoring."""
        return np.array([r == "ok" for r in self.reasons], dtype=bool)

    def to_json(self) -> dict[str, Any]:
        """JSON form (counts, span, coverage) for the promotion report."""
        return {
            "records": len(self.reasons),
            "counts": dict(self.counts),
            "span_h": round(self.span_h, 2),
            "coverage": {
                k: {
                    "p05": round(c.p05, 4),
                    "p95": round(c.p95, 4),
                    "bins_filled": round(c.bins_filled, 2),
                }
                for k, c in self.coverage.items()
            },
        }


@dataclass(frozen=True, slots=True)
class FilterOptions:
    """Data-quality rules.

    Attributes:
        required: Tags that must be present, finite, ``good`` and in range in a usable record
            (default: every observation tag of the catalogue).
        stale_records: A transmitter (:data:`SATURATING_UNITS`) repeating the exact same value this many records in a
            row is a frozen transmitter; those records are dropped.
        settle_records: Records dropped after a CIP, trip or upset (start-up transients).
        include_labels: Event labels whose records are kept (an engineer labelled the window as
            representative), e.g. ``{"cip"}``.
        min_feed_flow_fraction: Feed flow below this share of its range counts as stopped.
    """

    required: tuple[str, ...] | None = None
    stale_records: int = 6
    settle_records: int = 2
    include_labels: frozenset[str] = frozenset()
    min_feed_flow_fraction: float = 0.02


COVERAGE_TAGS: dict[str, tuple[str, ...]] = {
    "ro": (
        "feed_pressure_bar",
        "feed_flow_m3h",
        "feed_temperature_c",
        "feed_conductivity_uscm",
        "recovery_pct",
    ),
}


# ------------------------------------------------------------------------------------- records


def utc(when: datetime) -> datetime:
    """``when`` with UTC attached if it is naive."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def parse_ts(value: Any, where: str) -> float:
    """ISO 8601 time stamp → seconds since the epoch (naive is UTC).

    Raises:
        DataError: Not a time stamp (``where`` names the record).
    """
    try:
        return utc(datetime.fromisoformat(str(value))).timestamp()
    except ValueError:
        raise DataError(f"{where}: bad time stamp {value!r}") from None


Raw = list[tuple[float, dict[str, Any], str]]
"""``(time, payload, where)`` per transition record; ``where`` names file and line or record."""


def jsonl_lines(text: str, name: str) -> Raw:
    """The transition records of outbox JSONL ``text`` (other kinds are skipped).

    Raises:
        DataError: A line is not JSON or not an outbox record (named ``name:line``).
    """
    out: Raw = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "kind" not in rec or "ts" not in rec:
            raise DataError(f"{where}: not an outbox record (needs kind, ts, data)")
        if rec["kind"] != "transition":
            continue
        if rec.get("schema") != RECORD_SCHEMA:
            raise DataError(f"{where}: record schema {rec.get('schema')!r}, reads {RECORD_SCHEMA}")
        data = rec.get("data")
        if not isinstance(data, dict):
            raise DataError(f"{where}: transition without a data object")
        out.append((parse_ts(rec["ts"], where), data, where))
    return out


def columns(
    process: str, source: str, rows: Sequence[tuple[float, dict[str, Any], str]]
) -> TransitionLog:
    """Columnar :class:`TransitionLog` of ``rows`` (in the order given).

    Raises:
        DataError: A value is not a number (named by record and tag).
    """
    n = len(rows)

    def table(maps: Iterable[Mapping[str, Any] | None], where: list[str]) -> dict[str, F64]:
        cols: dict[str, F64] = {}
        for i, (m, w) in enumerate(zip(maps, where, strict=True)):
            if m is None:
                continue
            if not isinstance(m, Mapping):
                raise DataError(f"{w}: expected an object of tag values, got {type(m).__name__}")
            for tag, value in m.items():
                col = cols.get(tag)
                if col is None:
                    col = cols[tag] = np.full(n, np.nan)
                col[i] = _number(value, w, tag)
        return cols

    where = [r[2] for r in rows]
    payloads = [r[1] for r in rows]
    obs = table((p.get("obs") for p in payloads), where)
    applied = table((p.get("applied") for p in payloads), where)
    slots = sorted({s for p in payloads for s in (p.get("actions") or {})})
    actions = {s: table(((p.get("actions") or {}).get(s) for p in payloads), where) for s in slots}
    rewards = np.array(
        [_number(p.get("reward"), w, "reward") for p, w in zip(payloads, where, strict=True)]
    )
    labels = [frozenset(str(x) for x in (p.get("labels") or ())) for p in payloads]
    bad = [
        frozenset(t for t, q in (p.get("quality") or {}).items() if str(q).lower() != "good")
        for p in payloads
    ]
    agents = [_agent(p.get("agent")) for p in payloads]
    return TransitionLog(
        process=process,
        source=source,
        times=np.array([r[0] for r in rows]),
        obs=obs,
        applied=applied,
        actions=actions,
        rewards=rewards,
        agents=agents,
        labels=labels,
        bad_quality=bad,
    )


def _number(value: Any, where: str, tag: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    raise DataError(f"{where}: {tag} is {value!r}, not a number")


def _agent(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return str(value.get("version", "")) or None
    return str(value)


# ------------------------------------------------------------------------------------- filtering


def assess(
    log: TransitionLog,
    options: FilterOptions | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> QualityReport:
    """Give every record a verdict and measure the coverage of the good ones.

    Args:
        log: The loaded transitions.
        options: Filtering rules (default :class:`FilterOptions`).
        ranges: Operating range per tag the coverage is measured against (e.g. the range the
            incumbent saw in training); default the catalogue range.

    Raises:
        DataError: A required tag never appears in the log.
    """
    opts = options or FilterOptions()
    cat = CATALOGS[log.process]
    required = opts.required or tuple(t.name for t in cat.observations)
    absent = [t for t in required if t not in log.obs]
    if absent:
        raise DataError(f"{log.source}: required tag(s) {absent} never logged")
    n = len(log)
    reasons = ["ok"] * n
    culprits = [""] * n

    def mark(mask: npt.NDArray[np.bool_], reason: str, tag: str = "") -> None:
        for i in np.flatnonzero(mask):
            if reasons[i] == "ok":
                reasons[i], culprits[i] = reason, tag

    for tag in required:
        mark(~np.isfinite(log.obs[tag]), "missing", tag)
    for i, flagged in enumerate(log.bad_quality):
        hit = sorted(flagged & set(required))
        if hit and reasons[i] == "ok":
            reasons[i], culprits[i] = "bad_quality", hit[0]
    for tag in required:
        t = cat.tag(tag)
        v = log.obs[tag]
        with np.errstate(invalid="ignore"):
            mark((v < t.low) | (v > t.high), "out_of_range", tag)
            if t.unit in SATURATING_UNITS:
                # A transmitter saturates at its span: the reading is a bound, not a value.
                mark(v >= t.high, "saturated", tag)
    for tag in required:
        t = cat.tag(tag)
        if t.discrete or t.unit not in SATURATING_UNITS:
            continue
        mark(_stale(log.obs[tag], opts.stale_records), "stale", tag)
    events = _events(log, cat, opts)
    for reason in ("cip", "stopped", "upset"):
        mark(events == reason, reason)
    settle = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(events != "")
    for k in range(1, opts.settle_records + 1):
        after = idx + k
        settle[after[after < n]] = True
    mark(settle & (events == ""), "after_event")
    counts = {r: reasons.count(r) for r in REASONS}
    report = QualityReport(reasons, culprits, counts)
    good = report.good
    if good.any():
        when = log.times[good]
        report.span_h = float((when[-1] - when[0]) / 3600.0)
        for tag in COVERAGE_TAGS.get(log.process, ()):
            if tag in log.obs:
                spec = cat.tag(tag)
                lo, hi = (ranges or {}).get(tag, (spec.low, spec.high))
                report.coverage[tag] = _coverage(tag, lo, hi, log.obs[tag][good])
    return report


def _stale(v: F64, run: int) -> npt.NDArray[np.bool_]:
    out = np.zeros(v.size, dtype=bool)
    if run < 2 or v.size < run:
        return out
    same = np.concatenate([[False], v[1:] == v[:-1]])
    count = 0
    for i in range(v.size):
        count = count + 1 if same[i] else 0
        if count >= run - 1:
            out[i - count : i + 1] = True
    return out


def _events(log: TransitionLog, cat: ProcessCatalog, opts: FilterOptions) -> npt.NDArray[np.str_]:
    n = len(log)
    events = np.full(n, "", dtype="<U8")
    for i, labels in enumerate(log.labels):
        hit = sorted((labels & EVENT_LABELS) - opts.include_labels)
        if hit:
            events[i] = "upset" if hit[0] in ("upset", "trip") else hit[0]
    active = [t.name for t in cat.observations if t.discrete and t.name.endswith("_active")]
    for tag in active:
        v = log.obs.get(tag)
        if v is not None and "cip" not in opts.include_labels:
            events[(np.nan_to_num(v) > 0.5) & (events == "")] = "cip"
    flow = next((t for t in cat.observations if t.name == "feed_flow_m3h"), None)
    if flow is not None and flow.name in log.obs:
        low = opts.min_feed_flow_fraction * (flow.high - flow.low)
        with np.errstate(invalid="ignore"):
            stopped = log.obs[flow.name] < low
        events[stopped & (events == "")] = "stopped"
    return events


def _coverage(tag: str, lo: float, hi: float, values: F64) -> Coverage:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Coverage(tag, float(lo), float(hi), math.nan, math.nan, 0.0)
    hist, _ = np.histogram(np.clip(v, lo, hi), bins=10, range=(lo, hi))
    return Coverage(
        tag,
        float(lo),
        float(hi),
        float(np.percentile(v, 5)),
        float(np.percentile(v, 95)),
        float(np.count_nonzero(hist) / 10.0),
    )


def require_enough(report: QualityReport, *, min_records: int, min_span_h: float) -> None:
    """Refuse a window with too little good data (the console's trigger checks the same).

    Raises:
        DataError: Naming what is short and the largest reasons for dropped records.
    """
    n_good = report.counts.get("ok", 0)
    dropped = sorted(((c, r) for r, c in report.counts.items() if r != "ok" and c), reverse=True)[
        :3
    ]
    why = ", ".join(f"{r}: {c}" for c, r in dropped) or "none dropped"
    if n_good < min_records:
        raise DataError(
            f"only {n_good} usable records of {len(report.reasons)} (need {min_records}; "
            f"dropped {why})"
        )
    if report.span_h < min_span_h:
        raise DataError(
            f"usable records span {report.span_h:.1f} h (need {min_span_h:.1f} h to see fouling)"
        )


__all__ = [
    "COVERAGE_TAGS",
    "EVENT_LABELS",
    "REASONS",
    "RECORD_SCHEMA",
    "SATURATING_UNITS",
    "Coverage",
    "DataError",
    "FilterOptions",
    "QualityReport",
    "Raw",
    "TransitionLog",
    "assess",
    "columns",
    "jsonl_lines",
    "parse_ts",
    "require_enough",
    "utc",
]
