"""``manifest.json`` of an agent package: the schema, canonical JSON, and its checks.

The manifest is the only file that is signed; it protects every other file through its sha256. It is
written as canonical JSON (sorted keys, no insignificant white space, UTF-8, no NaN) so that the same
content always gives the same bytes and the same signature.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from app.agent_runtime.errors import ManifestInvalid

MANIFEST_SCHEMA = 1
"""Manifest schema version this console writes and reads."""

MANIFEST_FILE = "manifest.json"
POLICY_FILE = "policy.onnx"
ENSEMBLE_DIR = "ensemble"

_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,99}){0,3}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_APP_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_FORBIDDEN_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".zip", ".npz", ".npy")
_RESERVED = ("manifest.json", "manifest.sig")

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]
TagName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
AppVersion = Annotated[str, Field(pattern=_APP_VERSION.pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class TagSpec(_Strict):
    """One observation or action of the policy, in engineering units.

    Attributes:
        tag: Logical tag name from the process catalogue.
        unit: Engineering unit; must equal the catalogue's.
        low: Lower end of the range the policy was trained on (actions: lowest output).
        high: Upper end of that range (actions: highest output).
    """

    tag: TagName
    unit: str = Field(max_length=16)
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> TagSpec:
        if not self.low < self.high:
            raise ValueError(f"tag {self.tag!r}: low ({self.low}) must be below high ({self.high})")
        return self


class NormalisationStats(_Strict):
    """Statistics of the training observations, one entry per observation in manifest order.

    Used for the out-of-distribution score at run time (the policy graph normalises by itself).

    Attributes:
        mean: Mean of each observation over the training data.
        std: Standard deviation (strictly positive; add a small epsilon for constant inputs).
        train_low: Smallest value of each observation seen in training.
        train_high: Largest value seen in training.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_low: tuple[float, ...]
    train_high: tuple[float, ...]

    @model_validator(mode="after")
    def _consistent(self) -> NormalisationStats:
        n = len(self.mean)
        if not (len(self.std) == len(self.train_low) == len(self.train_high) == n):
            raise ValueError(
                "mean, std, train_low and train_high must have the same length "
                f"(got {n}, {len(self.std)}, {len(self.train_low)}, {len(self.train_high)})"
            )
        for i, s in enumerate(self.std):
            if not s > 0:
                raise ValueError(f"std[{i}] must be > 0, got {s}")
        for i, (lo, hi) in enumerate(zip(self.train_low, self.train_high, strict=True)):
            if lo > hi:
                raise ValueError(f"train_low[{i}] ({lo}) exceeds train_high[{i}] ({hi})")
        return self


class TrainingSummary(_Strict):
    """Where the policy came from.

    Attributes:
        algorithm: e.g. ``PPO`` or ``SAC``.
        env_steps: Environment steps trained on.
        seed: Training seed, if any.
        source: What the data was: ``simulator ro, ±20 % parameter randomisation``, a ledger range, ….
        details: Anything else worth keeping (JSON values).
    """

    algorithm: str = Field(min_length=1, max_length=64)
    env_steps: int = Field(ge=0)
    seed: int | None = None
    source: str = Field(min_length=1, max_length=1000)
    details: dict[str, JsonValue] = {}


def app_version_tuple(text: str) -> tuple[int, int, int]:
    """``"1.2"`` → ``(1, 2, 0)``; a suffix after the numeric part (``0.3.0.dev1``) is ignored.

    Raises:
        ValueError: ``text`` does not start with a dotted number.
    """
    match = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"{text!r} is not a version number like 1.2.3")
    major, minor, patch = (int(g) if g is not None else 0 for g in match.groups())
    return major, minor, patch


