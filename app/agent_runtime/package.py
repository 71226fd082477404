"""Agent packages: write and sign them, and verify them before anything is loaded.

A package is a folder, or the same files in a zip (conventions.md, "Agent package")::

    manifest.json      canonical JSON (see app.agent_runtime.manifest), sha256 of every other file
    manifest.sig       Ed25519 signature over manifest.json (see app.agent_runtime.keys)
    policy.onnx        the deterministic policy
    ensemble/*.onnx    optional members for the uncertainty estimate
    report.md, ...     optional documents, listed and hashed like every other file

Verification order: read the files (a zip is read into memory, never extracted) → signature →
manifest schema → every listed file present with its sha256 → no unlisted file → spec against the
process catalogue → app version range. Every refusal is a :class:`PackageRefused` subclass.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app import __version__
from app.agent_runtime.errors import (
    AppVersionIncompatible,
    CorruptArchive,
    HashMismatch,
    ManifestInvalid,
    MissingFile,
    PackageNotFound,
    PackageRefused,
    SpecIncompatible,
    UnlistedFile,
    UnsafeArchive,
)
from app.agent_runtime.keys import SIGNATURE_FILE, TrustStore, sign, verify
from app.agent_runtime.manifest import (
    ENSEMBLE_DIR,
    MANIFEST_FILE,
    POLICY_FILE,
    Manifest,
    ManifestFields,
    TagSpec,
    app_version_tuple,
    build_manifest,
    check_package_path,
    manifest_bytes,
    parse_manifest,
)
from app.domain import AgentVersion, TagRole
from app.plant.catalog import ProcessCatalog
from app.plant.catalog import catalog as catalog_of


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds on what a package may contain (zip-bomb and junk guard).

    Attributes:
        max_members: Most files (and folders) a package may hold.
        max_member_bytes: Largest single file, uncompressed.
        max_total_bytes: Largest sum of all files, uncompressed.
        max_ratio: Largest uncompressed/compressed size ratio of a zip member…
        ratio_min_bytes: …larger than this (small text files legitimately compress very well).
        max_depth: Deepest folder nesting.
    """

    max_members: int = 256
    max_member_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1024 * 1024
    max_depth: int = 4


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True, slots=True)
class VerifiedPackage:
    """A package that passed every check; nothing in it has been executed.

    Attributes:
        manifest: The parsed manifest.
        version: Identity of the package (``sha256`` is the hash of ``manifest.json``).
        policy: Bytes of ``policy.onnx``.
        ensemble: Bytes of each ``ensemble/*.onnx`` member, by path, sorted.
        source: Folder or zip it was read from.
        files: Bytes of every listed file, by path (including the ONNX files).
    """

    manifest: Manifest
    version: AgentVersion
    policy: bytes
    ensemble: dict[str, bytes]
    source: Path
    files: dict[str, bytes] = field(repr=False)


