"""PolicyHost: verified loading into slots, shadow inference, swaps under load, deadlines, faults."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.agent_runtime.errors import (
    CorruptArchive,
    HashMismatch,
    MissingFile,
    PackageRefused,
    PolicyGraphInvalid,
    SpecIncompatible,
    UnknownKey,
)
from app.agent_runtime.fallback import FallbackEvent
from app.agent_runtime.host import (
    DeadlineMissed,
    ErrorKind,
    HostClosed,
    InferenceResult,
    PolicyHost,
    SlotEmpty,
    SlotOccupied,
    SwapResult,
    bumpless,
    fallback_events,
)
from app.agent_runtime.keys import TrustStore
from app.agent_runtime.manifest import TagSpec
from app.agent_runtime.shadow import GateThresholds
from app.concurrency import SerialWorker
from app.config import ControlSettings, ModePolicy, TagLimits
from app.domain import Quality, Slot
from app.plant.catalog import RO_CATALOG
from tests.agent_runtime.conftest import (
    MEAN,
    OBS_TAGS,
    PackageFactory,
    action_spec,
    manifest_fields,
)
from tests.agent_runtime.onnx_graphs import lookup_onnx
from tests.agent_runtime.policies import constant_onnx, good, ro_measurements

PRESSURE, FLOW = "feed_pressure_sp_bar", "feed_flow_sp_m3h"
OBS = good(ro_measurements())
NO_LAST: dict[str, float] = {}


@pytest.fixture
def host(trust_store: TrustStore) -> Iterator[PolicyHost]:
    h = PolicyHost(trust_store, RO_CATALOG, control=ControlSettings(inference_deadline_s=30.0))
    yield h
    h.close()


def constant(make_package: PackageFactory, pressure: float, flow: float, version: str) -> Path:
    return make_package(policy=constant_onnx([pressure, flow]), ensemble=(), version=version)


def infer(host: PolicyHost, obs: object = OBS, last: dict[str, float] = NO_LAST) -> InferenceResult:
    return host.infer(obs, last).result(timeout=10)  # type: ignore[arg-type]


def test_infer_runs_active_and_candidate_on_one_observation(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    a = host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    c = host.load(constant(make_package, 14.0, 40.0, "ro-c")).result(10)
    assert (host.versions.active, host.versions.candidate) == (a, c)
    r = infer(host)
    assert r.active.version == a and r.active.action == {PRESSURE: 12.0, FLOW: 40.0}
    assert r.candidate is not None and r.candidate.action == {PRESSURE: 14.0, FLOW: 40.0}
    assert r.previous is None
    assert r.action == r.active.action and r.ramp_limited == ()
    assert r.active.ood is not None and r.active.ood.score >= 0.0
    assert r.active.elapsed_s > 0.0 and r.elapsed_s >= r.active.elapsed_s
    assert r.events() == (FallbackEvent.ACTIVE_OK,)
    stats = host.shadow_stats().result(10)
    assert stats is not None and stats.steps == 1
    assert stats.divergence_max == pytest.approx(2.0 / 32.0)  # 2 bar of the 6-38 bar range


def test_ensemble_uncertainty_reaches_the_result(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    host.load(make_package(version="ro-e"), Slot.ACTIVE).result(10)
    r = infer(host)
    assert r.active.uncertainty is not None and 0.0 < r.active.uncertainty <= 1.0


def _hash_mismatch(folder: Path) -> Path:
    (folder / "policy.onnx").write_bytes((folder / "policy.onnx").read_bytes() + b"\0")
    return folder


def _missing_member(folder: Path) -> Path:
    (folder / "ensemble" / "member_00.onnx").unlink()
    return folder


def _corrupt_zip(folder: Path) -> Path:
    zipped = folder.with_suffix(".zip")
    zipped.write_bytes(b"PK\x03\x04 truncated")
    shutil.rmtree(folder)
    return zipped


REFUSALS = {
    "hash_mismatch": (lambda make, key: _hash_mismatch(make()), HashMismatch),
    "missing_file": (lambda make, key: _missing_member(make()), MissingFile),
    "corrupt_zip": (lambda make, key: _corrupt_zip(make()), CorruptArchive),
    "unknown_key": (lambda make, key: make(key=Ed25519PrivateKey.generate()), UnknownKey),
    "spec": (
        lambda make, key: make(
            actions=(TagSpec(tag="feed_pressure_bar", unit="bar", low=6, high=38),
                     action_spec()[1])
        ),
        SpecIncompatible,
    ),
    "onnx_invalid": (
        lambda make, key: make(policy=b"not onnx", ensemble=(), check_graphs=False),
        PolicyGraphInvalid,
    ),
    "not_found": (lambda make, key: Path("/nonexistent/package"), PackageRefused),
}  # fmt: skip


@pytest.mark.parametrize("slot", [Slot.CANDIDATE, Slot.PREVIOUS])
@pytest.mark.parametrize("kind", list(REFUSALS))
def test_every_refusal_keeps_the_working_slots(
    host: PolicyHost,
    make_package: PackageFactory,
    signing_key: Ed25519PrivateKey,
    kind: str,
    slot: Slot,
) -> None:
    host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    working = host.load(constant(make_package, 14.0, 41.0, "ro-w"), slot).result(10)
    before = host.versions
    build, error = REFUSALS[kind]
    with pytest.raises(error):
        host.load(build(make_package, signing_key), slot).result(10)  # type: ignore[no-untyped-call]
    assert host.versions == before and before.of(slot) == working
    r = infer(host, last={}, obs=OBS)
    assert r.active.action == {PRESSURE: 12.0, FLOW: 40.0}
    if slot is Slot.CANDIDATE:
        assert r.candidate is not None and r.candidate.action == {PRESSURE: 14.0, FLOW: 41.0}


def test_the_active_slot_is_loaded_only_when_empty(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    with pytest.raises(SlotEmpty):
        infer(host)
    a = host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    with pytest.raises(SlotOccupied, match="holds ro-a; load the package as candidate"):
        host.load(constant(make_package, 13.0, 40.0, "ro-b"), Slot.ACTIVE).result(10)
    assert host.versions.active == a


def test_nan_observation_is_refused_for_both_slots(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    host.load(constant(make_package, 13.0, 40.0, "ro-c")).result(10)
    obs = dict(OBS)
    obs["feed_ph"] = (float("nan"), Quality.GOOD)
    obs["tank_level_pct"] = (50.0, Quality.BAD)
    r = infer(host, obs)
    assert r.action is None
    for outcome in (r.active, r.candidate):
        assert outcome is not None and outcome.error_kind is ErrorKind.OBSERVATION_REFUSED
        assert "feed_ph: not finite" in (outcome.error or "")
        assert "tank_level_pct: quality bad" in (outcome.error or "")
    assert r.events() == (FallbackEvent.OBSERVATION_REFUSED,)
    # A refused observation is not held against the candidate.
    stats = host.shadow_stats().result(10)
    assert stats is not None and (stats.steps, stats.candidate_errors) == (0, 0)


def test_onnx_runtime_error_is_an_active_error_and_a_candidate_failure(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    # The lookup graph fails at run time when obs[0] (feed_pressure_bar) is 4 or more.
    norm = manifest_fields().normalisation.model_copy(update={"mean": (1.0, 4.0, *MEAN[2:])})
    lookup = make_package(
        policy=lookup_onnx(len(OBS_TAGS), 2), ensemble=(), version="ro-lookup", normalisation=norm
    )
    host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    host.load(lookup).result(10)
    fine = dict(OBS)
    fine["feed_pressure_bar"] = (2.0, Quality.GOOD)
    r = infer(host, fine)
    assert r.candidate is not None and r.candidate.action == {PRESSURE: 14.0, FLOW: 15.0}
    r = infer(host)  # feed pressure 12 bar: row 12 of a 4-row table
    assert r.active.ok and r.candidate is not None and not r.candidate.ok
    assert r.candidate.error_kind is ErrorKind.RUNTIME_ERROR
    assert "ONNX Runtime failed" in (r.candidate.error or "")
    s = host.shadow_stats().result(10)
    assert s is not None and (s.steps, s.candidate_errors) == (1, 1)
    # The same graph as the active agent is a fault of the agent in charge.
    report = host.gate_report(ModePolicy(min_shadow_steps=1), GateThresholds(0, 0, 0, 1)).result(10)
    assert report.passed, report.failures
    assert host.promote(report).result(10).accepted
    r = infer(host)
    assert r.action is None and r.active.error_kind is ErrorKind.RUNTIME_ERROR
    assert r.events() == (FallbackEvent.ACTIVE_ERROR,)
    r = host.infer(OBS, {}, include_previous=True).result(10)
    assert r.previous is not None and r.previous.action == {PRESSURE: 12.0, FLOW: 40.0}
    assert r.events() == (FallbackEvent.ACTIVE_ERROR, FallbackEvent.PREVIOUS_OK)


def test_deadline_miss_fails_the_future_and_discards_the_late_result(
    trust_store: TrustStore, make_package: PackageFactory
) -> None:
    worker = SerialWorker("agent-test")
    host = PolicyHost(
        trust_store, RO_CATALOG, control=ControlSettings(inference_deadline_s=0.05), worker=worker
    )
    try:
        host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
        release = threading.Event()
        worker.submit(release.wait, 10)  # a job that hogs the worker
        late = host.infer(OBS, {})
        assert isinstance(late.exception(timeout=10), DeadlineMissed)
        assert fallback_events(late) == (FallbackEvent.DEADLINE_MISS,)
        release.set()
        r = host.infer(OBS, {})
        assert fallback_events(r) == (FallbackEvent.ACTIVE_OK,)
        counters = host.counters
        assert (counters.deadline_misses, counters.late_results) == (1, 1)
    finally:
        host.close()
    with pytest.raises(HostClosed):
        host.infer(OBS, {})


def test_bumpless_ramp_after_a_swap(trust_store: TrustStore, make_package: PackageFactory) -> None:
    limits = {PRESSURE: TagLimits(engineer_low=5, engineer_high=40, max_move=0.5)}
    host = PolicyHost(trust_store, RO_CATALOG, limits=limits)
    try:
        host.load(constant(make_package, 14.0, 45.0, "ro-a"), Slot.ACTIVE).result(10)
        last = {PRESSURE: 12.0, FLOW: 40.0}
        r = infer(host, last=last)
        # Site max move 0.5 bar for pressure; catalogue max move 4 m3/h for flow.
        assert r.action == {PRESSURE: 12.5, FLOW: 44.0}
        assert r.ramp_limited == (PRESSURE, FLOW)
        assert r.active.action == {PRESSURE: 14.0, FLOW: 45.0}  # raw action kept
        last = {PRESSURE: 13.6, FLOW: 44.0}
        r = infer(host, last=last)
        assert r.action == {PRESSURE: 14.0, FLOW: 45.0} and r.ramp_limited == ()
        last = {PRESSURE: 10.0, FLOW: 40.0}
        assert infer(host, last=last).action == {PRESSURE: 14.0, FLOW: 45.0}  # ramp over
    finally:
        host.close()


def test_bumpless_is_pure() -> None:
    action, limited = bumpless(
        {PRESSURE: 20.0, FLOW: 30.0, "cip_request": 1.0},
        {PRESSURE: 12.0, FLOW: 31.0},
        {PRESSURE: 1.0, FLOW: 4.0, "cip_request": None},
    )
    assert action == {PRESSURE: 13.0, FLOW: 30.0, "cip_request": 1.0}
    assert limited == (PRESSURE,)


def test_promotion_is_refused_without_passing_matching_evidence(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    a = host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    c = host.load(constant(make_package, 12.0, 40.0, "ro-c")).result(10)
    infer(host)
    failing = host.gate_report(ModePolicy(min_shadow_steps=5)).result(10)
    refused = host.promote(failing).result(10)
    assert not refused.accepted and "shadow_steps: 1 shadow steps, 5 required" in refused.reason
    assert host.versions.active == a and host.versions.candidate == c
    passing = host.gate_report(ModePolicy(min_shadow_steps=1), GateThresholds(0, 0, 0)).result(10)
    assert passing.passed
    host.load(constant(make_package, 12.0, 40.0, "ro-d")).result(10)  # a new candidate
    stale = host.promote(passing).result(10)
    assert not stale.accepted and "evidence is about candidate ro-c" in stale.reason
    assert host.rollback("no previous yet").result(10).accepted is False


def test_promote_on_twin_kpi_evidence_then_rollback(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    a = host.load(constant(make_package, 12.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    c = host.load(constant(make_package, 13.0, 40.0, "ro-c")).result(10)
    with pytest.raises(SlotEmpty):
        host.shadow_kpi(OBS).result(10)
    last = {PRESSURE: 12.0, FLOW: 40.0}
    for _ in range(3):
        infer(host, last=last)
    preview = host.shadow_kpi(OBS, last, horizon_s=1800.0).result(10)
    assert preview.available
    assert (
        preview.scenarios["candidate"].permeate_flow_m3h[-1]
        > (preview.scenarios["active"].permeate_flow_m3h[-1])
    )
    report = host.gate_report(ModePolicy(min_shadow_steps=3)).result(10)
    assert report.passed, report.failures
    assert report.stats.kpi_samples == 1 and (report.stats.kpi_gain_eur_h or 0) > 0
    promoted = host.promote(report).result(10)
    assert promoted.accepted and promoted.evidence is report
    assert (promoted.old_active, promoted.new_active, promoted.previous) == (a, c, a)
    assert host.versions.candidate is None
    back = host.rollback("operator: permeate quality").result(10)
    assert back.accepted and (back.old_active, back.new_active, back.previous) == (c, a, c)
    assert back.reason == "operator: permeate quality"


def test_preview_job_filters_commands_and_reports_other_processes(
    host: PolicyHost,
) -> None:
    result = host.preview(
        OBS, {"rec": {PRESSURE: 13.0, "cip_request": 0.0}}, {PRESSURE: 12.0, FLOW: 40.0},
        horizon_s=1800.0,
    ).result(10)  # fmt: skip
    assert result.available
    assert result.scenarios["rec"].setpoints == {PRESSURE: 13.0, FLOW: 40.0}


def test_swaps_under_continuous_inference_from_another_thread(
    host: PolicyHost, make_package: PackageFactory
) -> None:
    """1,000 inferences while promoting once and rolling back 49 times: all consistent."""
    a = host.load(constant(make_package, 11.0, 40.0, "ro-a"), Slot.ACTIVE).result(10)
    b = host.load(constant(make_package, 22.0, 50.0, "ro-b")).result(10)
    expected = {a: {PRESSURE: 11.0, FLOW: 40.0}, b: {PRESSURE: 22.0, FLOW: 50.0}}
    infer(host)
    report = host.gate_report(ModePolicy(min_shadow_steps=1), GateThresholds(0, 0, 0)).result(10)
    futures: list[object] = []

    def control_loop() -> None:
        for _ in range(1000):
            futures.append(host.infer(OBS, {}))

    loop = threading.Thread(target=control_loop, name="control-loop")
    loop.start()
    swaps: list[SwapResult] = [host.promote(report).result(10)]
    for i in range(49):
        swaps.append(host.rollback(f"swap {i}").result(10))
    loop.join()
    results = [f.result(10) for f in futures]  # type: ignore[attr-defined]
    assert all(s.accepted for s in swaps)
    events: list[tuple[int, InferenceResult | SwapResult]] = sorted(
        [(r.seq, r) for r in results] + [(s.seq, s) for s in swaps], key=lambda e: e[0]
    )
    assert len({e[0] for e in events}) == len(events)  # one job, one number
    current, changes = a, 0
    for _, item in events:
        if isinstance(item, SwapResult):
            assert item.old_active == current and item.new_active is not None
            current = item.new_active
            continue
        r = item
        if r.active.version != current:
            changes += 1
        assert r.active.version == current
        assert r.active.action == expected[current]
    assert changes == 0
    assert host.versions.active == current == a  # promote, then an odd number of rollbacks
    assert host.counters.deadline_misses == 0
