"""The shipped agent packages: verified by the default trust store, served by the PolicyHost."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.agent_runtime.errors import HashMismatch
from app.agent_runtime.host import PolicyHost
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.package import verify_package
from app.config import ControlSettings
from app.domain import Slot
from app.plant.catalog import CATALOGS, RO_CATALOG
from tests.agent_runtime.policies import good, ro_measurements

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
SHIPPED = RESOURCES / "agents" / "ro"


@pytest.fixture
def trust() -> TrustStore:
    return TrustStore.load(RESOURCES / "trust")


def test_shipped_package_verifies_against_the_default_trust_store(trust: TrustStore) -> None:
    pkg = verify_package(SHIPPED, trust, catalog=RO_CATALOG)
    assert pkg.manifest.process == "ro"
    assert {a.tag for a in pkg.manifest.actions} >= {"feed_pressure_sp_bar", "feed_flow_sp_m3h"}
    assert any(name.startswith("ensemble/") for name in pkg.files)


def test_shipped_agent_answers_with_setpoints_inside_the_plc_limits(trust: TrustStore) -> None:
    host = PolicyHost(trust, RO_CATALOG, control=ControlSettings(inference_deadline_s=30.0))
    try:
        version = host.load(SHIPPED, Slot.ACTIVE).result(30)
        assert version.process == "ro"
        for fouling, pressure in ((0.0, 10.0), (0.5, 13.0), (1.0, 15.0)):
            result = host.infer(good(ro_measurements(fouling, pressure)), {}).result(30)
            assert result.active.ok, result.active
            assert result.action is not None
            for tag in ("feed_pressure_sp_bar", "feed_flow_sp_m3h"):
                spec = RO_CATALOG.tag(tag)
                assert spec.plc_low is not None and spec.plc_high is not None
                assert spec.plc_low <= result.action[tag] <= spec.plc_high, (tag, result.action)
    finally:
        host.close()


def test_a_tampered_copy_of_the_shipped_agent_is_refused(trust: TrustStore, tmp_path: Path) -> None:
    copy = tmp_path / "ro"
    shutil.copytree(SHIPPED, copy)
    onnx = copy / "policy.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(HashMismatch, match=r"policy\.onnx"):
        verify_package(copy, trust, catalog=RO_CATALOG)


def _model_measurements(process: str, steps: int) -> list[dict[str, float]]:
    """Noise-free measurements of a simulated plant of ``process`` under its base control."""
    from app.plant.baselines import make_baseline
    from app.plant.models import registry

    model = registry.model_class(process)(1)
    model.reset(np.random.default_rng(3))
    control = make_baseline("fixed_pi", process)
    control.reset(1, np.random.default_rng(0))
    dt = model.catalog.agent_period_s
    seen = []
    for k in range(steps):
        meas = model.measurements()
        seen.append({t: float(v[0]) for t, v in meas.items()})
        model.step(control.act(meas, k * dt, dt), {}, dt)
    return seen


@pytest.mark.parametrize(("process", "steps"), [("hsbro", 90), ("uf", 12)])
def test_shipped_hsbro_and_uf_agents_verify_and_act_inside_the_plc_limits(
    trust: TrustStore, process: str, steps: int
) -> None:
    catalog = CATALOGS[process]
    folder = RESOURCES / "agents" / process
    pkg = verify_package(folder, trust, catalog=catalog)
    assert pkg.manifest.process == process
    assert any(name.startswith("ensemble/") for name in pkg.files)
    assert "objectives_met_pct" in pkg.manifest.metrics
    host = PolicyHost(trust, catalog, control=ControlSettings(inference_deadline_s=30.0))
    try:
        assert host.load(folder, Slot.ACTIVE).result(30).process == process
        # States across a batch (HSBRO: semi-batch, batch, purge) or backwash cycles (UF).
        for meas in _model_measurements(process, steps)[:: max(steps // 10, 1)]:
            result = host.infer(good(meas), {}).result(30)
            assert result.active.ok, result.active
            assert result.action is not None
            for spec in pkg.manifest.actions:
                tag = catalog.tag(spec.tag)
                if tag.plc_low is not None and tag.plc_high is not None:
                    low, high = tag.plc_low, tag.plc_high
                else:
                    low, high = 0.0, 1.0
                assert low <= result.action[spec.tag] <= high, (spec.tag, result.action)
    finally:
        host.close()
