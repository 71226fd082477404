"""The ``intelwatt`` command line: the composition root of the application.

Each subcommand imports what it needs inside its handler, so ``intelwatt headless`` never loads Qt and
``intelwatt console`` never loads torch. Every subcommand answers ``--help``; bad input ends with one
clear line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from app import __version__
from app.logging_setup import LOG_LEVELS, configure_logging

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PROCESSES = ("ro", "hsbro", "uf")

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """Bad input on the command line: printed as one line, exit code 2."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (port 0-65535), got {text!r}")
    return host, int(port)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _iso_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


# --- handlers -----------------------------------------------------------------------------------


def _console(args: argparse.Namespace) -> int:
    from app.config import default_site_path, load_site

    site_path = args.site or default_site_path()
    site = load_site(site_path)
    if args.check:
        print(f"{site_path}: OK (site {site.site.name!r}, process {site.site.process!r})")
        return EXIT_OK
    from app.ui.app import run_console

    return run_console(site, site_path=Path(site_path), demo=args.demo)


def _headless(args: argparse.Namespace) -> int:
    from app.controllers.headless import run_headless_cli

    return run_headless_cli(args)


def _train(args: argparse.Namespace) -> int:
    try:
        from app.training.train import run_train_cli
    except ImportError as exc:
        raise CliError(f"training is not available in this build: {exc}") from None
    return run_train_cli(args)


def _retrain(args: argparse.Namespace) -> int:
    from app.training.continuous import run_retrain_cli

    return run_retrain_cli(args)


def _plant(args: argparse.Namespace) -> int:
    try:
        from app.plant.server import run_cli
    except ImportError as exc:
        raise CliError(f"the simulated plant is not available in this build: {exc}") from None
    return run_cli(args)


def _eval(args: argparse.Namespace) -> int:
    try:
        from app.training.evaluate import run_cli
    except ImportError as exc:
        raise CliError(f"evaluation is not available in this build: {exc}") from None
    return run_cli(args)


def _audit_verify(args: argparse.Namespace) -> int:
    from app.controllers.ledger import run_audit_cli

    return run_audit_cli(args)


def _keys(args: argparse.Namespace) -> int:
    from app.agent_runtime.keys import run_keys_cli

    return run_keys_cli(args)


