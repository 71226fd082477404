"""RetrainTrigger: step counting, data checks, job records, the background job and its events.

The job is a stand-in script (``FAKE_JOB``) that speaks the real job's protocol: ``PROGRESS``
lines, exit codes 0 / 3 / 2, ``out/package/manifest.json`` and ``out/promotion-report.json``. The
real ``intelwatt retrain`` runs in ``tests/training/test_continuous_e2e.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import RetrainSettings
from app.controllers.audit import AuditTrail
from app.controllers.context import Cancellable
from app.controllers.events import EventBus
from app.controllers.ledger import Ledger, LedgerReader
from app.controllers.retrain import (
    RetrainFinished,
    RetrainProgressed,
    RetrainRequested,
    RetrainTrigger,
    job_record,
    parse_progress,
    transition_payload,
)
from app.domain import AgentVersion, AuditEvent, Origin
from app.plant.baselines import make_baseline
from app.training.continuous import progress_line
from app.training.plant_log import EPOCH, simulate_transitions

SCENARIOS = Path(__file__).resolve().parents[2] / "resources" / "scenarios"
ACTIVE = AgentVersion("ro", "ro-v1", "a" * 64)

FAKE_JOB = r"""
import json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
out = args["--out"]
records = sum(1 for _ in open(args["--data"]))
print(f"intelwatt retrain: {records} records", flush=True)
for stage, frac in (("data", 0.0), ("calibrate", 0.05), ("finetune", 0.5), ("gates", 0.8)):
    print(f"PROGRESS stage={stage} fraction={frac} msg={stage} on {records} records", flush=True)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
code = int(os.environ.get("FAKE_EXIT", "0"))
if code in (0, 3):
    os.makedirs(out, exist_ok=True)
    checks = [{"name": "trips", "passed": code == 0, "detail": "2 trips on high_salinity"}]
    json.dump({"gates": {"checks": checks}}, open(os.path.join(out, "promotion-report.json"), "w"))
if code == 0:
    os.makedirs(os.path.join(out, "package"))
    json.dump({"version": "ro-v1-rt1"}, open(os.path.join(out, "package", "manifest.json"), "w"))
    print("PROGRESS stage=done fraction=1 msg=candidate ro-v1-rt1", flush=True)
if code == 2:
    print("intelwatt retrain: --base refused: bad signature", flush=True)
