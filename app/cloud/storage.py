"""Opening Azure Blob clients from a connection string held as a secret.

The connection string is resolved through ``app.secrets`` (a site's ``[cloud] connection_string``
reference) or taken from ``INTELWATT_STORAGE_CONNECTION_STRING``; it is never logged. Clients are
``azure.storage.blob.aio`` clients: create and use them on the cloud loop only.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import ContainerClient

from app.config import CloudSettings
from app.secrets import SecretError, resolve_secret

CONNECTION_STRING_ENV = "INTELWATT_STORAGE_CONNECTION_STRING"
"""Environment variable read when no site file names the connection string."""


def storage_connection_string(cloud: CloudSettings | None) -> str:
    """Return the storage connection string for ``cloud`` (or from the environment).

    Args:
        cloud: The site's ``[cloud]`` settings; its ``connection_string`` reference wins. ``None``
            (no site file) reads ``INTELWATT_STORAGE_CONNECTION_STRING``.

    Raises:
        SecretError: Neither source yields a connection string; the message names the reference,
            never the value.
    """
    if cloud is not None and cloud.connection_string is not None:
        return resolve_secret(cloud.connection_string)
    value = os.environ.get(CONNECTION_STRING_ENV)
    if not value:
        raise SecretError(
            "no storage connection string: set [cloud] connection_string in the site file "
            f"or the environment variable {CONNECTION_STRING_ENV}"
        )
    return value


def open_container(
    connection_string: str,
    container: str,
    *,
    api_version: str | None = None,
    retry_total: int = 3,
    connection_timeout_s: float = 10.0,
    read_timeout_s: float = 60.0,
) -> ContainerClient:
    """Create an async container client (no network traffic yet).

    Args:
        connection_string: Storage account connection string.
        container: Container name (3-63 lowercase letters, digits and ``-``).
        api_version: Pin the storage service API version (e.g. ``2025-11-05`` for Azurite 3.35);
            ``None`` uses the SDK's default.
        retry_total: Retries of the SDK's own retry policy (the outbox drainer uses 0: it backs
            off by itself and must learn about an outage at once).
        connection_timeout_s: Connect timeout per request.
        read_timeout_s: Read timeout per request.

    Raises:
        ValueError: The connection string is malformed (the message does not repeat it).
    """
    options: dict[str, Any] = {
        "retry_total": retry_total,
        "connection_timeout": connection_timeout_s,
        "read_timeout": read_timeout_s,
    }
    if api_version is not None:
        options["api_version"] = api_version
    try:
        return ContainerClient.from_connection_string(connection_string, container, **options)
    except ValueError:
        raise ValueError("the storage connection string is malformed") from None


async def ensure_container(container: ContainerClient) -> None:
    """Create the container if it does not exist yet."""
    with contextlib.suppress(ResourceExistsError):
        await container.create_container()


__all__ = [
    "CONNECTION_STRING_ENV",
    "ensure_container",
    "open_container",
    "storage_connection_string",
]
