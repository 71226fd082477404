"""Typed errors of the agent runtime.

Every reason a package is not loaded is a :class:`PackageRefused` subclass with a short ``reason`` code
(for alarms and the ledger) and the ``culprit`` it names (a file, a tag, a key fingerprint). Inference
problems are :class:`InferenceError` subclasses, so the fallback chain can tell them apart from refusals.
"""

from __future__ import annotations

from collections.abc import Mapping


class AgentRuntimeError(Exception):
    """Base of every error raised by ``app.agent_runtime``."""


# --- keys ----------------------------------------------------------------------------------------


class KeyFileError(AgentRuntimeError):
    """A key file or trust store is missing, malformed, or cannot be written; the message names it."""


# --- package refusals ----------------------------------------------------------------------------


class PackageRefused(AgentRuntimeError):
    """An agent package was refused.

    Attributes:
        reason: Short machine-readable code, e.g. ``hash_mismatch``.
        culprit: What the refusal is about: a file path, a tag, a key fingerprint.
        detail: Human-readable explanation.
    """

    reason = "refused"

    def __init__(self, culprit: str, detail: str) -> None:
        self.culprit = culprit
        self.detail = detail
        super().__init__(f"package refused ({self.reason}): {culprit}: {detail}")


class PackageNotFound(PackageRefused):
    """The package path does not exist or is neither a folder nor a file."""

    reason = "not_found"


class CorruptArchive(PackageRefused):
    """The zip file is truncated, corrupt, or not a zip file at all."""

    reason = "corrupt_archive"


class UnsafeArchive(PackageRefused):
    """The archive or folder holds an entry that must never be read.

    Absolute paths, ``..`` components, symbolic links, duplicate names, encrypted or oversized members.
    """

    reason = "unsafe_archive"


class SignatureRefused(PackageRefused):
    """Base of the signature failures."""

    reason = "signature"


class MissingSignature(SignatureRefused):
    """``manifest.sig`` is absent or empty."""

    reason = "missing_signature"


class UnknownKey(SignatureRefused):
    """The manifest was signed by a key that is not in the trust store."""

    reason = "unknown_key"


class BadSignature(SignatureRefused):
    """The signature is malformed or does not match ``manifest.json`` under the named key."""

    reason = "bad_signature"


class ManifestInvalid(PackageRefused):
    """``manifest.json`` is missing, not JSON, or does not follow the manifest schema."""

    reason = "manifest_invalid"


class MissingFile(PackageRefused):
    """A file listed in the manifest is not in the package."""

    reason = "missing_file"


class UnlistedFile(PackageRefused):
    """The package holds a file the manifest does not list (and therefore does not protect)."""

    reason = "unlisted_file"


class HashMismatch(PackageRefused):
    """A file's sha256 differs from the one in the signed manifest."""

    reason = "hash_mismatch"


class SpecIncompatible(PackageRefused):
    """The observation/action spec does not fit the process catalogue (or the site's tag map)."""

    reason = "spec_incompatible"


class AppVersionIncompatible(PackageRefused):
    """This console's version lies outside the package's ``min_app`` … ``max_app`` range."""

    reason = "app_version"


class PolicyGraphInvalid(PackageRefused):
    """An ONNX file cannot be opened or its inputs/outputs do not match the manifest."""

    reason = "onnx_invalid"


# --- inference -----------------------------------------------------------------------------------


class InferenceError(AgentRuntimeError):
    """A policy could not produce an action for this step."""


class ObservationRefused(InferenceError):
    """The observation cannot be used: tags missing, of bad quality, or not finite.

    Attributes:
        problems: Reason per offending tag, in manifest order.
    """

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        listed = "; ".join(f"{tag}: {why}" for tag, why in self.problems.items())
        super().__init__(f"observation refused ({len(self.problems)} tag(s)): {listed}")


class PolicyRuntimeError(InferenceError):
    """ONNX Runtime failed while running a policy, or the policy returned a non-finite action."""


__all__ = [
    "AgentRuntimeError",
    "AppVersionIncompatible",
    "BadSignature",
    "CorruptArchive",
    "HashMismatch",
    "InferenceError",
    "KeyFileError",
    "ManifestInvalid",
    "MissingFile",
    "MissingSignature",
    "ObservationRefused",
    "PackageNotFound",
    "PackageRefused",
    "PolicyGraphInvalid",
    "PolicyRuntimeError",
    "SignatureRefused",
    "SpecIncompatible",
    "UnknownKey",
    "UnlistedFile",
    "UnsafeArchive",
]
