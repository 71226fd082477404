"""RetrainTrigger: the console side of continuous training (``[retrain]`` in the site file).

Every agent step the core audits (``agent_step``) reaches :meth:`RetrainTrigger.on_audit` in the
control context. A step on which the active agent produced an action is an *inference step*; its
observation (with the tags' quality), the agents' actions and the set-points written become one
``transition`` record in the outbox JSONL format, appended to
``<data dir>/retrain/transitions/<day>.jsonl`` and kept in a window of ``window_steps`` records.

After ``every_n_steps`` inference steps (counted from the end of the previous job; none is
requested while one runs) the window is judged with the rules of the job itself
(:func:`app.plant.transitions.assess`: missing, bad quality, out of range, saturated, frozen,
CIP, stopped, upset and settling records are not usable). Only if at least ``min_good_fraction``
of it is usable, and ``min_records`` / ``min_span_h`` are met, is a job requested:

1. ``<data dir>/retrain/jobs/<job id>/``: ``data.jsonl`` (the window, frozen for the job),
   ``job.json`` (the job record: id, window, base version, data source, state, time stamps,
   progress; with the cloud also ``jobs/<process>/<job id>.json`` in the registry container) and
   ``retrain.log``;
2. ``intelwatt retrain`` runs as a background subprocess (own session, niced, one torch thread);
   a watcher thread reads its ``PROGRESS`` lines and posts :class:`RetrainProgressed` into the
   control context; the control loop never waits on it;
3. the exit code decides :class:`RetrainFinished`: 0 ``candidate``, 3 ``rejected`` (gates), anything
   else ``failed``. Without the cloud a candidate is handed to the agent runtime's candidate slot
   (``on_candidate``, the ``AgentController.stage_candidate`` path: verified, audited, shadow); with
   the cloud the job ran with ``--push`` and the registry sync picks the candidate up.

Requests, deferrals, finishes and cancellations are audited. :meth:`stop` (core stop) kills the
job's process group. The job's ``--base`` is ``[retrain] base``, or the output folder of the job
that produced the running agent (a retrain output folder is a valid base), and must hold the
running agent's package; otherwise the request is deferred with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

from app.config import RetrainSettings, SiteConfig
from app.controllers.agent import AgentController
from app.controllers.audit import AuditTrail
from app.controllers.context import ControlContext
from app.controllers.events import EventBus
from app.domain import AgentVersion, AuditEvent, Origin, utc_now
from app.plant.transitions import (
    RECORD_SCHEMA,
    DataError,
    FilterOptions,
    QualityReport,
    assess,
    columns,
    require_enough,
)

log = logging.getLogger(__name__)

RETRAIN_DIR = "retrain"
TRANSITIONS_DIR = "transitions"
JOBS_DIR = "jobs"
JOB_FILE = "job.json"
DATA_FILE = "data.jsonl"
LOG_FILE = "retrain.log"
OUT_DIR = "out"
PROGRESS_PREFIX = "PROGRESS "
EXIT_CANDIDATE, EXIT_REJECTED = 0, 3
STOP_GRACE_S = 5.0
_INFERENCE_OUTCOMES = frozenset(
    {"recommended", "auto_apply", "hold", "proposal_refused", "abstained"}
)

Outcome = Literal["candidate", "rejected", "failed"]
JobState = Literal["running", "candidate", "rejected", "failed", "cancelled"]


# --- events (published on the core's bus, in the control context) ------------------------------


@dataclass(frozen=True, slots=True)
class RetrainRequested:
    """A retrain job was started.

    Attributes:
        job_id: Job id (also the folder and blob name).
        steps: Inference steps of the active agent counted since the previous request.
        window: Logged records handed to the job.
        at: When it was requested.
    """

    job_id: str
    steps: int
    window: int
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class RetrainProgressed:
    """A progress line of the running job.

    Attributes:
        job_id: Job id.
        stage: ``data``, ``calibrate``, ``finetune``, ``gates``, ``package`` or ``done``.
        fraction: Share of the whole job done, 0 to 1.
        message: One readable line.
        at: When the line arrived.
    """

    job_id: str
    stage: str
    fraction: float
    message: str
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class RetrainFinished:
    """The job's process ended.

    Attributes:
        job_id: Job id.
        outcome: ``candidate`` (gates passed, package written), ``rejected`` (gates failed) or
            ``failed`` (bad input, crash, push failure, cancelled).
        candidate_version: Version of the candidate package, if one was written.
        report_path: The promotion report (JSON), if one was written.
        message: One readable line (the job's last line on failure).
        at: When it finished.
    """

    job_id: str
    outcome: Outcome
    candidate_version: str | None
    report_path: Path | None
    message: str
    at: datetime = field(default_factory=utc_now)


# --- progress lines ---------------------------------------------------------------------------


def parse_progress(line: str) -> tuple[str, float, str] | None:
    """``(stage, fraction, message)`` of a ``PROGRESS stage=.. fraction=.. msg=..`` line, else None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    head, sep, message = line[len(PROGRESS_PREFIX) :].partition("msg=")
    fields = dict(part.partition("=")[::2] for part in head.split())
    try:
        fraction = float(fields["fraction"])
    except (KeyError, ValueError):
        return None
    stage = fields.get("stage", "")
    if not stage or not 0.0 <= fraction <= 1.0:
        return None
    return stage, fraction, message.strip() if sep else ""


# --- job records --------------------------------------------------------------------------------


class JobStore(Protocol):
    """Where job records go besides the data folder (the registry container)."""

    def put(self, process: str, record: Mapping[str, Any]) -> None:
        """Store ``record`` as ``jobs/<process>/<job_id>.json`` (blocking; called off the loop)."""


class BlobJobStore:
    """Job records in the registry's Blob container (``jobs/<process>/<job id>.json``).

    Args:
        connection_string: Storage connection string (resolved secret).
        container: The registry container.
    """

    def __init__(self, connection_string: str, container: str) -> None:
        self._conn = connection_string
        self._container = container

    def put(self, process: str, record: Mapping[str, Any]) -> None:
        """Upload ``record`` (overwrites the job's previous state)."""
        import asyncio

        from app.cloud.storage import ensure_container, open_container

        data = (json.dumps(record, indent=1, default=str) + "\n").encode("utf-8")
        name = f"{JOBS_DIR}/{process}/{record['job_id']}.json"

        async def upload() -> None:
            async with open_container(self._conn, self._container) as client:
                await ensure_container(client)
                await client.get_blob_client(name).upload_blob(data, overwrite=True)

        asyncio.run(upload())


def job_record(path: Path) -> dict[str, Any]:
    """Read a job record written by the trigger (``job.json``)."""
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return doc


# --- the trigger --------------------------------------------------------------------------------


CandidateHandler = Callable[[Path, str], None]
"""Receives a candidate package folder and the job id (control context)."""


@dataclass(slots=True)
class _Job:
    record: dict[str, Any]
    folder: Path
    proc: subprocess.Popen[str] | None = None
    watcher: threading.Thread | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    cancelled: bool = False


class RetrainTrigger:
    """Counts inference steps, judges the logged data and runs ``intelwatt retrain`` jobs.

    All methods but :meth:`stop` run in the control context.

    Args:
        settings: The site's ``[retrain]`` section.
        process: The site's process.
        site_name: The site's name (job ids, records).
        data_dir: The core's data folder (``retrain/`` is created in it).
        ctx: The control context (the watcher thread posts into it).
        trail: Audit trail.
        bus: Event bus for the ``Retrain*`` events.
        active: Returns the active agent (``host.versions.active``).
        on_candidate: Hands a candidate package to the agent runtime (no cloud); ``None``: the
            candidate stays in the job folder.
        job_store: Copies job records to the registry container (cloud); ``None``: local only.
        push_container: Registry container the job pushes its candidate to (``--push``; the
            connection string reaches the job in ``env``); ``None``: no push.
        command: The ``intelwatt retrain`` command line prefix (default: this interpreter).
        env: Extra environment of the job (default: ``OMP_NUM_THREADS=1``).
        nice: Niceness added to the job's process (POSIX).
        package: The site's agent package folder: the base when ``settings.base`` is unset and no
            job produced the running agent (the job warm-starts from its ``policy.onnx``).
    """

    def __init__(
        self,
        settings: RetrainSettings,
        *,
        process: str,
        site_name: str,
        data_dir: Path,
        ctx: ControlContext,
        trail: AuditTrail,
        bus: EventBus,
        active: Callable[[], AgentVersion | None],
        on_candidate: CandidateHandler | None = None,
        job_store: JobStore | None = None,
        push_container: str | None = None,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        nice: int = 10,
        package: Path | None = None,
    ) -> None:
        self.settings = settings
        self.process = process
        self.site_name = site_name
        self.root = data_dir / RETRAIN_DIR
        self._ctx = ctx
        self._trail = trail
        self._bus = bus
        self._active = active
        self._on_candidate = on_candidate
        self._store = job_store
        self._push = push_container
        self._command = list(command) if command is not None else default_command()
        self._env = dict(env) if env is not None else {"OMP_NUM_THREADS": "1"}
        self._nice = nice
        self._package = package if package is not None and package.is_dir() else None
        self._window: deque[tuple[float, dict[str, Any], str]] = deque(maxlen=settings.window_steps)
        self._steps = 0
        self._seq = 0
        self._job: _Job | None = None
        self._stopped = False
        self._last_deferral = ""
        self._bases: dict[str, Path] = {}
        self._uploads: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(1, thread_name_prefix="retrain-jobs") if job_store else None
        )
        self.jobs: list[str] = []
        """Ids of the jobs started, oldest first."""

    # --- counting and logging (control context) ---------------------------------------------

    @property
    def steps(self) -> int:
        """Inference steps counted since the last request."""
        return self._steps

    @property
    def running(self) -> str | None:
        """Id of the running job, if any."""
        return self._job.record["job_id"] if self._job is not None else None

    def on_audit(self, event: AuditEvent) -> None:
        """Audit sink: every ``agent_step`` of the active agent is logged and counted."""
        if event.kind != "agent_step" or self._stopped:
            return
        payload = transition_payload(event.data)
        if payload is None:
            return
        self._log(event.at, payload)
        self._steps += 1
        if self.settings.enabled and self._steps >= self.settings.every_n_steps:
            self.maybe_request()

    def _log(self, at: datetime, payload: dict[str, Any]) -> None:
        line = {
            "id": len(self._window) + 1,
            "ob": self.site_name,
            "schema": RECORD_SCHEMA,
            "kind": "transition",
            "ts": at.isoformat(),
            "data": payload,
        }
        text = json.dumps(line, separators=(",", ":"), default=str)
        day = self.root / TRANSITIONS_DIR / f"{at:%Y-%m-%d}.jsonl"
        try:
            day.parent.mkdir(parents=True, exist_ok=True)
            with day.open("a", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            log.error("retrain: transition not logged to %s: %s", day, exc)
        where = f"{day.name}:{at.isoformat()}"
        self._window.append((at.timestamp(), json.loads(text)["data"], where))

    # --- the request --------------------------------------------------------------------------

    def judge(self) -> QualityReport:
        """The data checks of the job on the current window.

        Raises:
            DataError: The window is not good enough (the message says why).
        """
        if len(self._window) < 2:
            raise DataError(f"only {len(self._window)} logged steps")
        data = columns(self.process, "console window", list(self._window))
        report = assess(data, FilterOptions())
        s = self.settings
        good = report.counts.get("ok", 0)
        fraction = good / len(report.reasons)
        if fraction < s.min_good_fraction:
            dropped = sorted(((c, r) for r, c in report.counts.items() if r != "ok" and c))[::-1]
            why = ", ".join(f"{r}: {c}" for c, r in dropped[:3])
            raise DataError(
                f"{100 * fraction:.0f} % of {len(report.reasons)} logged steps usable "
                f"(need {100 * s.min_good_fraction:.0f} %; dropped {why})"
            )
        require_enough(report, min_records=s.min_records, min_span_h=s.min_span_h)
        return report

    def maybe_request(self) -> str | None:
        """Request a job now if no job runs and the data and base are good; returns its id."""
        if self._job is not None or self._stopped:
            return None
        active = self._active()
        try:
            if active is None:
                raise DataError("no active agent")
            base = self._base_for(active)
            report = self.judge()
        except (DataError, ValueError, OSError) as exc:
            self._defer(str(exc))
            return None
        return self._start(active, base, report)

    def _defer(self, why: str) -> None:
        # Counted again from zero: the next check comes after another every_n_steps steps.
        steps, self._steps = self._steps, 0
        if why != self._last_deferral:
            self._trail.try_record(
                "retrain_deferred",
                Origin.system("retrain"),
                f"retrain not requested after {steps} steps: {why}",
                {"steps": steps, "reason": why, "window": len(self._window)},
            )
        self._last_deferral = why
        log.info("retrain deferred: %s", why)

    def _base_for(self, active: AgentVersion) -> Path:
        base = self._bases.get(active.version) or self.settings.base or self._package
        if base is None:
            raise DataError(
                "no base: set [retrain] base (training folder) or [agents] package (the job then "
                "warm-starts from its policy.onnx)"
            )
        manifest = base / "package" / "manifest.json"
        if not manifest.is_file():
            manifest = base / "manifest.json"  # a package folder: warm start from its ONNX graph
        try:
            version = json.loads(manifest.read_text("utf-8")).get("version")
        except (OSError, ValueError) as exc:
            raise DataError(f"[retrain] base {base}: no readable manifest.json") from exc
        if version != active.version:
            raise DataError(
                f"[retrain] base {base} holds {version!r}, the running agent is {active.version!r}"
            )
        return base

    def _start(self, active: AgentVersion, base: Path, report: QualityReport) -> str | None:
        s = self.settings
        now = utc_now()
        self._seq += 1
        job_id = f"{self.site_name}-{now:%Y%m%dT%H%M%S}-{self._seq}"
        folder = self.root / JOBS_DIR / job_id
        data = folder / DATA_FILE
        out = folder / OUT_DIR
        window = list(self._window)
        try:
            folder.mkdir(parents=True, exist_ok=False)
            data.write_text(
                "".join(
                    json.dumps(
                        {
                            "id": i,
                            "ob": self.site_name,
                            "schema": RECORD_SCHEMA,
                            "kind": "transition",
                            "ts": datetime.fromtimestamp(t, now.tzinfo).isoformat(),
                            "data": payload,
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                    for i, (t, payload, _) in enumerate(window, start=1)
                ),
                encoding="utf-8",
            )
        except OSError as exc:
            self._defer(f"job folder {folder}: {exc}")
            return None
        argv = [
            *self._command,
            "--process",
            self.process,
            "--data",
            str(data),
            "--base",
            str(base),
            "--out",
            str(out),
            "--steps",
            str(s.steps),
            "--min-records",
            str(s.min_records),
            "--min-span-h",
            str(s.min_span_h),
            *s.extra_args,
        ]
        if self._push is not None:
            argv += ["--push", "--container", self._push]
        steps, self._steps = self._steps, 0
        record: dict[str, Any] = {
            "job_id": job_id,
            "site": self.site_name,
            "process": self.process,
            "state": "running",
            "base_version": active.version,
            "base_sha256": active.sha256,
            "base": str(base),
            "data": {
                "source": str(data),
                "records": len(window),
                "usable": report.counts.get("ok", 0),
                "since": datetime.fromtimestamp(window[0][0], now.tzinfo).isoformat(),
                "until": datetime.fromtimestamp(window[-1][0], now.tzinfo).isoformat(),
                **report.to_json(),
            },
            "trigger_steps": steps,
            "fine_tune_steps": s.steps,
            "out": str(out),
            "command": argv,
            "push": self._push is not None,
            "created": now.isoformat(),
            "updated": now.isoformat(),
            "finished": None,
            "progress": {"stage": "requested", "fraction": 0.0, "message": ""},
            "exit_code": None,
            "candidate_version": None,
            "report_path": None,
            "message": "",
        }
        job = _Job(record, folder)
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                env={**os.environ, **self._env},
                start_new_session=True,
            )
        except OSError as exc:
            self._defer(f"cannot start {argv[0]}: {exc}")
            return None
        if self._nice and hasattr(os, "setpriority"):
            # Lowered after the start (not in preexec_fn, unsafe with threads); the job's
            # vector-env workers fork later and inherit it.
            with contextlib.suppress(OSError):
                own = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, own + self._nice))
        job.proc = proc
        record["pid"] = proc.pid
        self._job = job
        self.jobs.append(job_id)
        self._last_deferral = ""
        self._save(job)
        self._trail.try_record(
            "retrain_requested",
            Origin.system("retrain"),
            f"retrain job {job_id} of {active.version} on {len(window)} logged steps",
            {k: record[k] for k in ("job_id", "base_version", "base", "data", "command")},
        )
        self._bus.publish(RetrainRequested(job_id, steps, len(window)))
        job.watcher = threading.Thread(
            target=self._watch, args=(job,), name=f"retrain-{job_id}", daemon=True
        )
        job.watcher.start()
        return job_id

    # --- the job (watcher thread → control context) -------------------------------------------

    def _watch(self, job: _Job) -> None:
        proc = job.proc
        assert proc is not None
        assert proc.stdout is not None
        with proc.stdout, (job.folder / LOG_FILE).open("w", encoding="utf-8") as logf:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                logf.write(line + "\n")
                logf.flush()
                parsed = parse_progress(line)
                if parsed is not None:
                    self._ctx.post(partial(self._on_progress, job, *parsed))
                elif line.strip():
                    job.tail.append(line)
        code = proc.wait()
        self._ctx.post(lambda: self._on_exit(job, code))

    def _on_progress(self, job: _Job, stage: str, fraction: float, message: str) -> None:
        if job is not self._job:
            return
        job.record["progress"] = {"stage": stage, "fraction": fraction, "message": message}
        self._save(job)
        self._bus.publish(RetrainProgressed(job.record["job_id"], stage, fraction, message))

    def _on_exit(self, job: _Job, code: int) -> None:
        if job is not self._job:
            return
        self._job = None
        # The next request comes every_n_steps after this job ended, not after it started.
        self._steps = 0
        rec = job.record
        out = Path(rec["out"])
        report = out / "promotion-report.json"
        version: str | None = None
        outcome: Outcome
        state: JobState
        if job.cancelled:
            outcome, state, message = "failed", "cancelled", "cancelled: the console stopped"
        elif code == EXIT_CANDIDATE:
            outcome, state = "candidate", "candidate"
            try:
                version = str(
                    json.loads((out / "package" / "manifest.json").read_text())["version"]
                )
                message = f"candidate {version} passed the gates"
            except (OSError, ValueError, KeyError) as exc:
                outcome, state, message = "failed", "failed", f"no readable candidate: {exc}"
        elif code == EXIT_REJECTED:
            outcome, state = "rejected", "rejected"
            message = "rejected by the gates: " + _failed_gates(report)
        else:
            outcome, state = "failed", "failed"
            message = f"exit code {code}: " + (job.tail[-1] if job.tail else "no output")
        rec.update(
            state=state,
            exit_code=code,
            candidate_version=version,
            report_path=str(report) if report.is_file() else None,
            message=message,
            finished=utc_now().isoformat(),
        )
        self._save(job)
        self._trail.try_record(
            "retrain_finished",
            Origin.system("retrain"),
            f"retrain job {rec['job_id']}: {message}",
            {
                k: rec[k]
                for k in ("job_id", "state", "exit_code", "candidate_version", "report_path")
            },
        )
        self._bus.publish(
            RetrainFinished(
                rec["job_id"],
                outcome,
                version,
                report if report.is_file() else None,
                message,
            )
        )
        if outcome == "candidate" and version is not None:
            self._bases[version] = out  # the job's output folder is the next job's base
            if self._push is None and self._on_candidate is not None:
                self._on_candidate(out / "package", rec["job_id"])

    def _save(self, job: _Job) -> None:
        rec = job.record
        rec["updated"] = utc_now().isoformat()
        text = json.dumps(rec, indent=1, default=str) + "\n"
        target = job.folder / JOB_FILE
        try:
            tmp = target.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        except OSError as exc:
            log.error("retrain: job record %s not written: %s", target, exc)
        if self._uploads is not None and self._store is not None:
            store, snapshot = self._store, json.loads(text)
            fut = self._uploads.submit(store.put, self.process, snapshot)
            fut.add_done_callback(_log_upload)

    # --- shutdown (any thread) ----------------------------------------------------------------

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Kill the running job's process group and stop logging (safe to call twice)."""
        self._stopped = True
        job = self._job
        if job is not None and job.proc is not None and job.proc.poll() is None:
            job.cancelled = True
            _kill_group(job.proc, timeout)
            job.record.update(state="cancelled", finished=utc_now().isoformat())
            job.record["message"] = "cancelled: the console stopped"
            self._save(job)
            self._trail.try_record(
                "retrain_cancelled",
                Origin.system("retrain"),
                f"retrain job {job.record['job_id']} killed: the console stopped",
                {"job_id": job.record["job_id"]},
            )
        if job is not None and job.watcher is not None:
            job.watcher.join(timeout)
        self._job = None
        if self._uploads is not None:
            self._uploads.shutdown(wait=True, cancel_futures=False)