def _registry(args: argparse.Namespace) -> int:
    from app.cloud.registry_cli import run_registry_cli

    return run_registry_cli(args)


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and the README generator)."""
    parser = argparse.ArgumentParser(
        prog="intelwatt",
        description="intelwatt-console: operator console for DRL-guided membrane water treatment.",
    )
    parser.add_argument("--version", action="version", version=f"intelwatt-console {__version__}")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="start offscreen on an embedded plant, verify the shipped agent, run a few control "
        "steps and exit 0 (see `intelwatt --self-test --help`)",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="log verbosity (default: info)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="log folder (default: the platform's user log dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "console", help="the Qt operator console", description="Start the operator console."
    )
    p.add_argument("--site", type=Path, help="site file (default: resources/sites/demo-ro.toml)")
    p.add_argument(
        "--demo", action="store_true", help="start the embedded simulated plant on loopback"
    )
    p.add_argument("--check", action="store_true", help="validate the site file and exit")
    p.set_defaults(handler=_console)

    p = sub.add_parser(
        "headless",
        help="the control core without a UI (service, on-prem container)",
        description="Run the control core headless until SIGTERM/SIGINT.",
    )
    p.add_argument("--site", type=Path, required=True, help="site file")
    p.add_argument(
        "--decision-policy",
        choices=("advisory-log", "automatic"),
        default="advisory-log",
        help="what happens to recommendations (default: advisory-log)",
    )
    p.add_argument(
        "--confirm-automatic",
        action="store_true",
        help="confirm AUTOMATIC (required with --decision-policy automatic; the engineer identity "
        "comes from INTELWATT_USER / INTELWATT_PASSWORD)",
    )
    p.add_argument(
        "--status-port", type=_port, default=None, help="serve GET /status on 127.0.0.1:PORT"
    )
    p.add_argument(
        "--status-period",
        type=_positive_float,
        default=60.0,
        help="seconds between status log lines (default: 60)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="ledger and users folder (default: platform)"
    )
    p.set_defaults(handler=_headless)

    p = sub.add_parser(
        "plant",
        help="the simulated plant served as a PLC (OPC UA and/or Modbus TCP)",
        description="Serve a process simulator as a PLC over OPC UA and/or Modbus TCP.",
    )
    p.add_argument("--process", choices=PROCESSES, default="ro", help="process model (default: ro)")
    p.add_argument("--opcua", type=_host_port, metavar="HOST:PORT", help="serve OPC UA here")
    p.add_argument("--modbus", type=_host_port, metavar="HOST:PORT", help="serve Modbus TCP here")
    p.add_argument(
        "--speed", type=_positive_float, default=1.0, help="time acceleration (default: 1)"
    )
    p.add_argument(
        "--scenario", type=Path, help="disturbance scenario CSV (default: seeded random)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--scan", type=_positive_float, default=1.0, help="plant seconds per PLC scan (default: 1)"
    )
    p.add_argument(
        "--watchdog-timeout",
        type=_positive_float,
        default=10.0,
        help="heartbeat watchdog timeout, wall-clock seconds (default: 10)",
    )
    p.add_argument("--device-id", type=_positive_int, default=1, help="Modbus unit id (default: 1)")
    p.add_argument(
        "--security",
        default="none",
        metavar="MODES",
        help="OPC UA endpoints: comma-separated none, sign, sign_encrypt (default: none)",
    )
    p.add_argument(
        "--pki", type=Path, help="OPC UA pki folder: server cert/key (created) and trusted/ certs"
    )
    p.add_argument("--users", type=Path, help="OPC UA users file: name:scrypt$... per line")
    p.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="accept anonymous OPC UA sessions although users are defined",
    )
    p.add_argument(
        "--fault",
        action="append",
        metavar="SPEC",
        help="start-up fault, e.g. freeze:feed_ph, force:feed_ph=15, delay:2:modbus, local (repeatable)",
    )
    p.add_argument(
        "--commands",
        action="store_true",
        help="read fault/operator commands from stdin (see docs/plc-interface.md)",
    )
    p.add_argument(
        "--status-period",
        type=_positive_float,
        default=10.0,
        help="seconds between status log lines (default: 10)",
    )
    p.add_argument("--no-noise", action="store_true", help="serve noise-free measurements")
    p.set_defaults(handler=_plant)

    p = sub.add_parser(
        "train",
        help="train an initial agent and write a signed agent package",
        description="Train an agent on the simulator and write a signed agent package.",
    )
    p.add_argument("--process", choices=PROCESSES, required=True)
    p.add_argument("--out", type=Path, required=True, help="output package folder")
    p.add_argument("--steps", type=_positive_int, help="environment steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--algo", choices=("ppo", "sac"), help="algorithm (default: the process recipe's)"
    )
    p.add_argument("--n-envs", type=_positive_int, help="plants stepped together (default: recipe)")
    p.add_argument("--ensemble", type=int, default=3, help="extra ensemble members (default: 3)")
    p.add_argument(
        "--key", type=Path, help="Ed25519 signing key (default: resources/keys/intelwatt-dev.key)"
    )
    p.add_argument("--version", dest="agent_version", help="agent version (default: dated)")
    p.add_argument(
        "--eval-episodes", type=_positive_int, help="held-out episodes evaluated after training"
    )
    p.add_argument(
        "--eval-days", type=_positive_float, help="episode length of that evaluation (days)"
    )
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default: 1)")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard logs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)

    p = sub.add_parser(
        "eval",
        help="control-quality table: agents and baselines on the same seeded scenarios",
        description="Evaluate agents and baselines on the same seeded scenarios.",
    )
    p.add_argument("--process", choices=PROCESSES, required=True)
    p.add_argument(
        "--policy",
        nargs="+",
        required=True,
        metavar="DIR|baseline:NAME",
        help="policies to compare",
    )
    p.add_argument(
        "--scenarios", type=Path, help="scenario folder (default: resources/scenarios/PROCESS)"
    )
    p.add_argument(
        "--episodes", type=_positive_int, help="episodes (default: one per scenario file)"
    )
    p.add_argument("--days", type=_positive_float, help="episode length override in days")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(handler=_eval)

    p = sub.add_parser(
        "retrain",
        help="the continuous-training job (also the Azure ML command job)",
        description="Calibrate the twin on logged plant data, fine-tune, gate and write a candidate.",
    )
    p.add_argument("--process", choices=PROCESSES, required=True)
    p.add_argument("--data", required=True, help="logged transitions: outbox export or blob prefix")
    p.add_argument("--base", type=Path, required=True, help="agent package to start from")
    p.add_argument("--out", type=Path, required=True, help="candidate package folder")
    p.add_argument("--steps", type=_positive_int, default=20_000, help="fine-tuning steps (20000)")
    p.add_argument("--n-envs", type=_positive_int, default=8, help="plants in fine-tuning (8)")
    p.add_argument(
        "--replay-fraction", type=_fraction, default=0.5, help="share of nominal plants (0.5)"
    )
    p.add_argument(
        "--critic-warmup",
        type=_fraction,
        default=0.0,
        help="share of PPO steps fitting only the critic first (0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--since", type=_iso_datetime, help="window start (ISO 8601)")
    p.add_argument("--until", type=_iso_datetime, help="window end (ISO 8601)")
    p.add_argument("--min-records", type=_positive_int, default=96, help="fewest usable records")
    p.add_argument(
        "--min-span-h", type=_non_negative_float, default=24.0, help="shortest span, hours"
    )
    p.add_argument(
        "--include-label", action="append", default=[], help="event label to keep (e.g. cip)"
    )
    p.add_argument("--time-scale", type=_positive_float, help="plant s per logged s (estimated)")
    p.add_argument("--gate-days", type=_positive_float, help="days per gate scenario (full files)")
    p.add_argument("--key", type=Path, help="signing key (default: the development key)")
    p.add_argument("--trust", type=Path, help="trust store folder (default: resources/trust)")
    p.add_argument("--version", help="candidate version (default <base>-rtYYYYmmddHHMM)")
    p.add_argument("--push", action="store_true", help="push as 'candidate' to the registry")
    p.add_argument("--site", type=Path, help="site file with [cloud] settings for --push")
    p.add_argument("--container", help="registry container (default: site file or intelwatt)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads")
    p.set_defaults(handler=_retrain)

    p = sub.add_parser(
        "registry",
        help="the Azure Blob model registry",
        description="Manage agent versions in Azure Blob.",
    )
    reg = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    for name, text in (
        ("list", "list versions and aliases"),
        ("push", "upload an agent package as a new version"),
        ("pull", "download a version"),
        ("promote", "point 'production' at a version"),
        ("rollback", "point 'production' back at 'previous'"),
    ):
        q = reg.add_parser(name, help=text, description=text.capitalize() + ".")
        q.add_argument("--site", type=Path, help="site file with the [cloud] settings")
        q.add_argument("--process", choices=PROCESSES, default="ro")
        q.add_argument(
            "--container",
            help="blob container (default: the site's [cloud] container, else 'intelwatt')",
        )
        if name == "push":
            q.add_argument(
                "package", type=Path, metavar="PACKAGE", help="signed agent package folder"
            )
            q.add_argument(
                "--alias",
                choices=("candidate", "production", "previous"),
                default=None,
                help="point this alias at the new version (e.g. candidate)",
            )
        elif name == "pull":
            q.add_argument("version", metavar="VERSION")
            q.add_argument(
                "--out", type=Path, required=True, help="target folder (must not exist or be empty)"
            )
        elif name == "promote":
            q.add_argument(
                "version",
                nargs="?",
                default=None,
                metavar="VERSION",
                help="version to promote (default: the candidate)",
            )
        q.set_defaults(handler=_registry)

    p = sub.add_parser("audit", help="audit ledger tools", description="Audit ledger tools.")
    aud = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    q = aud.add_parser(
        "verify",
        help="check the hash chain of an audit ledger",
        description="Verify an audit ledger.",
    )
    q.add_argument("db", type=Path, metavar="DB", help="ledger SQLite file")
    q.set_defaults(handler=_audit_verify)

    p = sub.add_parser(
        "keys", help="Ed25519 signing keys for agent packages", description="Manage signing keys."
    )
    keys = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = keys.add_parser(
        "generate",
        help="create a signing key pair",
        description="Create an Ed25519 key pair (the private key is encrypted with "
        "$INTELWATT_SIGNING_KEY_PASSPHRASE if set).",
    )
    q.add_argument("--out", type=Path, required=True, help="folder for the key pair")
    q.add_argument("--name", default="signing", help="key name")
    q.set_defaults(handler=_keys)
    q = keys.add_parser(
        "trust", help="add a public key to a trust store", description="Trust a key."
    )
    q.add_argument("public_key", type=Path, metavar="PUBLIC_KEY")
    q.add_argument("--store", type=Path, default=Path("resources/trust"))
    q.set_defaults(handler=_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``intelwatt`` command line and return its exit code."""
    from app.config import ConfigError

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--self-test"]:
        from app.selftest import main as self_test

        return self_test(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    configure_logging(args.log_level, args.log_dir, console=args.command != "console")
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"intelwatt {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"intelwatt {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
