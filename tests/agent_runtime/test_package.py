"""Writing signed packages and every reason to refuse one."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app import __version__
from app.agent_runtime.errors import (
    AppVersionIncompatible,
    BadSignature,
    CorruptArchive,
    HashMismatch,
    ManifestInvalid,
    MissingFile,
    MissingSignature,
    PackageNotFound,
    PackageRefused,
    PolicyGraphInvalid,
    SpecIncompatible,
    UnknownKey,
    UnlistedFile,
    UnsafeArchive,
)
from app.agent_runtime.keys import TrustStore, fingerprint, sign
from app.agent_runtime.manifest import TagSpec, canonical_json
from app.agent_runtime.onnx_policy import OnnxPolicy
from app.agent_runtime.package import (
    ArchiveLimits,
    check_spec,
    verify_package,
    write_package,
    zip_package,
)
from app.domain import TagRole
from app.plant.catalog import RO_CATALOG, ProcessCatalog, TagDef
from tests.agent_runtime.conftest import (
    Graphs,
    PackageFactory,
    action_spec,
    manifest_fields,
    obs_spec,
    typical_obs,
    weights,
)
from tests.agent_runtime.onnx_graphs import mlp_onnx, reference_action

FILES = (
    "manifest.json",
    "manifest.sig",
    "policy.onnx",
    "ensemble/member_00.onnx",
    "ensemble/member_01.onnx",
    "report.md",
)


def _zip_entries(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for info, data in entries:
                z.writestr(info, data)
    return path


def _folder_entries(folder: Path) -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    return [
        (p.relative_to(folder).as_posix(), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


# --- valid packages ------------------------------------------------------------------------------


def test_valid_folder_loads(
    make_package: PackageFactory,
    trust_store: TrustStore,
    graphs: Graphs,
    signing_key: Ed25519PrivateKey,
) -> None:
    folder = make_package()
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == (
        sorted(FILES)
    )
    pkg = verify_package(folder, trust_store)
    raw = (folder / "manifest.json").read_bytes()
    assert pkg.version.sha256 == hashlib.sha256(raw).hexdigest()
    assert pkg.version.signer == fingerprint(signing_key.public_key())
    assert (pkg.version.process, pkg.version.version, pkg.version.parent) == (
        "ro",
        "ro-test.1",
        "ro-test.0",
    )
    assert pkg.policy == graphs.main_bytes
    assert list(pkg.ensemble) == ["ensemble/member_00.onnx", "ensemble/member_01.onnx"]
    assert pkg.files["report.md"].startswith(b"# Evaluation")
    assert pkg.manifest.metrics["hard_violations"] == 0
    policy = OnnxPolicy.from_bytes(pkg.policy, pkg.manifest)
    obs = typical_obs()
    np.testing.assert_allclose(policy.act(obs), reference_action(graphs.main, obs), atol=1e-4)


def test_valid_zip_loads_and_matches_the_folder(
    make_package: PackageFactory, trust_store: TrustStore, tmp_path: Path
) -> None:
    folder = make_package()
    archive = zip_package(folder, tmp_path / "agent.zip")
    from_zip = verify_package(archive, trust_store)
    from_folder = verify_package(folder, trust_store)
    assert from_zip.version == from_folder.version
    assert from_zip.files == from_folder.files
    assert from_zip.source == archive
    with pytest.raises(FileExistsError):
        zip_package(folder, archive)


def test_zip_is_deterministic(make_package: PackageFactory, tmp_path: Path) -> None:
    folder = make_package()
    a = zip_package(folder, tmp_path / "a.zip").read_bytes()
    b = zip_package(folder, tmp_path / "b.zip").read_bytes()
    assert a == b


def test_write_refuses_a_non_empty_folder(
    make_package: PackageFactory, graphs: Graphs, signing_key: Ed25519PrivateKey
) -> None:
    folder = make_package()
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_package(folder, manifest_fields(), graphs.main_bytes, signing_key)


def test_write_checks_the_graphs_and_extra_paths(
    tmp_path: Path, graphs: Graphs, signing_key: Ed25519PrivateKey
) -> None:
    wide = mlp_onnx(weights(3, n_obs=len(obs_spec()) + 1))
    with pytest.raises(PolicyGraphInvalid, match=r"ensemble/member_00.onnx"):
        write_package(
            tmp_path / "a", manifest_fields(), graphs.main_bytes, signing_key, ensemble=[wide]
        )
    with pytest.raises(ManifestInvalid, match="pickles"):
        write_package(
            tmp_path / "b",
            manifest_fields(),
            graphs.main_bytes,
            signing_key,
            extra_files={"vecnormalize.pkl": b"\x80\x04"},
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# --- tampering and signatures --------------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize("victim", FILES)
def test_tampering_any_file_is_refused(
    make_package: PackageFactory,
    trust_store: TrustStore,
    tmp_path: Path,
    victim: str,
    as_zip: bool,
) -> None:
    folder = make_package()
    target = folder / victim
    data = bytearray(target.read_bytes())
    # Flip one bit in the middle: the file stays well-formed enough to get past parsing.
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    path = _zip_entries(tmp_path / "t.zip", _folder_entries(folder)) if as_zip else folder
    # A flipped bit in manifest.sig lands in the signer's fingerprint or in the signature itself.
    expected: tuple[type[PackageRefused], ...] = {
        "manifest.json": (BadSignature,),
        "manifest.sig": (BadSignature, UnknownKey),
    }.get(victim, (HashMismatch,))
    with pytest.raises(expected) as exc:
        verify_package(path, trust_store)
    if expected == (HashMismatch,):
        assert exc.value.culprit == victim
        assert victim in str(exc.value)


def test_missing_signature(make_package: PackageFactory, trust_store: TrustStore) -> None:
    folder = make_package()
    (folder / "manifest.sig").unlink()
    with pytest.raises(MissingSignature, match=r"manifest.sig"):
        verify_package(folder, trust_store)
    (folder / "manifest.sig").write_bytes(b"")
    with pytest.raises(MissingSignature):
        verify_package(folder, trust_store)


def test_untrusted_signer(make_package: PackageFactory, trust_store: TrustStore) -> None:
    stranger = Ed25519PrivateKey.generate()
    folder = make_package(key=stranger)
    with pytest.raises(UnknownKey) as exc:
        verify_package(folder, trust_store)
    assert exc.value.culprit == fingerprint(stranger.public_key())
    assert exc.value.culprit in str(exc.value)


def test_signature_is_checked_before_anything_else(
    make_package: PackageFactory, trust_store: TrustStore
) -> None:
    """An unsigned package with a wrong hash and an unknown tag is refused for its signature."""
    folder = make_package(
        actions=(TagSpec(tag="nope_bar", unit="bar", low=0, high=1),), check_graphs=False
    )
    (folder / "policy.onnx").write_bytes(b"junk")
    (folder / "manifest.sig").unlink()
    with pytest.raises(MissingSignature):
        verify_package(folder, trust_store)


def _resign(folder: Path, key: Ed25519PrivateKey, edit: dict[str, object]) -> None:
    """Change the manifest and sign it again with a trusted key (a buggy but honest signer)."""
    doc = json.loads((folder / "manifest.json").read_bytes())
    doc.update(edit)
    raw = canonical_json(doc)
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.sig").write_bytes(sign(raw, key))


def test_wrong_hash_in_a_signed_manifest(
    make_package: PackageFactory, trust_store: TrustStore, signing_key: Ed25519PrivateKey
) -> None:
    folder = make_package()
    files = json.loads((folder / "manifest.json").read_bytes())["files"]
    files["report.md"] = "0" * 64
    _resign(folder, signing_key, {"files": files})
    with pytest.raises(HashMismatch, match=r"report.md"):
        verify_package(folder, trust_store)


def test_unknown_extra_file(make_package: PackageFactory, trust_store: TrustStore) -> None:
    folder = make_package()
    (folder / "ensemble" / "member_99.onnx").write_bytes(b"smuggled")
    with pytest.raises(UnlistedFile) as exc:
        verify_package(folder, trust_store)
    assert exc.value.culprit == "ensemble/member_99.onnx"


def test_missing_policy(make_package: PackageFactory, trust_store: TrustStore) -> None:
    folder = make_package()
    (folder / "policy.onnx").unlink()
    with pytest.raises(MissingFile) as exc:
        verify_package(folder, trust_store)
    assert exc.value.culprit == "policy.onnx"


def test_missing_manifest_and_missing_path(
    make_package: PackageFactory, trust_store: TrustStore, tmp_path: Path
) -> None:
    folder = make_package()
    (folder / "manifest.json").unlink()
    with pytest.raises(ManifestInvalid, match="missing"):
        verify_package(folder, trust_store)
    with pytest.raises(PackageNotFound):
        verify_package(tmp_path / "nowhere", trust_store)


def test_signed_but_schema_invalid_manifest(
    make_package: PackageFactory, trust_store: TrustStore, signing_key: Ed25519PrivateKey
) -> None:
    folder = make_package()
    _resign(folder, signing_key, {"schema_version": 99})
    with pytest.raises(ManifestInvalid, match="schema_version 99 is not supported"):
        verify_package(folder, trust_store)


# --- archives ------------------------------------------------------------------------------------


def test_truncated_and_corrupt_zips(
    make_package: PackageFactory, trust_store: TrustStore, tmp_path: Path
) -> None:
    good = zip_package(make_package(), tmp_path / "good.zip").read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptArchive, match=r"truncated.zip"):
        verify_package(truncated, trust_store)

    not_zip = tmp_path / "agent.zip"
    not_zip.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(CorruptArchive):
        verify_package(not_zip, trust_store)

    # Corrupt compressed data of the first member, keeping the directory intact.
    with zipfile.ZipFile(tmp_path / "good.zip") as z:
        first = z.infolist()[0]
    damaged = bytearray(good)
    start = first.header_offset + 30 + len(first.filename.encode())
    for i in range(start, start + min(first.compress_size, 16)):
        damaged[i] ^= 0xFF
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(bytes(damaged))
    with pytest.raises(CorruptArchive) as exc:
        verify_package(corrupt, trust_store)
    assert exc.value.culprit == first.filename


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("evil", "message"),
    [
        (("../evil.txt", b"x"), "'..'"),
        (("ensemble/../../evil.txt", b"x"), "'..'"),
        (("/etc/cron.d/evil", b"x"), "absolute"),
        (("C:/evil.txt", b"x"), "absolute"),
        (("ensemble\\evil.onnx", b"x"), "backslash"),
        ((_symlink_info("report2.md"), b"/etc/passwd"), "symbolic link"),
        (("policy.onnx", b"second copy"), "more than once"),
        (("POLICY.onnx", b"case twin"), "more than once"),
        (("a/b/c/d/e.txt", b"x"), "deeper"),
    ],
)
def test_unsafe_zip_members(
    make_package: PackageFactory,
    trust_store: TrustStore,
    tmp_path: Path,
    evil: tuple[zipfile.ZipInfo | str, bytes],
    message: str,
) -> None:
    entries = [*_folder_entries(make_package()), evil]
    path = _zip_entries(tmp_path / "evil.zip", entries)
    with pytest.raises(UnsafeArchive, match=message):
        verify_package(path, trust_store)


def test_oversized_members_and_zip_bomb(
    make_package: PackageFactory, trust_store: TrustStore, tmp_path: Path
) -> None:
    folder = make_package()
    bomb = _zip_entries(
        tmp_path / "bomb.zip", [*_folder_entries(folder), ("report2.md", b"\0" * 4_000_000)]
    )
    with pytest.raises(UnsafeArchive, match="zip bomb"):
        verify_package(bomb, trust_store)
    small = ArchiveLimits(max_member_bytes=1000)
    with pytest.raises(UnsafeArchive, match="more than 1000"):
        verify_package(folder, trust_store, limits=small)
    archive = zip_package(folder, tmp_path / "a.zip")
    with pytest.raises(UnsafeArchive, match="more than 1000"):
        verify_package(archive, trust_store, limits=small)
    with pytest.raises(UnsafeArchive, match="3 allowed"):
        verify_package(archive, trust_store, limits=ArchiveLimits(max_members=3))
    with pytest.raises(UnsafeArchive, match="exceeds 2000 bytes"):
        verify_package(archive, trust_store, limits=ArchiveLimits(max_total_bytes=2000))


def test_symlink_in_a_folder_is_refused(
    make_package: PackageFactory, trust_store: TrustStore, tmp_path: Path
) -> None:
    folder = make_package()
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the package")
    os.symlink(secret, folder / "report2.md")
    with pytest.raises(UnsafeArchive, match="symbolic link") as exc:
        verify_package(folder, trust_store)
    assert exc.value.culprit == "report2.md"


# --- spec and version ----------------------------------------------------------------------------


def _swap_obs(which: str, **changes: object) -> tuple[TagSpec, ...]:
    return tuple(s.model_copy(update=changes) if s.tag == which else s for s in obs_spec())


@pytest.mark.parametrize(
    ("fields", "culprit", "message"),
    [
        (
            {"observations": _swap_obs("feed_ph", tag="feed_alkalinity_mgl")},
            "feed_alkalinity_mgl",
            "not defined for process 'ro'",
        ),
        (
            {"observations": _swap_obs("feed_temperature_c", unit="°F")},
            "feed_temperature_c",
            "unit '°F' in the package, '°C' in the catalogue",
        ),
        (
            {"observations": _swap_obs("feed_pressure_bar", high=60.0)},
            "feed_pressure_bar",
            r"range \[0, 60\] is outside the tag's range \[0, 45\]",
        ),
        (
            {
                "actions": (
                    *action_spec()[:1],
                    TagSpec(tag="feed_flow_sp_m3h", unit="m3/h", low=25, high=75),
                )
            },
            "feed_flow_sp_m3h",
            "outside what the PLC accepts",
        ),
        (
            {"actions": (TagSpec(tag="permeate_flow_m3h", unit="m3/h", low=0, high=60),)},
            "permeate_flow_m3h",
            "action on a observation tag",
        ),
        (
            {"actions": (TagSpec(tag="console_heartbeat", unit="count", low=0, high=9),)},
            "console_heartbeat",
            "action on a heartbeat tag",
        ),
        ({"process": "desal9"}, "process", "unknown process 'desal9'"),
    ],
)
def test_incompatible_spec(
    make_package: PackageFactory,
    trust_store: TrustStore,
    graphs: Graphs,
    fields: dict[str, object],
    culprit: str,
    message: str,
) -> None:
    actions = fields.get("actions", action_spec())
    assert isinstance(actions, tuple)
    policy = mlp_onnx(weights(5, n_act=len(actions)))
    folder = make_package(policy=policy, ensemble=(), **fields)
    with pytest.raises(SpecIncompatible, match=message) as exc:
        verify_package(folder, trust_store)
    assert exc.value.culprit == culprit


def test_site_catalogue_narrower_than_the_package(
    make_package: PackageFactory, trust_store: TrustStore
) -> None:
    folder = make_package()
    pkg = verify_package(folder, trust_store)
    narrowed = ProcessCatalog(
        process="ro",
        title="narrow site",
        agent_period_s=900.0,
        tags=tuple(
            TagDef(
                t.name, t.unit, t.low, t.high, t.role, t.description, plc_low=10.0, plc_high=30.0
            )
            if t.name == "feed_pressure_sp_bar"
            else t
            for t in RO_CATALOG.tags
        ),
    )
    with pytest.raises(SpecIncompatible, match=r"PLC accepts \[10, 30\]"):
        verify_package(folder, trust_store, catalog=narrowed)
    check_spec(pkg.manifest, RO_CATALOG)  # the shipped catalogue accepts it
    assert RO_CATALOG.tag("feed_pressure_sp_bar").role is TagRole.SETPOINT


@pytest.mark.parametrize(
    ("min_app", "max_app", "app_version", "ok"),
    [
        ("0.1", None, "0.1.0", True),
        ("0.1", "0.1.0", "0.1.0", True),
        ("0.2", None, "0.1.9", False),
        ("0.1", "0.1.5", "0.1.6", False),
        ("0.1", "0.2", "0.2.0.dev3", True),
    ],
)
def test_app_version_range(
    make_package: PackageFactory,
    trust_store: TrustStore,
    min_app: str,
    max_app: str | None,
    app_version: str,
    ok: bool,
) -> None:
    folder = make_package(min_app=min_app, max_app=max_app)
    if ok:
        verify_package(folder, trust_store, app_version=app_version)
    else:
        with pytest.raises(AppVersionIncompatible, match=app_version):
            verify_package(folder, trust_store, app_version=app_version)


def test_default_app_version_is_this_console(
    make_package: PackageFactory, trust_store: TrustStore
) -> None:
    folder = make_package(min_app="999.0")
    with pytest.raises(AppVersionIncompatible, match=f"this is {__version__}"):
        verify_package(folder, trust_store)
