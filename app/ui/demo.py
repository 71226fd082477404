"""``intelwatt console --demo``: the embedded simulated plant, demo accounts and a time-lapse site.

The demo serves the site's process over the site's protocol on loopback (the site's port, or a free
one with the site adjusted in memory), runs the plant ``DEMO_SPEED`` times faster than real time and
the agent every ``DEMO_AGENT_PERIOD_S`` wall seconds (= 30 plant minutes, the cadence the agent was
trained for), so recommendations appear within minutes. If no users file exists, demo accounts are
created; their passwords are shown in the login dialog in demo mode only.

The plant runs in a child process (:class:`DemoPlantProcess`), so that it never competes with the
console: building the OPC UA server's standard address space costs a few CPU seconds of pure Python,
and the plant then scans continuously. In the console's own process that work would share the GIL
with the GUI and the control core; in a child process it runs on another core, in parallel with the
console's imports (docs/figures.md, "console cold start"). The parent talks to the child over a
pipe: the child answers ``ready`` once the plant listens, then obeys ``stop_servers`` /
``start_servers`` (a link drop for demos and screenshots) and ``stop``; when the console dies, the
pipe closes and the child stops its plant and exits. This module imports neither the plant server
nor the control core at import time (the plant's settings cross the pipe as plain keyword arguments
of ``PlantConfig``), so the console can start the plant first and import the rest while it builds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.config import SiteConfig, resources_dir
from app.domain import Role

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEMO_SPEED = 15.0
"""Plant seconds per wall-clock second in the demo."""
DEMO_AGENT_PERIOD_S = 120.0
DEMO_TTL_S = 110.0
DEMO_USERS: tuple[tuple[str, Role, str], ...] = (
    ("operator", Role.OPERATOR, "operator-demo"),
    ("engineer", Role.ENGINEER, "engineer-demo"),
    ("supervisor", Role.SUPERVISOR, "supervisor-demo"),
)
# scrypt hashes of the demo passwords above (default parameters), computed once: hashing them at
# every first start costs about a second each on a loaded two-core machine. The passwords are
# public (shown in the login dialog), so nothing secret is stored here; a real site never uses
# these accounts (they are created only for --demo, in the demo's own data folder).
_DEMO_HASHES: dict[str, str] = {
    "operator": "scrypt$n=32768,r=8,p=3$qUMynwhCLt/LJ+xZ455pNA==$"
    "lOcyNwCn8ny/YOzhXmfS5CkHku0WMremztzfc17G5iE=",
    "engineer": "scrypt$n=32768,r=8,p=3$NnKFG0fAMKPyW02kiSV6Cw==$"
    "4f3TUc6U1G9j9Reb5A2yvJlF9IePVvztaYZgvVxYB4s=",
    "supervisor": "scrypt$n=32768,r=8,p=3$vZGZ+mtMQlNHWyIj0Hf1ng==$"
    "lydKFyfLPnz4W2jitDhpw2d1SembDtgpaE6xxAz0WpA=",
}


COMMAND_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_COMMANDS = ("stop_servers", "start_servers")


class DemoPlantError(RuntimeError):
    """The demo plant process failed to start or to obey a command; the message says why."""


def _serve(config: dict[str, object], conn: Connection) -> None:
    """Child process: run the plant until told to stop or until the parent goes away."""
    try:
        from app.plant.server import PlantConfig, PlantServerThread

        thread = PlantServerThread(PlantConfig(**config), name="demo-plant")  # type: ignore[arg-type]
        thread.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ready", ""))
        while True:
            command = conn.recv()  # EOFError once the console's end is closed (or it died)
            if command == "stop":
                break
            if command in _COMMANDS:
                try:
                    getattr(thread.faults, command)()
                    conn.send(("ok", command))
                except Exception as exc:  # noqa: BLE001 - reported to the parent
                    conn.send(("failed", f"{command}: {exc}"))
            else:
                conn.send(("failed", f"unknown command {command!r}"))
    except (EOFError, OSError):
        pass
    finally:
        thread.stop()


class DemoPlantProcess:
    """Runs a plant in a child process.

    Args:
        config: Keyword arguments of ``app.plant.server.PlantConfig`` (plain values; the ports
            must be chosen, the child reports no addresses).
    """

    def __init__(self, config: Mapping[str, object]) -> None:
        self.config = dict(config)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve, args=(self.config, child), name="intelwatt-demo-plant", daemon=True
        )
        self._child_end = child
        self._lock = threading.Lock()
        self.ready: Future[None] = Future()
        """Resolved once the plant listens (or failed with :class:`DemoPlantError`)."""

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self._process.pid

    def start(self) -> Future[None]:
        """Start the child and return :attr:`ready` at once (a watcher thread resolves it)."""
        self._process.start()
        self._child_end.close()  # only the child holds it now: its death closes the pipe
        threading.Thread(target=self._await_ready, name="demo-plant-ready", daemon=True).start()
        return self.ready

    def _await_ready(self) -> None:
        try:
            kind, detail = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode
            self.ready.set_exception(
                DemoPlantError(f"the demo plant process ended before serving (exit {code}): {exc}")
            )
            return
        if kind == "ready":
            log.info("demo plant process %s serving %s", self.pid, self.config.get("process"))
            self.ready.set_result(None)
        else:
            self.ready.set_exception(DemoPlantError(f"the demo plant did not start: {detail}"))

    def _command(self, command: str) -> None:
        if not self.ready.done() or self.ready.exception() is not None:
            raise DemoPlantError(f"{command}: the demo plant is not serving")
        with self._lock:
            self._conn.send(command)
            if not self._conn.poll(COMMAND_TIMEOUT_S):
                raise DemoPlantError(f"{command}: no answer within {COMMAND_TIMEOUT_S:g} s")
            kind, detail = self._conn.recv()
        if kind != "ok":
            raise DemoPlantError(f"{command} failed: {detail}")

    def stop_servers(self) -> None:
        """Stop listening (the PLC link drops; the plant keeps running)."""
        self._command("stop_servers")

    def start_servers(self) -> None:
        """Listen again on the same ports."""
        self._command("start_servers")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the plant and the child (terminated if it does not exit in time)."""
        if self._process.pid is None:
            return
        with self._lock:
            with contextlib.suppress(OSError, ValueError):  # already gone
                self._conn.send("stop")
            self._conn.close()
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("demo plant process %s did not stop: terminating it", self.pid)
            self._process.terminate()
            self._process.join(timeout)