class ManifestFields(_Strict):
    """Everything in a manifest except the file hashes, which :func:`write_package` computes.

    Attributes:
        schema_version: Manifest schema version (:data:`MANIFEST_SCHEMA`).
        version: Agent version, e.g. ``ro-2025.06.1``.
        process: Process the agent controls (``ro``, ``hsbro``, ``uf``).
        created: Creation time, timezone-aware.
        parent_version: Version this one was retrained from, if any.
        observations: Observation vector, in the order the policy expects it.
        actions: Action vector, in the order the policy outputs it (setpoints/commands).
        normalisation: Training-observation statistics for the OOD score.
        training: Training-data summary.
        metrics: Evaluation results (free-form JSON: numbers, strings, nested tables).
        min_app: Oldest console version that may load the package (inclusive).
        max_app: Newest console version that may load it (inclusive); ``None`` for no upper bound.
    """

    schema_version: int = MANIFEST_SCHEMA
    version: Name
    process: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")]
    created: datetime
    parent_version: Name | None = None
    observations: tuple[TagSpec, ...] = Field(min_length=1, max_length=1024)
    actions: tuple[TagSpec, ...] = Field(min_length=1, max_length=64)
    normalisation: NormalisationStats
    training: TrainingSummary
    metrics: dict[str, JsonValue] = {}
    min_app: AppVersion
    max_app: AppVersion | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ManifestFields:
        if self.schema_version != MANIFEST_SCHEMA:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported "
                f"(this console reads version {MANIFEST_SCHEMA})"
            )
        if self.created.tzinfo is None:
            raise ValueError("created must carry a time zone (use UTC)")
        for label, specs in (("observations", self.observations), ("actions", self.actions)):
            names = [s.tag for s in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{label} list tags more than once: {', '.join(dupes)}")
        if len(self.normalisation.mean) != len(self.observations):
            raise ValueError(
                f"normalisation has {len(self.normalisation.mean)} entries but there are "
                f"{len(self.observations)} observations"
            )
        if self.max_app is not None and app_version_tuple(self.max_app) < app_version_tuple(
            self.min_app
        ):
            raise ValueError(f"max_app {self.max_app} is older than min_app {self.min_app}")
        return self

    @property
    def observation_tags(self) -> tuple[str, ...]:
        """Observation tag names in policy input order."""
        return tuple(s.tag for s in self.observations)

    @property
    def action_tags(self) -> tuple[str, ...]:
        """Action tag names in policy output order."""
        return tuple(s.tag for s in self.actions)


def check_package_path(path: str) -> str:
    """Validate a file path as listed in a manifest; return it.

    Raises:
        ValueError: Not a safe relative POSIX path, reserved, or a pickle/checkpoint file.
    """
    if not _PATH.match(path):
        raise ValueError(
            f"file path {path!r} must be relative, '/'-separated, at most 4 levels, made of "
            "letters, digits, '.', '_' and '-' (no '..', no leading dot)"
        )
    if path in _RESERVED:
        raise ValueError(f"{path!r} is never listed in the manifest")
    if path.lower().endswith(_FORBIDDEN_SUFFIXES):
        raise ValueError(f"{path!r}: packages never carry pickles or training checkpoints")
    if path.endswith(".onnx") and path != POLICY_FILE:
        parent, _, _ = path.rpartition("/")
        if parent != ENSEMBLE_DIR:
            raise ValueError(
                f"{path!r}: ONNX files are {POLICY_FILE} or {ENSEMBLE_DIR}/<name>.onnx only"
            )
    return path


class Manifest(ManifestFields):
    """The whole ``manifest.json``.

    Attributes:
        files: sha256 (64 lowercase hex digits) of every file of the package except
            ``manifest.json`` and ``manifest.sig``, by relative POSIX path.
    """

    files: dict[str, str]

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        for path, digest in files.items():
            check_package_path(path)
            if not _SHA256.match(digest):
                raise ValueError(f"{path!r}: {digest!r} is not a lowercase sha256 hex digest")
        if POLICY_FILE not in files:
            raise ValueError(f"must list {POLICY_FILE}")
        return files

    @property
    def ensemble_files(self) -> tuple[str, ...]:
        """Paths of the ensemble members, sorted."""
        return tuple(sorted(p for p in self.files if p.startswith(f"{ENSEMBLE_DIR}/")))


def canonical_json(document: Any) -> bytes:
    """Serialise ``document`` canonically: sorted keys, ``,``/``:`` separators, UTF-8, no NaN."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def manifest_bytes(manifest: ManifestFields) -> bytes:
    """The canonical ``manifest.json`` bytes of ``manifest``."""
    return canonical_json(manifest.model_dump(mode="json"))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"key(s) given more than once: {', '.join(dupes)}")
    return dict(pairs)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate ``manifest.json`` bytes.

    Raises:
        ManifestInvalid: Not UTF-8 JSON, duplicate keys, or schema violations (one per line, each
            naming its field).
    """
    try:
        document = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError:
        raise ManifestInvalid(MANIFEST_FILE, "not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise ManifestInvalid(MANIFEST_FILE, f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestInvalid(MANIFEST_FILE, "the top level must be a JSON object")
    try:
        return Manifest.model_validate_json(canonical_json(document))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "(manifest)"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ManifestInvalid(MANIFEST_FILE, "; ".join(problems)) from None


def build_manifest(fields: ManifestFields, files: dict[str, str]) -> Manifest:
    """Combine ``fields`` and the file hashes into a :class:`Manifest` (validated as it is read).

    Raises:
        ManifestInvalid: The combination breaks the schema (e.g. a bad file path).
    """
    document = fields.model_dump(mode="json")
    document["files"] = dict(files)
    return parse_manifest(canonical_json(document))


__all__ = [
    "ENSEMBLE_DIR",
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA",
    "POLICY_FILE",
    "Manifest",
    "ManifestFields",
    "NormalisationStats",
    "TagSpec",
    "TrainingSummary",
    "app_version_tuple",
    "build_manifest",
    "canonical_json",
    "check_package_path",
    "manifest_bytes",
    "parse_manifest",
]
