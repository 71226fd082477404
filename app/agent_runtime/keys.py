"""Ed25519 signing keys for agent packages, the trust store, and the ``manifest.sig`` format.

A key pair is two files: ``<name>.key`` (PKCS#8 PEM, optionally encrypted with a passphrase taken from
an environment variable) and ``<name>.pub``, a small text file::

    # intelwatt-console agent-package signing key (Ed25519 public half)
    name = dev
    algorithm = ed25519
    public_key = <base64 of the 32 raw key bytes>
    fingerprint = <sha256 of the raw key bytes, 64 hex digits>

A trust store is a folder of ``*.pub`` files. ``manifest.sig`` is canonical JSON naming the signer's
fingerprint, so an unknown signer is told apart from a bad signature.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.agent_runtime.errors import BadSignature, KeyFileError, MissingSignature, UnknownKey

PASSPHRASE_ENV = "INTELWATT_SIGNING_KEY_PASSPHRASE"
"""Environment variable holding the passphrase that encrypts (and decrypts) private key files."""

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
PUBLIC_SUFFIX = ".pub"
PRIVATE_SUFFIX = ".key"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_MAX_KEY_FILE_BYTES = 4096
_MAX_SIGNATURE_BYTES = 4096
_PUB_FIELDS = ("name", "algorithm", "public_key", "fingerprint")
_PUB_HEADER = "# intelwatt-console agent-package signing key (Ed25519 public half)"


def fingerprint(key: Ed25519PublicKey) -> str:
    """Return the fingerprint of ``key``: sha256 of its 32 raw bytes, as 64 lowercase hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A trusted (or to-be-trusted) public key.

    Attributes:
        name: Human name of the key, e.g. ``dev`` or ``site-release``.
        fingerprint: sha256 of the raw key, 64 hex digits.
        key: The Ed25519 public key.
        path: File it was read from, if any.
    """

    name: str
    fingerprint: str
    key: Ed25519PublicKey
    path: Path | None = None

    def to_text(self) -> str:
        """The ``<name>.pub`` file content."""
        raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return (
            f"{_PUB_HEADER}\n"
            f"name = {self.name}\n"
            f"algorithm = {ALGORITHM}\n"
            f"public_key = {base64.b64encode(raw).decode('ascii')}\n"
            f"fingerprint = {self.fingerprint}\n"
        )


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeyFileError(
            f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_public_key(text: str, path: Path | str = "<public key>") -> PublicKey:
    """Parse the content of a ``.pub`` file.

    Raises:
        KeyFileError: Naming ``path`` and the offending line or field.
    """
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        field, sep, value = stripped.partition("=")
        field, value = field.strip(), value.strip()
        if not sep or not field:
            raise KeyFileError(f"{path}: line {number}: expected 'field = value', got {stripped!r}")
        if field not in _PUB_FIELDS:
            raise KeyFileError(
                f"{path}: line {number}: unknown field {field!r} (expected {', '.join(_PUB_FIELDS)})"
            )
        if field in fields:
            raise KeyFileError(f"{path}: line {number}: field {field!r} given twice")
        fields[field] = value
    missing = [f for f in _PUB_FIELDS if f not in fields]
    if missing:
        raise KeyFileError(f"{path}: not a public key file: missing {', '.join(missing)}")
    if fields["algorithm"] != ALGORITHM:
        raise KeyFileError(
            f"{path}: algorithm {fields['algorithm']!r} is not supported (only {ALGORITHM!r})"
        )
    try:
        name = _check_name(fields["name"])
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    try:
        raw = base64.b64decode(fields["public_key"], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{path}: public_key is not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"{path}: public_key must be 32 bytes, got {len(raw)}")
    public = Ed25519PublicKey.from_public_bytes(raw)
    actual = fingerprint(public)
    if fields["fingerprint"].lower() != actual:
        raise KeyFileError(
            f"{path}: fingerprint {fields['fingerprint']!r} does not match the key "
            f"(computed {actual}); the file was edited or damaged"
        )
    return PublicKey(name=name, fingerprint=actual, key=public, path=Path(path))


def load_public_key(path: Path) -> PublicKey:
    """Read a ``.pub`` file.

    Raises:
        KeyFileError: The file is missing, too large, not UTF-8 or malformed; the message names it.
    """
    try:
        if path.stat().st_size > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path}: too large for a public key file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: public key file not found") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a text file (expected a .pub public key file)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_public_key(text, path)


def load_private_key(path: Path, *, passphrase_env: str = PASSPHRASE_ENV) -> Ed25519PrivateKey:
    """Read a PEM private key, decrypting it with the passphrase in ``passphrase_env`` if encrypted.

    Raises:
        KeyFileError: The file is missing or malformed, is not Ed25519, is encrypted and the
            variable is unset, or the passphrase is wrong. The passphrase is never echoed.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: private key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    passphrase = os.environ.get(passphrase_env) or None
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    if encrypted and passphrase is None:
        raise KeyFileError(
            f"{path}: the private key is encrypted; set the passphrase in ${passphrase_env}"
        )
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase.encode("utf-8") if encrypted and passphrase else None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        hint = f" or the passphrase in ${passphrase_env} is wrong" if encrypted else ""
        raise KeyFileError(f"{path}: not a readable PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True, slots=True)
class GeneratedKeyPair:
    """Where :func:`generate_key_pair` wrote a key pair.

    Attributes:
        private_path: ``<name>.key`` (mode 0600).
        public_path: ``<name>.pub``.
        fingerprint: Fingerprint of the public key.
        encrypted: True if the private key is passphrase-encrypted.
    """

    private_path: Path
    public_path: Path
    fingerprint: str
    encrypted: bool


def generate_key_pair(
    out_dir: Path, name: str, *, passphrase_env: str = PASSPHRASE_ENV
) -> GeneratedKeyPair:
    """Create ``<out_dir>/<name>.key`` and ``<out_dir>/<name>.pub``.

    The private key is encrypted with the passphrase in ``passphrase_env`` when that variable is set
    and not empty. Existing files are never overwritten.

    Raises:
        KeyFileError: Bad name, a file already exists, or the folder cannot be written.
    """
    _check_name(name)
    private_path = out_dir / f"{name}{PRIVATE_SUFFIX}"
    public_path = out_dir / f"{name}{PUBLIC_SUFFIX}"
    for p in (private_path, public_path):
        if p.exists():
            raise KeyFileError(f"{p}: already exists; refusing to overwrite a key file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"{out_dir}: cannot create folder: {exc.strerror}") from None
    private = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(passphrase_env) or None
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = public_key_of(private, name)
    _write_new(private_path, pem, 0o600)
    _write_new(public_path, public.to_text().encode("utf-8"), 0o644)
    return GeneratedKeyPair(private_path, public_path, public.fingerprint, passphrase is not None)


def public_key_of(private: Ed25519PrivateKey, name: str) -> PublicKey:
    """The :class:`PublicKey` of ``private`` under ``name``."""
    key = private.public_key()
    return PublicKey(name=_check_name(name), fingerprint=fingerprint(key), key=key)


class TrustStore:
    """Public keys whose signatures are accepted, by fingerprint.

    Build one with :meth:`load` (a folder of ``*.pub`` files) or from keys directly.
    """

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys: dict[str, PublicKey] = {}
        for k in keys:
            self._keys.setdefault(k.fingerprint, k)

    @classmethod
    def load(cls, folder: Path) -> TrustStore:
        """Read every ``*.pub`` file in ``folder`` (other files are ignored).

        Raises:
            KeyFileError: The folder is missing or any ``.pub`` file is malformed (named).
        """
        if not folder.is_dir():
            raise KeyFileError(f"trust store {folder}: not a folder (or does not exist)")
        keys = [load_public_key(p) for p in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))]
        return cls(keys)

    def get(self, key_fingerprint: str) -> PublicKey | None:
        """The trusted key with this fingerprint, or ``None``."""
        return self._keys.get(key_fingerprint)

    def __contains__(self, key_fingerprint: object) -> bool:
        return key_fingerprint in self._keys

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)


