"""Logged plant transitions for ``intelwatt retrain``: loading, quality filtering, coverage.

Sources (``--data``):

- an outbox SQLite file (``records`` table of :mod:`app.cloud.outbox`, undelivered records);
- a JSONL file or a folder of them, one outbox line each (``{"id", "ob", "schema", "kind", "ts",
  "data"}``, what the drainer appends to ``logs/<site>/<console>/<day>.jsonl``, and what the
  console's retrain trigger writes to its data folder);
- ``az://<container>/<prefix>``: every ``.jsonl`` append blob under the prefix, read with the
  storage connection string of :mod:`app.cloud.storage`.

Only ``transition`` records are used. The record format, the verdicts and the coverage live in
:mod:`app.plant.transitions` (numpy only, so the console's trigger applies the same rules) and are
re-exported here.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from datetime import datetime
from pathlib import Path

from app.plant.catalog import CATALOGS
from app.plant.transitions import (
    COVERAGE_TAGS,
    EVENT_LABELS,
    REASONS,
    RECORD_SCHEMA,
    SATURATING_UNITS,
    Coverage,
    DataError,
    FilterOptions,
    QualityReport,
    Raw,
    TransitionLog,
    assess,
    columns,
    jsonl_lines,
    parse_ts,
    require_enough,
    utc,
)

# ------------------------------------------------------------------------------------- loading


def load_transitions(
    source: str | Path,
    process: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    connection_string: str | None = None,
) -> TransitionLog:
    """Load the transition records of a window from an outbox export or Blob.

    Args:
        source: SQLite outbox file, JSONL file, folder of JSONL files or ``az://container/prefix``.
        process: Process the records belong to (names the catalogue).
        since: Keep records at or after this time (UTC if naive).
        until: Keep records before this time.
        connection_string: Storage connection string for ``az://`` (default: the environment).

    Raises:
        DataError: Unknown process, unreadable source, malformed record (named by file and
            line or id), or no transition in the window.
    """
    if process not in CATALOGS:
        raise DataError(f"unknown process {process!r}; known: {', '.join(sorted(CATALOGS))}")
    text = str(source)
    if text.startswith("az://"):
        raw = _blob_lines(text, connection_string)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"--data {path}: no such file or folder")
        if path.is_dir():
            files = sorted(path.rglob("*.jsonl"))
            if not files:
                raise DataError(f"--data {path}: folder holds no .jsonl files")
            raw = [item for f in files for item in jsonl_lines(f.read_text("utf-8"), str(f))]
        elif path.suffix in (".jsonl", ".json"):
            raw = jsonl_lines(path.read_text("utf-8"), str(path))
        else:
            raw = _sqlite_records(path)
    lo = utc(since).timestamp() if since else -math.inf
    hi = utc(until).timestamp() if until else math.inf
    rows = [(t, p, where) for t, p, where in raw if lo <= t < hi]
    if not rows:
        raise DataError(f"--data {text}: no transition records in the window")
    rows.sort(key=lambda r: r[0])
    return columns(process, text, rows)


def _sqlite_records(path: Path) -> Raw:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT id, schema, ts, payload FROM records WHERE kind = 'transition' ORDER BY id"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"--data {path}: not an outbox SQLite file ({exc})") from None
    out: Raw = []
    for rid, schema, ts, payload in rows:
        where = f"{path} record {rid}"
        if schema != RECORD_SCHEMA:
            raise DataError(f"{where}: record schema {schema!r}, reads {RECORD_SCHEMA}")
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: payload is not JSON ({exc.msg})") from None
        out.append((parse_ts(ts, where), data, where))
    return out


def _blob_lines(url: str, connection_string: str | None) -> Raw:
    container, _, prefix = url.removeprefix("az://").partition("/")
    if not container:
        raise DataError(f"--data {url}: use az://<container>/<prefix>")
    from app.cloud.storage import open_container, storage_connection_string

    conn = connection_string or storage_connection_string(None)

    async def fetch() -> list[tuple[str, str]]:
        async with open_container(conn, container) as client:
            names = [
                b.name
                async for b in client.list_blobs(name_starts_with=prefix or None)
                if b.name.endswith(".jsonl")
            ]
            texts = []
            for name in sorted(names):
                stream = await client.get_blob_client(name).download_blob()
                texts.append((name, (await stream.readall()).decode("utf-8")))
            return texts

    texts = asyncio.run(fetch())
    if not texts:
        raise DataError(f"--data {url}: no .jsonl blobs under the prefix")
    return [item for name, text in texts for item in jsonl_lines(text, f"{url}:{name}")]


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
    "TransitionLog",
    "assess",
    "load_transitions",
    "require_enough",
]