def retrain_trigger(
    site: SiteConfig,
    data_dir: Path,
    ctx: ControlContext,
    trail: AuditTrail,
    bus: EventBus,
    agent: AgentController,
) -> RetrainTrigger | None:
    """The core's trigger for ``site`` (``None`` if ``[retrain] enabled`` is false).

    The trigger is chained behind the audit trail's sink (it sees every ``agent_step``). With the
    cloud enabled, job records also go to the registry container and the job pushes its
    candidate (the registry sync stages it); without, the candidate is staged directly.
    """
    if not site.retrain.enabled:
        return None
    store: JobStore | None = None
    push: str | None = None
    env = {"OMP_NUM_THREADS": "1"}
    if site.cloud.enabled:
        from app.cloud.storage import CONNECTION_STRING_ENV, storage_connection_string
        from app.secrets import SecretError

        try:
            conn = storage_connection_string(site.cloud)
        except SecretError as exc:
            log.error("retrain: job records stay local, candidates are not pushed: %s", exc)
        else:
            store = BlobJobStore(conn, site.cloud.container)
            push = site.cloud.container
            env[CONNECTION_STRING_ENV] = conn

    def stage(path: Path, job_id: str) -> None:
        agent.stage_candidate(path, Origin.system(f"retrain {job_id}"))

    trigger = RetrainTrigger(
        site.retrain,
        process=site.site.process,
        site_name=site.site.name,
        data_dir=data_dir,
        ctx=ctx,
        trail=trail,
        bus=bus,
        active=lambda: agent.host.versions.active,
        on_candidate=stage,
        job_store=store,
        push_container=push,
        env=env,
        package=site.agents.package,
    )
    previous = trail.sink

    def sink(event: AuditEvent) -> None:
        try:
            if previous is not None:
                previous(event)
        finally:
            trigger.on_audit(event)

    trail.sink = sink
    return trigger


