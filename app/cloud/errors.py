"""Typed errors of the cloud layer.

Registry errors say which blob or alias is at fault; scoring errors carry a short ``reason`` code (for
alarms and the fallback chain) and whether a retry inside the same budget can help. No message ever
contains a secret.
"""

from __future__ import annotations

from collections.abc import Mapping


class CloudError(Exception):
    """Base of every error raised by ``app.cloud``."""


# --- registry ------------------------------------------------------------------------------------


class RegistryError(CloudError):
    """A registry operation failed; the message names the version, alias or blob.

    Attributes:
        reason: Short machine-readable code for events and alarms.
    """

    reason = "registry_error"


class AliasConflict(RegistryError):
    """The aliases document changed since it was read (stale ETag): re-read and retry."""

    reason = "alias_conflict"


class AliasNotSet(RegistryError):
    """An operation needs an alias (``candidate``, ``previous``) that points nowhere."""

    reason = "alias_not_set"


class VersionNotFound(RegistryError):
    """No complete version with that name exists in the registry."""

    reason = "version_not_found"


class VersionExists(RegistryError):
    """A version with that name already exists with different content (versions are immutable)."""

    reason = "version_exists"


class TransportHashMismatch(RegistryError):
    """A downloaded blob's sha256 differs from the hash it was uploaded with.

    Attributes:
        blob: Path of the file inside the package.
    """

    reason = "transport_hash_mismatch"

    def __init__(self, blob: str, detail: str) -> None:
        self.blob = blob
        super().__init__(f"{blob}: {detail}")


class IncompleteVersion(RegistryError):
    """A version's blobs are missing, oversized or named unsafely: it cannot be pulled as is."""

    reason = "incomplete_version"


class PackageLayoutError(RegistryError):
    """A folder to push is not an agent package (no ``manifest.json``, unreadable manifest...)."""

    reason = "not_a_package"


# --- scoring -------------------------------------------------------------------------------------


class ScoringError(CloudError):
    """The cloud scoring endpoint gave no usable answer.

    Attributes:
        reason: Short code: ``auth``, ``not_found``, ``timeout``, ``payload_too_large``,
            ``model_error``, ``rate_limited``, ``server_error``, ``bad_response``,
            ``version_mismatch``, ``circuit_open``, ``unreachable``, ``config``.
        status: HTTP status, if an answer arrived.
        retryable: True if another attempt inside the same budget may succeed.
    """

    reason = "error"
    retryable = False

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        self.status = status
        self.detail = detail
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"scoring endpoint {self.reason}{where}: {detail}")


class ScoringAuthError(ScoringError):
    """401: the key or token was refused; an alarm, no blind retries."""

    reason = "auth"


class ScoringNotFound(ScoringError):
    """404: wrong URL or deployment name; a configuration alarm."""

    reason = "not_found"


class ScoringTimeout(ScoringError, TimeoutError):
    """408 from the endpoint, or no complete answer within the budget.

    Also a ``TimeoutError``, which is what the fallback chain expects of a late cloud answer.
    """

    reason = "timeout"
    retryable = True


class ScoringPayloadTooLarge(ScoringError):
    """413: the request exceeded the endpoint's size limit (a bug)."""

    reason = "payload_too_large"


class ScoringModelError(ScoringError):
    """424 (the model container failed) or the container's own 4xx/5xx; no retry in this step."""

    reason = "model_error"


class ScoringRateLimited(ScoringError):
    """429: too many requests; back off within the budget.

    Attributes:
        retry_after_s: The ``Retry-After`` delay in seconds, if the endpoint sent one.
    """

    reason = "rate_limited"
    retryable = True

    def __init__(
        self, detail: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail, status=status)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], status: int) -> ScoringRateLimited:
        """Build the error from a 429 answer's headers (reads ``Retry-After`` in seconds)."""
        raw = headers.get("Retry-After")
        try:
            delay = float(raw) if raw is not None else None
        except ValueError:
            delay = None
        if delay is not None and not 0 <= delay < 3600:
            delay = None
        return cls("too many requests", status=status, retry_after_s=delay)


class ScoringServerError(ScoringError):
    """502/503/504 and other infrastructure failures; back off within the budget."""

    reason = "server_error"
    retryable = True


class ScoringUnreachable(ScoringError):
    """The connection could not be made or broke before an answer arrived."""

    reason = "unreachable"
    retryable = True


class ScoringBadResponse(ScoringError):
    """A 200 answer that is not valid JSON or does not follow the /score contract."""

    reason = "bad_response"


class ScoringVersionMismatch(ScoringError):
    """The answer came from another policy version than the one expected."""

    reason = "version_mismatch"


class ScoringCircuitOpen(ScoringError):
    """The circuit breaker is open: no request was sent."""

    reason = "circuit_open"


class ScoringConfigError(ScoringError):
    """The client is misconfigured (URL, key reference); nothing was sent."""

    reason = "config"


__all__ = [
    "AliasConflict",
    "AliasNotSet",
    "CloudError",
    "IncompleteVersion",
    "PackageLayoutError",
    "RegistryError",
    "ScoringAuthError",
    "ScoringBadResponse",
    "ScoringCircuitOpen",
    "ScoringConfigError",
    "ScoringError",
    "ScoringModelError",
    "ScoringNotFound",
    "ScoringPayloadTooLarge",
    "ScoringRateLimited",
    "ScoringServerError",
    "ScoringTimeout",
    "ScoringUnreachable",
    "ScoringVersionMismatch",
    "TransportHashMismatch",
    "VersionExists",
    "VersionNotFound",
]
