"""Azure ML scoring script: the same signed agent package as on premises, behind ``POST /score``.

``init()`` verifies the agent package in the model folder against the trust store shipped beside it
(``<model>/agent/`` and ``<model>/trust/*.pub``; the folder may sit one or two levels below
``AZUREML_MODEL_DIR``, as Azure ML nests registered folders) and opens the ONNX sessions.
``run()`` answers the project's ``/score`` contract (library-notes.md §4.3)::

    request : {"schema": 1, "process": "ro", "policy_version": "...", "request_id": "...",
               "obs_ts": "2026-11-23T10:00:00Z", "obs": {"feed_pressure_bar": 55.1, ...}}
    response: {"schema": 1, "policy_version": "...", "request_id": "...",
               "action": {"feed_pressure_sp_bar": 55.6, ...}, "confidence": 0.93}

The action is ``EnsemblePolicy.act`` of the package's ``policy.onnx``, exactly as the local runtime
computes it; ``confidence`` is ``1 − uncertainty`` (``null`` without ensemble members).

``run`` takes the raw HTTP request (``@rawhttp``). In Azure the endpoint's front end authenticates
callers; when ``INTELWATT_SCORING_EXPECTED_KEY`` is set the script also checks
``Authorization: Bearer <key>`` itself (answering 401), and when ``INTELWATT_SCORING_DEPLOYMENT`` is
set a request pinned to another deployment gets 404. Status codes: 400 malformed request, 401, 404,
405 wrong method, 413 body over 1.5 MB, 422 observation refused by the policy (missing, out of range
for float32, not finite). An unexpected failure raises, which the server turns into 500.

The ``app`` package is found beside this script in the uploaded code folder (the deployment's
``code_configuration.code`` is the repository root).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CODE_ROOT = Path(__file__).resolve().parents[2]
if (_CODE_ROOT / "app" / "__init__.py").is_file() and str(_CODE_ROOT) not in sys.path:
    sys.path.insert(0, str(_CODE_ROOT))

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp  # noqa: E402
from azureml_inference_server_http.api.aml_response import AMLResponse  # noqa: E402

from app.agent_runtime.ensemble import EnsemblePolicy  # noqa: E402
from app.agent_runtime.errors import InferenceError, ObservationRefused  # noqa: E402
from app.agent_runtime.keys import TrustStore  # noqa: E402
from app.agent_runtime.observation import ObservationBuilder  # noqa: E402
from app.agent_runtime.package import VerifiedPackage, verify_package  # noqa: E402
from app.domain import Quality  # noqa: E402

log = logging.getLogger("intelwatt.score")

SCHEMA = 1
MAX_BODY_BYTES = 1_500_000
KEY_ENV = "INTELWATT_SCORING_EXPECTED_KEY"
DEPLOYMENT_ENV = "INTELWATT_SCORING_DEPLOYMENT"
AGENT_DIR = "agent"
TRUST_DIR = "trust"


@dataclass(frozen=True)
class LoadedAgent:
    """A verified package with its ONNX sessions (one worker process owns them)."""

    package: VerifiedPackage
    policy: EnsemblePolicy
    builder: ObservationBuilder

    @property
    def version(self) -> str:
        """Policy version from the manifest."""
        return self.package.manifest.version


class ScoringRequestError(Exception):
    """A request the script refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def find_model_root(base: Path) -> Path:
    """Folder under ``base`` (depth ≤ 2) that holds ``agent/manifest.json`` and ``trust/``."""
    candidates = [base, *sorted(p for p in base.glob("*") if p.is_dir())]
    candidates += sorted(p for p in base.glob("*/*") if p.is_dir())
    for folder in candidates:
        if (folder / AGENT_DIR / "manifest.json").is_file() and (folder / TRUST_DIR).is_dir():
            return folder
    raise FileNotFoundError(
        f"{base}: no '{AGENT_DIR}/manifest.json' with a '{TRUST_DIR}/' beside it"
    )