def sha256_hex(data: bytes) -> str:
    """Lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# --- reading -------------------------------------------------------------------------------------


def _member_problem(name: str) -> str | None:
    """Why a path inside an archive must not be read, or ``None`` if it is harmless."""
    if "\x00" in name or "\\" in name:
        return "contains a backslash or NUL character"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' path component"
    return None


def _read_zip(path: Path, limits: ArchiveLimits) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CorruptArchive(str(path), f"not a readable zip file: {exc}") from None
    files: dict[str, bytes] = {}
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise UnsafeArchive(
                str(path), f"{len(infos)} members, more than the {limits.max_members} allowed"
            )
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            problem = _member_problem(name)
            if problem is not None:
                raise UnsafeArchive(name, f"zip member {problem}")
            folded = name.rstrip("/").casefold()
            if folded in seen:
                raise UnsafeArchive(name, "zip member name appears more than once")
            seen.add(folded)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(name, "zip member is a symbolic link")
            if len(PurePosixPath(name).parts) > limits.max_depth:
                raise UnsafeArchive(name, f"nested deeper than {limits.max_depth} levels")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise UnsafeArchive(name, "zip member is encrypted")
            if info.file_size > limits.max_member_bytes:
                raise UnsafeArchive(
                    name, f"{info.file_size} bytes, more than {limits.max_member_bytes} allowed"
                )
            total += info.file_size
            if total > limits.max_total_bytes:
                raise UnsafeArchive(
                    name, f"package exceeds {limits.max_total_bytes} bytes uncompressed"
                )
            if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise UnsafeArchive(
                    name,
                    f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
                    f"exceeds {limits.max_ratio:.0f}:1 (zip bomb guard)",
                )
            try:
                with archive.open(info) as member:
                    # Read one byte past the declared size: a lying header cannot smuggle more in.
                    data = member.read(info.file_size + 1)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                raise CorruptArchive(name, f"cannot read zip member: {exc}") from None
            if len(data) != info.file_size:
                raise CorruptArchive(
                    name, f"zip member holds {len(data)} bytes, its header says {info.file_size}"
                )
            files[name] = data
    return files


def _read_folder(root: Path, limits: ArchiveLimits) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    count = 0

    def walk(folder: Path, prefix: str, depth: int) -> None:
        nonlocal total, count
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise PackageNotFound(str(folder), f"cannot list folder: {exc.strerror}") from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            count += 1
            if count > limits.max_members:
                raise UnsafeArchive(str(root), f"more than {limits.max_members} entries")
            if entry.is_symlink():
                raise UnsafeArchive(rel, "is a symbolic link")
            if entry.is_dir(follow_symlinks=False):
                if depth + 1 >= limits.max_depth:
                    raise UnsafeArchive(rel, f"nested deeper than {limits.max_depth} levels")
                walk(Path(entry.path), f"{rel}/", depth + 1)
                continue
            if not entry.is_file(follow_symlinks=False):
                raise UnsafeArchive(rel, "is not a regular file")
            size = entry.stat(follow_symlinks=False).st_size
            if size > limits.max_member_bytes:
                raise UnsafeArchive(rel, f"{size} bytes, more than {limits.max_member_bytes}")
            total += size
            if total > limits.max_total_bytes:
                raise UnsafeArchive(rel, f"package exceeds {limits.max_total_bytes} bytes")
            try:
                files[rel] = Path(entry.path).read_bytes()
            except OSError as exc:
                raise MissingFile(rel, f"cannot read: {exc.strerror}") from None

    walk(root, "", 0)
    return files


def read_package_files(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Read every file of a package folder or zip into memory, refusing unsafe entries.

    Raises:
        PackageNotFound: ``path`` does not exist.
        CorruptArchive: ``path`` is a file but not a readable zip.
        UnsafeArchive: Absolute or ``..`` paths, symbolic links, duplicates, encrypted or
            oversized members, too many members.
    """
    if path.is_dir():
        return _read_folder(path, limits)
    if path.is_file():
        return _read_zip(path, limits)
    raise PackageNotFound(str(path), "no such folder or zip file")


# --- checks --------------------------------------------------------------------------------------


def _range(low: float | None, high: float | None, fallback: tuple[float, float]) -> str:
    lo = fallback[0] if low is None else low
    hi = fallback[1] if high is None else high
    return f"[{lo:g}, {hi:g}]"


