"""ControlCore: builds the whole Qt-free control core from a site file; identical headless and in the UI.

Threads (architecture.md §5): the PLC loop thread ``plc-io`` runs the driver *and* every controller
(the control context); the agent worker ``agent-worker`` owns the ONNX sessions; with ``[cloud]
enabled`` the ``cloud`` loop thread of :class:`~app.controllers.cloud_link.CloudLink` carries registry
sync, outbox delivery and the scoring fallback. ``start()`` starts them and connects; ``stop()``
follows the documented order:

refuse new commands → hand back to base control → stop both cadences → flush (close) the ledger →
close the driver → stop the PLC loop → stop the agent worker → stop the cloud link (polling, a
bounded final drain, the outbox, the cloud loop) → join the threads.

First start: the users file (``users.json`` in the data folder) is empty, so the core creates the
first account, a **supervisor**, from ``$INTELWATT_USER`` / ``$INTELWATT_PASSWORD``; without them it
refuses to start with a message saying so. A refused agent package raises an alarm and the core runs
without an agent (ADVISORY shows no recommendations, AUTOMATIC is refused); it never crashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import platformdirs

from app.agent_runtime.fallback import CloudScorer, FallbackState
from app.agent_runtime.host import PolicyHost
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.manifest import Manifest, parse_manifest
from app.concurrency import LoopThread
from app.config import SiteConfig
from app.controllers import alarm_points as ap
from app.controllers.agent import AcceptanceStats, AgentController, AgentSettings
from app.controllers.agent_site import agent_settings_from_site
from app.controllers.alarm_commands import AlarmCommands, AlarmVerdict
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditSink, AuditTrail
from app.controllers.auth import (
    AuthError,
    AuthService,
    PasswordPolicyError,
    ScryptParams,
    Session,
    UserStore,
)
from app.controllers.context import LoopContext
from app.controllers.events import EventBus
from app.controllers.ledger import Ledger, LedgerError
from app.controllers.messages import ModeVerdict
from app.controllers.mode import ModeController
from app.controllers.plant import PlantController, PlantSettings
from app.controllers.retrain import RetrainTrigger, retrain_trigger
from app.controllers.safety import SafetyEnvelope, Verdict
from app.controllers.snapshot import SnapshotService
from app.controllers.trend_buffer import SEVEN_DAYS_AT_1_HZ, TrendBuffer
from app.domain import (
    AgentVersion,
    AlarmPriority,
    ConnectionChanged,
    ConnectionState,
    Mode,
    Origin,
    Recommendation,
    Setpoint,
    Slot,
    TagId,
)
from app.drivers.base import PlcDriver
from app.drivers.factory import driver_for_site
from app.plant.catalog import AGENT_IN_CONTROL
from app.plant.catalog import catalog as catalog_of

if TYPE_CHECKING:  # the Azure SDK costs ~1 s of start-up: imported only when the cloud is on
    from app.controllers.cloud_link import CloudLink, CloudLinkSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

USER_ENV = "INTELWATT_USER"
PASSWORD_ENV = "INTELWATT_PASSWORD"
DATA_DIR_ENV = "INTELWATT_DATA_DIR"
LEDGER_FILE = "ledger.sqlite"
USERS_FILE = "users.json"


class CoreError(Exception):
    """The core cannot be built or started; the message names the culprit and the fix."""


def default_data_dir() -> Path:
    """``$INTELWATT_DATA_DIR`` if set, else the platform's user data folder for intelwatt."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_data_dir("intelwatt", appauthor=False))