def load_agent(model_dir: Path) -> LoadedAgent:
    """Verify the package under ``model_dir`` and open its sessions.

    Raises:
        FileNotFoundError: No package/trust store layout found.
        PackageRefused: The package fails verification (signature, hashes, spec, app version).
    """
    root = find_model_root(model_dir)
    package = verify_package(root / AGENT_DIR, TrustStore.load(root / TRUST_DIR))
    return LoadedAgent(
        package=package,
        policy=EnsemblePolicy.from_package(package),
        builder=ObservationBuilder(package.manifest),
    )


def _parse(body: bytes, agent: LoadedAgent) -> tuple[str | None, dict[str, float]]:
    if len(body) > MAX_BODY_BYTES:
        raise ScoringRequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScoringRequestError(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ScoringRequestError(400, "body must be a JSON object")
    if doc.get("schema") != SCHEMA:
        raise ScoringRequestError(400, f"'schema' must be {SCHEMA}")
    if doc.get("process") != agent.package.manifest.process:
        raise ScoringRequestError(
            400, f"'process' must be {agent.package.manifest.process!r}, got {doc.get('process')!r}"
        )
    request_id = doc.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise ScoringRequestError(400, "'request_id' must be a string")
    obs = doc.get("obs")
    if not isinstance(obs, dict):
        raise ScoringRequestError(400, "'obs' must be an object of tag: number")
    values: dict[str, float] = {}
    for tag, value in obs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScoringRequestError(400, f"obs[{tag!r}] must be a number")
        values[str(tag)] = float(value)
    return request_id, values


def answer(body: bytes, agent: LoadedAgent) -> dict[str, Any]:
    """Compute the /score response for a request body.

    Raises:
        ScoringRequestError: Malformed request (400/413) or refused observation (422).
    """
    request_id, values = _parse(body, agent)
    try:
        obs = agent.builder.build({t: (v, Quality.GOOD) for t, v in values.items()})
        result = agent.policy.act(obs)
    except ObservationRefused as exc:
        raise ScoringRequestError(422, str(exc)) from None
    except InferenceError as exc:
        raise ScoringRequestError(422, str(exc)) from None
    action = {
        tag: float(v) for tag, v in zip(agent.policy.policy.action_tags, result.action, strict=True)
    }
    if not all(math.isfinite(v) for v in action.values()):
        raise RuntimeError("policy produced a non-finite action")
    confidence = None if result.uncertainty is None else max(0.0, 1.0 - float(result.uncertainty))
    return {
        "schema": SCHEMA,
        "policy_version": agent.version,
        "request_id": request_id,
        "action": action,
        "confidence": confidence,
    }


def check_headers(headers: Any) -> None:
    """Apply the optional key and deployment checks.

    Raises:
        ScoringRequestError: 401 for a missing or wrong key, 404 for another deployment.
    """
    expected_key = os.environ.get(KEY_ENV)
    if expected_key:
        given = str(headers.get("Authorization") or "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected_key}".encode()):
            raise ScoringRequestError(401, "missing or invalid bearer key")
    deployment = os.environ.get(DEPLOYMENT_ENV)
    pinned = headers.get("azureml-model-deployment")
    if deployment and pinned and pinned != deployment:
        raise ScoringRequestError(404, f"deployment {pinned!r} not found")


def _json(doc: dict[str, Any], status: int) -> AMLResponse:
    return AMLResponse(doc, status, json_str=True)


_agent: LoadedAgent | None = None


def init() -> None:
    """Load and verify the agent package from ``AZUREML_MODEL_DIR`` (once per worker)."""
    global _agent
    _agent = load_agent(Path(os.environ["AZUREML_MODEL_DIR"]))
    log.info("loaded agent %s (%s)", _agent.version, _agent.package.version.sha256[:16])


@rawhttp
def run(request: AMLRequest) -> AMLResponse:
    """Answer one ``/score`` request (see the module docstring for the contract)."""
    if _agent is None:
        raise RuntimeError("init() did not load an agent")
    try:
        check_headers(request.headers)
        if request.method != "POST":
            raise ScoringRequestError(405, "use POST")
        return _json(answer(request.get_data(cache=False), _agent), 200)
    except ScoringRequestError as exc:
        return _json({"error": str(exc)}, exc.status)
