"""Rebuild the pre-trained agent packages shipped in ``resources/agents/<process>/``.

One command (``make agents`` runs it)::

    .venv/bin/python -m app.training.ship_agents --process ro hsbro uf

Each process is trained with its recipe (``app.training.recipes``) and a fixed seed, evaluated
against every baseline on the held-out scenarios, signed with the development key (whose public
half is in ``resources/trust``) and copied into ``resources/agents/<process>/``, replacing the
previous package. Training folders (TensorBoard logs, checkpoints) stay under ``--work``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from app.training.recipes import RECIPES
from app.training.train import DEV_KEY, PACKAGE_DIR, REPO_ROOT, TrainConfig, TrainError, train

SHIPPED = REPO_ROOT / "resources" / "agents"
SHIP_SEED = 0
"""Seed of the shipped agents (members use the following seeds)."""
RELEASES = {"ro": 2, "hsbro": 1, "uf": 1}
"""Release n of each shipped agent's version ``<process>-2026.11.<n>`` (bumped with its recipe)."""


def ship(
    process: str,
    *,
    out_root: Path,
    work_root: Path,
    steps: int | None,
    release: int,
    key: Path,
) -> Path:
    """Train ``process`` and install its package at ``out_root/process``; return that folder."""
    work = work_root / process
    if work.exists():
        shutil.rmtree(work)
    cfg = TrainConfig(
        process=process,
        out=work,
        steps=steps,
        seed=SHIP_SEED,
        key=key,
        version=f"{process}-2026.11.{release}",
        progress=sys.stderr.isatty(),
    )
    outcome = train(cfg)
    target = out_root / process
    staging = out_root / f".{process}.new"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(work / PACKAGE_DIR, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    # write_package stages in a mkdtemp folder (mode 0700); shipped resources are world-readable.
    target.chmod(0o755)
    return outcome.package


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m app.training.ship_agents``."""
    parser = argparse.ArgumentParser(
        prog="python -m app.training.ship_agents", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--process", nargs="+", default=["ro", "hsbro", "uf"], choices=sorted(RECIPES)
    )
    parser.add_argument("--out", type=Path, default=SHIPPED, help="default: resources/agents")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "agents")
    parser.add_argument("--steps", type=int, help="override the recipe's training steps")
    parser.add_argument(
        "--release", type=int, help="n of the version 2026.11.<n> (default: the shipped one)"
    )
    parser.add_argument("--key", type=Path, default=DEV_KEY)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for process in args.process:
        try:
            ship(
                process,
                out_root=args.out,
                work_root=args.work,
                steps=args.steps,
                release=args.release if args.release is not None else RELEASES.get(process, 1),
                key=args.key,
            )
        except TrainError as exc:
            sys.stderr.write(f"ship_agents: {process}: {exc}\n")
            return 1
        sys.stderr.write(f"ship_agents: installed {args.out / process}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
