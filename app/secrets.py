"""Resolve secret references from the site file (``env:NAME`` or ``keyring:service/user``).

The site TOML never holds a secret, only where it lives. Resolved values are returned to the caller
and never logged or put into exception messages.
"""

from __future__ import annotations

import importlib
import os


class SecretError(Exception):
    """A secret reference is malformed or names a secret that is not available."""


def resolve_secret(ref: str) -> str:
    """Return the secret that ``ref`` points to.

    Args:
        ref: ``env:VARIABLE`` (an environment variable) or ``keyring:service/user`` (an entry in
            the OS keyring, read with the optional ``keyring`` package).

    Returns:
        The secret value.

    Raises:
        SecretError: The reference is malformed, the variable is unset or empty, the keyring entry
            is missing, or the ``keyring`` package is not installed. The message names the
            reference, never the value.
    """
    scheme, sep, rest = ref.partition(":")
    if not sep or not rest:
        raise SecretError(
            f"secret reference {ref!r} must be 'env:VARIABLE' or 'keyring:service/user'"
        )
    if scheme == "env":
        value = os.environ.get(rest)
        if not value:
            raise SecretError(f"secret {ref!r}: environment variable {rest!r} is not set or empty")
        return value
    if scheme == "keyring":
        service, slash, user = rest.partition("/")
        if not slash or not service or not user or "/" in user:
            raise SecretError(f"secret reference {ref!r} must be 'keyring:service/user'")
        return _from_keyring(ref, service, user)
    raise SecretError(
        f"secret reference {ref!r} has unknown scheme {scheme!r}; use 'env:' or 'keyring:'"
    )


def _from_keyring(ref: str, service: str, user: str) -> str:
    try:
        keyring = importlib.import_module("keyring")
    except ImportError:
        raise SecretError(
            f"secret {ref!r} lives in the OS keyring but the 'keyring' package is not installed "
            "(pip install keyring), or use an 'env:' reference"
        ) from None
    try:
        value = keyring.get_password(service, user)
    except Exception as exc:  # noqa: BLE001 - any backend failure becomes one readable error
        raise SecretError(f"secret {ref!r}: keyring backend failed: {type(exc).__name__}") from None
    if not value:
        raise SecretError(f"secret {ref!r}: no entry for user {user!r} in service {service!r}")
    return str(value)


__all__ = ["SecretError", "resolve_secret"]
