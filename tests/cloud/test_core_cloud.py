"""The control core with its cloud link against Azurite and azmlinfsrv (issue 9's wiring).

Each core runs against an in-memory ``FakeDriver`` PLC (values held still, so the agent's inputs
are known) and the real cloud peers of ``tests/cloud/conftest.py``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from app.agent_runtime.fallback import FallbackState
from app.agent_runtime.keys import TrustStore
from app.cloud.errors import (
    ScoringAuthError,
    ScoringCircuitOpen,
    ScoringModelError,
    ScoringNotFound,
    ScoringTimeout,
    ScoringUnreachable,
    ScoringVersionMismatch,
)
from app.cloud.events import OutboxBacklogChanged
from app.cloud.registry import SyncRegistry, version_prefix
from app.config import parse_site
from app.controllers import alarm_points as ap
from app.controllers.agent import AgentSettings
from app.controllers.auth import ScryptParams
from app.controllers.cloud_link import CloudLinkSettings, endpoint_state
from app.controllers.core import ControlCore, CoreOptions
from app.controllers.ledger import AuditFilter, LedgerReader
from app.controllers.messages import StepTransition
from app.controllers.sync import CandidateDownloadProgressed, CandidateRefused, CandidateStaged
from app.domain import (
    AuditEvent,
    ConnectionChanged,
    ConnectionState,
    Mode,
    OriginKind,
    RejectReason,
)
from app.drivers.fake import FakeDriver
from app.plant.catalog import RO_CATALOG
from tests.cloud.conftest import (
    ACCOUNT_KEY,
    DEPLOYMENT,
    SCORING_KEY,
    Azurite,
    ScoringServer,
    Signer,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_VERSION = json.loads((REPO / "resources/agents/ro/manifest.json").read_text())["version"]
SHIPPED_AGENT = REPO / "resources" / "agents" / "ro"
P, F = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
PASSWORD = "correct-horse-battery"
STORAGE_ENV = "IW_TEST_STORAGE_CONNECTION"
SCORING_ENV = "IW_TEST_SCORING_KEY"
FAST = CloudLinkSettings(
    console="it-console",
    drain_max_delay_s=0.0,
    drain_poll_s=0.05,
    backoff_initial_s=0.1,
    backoff_cap_s=0.4,
    final_drain_s=3.0,
    connect_timeout_s=1.0,
    read_timeout_s=5.0,
    progress_step_bytes=1,
)


def site_text(
    tmp: Path,
    container: str,
    *,
    package: Path,
    trust: Path,
    scoring_url: str | None = None,
    budget_s: float = 1.0,
    outbox_mb: float = 4.0,
) -> str:
    scoring = (
        f'scoring_url = "{scoring_url}"\nscoring_key = "env:{SCORING_ENV}"\n'
        f'scoring_deployment = "{DEPLOYMENT}"\n'
        if scoring_url
        else ""
    )
    return f"""