def trust_key(public_key_file: Path, store: Path) -> tuple[PublicKey, bool]:
    """Add a public key to the trust store folder as ``<name>.pub``.

    Returns:
        The key, and ``True`` if it was added (``False`` if the store already trusted it).

    Raises:
        KeyFileError: The key file is malformed, or the store holds a different key under that name.
    """
    key = load_public_key(public_key_file)
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"trust store {store}: cannot create folder: {exc.strerror}") from None
    existing = TrustStore.load(store)
    if key.fingerprint in existing:
        return key, False
    target = store / f"{key.name}{PUBLIC_SUFFIX}"
    if target.exists():
        raise KeyFileError(
            f"{target}: the trust store already holds a different key named {key.name!r}; "
            "rename one of them"
        )
    _write_new(target, key.to_text().encode("utf-8"), 0o644)
    return key, True


# --- signatures ----------------------------------------------------------------------------------


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``manifest_bytes`` and return the content of ``manifest.sig``.

    The content is canonical JSON: ``{"algorithm":"ed25519","key":<fingerprint>,"signature":<base64>}``.
    """
    document = {
        "algorithm": ALGORITHM,
        "key": fingerprint(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _parse_signature(signature: bytes) -> tuple[str, bytes]:
    def bad(why: str) -> BadSignature:
        return BadSignature(SIGNATURE_FILE, f"malformed: {why}")

    if len(signature) > _MAX_SIGNATURE_BYTES:
        raise bad(f"{len(signature)} bytes, more than a signature file holds")
    try:
        document = json.loads(signature.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not JSON") from None
    if not isinstance(document, dict) or set(document) != {"algorithm", "key", "signature"}:
        raise bad("expected exactly the fields algorithm, key, signature")
    if document["algorithm"] != ALGORITHM:
        raise bad(f"algorithm {document['algorithm']!r} is not {ALGORITHM!r}")
    key = document["key"]
    if not isinstance(key, str) or not _FINGERPRINT.match(key):
        raise bad("key is not a 64-hex-digit fingerprint")
    try:
        raw = base64.b64decode(str(document["signature"]), validate=True)
    except (binascii.Error, ValueError):
        raise bad("signature is not base64") from None
    if len(raw) != 64:
        raise bad(f"an Ed25519 signature has 64 bytes, this one {len(raw)}")
    return key, raw


def verify(manifest_bytes: bytes, signature: bytes | None, trust_store: TrustStore) -> str:
    """Check the ``manifest.sig`` content ``signature`` over ``manifest_bytes``.

    Returns:
        Fingerprint of the trusted key that signed the manifest.

    Raises:
        MissingSignature: ``signature`` is ``None`` or empty.
        UnknownKey: The signer's key is not in ``trust_store`` (the culprit is its fingerprint).
        BadSignature: The signature file is malformed or the signature does not match.
    """
    if not signature:
        raise MissingSignature(SIGNATURE_FILE, "the package is not signed")
    key_fingerprint, raw = _parse_signature(signature)
    trusted = trust_store.get(key_fingerprint)
    if trusted is None:
        raise UnknownKey(
            key_fingerprint,
            f"manifest signed by a key that is not in the trust store ({len(trust_store)} trusted)",
        )
    try:
        trusted.key.verify(raw, manifest_bytes)
    except InvalidSignature:
        raise BadSignature(
            SIGNATURE_FILE,
            f"signature does not match manifest.json under key {trusted.name!r} "
            f"({key_fingerprint[:16]}…): the manifest or the signature was altered",
        ) from None
    return key_fingerprint


# --- command line --------------------------------------------------------------------------------


def _say(line: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(line + "\n")


def run_keys_cli(args: argparse.Namespace) -> int:
    """Back ``intelwatt keys generate|trust``.

    ``args.keys_command`` is ``generate`` (with ``out``, ``name``) or ``trust`` (with
    ``public_key``, ``store``). Bad input prints one line on stderr and returns 2.
    """
    command = getattr(args, "keys_command", None)
    try:
        if command == "generate":
            pair = generate_key_pair(Path(args.out), str(args.name))
            state = f"encrypted with ${PASSPHRASE_ENV}" if pair.encrypted else "NOT encrypted"
            _say(f"private key: {pair.private_path} ({state}; keep it secret)")
            _say(f"public key:  {pair.public_path}")
            _say(f"fingerprint: {pair.fingerprint}")
            return 0
        if command == "trust":
            key, added = trust_key(Path(args.public_key), Path(args.store))
            verb = "added to" if added else "already in"
            _say(f"key {key.name!r} ({key.fingerprint}) {verb} trust store {args.store}")
            return 0
    except KeyFileError as exc:
        _say(f"intelwatt keys {command}: {exc}", error=True)
        return 2
    _say(f"intelwatt keys: unknown action {command!r} (use generate or trust)", error=True)
    return 2


__all__ = [
    "PASSPHRASE_ENV",
    "SIGNATURE_FILE",
    "GeneratedKeyPair",
    "PublicKey",
    "TrustStore",
    "fingerprint",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "parse_public_key",
    "public_key_of",
    "run_keys_cli",
    "sign",
    "trust_key",
    "verify",
]