def demo_hint() -> str:
    """The login dialog's hint in demo mode."""
    accounts = ", ".join(f"{name} / {password}" for name, _, password in DEMO_USERS)
    return f"Demo accounts (user / password): {accounts}"


def demo_data_dir() -> Path:
    """Where the demo keeps its ledger and users (apart from a real site's)."""
    from app.controllers.core import default_data_dir

    return default_data_dir() / "demo"


def ensure_demo_users(data_dir: Path) -> bool:
    """Create the demo accounts if ``data_dir`` has no users file; True if they were created."""
    from app.controllers.auth import User, UserStore, hash_password
    from app.controllers.core import USERS_FILE

    store = UserStore(data_dir / USERS_FILE)
    if store.path.exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    users = {
        name: User(
            name,
            role,
            _DEMO_HASHES.get(name) or hash_password(password),
            created_at=now,
            password_changed_at=now,
        )
        for name, role, password in DEMO_USERS
    }
    store.save(users)
    log.warning("created demo accounts in %s (passwords in the login dialog)", store.path)
    return True


def _resolve(path: Path | None) -> Path | None:
    """A relative resource path as given, or beside ``resources/`` when run from elsewhere."""
    if path is None or path.is_absolute() or path.exists():
        return path
    candidate = resources_dir().parent / path
    return candidate if candidate.exists() else path


def free_port(host: str) -> int:
    """A TCP port on ``host`` that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def demo_site(site: SiteConfig) -> SiteConfig:
    """The site with the demo's cadence and resolved resource paths (in memory only)."""
    control = site.control.model_copy(
        update={"agent_period_s": DEMO_AGENT_PERIOD_S, "recommendation_ttl_s": DEMO_TTL_S}
    )
    agents = site.agents.model_copy(
        update={
            "package": _resolve(site.agents.package),
            "trust_store": _resolve(site.agents.trust_store) or site.agents.trust_store,
        }
    )
    return site.model_copy(update={"control": control, "agents": agents})