schema_version = 1
[site]
name = "cloud-it"
process = "ro"
[plant]
protocol = "opcua"
stale_after_s = 3600.0
heartbeat_period_s = 1.0
watchdog_timeout_s = 10.0
[plant.opcua]
endpoint = "opc.tcp://127.0.0.1:9/unused"
[limits.feed_pressure_sp_bar]
engineer_low = 5.0
engineer_high = 40.0
max_move = 1.0
[limits.feed_flow_sp_m3h]
engineer_low = 20.0
engineer_high = 70.0
max_move = 4.0
[control]
agent_period_s = 600.0
supervision_period_s = 0.5
inference_deadline_s = 0.5
recommendation_ttl_s = 600.0
[modes]
initial = "advisory"
max_ood_score = 1e6
[agents]
package = "{package}"
trust_store = "{trust}"
staging_dir = "{tmp / "staging"}"
[cloud]
enabled = true
connection_string = "env:{STORAGE_ENV}"
container = "{container}"
poll_period_s = 0.2
scoring_budget_s = {budget_s}
outbox_max_mb = {outbox_mb}
{scoring}"""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Rig:
    """A started core with a recording of its bus events."""

    core: ControlCore
    driver: FakeDriver
    data: Path
    events: list[object] = field(default_factory=list)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in list(self.events) if isinstance(e, kind)]

    def connections(self, system: str) -> list[ConnectionState]:
        return [e.state for e in self.of(ConnectionChanged) if e.system == system]

    def step(self) -> None:
        agent = self.core.agent
        assert agent is not None
        self.core._call(agent.step)
        agent.delivered.result(10)
        self.core._call(lambda: None)  # the result was posted before: it has been handled now

    def ledger(self, *kinds: str) -> list[AuditEvent]:
        with LedgerReader(self.data / "ledger.sqlite") as reader:
            page = reader.query(AuditFilter(kinds=kinds, newest_first=False), limit=100_000)
            return [r.event for r in page.records]

    def set_plc(self, values: dict[str, float]) -> None:
        self.core._call(lambda: self.driver.set_values(values))


@pytest.fixture
def rigs(monkeypatch: pytest.MonkeyPatch, azurite: Azurite) -> Iterator[Callable[..., Rig]]:
    monkeypatch.setenv(STORAGE_ENV, azurite.connection_string)
    monkeypatch.setenv(SCORING_ENV, SCORING_KEY)
    made: list[Rig] = []

    def make(site: str, tmp: Path, trust: TrustStore, *, connect: bool = True) -> Rig:
        driver = FakeDriver(RO_CATALOG.tags)
        data = tmp / "data"
        core = ControlCore(
            parse_site(site),
            CoreOptions(
                data_dir=data,
                driver=driver,
                trust_store=trust,
                trend_capacity=1000,
                scrypt=ScryptParams(n=2**4, r=1, p=1),
                initial_user=("sup", PASSWORD),
                agent=AgentSettings(shadow_kpi_every=0),
                cloud_link=FAST,
            ),
        )
        rig = Rig(core, driver, data)
        for kind in (
            ConnectionChanged,
            StepTransition,
            CandidateDownloadProgressed,
            CandidateStaged,
            CandidateRefused,
            OutboxBacklogChanged,
        ):
            core.bus.subscribe(kind, rig.events.append)
        made.append(rig)
        core.start()
        if connect:
            wait_for(
                "advisory with an active agent",
                lambda: (s := core.status()).mode is Mode.ADVISORY and s.active is not None,
            )
        return rig

    yield make
    for rig in made:
        rig.core.stop()


def both_keys(signer: Signer) -> TrustStore:
    return TrustStore([*TrustStore.load(REPO / "resources" / "trust"), *signer.trust])


def shipped_site(tmp: Path, container: str, signer: Signer) -> str:
    return site_text(tmp, container, package=SHIPPED_AGENT, trust=signer.trust_dir)


def blob_lines(conn: str, container: str) -> list[dict[str, Any]]:
    client = ContainerClient.from_connection_string(conn, container)
    with client:
        lines: list[dict[str, Any]] = []
        for blob in sorted(client.list_blobs(name_starts_with="logs/"), key=lambda b: b.name):
            body = client.download_blob(blob.name).readall()
            lines.extend(json.loads(x) for x in body.splitlines() if x.strip())
        return lines


# --- (a) a registry candidate reaches the candidate slot and answers in shadow --------------------


def test_a_registry_candidate_is_loaded_as_candidate_and_answers_in_shadow(
    rigs: Callable[..., Rig],
    azurite: Azurite,
    container_name: str,
    signer: Signer,
    tmp_path: Path,
) -> None:
    rig = rigs(shipped_site(tmp_path, container_name, signer), tmp_path, both_keys(signer))
    assert rig.core.status().candidate is None
    with SyncRegistry(azurite.connection_string, container_name, "ro") as registry:
        registry.ensure_container()
        registry.push(signer.package(tmp_path / "pkg", "ro-cand.7", seed=3), alias="candidate")
    wait_for("the candidate slot", lambda: rig.core.status().candidate is not None)
    candidate = rig.core.status().candidate
    assert candidate is not None and candidate.version == "ro-cand.7"
    assert candidate.signer is not None
    staged = rig.of(CandidateStaged)
    assert [s.version.version for s in staged] == ["ro-cand.7"]
    assert staged[0].path == tmp_path / "staging" / "ro" / "ro-cand.7"
    progress = rig.of(CandidateDownloadProgressed)
    assert progress and progress[-1].done_bytes == progress[-1].total_bytes > 0
    [load] = [e for e in rig.ledger("model_load") if e.data["slot"] == "candidate"]
    assert load.origin.kind is OriginKind.SYSTEM and load.origin.name == "cloud-sync"
    assert load.data["version"] == "ro-cand.7"

    rig.step()
    wait_for("the step's transition", lambda: bool(rig.of(StepTransition)))
    transition = rig.of(StepTransition)[-1]
    assert set(transition.actions) == {"active", "candidate"}
    assert set(transition.actions["candidate"]) == {P, F}
    assert 6.0 <= transition.actions["candidate"][P] <= 38.0  # the package's action range
    assert transition.agent is not None and transition.agent.version == SHIPPED_VERSION
    step = rig.ledger("agent_step")[-1]
    assert step.data["actions"]["candidate"]["version"] == "ro-cand.7"
    assert step.data["actions"]["candidate"]["error"] is None
    time.sleep(0.5)  # later polls see the same alias: nothing is staged twice
    assert len(rig.of(CandidateStaged)) == 1


# --- (b) a tampered candidate never reaches a slot -----------------------------------------------


def test_a_tampered_candidate_is_refused_with_an_alarm_and_never_loaded(
    rigs: Callable[..., Rig],
    azurite: Azurite,
    container_name: str,
    signer: Signer,
    tmp_path: Path,
) -> None:
    with SyncRegistry(azurite.connection_string, container_name, "ro") as registry:
        registry.ensure_container()
        registry.push(signer.package(tmp_path / "pkg", "ro-bad.1"), alias="candidate")
    client = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    with client:
        blob = version_prefix("ro", "ro-bad.1") + "policy.onnx"
        client.upload_blob(blob, b"\x08\x07not the signed graph", overwrite=True)
    rig = rigs(shipped_site(tmp_path, container_name, signer), tmp_path, both_keys(signer))
    wait_for("the refusal", lambda: bool(rig.of(CandidateRefused)))
    wait_for("the alarm", lambda: ap.AGENT_REFUSED in rig.core.status().alarms.ids)
    [refusal] = rig.of(CandidateRefused)
    assert (refusal.version, refusal.culprit) == ("ro-bad.1", "policy.onnx")
    refused = [e for e in rig.ledger("model_refused") if e.origin.name == "cloud-sync"]
    assert [e.data["version"] for e in refused] == ["ro-bad.1"]
    time.sleep(0.5)  # several more polls
    status = rig.core.status()
    assert status.candidate is None and status.active is not None
    assert status.active.version == SHIPPED_VERSION
    assert not (tmp_path / "staging" / "ro" / "ro-bad.1").exists()
    assert not any(
        e.data.get("version") == "ro-bad.1" for e in rig.ledger("model_load")
    )  # never handed to the agent runtime
    assert len(rig.of(CandidateRefused)) == 1


# --- (c) audit events and transitions reach Blob exactly once, across an outage -----------------


@pytest.mark.slow  # one Azurite restart takes about 4 s
def test_audit_and_transitions_reach_blob_exactly_once_across_a_storage_outage(
    rigs: Callable[..., Rig],
    azurite: Azurite,
    container_name: str,
    signer: Signer,
    tmp_path: Path,
) -> None:
    rig = rigs(shipped_site(tmp_path, container_name, signer), tmp_path, both_keys(signer))
    try:
        rig.step()
        wait_for("delivery", lambda: rig.core.status().outbox_pending_records == 0)
        assert rig.core.status().cloud is ConnectionState.CONNECTED
        azurite.stop()  # the outage
        for _ in range(3):
            rig.step()
        wait_for("cloud lost", lambda: rig.core.status().cloud is ConnectionState.DISCONNECTED)
        assert rig.core.status().outbox_pending_records > 0

        def gauge_shows_backlog() -> bool:
            gauges = rig.of(OutboxBacklogChanged)
            backlog = rig.core.status().outbox_pending_records
            return (
                bool(gauges) and not gauges[-1].connected and gauges[-1].pending_records == backlog
            )

        wait_for("the backlog gauge", gauge_shows_backlog)
    finally:
        azurite.start()  # same port, same data folder
    wait_for("redelivery", lambda: rig.core.status().outbox_pending_records == 0)
    # The link's state change reaches the bus on its own thread, maybe after the last delivery.
    wait_for("cloud back", lambda: rig.connections("cloud")[-1:] == [ConnectionState.CONNECTED])
    rig.core.stop()  # core_stop and the last records go out in the final drain
    lines = blob_lines(azurite.connection_string, container_name)

    assert len({line["id"] for line in lines}) == len(lines)  # no duplicates
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert all(line["schema"] == 1 for line in lines)
    audit = [line["data"]["event"] for line in lines if line["kind"] == "audit"]
    ledger = rig.ledger()
    assert audit[0]["kind"] == "core_start" and audit[-1]["kind"] == "core_stop"
    assert [(a["kind"], a["summary"]) for a in audit] == [
        (e.kind, e.summary) for e in ledger[-len(audit) :]
    ]  # every audit event from the start on: once on disk, once in Blob, in order
    transitions = [line["data"] for line in lines if line["kind"] == "transition"]
    assert len(transitions) == len(rig.ledger("agent_step")) == 4
    assert all(set(t["obs"]) >= {o.name for o in RO_CATALOG.observations} for t in transitions)
    assert all(
        t["agent"]["version"] == SHIPPED_VERSION and t["actions"]["active"] for t in transitions
    )
    assert all(t["quality"] and t["outcome"] for t in transitions)
    assert rig.connections("cloud") == [
        ConnectionState.CONNECTED,
        ConnectionState.DISCONNECTED,
        ConnectionState.CONNECTED,
    ]


def dead_storage() -> str:
    """A connection string to a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def test_storage_down_at_start_never_holds_the_core_back(
    rigs: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    container_name: str,
    signer: Signer,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(STORAGE_ENV, dead_storage())
    rig = rigs(shipped_site(tmp_path, container_name, signer), tmp_path, both_keys(signer))
    rig.step()
    wait_for("cloud down", lambda: rig.core.status().cloud is ConnectionState.DISCONNECTED)
    status = rig.core.status()
    assert status.mode is Mode.ADVISORY and status.active is not None
    assert status.outbox_pending_records >= len(rig.ledger("agent_step")) == 1
    assert rig.connections("cloud") == [ConnectionState.DISCONNECTED]
    link = rig.core.cloud_link
    assert link is not None
    rig.core.stop()  # the final delivery attempt fails fast; nothing is lost
    with sqlite3.connect(link.outbox.path) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM records ORDER BY id")]
    assert kinds.count("transition") == 1 and kinds.count("audit") >= 3


def test_an_outbox_near_its_limit_raises_an_alarm(
    rigs: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    container_name: str,
    signer: Signer,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(STORAGE_ENV, dead_storage())
    site = site_text(
        tmp_path,
        container_name,
        package=SHIPPED_AGENT,
        trust=signer.trust_dir,
        outbox_mb=0.02,  # 20 KiB: a few agent steps
    )
    rig = rigs(site, tmp_path, both_keys(signer))
    limit = 0.02 * 1024 * 1024
    for _ in range(40):  # each step adds a transition and its ledger record
        if ap.CLOUD_OUTBOX in rig.core.status().alarms.ids:
            break
        rig.step()
    wait_for("the outbox alarm", lambda: ap.CLOUD_OUTBOX in rig.core.status().alarms.ids)
    link = rig.core.cloud_link
    assert link is not None
    assert link.outbox.pending_bytes >= 0.8 * limit  # storage is down: it only grows
    assert link.outbox.level.value != "normal"


# --- (d) the cloud endpoint as the fallback -------------------------------------------------------


def cloud_site(tmp: Path, container: str, server: ScoringServer, signer: Signer, url: str) -> str:
    return site_text(
        tmp, container, package=server.package, trust=signer.trust_dir, scoring_url=url
    )


def block_worker(rig: Rig) -> threading.Event:
    gate = threading.Event()
    assert rig.core.host is not None
    rig.core.host._worker.submit(gate.wait, 10)
    return gate


def test_the_cloud_endpoint_answers_when_the_local_agent_cannot(
    rigs: Callable[..., Rig],
    azurite: Azurite,
    container_name: str,
    scoring_server: ScoringServer,
    signer: Signer,
    tmp_path: Path,
) -> None:
    site = cloud_site(tmp_path, container_name, scoring_server, signer, scoring_server.url)
    rig = rigs(site, tmp_path, signer.trust)
    assert rig.core.status().endpoint is ConnectionState.CONNECTING
    rig.step()  # a local answer tells what the same policy proposes for these inputs
    local = rig.of(StepTransition)[-1].actions["active"]
    # The PLC's setpoints sit just off that action, inside the agent's largest move.
    rig.set_plc({P: local[P] - 0.5, F: local[F] - 2.0})
    gate = block_worker(rig)
    try:
        rig.step()  # the local inference misses its deadline: the cloud takes over
        wait_for(
            "a cloud recommendation",
            lambda: (r := rig.core.status().last_recommendation) is not None and r.cloud_sourced,
        )
    finally:
        gate.set()
    status = rig.core.status()
    rec = status.last_recommendation
    assert rec is not None and status.fallback is FallbackState.CLOUD
    assert rec.agent.version == scoring_server.version
    proposed = {sp.tag: sp.value for sp in rec.setpoints}
    assert proposed == pytest.approx({P: local[P], F: local[F]}, abs=1e-4)
    step = [e for e in rig.ledger("agent_step") if "cloud_action" in e.data][-1]
    assert step.data["outcome"] == "recommended" and step.origin.name == scoring_server.version
    assert rig.of(StepTransition)[-1].cloud_sourced
    assert "cloud" in rig.of(StepTransition)[-1].actions
    fallback = [(e.data["event"], e.data["new"]) for e in rig.ledger("fallback")]
    assert fallback == [("deadline_miss", "cloud")]  # no previous agent: straight to the cloud
    assert rig.connections("endpoint") == [ConnectionState.CONNECTED]
    assert status.endpoint is ConnectionState.CONNECTED

    agent = rig.core.agent
    assert agent is not None
    session = rig.core.login("sup", PASSWORD)
    verdict = agent.reject(rec.rec_id, RejectReason.DISAGREE, "cloud check", session).result(10)
    assert verdict.accepted, verdict.reason
    rig.core.stop()
    lines = blob_lines(azurite.connection_string, container_name)
    decisions = [line["data"]["decision"] for line in lines if line["kind"] == "decision"]
    assert [d["kind"] for d in decisions if d["rec_id"] == rec.rec_id] == ["reject"]
    assert {d["kind"] for d in decisions} <= {"reject", "expire"}  # earlier ones superseded
    alarms = [line["data"]["alarm"] for line in lines if line["kind"] == "alarm"]
    assert ap.AGENT_FALLBACK in {a["alarm_id"] for a in alarms}  # raised on the way to the cloud
    cloud_steps = [line["data"] for line in lines if line["kind"] == "transition"][-1]
    assert cloud_steps["cloud_sourced"] and cloud_steps["actions"]["cloud"] == pytest.approx(local)


@pytest.fixture
def stalled_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung endpoint)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/score"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def test_a_stalled_endpoint_leads_to_safe_hold_within_the_budget(
    rigs: Callable[..., Rig],
    container_name: str,
    scoring_server: ScoringServer,
    signer: Signer,
    stalled_endpoint: str,
    tmp_path: Path,
) -> None:
    site = cloud_site(tmp_path, container_name, scoring_server, signer, stalled_endpoint)
    rig = rigs(site, tmp_path, signer.trust)
    gate = block_worker(rig)
    try:
        rig.step()
        wait_for("safe hold", lambda: rig.core.status().fallback is FallbackState.SAFE_HOLD)
    finally:
        gate.set()
    events = [e.data["event"] for e in rig.ledger("fallback")]
    assert events == ["deadline_miss", "cloud_timeout"]
    hold = rig.ledger("fallback")[-1]
    assert "within 1 s" in hold.summary and hold.data["new"] == "safe_hold"
    assert rig.core.status().last_recommendation is None
    wait_for("endpoint down", lambda: rig.core.status().endpoint is ConnectionState.DISCONNECTED)
    assert rig.connections("endpoint") == [ConnectionState.DISCONNECTED]


