"""CloudSync: the controller between the cloud layer and the agent runtime.

It runs on the cloud loop and

- polls the registry for a new ``candidate`` alias, downloads that version into the staging folder
  with progress events, verifies it (``verify_package`` against the site trust store and catalogue:
  signature, every sha256, spec, app version) and only then hands the verified folder to
  ``on_candidate(path, version)``. A failed, tampered or partial download never reaches the callback;
  it produces a :class:`CandidateRefused` event naming the reason, and the incoming folder is deleted;
- puts transitions, decisions, audit events and alarms into the outbox (``enqueue_*``, safe from the
  control context);
- adapts the scoring client to the agent runtime's ``CloudScorer`` protocol.

Staging layout: ``<staging>/.incoming/<version>`` while downloading and verifying, then
``<staging>/<process>/<version>`` once verified (a rename, so a folder there is always complete).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from app.agent_runtime.errors import PackageRefused
from app.agent_runtime.fallback import CloudAnswer
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.package import VerifiedPackage, verify_package
from app.cloud.errors import RegistryError
from app.cloud.outbox import EnqueueResult, Outbox, RecordKind
from app.cloud.registry import PullProgress, Registry
from app.cloud.scoring import CloudScore, ScoringClient
from app.domain import AgentVersion, Alarm, AuditEvent, Decision, utc_now
from app.plant.catalog import ProcessCatalog

log = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"

CandidateCallback = Callable[[Path, str], None]
EventSink = Callable[[object], None]


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CandidateDownloadProgressed:
    """Bytes of a candidate downloaded so far."""

    version: str
    done_bytes: int
    total_bytes: int
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class CandidateStaged:
    """A candidate passed verification and was handed to the agent runtime."""

    version: AgentVersion
    path: Path
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class CandidateRefused:
    """A candidate was not handed on; ``reason`` is a refusal code (``bad_signature``, ...)."""

    version: str
    reason: str
    culprit: str
    message: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class CandidateDownloadFailed:
    """The registry could not be reached or read; the next poll tries again."""

    version: str | None
    error: str
    at: datetime = field(default_factory=utc_now)


# --- the controller ----------------------------------------------------------------------------


class CloudSync:
    """Model polling and outbox feeding (registry side runs on the cloud loop).

    Args:
        registry: Registry of the site's process.
        staging_dir: Root of the staging area.
        trust_store: Keys whose signatures are accepted (the site trust store).
        on_candidate: Called with the verified folder and version, on the cloud loop thread (post
            from there to the agent worker).
        catalog: Site catalogue the package spec must fit (default: the process catalogue).
        outbox: Outbox for the ``enqueue_*`` helpers.
        on_event: Receives the events above, on the thread that produced them.
        progress_step_bytes: Publish progress at most every this many bytes (and at the end).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        staging_dir: Path,
        trust_store: TrustStore,
        on_candidate: CandidateCallback,
        catalog: ProcessCatalog | None = None,
        outbox: Outbox | None = None,
        on_event: EventSink | None = None,
        progress_step_bytes: int = 256 * 1024,
    ) -> None:
        self._registry = registry
        self._staging = staging_dir
        self._trust = trust_store
        self._on_candidate = on_candidate
        self._catalog = catalog
        self._outbox = outbox
        self._on_event = on_event
        self._progress_step = progress_step_bytes
        self._handled: set[str] = set()
        self._refused: set[str] = set()

    @property
    def process(self) -> str:
        """Process of the registry."""
        return self._registry.process

    def staged_path(self, version: str) -> Path:
        """Where a verified version lives: ``<staging>/<process>/<version>``."""
        return self._staging / self.process / version

    def _emit(self, event: object) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("sync event handler failed on %s", type(event).__name__)

    # --- model polling (cloud loop) ---------------------------------------------------------

    async def run(self, poll_s: float) -> None:
        """Poll for a new candidate every ``poll_s`` seconds until cancelled."""
        while True:
            await self.check_once()
            await asyncio.sleep(poll_s)

    async def check_once(self) -> Path | None:
        """Look at the ``candidate`` alias once; stage and hand on a new verified version.

        Returns:
            The staged folder if a candidate was handed on in this call, else ``None``.
        """
        try:
            version = (await self._registry.read_aliases()).candidate
        except (AzureError, RegistryError) as exc:
            self._emit(CandidateDownloadFailed(None, _brief(exc)))
            return None
        if version is None or version in self._handled or version in self._refused:
            return None
        return await self._fetch(version)

    async def _fetch(self, version: str) -> Path | None:
        final = self.staged_path(version)
        incoming = self._staging / INCOMING_DIR / version
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            if not final.is_dir():
                await self._registry.pull(version, incoming, progress=self._progress(version))
            verified = self._verify(incoming if not final.is_dir() else final)
        except PackageRefused as exc:
            self._refuse(version, exc.reason, exc.culprit, str(exc), incoming, final)
            return None
        except RegistryError as exc:
            culprit = getattr(exc, "blob", version)
            self._refuse(version, exc.reason, culprit, str(exc), incoming, final)
            return None
        except AzureError as exc:
            shutil.rmtree(incoming, ignore_errors=True)
            self._emit(CandidateDownloadFailed(version, _brief(exc)))
            return None
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        if not final.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            incoming.rename(final)
        self._handled.add(version)
        self._emit(CandidateStaged(verified.version, final))
        self._on_candidate(final, version)
        return final

    def _verify(self, path: Path) -> VerifiedPackage:
        package = verify_package(path, self._trust, catalog=self._catalog)
        if package.manifest.process != self.process:
            raise RegistryError(f"{path}: package is for {package.manifest.process!r}")
        return package

    def _refuse(
        self, version: str, reason: str, culprit: str, message: str, incoming: Path, final: Path
    ) -> None:
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        self._refused.add(version)
        log.error("candidate %s refused: %s", version, message)
        self._emit(CandidateRefused(version, reason, culprit, message))

    def _progress(self, version: str) -> Callable[[PullProgress], None]:
        last = -self._progress_step

        def report(p: PullProgress) -> None:
            nonlocal last
            if p.done_bytes - last >= self._progress_step or p.done_bytes == p.total_bytes:
                last = p.done_bytes
                self._emit(CandidateDownloadProgressed(version, p.done_bytes, p.total_bytes))

        return report

    # --- outbox (any thread, typically the control context) ---------------------------------

    def _enqueue(self, kind: RecordKind, payload: Mapping[str, Any], at: datetime) -> EnqueueResult:
        if self._outbox is None:
            raise RuntimeError("CloudSync has no outbox")
        return self._outbox.enqueue(kind, payload, at=at)

    def enqueue_transition(
        self,
        *,
        observation: Mapping[str, float],
        actions: Mapping[str, Mapping[str, float]],
        applied: Mapping[str, float],
        reward: float | None = None,
        kpis: Mapping[str, float] | None = None,
        agent: AgentVersion | None = None,
        cloud_sourced: bool = False,
        quality: Mapping[str, str] | None = None,
        outcome: str | None = None,
        at: datetime | None = None,
    ) -> EnqueueResult:
        """Record one control step (the training data of ``intelwatt retrain``).

        Args:
            observation: Observation by tag, engineering units.
            actions: Proposed action of each agent, by slot (``active``, ``candidate``...).
            applied: Setpoints actually written (after the safety envelope).
            reward: Step reward, if computed.
            kpis: KPIs of the step (SEC, recovery, ...).
            agent: Agent in charge.
            cloud_sourced: True if the applied action came from the cloud endpoint.
            quality: Quality of each observed tag (``good``, ``stale``...); the training job
                drops records with a tag that is not ``good``.
            outcome: What the step did (``recommended``, ``auto_apply``, ``hold``...).
            at: Time of the step (default: now).
        """
        when = at or utc_now()
        payload = {
            "obs": dict(observation),
            "actions": {slot: dict(a) for slot, a in actions.items()},
            "applied": dict(applied),
            "reward": reward,
            "kpis": dict(kpis or {}),
            "agent": agent,
            "cloud_sourced": cloud_sourced,
        }
        if quality is not None:
            payload["quality"] = dict(quality)
        if outcome is not None:
            payload["outcome"] = outcome
        return self._enqueue(RecordKind.TRANSITION, payload, when)

    def enqueue_decision(self, decision: Decision) -> EnqueueResult:
        """Record an operator's (or the automatic policy's) decision on a recommendation."""
        return self._enqueue(RecordKind.DECISION, {"decision": decision}, decision.at)

    def enqueue_audit(self, event: AuditEvent) -> EnqueueResult:
        """Record an audit event."""
        return self._enqueue(RecordKind.AUDIT, {"event": event}, event.at)

    def enqueue_alarm(self, alarm: Alarm) -> EnqueueResult:
        """Record an alarm state change."""
        return self._enqueue(RecordKind.ALARM, {"alarm": alarm}, utc_now())