def default_command() -> list[str]:
    """``intelwatt retrain`` as this installation runs it (frozen bundle or interpreter)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "retrain"]
    return [sys.executable, "-m", "app.training.continuous"]


def transition_payload(step: Mapping[str, Any]) -> dict[str, Any] | None:
    """The outbox ``transition`` payload of an ``agent_step`` audit record.

    ``None`` unless the active agent produced an action on that step (an inference step).
    """
    if step.get("outcome") not in _INFERENCE_OUTCOMES:
        return None
    actions = step.get("actions")
    if not isinstance(actions, Mapping):
        return None
    active = actions.get("active")
    if not isinstance(active, Mapping) or active.get("error") or not active.get("action"):
        return None
    observation = step.get("observation") or {}
    obs = {t: s.get("value") for t, s in observation.items() if isinstance(s, Mapping)}
    quality = {t: s.get("quality") for t, s in observation.items() if isinstance(s, Mapping)}
    applied = dict(step.get("proposal") or {}) if step.get("outcome") == "auto_apply" else {}
    return {
        "obs": obs,
        "quality": quality,
        "actions": {
            slot: dict(a.get("action") or {})
            for slot, a in actions.items()
            if isinstance(a, Mapping) and a.get("action")
        },
        "applied": applied,
        "reward": None,
        "kpis": {},
        "agent": {"version": active.get("version"), "sha256": active.get("sha256")},
        "cloud_sourced": False,
        "mode": step.get("mode"),
    }


def _failed_gates(report: Path) -> str:
    try:
        doc = json.loads(report.read_text("utf-8"))
        checks = doc["gates"]["checks"]
        return "; ".join(f"{c['name']}: {c['detail']}" for c in checks if not c["passed"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"see {report}"


def _kill_group(proc: subprocess.Popen[str], timeout: float) -> None:
    # The job runs in its own session: SubprocVecEnv workers die with it.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, sig)
            else:
                proc.kill()
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_upload(fut: Future[None]) -> None:
    exc = fut.exception()
    if exc is not None:
        log.warning("retrain: job record not stored in the registry: %s", exc)


__all__ = [
    "BlobJobStore",
    "JobStore",
    "RetrainFinished",
    "RetrainProgressed",
    "RetrainRequested",
    "RetrainTrigger",
    "default_command",
    "job_record",
    "parse_progress",
    "retrain_trigger",
    "transition_payload",
]
