"""A signed RO agent package and a site file pointing at it, for the self-test and bundle tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.keys import public_key_of
from app.agent_runtime.package import write_package
from app.config import default_site_path
from tests.agent_runtime.conftest import manifest_fields, weights
from tests.agent_runtime.onnx_graphs import mlp_onnx


@dataclass(frozen=True)
class AgentSite:
    site: Path
    package: Path
    trust: Path


def site_text(package: Path, trust: Path, demo_text: str | None = None) -> str:
    """The demo site file with its [agents] package and trust store replaced."""
    text = demo_text if demo_text is not None else default_site_path().read_text(encoding="utf-8")
    text, n1 = re.subn(r'(?m)^package = ".*?"', f'package = "{package.as_posix()}"', text)
    text, n2 = re.subn(r'(?m)^trust_store = ".*?"', f'trust_store = "{trust.as_posix()}"', text)
    assert (n1, n2) == (1, 1), "the demo site file no longer has the [agents] keys this edits"
    return text


@pytest.fixture(scope="session")
def agent_site(tmp_path_factory: pytest.TempPathFactory) -> AgentSite:
    root = tmp_path_factory.mktemp("agent-site")
    key = Ed25519PrivateKey.generate()
    package = root / "agent-ro"
    write_package(package, manifest_fields(version="ro-selftest.1"), mlp_onnx(weights(0)), key)
    trust = root / "trust"
    trust.mkdir()
    (trust / "selftest.pub").write_text(public_key_of(key, "selftest").to_text(), encoding="utf-8")
    site = root / "site.toml"
    site.write_text(site_text(package, trust), encoding="utf-8")
    return AgentSite(site, package, trust)
