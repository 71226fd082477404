"""Where the soak's memory goes: RSS split by mapping, glibc heap, SQLite, Python heap, structures.

Runs :func:`bench.soak.run_soak` and, every ``--every`` ticks, records:

- RSS and its split from ``/proc/self/smaps`` (anonymous heap, thread arenas, file mappings);
- glibc ``mallinfo2`` (bytes in use vs free-but-kept in the main arena and the thread arenas);
- SQLite's own allocator (``sqlite3_memory_used``, process-wide: page caches of every connection);
- the Python heap (``tracemalloc``, with ``--tracemalloc``: top growing lines between the first
  sample after warm-up and the end);
- the size of every container attribute of the console's live objects (deques, dicts, lists,
  sets), so an unbounded structure shows up by name;
- with ``--trim``, RSS before and after ``malloc_trim(0)`` at each sample: memory glibc holds as
  free but has not returned to the kernel is allocator behaviour, not a leak.

Run: ``.venv/bin/python -m bench.soak_memory --ticks 400000 --every 50000 [--tracemalloc]
[--trim]``; ``MALLOC_ARENA_MAX=2`` in the environment limits glibc's per-thread arenas.
Prints a table per sample and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import re
import sys
import tempfile
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak import run_soak

MB = 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_LIBC.mallinfo2.restype = _Mallinfo2
_LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
_LIBC.malloc_trim.restype = ctypes.c_int


def _sqlite_lib() -> ctypes.CDLL | None:
    # dlopen of the soname returns the copy the sqlite3 module already loaded.
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return lib


_SQLITE = _sqlite_lib()


def rss_mb() -> float:
    """Resident set size in MB from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def smaps_split() -> dict[str, float]:
    """RSS in MB by kind of mapping: ``[heap]``, anonymous (thread arenas, mmaps), files, stacks."""
    split: dict[str, float] = {}
    kind = "anon"
    header = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
    with open("/proc/self/smaps") as f:
        for line in f:
            if header.match(line):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
                if path == "[heap]":
                    kind = "heap"
                elif path.startswith("[stack"):
                    kind = "stack"
                elif path.startswith("["):
                    kind = "other"
                elif path:
                    kind = "file:" + Path(path).name if ".sqlite" in path or ".db" in path else "so"
                else:
                    kind = "anon"
            elif line.startswith("Rss:"):
                split[kind] = split.get(kind, 0.0) + int(line.split()[1]) / 1024
    return {k: round(v, 2) for k, v in sorted(split.items())}


def mallinfo() -> dict[str, float]:
    """glibc heap figures in MB: in use, free but kept, mmapped blocks, arena size."""
    m = _LIBC.mallinfo2()
    return {
        "arena_mb": round(m.arena / MB, 2),
        "in_use_mb": round(m.uordblks / MB, 2),
        "free_kept_mb": round(m.fordblks / MB, 2),
        "mmapped_mb": round(m.hblkhd / MB, 2),
    }


def container_sizes(objects: Mapping[str, object]) -> dict[str, int]:
    """``len()`` of every container attribute of ``objects`` (two levels deep), by dotted name."""
    sizes: dict[str, int] = {}

    def attrs(obj: object) -> dict[str, object]:
        found: dict[str, object] = dict(getattr(obj, "__dict__", {}))
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                found[slot] = getattr(obj, slot)
        return found

    def visit(prefix: str, obj: object, depth: int) -> None:
        for name, value in attrs(obj).items():
            if isinstance(value, (list, dict, set, tuple, bytes, str)) or type(value).__name__ in (
                "deque",
                "defaultdict",
                "OrderedDict",
            ):
                sizes[f"{prefix}.{name}"] = len(value)  # type: ignore[arg-type]
            elif (
                depth > 0
                and hasattr(value, "__dict__")
                and type(value).__module__.startswith("app.")
            ):
                visit(f"{prefix}.{name}", value, depth - 1)

    for name, obj in objects.items():
        visit(name, obj, 1)
    return sizes


