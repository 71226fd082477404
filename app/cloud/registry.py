"""Azure Blob model registry: immutable agent versions and ETag-guarded aliases.

Layout in the container (docs/cloud.md)::

    agents/<process>/<version>/manifest.json     written last: a version exists once it is there
    agents/<process>/<version>/manifest.sig
    agents/<process>/<version>/<file>            every file the manifest lists (policy.onnx, ...)
    agents/<process>/aliases.json                {"production": v, "candidate": v, "previous": v}

Every version blob is uploaded with ``overwrite=False`` and its sha256 in the blob metadata, so a
version is never changed in place. ``aliases.json`` is only replaced with ``If-Match`` on the ETag
that was read (or ``If-None-Match: *`` when creating it): a writer holding a stale ETag gets
:class:`AliasConflict` and re-reads, so no update is ever lost. Promote and rollback are single
conditional writes of that document.

Downloads check each file's sha256 against ``manifest.json`` (and ``manifest.json``/``manifest.sig``
against their upload metadata) as a transport check only: the signature is verified by the controller
that hands the package to the agent runtime.

The async :class:`Registry` runs on the cloud loop; :class:`SyncRegistry` is a small blocking facade
for the command line that owns its own cloud loop thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import StorageErrorCode
from azure.storage.blob.aio import ContainerClient

from app.cloud.errors import (
    AliasConflict,
    AliasNotSet,
    IncompleteVersion,
    PackageLayoutError,
    RegistryError,
    TransportHashMismatch,
    VersionExists,
    VersionNotFound,
)
from app.cloud.storage import ensure_container, open_container
from app.concurrency import LoopThread
from app.domain import utc_now

T = TypeVar("T")

ROOT = "agents"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
ALIASES_FILE = "aliases.json"
ALIASES = ("production", "candidate", "previous")
ALIASES_SCHEMA = 1

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_VERSION_BYTES = 256 * 1024 * 1024
MAX_FILES = 256
MAX_DEPTH = 4
_UPLOAD_CONCURRENCY = 4
_CONFLICT_ATTEMPTS = 8

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")

ProgressCallback = Callable[["PullProgress"], None]


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise RegistryError(
            f"{kind} {value!r} is not valid (letters, digits, '._+-', at most 64, "
            "starting with a letter or digit)"
        )
    return value


def _check_relative_path(path: str) -> str:
    """Reject blob-derived paths that could escape the download folder."""
    parts = path.split("/")
    if len(parts) > MAX_DEPTH or not all(_PATH_PART.match(p) for p in parts):
        raise IncompleteVersion(f"blob path {path!r} is not a safe package path")
    return path


def version_prefix(process: str, version: str) -> str:
    """Blob prefix of one version: ``agents/<process>/<version>/``."""
    return f"{ROOT}/{process}/{version}/"


def aliases_blob_name(process: str) -> str:
    """Blob name of the aliases document: ``agents/<process>/aliases.json``."""
    return f"{ROOT}/{process}/{ALIASES_FILE}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Aliases:
    """The alias document of one process, with the ETag it was read with.

    Attributes:
        production: Version the consoles run.
        candidate: Version offered to the consoles for shadow evaluation.
        previous: Version ``production`` pointed at before the last promotion (rollback target).
        etag: ETag of the document as read; ``None`` if it does not exist yet.
        updated_at: ISO time of the last update.
        updated_by: Who made the last update.
    """

    production: str | None = None
    candidate: str | None = None
    previous: str | None = None
    etag: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None

    def get(self, alias: str) -> str | None:
        """Version an alias points at; raises ``RegistryError`` for an unknown alias name."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r} (use one of {', '.join(ALIASES)})")
        value: str | None = getattr(self, alias)
        return value

    def with_alias(self, alias: str, version: str | None) -> Aliases:
        """A copy with ``alias`` pointing at ``version``."""
        self.get(alias)
        return replace(self, **{alias: version})

    def as_dict(self) -> dict[str, str | None]:
        """The three aliases by name."""
        return {a: self.get(a) for a in ALIASES}


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A complete version in the registry.

    Attributes:
        process: Process name.
        version: Version name.
        files: Paths of its files, sorted (``manifest.json`` and ``manifest.sig`` included).
        size_bytes: Sum of the blob sizes.
        manifest_sha256: sha256 of ``manifest.json`` (the package identity), from the metadata.
        pushed_at: When ``manifest.json`` was written.
    """

    process: str
    version: str
    files: tuple[str, ...]
    size_bytes: int
    manifest_sha256: str | None
    pushed_at: datetime | None


@dataclass(frozen=True, slots=True)
class PullProgress:
    """Progress of a download.

    Attributes:
        version: Version being downloaded.
        file: File just completed (or in progress).
        done_bytes: Bytes downloaded so far.
        total_bytes: Bytes to download in total.
    """

    version: str
    file: str
    done_bytes: int
    total_bytes: int


def _aliases_from_json(data: bytes, etag: str | None, blob: str) -> Aliases:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{blob}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != ALIASES_SCHEMA:
        raise RegistryError(f"{blob}: unknown alias document (expected schema {ALIASES_SCHEMA})")
    values: dict[str, str | None] = {}
    for alias in ALIASES:
        value = doc.get(alias)
        if value is not None and not (isinstance(value, str) and _NAME.match(value)):
            raise RegistryError(f"{blob}: alias {alias!r} holds an invalid version {value!r}")
        values[alias] = value
    return Aliases(
        etag=etag,
        updated_at=str(doc["updated_at"]) if "updated_at" in doc else None,
        updated_by=str(doc["updated_by"]) if "updated_by" in doc else None,
        **values,
    )


def _read_package_folder(folder: Path, process: str) -> tuple[str, dict[str, bytes]]:
    """Read a package folder for upload: (version, {path: bytes}) with a consistency check."""
    if not folder.is_dir():
        raise PackageLayoutError(f"{folder}: not a folder (push takes an agent package folder)")
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise PackageLayoutError(f"{folder}: no {MANIFEST_FILE}")
    raw = manifest_path.read_bytes()
    try:
        doc = json.loads(raw)
        version = str(doc["version"])
        manifest_process = str(doc["process"])
        listed: dict[str, str] = dict(doc["files"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PackageLayoutError(f"{manifest_path}: not an agent manifest ({exc})") from None
    if manifest_process != process:
        raise PackageLayoutError(
            f"{manifest_path}: package is for process {manifest_process!r}, not {process!r}"
        )
    _check_name("version", version)
    if not (folder / SIGNATURE_FILE).is_file():
        raise PackageLayoutError(f"{folder}: no {SIGNATURE_FILE} (packages are pushed signed)")
    files = {MANIFEST_FILE: raw, SIGNATURE_FILE: (folder / SIGNATURE_FILE).read_bytes()}
    for path, expected in sorted(listed.items()):
        _check_relative_path(path)
        file = folder / path
        if not file.is_file():
            raise PackageLayoutError(f"{file}: listed in {MANIFEST_FILE} but missing")
        data = file.read_bytes()
        if _sha256(data) != expected:
            raise PackageLayoutError(f"{file}: sha256 differs from {MANIFEST_FILE}")
        files[path] = data
    present = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()
    }
    unlisted = sorted(present - set(files))
    if unlisted:
        raise PackageLayoutError(f"{folder / unlisted[0]}: not listed in {MANIFEST_FILE}")
    return version, files


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder")


def _make_staging(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))


def _write_file(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _commit(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)


class Registry:
    """The model registry of one process in one container (cloud loop only).

    Args:
        container: Async container client; the registry does not close it.
        process: Process name (``ro``, ``hsbro``, ``uf``...).
        writer: Name recorded as ``updated_by`` in the aliases document.
    """

    def __init__(self, container: ContainerClient, process: str, *, writer: str = "intelwatt"):
        self._container = container
        self.process = _check_name("process", process)
        self._writer = writer

    @property
    def aliases_blob(self) -> str:
        """Blob name of this process's aliases document."""
        return aliases_blob_name(self.process)

    async def ensure_container(self) -> None:
        """Create the container if it does not exist."""
        await ensure_container(self._container)

    # --- versions ---------------------------------------------------------------------------

    async def list_versions(self) -> list[VersionInfo]:
        """Complete versions (those with ``manifest.json``), oldest push first."""
        groups: dict[str, list[Any]] = {}
        prefix = f"{ROOT}/{self.process}/"
        async for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            rest = blob.name[len(prefix) :]
            version, slash, _ = rest.partition("/")
            if slash:
                groups.setdefault(version, []).append(blob)
        infos = []
        for version, blobs in groups.items():
            infos_by_path = {b.name[len(prefix) + len(version) + 1 :]: b for b in blobs}
            manifest = infos_by_path.get(MANIFEST_FILE)
            if manifest is None:
                continue
            infos.append(
                VersionInfo(
                    process=self.process,
                    version=version,
                    files=tuple(sorted(infos_by_path)),
                    size_bytes=sum(int(b.size) for b in blobs),
                    manifest_sha256=(manifest.metadata or {}).get("sha256"),
                    pushed_at=manifest.last_modified,
                )
            )
        infos.sort(key=lambda i: (i.pushed_at or utc_now(), i.version))
        return infos

    async def version_exists(self, version: str) -> bool:
        """True if the version is complete in the registry."""
        blob = self._container.get_blob_client(
            version_prefix(self.process, _check_name("version", version)) + MANIFEST_FILE
        )
        return bool(await blob.exists())

    async def push(self, folder: Path, *, alias: str | None = None) -> VersionInfo:
        """Upload a signed package folder as a new immutable version.

        Files are uploaded with ``overwrite=False`` and their sha256 as metadata; ``manifest.json``
        goes last, so a version is listed only once complete. Re-pushing identical content (for
        example after an interrupted push) is accepted; different content under an existing name
        is refused.

        Args:
            folder: The package folder (as written by ``write_package``).
            alias: If given, point this alias at the new version afterwards (e.g. ``candidate``).

        Returns:
            The pushed version.

        Raises:
            PackageLayoutError: The folder is not a consistent package for this process.
            VersionExists: A blob of that version exists with different content.
            AliasConflict: Setting the alias kept conflicting with other writers.
        """
        if alias is not None:
            Aliases().get(alias)
        version, files = _read_package_folder(folder, self.process)
        prefix = version_prefix(self.process, version)
        limit = asyncio.Semaphore(_UPLOAD_CONCURRENCY)

        async def upload(path: str) -> None:
            async with limit:
                await self._upload_once(prefix + path, files[path], version)

        body = [p for p in files if p not in (MANIFEST_FILE, SIGNATURE_FILE)]
        await asyncio.gather(*(upload(p) for p in body))
        await self._upload_once(prefix + SIGNATURE_FILE, files[SIGNATURE_FILE], version)
        await self._upload_once(prefix + MANIFEST_FILE, files[MANIFEST_FILE], version)
        if alias is not None:
            await self.set_alias(alias, version)
        return VersionInfo(
            process=self.process,
            version=version,
            files=tuple(sorted(files)),
            size_bytes=sum(len(d) for d in files.values()),
            manifest_sha256=_sha256(files[MANIFEST_FILE]),
            pushed_at=utc_now(),
        )

    async def _upload_once(self, name: str, data: bytes, version: str) -> None:
        digest = _sha256(data)
        blob = self._container.get_blob_client(name)
        metadata = {"sha256": digest, "version": version, "process": self.process}
        try:
            await blob.upload_blob(data, overwrite=False, metadata=metadata)
        except ResourceExistsError:
            props = await blob.get_blob_properties()
            if (props.metadata or {}).get("sha256") != digest:
                raise VersionExists(
                    f"{name} already exists with different content; versions are immutable "
                    "(give the package a new version)"
                ) from None

    # --- download ---------------------------------------------------------------------------

    async def pull(
        self, version: str, out_dir: Path, *, progress: ProgressCallback | None = None
    ) -> Path:
        """Download a version into ``out_dir`` atomically.

        Blobs go into a temporary sibling folder; each file's sha256 is checked against
        ``manifest.json`` (``manifest.json`` and ``manifest.sig`` against their upload metadata,
        anything unlisted against its own metadata) before the folder is renamed into place.
        Signature and spec are *not* checked here.

        Args:
            version: Version to download.
            out_dir: Target folder; must not exist or be empty.
            progress: Called after every chunk with the bytes done so far.

        Returns:
            ``out_dir``.

        Raises:
            VersionNotFound: No complete version of that name.
            IncompleteVersion: A listed file is missing, a blob is unsafe or too large.
            TransportHashMismatch: A file's bytes differ from the hash it was pushed with.
            FileExistsError: ``out_dir`` exists and is not empty.
        """
        prefix = version_prefix(self.process, _check_name("version", version))
        _check_target(out_dir)
        blobs: dict[str, Any] = {}
        async for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            blobs[_check_relative_path(blob.name[len(prefix) :])] = blob
        if MANIFEST_FILE not in blobs:
            raise VersionNotFound(f"version {version!r} of {self.process!r} is not in the registry")
        if len(blobs) > MAX_FILES:
            raise IncompleteVersion(f"version {version!r} has {len(blobs)} blobs (> {MAX_FILES})")
        total = sum(int(b.size) for b in blobs.values())
        too_big = [p for p, b in blobs.items() if int(b.size) > MAX_FILE_BYTES]
        if too_big or total > MAX_VERSION_BYTES:
            raise IncompleteVersion(
                f"version {version!r} is too large ({too_big[0] if too_big else total} bytes)"
            )

        staging = _make_staging(out_dir)
        try:
            done = 0

            def report(path: str, n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(PullProgress(version, path, done, total))

            raw_manifest = await self._download(prefix, MANIFEST_FILE, staging, report)
            self._check_against_metadata(MANIFEST_FILE, raw_manifest, blobs[MANIFEST_FILE])
            listed = self._listed_hashes(raw_manifest, version)
            missing = sorted(set(listed) - set(blobs))
            if missing:
                raise IncompleteVersion(
                    f"{missing[0]}: listed in {MANIFEST_FILE} of {version!r} but not in the registry"
                )
            for path in sorted(p for p in blobs if p != MANIFEST_FILE):
                data = await self._download(prefix, path, staging, report)
                expected = listed.get(path)
                if expected is None:
                    self._check_against_metadata(path, data, blobs[path])
                elif _sha256(data) != expected:
                    raise TransportHashMismatch(
                        path, f"sha256 differs from {MANIFEST_FILE} of version {version!r}"
                    )
            _commit(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out_dir

    async def _download(
        self, prefix: str, path: str, staging: Path, report: Callable[[str, int], None]
    ) -> bytes:
        blob = self._container.get_blob_client(prefix + path)
        try:
            stream = await blob.download_blob()
        except ResourceNotFoundError:
            raise IncompleteVersion(f"{prefix}{path}: vanished during the download") from None
        parts = []
        async for chunk in stream.chunks():
            parts.append(chunk)
            report(path, len(chunk))
        data = b"".join(parts)
        _write_file(staging / path, data)
        return data

    @staticmethod
    def _check_against_metadata(path: str, data: bytes, blob: Any) -> None:
        expected = (blob.metadata or {}).get("sha256")
        if expected is None:
            raise TransportHashMismatch(path, "blob has no sha256 metadata (not pushed by us)")
        if _sha256(data) != expected:
            raise TransportHashMismatch(path, "sha256 differs from the hash it was pushed with")

    @staticmethod
    def _listed_hashes(raw_manifest: bytes, version: str) -> dict[str, str]:
        try:
            doc = json.loads(raw_manifest)
            listed = doc["files"]
            if doc.get("version") != version or not isinstance(listed, dict):
                raise ValueError(f"manifest is for version {doc.get('version')!r}")
            return {_check_relative_path(str(p)): str(h) for p, h in listed.items()}
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IncompleteVersion(f"{MANIFEST_FILE} of {version!r}: unusable ({exc})") from None

    # --- aliases ----------------------------------------------------------------------------

    async def read_aliases(self) -> Aliases:
        """Read the aliases document (all ``None`` with ``etag=None`` if it does not exist)."""
        blob = self._container.get_blob_client(self.aliases_blob)
        try:
            stream = await blob.download_blob()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == StorageErrorCode.CONTAINER_NOT_FOUND:
                raise RegistryError(
                    f"container {self._container.container_name!r} does not exist "
                    "(push a version first, which creates it)"
                ) from None
            return Aliases()
        data = await stream.readall()
        return _aliases_from_json(data, stream.properties.etag, self.aliases_blob)

    async def write_aliases(self, new: Aliases) -> Aliases:
        """Write ``new`` only if the document still has ``new.etag`` (or is absent if ``None``).

        Raises:
            AliasConflict: Someone else wrote the document since it was read.
        """
        updated_at = utc_now().isoformat()
        doc = {"schema": ALIASES_SCHEMA, "process": self.process, **new.as_dict()}
        doc.update(updated_at=updated_at, updated_by=self._writer)
        data = json.dumps(doc, sort_keys=True, indent=1).encode()
        blob = self._container.get_blob_client(self.aliases_blob)
        try:
            if new.etag is None:
                result = await blob.upload_blob(data, overwrite=True, if_none_match="*")
            else:
                result = await blob.upload_blob(
                    data,
                    overwrite=True,
                    etag=new.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceModifiedError, ResourceExistsError):
            raise AliasConflict(
                f"{self.aliases_blob} changed since it was read (ETag {new.etag}); re-read and retry"
            ) from None
        return replace(new, etag=result["etag"], updated_at=updated_at, updated_by=self._writer)

    async def update_aliases(self, mutate: Callable[[Aliases], Aliases]) -> Aliases:
        """Read-modify-write the aliases, re-reading and re-applying ``mutate`` on a conflict.

        ``mutate`` sees the freshly read document each time, so its preconditions are checked
        against the current state and no other writer's update is lost.

        Raises:
            AliasConflict: Still conflicting after several attempts.
            RegistryError: Whatever ``mutate`` raises (e.g. :class:`AliasNotSet`).
        """
        for attempt in range(_CONFLICT_ATTEMPTS):
            current = await self.read_aliases()
            new = mutate(current)
            if new.as_dict() == current.as_dict():
                return current
            try:
                return await self.write_aliases(replace(new, etag=current.etag))
            except AliasConflict:
                await asyncio.sleep(0.02 * (attempt + 1))
        raise AliasConflict(
            f"{self.aliases_blob}: still conflicting after {_CONFLICT_ATTEMPTS} attempts"
        )

    async def _require_version(self, version: str) -> str:
        if not await self.version_exists(version):
            raise VersionNotFound(f"version {version!r} of {self.process!r} is not in the registry")
        return version

    async def set_alias(self, alias: str, version: str | None) -> Aliases:
        """Point ``alias`` at an existing ``version`` (or clear it with ``None``)."""
        Aliases().get(alias)
        if version is not None:
            await self._require_version(version)
        return await self.update_aliases(lambda a: a.with_alias(alias, version))

    async def promote(self, version: str | None = None) -> Aliases:
        """Make ``version`` (default: the candidate) production; production becomes previous.

        One conditional write of the aliases document. The candidate alias is cleared when it is
        the promoted version.

        Raises:
            AliasNotSet: No version given and no candidate.
            VersionNotFound: The version is not in the registry.
        """
        if version is not None:
            await self._require_version(version)

        def apply(current: Aliases) -> Aliases:
            target = version if version is not None else current.candidate
            if target is None:
                raise AliasNotSet(f"{self.aliases_blob}: no candidate to promote")
            if target == current.production:
                return current
            return replace(
                current,
                production=target,
                previous=current.production,
                candidate=None if current.candidate == target else current.candidate,
            )

        return await self.update_aliases(apply)

    async def rollback(self) -> Aliases:
        """Swap ``production`` and ``previous`` in one conditional write.

        Raises:
            AliasNotSet: ``previous`` (or ``production``) is not set.
        """

        def apply(current: Aliases) -> Aliases:
            if current.previous is None or current.production is None:
                raise AliasNotSet(f"{self.aliases_blob}: nothing to roll back to (no 'previous')")
            return replace(current, production=current.previous, previous=current.production)

        return await self.update_aliases(apply)


class SyncRegistry:
    """Blocking facade over :class:`Registry` for the command line.

    Owns a ``cloud`` loop thread and the container client on it; use as a context manager.

    Args:
        connection_string: Storage connection string (a secret: never logged).
        container: Container name.
        process: Process name.
        api_version: Optional storage API version pin.
        writer: Name recorded in the aliases document.
        timeout_s: Longest wait for one operation.
    """

    def __init__(
        self,
        connection_string: str,
        container: str,
        process: str,
        *,
        api_version: str | None = None,
        writer: str = "intelwatt-cli",
        timeout_s: float = 300.0,
    ) -> None:
        self._connection_string = connection_string
        self._container_name = container
        self._process = process
        self._api_version = api_version
        self._writer = writer
        self._timeout_s = timeout_s
        self._loop = LoopThread("cloud")
        self._container: ContainerClient | None = None
        self._registry: Registry | None = None

    def __enter__(self) -> SyncRegistry:
        self._loop.start()
        try:
            self._loop.run(self._open(), self._timeout_s)
        except BaseException:
            self._loop.stop()
            raise
        return self

    async def _open(self) -> None:
        self._container = open_container(
            self._connection_string, self._container_name, api_version=self._api_version
        )
        self._registry = Registry(self._container, self._process, writer=self._writer)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the container client and stop the loop thread."""
        if self._container is not None and self._loop.running:
            self._loop.run(self._container.close(), self._timeout_s)
            self._container = None
        self._loop.stop()

    def _run(self, make: Callable[[Registry], Awaitable[T]]) -> T:
        if self._registry is None:
            raise RuntimeError("SyncRegistry is not open (use it as a context manager)")
        registry = self._registry

        async def call() -> T:
            return await make(registry)

        return self._loop.run(call(), self._timeout_s)

    def ensure_container(self) -> None:
        """Create the container if needed."""
        self._run(lambda r: r.ensure_container())

    def list_versions(self) -> list[VersionInfo]:
        """See :meth:`Registry.list_versions`."""
        return self._run(lambda r: r.list_versions())

    def read_aliases(self) -> Aliases:
        """See :meth:`Registry.read_aliases`."""
        return self._run(lambda r: r.read_aliases())

    def push(self, folder: Path, *, alias: str | None = None) -> VersionInfo:
        """See :meth:`Registry.push`."""
        return self._run(lambda r: r.push(folder, alias=alias))

    def pull(
        self, version: str, out_dir: Path, *, progress: ProgressCallback | None = None
    ) -> Path:
        """See :meth:`Registry.pull` (``progress`` runs on the cloud thread)."""
        return self._run(lambda r: r.pull(version, out_dir, progress=progress))

    def promote(self, version: str | None = None) -> Aliases:
        """See :meth:`Registry.promote`."""
        return self._run(lambda r: r.promote(version))

    def rollback(self) -> Aliases:
        """See :meth:`Registry.rollback`."""
        return self._run(lambda r: r.rollback())

    def set_alias(self, alias: str, version: str | None) -> Aliases:
        """See :meth:`Registry.set_alias`."""
        return self._run(lambda r: r.set_alias(alias, version))


def aliases_summary(aliases: Mapping[str, str | None]) -> str:
    """One line such as ``production=v2 candidate=v3 previous=v1`` (``-`` for unset)."""
    return " ".join(f"{a}={aliases.get(a) or '-'}" for a in ALIASES)


__all__ = [
    "ALIASES",
    "Aliases",
    "PullProgress",
    "Registry",
    "SyncRegistry",
    "VersionInfo",
    "aliases_blob_name",
    "aliases_summary",
    "version_prefix",
]