class InProcessPlant:
    """The same interface as :class:`DemoPlantProcess`, serving from a thread of this process.

    Used by frozen builds: a spawned child of a frozen executable needs
    ``multiprocessing.freeze_support()`` in its entry point.
    """

    def __init__(self, config: Mapping[str, object]) -> None:
        self.config = dict(config)
        self.pid: int | None = None
        self.ready: Future[None] = Future()
        self._thread: Any = None

    def start(self) -> Future[None]:
        """Build and start the plant on a short-lived thread; returns :attr:`ready` at once."""

        def run() -> None:
            try:
                from app.plant.server import PlantConfig, PlantServerThread

                plant = PlantServerThread(PlantConfig(**self.config), name="demo-plant")  # type: ignore[arg-type]
                plant.start()
                self._thread = plant
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                self.ready.set_exception(DemoPlantError(f"the demo plant did not start: {exc}"))
            else:
                self.ready.set_result(None)

        threading.Thread(target=run, name="demo-plant-start", daemon=True).start()
        return self.ready

    def _served(self) -> Any:
        if self._thread is None:
            raise DemoPlantError("the demo plant is not serving")
        return self._thread

    def stop_servers(self) -> None:
        """Stop listening (the PLC link drops)."""
        self._served().faults.stop_servers()

    def start_servers(self) -> None:
        """Listen again."""
        self._served().faults.start_servers()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the plant (after its start finished)."""
        with contextlib.suppress(Exception):
            self.ready.exception(timeout)
        if self._thread is not None:
            self._thread.stop()


@dataclass
class DemoPlant:
    """The demo plant (a child process; in frozen builds a thread) and the site pointing at it."""

    process: DemoPlantProcess | InProcessPlant
    site: SiteConfig

    def start_in_background(self) -> Future[None]:
        """Start the plant process; the future resolves once it listens."""
        log.info("demo plant starting: %s at %sx real time", self.site.site.process, DEMO_SPEED)
        return self.process.start()

    @property
    def ready(self) -> Future[None]:
        """Resolved once the plant listens."""
        return self.process.ready

    def stop_servers(self) -> None:
        """Drop the PLC link (the plant stops listening; it keeps running)."""
        self.process.stop_servers()

    def start_servers(self) -> None:
        """Listen again."""
        self.process.start_servers()

    def stop(self) -> None:
        """Stop the plant process."""
        self.process.stop()


def prepare_demo_plant(site: SiteConfig, speed: float = DEMO_SPEED) -> DemoPlant:
    """Choose loopback ports for ``site``'s protocol (the site's own port if it is free) and
    return the plant, not yet started, with the site adjusted to reach it."""
    plant = site.plant
    opcua: tuple[str, int] | None = None
    modbus: tuple[str, int] | None = None
    if plant.protocol == "opcua" and plant.opcua is not None:
        parts = urlsplit(plant.opcua.endpoint)
        port = parts.port or 4840
        port = port if _port_free(LOOPBACK, port) else free_port(LOOPBACK)
        opcua = (LOOPBACK, port)
        endpoint = urlunsplit(parts._replace(netloc=f"{LOOPBACK}:{port}"))
        plant = plant.model_copy(
            update={"opcua": plant.opcua.model_copy(update={"endpoint": endpoint})}
        )
    elif plant.modbus is not None:
        port = plant.modbus.port
        port = port if _port_free(LOOPBACK, port) else free_port(LOOPBACK)
        modbus = (LOOPBACK, port)
        plant = plant.model_copy(
            update={"modbus": plant.modbus.model_copy(update={"host": LOOPBACK, "port": port})}
        )
    config: dict[str, object] = {
        "process": site.site.process,
        "opcua": opcua,
        "modbus": modbus,
        "speed": speed,
        "watchdog_timeout_s": site.plant.watchdog_timeout_s,
        "modbus_device_id": site.plant.modbus.device_id if site.plant.modbus is not None else 1,
    }
    runner = InProcessPlant(config) if getattr(sys, "frozen", False) else DemoPlantProcess(config)
    return DemoPlant(runner, site.model_copy(update={"plant": plant}))


__all__ = [
    "DEMO_AGENT_PERIOD_S",
    "DEMO_SPEED",
    "DEMO_USERS",
    "DemoPlant",
    "DemoPlantError",
    "DemoPlantProcess",
    "InProcessPlant",
    "demo_data_dir",
    "demo_hint",
    "demo_site",
    "ensure_demo_users",
    "free_port",
    "prepare_demo_plant",
]