class CloudScorerAdapter:
    """The agent runtime's ``CloudScorer`` over :class:`ScoringClient`.

    ``score`` returns a future of ``app.agent_runtime.fallback.CloudAnswer``; a late answer fails
    it with ``TimeoutError`` (:class:`app.cloud.errors.ScoringTimeout`), any other failure with a
    :class:`ScoringError`.
    """

    def __init__(self, client: ScoringClient) -> None:
        self.client = client

    def score(self, obs: Mapping[str, float], budget_s: float) -> Future[CloudAnswer]:
        """Request a cloud action for ``obs`` within ``budget_s``."""
        out: Future[CloudAnswer] = Future()
        inner = self.client.score(obs, budget_s)

        def done(f: Future[CloudScore]) -> None:
            if f.cancelled():
                out.cancel()
                return
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            s = f.result()
            out.set_result(
                CloudAnswer(
                    action=dict(s.action),
                    policy_version=s.policy_version,
                    deployment=s.deployment,
                    requested_at=s.requested_at,
                    received_at=s.received_at,
                )
            )

        inner.add_done_callback(done)
        return out


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


__all__ = [
    "CandidateDownloadFailed",
    "CandidateDownloadProgressed",
    "CandidateRefused",
    "CandidateStaged",
    "CloudScorerAdapter",
    "CloudSync",
]
