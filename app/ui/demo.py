"""``intelwatt console --demo``: the embedded simulated plant, demo accounts and a time-lapse site.

The demo serves the site's process over the site's protocol on loopback (the site's port, or a free
one with the site adjusted in memory), runs the plant ``DEMO_SPEED`` times faster than real time and
the agent every ``DEMO_AGENT_PERIOD_S`` wall seconds (= 30 plant minutes, the cadence the agent was
trained for), so recommendations appear within minutes. If no users file exists, demo accounts are
created; their passwords are shown in the login dialog in demo mode only.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.config import SiteConfig, resources_dir
from app.controllers.auth import User, UserStore, hash_password
from app.controllers.core import USERS_FILE, default_data_dir
from app.domain import Role
from app.plant.server import PlantConfig, PlantServerThread, free_port

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


def demo_hint() -> str:
    """The login dialog's hint in demo mode."""
    accounts = ", ".join(f"{name} / {password}" for name, _, password in DEMO_USERS)
    return f"Demo accounts (user / password): {accounts}"


def demo_data_dir() -> Path:
    """Where the demo keeps its ledger and users (apart from a real site's)."""
    return default_data_dir() / "demo"


def ensure_demo_users(data_dir: Path) -> bool:
    """Create the demo accounts if ``data_dir`` has no users file; True if they were created."""
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


@dataclass
class DemoPlant:
    """The demo plant and the site pointing at it (ports chosen before the server starts)."""

    thread: PlantServerThread
    site: SiteConfig

    def start(self) -> None:
        """Start serving; returns once the protocol listens."""
        self.thread.start()
        log.info("demo plant serving %s at %sx real time", self.site.site.process, DEMO_SPEED)

    def start_in_background(self) -> Future[None]:
        """Start serving on a short-lived thread (the asyncua address space takes a while to
        build), so the core and the window can be built meanwhile."""
        done: Future[None] = Future()

        def run() -> None:
            try:
                self.start()
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                done.set_exception(exc)
            else:
                done.set_result(None)

        threading.Thread(target=run, name="demo-plant-start", daemon=True).start()
        return done

    def stop(self) -> None:
        """Stop the plant server and join its thread."""
        self.thread.stop()


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
    config = PlantConfig(
        process=site.site.process,
        opcua=opcua,
        modbus=modbus,
        speed=speed,
        watchdog_timeout_s=site.plant.watchdog_timeout_s,
        modbus_device_id=site.plant.modbus.device_id if site.plant.modbus is not None else 1,
    )
    thread = PlantServerThread(config, name="demo-plant")
    return DemoPlant(thread, site.model_copy(update={"plant": plant}))


__all__ = [
    "DEMO_AGENT_PERIOD_S",
    "DEMO_SPEED",
    "DEMO_USERS",
    "DemoPlant",
    "demo_data_dir",
    "demo_hint",
    "demo_site",
    "ensure_demo_users",
    "prepare_demo_plant",
]