def check_spec(manifest: ManifestFields, catalog: ProcessCatalog) -> None:
    """Check the observation/action spec against a process catalogue (or a site's tag map).

    Every tag must exist with the same unit and a range inside the catalogue's; action tags must be
    writable setpoints or commands whose range lies inside the PLC's accepted range.

    Raises:
        SpecIncompatible: Naming the process or the first offending tag.
    """
    if manifest.process != catalog.process:
        raise SpecIncompatible(
            "process",
            f"package is for process {manifest.process!r}, the site runs {catalog.process!r}",
        )

    def common(spec: TagSpec, kind: str) -> None:
        if spec.tag not in catalog:
            raise SpecIncompatible(
                spec.tag, f"{kind} tag is not defined for process {catalog.process!r}"
            )
        tag = catalog.tag(spec.tag)
        if spec.unit != tag.unit:
            raise SpecIncompatible(
                spec.tag, f"unit {spec.unit!r} in the package, {tag.unit!r} in the catalogue"
            )
        if spec.low < tag.low or spec.high > tag.high:
            raise SpecIncompatible(
                spec.tag,
                f"{kind} range [{spec.low:g}, {spec.high:g}] is outside the tag's range "
                f"[{tag.low:g}, {tag.high:g}]",
            )

    for spec in manifest.observations:
        common(spec, "observation")
    for spec in manifest.actions:
        common(spec, "action")
        tag = catalog.tag(spec.tag)
        if tag.role not in (TagRole.SETPOINT, TagRole.COMMAND):
            raise SpecIncompatible(
                spec.tag,
                f"action on a {tag.role.value} tag; an agent may only write setpoints and commands",
            )
        plc_low = tag.low if tag.plc_low is None else tag.plc_low
        plc_high = tag.high if tag.plc_high is None else tag.plc_high
        if spec.low < plc_low or spec.high > plc_high:
            raise SpecIncompatible(
                spec.tag,
                f"action range [{spec.low:g}, {spec.high:g}] is outside what the PLC accepts "
                f"{_range(tag.plc_low, tag.plc_high, (tag.low, tag.high))}",
            )


def check_app_version(manifest: ManifestFields, app_version: str) -> None:
    """Check that ``app_version`` lies in ``min_app`` … ``max_app`` (both inclusive).

    Raises:
        AppVersionIncompatible: Naming both versions.
    """
    current = app_version_tuple(app_version)
    if current < app_version_tuple(manifest.min_app):
        raise AppVersionIncompatible(
            "min_app",
            f"package needs console {manifest.min_app} or newer, this is {app_version}",
        )
    if manifest.max_app is not None and current > app_version_tuple(manifest.max_app):
        raise AppVersionIncompatible(
            "max_app",
            f"package supports consoles up to {manifest.max_app}, this is {app_version}",
        )


def verify_files(
    files: Mapping[str, bytes],
    trust_store: TrustStore,
    *,
    catalog: ProcessCatalog | None = None,
    app_version: str = __version__,
    source: Path = Path("<memory>"),
) -> VerifiedPackage:
    """Verify a package already read into memory (see :func:`verify_package`)."""
    remaining = dict(files)
    raw_manifest = remaining.pop(MANIFEST_FILE, None)
    if raw_manifest is None:
        raise ManifestInvalid(MANIFEST_FILE, "missing from the package")
    signer = verify(raw_manifest, remaining.pop(SIGNATURE_FILE, None), trust_store)
    manifest = parse_manifest(raw_manifest)
    for path, expected in sorted(manifest.files.items()):
        data = remaining.get(path)
        if data is None:
            raise MissingFile(path, "listed in the manifest but not in the package")
        actual = sha256_hex(data)
        if actual != expected:
            raise HashMismatch(
                path, f"sha256 {actual[:16]}… differs from the signed {expected[:16]}…"
            )
    unlisted = sorted(set(remaining) - set(manifest.files))
    if unlisted:
        others = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise UnlistedFile(unlisted[0], f"present but not listed in the manifest{others}")
    if catalog is None:
        try:
            catalog = catalog_of(manifest.process)
        except KeyError as exc:
            raise SpecIncompatible("process", str(exc.args[0])) from None
    check_spec(manifest, catalog)
    check_app_version(manifest, app_version)
    return VerifiedPackage(
        manifest=manifest,
        version=AgentVersion(
            process=manifest.process,
            version=manifest.version,
            sha256=sha256_hex(raw_manifest),
            parent=manifest.parent_version,
            signer=signer,
        ),
        policy=remaining[POLICY_FILE],
        ensemble={p: remaining[p] for p in manifest.ensemble_files},
        source=source,
        files={p: remaining[p] for p in sorted(manifest.files)},
    )


