"""Real peers for the cloud tests: Azurite and azmlinfsrv, each started once per session.

Both are installed by ``make test-peers``; a missing binary fails the tests with that hint (never a
skip). Servers run on free loopback ports with temporary data folders and are terminated at the end
of the session. Output goes to log files (no reader threads).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.keys import TrustStore, public_key_of
from app.agent_runtime.manifest import ManifestFields, NormalisationStats, TagSpec, TrainingSummary
from app.agent_runtime.package import write_package
from app.plant.catalog import RO_CATALOG
from tests.agent_runtime.onnx_graphs import mlp_onnx, random_weights

REPO = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
SCORING_BIN = REPO / ".venv-scoring" / "bin" / "azmlinfsrv"
SDK_PYTHON = REPO / ".venv-azureml-sdk" / "bin" / "python"
SCORING_DOUBLE = REPO / "tests" / "cloud" / "scoring_double.py"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SCORING_KEY = "test-endpoint-key-7f3a"
DEPLOYMENT = "blue"


def require(binary: Path) -> Path:
    if not binary.exists():
        pytest.fail(f"{binary.relative_to(REPO)} is missing: run `make test-peers`", pytrace=False)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"server did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Azurite:
    """One azurite-blob process on a fixed port and data folder; stop/start keeps both."""

    def __init__(self, data: Path) -> None:
        self.binary = require(AZURITE_BIN)
        self.data = data
        self.port = free_port()
        self.log = data.parent / "azurite.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;"
        )

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--silent",
                    "--location",
                    str(self.data),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(self.port),
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, self.log, 30)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    root = tmp_path_factory.mktemp("azurite")
    server = Azurite(root / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def container_name() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


# --- signed test packages --------------------------------------------------------------------------

OBS_TAGS = tuple(t.name for t in RO_CATALOG.observations)
ACTIONS = (("feed_pressure_sp_bar", "bar", 6.0, 38.0), ("feed_flow_sp_m3h", "m3/h", 25.0, 65.0))


def _stats() -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([RO_CATALOG.tag(t).low for t in OBS_TAGS])
    hi = np.array([RO_CATALOG.tag(t).high for t in OBS_TAGS])
    return (lo + hi) / 2, (hi - lo) / 8


MEAN, STD = _stats()


def manifest_fields(version: str) -> ManifestFields:
    return ManifestFields(
        version=version,
        process="ro",
        created=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        parent_version=None,
        observations=tuple(
            TagSpec(
                tag=t,
                unit=RO_CATALOG.tag(t).unit,
                low=RO_CATALOG.tag(t).low,
                high=RO_CATALOG.tag(t).high,
            )
            for t in OBS_TAGS
        ),
        actions=tuple(TagSpec(tag=t, unit=u, low=lo, high=hi) for t, u, lo, hi in ACTIONS),
        normalisation=NormalisationStats(
            mean=tuple(MEAN),
            std=tuple(STD),
            train_low=tuple(MEAN - 2.5 * STD),
            train_high=tuple(MEAN + 2.5 * STD),
        ),
        training=TrainingSummary(algorithm="PPO", env_steps=1, seed=0, source="cloud tests"),
        metrics={},
        min_app="0.1",
        max_app=None,
    )


def _graph(seed: int) -> bytes:
    low = np.array([a[2] for a in ACTIONS])
    high = np.array([a[3] for a in ACTIONS])
    return mlp_onnx(
        random_weights(len(OBS_TAGS), len(ACTIONS), (16, 16), seed, MEAN, STD, low, high)
    )


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey
    trust: TrustStore
    trust_dir: Path

    def package(self, out: Path, version: str, seed: int = 0) -> Path:
        write_package(
            out,
            manifest_fields(version),
            _graph(seed),
            self.key,
            ensemble=[_graph(seed + 100)],
            extra_files={"report.md": b"# report\n"},
        )
        return out


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    key = Ed25519PrivateKey.generate()
    public = public_key_of(key, "cloud-test")
    trust_dir = tmp_path_factory.mktemp("trust")
    (trust_dir / "cloud-test.pub").write_text(public.to_text())
    return Signer(key, TrustStore([public]), trust_dir)


def typical_obs(shift: float = 0.0) -> dict[str, float]:
    return {t: float(m + shift * s) for t, m, s in zip(OBS_TAGS, MEAN, STD, strict=True)}


# --- the scoring server ------------------------------------------------------------------------------


@dataclass
class ScoringServer:
    url: str
    base: str
    model_dir: Path
    package: Path
    version: str
    log: Path


@pytest.fixture(scope="session")
def scoring_server(
    tmp_path_factory: pytest.TempPathFactory, signer: Signer
) -> Iterator[ScoringServer]:
    binary = require(SCORING_BIN)
    root = tmp_path_factory.mktemp("scoring")
    model = root / "model"
    version = "ro-cloud.1"
    signer.package(model / "agent", version)
    shutil.copytree(signer.trust_dir, model / "trust")
    port = free_port()
    log = root / "azmlinfsrv.log"
    env = {
        **os.environ,
        "AZUREML_MODEL_DIR": str(model),
        "INTELWATT_SCORING_EXPECTED_KEY": SCORING_KEY,
        "INTELWATT_SCORING_DEPLOYMENT": DEPLOYMENT,
        "HOME": str(root),
    }
    env.pop("PYTHONPATH", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "--entry_script",
                str(SCORING_DOUBLE),
                "--model_dir",
                str(model),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, log, 60)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"azmlinfsrv not healthy: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield ScoringServer(base + "/score", base, model, model / "agent", version, log)
    finally:
        stop_process(proc)