@dataclass(frozen=True, slots=True)
class AlarmSummary:
    """Counts of alarms the operator sees.

    Attributes:
        unacked: Unacknowledged (including returned-to-normal unacknowledged).
        active: Alarms whose condition is active and annunciated.
        highest: Highest priority among annunciated alarms, if any.
        ids: Ids of the annunciated alarms, most urgent first.
    """

    unacked: int
    active: int
    highest: AlarmPriority | None
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """A read-only picture of the core for UIs, the headless status endpoint and logs."""

    site: str
    mode: Mode
    mode_reason: str
    plc: ConnectionState
    supervision_requested: bool
    healthy: bool
    health_reasons: tuple[str, ...]
    heartbeats: int
    active: AgentVersion | None
    previous: AgentVersion | None
    candidate: AgentVersion | None
    fallback: FallbackState
    alarms: AlarmSummary
    last_recommendation: Recommendation | None
    pending_recommendations: int
    acceptance: tuple[AcceptanceStats, ...]
    kpis: dict[str, float | int | None] = field(default_factory=dict)
    ledger_records: int = 0
    cloud: ConnectionState | None = None
    """Cloud storage (registry and outbox delivery); ``None`` while the cloud is off."""
    endpoint: ConnectionState | None = None
    """Cloud scoring endpoint; ``None`` without one."""
    outbox_pending_records: int = 0
    """Records in the cloud outbox not yet delivered."""


@dataclass(frozen=True, slots=True)
class CoreOptions:
    """How to build a core beyond the site file (tests, headless, console).

    Attributes:
        data_dir: Ledger and users folder (default: ``default_data_dir()``).
        driver: PLC driver to use instead of the site's (tests).
        trust_store: Trusted keys instead of the site's ``agents.trust_store`` folder.
        trend_capacity: Rows of the trend buffers (default: 7 days at 1 Hz).
        scrypt: Password hash parameters (tests use cheap ones).
        agent: Agent controller settings; default: the site's ``[agents.rollback]`` and
            ``[agents.gates]`` over the controller defaults.
        plant: Plant controller timing (default from the site).
        cloud: Cloud scoring fallback.
        on_audit: Receives every audit event once on disk (the cloud outbox hook).
        cloud_link: Timing and naming of the cloud link (used when the site enables the cloud).
        initial_user: ``(name, password)`` of the first supervisor (default from the environment).
    """

    data_dir: Path | None = None
    driver: PlcDriver | None = None
    trust_store: TrustStore | None = None
    trend_capacity: int = SEVEN_DAYS_AT_1_HZ
    scrypt: ScryptParams | None = None
    agent: AgentSettings | None = None
    plant: PlantSettings | None = None
    cloud: CloudScorer | None = None
    on_audit: AuditSink | None = None
    cloud_link: CloudLinkSettings | None = None
    initial_user: tuple[str, str] | None = None


