"""CloudSync against Azurite: verified candidates reach the callback, tampered ones never do."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cloud.outbox import Outbox, OutboxLimits, RecordKind
from app.cloud.registry import Registry, version_prefix
from app.cloud.storage import open_container
from app.controllers.sync import (
    CandidateDownloadProgressed,
    CandidateRefused,
    CandidateStaged,
    CloudSync,
)
from app.domain import AuditEvent, Decision, DecisionKind, Origin, Role
from tests.cloud.conftest import Azurite, Signer


@pytest.fixture
async def registry(azurite: Azurite, container_name: str) -> AsyncIterator[Registry]:
    client = open_container(azurite.connection_string, container_name)
    await client.create_container()
    try:
        yield Registry(client, "ro")
    finally:
        await client.close()


class Harness:
    def __init__(self, registry: Registry, signer: Signer, root: Path) -> None:
        self.handed: list[tuple[Path, str]] = []
        self.events: list[object] = []
        self.staging = root / "staging"
        self.sync = CloudSync(
            registry,
            staging_dir=self.staging,
            trust_store=signer.trust,
            on_candidate=lambda p, v: self.handed.append((p, v)),
            on_event=self.events.append,
            progress_step_bytes=1,
        )

    def refusals(self) -> list[CandidateRefused]:
        return [e for e in self.events if isinstance(e, CandidateRefused)]

    def leftovers(self) -> list[Path]:
        return sorted(p for p in self.staging.rglob("*") if p.is_file())


async def test_a_verified_candidate_is_staged_and_handed_on_once(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    h = Harness(registry, signer, tmp_path)
    assert await h.sync.check_once() is None  # no candidate yet
    await registry.push(signer.package(tmp_path / "p", "ro-5"), alias="candidate")
    path = await h.sync.check_once()
    assert path == h.staging / "ro" / "ro-5" and h.handed == [(path, "ro-5")]
    assert (path / "policy.onnx").is_file() and not list((h.staging / ".incoming").iterdir())
    progress = [e for e in h.events if isinstance(e, CandidateDownloadProgressed)]
    assert progress and progress[-1].done_bytes == progress[-1].total_bytes
    staged = [e for e in h.events if isinstance(e, CandidateStaged)]
    assert staged[0].version.version == "ro-5" and staged[0].version.signer is not None
    assert await h.sync.check_once() is None and len(h.handed) == 1


async def test_a_replaced_policy_blob_is_refused(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    await registry.push(signer.package(tmp_path / "p", "ro-6"), alias="candidate")
    blob = registry._container.get_blob_client(version_prefix("ro", "ro-6") + "policy.onnx")
    await blob.upload_blob(b"\x08\x07tampered", overwrite=True)
    h = Harness(registry, signer, tmp_path)
    assert await h.sync.check_once() is None
    assert h.handed == [] and h.leftovers() == []
    [refusal] = h.refusals()
    assert (refusal.version, refusal.reason, refusal.culprit) == (
        "ro-6",
        "transport_hash_mismatch",
        "policy.onnx",
    )
    assert await h.sync.check_once() is None and len(h.refusals()) == 1  # not fetched again


async def test_a_rewritten_manifest_fails_the_signature(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    await registry.push(signer.package(tmp_path / "p", "ro-7"), alias="candidate")
    name = version_prefix("ro", "ro-7") + "manifest.json"
    blob = registry._container.get_blob_client(name)
    doc = json.loads(await (await blob.download_blob()).readall())
    doc["metrics"] = {"cost_per_m3_eur": 0.01}  # a forged claim, consistent transport hash
    forged = json.dumps(doc).encode()
    await blob.upload_blob(
        forged, overwrite=True, metadata={"sha256": hashlib.sha256(forged).hexdigest()}
    )
    h = Harness(registry, signer, tmp_path)
    assert await h.sync.check_once() is None
    assert h.handed == [] and h.leftovers() == []
    assert [(r.reason, r.culprit) for r in h.refusals()] == [("bad_signature", "manifest.sig")]


async def test_a_package_signed_by_an_unknown_key_is_refused(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    stranger = Signer(Ed25519PrivateKey.generate(), signer.trust, signer.trust_dir)
    await registry.push(stranger.package(tmp_path / "p", "ro-8"), alias="candidate")
    h = Harness(registry, signer, tmp_path)
    assert await h.sync.check_once() is None
    assert h.handed == [] and [r.reason for r in h.refusals()] == ["unknown_key"]


async def test_enqueue_helpers_write_typed_records(
    registry: Registry, tmp_path: Path, signer: Signer
) -> None:
    outbox = Outbox(tmp_path / "o.db", OutboxLimits(max_bytes=1 << 20))
    sync = CloudSync(
        registry,
        staging_dir=tmp_path,
        trust_store=signer.trust,
        on_candidate=lambda p, v: None,
        outbox=outbox,
    )
    op = Origin.operator("ana", Role.OPERATOR)
    assert sync.enqueue_transition(
        observation={"feed_pressure_bar": 12.5},
        actions={"active": {"feed_pressure_sp_bar": 13.0}},
        applied={"feed_pressure_sp_bar": 12.9},
        reward=-0.3,
    ).accepted
    assert sync.enqueue_decision(Decision("rec-1", DecisionKind.APPROVE, op)).accepted
    assert sync.enqueue_audit(AuditEvent("login", op, "ana logged in")).accepted
    rows = outbox.peek(10, 1 << 20)
    assert [r.kind for r in rows] == [RecordKind.TRANSITION, RecordKind.DECISION, RecordKind.AUDIT]
    decision = json.loads(rows[1].payload)["decision"]
    assert decision["kind"] == "approve" and decision["origin"]["role"] == 1
    outbox.close()
