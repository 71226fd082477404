"""``--self-test``: prove that an installed console (or a frozen bundle) can do its job.

The self-test runs offscreen, needs no PLC and no network beyond loopback, and stops at the first
failed step, naming it. Steps, in order:

1. ``site``: load the site file (default: the shipped demo site).
2. ``gui``: Qt loads with the offscreen platform plugin and the console window is built (skipped
   with ``gui=False``, e.g. in the headless container that has no Qt).
3. ``plant``: start the embedded simulated plant on loopback (OPC UA and Modbus TCP, free ports).
4. ``driver.opcua`` / ``driver.modbus``: both PLC drivers read every tag of the process, GOOD.
5. ``agent.verify``: the site's agent package passes signature, hash, spec and version checks
   against the site's trust store.
6. ``agent.infer``: one inference on the live observation gives a finite action inside the spec.
7. ``control``: a few supervision cycles: read, infer, check the ramped setpoint against the safety
   envelope, write with read-back, beat the heartbeat; the plant ends up holding the written
   setpoints with its watchdog calm.
8. ``core``: the control core itself (``ControlCore``, as ``intelwatt headless`` runs it) connects
   to the plant, loads and verifies the agent, stays healthy and keeps the PLC heartbeat going,
   then stops in its documented order.

Relative paths in the site file are resolved against the working directory first, then against the
installation root, so the shipped demo site works from any working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app import __version__
from app.config import (
    ConfigError,
    ModbusConnection,
    OpcUaConnection,
    PlantConnection,
    SiteConfig,
    TagLimits,
    default_site_path,
    load_site,
    resources_dir,
)

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CYCLES = 3
PLANT_SPEED = 60.0
"""Plant seconds per wall-clock second: the cycles see the plant move without waiting."""
IO_TIMEOUT_S = 30.0


class StepFailed(Exception):
    """One self-test step failed; ``step`` names it."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StepReport:
    """Outcome of one step.

    Attributes:
        name: Step name (``site``, ``gui``, ``plant``, ...).
        status: ``ok``, ``skipped`` or ``FAILED``.
        detail: One line of what was checked or why it failed.
        seconds: Wall time the step took.
    """

    name: str
    status: str
    detail: str
    seconds: float