# --- (e) the cloud side never holds the core back; headless runs it -------------------------------


def test_a_missing_storage_secret_leaves_the_core_running_without_the_cloud(
    rigs: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    container_name: str,
    signer: Signer,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv(STORAGE_ENV)
    core = ControlCore(
        parse_site(shipped_site(tmp_path, container_name, signer)),
        CoreOptions(
            data_dir=tmp_path / "data",
            driver=FakeDriver(RO_CATALOG.tags),
            trust_store=both_keys(signer),
            trend_capacity=100,
            scrypt=ScryptParams(n=2**4, r=1, p=1),
            initial_user=("sup", PASSWORD),
        ),
    )
    seen: list[ConnectionChanged] = []
    core.bus.subscribe(ConnectionChanged, seen.append)
    core.start()
    try:
        wait_for("advisory", lambda: core.status().mode is Mode.ADVISORY)
        assert core.cloud_link is None and core.status().cloud is None
        [cloud] = [e for e in seen if e.system == "cloud"]
        assert cloud.state is ConnectionState.CONFIG_ERROR and STORAGE_ENV in cloud.detail
    finally:
        core.stop()


@pytest.mark.slow  # a headless process start-up and stop
def test_headless_with_a_cloud_site_ships_its_audit_trail(
    azurite: Azurite, container_name: str, signer: Signer, tmp_path: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(shipped_site(tmp_path, container_name, signer))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        STORAGE_ENV: azurite.connection_string,
        "INTELWATT_USER": "sup",
        "INTELWATT_PASSWORD": PASSWORD,
        "INTELWATT_LOG_DIR": str(tmp_path / "logs"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.controllers.headless", "--site", str(site),
         "--status-port", str(port), "--status-period", "1", "--data-dir", str(tmp_path / "data")],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        status: dict[str, Any] = {}

        def cloud_connected() -> bool:
            nonlocal status
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as r:
                    status = json.loads(r.read())
            except OSError:
                return False
            return bool(status.get("cloud") == "connected")

        wait_for("headless cloud link", cloud_connected, 30)
        assert status["plc"] != "connected"  # no PLC at all: the cloud side runs regardless
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    kinds = [
        line["data"]["event"]["kind"]
        for line in blob_lines(azurite.connection_string, container_name)
        if line["kind"] == "audit"
    ]
    assert kinds[0] == "core_start" and kinds[-1] == "core_stop"  # the final drain on stop


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (None, ConnectionState.CONNECTED),
        (ScoringAuthError("key refused", status=401), ConnectionState.AUTH_FAILED),
        (ScoringNotFound("no deployment", status=404), ConnectionState.CONFIG_ERROR),
        (ScoringTimeout("no answer within 1 s"), ConnectionState.DISCONNECTED),
        (ScoringUnreachable("connection refused"), ConnectionState.DISCONNECTED),
        (ScoringCircuitOpen("3 failures"), ConnectionState.DISCONNECTED),
        (ScoringModelError("scoring script failed", status=424), ConnectionState.CONNECTED),
        (ScoringVersionMismatch("other version", status=200), ConnectionState.CONNECTED),
    ],
)
def test_endpoint_state_tells_unreachable_from_answered_but_refused(
    error: Exception | None, state: ConnectionState
) -> None:
    assert endpoint_state(error) is state