@dataclass
class Recorder:
    """Collects one row per probe; keeps the first post-warm-up sample for the diffs."""

    warmup: int
    trim: bool
    rows: list[dict[str, object]] = field(default_factory=list)
    base_sizes: dict[str, int] = field(default_factory=dict)
    end_sizes: dict[str, int] = field(default_factory=dict)
    base_snapshot: tracemalloc.Snapshot | None = None
    end_snapshot: tracemalloc.Snapshot | None = None
    base_types: dict[str, int] = field(default_factory=dict)
    end_types: dict[str, int] = field(default_factory=dict)

    def __call__(self, tick: int, objects: Mapping[str, object]) -> None:
        """Probe callback for :func:`run_soak`."""
        gc.collect()
        row: dict[str, object] = {"tick": tick, "rss_mb": round(rss_mb(), 2)}
        row.update(mallinfo())
        row["sqlite_mb"] = round(_SQLITE.sqlite3_memory_used() / MB, 2) if _SQLITE else None
        if tracemalloc.is_tracing():
            row["py_traced_mb"] = round(tracemalloc.get_traced_memory()[0] / MB, 2)
        row["smaps"] = smaps_split()
        row["threads"] = len(os.listdir("/proc/self/task"))
        if self.trim:
            _LIBC.malloc_trim(0)
            row["rss_after_trim_mb"] = round(rss_mb(), 2)
        self.rows.append(row)
        sizes = container_sizes(objects)
        if tick >= self.warmup and not self.base_sizes:
            self.base_sizes = sizes
            self.base_types = _type_counts()
            if tracemalloc.is_tracing():
                self.base_snapshot = tracemalloc.take_snapshot()
        self.end_sizes = sizes
        print(json.dumps(row), flush=True)

    def finish(self) -> None:
        """Take the end-of-run type counts and heap snapshot."""
        self.end_types = _type_counts()
        if tracemalloc.is_tracing():
            self.end_snapshot = tracemalloc.take_snapshot()


def _type_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: run the soak with memory probes and print what grew."""
    parser = argparse.ArgumentParser(prog="bench.soak_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=400_000)
    parser.add_argument("--every", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracemalloc", action="store_true", help="trace the Python heap (slow)")
    parser.add_argument("--frames", type=int, default=4, help="traceback depth for tracemalloc")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) at every sample")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.tracemalloc:
        tracemalloc.start(args.frames)
    rec = Recorder(warmup=max(1, args.ticks // 4), trim=args.trim)
    with tempfile.TemporaryDirectory(prefix="soak-mem-") as tmp:
        result = run_soak(args.ticks, Path(tmp), seed=args.seed, probe=rec, probe_every=args.every)
        rec.finish()
    print(f"\nsoak: {result}")
    grown = {
        k: (rec.base_sizes.get(k, 0), v)
        for k, v in rec.end_sizes.items()
        if v - rec.base_sizes.get(k, 0) > 0
    }
    print("\ncontainers that grew after warm-up (start → end):")
    for k, (a, b) in sorted(grown.items(), key=lambda kv: kv[1][0] - kv[1][1]):
        print(f"  {k:<50} {a:>9} → {b:>9}")
    print("\nobject types that grew after warm-up (count):")
    type_growth = sorted(
        ((n - rec.base_types.get(t, 0), t) for t, n in rec.end_types.items()), reverse=True
    )
    for d, t in type_growth[:15]:
        print(f"  {t:<50} {d:+}")
    if rec.base_snapshot is not None and rec.end_snapshot is not None:
        print("\nPython heap: top growing allocation sites after warm-up:")
        stats = rec.end_snapshot.compare_to(rec.base_snapshot, "traceback")
        for stat in stats[:10]:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7} blocks")
            for line in stat.traceback.format(limit=4):
                print(f"      {line.strip()}")
    first = next(r for r in rec.rows if int(str(r["tick"])) >= rec.warmup)
    last = rec.rows[-1]
    print(json.dumps({
        "bench": "soak_memory", "ticks": args.ticks,
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", ""),
        "rss_warm_mb": first["rss_mb"], "rss_end_mb": last["rss_mb"],
        "glibc_in_use_warm_mb": first["in_use_mb"], "glibc_in_use_end_mb": last["in_use_mb"],
        "glibc_free_kept_end_mb": last["free_kept_mb"],
        "sqlite_warm_mb": first["sqlite_mb"], "sqlite_end_mb": last["sqlite_mb"],
        "rss_growth_pct": round(
            100 * (float(str(last["rss_mb"])) / float(str(first["rss_mb"])) - 1), 2
        ),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
