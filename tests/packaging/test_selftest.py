"""``intelwatt --self-test`` against the embedded plant: passes on a good install, names the step
that fails on a broken one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.keys import public_key_of
from app.config import TagLimits
from app.selftest import _toward, main, resolve_path, run_self_test
from tests.packaging.conftest import AgentSite, site_text

STEPS = [
    "site",
    "gui",
    "plant",
    "driver.opcua",
    "driver.modbus",
    "agent.verify",
    "agent.infer",
    "control",
    "core",
]


@pytest.mark.slow
def test_passes_on_the_demo_site_with_a_signed_agent(agent_site: AgentSite) -> None:
    report = run_self_test(agent_site.site, gui=True, cycles=2)
    assert [s.name for s in report.steps] == STEPS, report.steps
    assert report.ok, [s for s in report.steps if s.status == "FAILED"]
    by_name = {s.name: s for s in report.steps}
    assert "read all 29 ro tags GOOD" in by_name["driver.opcua"].detail
    assert "read all 29 ro tags GOOD" in by_name["driver.modbus"].detail
    assert "ro-selftest.1" in by_name["agent.verify"].detail
    # The agent's ramped setpoints went through the envelope and the plant holds them.
    assert "plant holds feed_pressure_sp_bar=" in by_name["control"].detail
    assert "agent ro-selftest.1 active" in by_name["core"].detail
    assert "PLC connected" in by_name["core"].detail


def test_a_missing_site_file_fails_at_the_site_step(tmp_path: Path) -> None:
    report = run_self_test(tmp_path / "nope.toml", gui=False)
    assert not report.ok
    assert report.failed_step == "site"
    assert [s.name for s in report.steps] == ["site"]
    assert "file not found" in report.steps[0].detail


@pytest.mark.slow
def test_a_tampered_agent_fails_at_agent_verify(agent_site: AgentSite, tmp_path: Path) -> None:
    package = tmp_path / "agent"
    shutil.copytree(agent_site.package, package)
    policy = package / "policy.onnx"
    data = bytearray(policy.read_bytes())
    data[-1] ^= 0xFF
    policy.write_bytes(bytes(data))
    site = tmp_path / "site.toml"
    site.write_text(site_text(package, agent_site.trust), encoding="utf-8")

    report = run_self_test(site, gui=False)

    assert report.failed_step == "agent.verify"
    failed = report.steps[-1]
    assert "policy.onnx" in failed.detail and "sha256" in failed.detail
    # Everything before the agent passed; nothing after it ran.
    assert [s.status for s in report.steps[:-1]] == ["ok", "skipped", "ok", "ok", "ok"]


@pytest.mark.slow
def test_an_untrusted_signer_fails_at_agent_verify(agent_site: AgentSite, tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    trust.mkdir()
    other = public_key_of(Ed25519PrivateKey.generate(), "someone-else")
    (trust / "other.pub").write_text(other.to_text(), encoding="utf-8")
    site = tmp_path / "site.toml"
    site.write_text(site_text(agent_site.package, trust), encoding="utf-8")

    report = run_self_test(site, gui=False)

    assert report.failed_step == "agent.verify"
    assert "refused" in report.steps[-1].detail


def test_main_reports_the_failed_step_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--site", str(tmp_path / "nope.toml"), "--no-gui"]) == 1
    out = capsys.readouterr().out
    assert "self-test FAILED at step site" in out
    assert main(["--site", str(tmp_path / "nope.toml"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] is False and report["failed_step"] == "site"
    assert main(["--cycles", "0"]) == 2
    assert "--cycles must be at least 1" in capsys.readouterr().err


def test_setpoint_moves_are_limited_like_the_envelope_limits_them() -> None:
    limits = TagLimits(
        engineer_low=6.0, engineer_high=16.0, operator_low=7.0, operator_high=15.0, max_move=1.5
    )
    assert _toward(12.0, 18.0, limits, tag_max_move=1.0) == 13.0  # catalogue per-step limit
    assert _toward(12.0, 18.0, limits, tag_max_move=None) == 13.5  # site max_move
    assert _toward(14.8, 18.0, limits, tag_max_move=None) == 15.0  # operator high
    assert _toward(7.2, 0.0, limits, tag_max_move=None) == 7.0  # operator low
    assert _toward(12.0, 12.4, limits, tag_max_move=1.0) == 12.4  # within one move


def test_relative_site_paths_resolve_against_the_install_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = resolve_path(Path("resources/sites/demo-ro.toml"))
    assert resolved.is_absolute() and resolved.is_file()
    assert resolve_path(Path("resources/no-such")) == Path("resources/no-such")