sys.exit(code)
"""


class ThreadCtx:
    """A control context whose queue the test drains (posts may come from the watcher thread)."""

    def __init__(self) -> None:
        self.q: queue.Queue[Callable[[], object]] = queue.Queue()

    def post(self, fn: Callable[[], object]) -> None:
        self.q.put(fn)

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> Cancellable:
        raise AssertionError("the retrain trigger schedules nothing; this test context neither")

    def monotonic(self) -> float:
        return time.monotonic()

    def drain_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < end, "timed out"
            with contextlib.suppress(queue.Empty):
                self.q.get(timeout=0.05)()


def agent_steps(days: float, *, seed: int = 0) -> list[AuditEvent]:
    """``agent_step`` audit events of a simulated plant (as AgentController records them)."""
    records = simulate_transitions(
        "ro",
        SCENARIOS / "ro" / "ro_11_steady.csv",
        make_baseline("fixed_pi", "ro"),
        days=days,
        seed=seed,
        start=EPOCH,
    )
    out = []
    for when, payload in records:
        obs = {t: {"value": v, "quality": "good"} for t, v in payload["obs"].items()}
        data = {
            "outcome": "recommended",
            "detail": "",
            "mode": "advisory",
            "fallback": "active_local",
            "observation": obs,
            "actions": {
                "active": {
                    "version": ACTIVE.version,
                    "sha256": ACTIVE.sha256,
                    "action": payload["applied"],
                    "uncertainty": None,
                    "ood": None,
                    "error": None,
                }
            },
        }
        out.append(AuditEvent("agent_step", Origin.agent(ACTIVE.version), "step", data, when))
    return out


class Rig:
    def __init__(self, tmp: Path, settings: RetrainSettings, exit_code: int = 0, **kw: Any):
        script = tmp / "fake_job.py"
        script.write_text(FAKE_JOB)
        self.base = tmp / "base"
        (self.base / "package").mkdir(parents=True)
        (self.base / "package" / "manifest.json").write_text(json.dumps({"version": "ro-v1"}))
        self.ledger = Ledger(tmp / "ledger.sqlite")
        self.trail = AuditTrail(self.ledger)
        self.bus = EventBus()
        self.events: list[object] = []
        for kind in (RetrainRequested, RetrainProgressed, RetrainFinished):
            self.bus.subscribe(kind, self.events.append)
        self.ctx = ThreadCtx()
        self.candidates: list[tuple[Path, str]] = []
        self.active: AgentVersion | None = ACTIVE
        env = {"FAKE_EXIT": str(exit_code), "FAKE_SLEEP": str(kw.pop("sleep", 0))}
        self.trigger = RetrainTrigger(
            settings.model_copy(update={"base": self.base}),
            process="ro",
            site_name="test-site",
            data_dir=tmp / "data",
            ctx=self.ctx,
            trail=self.trail,
            bus=self.bus,
            active=lambda: self.active,
            on_candidate=lambda p, j: self.candidates.append((p, j)),
            command=[sys.executable, str(script)],
            env=env,
            **kw,
        )

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def audit_kinds(self) -> list[str]:
        with LedgerReader(self.ledger.path) as reader:
            return [r.event.kind for r in reader.query(limit=1000).records]


@pytest.fixture
def settings() -> RetrainSettings:
    return RetrainSettings(
        enabled=True, every_n_steps=96, window_steps=150, min_records=72, min_span_h=24.0
    )


@pytest.fixture
def steps() -> list[AuditEvent]:
    return agent_steps(3.0)


@pytest.fixture
def rig(tmp_path: Path, settings: RetrainSettings) -> Iterator[Rig]:
    r = Rig(tmp_path, settings)
    yield r
    r.trigger.stop()
    r.ledger.close()


def test_progress_lines_round_trip_and_junk_is_ignored() -> None:
    line = progress_line("finetune", 0.4321, "40 % of\n 2000 steps")
    assert parse_progress(line) == ("finetune", 0.432, "40 % of 2000 steps")
    assert parse_progress("intelwatt retrain: 2/5 calibrating") is None
    assert parse_progress("PROGRESS stage=x fraction=lots msg=y") is None
    assert parse_progress("PROGRESS stage=x fraction=1.5 msg=y") is None


def test_only_inference_steps_of_the_active_agent_become_transitions(
    steps: list[AuditEvent],
) -> None:
    data = dict(steps[0].data)
    payload = transition_payload(data)
    assert payload is not None
    assert payload["obs"]["feed_pressure_bar"] == data["observation"]["feed_pressure_bar"]["value"]
    assert payload["quality"]["feed_pressure_bar"] == "good"
    assert payload["applied"] == {}  # advisory: nothing was written by the agent
    auto = {**data, "outcome": "auto_apply", "proposal": {"feed_pressure_sp_bar": 12.0}}
    assert transition_payload(auto)["applied"] == {"feed_pressure_sp_bar": 12.0}  # type: ignore[index]
    assert transition_payload({**data, "outcome": "inputs_refused"}) is None
    broken = {**data, "actions": {"active": {**data["actions"]["active"], "error": "boom"}}}
    assert transition_payload(broken) is None


def test_after_n_steps_a_job_runs_in_the_background_and_its_candidate_is_staged(
    rig: Rig, steps: list[AuditEvent]
) -> None:
    for ev in steps[:95]:
        rig.trigger.on_audit(ev)
    assert rig.trigger.running is None and not rig.of(RetrainRequested)
    started = time.monotonic()
    rig.trigger.on_audit(steps[95])
    assert time.monotonic() - started < 2.0  # Popen only; the job runs on its own
    job_id = rig.trigger.running
    assert job_id is not None
    [req] = rig.of(RetrainRequested)
    assert (req.job_id, req.steps, req.window) == (job_id, 96, 96)
    folder = rig.trigger.root / "jobs" / job_id
    record = job_record(folder / "job.json")
    assert record["state"] == "running" and record["base_version"] == "ro-v1"
    assert record["data"]["records"] == 96 and record["data"]["usable"] >= 72
    assert record["data"]["source"] == str(folder / "data.jsonl")
    rig.ctx.drain_until(lambda: bool(rig.of(RetrainFinished)))
    stages = [(e.stage, e.fraction) for e in rig.of(RetrainProgressed)]
    assert stages == [("data", 0.0), ("calibrate", 0.05), ("finetune", 0.5), ("gates", 0.8),
                      ("done", 1.0)]  # fmt: skip
    assert rig.of(RetrainProgressed)[0].message == "data on 96 records"
    [fin] = rig.of(RetrainFinished)
    assert fin.outcome == "candidate" and fin.candidate_version == "ro-v1-rt1"
    assert fin.report_path == folder / "out" / "promotion-report.json"
    assert rig.candidates == [(folder / "out" / "package", job_id)]
    assert rig.trigger.steps == 0 and rig.trigger.running is None  # counted from the job's end
    record = job_record(folder / "job.json")
    assert record["state"] == "candidate" and record["exit_code"] == 0
    assert record["progress"]["stage"] == "done" and record["finished"]
    assert "intelwatt retrain: 96 records" in (folder / "retrain.log").read_text()
    kinds = rig.audit_kinds()
    assert kinds.count("retrain_requested") == 1 and kinds.count("retrain_finished") == 1
    # The transitions are also in the day files of the data folder, readable by the job's loader.
    from app.training.data import load_transitions

    assert len(load_transitions(rig.trigger.root / "transitions", "ro")) == 96
    assert len(load_transitions(folder / "data.jsonl", "ro")) == 96


def test_the_next_job_fine_tunes_the_promoted_candidate_from_the_last_output(
    rig: Rig, steps: list[AuditEvent]
) -> None:
    for ev in steps[:96]:
        rig.trigger.on_audit(ev)
    rig.ctx.drain_until(lambda: bool(rig.of(RetrainFinished)))
    first = rig.trigger.jobs[0]
    rig.active = AgentVersion("ro", "ro-v1-rt1", "b" * 64)
    rig.trigger.settings = rig.trigger.settings.model_copy(update={"every_n_steps": 48})
    for ev in steps[96:144]:
        rig.trigger.on_audit(ev)
    assert len(rig.trigger.jobs) == 2
    record = job_record(rig.trigger.root / "jobs" / rig.trigger.jobs[1] / "job.json")
    assert record["base"] == str(rig.trigger.root / "jobs" / first / "out")
    assert record["base_version"] == "ro-v1-rt1"


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        ("quality", "usable"),  # most steps with a bad-quality transmitter
        ("cip", "usable"),  # a long CIP window
        ("short", "span"),  # enough records, too short a span
    ],
)
def test_bad_data_defers_the_request_with_the_reason(
    tmp_path: Path, settings: RetrainSettings, steps: list[AuditEvent], spoil: str, why: str
) -> None:
    rig = Rig(
        tmp_path, settings.model_copy(update={"min_span_h": 60.0} if spoil == "short" else {})
    )
    try:
        for i, ev in enumerate(steps[:96]):
            data = json.loads(json.dumps(ev.data))
            if spoil == "quality" and i % 3:
                data["observation"]["feed_conductivity_uscm"]["quality"] = "uncertain"
            if spoil == "cip" and 10 <= i < 40:
                data["observation"]["cip_active"]["value"] = 1.0
            rig.trigger.on_audit(AuditEvent(ev.kind, ev.origin, ev.summary, data, ev.at))
        assert rig.trigger.running is None and not rig.of(RetrainRequested)
        assert rig.trigger.steps == 0  # counted again from zero
        assert rig.audit_kinds() == ["retrain_deferred"]
        with LedgerReader(rig.ledger.path) as reader:
            [rec] = reader.query(limit=10).records
        assert why in rec.event.data["reason"], rec.event.data["reason"]
    finally:
        rig.trigger.stop()
        rig.ledger.close()


def test_no_base_for_the_running_agent_defers(rig: Rig, steps: list[AuditEvent]) -> None:
    rig.active = AgentVersion("ro", "ro-v7", "c" * 64)
    for ev in steps[:96]:
        rig.trigger.on_audit(ev)
    assert rig.trigger.running is None
    with LedgerReader(rig.ledger.path) as reader:
        [rec] = reader.query(limit=10).records
    assert "holds 'ro-v1', the running agent is 'ro-v7'" in rec.event.data["reason"]


@pytest.mark.parametrize(("code", "outcome"), [(3, "rejected"), (2, "failed")])
def test_rejected_and_failed_jobs_stage_nothing(
    tmp_path: Path, settings: RetrainSettings, steps: list[AuditEvent], code: int, outcome: str
) -> None:
    rig = Rig(tmp_path, settings, exit_code=code)
    try:
        for ev in steps[:96]:
            rig.trigger.on_audit(ev)
        rig.ctx.drain_until(lambda: bool(rig.of(RetrainFinished)))
        [fin] = rig.of(RetrainFinished)
        assert fin.outcome == outcome and fin.candidate_version is None
        assert not rig.candidates
        if code == 3:
            assert fin.message == "rejected by the gates: trips: 2 trips on high_salinity"
            assert fin.report_path is not None and fin.report_path.is_file()
        else:
            assert fin.message == "exit code 2: intelwatt retrain: --base refused: bad signature"
        record = job_record(rig.trigger.root / "jobs" / fin.job_id / "job.json")
        assert record["state"] == outcome and record["exit_code"] == code
    finally:
        rig.trigger.stop()
        rig.ledger.close()


def test_stop_kills_the_running_job_and_records_the_cancellation(
    tmp_path: Path, settings: RetrainSettings, steps: list[AuditEvent]
) -> None:
    rig = Rig(tmp_path, settings, sleep=60)
    for ev in steps[:96]:
        rig.trigger.on_audit(ev)
    job_id = rig.trigger.running
    assert job_id is not None
    pid = job_record(rig.trigger.root / "jobs" / job_id / "job.json")["pid"]
    rig.trigger.stop(timeout=5.0)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    record = job_record(rig.trigger.root / "jobs" / job_id / "job.json")
    assert record["state"] == "cancelled"
    assert "retrain_cancelled" in rig.audit_kinds()
    rig.trigger.on_audit(steps[0])  # stopped: nothing is logged or counted any more
    assert rig.trigger.steps == 0
    rig.ledger.close()


def test_job_records_are_copied_to_the_job_store(
    tmp_path: Path, settings: RetrainSettings, steps: list[AuditEvent]
) -> None:
    stored: list[tuple[str, dict[str, Any]]] = []

    class Store:
        def put(self, process: str, record: Any) -> None:
            stored.append((process, dict(record)))

    rig = Rig(tmp_path, settings, job_store=Store(), push_container="intelwatt")
    try:
        for ev in steps[:96]:
            rig.trigger.on_audit(ev)
        rig.ctx.drain_until(lambda: bool(rig.of(RetrainFinished)))
    finally:
        rig.trigger.stop()
        rig.ledger.close()
    states = [r["state"] for _, r in stored]
    assert states[0] == "running" and states[-1] == "candidate"
    assert {p for p, _ in stored} == {"ro"}
    assert stored[-1][1]["command"][-3:] == ["--push", "--container", "intelwatt"]
    assert not rig.candidates  # with the cloud the registry sync stages the pushed candidate
    assert np.isfinite(stored[-1][1]["data"]["span_h"])


def test_without_a_training_folder_the_site_package_is_the_base(
    tmp_path: Path, settings: RetrainSettings, steps: list[AuditEvent]
) -> None:
    package = tmp_path / "shipped"
    package.mkdir()
    (package / "manifest.json").write_text(json.dumps({"version": "ro-v1"}))
    rig = Rig(tmp_path, settings, package=package)
    rig.trigger.settings = rig.trigger.settings.model_copy(update={"base": None})
    try:
        for ev in steps[:96]:
            rig.trigger.on_audit(ev)
        job_id = rig.trigger.running
        assert job_id is not None
        record = job_record(rig.trigger.root / "jobs" / job_id / "job.json")
        assert record["base"] == str(package)
        assert record["command"][record["command"].index("--base") + 1] == str(package)
    finally:
        rig.trigger.stop()
        rig.ledger.close()
