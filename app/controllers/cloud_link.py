"""CloudLink: the console's cloud side, wired into the control core (never a safety prerequisite).

Built by :class:`~app.controllers.core.ControlCore` when the site's ``[cloud] enabled = true``. It
owns the ``cloud`` loop thread (architecture.md §5) and on it:

- the :class:`~app.cloud.outbox.OutboxDrainer`, shipping the SQLite outbox in the data folder to
  append blobs (its container client has ``retry_total=0``: an outage fails at once and the
  drainer's own backoff governs);
- :class:`~app.controllers.sync.CloudSync` polling the registry every ``poll_period_s``; a verified
  candidate is posted into the control context and loaded as CANDIDATE through
  :meth:`AgentController.stage_candidate` (ledgered, alarmed and published like any load), which
  starts the shadow duel;
- the :class:`~app.cloud.scoring.ScoringClient` behind :attr:`CloudLink.scorer`, the agent runtime's
  cloud fallback, when ``scoring_url`` is set.

Producers (control context, no network): every audit event once on disk (the trail's sink), every
agent step (:class:`~app.controllers.messages.StepTransition`), every decision and every alarm
change go into the outbox with one SQLite insert. Events of the cloud side
(:class:`~app.domain.ConnectionChanged` for ``cloud`` and ``endpoint``, the sync events, the outbox
gauges) are posted into the control context and published on the core's bus there, so bus handlers
keep running in one thread. An outbox at 80 % raises the ``cloud.outbox`` alarm.

Storage down at start: the core starts anyway; polling retries every period and the drainer backs
off. Stop order (:meth:`CloudLink.stop`): stop polling → bounded final drain → close the scoring
session and the blob clients → close the outbox → stop the cloud loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from azure.core.exceptions import AzureError, HttpResponseError

from app.agent_runtime.fallback import CloudAnswer, CloudScorer
from app.agent_runtime.keys import TrustStore
from app.cloud.errors import (
    ScoringAuthError,
    ScoringCircuitOpen,
    ScoringConfigError,
    ScoringError,
    ScoringNotFound,
    ScoringServerError,
    ScoringTimeout,
    ScoringUnreachable,
)
from app.cloud.events import (
    OutboxBacklogChanged,
    OutboxDeliveryFailed,
    OutboxLevel,
    OutboxLevelChanged,
)
from app.cloud.outbox import EnqueueResult, Outbox, OutboxDrainer, OutboxLimits
from app.cloud.registry import Registry
from app.cloud.scoring import ScoringClient
from app.cloud.storage import ensure_container, open_container, storage_connection_string
from app.concurrency import LoopThread
from app.config import SiteConfig
from app.controllers import alarm_points as ap
from app.controllers.agent import AgentController
from app.controllers.alarms import AlarmManager
from app.controllers.audit import AuditTrail
from app.controllers.context import ControlContext
from app.controllers.events import EventBus
from app.controllers.messages import AlarmChanged, DecisionRecorded, StepTransition
from app.controllers.sync import (
    CandidateDownloadFailed,
    CandidateRefused,
    CloudScorerAdapter,
    CloudSync,
)
from app.domain import AuditEvent, ConnectionChanged, ConnectionState, Origin
from app.plant.catalog import ProcessCatalog
from app.secrets import SecretError

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite"
STAGING_DIR = "staging"
SYNC_ORIGIN = Origin.system("cloud-sync")
_FINAL_ATTEMPTS = 3


class CloudLinkError(Exception):
    """The cloud side cannot be built (secret missing, malformed connection string or URL)."""


@dataclass(frozen=True, slots=True)
class CloudLinkSettings:
    """Timing and naming of the cloud side beyond the site file (tests shorten the delays).

    Attributes:
        console: Name of this console in blob paths (default: the host name).
        api_version: Storage service API version pin (``None``: the SDK's default).
        drain_max_delay_s: A non-full batch waits at most this long for more records.
        drain_poll_s: How often an idle drainer looks for records (and the backlog gauge updates).
        backoff_initial_s: First delivery retry delay after a failure.
        backoff_cap_s: Longest delivery retry delay.
        final_drain_s: Longest final delivery attempt when the core stops.
        connect_timeout_s: Storage connect timeout per request.
        read_timeout_s: Storage read timeout per request.
        progress_step_bytes: Publish download progress at most every this many bytes.
    """

    console: str | None = None
    api_version: str | None = None
    drain_max_delay_s: float = 30.0
    drain_poll_s: float = 1.0
    backoff_initial_s: float = 1.0
    backoff_cap_s: float = 300.0
    final_drain_s: float = 5.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    progress_step_bytes: int = 256 * 1024


def console_name(configured: str | None = None) -> str:
    """``configured`` or the host name, reduced to letters, digits, ``.``, ``_`` and ``-``."""
    raw = configured or socket.gethostname() or "console"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "console"
    return cleaned[:64]


_ENDPOINT_DOWN = (ScoringUnreachable, ScoringTimeout, ScoringCircuitOpen, ScoringServerError)


def endpoint_state(exc: BaseException | None) -> ConnectionState:
    """Connection state of the scoring endpoint after a request that ended with ``exc``.

    An answer that arrived but was refused (model error, bad payload, wrong version) still shows
    a reachable endpoint.
    """
    if exc is None:
        return ConnectionState.CONNECTED
    if isinstance(exc, ScoringAuthError):
        return ConnectionState.AUTH_FAILED
    if isinstance(exc, ScoringNotFound | ScoringConfigError):
        return ConnectionState.CONFIG_ERROR
    if isinstance(exc, _ENDPOINT_DOWN) or not isinstance(exc, ScoringError):
        return ConnectionState.DISCONNECTED
    return ConnectionState.CONNECTED


class _WatchedScorer:
    """The ``CloudScorer`` handed to the agent runtime; reports each outcome to the link."""

    def __init__(
        self,
        adapter: CloudScorerAdapter,
        report: Callable[[ConnectionState, str], None],
    ) -> None:
        self._adapter = adapter
        self._report = report

    def score(self, obs: Mapping[str, float], budget_s: float) -> Future[CloudAnswer]:
        """Request a cloud action (see :class:`CloudScorerAdapter`)."""
        fut = self._adapter.score(obs, budget_s)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: Future[CloudAnswer]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        detail = "" if exc is None else f"{type(exc).__name__}: {exc}"
        self._report(endpoint_state(exc), detail)


class CloudLink:
    """Registry sync, outbox shipping and the scoring fallback of one console.

    Args:
        site: The site file; ``site.cloud.enabled`` must be true.
        data_dir: Data folder (``outbox.sqlite``; ``staging/`` unless the site names one).
        catalog: The site's tag catalogue (candidate specs must fit it).
        trust: Trusted signing keys (the same store the policy host uses).
        bus: The core's event bus.
        settings: Timing and naming.

    Raises:
        CloudLinkError: A secret is missing or the connection string or scoring URL is malformed
            (the message never repeats a secret).
    """

    def __init__(
        self,
        site: SiteConfig,
        *,
        data_dir: Path,
        catalog: ProcessCatalog,
        trust: TrustStore,
        bus: EventBus,
        settings: CloudLinkSettings | None = None,
    ) -> None:
        cloud = site.cloud
        if not cloud.enabled:
            raise CloudLinkError("the site's [cloud] section is not enabled")
        self.site = site
        self.settings = s = settings or CloudLinkSettings()
        self.console = console_name(s.console)
        self._bus = bus
        self.loop = LoopThread("cloud")
        try:
            secret = storage_connection_string(cloud)
            # No SDK retries (the storage policy would first wait 15 s): the drainer backs off by
            # itself and the registry is simply polled again next period.
            self._client = open_container(
                secret,
                cloud.container,
                api_version=s.api_version,
                retry_total=0,
                connection_timeout_s=s.connect_timeout_s,
                read_timeout_s=s.read_timeout_s,
            )
            del secret
            self._scoring: ScoringClient | None = None
            if cloud.scoring_url is not None:
                assert cloud.scoring_key is not None  # the site model requires it
                self._scoring = ScoringClient(
                    self.loop,
                    url=cloud.scoring_url,
                    key_ref=cloud.scoring_key,
                    deployment=cloud.scoring_deployment,
                    process=site.site.process,
                )
        except (SecretError, ValueError, ScoringConfigError) as exc:
            raise CloudLinkError(f"cloud link of site {site.site.name}: {exc}") from None
        self.outbox = Outbox(
            data_dir / OUTBOX_FILE,
            OutboxLimits.from_mb(cloud.outbox_max_mb),
            on_event=self._from_cloud,
        )
        self.staging_dir = site.agents.staging_dir or data_dir / STAGING_DIR
        self.registry = Registry(self._client, site.site.process, writer=self.console)
        self.sync = CloudSync(
            self.registry,
            staging_dir=self.staging_dir,
            trust_store=trust,
            on_candidate=self._on_candidate,
            catalog=catalog,
            outbox=self.outbox,
            on_event=self._from_cloud,
            progress_step_bytes=s.progress_step_bytes,
        )
        self.drainer = OutboxDrainer(
            self.outbox,
            self._client,
            site=site.site.name,
            console=self.console,
            max_delay_s=s.drain_max_delay_s,
            poll_s=s.drain_poll_s,
            backoff_initial_s=s.backoff_initial_s,
            backoff_cap_s=s.backoff_cap_s,
            on_event=self._from_cloud,
        )
        self.scorer: CloudScorer | None = None
        if self._scoring is not None:
            self.scorer = _WatchedScorer(CloudScorerAdapter(self._scoring), self._endpoint_seen)
        self.cloud_state = ConnectionState.CONNECTING
        self.endpoint_state: ConnectionState | None = (
            None if self._scoring is None else ConnectionState.CONNECTING
        )
        self.enqueue_failures = 0
        self.refused_records = 0
        self._storage_ok: dict[str, bool] = {}
        self._registry_failures = 0
        self._ctx: ControlContext | None = None
        self._agent: AgentController | None = None
        self._alarms: AlarmManager | None = None
        self._trail: AuditTrail | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._last_gauge: tuple[int, bool] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(
        self,
        ctx: ControlContext,
        agent: AgentController,
        alarms: AlarmManager,
        trail: AuditTrail,
    ) -> None:
        """Hook into the core and start the cloud loop (returns at once; no network wait).

        Args:
            ctx: The control context (events and candidates are posted there).
            agent: Receives verified candidates.
            alarms: Raises ``cloud.outbox`` and refused-candidate alarms.
            trail: Its sink gets every audit event (chained after an existing sink).
        """
        self._ctx, self._agent, self._alarms, self._trail = ctx, agent, alarms, trail
        previous = trail.sink

        def sink(event: AuditEvent) -> None:
            if previous is not None:
                previous(event)
            self._enqueue("audit", lambda: self.sync.enqueue_audit(event))

        trail.sink = sink
        self._unsubscribe = [
            self._bus.subscribe(StepTransition, self._on_transition),
            self._bus.subscribe(DecisionRecorded, self._on_decision),
            self._bus.subscribe(AlarmChanged, self._on_alarm),
        ]
        self.loop.start()
        self.loop.submit(self._begin()).result(10)

    async def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._poll(), name="cloud-poll"),
            loop.create_task(self.drainer.run(), name="cloud-drain"),
            loop.create_task(self._gauge(), name="cloud-gauge"),
        ]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, try a bounded final drain, close the clients and the outbox, stop the loop.

        Call after the control context stopped (so its last records are in the outbox).
        """
        if self._closed:
            return
        self._closed = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self.loop.running:
            try:
                self.loop.run(self._shutdown(), timeout)
            except Exception as exc:  # noqa: BLE001 - the outbox keeps what was not delivered
                log.warning("cloud link shutdown incomplete: %s", exc)
        with contextlib.suppress(Exception):
            self.outbox.close()
        self.loop.stop(timeout)
        log.info("cloud link stopped (%d records left in the outbox)", self._left())

    def _left(self) -> int:
        return self.outbox.pending_records

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self.outbox.pending_records:
                async with asyncio.timeout(self.settings.final_drain_s):
                    await self._final_drain()
        except (AzureError, TimeoutError) as exc:
            log.warning("final outbox delivery did not finish: %s", _brief(exc))
        finally:
            if self._scoring is not None:
                with contextlib.suppress(Exception):
                    await self._scoring.aclose()
            with contextlib.suppress(Exception):
                await self._client.close()

    async def _final_drain(self) -> None:
        # The cancelled drainer may have left an append in flight that lands after the blob was
        # re-read: the position condition then fails (412) and the next attempt skips what landed.
        for attempt in range(_FINAL_ATTEMPTS):
            try:
                await self.drainer.drain(force=True)
                return
            except HttpResponseError as exc:
                if exc.status_code != 412 or attempt == _FINAL_ATTEMPTS - 1:
                    raise

    # --- cloud loop tasks -----------------------------------------------------------------------

    async def _poll(self) -> None:
        container_ready = False
        while True:
            try:
                if not container_ready:
                    await self._ensure_container()
                    container_ready = True
                failures = self._registry_failures
                await self.sync.check_once()
                if self._registry_failures == failures:
                    self._storage_seen("registry", True, "")
            except AzureError as exc:
                self._storage_seen("registry", False, _brief(exc))
            except Exception:
                log.exception("cloud poll failed")
            await asyncio.sleep(self.site.cloud.poll_period_s)

    async def _ensure_container(self) -> None:
        try:
            await ensure_container(self._client)
        except HttpResponseError as exc:
            # A key scoped to existing blobs may not create containers: carry on and let the
            # registry and the drainer report what is really missing.
            if exc.status_code != 403:
                raise

    async def _gauge(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drain_poll_s)
            gauge = (self.outbox.pending_records, self.drainer.connected)
            if gauge != self._last_gauge:
                self._last_gauge = gauge
                self._publish(self.outbox.backlog(connected=self.drainer.connected))

    # --- events from the cloud side (any thread) -------------------------------------------------

    def _from_cloud(self, event: object) -> None:
        if isinstance(event, CandidateDownloadFailed):
            self._registry_failures += 1
            self._storage_seen("registry", False, event.error)
        elif isinstance(event, OutboxDeliveryFailed):
            self._storage_seen("outbox", False, event.error)
        elif isinstance(event, OutboxBacklogChanged):
            self._last_gauge = (event.pending_records, event.connected)
            if event.connected:
                self._storage_seen("outbox", True, "")
        self._publish(event)
        if isinstance(event, OutboxLevelChanged):
            self._post(lambda: self._level_alarm(event))
        elif isinstance(event, CandidateRefused):
            self._post(lambda: self._refused(event))

    def _on_candidate(self, path: Path, version: str) -> None:
        self._storage_seen("registry", True, "")
        self._post(lambda: self._stage(path, version))

    def _storage_seen(self, source: str, ok: bool, detail: str) -> None:
        self._storage_ok[source] = ok
        state = (
            ConnectionState.CONNECTED
            if all(self._storage_ok.values())
            else ConnectionState.DISCONNECTED
        )
        if state is self.cloud_state:
            return
        self.cloud_state = state
        log.info("cloud storage %s%s", state.value, f" ({detail})" if detail else "")
        self._publish(ConnectionChanged("cloud", state, detail))

    def _endpoint_seen(self, state: ConnectionState, detail: str) -> None:
        if state is self.endpoint_state:
            return
        self.endpoint_state = state
        log.info("scoring endpoint %s%s", state.value, f" ({detail})" if detail else "")
        self._publish(ConnectionChanged("endpoint", state, detail))

    def _publish(self, event: object) -> None:
        self._post(lambda: self._bus.publish(event))

    def _post(self, fn: Callable[[], object]) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        try:
            ctx.post(fn)
        except RuntimeError:  # the control loop is closed: the core is stopping
            log.debug("control context gone; cloud event dropped")

    # --- control context ------------------------------------------------------------------------

    def _stage(self, path: Path, version: str) -> None:
        agent = self._agent
        assert agent is not None
        v = agent.host.versions
        loaded = {x.version for x in (v.active, v.candidate, v.previous) if x is not None}
        if version in loaded:
            log.info("cloud candidate %s is already loaded; not staged again", version)
            return
        agent.stage_candidate(path, SYNC_ORIGIN)

    def _refused(self, event: CandidateRefused) -> None:
        assert self._trail is not None
        assert self._alarms is not None
        self._trail.try_record(
            "model_refused",
            SYNC_ORIGIN,
            f"cloud candidate {event.version} refused: {event.message}",
            {
                "version": event.version,
                "reason": event.reason,
                "culprit": event.culprit,
                "slot": "candidate",
                "source": "registry",
            },
        )
        message = f"cloud candidate {event.version} refused ({event.reason}: {event.culprit})"
        if not self._alarms.point(ap.AGENT_REFUSED).active:
            self._alarms.raise_alarm(ap.AGENT_REFUSED, message)

    def _level_alarm(self, event: OutboxLevelChanged) -> None:
        assert self._alarms is not None
        active = event.new is not OutboxLevel.NORMAL
        if self._alarms.point(ap.CLOUD_OUTBOX).active != active:
            self._alarms.set_condition(ap.CLOUD_OUTBOX, active, event.message)

    def _enqueue(self, what: str, put: Callable[[], EnqueueResult]) -> None:
        if self._closed:
            return
        try:
            result = put()
        except Exception as exc:  # noqa: BLE001 - the control loop must never fail on the outbox
            self.enqueue_failures += 1
            log.error("%s record not stored in the cloud outbox: %s", what, exc)
            return
        if not result.accepted:
            self.refused_records += 1

    def _on_transition(self, t: StepTransition) -> None:
        self._enqueue(
            "transition",
            lambda: self.sync.enqueue_transition(
                observation=t.observation,
                actions=t.actions,
                applied=t.applied,
                kpis=t.kpis,
                agent=t.agent,
                cloud_sourced=t.cloud_sourced,
                quality=t.quality,
                outcome=t.outcome,
                at=t.at,
            ),
        )

    def _on_decision(self, event: DecisionRecorded) -> None:
        self._enqueue("decision", lambda: self.sync.enqueue_decision(event.decision))

    def _on_alarm(self, event: AlarmChanged) -> None:
        alarms = self._alarms
        if alarms is None:
            return
        self._enqueue("alarm", lambda: self.sync.enqueue_alarm(alarms.alarm(event.alarm_id)))


def build_cloud_link(
    site: SiteConfig,
    *,
    data_dir: Path,
    catalog: ProcessCatalog,
    trust: TrustStore,
    bus: EventBus,
    settings: CloudLinkSettings | None = None,
) -> CloudLink | None:
    """The cloud link of ``site``, or ``None`` if the cloud is off or cannot be configured.

    A configuration failure is logged and published as ``ConnectionChanged("cloud",
    CONFIG_ERROR)``; the core runs without the cloud (it is never a safety prerequisite).
    """
    if not site.cloud.enabled:
        return None
    try:
        return CloudLink(
            site, data_dir=data_dir, catalog=catalog, trust=trust, bus=bus, settings=settings
        )
    except (CloudLinkError, OSError, RuntimeError) as exc:
        log.error("running without the cloud: %s", exc)
        bus.publish(ConnectionChanged("cloud", ConnectionState.CONFIG_ERROR, str(exc)))
        return None


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


__all__ = [
    "OUTBOX_FILE",
    "CloudLink",
    "CloudLinkError",
    "CloudLinkSettings",
    "build_cloud_link",
    "console_name",
    "endpoint_state",
]
