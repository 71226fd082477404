"""Fault and operator commands of ``intelwatt plant`` (``--fault SPEC`` and the stdin console).

One syntax for both (docs/plc-interface.md):

==============================  ============================================================
``freeze TAG``                  the tag stops updating (value and timestamp held)
``nan TAG`` / ``inf TAG``       serve NaN / +infinity
``force TAG VALUE``             serve VALUE (e.g. out of range)
``status TAG [CODE]``           serve the tag with an OPC UA Bad status (default
                                BadSensorFailure; NaN over Modbus)
``delay SECONDS [PROTOCOL]``    delay every response (``opcua``, ``modbus`` or ``both``)
``clear [TAG]``                 remove a tag's faults, or all faults and delays
``local`` / ``remote``          the PLC's local/remote selector
``inhibit`` / ``allow``         inhibit or allow supervisory writes
``drop``                        abort every client connection
``restart [SECONDS]``           stop both servers, wait, listen again on the same ports
``status``                      print the status line and active faults
==============================  ============================================================

On the command line a spec may use ``:`` or ``=`` instead of spaces: ``--fault freeze:feed_flow_m3h``,
``--fault force:feed_ph=15``, ``--fault delay:2:modbus``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.plant.server import PlantServer

STARTUP_COMMANDS = frozenset(
    {"freeze", "nan", "inf", "force", "status", "delay", "local", "inhibit"}
)
"""Commands allowed in ``--fault`` (applied once at start-up)."""


class CommandError(ValueError):
    """A command could not be understood or applied; the message says why."""


def split_command(text: str) -> list[str]:
    """Words of a command; ``:`` and ``=`` separate words like spaces do."""
    return [w for w in re.split(r"[\s:=]+", text.strip()) if w]


def _number(word: str, what: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise CommandError(f"{what} must be a number, got {word!r}") from None


def _arity(words: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(words) - 1 <= high:
        raise CommandError(f"usage: {usage}")


async def run_command(server: PlantServer, text: str) -> str:
    """Apply one command to ``server`` (on its loop) and return a one-line answer.

    Raises:
        CommandError: Unknown command, wrong arguments, unknown tag or bad value.
    """
    words = split_command(text)
    if not words:
        return ""
    cmd, args = words[0].lower(), words[1:]
    faults = server.faults
    try:
        if cmd == "freeze":
            _arity(words, 1, 1, "freeze TAG")
            server.freeze(args[0])
            return f"{args[0]} frozen"
        if cmd in ("nan", "inf"):
            _arity(words, 1, 1, f"{cmd} TAG")
            faults.force(args[0], math.nan if cmd == "nan" else math.inf)
            return f"{args[0]} forced to {cmd}"
        if cmd == "force":
            _arity(words, 2, 2, "force TAG VALUE")
            faults.force(args[0], _number(args[1], "VALUE"))
            return f"{args[0]} forced to {args[1]}"
        if cmd == "status" and args:
            _arity(words, 1, 2, "status TAG [CODE]")
            faults.bad_status(args[0], args[1] if len(args) > 1 else "BadSensorFailure")
            return (
                f"{args[0]} served with status {args[1] if len(args) > 1 else 'BadSensorFailure'}"
            )
        if cmd == "status":
            return server.status_line()
        if cmd == "delay":
            _arity(words, 1, 2, "delay SECONDS [opcua|modbus|both]")
            faults.set_delay(args[1] if len(args) > 1 else "both", _number(args[0], "SECONDS"))
            return f"responses delayed {args[0]} s ({args[1] if len(args) > 1 else 'both'})"
        if cmd == "clear":
            _arity(words, 0, 1, "clear [TAG]")
            faults.clear(args[0] if args else None)
            return f"faults cleared ({args[0] if args else 'all'})"
        if cmd in ("local", "remote"):
            _arity(words, 0, 0, cmd)
            server.set_remote(cmd == "remote")
            return f"PLC in {cmd} mode"
        if cmd in ("inhibit", "allow"):
            _arity(words, 0, 0, cmd)
            server.set_write_inhibit(cmd == "inhibit")
            return f"supervisory writes {'inhibited' if cmd == 'inhibit' else 'allowed'}"
        if cmd == "drop":
            _arity(words, 0, 0, "drop")
            return f"dropped {server.drop_connections()} connection(s)"
        if cmd == "restart":
            _arity(words, 0, 1, "restart [SECONDS]")
            down = _number(args[0], "SECONDS") if args else 0.0
            if not 0 <= down <= 600:
                raise CommandError("restart SECONDS must be between 0 and 600")
            await server.restart_protocols(down)
            return f"servers restarted after {down:g} s"
    except KeyError as exc:
        raise CommandError(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        if isinstance(exc, CommandError):
            raise
        raise CommandError(str(exc)) from None
    raise CommandError(
        f"unknown command {cmd!r} (freeze, nan, inf, force, status, delay, clear, local, remote, "
        "inhibit, allow, drop, restart)"
    )
