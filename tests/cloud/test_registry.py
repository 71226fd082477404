"""The Blob model registry against Azurite: versions, aliases, conflicts, transport checks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.storage.blob.aio import ContainerClient

from app.agent_runtime.package import verify_package
from app.cloud.errors import (
    AliasConflict,
    AliasNotSet,
    PackageLayoutError,
    TransportHashMismatch,
    VersionExists,
    VersionNotFound,
)
from app.cloud.registry import Registry, SyncRegistry, aliases_blob_name, version_prefix
from app.cloud.storage import open_container
from tests.cloud.conftest import Azurite, Signer


@pytest.fixture
async def container(azurite: Azurite, container_name: str) -> AsyncIterator[ContainerClient]:
    client = open_container(azurite.connection_string, container_name)
    await client.create_container()
    try:
        yield client
    finally:
        await client.delete_container()
        await client.close()


@pytest.fixture
def registry(container: ContainerClient) -> Registry:
    return Registry(container, "ro", writer="test")


async def test_push_lists_the_version_with_hash_metadata(
    registry: Registry, container: ContainerClient, signer: Signer, tmp_path: Path
) -> None:
    pkg = signer.package(tmp_path / "p", "ro-2026.11.1")
    info = await registry.push(pkg, alias="candidate")

    versions = await registry.list_versions()
    assert [v.version for v in versions] == ["ro-2026.11.1"]
    assert set(versions[0].files) == {
        "manifest.json",
        "manifest.sig",
        "policy.onnx",
        "ensemble/member_00.onnx",
        "report.md",
    }
    assert versions[0].manifest_sha256 == info.manifest_sha256
    props = await container.get_blob_client(
        version_prefix("ro", "ro-2026.11.1") + "policy.onnx"
    ).get_blob_properties()
    manifest = json.loads((pkg / "manifest.json").read_bytes())
    assert props.metadata["sha256"] == manifest["files"]["policy.onnx"]
    assert (await registry.read_aliases()).candidate == "ro-2026.11.1"


async def test_versions_are_immutable_but_a_repush_of_the_same_bytes_is_harmless(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    await registry.push(signer.package(tmp_path / "a", "ro-1"))
    await registry.push(tmp_path / "a")  # interrupted push resumed / repeated: accepted
    other = signer.package(tmp_path / "b", "ro-1", seed=5)  # same name, other weights
    with pytest.raises(VersionExists, match="immutable"):
        await registry.push(other)


async def test_push_refuses_an_inconsistent_folder(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    pkg = signer.package(tmp_path / "p", "ro-2")
    (pkg / "stray.txt").write_text("not listed")
    with pytest.raises(PackageLayoutError, match=r"stray\.txt"):
        await registry.push(pkg)
    (pkg / "stray.txt").unlink()
    (pkg / "report.md").write_text("edited after signing")
    with pytest.raises(PackageLayoutError, match=r"report\.md"):
        await registry.push(pkg)


async def test_pull_round_trips_a_verifiable_package(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    await registry.push(signer.package(tmp_path / "p", "ro-3"))
    seen = []
    out = await registry.pull("ro-3", tmp_path / "out", progress=seen.append)
    verified = verify_package(out, signer.trust)
    assert verified.manifest.version == "ro-3"
    assert seen[-1].done_bytes == seen[-1].total_bytes > 0
    assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)
    with pytest.raises(VersionNotFound):
        await registry.pull("ro-404", tmp_path / "none")
    assert not (tmp_path / "none").exists()


async def test_pull_detects_a_blob_changed_in_the_container(
    registry: Registry, container: ContainerClient, signer: Signer, tmp_path: Path
) -> None:
    await registry.push(signer.package(tmp_path / "p", "ro-4"))
    blob = container.get_blob_client(version_prefix("ro", "ro-4") + "policy.onnx")
    await blob.upload_blob(b"not the signed graph", overwrite=True)
    with pytest.raises(TransportHashMismatch, match=r"policy\.onnx"):
        await registry.pull("ro-4", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["p"]  # no partial folder left


async def test_promote_and_rollback_move_the_aliases(
    registry: Registry, signer: Signer, tmp_path: Path
) -> None:
    for i in (1, 2, 3):
        await registry.push(signer.package(tmp_path / f"p{i}", f"ro-{i}"))
    await registry.set_alias("candidate", "ro-1")
    a = await registry.promote()
    assert (a.production, a.previous, a.candidate) == ("ro-1", None, None)
    await registry.set_alias("candidate", "ro-2")
    a = await registry.promote()
    assert (a.production, a.previous, a.candidate) == ("ro-2", "ro-1", None)
    a = await registry.promote("ro-3")
    assert (a.production, a.previous) == ("ro-3", "ro-2")
    a = await registry.rollback()
    assert (a.production, a.previous) == ("ro-2", "ro-3")
    a = await registry.rollback()
    assert (a.production, a.previous) == ("ro-3", "ro-2")
    with pytest.raises(AliasNotSet):
        await registry.promote()  # no candidate left
    with pytest.raises(VersionNotFound):
        await registry.promote("ro-9")


async def test_two_writers_with_the_same_etag_conflict(
    registry: Registry, container: ContainerClient, signer: Signer, tmp_path: Path
) -> None:
    for i in (1, 2):
        await registry.push(signer.package(tmp_path / f"p{i}", f"ro-{i}"))
    first = await registry.set_alias("production", "ro-1")
    other = Registry(container, "ro", writer="other-console")
    seen_by_a = await registry.read_aliases()
    seen_by_b = await other.read_aliases()
    assert seen_by_a.etag == seen_by_b.etag == first.etag

    await registry.write_aliases(seen_by_a.with_alias("candidate", "ro-2"))
    with pytest.raises(AliasConflict):
        await other.write_aliases(seen_by_b.with_alias("previous", "ro-2"))
    final = await registry.read_aliases()
    assert (final.production, final.candidate, final.previous) == ("ro-1", "ro-2", None)


async def test_creating_the_alias_document_twice_conflicts(
    registry: Registry, container: ContainerClient
) -> None:
    fresh = await registry.read_aliases()
    assert fresh.etag is None
    other = Registry(container, "ro")
    await registry.write_aliases(fresh)
    with pytest.raises(AliasConflict):
        await other.write_aliases(fresh)


async def test_concurrent_read_modify_writes_lose_nothing(
    registry: Registry, container: ContainerClient, signer: Signer, tmp_path: Path
) -> None:
    for i in (1, 2):
        await registry.push(signer.package(tmp_path / f"p{i}", f"ro-{i}"))
    writers = [Registry(container, "ro", writer=f"w{i}") for i in range(2)]
    await asyncio.gather(
        writers[0].set_alias("production", "ro-1"),
        writers[1].set_alias("candidate", "ro-2"),
    )
    final = await registry.read_aliases()
    assert (final.production, final.candidate) == ("ro-1", "ro-2")
    raw = await container.get_blob_client(aliases_blob_name("ro")).download_blob()
    assert json.loads(await raw.readall())["schema"] == 1


def test_sync_facade_runs_on_its_own_cloud_thread(
    azurite: Azurite, container_name: str, signer: Signer, tmp_path: Path
) -> None:
    with SyncRegistry(azurite.connection_string, container_name, "ro") as reg:
        reg.ensure_container()
        reg.push(signer.package(tmp_path / "p", "ro-sync"), alias="candidate")
        assert [v.version for v in reg.list_versions()] == ["ro-sync"]
        assert reg.promote().production == "ro-sync"
        out = reg.pull("ro-sync", tmp_path / "out")
    assert verify_package(out, signer.trust).manifest.version == "ro-sync"
