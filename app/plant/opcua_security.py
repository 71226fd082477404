"""OPC UA security for the simulated PLC: certificates, password users and the client trust list.

- ``ensure_certificate`` writes a self-signed application certificate (DER) and key (PEM) if they do
  not exist yet, with the application URI in the subjectAltName as OPC UA requires.
- ``hash_password`` / ``verify_password``: scrypt hashes, stored as
  ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.
- ``load_users`` reads a users file: one ``name:hash`` per line, ``#`` comments.
- ``PasswordUserManager`` authenticates sessions against those hashes (asyncua's default user
  manager accepts anyone); anonymous sessions only if allowed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)

PLANT_APPLICATION_URI = "urn:intelwatt:plant"
CONSOLE_APPLICATION_URI = "urn:intelwatt:console"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def hash_password(password: str) -> str:
    """An scrypt hash of ``password`` with a fresh random salt."""
    if not password:
        raise ValueError("a password must not be empty")
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches the scrypt hash ``encoded`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def load_users(path: Path) -> dict[str, str]:
    """Read a users file (``name:scrypt$...`` per line).

    Raises:
        ValueError: The file is missing or a line is malformed; the message names file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"users file {path}: cannot read it ({exc.strerror or exc})") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not _USER_NAME.match(name) or not encoded.startswith("scrypt$"):
            raise ValueError(f"users file {path}, line {number}: expected 'name:scrypt$...'")
        if encoded.count("$") != 5:
            raise ValueError(f"users file {path}, line {number}: malformed scrypt hash")
        if name in users:
            raise ValueError(f"users file {path}, line {number}: user {name!r} defined twice")
        users[name] = encoded
    return users


class PasswordUserManager(UserManager):
    """Username/password authentication against scrypt hashes.

    Args:
        users: Hash per user name (see ``hash_password``).
        allow_anonymous: Accept sessions without a user identity.
    """

    def __init__(self, users: Mapping[str, str], allow_anonymous: bool = False) -> None:
        self._users = dict(users)
        self.allow_anonymous = allow_anonymous

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        """The session's user, or None to refuse it (the client gets BadUserAccessDenied)."""
        if username is None:
            if self.allow_anonymous:
                return User(role=UserRole.User, name="anonymous")
            log.warning("OPC UA session refused: anonymous access is disabled")
            return None
        encoded = self._users.get(username)
        if encoded is None or password is None or not verify_password(password, encoded):
            log.warning("OPC UA session refused: bad user name or password for %r", username)
            return None
        return User(role=UserRole.User, name=username)


def ensure_certificate(
    cert_path: Path,
    key_path: Path,
    application_uri: str,
    *,
    server: bool,
    common_name: str | None = None,
    days: int = 365,
) -> None:
    """Create a self-signed OPC UA application certificate (DER) and key (PEM) unless both exist.

    Args:
        cert_path: Where the DER certificate goes.
        key_path: Where the PEM private key goes.
        application_uri: Put in the subjectAltName; must equal the application's URI.
        server: Server certificate (serverAuth) or client certificate (clientAuth).
        common_name: Subject CN (default: the application URI).
        days: Validity.
    """
    if cert_path.is_file() and key_path.is_file():
        return
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    host = socket.gethostname()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(host),
        x509.DNSName("localhost"),
    ]
    use = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = generate_self_signed_app_certificate(
        key,
        common_name or application_uri,
        {"organizationName": "intelwatt"},
        names,
        extended=[use],
        days=days,
    )
    key_path.write_bytes(dump_private_key_as_pem(key))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    log.info("created %s certificate %s", "server" if server else "client", cert_path)
