"""``intelwatt headless``: the control core without a UI (service, on-prem container).

Decision policies for recommendations:

- ``advisory-log`` (default): the core stays in ADVISORY; every recommendation is logged and
  expires undecided (nobody approves it), so nothing is written to the PLC by the agent.
- ``automatic``: the core enters AUTOMATIC (writes within the safety envelope) once the PLC is
  connected and an agent is active. This needs ``--confirm-automatic`` **and** an engineer (or the
  site's ``automatic_min_role``) identity from ``$INTELWATT_USER`` / ``$INTELWATT_PASSWORD``. Entry
  is attempted until it succeeds once; after an automatic demotion the core stays in ADVISORY
  (re-entering AUTOMATIC is a person's decision).

Status: ``--status-port N`` serves ``GET /status`` (JSON of ``core.status()``) on 127.0.0.1 only;
``--status-period S`` logs one status line every S seconds. SIGTERM / SIGINT stop the core in its
documented order and exit 0.

Run as ``intelwatt headless --site FILE ...`` (or ``python -m app.controllers.headless ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from app.config import ConfigError, load_site
from app.controllers.auth import AuthError, Session
from app.controllers.core import PASSWORD_ENV, USER_ENV, ControlCore, CoreError, CoreOptions
from app.controllers.messages import RecommendationReady
from app.domain import Mode

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def status_json(core: ControlCore) -> str:
    """``core.status()`` as JSON (NaN as null, enums as their values, times ISO 8601)."""
    return json.dumps(_jsonable(core.status()), sort_keys=True)


class _StatusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, core: ControlCore) -> None:
        self.core = core
        super().__init__(("127.0.0.1", port), _StatusHandler)


class _StatusHandler(BaseHTTPRequestHandler):
    server: _StatusServer

    def do_GET(self) -> None:
        if self.path.rstrip("/") not in ("/status", ""):
            self.send_error(404, "only /status")
            return
        body = status_json(self.server.core).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status endpoint: %s", format % args)


def status_line(core: ControlCore) -> str:
    """One line for the periodic status log."""
    s = core.status()
    active = s.active.version if s.active else "none"
    rec = s.last_recommendation
    last = f"{rec.rec_id} {rec.state.value}" if rec else "none"
    return (
        f"mode={s.mode.value} plc={s.plc.value} healthy={s.healthy} agent={active} "
        f"fallback={s.fallback.value} alarms={s.alarms.unacked} unacked "
        f"{list(s.alarms.ids)} last_rec={last} writes={s.kpis.get('auto_writes')} "
        f"refused={s.kpis.get('proposals_refused')} ledger={s.ledger_records}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``headless`` options (the same lines go into ``app/cli.py``)."""
    p = argparse.ArgumentParser(prog="intelwatt headless", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``headless`` options to ``p``."""
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
        help="confirm AUTOMATIC (required with --decision-policy automatic)",
    )
    p.add_argument(
        "--status-port", type=int, default=None, help="serve GET /status on 127.0.0.1:PORT"
    )
    p.add_argument(
        "--status-period", type=float, default=60.0, help="seconds between status log lines"
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="ledger and users folder (default: platform)"
    )


def run_headless_cli(args: argparse.Namespace) -> int:
    """Run the core until SIGTERM/SIGINT; returns the exit code (0 on a clean stop).

    Bad input (site file, options, missing identity for automatic) prints one line on stderr and
    returns 2; a core that cannot start returns 1.
    """
    policy: str = getattr(args, "decision_policy", "advisory-log")
    port: int | None = getattr(args, "status_port", None)
    period = float(getattr(args, "status_period", 60.0) or 60.0)
    if policy == "automatic" and not getattr(args, "confirm_automatic", False):
        return _usage("--decision-policy automatic needs --confirm-automatic")
    if port is not None and not 0 <= port <= 65535:
        return _usage(f"--status-port must be 0-65535, got {port}")
    if not period > 0:
        return _usage(f"--status-period must be positive, got {period}")
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if policy == "automatic" and not (user and password):
        return _usage(f"automatic needs an engineer identity in ${USER_ENV} / ${PASSWORD_ENV}")
    try:
        site = load_site(args.site)
        core = ControlCore(site, CoreOptions(data_dir=getattr(args, "data_dir", None)))
    except ConfigError as exc:
        return _usage(str(exc).replace("\n", " "))
    except CoreError as exc:
        return _usage(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server: _StatusServer | None = None
    try:
        try:
            core.start()
        except CoreError as exc:
            sys.stderr.write(f"intelwatt headless: {exc}\n")
            return EXIT_FAILURE
        if policy == "advisory-log":
            core.bus.subscribe(RecommendationReady, _log_recommendation)
        if port is not None:
            server = _StatusServer(port, core)
            threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
            log.info("status endpoint on http://127.0.0.1:%d/status", server.server_address[1])
        session: Session | None = None
        automatic_done = policy != "automatic"
        while not stop.is_set():
            if not automatic_done:
                session, automatic_done = _try_automatic(core, session, user or "", password or "")
            log.info("%s", status_line(core))
            stop.wait(min(period, 1.0) if not automatic_done else period)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        core.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _try_automatic(
    core: ControlCore, session: Session | None, user: str, password: str
) -> tuple[Session | None, bool]:
    status = core.status()
    if status.active is None or not status.healthy:
        return session, False
    try:
        session = session or core.login(user, password)
    except AuthError as exc:
        log.error("headless: cannot log in %s for AUTOMATIC: %s", user, exc)
        return None, True
    verdict = core.request_mode(
        Mode.AUTOMATIC, session, confirm=True, reason="headless --decision-policy automatic"
    ).result(10)
    if verdict.accepted:
        log.warning("headless: AUTOMATIC entered by %s", user)
        return session, True
    log.warning("headless: AUTOMATIC not entered yet: %s", verdict.reason)
    if "role" in verdict.reason:
        return session, True
    return session, False


def _log_recommendation(event: RecommendationReady) -> None:
    rec = event.recommendation
    proposal = ", ".join(
        f"{sp.tag} {cur.value:g} -> {sp.value:g}"
        for sp, cur in zip(rec.setpoints, rec.current, strict=True)
    )
    log.info(
        "recommendation %s (agent %s, advisory-log, not applied): %s",
        rec.rec_id,
        rec.agent.version,
        proposal,
    )


def _usage(message: str) -> int:
    sys.stderr.write(f"intelwatt headless: {message}\n")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.controllers.headless``: the same as ``intelwatt headless``."""
    from app.logging_setup import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(
        "info",
        Path(os.environ["INTELWATT_LOG_DIR"]) if os.environ.get("INTELWATT_LOG_DIR") else None,
    )
    return run_headless_cli(args)


if __name__ == "__main__":
    sys.exit(main())