def verify_package(
    path: Path,
    trust_store: TrustStore,
    *,
    catalog: ProcessCatalog | None = None,
    app_version: str = __version__,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> VerifiedPackage:
    """Read and verify an agent package folder or zip; nothing is extracted to disk.

    Args:
        path: Package folder or zip file.
        trust_store: Keys whose signatures are accepted.
        catalog: Tag catalogue the spec must fit; default: the catalogue of the manifest's process.
        app_version: Console version to check against ``min_app``/``max_app``.
        limits: Archive size bounds.

    Returns:
        The verified package, holding the ONNX bytes (no session is opened here).

    Raises:
        PackageRefused: A subclass naming the reason and the culprit, in verification order:
            ``PackageNotFound``, ``CorruptArchive``, ``UnsafeArchive``, ``ManifestInvalid``
            (missing), ``MissingSignature`` / ``UnknownKey`` / ``BadSignature``,
            ``ManifestInvalid`` (schema), ``MissingFile``, ``HashMismatch``, ``UnlistedFile``,
            ``SpecIncompatible``, ``AppVersionIncompatible``.
    """
    files = read_package_files(path, limits)
    return verify_files(files, trust_store, catalog=catalog, app_version=app_version, source=path)


# --- writing -------------------------------------------------------------------------------------


def write_package(
    out_dir: Path,
    fields: ManifestFields,
    policy: bytes,
    signing_key: Ed25519PrivateKey,
    *,
    ensemble: Sequence[bytes] = (),
    extra_files: Mapping[str, bytes] | None = None,
    check_graphs: bool = True,
) -> Manifest:
    """Write a signed package folder.

    Args:
        out_dir: Folder to create; it must not exist or be empty. Written atomically (a temporary
            sibling folder renamed into place).
        fields: Manifest content except the file hashes.
        policy: ``policy.onnx`` bytes.
        signing_key: Ed25519 private key that signs ``manifest.json``.
        ensemble: Member ONNX files, written as ``ensemble/member_00.onnx`` … in this order.
        extra_files: Other files by relative path (e.g. ``report.md``), listed and hashed too.
        check_graphs: Open each ONNX file and check it against the spec before writing.

    Returns:
        The manifest as written.

    Raises:
        ManifestInvalid: The manifest would break the schema (e.g. a bad extra file path).
        PolicyGraphInvalid: An ONNX file does not match the spec (with ``check_graphs``).
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    contents: dict[str, bytes] = {POLICY_FILE: policy}
    for i, member in enumerate(ensemble):
        contents[f"{ENSEMBLE_DIR}/member_{i:02d}.onnx"] = member
    for path, data in (extra_files or {}).items():
        try:
            check_package_path(path)
        except ValueError as exc:
            raise ManifestInvalid(path, str(exc)) from None
        if path in contents:
            raise ManifestInvalid(path, "given twice (it is written by write_package itself)")
        contents[path] = data
    if check_graphs:
        from app.agent_runtime.onnx_policy import OnnxPolicy

        for path, data in contents.items():
            if path.endswith(".onnx"):
                OnnxPolicy.from_bytes(data, fields, name=path)
    manifest = build_manifest(fields, {p: sha256_hex(d) for p, d in sorted(contents.items())})
    raw = manifest_bytes(manifest)
    contents[MANIFEST_FILE] = raw
    contents[SIGNATURE_FILE] = sign(raw, signing_key)

    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for path, data in contents.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def zip_package(folder: Path, zip_path: Path) -> Path:
    """Pack a package folder into a deterministic zip (sorted names, fixed time stamps).

    The folder is read with the same safety checks as :func:`verify_package`, but not verified.

    Raises:
        PackageRefused: The folder holds something a package may not hold.
        FileExistsError: ``zip_path`` exists.
    """
    files = read_package_files(folder)
    if zip_path.exists():
        raise FileExistsError(f"{zip_path}: already exists")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                archive.writestr(info, files[name])
        tmp.rename(zip_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return zip_path


__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveLimits",
    "Manifest",
    "ManifestFields",
    "PackageRefused",
    "VerifiedPackage",
    "check_app_version",
    "check_spec",
    "read_package_files",
    "sha256_hex",
    "verify_files",
    "verify_package",
    "write_package",
    "zip_package",
]
