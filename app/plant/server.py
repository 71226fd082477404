"""``intelwatt plant``: a process simulator served as a PLC over OPC UA and Modbus TCP.

``PlantServer`` owns one ``PlcCore`` (model, base control, watchdog, limits; see ``app.plant.plc``)
and its protocol front ends, and steps the plant at wall-clock time times ``speed`` on its asyncio loop.
``PlantServerThread`` runs it on its own ``app.concurrency.LoopThread`` for callers without an
event loop (tests, ``intelwatt console --demo``). ``run_cli`` is the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from app.concurrency import LoopThread
from app.plant.base_control import base_control
from app.plant.faults import FaultTable
from app.plant.modbus_server import ModbusFrontEnd
from app.plant.models.base import DisturbanceSource, Policy, ProcessModel
from app.plant.models.registry import MODEL_CLASSES
from app.plant.noise import plc_noise
from app.plant.opcua_security import load_users
from app.plant.opcua_server import OpcUaFrontEnd, OpcUaSecurity
from app.plant.plc import Noise, PlcCore, PlcSettings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
TICK_MAX_S = 0.1
"""Longest wall time between two PLC ticks (handshake and watchdog resolution)."""


class PlantConfigError(ValueError):
    """The plant cannot be built as configured; the message names the culprit."""


@dataclass(frozen=True, slots=True)
class PlantConfig:
    """What to serve and how.

    Attributes:
        process: Process name (``ro``, ``hsbro``, ``uf``).
        opcua: ``(host, port)`` of the OPC UA endpoint, or None for no OPC UA; port 0 picks one.
        modbus: ``(host, port)`` of the Modbus TCP server, or None; port 0 picks one.
        speed: Plant seconds per wall-clock second.
        scan_s: Plant seconds per PLC scan.
        seed: Seed of disturbances, noise and initial state.
        scenario: Scenario CSV file (default: seeded random disturbances).
        watchdog_timeout_s: Wall-clock seconds without a heartbeat change before the watchdog trips.
        security: OPC UA endpoint security and users.
        modbus_device_id: Modbus unit id.
        noise: Add sensor noise to observations.
        params: Hidden model-parameter overrides (e.g. ``{"water_permeability_lmh_bar": 2.6}``
            for RO): a plant that differs from the simulator the agents were trained on.
    """

    process: str = "ro"
    opcua: tuple[str, int] | None = ("127.0.0.1", 0)
    modbus: tuple[str, int] | None = ("127.0.0.1", 0)
    speed: float = 1.0
    scan_s: float = 1.0
    seed: int = 0
    scenario: Path | None = None
    watchdog_timeout_s: float = 10.0
    security: OpcUaSecurity = field(default_factory=OpcUaSecurity)
    modbus_device_id: int = 1
    noise: bool = True
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.process not in MODEL_CLASSES:
            raise PlantConfigError(
                f"unknown process {self.process!r}; known: {', '.join(sorted(MODEL_CLASSES))}"
            )
        if self.opcua is None and self.modbus is None:
            raise PlantConfigError("serve at least one protocol (OPC UA and/or Modbus)")
        PlcSettings(self.speed, self.scan_s, self.watchdog_timeout_s)


def build_process(
    config: PlantConfig,
) -> tuple[ProcessModel, Policy, DisturbanceSource, Noise | None, np.random.Generator]:
    """The model (reset, ``n == 1``), base control, disturbances and noise for ``config``.

    Raises:
        PlantConfigError: The process or the scenario file cannot be used.
    """
    from app.plant.scenarios import RandomDisturbances, ScenarioError, ScenarioFile

    rng = np.random.default_rng(config.seed)
    model = MODEL_CLASSES[config.process](1)
    base = base_control(config.process, model.catalog)
    disturbances: DisturbanceSource
    try:
        if config.scenario is not None:
            disturbances = ScenarioFile(
                config.scenario, required=model.disturbance_names, process=config.process
            )
        else:
            disturbances = RandomDisturbances(config.process)
    except ScenarioError as exc:
        raise PlantConfigError(str(exc)) from None
    disturbances.reset(1, rng)
    initial: dict[str, float] = {}
    if getattr(model, "accepts_initial_disturbances", False):
        first = disturbances.at(np.zeros(1))
        initial = {k: float(first[k][0]) for k in model.disturbance_names if k in first}
    try:
        model.reset(rng, params={**config.params, **initial} or None)
    except ValueError as exc:
        raise PlantConfigError(f"PlantConfig.params: {exc}") from None
    noise = (
        plc_noise(model.catalog, np.random.default_rng(config.seed + 1)) if config.noise else None
    )
    return model, base, disturbances, noise, rng


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class PlantServer:
    """One simulated plant behind an OPC UA and/or a Modbus TCP server, on the caller's loop.

    Args:
        config: What to serve.
        clock: Monotonic wall clock in seconds (tests may pass a controllable one).
    """

    def __init__(self, config: PlantConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        model, base, disturbances, noise, rng = build_process(config)
        self.faults = FaultTable(model.catalog)
        self.core = PlcCore(
            model,
            base,
            disturbances,
            PlcSettings(config.speed, config.scan_s, config.watchdog_timeout_s),
            rng,
            clock(),
            noise=noise,
            faults=self.faults,
        )
        self.opcua: OpcUaFrontEnd | None = None
        self.modbus: ModbusFrontEnd | None = None
        if config.opcua is not None:
            host, port = config.opcua
            self.opcua = OpcUaFrontEnd(
                self.core, host, port or free_port(host), config.security, clock
            )
        if config.modbus is not None:
            host, port = config.modbus
            self.modbus = ModbusFrontEnd(
                self.core, host, port or free_port(host), config.modbus_device_id, clock
            )
        self._task: asyncio.Task[None] | None = None
        self._initialised = False
        self._publishing: set[asyncio.Task[None]] = set()
        self.core.on_change.append(self._publish_soon)

    def _publish_soon(self) -> None:
        """Show a write made over one protocol on the other at once, not at the next tick."""
        if self.opcua is None or not self.opcua.running:
            return
        task = asyncio.get_running_loop().create_task(self.opcua.publish(full=False))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    @property
    def opcua_endpoint(self) -> str | None:
        """The OPC UA endpoint URL, or None if OPC UA is not served."""
        return self.opcua.endpoint if self.opcua is not None else None

    @property
    def modbus_port(self) -> int | None:
        """The Modbus TCP port, or None if Modbus is not served."""
        return self.modbus.port if self.modbus is not None else None

    async def start(self) -> None:
        """Build the address space, start listening and start the scan loop."""
        if self.opcua is not None and not self._initialised:
            await self.opcua.init()
        self._initialised = True
        await self.start_protocols()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="plant-scan")

    async def stop(self) -> None:
        """Stop the scan loop and both servers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.stop_protocols()

    async def start_protocols(self) -> None:
        """(Re)start listening on the same ports; the plant keeps running meanwhile."""
        if self.opcua is not None and not self.opcua.running:
            await self.opcua.start()
        if self.modbus is not None and not self.modbus.running:
            await self.modbus.start()

    async def stop_protocols(self) -> None:
        """Stop listening and close every client connection; the plant keeps running."""
        if self.opcua is not None:
            await self.opcua.stop()
        if self.modbus is not None:
            await self.modbus.stop()

    async def restart_protocols(self, down_s: float = 0.0) -> None:
        """Stop both servers, wait ``down_s`` seconds, start them again on the same ports."""
        await self.stop_protocols()
        if down_s > 0:
            await asyncio.sleep(down_s)
        await self.start_protocols()

    def drop_connections(self) -> int:
        """Abort every client connection of both protocols; returns how many were closed."""
        dropped = 0
        if self.opcua is not None:
            dropped += self.opcua.drop_connections()
        if self.modbus is not None:
            dropped += self.modbus.drop_connections()
        return dropped

    def set_remote(self, remote: bool) -> None:
        """Turn the PLC's local/remote selector."""
        self.core.set_remote(remote, self._clock())

    def set_write_inhibit(self, inhibit: bool) -> None:
        """Inhibit supervisory writes (maintenance switch / interlock)."""
        self.core.set_write_inhibit(inhibit, self._clock())

    def freeze(self, tag: str) -> None:
        """Freeze ``tag`` at its current served value."""
        value, _ = self.core.served()[self._known(tag)]
        self.faults.freeze(tag, value)

    def _known(self, tag: str) -> str:
        self.core.catalog.tag(tag)
        return tag

    def status_line(self) -> str:
        """One line for the periodic status log."""
        snap = self.core.snapshot()
        c = self.core
        parts = [
            f"t={c.t_s / 3600:.2f} h",
            f"supervisory={int(snap['supervisory_active'])}",
            f"watchdog_tripped={int(snap['watchdog_tripped'])}",
            f"remote={int(snap['remote_mode'])}",
        ]
        for tdef in c.catalog.setpoints:
            parts.append(f"{tdef.name}={snap[tdef.name]:.2f}")
        faults = self.faults.active()
        if faults:
            parts.append("faults: " + "; ".join(f"{k} {v}" for k, v in faults.items()))
        return " ".join(parts)

    async def _run(self) -> None:
        s = self.core.settings
        while True:
            try:
                scans = self.core.tick(self._clock())
                if self.opcua is not None and self.opcua.running:
                    await self.opcua.publish(full=scans > 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("plant scan failed; the PLC keeps running")
            s = self.core.settings
            await asyncio.sleep(min(TICK_MAX_S, s.scan_s / s.speed))


class PlantFaults:
    """Thread-safe fault-injection API of a ``PlantServerThread`` (tests, CLI command console)."""

    def __init__(self, owner: PlantServerThread) -> None:
        self._owner = owner

    @property
    def _server(self) -> PlantServer:
        return self._owner.server

    def freeze(self, tag: str) -> None:
        """Stop updating ``tag``: it keeps its current value and timestamp."""
        self._owner.call(self._server.freeze, tag)

    def force(self, tag: str, value: float) -> None:
        """Serve ``value`` for ``tag`` (``math.nan``, ``math.inf``, an out-of-range number, ...)."""
        self._server.faults.force(tag, value)

    def bad_status(self, tag: str, status: str = "BadSensorFailure") -> None:
        """Serve ``tag`` with a Bad/Uncertain OPC UA status (NaN over Modbus)."""
        self._server.faults.bad_status(tag, status)

    def delay(self, seconds: float, protocol: str = "both") -> None:
        """Delay every response of ``protocol`` (``opcua``, ``modbus``, ``both``) by ``seconds``."""
        self._server.faults.set_delay(protocol, seconds)

    def clear(self, tag: str | None = None) -> None:
        """Remove the faults of ``tag``, or all tag faults and delays."""
        self._server.faults.clear(tag)

    def drop_connections(self) -> int:
        """Abort every client connection (both protocols)."""
        dropped: int = self._owner.call(self._server.drop_connections)
        return dropped

    def stop_servers(self) -> None:
        """Stop listening on both protocols (the plant keeps running)."""
        self._owner.loop.run(self._server.stop_protocols(), timeout=30)

    def start_servers(self) -> None:
        """Listen again on the same ports."""
        self._owner.loop.run(self._server.start_protocols(), timeout=30)

    def set_remote(self, remote: bool) -> None:
        """Local/remote selector (local refuses supervisory writes and ends supervision)."""
        self._owner.call(self._server.set_remote, remote)

    def set_write_inhibit(self, inhibit: bool) -> None:
        """Inhibit supervisory writes."""
        self._owner.call(self._server.set_write_inhibit, inhibit)

    def active(self) -> dict[str, str]:
        """Active faults, readable."""
        return self._server.faults.active()


class PlantServerThread:
    """A ``PlantServer`` on its own ``LoopThread``, for callers without an event loop.

    Usage::

        with PlantServerThread(PlantConfig(process="ro", speed=10)) as plant:
            client.connect(plant.opcua_endpoint)
            plant.faults.freeze("feed_pressure_bar")
    """

    def __init__(self, config: PlantConfig, name: str = "plant-server") -> None:
        self.config = config
        self.loop = LoopThread(name)
        self._server: PlantServer | None = None
        self.faults = PlantFaults(self)

    @property
    def server(self) -> PlantServer:
        """The running server; raises ``RuntimeError`` before ``start``."""
        if self._server is None:
            raise RuntimeError("the plant server is not started")
        return self._server

    @property
    def opcua_endpoint(self) -> str:
        """The OPC UA endpoint URL (raises if OPC UA is not served)."""
        endpoint = self.server.opcua_endpoint
        if endpoint is None:
            raise RuntimeError("this plant does not serve OPC UA")
        return endpoint

    @property
    def modbus_port(self) -> int:
        """The Modbus TCP port (raises if Modbus is not served)."""
        port = self.server.modbus_port
        if port is None:
            raise RuntimeError("this plant does not serve Modbus")
        return port

    @property
    def modbus_device_id(self) -> int:
        """The Modbus unit id."""
        return self.config.modbus_device_id

    def start(self) -> None:
        """Start the loop thread and the server; returns once both protocols listen."""
        self.loop.start()
        try:
            self._server = self.loop.run(self._create(), timeout=60)
        except BaseException:
            self.loop.stop()
            raise

    async def _create(self) -> PlantServer:
        server = PlantServer(self.config)
        await server.start()
        return server

    def stop(self) -> None:
        """Stop the server and join the loop thread."""
        if self._server is not None and self.loop.running:
            try:
                self.loop.run(self._server.stop(), timeout=30)
            finally:
                self._server = None
        self.loop.stop()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop both servers, wait ``down_s`` s, listen again on the same ports."""
        self.loop.run(self.server.restart_protocols(down_s), timeout=60 + down_s)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop thread and return its result."""

        async def _call() -> Any:
            return fn(*args)

        return self.loop.run(_call(), timeout=30)

    def values(self) -> dict[str, float]:
        """The PLC's current tag values (before faults), by tag name."""
        return self.server.core.snapshot()

    def served(self) -> dict[str, tuple[float, str | None]]:
        """What clients get: ``(value, bad status or None)`` per tag."""
        return self.server.core.served()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- command line -------------------------------------------------------------------------------

DEFAULT_OPCUA = ("127.0.0.1", 48400)
DEFAULT_MODBUS = ("127.0.0.1", 15020)


def config_from_args(args: argparse.Namespace) -> PlantConfig:
    """Build a ``PlantConfig`` from ``intelwatt plant`` arguments.

    Options the parser does not define take their defaults, so older parsers keep working.

    Raises:
        PlantConfigError: With one line naming the bad option.
    """
    opcua: tuple[str, int] | None = getattr(args, "opcua", None)
    modbus: tuple[str, int] | None = getattr(args, "modbus", None)
    if opcua is None and modbus is None:
        opcua, modbus = DEFAULT_OPCUA, DEFAULT_MODBUS
    modes_text: str = getattr(args, "security", None) or "none"
    modes = tuple(m.strip().replace("-", "_").lower() for m in modes_text.split(",") if m.strip())
    users: dict[str, str] = {}
    users_file: Path | None = getattr(args, "users", None)
    if users_file is not None:
        try:
            users = load_users(Path(users_file))
        except ValueError as exc:
            raise PlantConfigError(f"--users: {exc}") from None
    allow_anonymous = bool(getattr(args, "allow_anonymous", False)) or users_file is None
    scenario: Path | None = getattr(args, "scenario", None)
    if scenario is not None and not Path(scenario).is_file():
        raise PlantConfigError(f"--scenario: file not found: {scenario}")
    try:
        security = OpcUaSecurity(
            modes=modes,
            pki_dir=getattr(args, "pki", None),
            users=users,
            allow_anonymous=allow_anonymous,
        )
        return PlantConfig(
            process=getattr(args, "process", "ro"),
            opcua=opcua,
            modbus=modbus,
            speed=float(getattr(args, "speed", 1.0)),
            scan_s=float(getattr(args, "scan", None) or 1.0),
            seed=int(getattr(args, "seed", 0)),
            scenario=scenario,
            watchdog_timeout_s=float(getattr(args, "watchdog_timeout", None) or 10.0),
            security=security,
            modbus_device_id=int(getattr(args, "device_id", None) or 1),
            noise=not getattr(args, "no_noise", False),
        )
    except PlantConfigError:
        raise
    except ValueError as exc:
        raise PlantConfigError(str(exc)) from None


def run_cli(args: argparse.Namespace) -> int:
    """``intelwatt plant``: serve the plant until SIGINT/SIGTERM; returns the exit code.

    Bad input prints one line on stderr and returns 2.
    """
    from app.plant.fault_commands import STARTUP_COMMANDS, CommandError, split_command

    try:
        config = config_from_args(args)
        faults: list[str] = list(getattr(args, "fault", None) or [])
        for spec in faults:
            words = split_command(spec)
            if not words or words[0].lower() not in STARTUP_COMMANDS:
                raise PlantConfigError(
                    f"--fault {spec!r}: expected one of {', '.join(sorted(STARTUP_COMMANDS))}"
                )
        server = PlantServer(config)
    except (PlantConfigError, ValueError) as exc:
        sys.stderr.write(f"intelwatt plant: {exc}\n")
        return EXIT_USAGE
    try:
        return asyncio.run(
            _serve(
                server,
                faults,
                float(getattr(args, "status_period", None) or 10.0),
                bool(getattr(args, "commands", False)),
            )
        )
    except (CommandError, OSError) as exc:
        sys.stderr.write(f"intelwatt plant: {exc}\n")
        return EXIT_USAGE


async def _serve(
    server: PlantServer, faults: list[str], status_period: float, commands: bool
) -> int:
    from app.plant.fault_commands import CommandError, run_command

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await server.start()
    try:
        for spec in faults:
            log.warning("fault: %s", await run_command(server, spec))
        where = [f"OPC UA {server.opcua_endpoint}"] if server.opcua else []
        if server.modbus_port is not None and server.modbus is not None:
            where.append(f"Modbus {server.modbus.host}:{server.modbus_port}")
        log.info(
            "plant %s served on %s at speed %g (watchdog %g s)",
            server.config.process,
            ", ".join(where),
            server.config.speed,
            server.config.watchdog_timeout_s,
        )
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        if commands:
            _read_stdin(loop, lines)
        status_task = asyncio.create_task(_status_loop(server, status_period))
        stop_task = asyncio.create_task(stop.wait())
        while not stop.is_set():
            line_task = asyncio.create_task(lines.get())
            done, _ = await asyncio.wait(
                {line_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if line_task not in done:
                line_task.cancel()
                break
            line = line_task.result()
            if line is None:
                continue
            try:
                answer = await run_command(server, line)
            except CommandError as exc:
                answer = f"error: {exc}"
            if answer:
                sys.stdout.write(answer + "\n")
                sys.stdout.flush()
        status_task.cancel()
    finally:
        await server.stop()
    log.info("plant stopped")
    return EXIT_OK


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)

    threading.Thread(target=reader, name="plant-stdin", daemon=True).start()


async def _status_loop(server: PlantServer, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        log.info("%s", server.status_line())