class ControlCore:
    """Everything between the PLC and the operator, without Qt.

    Args:
        site: The validated site file.
        options: Build options.

    Raises:
        CoreError: The data folder, ledger, users file, limits or driver cannot be set up.
    """

    def __init__(self, site: SiteConfig, options: CoreOptions | None = None) -> None:
        self.site = site
        self.options = opts = options or CoreOptions()
        self.catalog = catalog_of(site.site.process)
        self.data_dir = opts.data_dir or default_data_dir()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.ledger = Ledger(self.data_dir / LEDGER_FILE)
        except (OSError, LedgerError) as exc:
            raise CoreError(f"data folder {self.data_dir}: {exc}") from None
        self.bus = EventBus()
        self.trail = AuditTrail(self.ledger, opts.on_audit)
        self.alarms = AlarmManager(
            ap.CORE_ALARMS, sink=ap.journal_sink(self.trail, self.bus.publish)
        )
        self.auth = self._build_auth()
        try:
            self.safety = SafetyEnvelope(
                self.catalog, site.limits, stale_after_s=site.plant.stale_after_s
            )
            self.driver = opts.driver or driver_for_site(site)
        except (ValueError, KeyError) as exc:
            raise CoreError(f"site {site.site.name}: {exc}") from None
        self.snapshot = SnapshotService(site.plant.stale_after_s)
        self.trends = TrendBuffer([t.name for t in self.catalog.tags], opts.trend_capacity)
        self.loop = LoopThread("plc-io")
        self._trust = opts.trust_store
        self.host: PolicyHost | None = None
        self.plant: PlantController | None = None
        self.mode: ModeController | None = None
        self.agent: AgentController | None = None
        self.retrain: RetrainTrigger | None = None
        self.cloud_link: CloudLink | None = None
        self._started = False
        self._stopped = False
        self._initial_done = False
        self._lock = threading.Lock()

    def _build_auth(self) -> AuthService:
        opts = self.options
        store = UserStore(self.data_dir / USERS_FILE)
        try:
            auth = AuthService(store, sink=self._auth_sink, scrypt=opts.scrypt)
        except AuthError as exc:
            raise CoreError(str(exc)) from None
        if auth.has_users():
            return auth
        first = opts.initial_user
        if first is None:
            name, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
            if not name or not password:
                raise CoreError(
                    f"no users yet in {store.path}: set {USER_ENV} and {PASSWORD_ENV} to create "
                    "the first supervisor on this start"
                )
            first = (name, password)
        try:
            auth.create_first_supervisor(*first)
        except (AuthError, PasswordPolicyError) as exc:
            raise CoreError(f"cannot create the first supervisor: {exc}") from None
        log.warning("created the first supervisor %r in %s", first[0], store.path)
        return auth

    def _auth_sink(self, event: Any) -> None:
        self.trail.try_record(event.kind, event.origin, event.summary, event.data)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the threads, load the agent, connect to the PLC and start both cadences.

        Returns once the controllers run (not once the PLC is connected: the connection is
        retried in the background).
        """
        with self._lock:
            if self._started:
                raise CoreError("the core was already started")
            self._started = True
        site = self.site
        try:
            trust = self._trust or TrustStore.load(site.agents.trust_store)
        except Exception as exc:  # noqa: BLE001 - a bad trust store is an alarm, not a crash
            log.error("trust store %s unusable: %s", site.agents.trust_store, exc)
            self.alarms.raise_alarm(ap.AGENT_REFUSED, f"trust store unusable: {exc}")
            trust = TrustStore()
        self.host = PolicyHost(trust, self.catalog, control=site.control, limits=site.limits)
        self.loop.start()
        ctx = LoopContext(self.loop.loop)
        plant_settings = self.options.plant or PlantSettings(
            supervision_period_s=site.control.supervision_period_s,
            heartbeat_period_s=site.plant.heartbeat_period_s,
        )
        self.snapshot = SnapshotService(site.plant.stale_after_s, clock=ctx.monotonic)
        self.plant = PlantController(
            ctx,
            self.driver,
            self.catalog,
            self.snapshot,
            self.trends,
            self.safety,
            self.trail,
            self.bus,
            self.alarms,
            site.limits,
            plant_settings,
        )
        self.mode = ModeController(
            ctx, self.plant, self.auth, self.trail, self.bus, self.alarms, site.modes
        )
        # Cloud link ([cloud]): registry sync, outbox, scoring fallback; never a prerequisite.
        self.cloud_link = None
        if site.cloud.enabled:
            from app.controllers.cloud_link import build_cloud_link

            self.cloud_link = build_cloud_link(
                site,
                data_dir=self.data_dir,
                catalog=self.catalog,
                trust=trust,
                bus=self.bus,
                settings=self.options.cloud_link,
            )
        cloud_scorer = self.options.cloud or (self.cloud_link.scorer if self.cloud_link else None)
        self.agent = AgentController(
            ctx,
            self.host,
            self.plant,
            self.mode,
            self.auth,
            self.trail,
            self.bus,
            self.alarms,
            site.control,
            site.modes,
            site.limits,
            self.options.agent or agent_settings_from_site(site.agents),
            cloud=cloud_scorer,
            cloud_deployment=site.cloud.scoring_deployment or "",
            cloud_budget_s=site.cloud.scoring_budget_s,
        )
        self.bus.subscribe(ConnectionChanged, self._on_connection)
        if self.cloud_link is not None:
            self.cloud_link.start(ctx, self.agent, self.alarms, self.trail)
        # Continuous training ([retrain]): counts agent steps from the trail, runs retrain jobs.
        self.retrain = retrain_trigger(site, self.data_dir, ctx, self.trail, self.bus, self.agent)
        self.trail.try_record(
            "core_start",
            Origin.system("core"),
            f"control core started for site {site.site.name}",
            {"process": site.site.process, "initial_mode": site.modes.initial},
        )
        if site.agents.package is not None:
            path = Path(site.agents.package)
            done = self.host.load(path, Slot.ACTIVE)
            done.add_done_callback(lambda f: ctx.post(lambda: self._on_agent_loaded(path, f)))
        else:
            log.warning("site %s names no agent package; running without an agent", site.site.name)
        agent, plant = self.agent, self.plant
        ready: Future[None] = Future()

        def begin() -> None:
            plant.start()
            agent.start()
            ready.set_result(None)

        ctx.post(begin)
        ready.result(timeout)

    def _on_agent_loaded(self, path: Path, fut: Future[AgentVersion]) -> None:
        assert self.agent is not None
        origin = Origin.system("core")
        exc = fut.exception()
        if exc is not None:
            log.error("agent package %s refused: %s", path, exc)
        self.agent.record_load(path, origin, Slot.ACTIVE, fut, None)

    def _on_connection(self, event: ConnectionChanged) -> None:
        if event.system != "plc" or event.state is not ConnectionState.CONNECTED:
            return
        if self._initial_done or self.mode is None:
            return
        self._initial_done = True
        if self.site.modes.initial == "advisory":
            self.mode.set_mode(Mode.ADVISORY, "initial mode of the site", Origin.system("core"))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop in the documented order (see the module docstring); safe to call twice."""
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                self._close_ledger()
                return
            self._stopped = True
        plant, mode, agent = self.plant, self.mode, self.agent
        assert plant is not None
        assert mode is not None
        assert agent is not None
        if self.loop.running:
            try:
                self.loop.run(self._shutdown(plant, mode, agent), timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - shutdown continues whatever happens
                log.error("orderly shutdown of the control context failed: %s", exc)
        if self.retrain is not None:  # kills a running retrain job (audited)
            try:
                self._call(self.retrain.stop, timeout=timeout + 15.0)
            except Exception as exc:  # noqa: BLE001 - shutdown continues whatever happens
                log.error("stopping the retrain job failed: %s", exc)
        self.loop.stop(timeout)
        if self.host is not None:
            self.host.close(timeout)
        if self.cloud_link is not None:  # last: the control context's final records are queued
            self.cloud_link.stop(timeout)
        self._close_ledger()
        log.info("control core stopped")

    async def _shutdown(
        self, plant: PlantController, mode: ModeController, agent: AgentController
    ) -> None:
        plant.refuse_commands()
        mode.refuse_commands()
        agent.refuse_commands()
        mode.set_mode(Mode.OFF, "control core shutting down", Origin.system("core"))
        if plant.connected:
            try:
                await self.driver.write([Setpoint(AGENT_IN_CONTROL, 0.0)])
            except Exception as exc:  # noqa: BLE001 - the PLC watchdog is the backstop
                log.error("hand-back write failed: %s", exc)
        agent.stop_cadence()
        plant.stop_cadence()
        self.trail.try_record("core_stop", Origin.system("core"), "control core stopped", {})
        try:
            await self.driver.close()
        except Exception as exc:  # noqa: BLE001
            log.error("closing the PLC driver failed: %s", exc)

    def _close_ledger(self) -> None:
        try:
            self.ledger.close()
        except Exception as exc:  # noqa: BLE001
            log.error("closing the ledger failed: %s", exc)

    # --- commands for front ends (any thread) ----------------------------------------------------

    def login(self, user: str, password: str) -> Session:
        """Log in (runs in the control context; blocks the caller until it answers)."""
        session: Session = self._call(lambda: self.auth.login(user, password))
        return session

    def request_mode(
        self, mode: Mode, session: Session | None, *, confirm: bool = False, reason: str = ""
    ) -> Future[ModeVerdict]:
        """Ask for a mode (see :meth:`ModeController.request_mode`)."""
        assert self.mode is not None, "start the core first"
        return self.mode.request_mode(mode, session, confirm=confirm, reason=reason)

    def return_to_base_control(self, session: Session | None = None) -> Future[ModeVerdict]:
        """Emergency hand-back to the PLC's base control; never needs a login."""
        assert self.mode is not None, "start the core first"
        return self.mode.return_to_base_control(session)

    def ack_alarm(
        self, alarm_id: str, session: Session | None, note: str = ""
    ) -> Future[AlarmVerdict]:
        """Acknowledge an alarm with an optional note (operator or above; audited)."""
        return self._alarm_command(lambda c: c.ack(alarm_id, session, note))

    def shelve_alarm(
        self, alarm_id: str, session: Session | None, duration_s: float, note: str
    ) -> Future[AlarmVerdict]:
        """Shelve an alarm for ``duration_s`` s; ``note`` is the required reason (operator)."""
        return self._alarm_command(lambda c: c.shelve(alarm_id, session, duration_s, note))

    def unshelve_alarm(self, alarm_id: str, session: Session | None) -> Future[AlarmVerdict]:
        """End an alarm's shelve early (operator or above; audited)."""
        return self._alarm_command(lambda c: c.unshelve(alarm_id, session))

    def _alarm_command(self, fn: Callable[[AlarmCommands], AlarmVerdict]) -> Future[AlarmVerdict]:
        # Runs in the control context like every other command: the alarm manager is not locked.
        commands = AlarmCommands(self.alarms, self.auth, self.trail)
        done: Future[AlarmVerdict] = Future()

        def run() -> None:
            try:
                done.set_result(fn(commands))
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                done.set_exception(exc)

        if self.loop.running and not self._stopped:
            self.loop.call_soon(run)
        elif self._stopped:
            done.set_result(AlarmVerdict(False, "", "alarm", None, "the core is stopping"))
        else:
            run()
        return done

    def _call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        if not self.loop.running:
            return fn()
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                done.set_exception(exc)

        self.loop.call_soon(run)
        return done.result(timeout)

    # Non-blocking variants for GUIs: the answer arrives in a future, the caller never waits.

    def login_async(self, user: str, password: str) -> Future[Session]:
        """Log in in the control context; the session (or ``AuthError``) arrives in the future."""
        return self._in_context(lambda: self.auth.login(user, password), before_start=False)

    def status_async(self) -> Future[CoreStatus]:
        """:meth:`status` as a future (before the start and after the stop: resolved at once)."""
        return self._in_context(self._status, before_start=True)

    def check_setpoints(
        self, values: Mapping[TagId, float], session: Session | None
    ) -> Future[tuple[Verdict, ...]]:
        """Dry-run ``values`` through the safety envelope; nothing is written or recorded.

        Each value is judged as a write by ``session`` would be now (the Modify dialog's live
        check). The future resolves to one verdict per value, in the order given.
        """
        pending = [Setpoint(tag, float(value)) for tag, value in values.items()]

        def check() -> tuple[Verdict, ...]:
            origin = (
                Origin.operator(session.user, session.role)
                if session is not None
                else Origin.system("console")
            )
            snap = self.snapshot.snapshot()
            return tuple(self.safety.check(sp, snap, origin, snap.taken_ts) for sp in pending)

        return self._in_context(check, before_start=False)

    def read_manifests(self, packages: Sequence[Path]) -> Future[dict[str, Manifest]]:
        """Read the model cards (``manifest.json``) of package folders or zips in the background.

        Runs neither on the caller's thread nor in the control context. The future resolves to the parsed manifest per sha256 of its bytes (the
        ``AgentVersion.sha256`` of a loaded package); unreadable packages are left out (logged).
        """
        paths = tuple(packages)

        def read() -> dict[str, Manifest]:
            found: dict[str, Manifest] = {}
            for path in paths:
                data = _manifest_bytes(path)
                if data is None:
                    continue
                try:
                    found[hashlib.sha256(data).hexdigest()] = parse_manifest(data)
                except ValueError as exc:
                    log.warning("model card of %s unreadable: %s", path, exc)
            return found

        if self.loop.running:
            return self.loop.submit(asyncio.to_thread(read))
        done: Future[dict[str, Manifest]] = Future()
        threading.Thread(target=_settle, args=(done, read), name="core-read", daemon=True).start()
        return done

    def _in_context(self, fn: Callable[[], T], *, before_start: bool) -> Future[T]:
        done: Future[T] = Future()
        if not self.loop.running:
            if before_start:
                _settle(done, fn)
            else:
                done.set_exception(CoreError("the control core is not running"))
            return done
        try:
            self.loop.call_soon(_settle, done, fn)
        except RuntimeError as exc:  # the loop closed between the check and the call
            done.set_exception(CoreError(f"the control core is not running: {exc}"))
        return done

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> CoreStatus:
        """A consistent read-only picture, taken in the control context (any thread)."""
        if self.loop.running and not self.loop.in_thread():
            try:
                result: CoreStatus = self._call(self._status, timeout=5.0)
                return result
            except Exception:  # noqa: BLE001 - fall back to an unsynchronised read
                log.debug("status taken outside the control context")
        return self._status()

    def _status(self) -> CoreStatus:
        shown = self.alarms.alarms()
        annunciated = [a for a in shown if a.state.value in ("unacked", "acked", "rtn_unacked")]
        summary = AlarmSummary(
            unacked=sum(1 for a in annunciated if a.state.value in ("unacked", "rtn_unacked")),
            active=sum(1 for a in annunciated if a.state.value in ("unacked", "acked")),
            highest=max((a.priority for a in annunciated), default=None),
            ids=tuple(a.alarm_id for a in annunciated),
        )
        versions = self.host.versions if self.host is not None else None
        agent, plant, mode = self.agent, self.plant, self.mode
        kpis: dict[str, float | int | None] = {}
        if agent is not None:
            c = agent.counters
            kpis = {
                "steps": c.steps,
                "inferences": c.inferences,
                "skipped_busy": c.skipped_busy,
                "deadline_misses": c.deadline_misses,
                "abstentions": c.abstentions,
                "proposals_refused": c.proposals_refused,
                "recommendations": c.recommendations,
                "auto_writes": c.auto_writes,
                "promotions": c.promotions,
                "rollbacks": c.rollbacks,
            }
        if mode is not None:
            kpis["demotions"] = mode.demotions
        return CoreStatus(
            site=self.site.site.name,
            mode=mode.mode if mode is not None else Mode.OFF,
            mode_reason=mode.last_reason if mode is not None else "not started",
            plc=self.driver.state,
            supervision_requested=plant.supervision_requested if plant is not None else False,
            healthy=plant.healthy if plant is not None else False,
            health_reasons=plant.health_reasons if plant is not None else ("not started",),
            heartbeats=plant.heartbeats if plant is not None else 0,
            active=versions.active if versions else None,
            previous=versions.previous if versions else None,
            candidate=versions.candidate if versions else None,
            fallback=agent.chain.state if agent is not None else FallbackState.BASE_CONTROL,
            alarms=summary,
            last_recommendation=agent.last_recommendation if agent is not None else None,
            pending_recommendations=len(agent.pending) if agent is not None else 0,
            acceptance=agent.acceptance() if agent is not None else (),
            kpis=kpis,
            ledger_records=self.trail.records,
            cloud=self.cloud_link.cloud_state if self.cloud_link else None,
            endpoint=self.cloud_link.endpoint_state if self.cloud_link else None,
            outbox_pending_records=(
                self.cloud_link.outbox.pending_records if self.cloud_link else 0
            ),
        )


def _settle(done: Future[T], fn: Callable[[], T]) -> None:
    """Run ``fn`` and put its result or exception into ``done``."""
    if not done.set_running_or_notify_cancel():
        return
    try:
        done.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - delivered to the caller
        done.set_exception(exc)


def _manifest_bytes(path: Path) -> bytes | None:
    """``manifest.json`` of a package folder or zip, or ``None`` if it cannot be read."""
    try:
        if path.is_dir():
            return (path / "manifest.json").read_bytes()
        with zipfile.ZipFile(path) as archive:
            return archive.read("manifest.json")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("model card of %s unreadable: %s", path, exc)
        return None


__all__ = [
    "DATA_DIR_ENV",
    "PASSWORD_ENV",
    "USER_ENV",
    "AlarmSummary",
    "ControlCore",
    "CoreError",
    "CoreOptions",
    "CoreStatus",
    "default_data_dir",
]