@dataclass(slots=True)
class SelfTestReport:
    """All steps run so far; ``ok`` when none failed."""

    steps: list[StepReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if no step failed."""
        return all(s.status != "FAILED" for s in self.steps)

    @property
    def failed_step(self) -> str | None:
        """Name of the failed step, if any."""
        return next((s.name for s in self.steps if s.status == "FAILED"), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "ok": self.ok,
            "version": __version__,
            "frozen": bool(getattr(sys, "frozen", False)),
            "failed_step": self.failed_step,
            "steps": [
                {"name": s.name, "status": s.status, "detail": s.detail, "seconds": s.seconds}
                for s in self.steps
            ],
        }


def install_root() -> Path:
    """The folder holding ``resources/``: the bundle root when frozen, else the checkout."""
    return resources_dir().parent


def resolve_path(path: Path) -> Path:
    """``path`` as given if it exists (or is absolute), else relative to the install root."""
    if path.is_absolute() or path.exists():
        return path
    candidate = install_root() / path
    return candidate if candidate.exists() else path


# --- the steps ------------------------------------------------------------------------------


def _load_site(site_path: Path | None) -> tuple[SiteConfig, Path, str]:
    path = site_path or default_site_path()
    try:
        site = load_site(path)
    except ConfigError as exc:
        raise StepFailed("site", " ".join(str(exc).split())) from None
    detail = f"{path} (site {site.site.name!r}, process {site.site.process!r})"
    return site, path, detail


def _gui(site: SiteConfig, site_path: Path) -> str:
    # Qt lives in app.ui only; this step proves the bundle carries the Qt libraries and the
    # offscreen platform plugin by building the console window through the UI's own hook.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        ui = importlib.import_module("app.ui.app")
    except ImportError as exc:
        raise StepFailed("gui", f"the console UI does not load: {exc}") from None
    hook: Callable[[SiteConfig, Path], str] | None = getattr(ui, "smoke_test", None)
    if hook is None:
        return "Qt modules load; window not built (app.ui.app has no smoke_test hook yet)"
    try:
        return hook(site, site_path)
    except Exception as exc:
        raise StepFailed("gui", f"the console window could not be built: {exc}") from exc


def _plant(process: str) -> tuple[Any, str]:
    from app.plant.server import PlantConfig, PlantServerThread

    plant = PlantServerThread(
        PlantConfig(
            process=process,
            opcua=("127.0.0.1", 0),
            modbus=("127.0.0.1", 0),
            speed=PLANT_SPEED,
            seed=0,
        ),
        name="selftest-plant",
    )
    try:
        plant.start()
    except Exception as exc:
        raise StepFailed("plant", f"the embedded plant did not start: {exc}") from exc
    detail = f"{process} simulator on {plant.opcua_endpoint} and modbus port {plant.modbus_port}"
    return plant, detail


def _connections(plant: Any, site: SiteConfig) -> dict[str, PlantConnection]:
    # The embedded plant serves the standard map without security on loopback: the site's own
    # PLC address, security and tag overrides describe the real plant and do not apply here.
    opcua = PlantConnection(
        protocol="opcua",
        opcua=OpcUaConnection(endpoint=plant.opcua_endpoint, timeout_s=5.0),
        stale_after_s=site.plant.stale_after_s,
    )
    modbus = PlantConnection(
        protocol="modbus",
        modbus=ModbusConnection(
            host="127.0.0.1", port=plant.modbus_port, device_id=plant.modbus_device_id
        ),
        stale_after_s=site.plant.stale_after_s,
    )
    ordered = [opcua, modbus] if site.plant.protocol == "opcua" else [modbus, opcua]
    return {c.protocol: c for c in ordered}


async def _read_all(driver: Any, tags: Sequence[str], step: str) -> dict[str, Any]:
    from app.domain import Quality

    samples = await driver.read(list(tags))
    bad = {s.tag: s.quality.value for s in samples if s.quality is not Quality.GOOD}
    if bad:
        shown = ", ".join(f"{t}={q}" for t, q in sorted(bad.items())[:5])
        raise StepFailed(step, f"{len(bad)} of {len(tags)} tags not GOOD: {shown}")
    return {s.tag: s for s in samples}


async def _check_driver(connection: PlantConnection, process: str) -> str:
    from app.drivers.base import ConnectionLostError
    from app.drivers.factory import build_driver
    from app.plant.catalog import catalog

    cat = catalog(process)
    step = f"driver.{connection.protocol}"
    driver = build_driver(connection, cat)
    retried = ""
    try:
        try:
            await driver.connect()
        except ConnectionLostError as exc:
            # One retry: a loaded machine can lose the first session handshake to a timeout,
            # which the running console would simply reconnect from.
            retried = f" (connected on the second attempt; first: {exc})"
            await driver.close()
            await asyncio.sleep(1.0)
            await driver.connect()
        samples = await _read_all(driver, [t.name for t in cat.tags], step)
    except StepFailed:
        raise
    except Exception as exc:
        raise StepFailed(step, f"{type(exc).__name__}: {exc}") from exc
    finally:
        await driver.close()
    return f"read all {len(samples)} {process} tags GOOD{retried}"


@dataclass(slots=True)
class _Agent:
    package: Any
    policy: Any
    builder: Any


def _verify_agent(site: SiteConfig) -> tuple[_Agent, str]:
    from app.agent_runtime.errors import PackageRefused
    from app.agent_runtime.keys import TrustStore
    from app.agent_runtime.observation import ObservationBuilder
    from app.agent_runtime.onnx_policy import OnnxPolicy
    from app.agent_runtime.package import verify_package

    if site.agents.package is None:
        raise StepFailed("agent.verify", "the site file names no [agents] package")
    package_path = resolve_path(site.agents.package)
    trust_path = resolve_path(site.agents.trust_store)
    try:
        store = TrustStore.load(trust_path)
    except Exception as exc:
        raise StepFailed("agent.verify", f"trust store {trust_path}: {exc}") from exc
    if len(store) == 0:
        raise StepFailed("agent.verify", f"trust store {trust_path} holds no *.pub key")
    try:
        package = verify_package(package_path, store)
    except PackageRefused as exc:
        raise StepFailed("agent.verify", f"{package_path} refused: {exc}") from None
    if package.manifest.process != site.site.process:
        raise StepFailed(
            "agent.verify",
            f"{package_path} is a {package.manifest.process!r} agent, "
            f"the site runs {site.site.process!r}",
        )
    try:
        policy = OnnxPolicy.from_bytes(package.policy, package.manifest)
    except Exception as exc:
        raise StepFailed("agent.verify", f"{package_path}: policy.onnx: {exc}") from exc
    version = package.version
    detail = f"{version.version} ({package_path}), signed by key {(version.signer or '?')[:16]}…"
    return _Agent(package, policy, ObservationBuilder(package.manifest)), detail


def _infer(agent: _Agent, samples: dict[str, Any]) -> Any:
    import numpy as np

    obs = agent.builder.build(samples)
    action = agent.policy.act(obs)
    for value, spec in zip(action, agent.package.manifest.actions, strict=True):
        if not math.isfinite(value):
            raise StepFailed("agent.infer", f"{spec.tag} = {value} is not finite")
        low = -math.inf if spec.low is None else spec.low
        high = math.inf if spec.high is None else spec.high
        if not low - 1e-6 <= value <= high + 1e-6:
            raise StepFailed(
                "agent.infer", f"{spec.tag} = {value:g} outside the spec [{low:g}, {high:g}]"
            )
    return np.asarray(action, dtype=np.float64)


def _toward(current: float, target: float, limits: TagLimits, tag_max_move: float | None) -> float:
    """``target`` limited to one move from ``current`` and to the operator limits.

    The move is the smaller of the site's ``max_move`` and the catalogue's per-step agent limit,
    as the safety envelope enforces both for agent writes.
    """
    low = limits.engineer_low if limits.operator_low is None else limits.operator_low
    high = limits.engineer_high if limits.operator_high is None else limits.operator_high
    moves = [m for m in (limits.max_move, tag_max_move) if m is not None]
    step = target - current
    if moves:
        step = max(-min(moves), min(min(moves), step))
    return max(low, min(high, current + step))


async def _control(
    connection: PlantConnection,
    site: SiteConfig,
    agent: _Agent,
    plant: Any,
    cycles: int,
) -> str:
    from app.controllers.safety import SafetyEnvelope
    from app.domain import Origin, Setpoint, Snapshot
    from app.drivers.base import HeartbeatWriter
    from app.drivers.factory import build_driver
    from app.plant.catalog import WATCHDOG_TRIPPED, catalog

    cat = catalog(site.site.process)
    tags = [t.name for t in cat.tags]
    envelope = SafetyEnvelope(cat, site.limits, stale_after_s=site.plant.stale_after_s)
    origin = Origin.agent(agent.package.version.version)
    driver = build_driver(connection, cat)
    heartbeat = HeartbeatWriter(driver, site.plant.heartbeat_period_s)
    written: dict[str, float] = {}
    rejected: list[str] = []
    try:
        await driver.connect()
        for _ in range(cycles):
            samples = await _read_all(driver, tags, "control")
            beat = await heartbeat.beat()
            if not beat.ok:
                raise StepFailed("control", f"heartbeat write failed: {beat.reason}")
            action = _infer(agent, samples)
            now = time.monotonic()
            snapshot = Snapshot(samples=samples, taken_ts=now)
            for tag, target in zip(agent.policy.action_tags, action, strict=True):
                limits = site.limits.get(tag)
                if limits is None:
                    rejected.append(f"{tag}: no site limits")
                    continue
                value = _toward(samples[tag].value, float(target), limits, cat.tag(tag).max_move)
                verdict = envelope.check(Setpoint(tag, value), snapshot, origin, now)
                if not verdict.ok:
                    rejected.append(f"{tag}: {verdict.layer} {verdict.reason}")
                    continue
                result = await driver.write([Setpoint(tag, value)], verify=True)
                if not result.ok:
                    failure = result.failures[0]
                    raise StepFailed(
                        "control", f"write {tag}={value:g}: {failure.status} {failure.reason}"
                    )
                envelope.record_write(Setpoint(tag, value), now)
                written[tag] = value
            await asyncio.sleep(0.05)
    except StepFailed:
        raise
    except Exception as exc:
        raise StepFailed("control", f"{type(exc).__name__}: {exc}") from exc
    finally:
        await driver.close()
    if not written:
        raise StepFailed("control", "the envelope refused every write: " + "; ".join(rejected))
    held = plant.values()
    for tag, value in written.items():
        if not math.isclose(held[tag], value, rel_tol=1e-4, abs_tol=1e-3):
            raise StepFailed("control", f"the plant holds {tag}={held[tag]:g}, wrote {value:g}")
    if held.get(WATCHDOG_TRIPPED, 0.0) >= 0.5:
        raise StepFailed("control", "the plant's watchdog tripped during the cycles")
    shown = ", ".join(f"{t}={v:.3g}" for t, v in written.items())
    extra = f"; {len(rejected)} refused by the envelope, first: {rejected[0]}" if rejected else ""
    return f"{cycles} cycles on {connection.protocol}, plant holds {shown}{extra}"


CORE_WAIT_S = 20.0
CORE_HEARTBEATS = 2


def _core(connection: PlantConnection, site: SiteConfig, agent: _Agent) -> str:
    """The real control core, as ``intelwatt headless`` builds it, on the embedded plant.

    It runs in a throwaway data folder with a throwaway supervisor, starts in the site's initial
    mode (never AUTOMATIC), and must connect, load and verify the agent and keep the PLC heartbeat
    going while healthy before it is stopped in its documented order.
    """
    import secrets
    import tempfile

    try:
        from app.controllers.core import ControlCore, CoreOptions
    except ImportError as exc:
        raise StepFailed("core", f"the control core does not load: {exc}") from None
    from app.agent_runtime.keys import TrustStore
    from app.controllers.auth import ScryptParams
    from app.domain import ConnectionState
    from app.drivers.factory import build_driver
    from app.plant.catalog import catalog

    assert site.agents.package is not None  # checked by agent.verify
    agents = site.agents.model_copy(
        update={
            "package": resolve_path(site.agents.package),
            "trust_store": resolve_path(site.agents.trust_store),
        }
    )
    local = site.model_copy(update={"agents": agents})
    driver = build_driver(connection, catalog(site.site.process))
    with tempfile.TemporaryDirectory(prefix="intelwatt-selftest-") as data:
        options = CoreOptions(
            data_dir=Path(data),
            driver=driver,
            trust_store=TrustStore.load(agents.trust_store),
            scrypt=ScryptParams(n=2**10, r=8, p=1),
            initial_user=("selftest", "Selftest-" + secrets.token_urlsafe(18)),
        )
        try:
            core = ControlCore(local, options)
        except Exception as exc:
            raise StepFailed("core", f"the core could not be built: {exc}") from exc
        try:
            core.start()
            deadline = time.monotonic() + CORE_WAIT_S
            status = core.status()
            while time.monotonic() < deadline:
                status = core.status()
                if (
                    status.plc is ConnectionState.CONNECTED
                    and status.healthy
                    and status.active is not None
                    and status.heartbeats >= CORE_HEARTBEATS
                ):
                    break
                time.sleep(0.1)
            else:
                reasons = ", ".join(status.health_reasons) or "none given"
                active = status.active.version if status.active is not None else "no agent"
                raise StepFailed(
                    "core",
                    f"not ready within {CORE_WAIT_S:g} s: PLC {status.plc.value}, "
                    f"healthy={status.healthy} ({reasons}), {active}, "
                    f"{status.heartbeats} heartbeats",
                )
        finally:
            core.stop()
    assert status.active is not None
    return (
        f"mode {status.mode.value}, PLC {status.plc.value}, agent {status.active.version} active, "
        f"{status.heartbeats} heartbeats, {status.ledger_records} ledger records"
    )


# --- the runner ------------------------------------------------------------------------------


class _Runner:
    def __init__(self, emit: Callable[[StepReport], None]) -> None:
        self.report = SelfTestReport()
        self._emit = emit

    def step(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            value = fn()
        except StepFailed as exc:
            self._add(StepReport(exc.step, "FAILED", exc.reason, time.perf_counter() - start))
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._add(StepReport(name, "FAILED", reason, time.perf_counter() - start))
            raise StepFailed(name, reason) from exc
        detail = value[-1] if isinstance(value, tuple) else value
        self._add(StepReport(name, "ok", str(detail), time.perf_counter() - start))
        return value

    def skip(self, name: str, why: str) -> None:
        self._add(StepReport(name, "skipped", why, 0.0))

    def _add(self, step: StepReport) -> None:
        self.report.steps.append(step)
        self._emit(step)


def run_self_test(
    site_path: Path | None = None,
    *,
    gui: bool = True,
    gui_skip_reason: str = "not requested (--no-gui)",
    cycles: int = DEFAULT_CYCLES,
    emit: Callable[[StepReport], None] = lambda step: None,
) -> SelfTestReport:
    """Run every step; stops at the first failure.

    Args:
        site_path: Site file (default: the shipped demo site).
        gui: Build the console window offscreen (needs the ``gui`` extra).
        gui_skip_reason: Why the ``gui`` step is skipped when ``gui`` is False.
        cycles: Supervision cycles in the ``control`` step.
        emit: Called with each step's report as it finishes.

    Returns:
        The report; ``report.ok`` is False and ``report.failed_step`` names the step on failure.
    """
    if cycles < 1:
        raise ValueError(f"cycles must be at least 1, got {cycles}")
    from app.concurrency import LoopThread

    runner = _Runner(emit)
    io = LoopThread("selftest-io")
    plant: Any = None
    try:
        site, path, _ = runner.step("site", lambda: _load_site(site_path))
        if gui:
            runner.step("gui", lambda: _gui(site, path))
        else:
            runner.skip("gui", gui_skip_reason)
        plant = runner.step("plant", lambda: _plant(site.site.process))[0]
        io.start()
        connections = _connections(plant, site)
        for connection in connections.values():
            check = _check_driver(connection, site.site.process)
            runner.step(f"driver.{connection.protocol}", partial(io.run, check, IO_TIMEOUT_S))
        agent, _ = runner.step("agent.verify", lambda: _verify_agent(site))
        runner.step("agent.infer", lambda: _infer_live(io, connections, site, agent))
        runner.step(
            "control",
            lambda: io.run(
                _control(connections[site.plant.protocol], site, agent, plant, cycles),
                IO_TIMEOUT_S + cycles,
            ),
        )
        runner.step("core", lambda: _core(connections[site.plant.protocol], site, agent))
    except StepFailed:
        pass
    finally:
        if io.running:
            io.stop()
        if plant is not None:
            plant.stop()
    return runner.report


def _infer_live(
    io: Any, connections: dict[str, PlantConnection], site: SiteConfig, agent: _Agent
) -> str:
    from app.drivers.factory import build_driver
    from app.plant.catalog import catalog

    async def read() -> dict[str, Any]:
        cat = catalog(site.site.process)
        driver = build_driver(connections[site.plant.protocol], cat)
        try:
            await driver.connect()
            return await _read_all(driver, [t.name for t in cat.tags], "agent.infer")
        finally:
            await driver.close()

    samples = io.run(read(), IO_TIMEOUT_S)
    action = _infer(agent, samples)
    shown = ", ".join(
        f"{tag}={value:.4g}" for tag, value in zip(agent.policy.action_tags, action, strict=True)
    )
    return f"action {shown}"


def _say(line: str, *, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    stream.write(line + "\n")
    stream.flush()


def _print_step(step: StepReport) -> None:
    _say(f"  {step.status:<8} {step.name:<14} {step.seconds:6.2f} s  {step.detail}")


def build_parser() -> argparse.ArgumentParser:
    """Options of ``intelwatt --self-test`` / ``python -m app.selftest``."""
    parser = argparse.ArgumentParser(
        prog="intelwatt --self-test",
        description="Check an installation offscreen against an embedded simulated plant.",
    )
    parser.add_argument("--site", type=Path, help="site file (default: the shipped demo site)")
    parser.add_argument(
        "--no-gui", action="store_true", help="skip the Qt window check (headless installs)"
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=DEFAULT_CYCLES,
        help=f"supervision cycles to run (default: {DEFAULT_CYCLES})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the self-test from the command line; 0 on success, 1 naming the failed step."""
    args = build_parser().parse_args(argv)
    # The report is the output: the core's and the drivers' own log lines (mode changes, the
    # embedded plant's missing OPC UA security) would only interleave with it.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    if args.cycles < 1:
        _say(f"intelwatt --self-test: --cycles must be at least 1, got {args.cycles}", error=True)
        return EXIT_USAGE
    has_qt = importlib.util.find_spec("PySide6") is not None
    gui = not args.no_gui and has_qt
    why = "not requested (--no-gui)" if args.no_gui else "PySide6 is not installed (headless)"
    if not args.json:
        frozen = " (frozen bundle)" if getattr(sys, "frozen", False) else ""
        _say(f"intelwatt-console {__version__} self-test{frozen}")
    report = run_self_test(
        args.site,
        gui=gui,
        gui_skip_reason=why,
        cycles=args.cycles,
        emit=(lambda s: None) if args.json else _print_step,
    )
    if args.json:
        _say(json.dumps(report.as_dict()))
    elif report.ok:
        _say("self-test passed")
    else:
        _say(f"self-test FAILED at step {report.failed_step}")
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
