"""Fault matrix, storage side: ledger disk full, outbox disk limit, Azurite down for a week.

A full disk for the ledger is a real ``SQLITE_FULL`` from SQLite (``PRAGMA max_page_count`` pinned
to the current size), the same error path as a full file system, without root tricks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob.aio import ContainerClient

from app.cloud.events import OutboxLevel, OutboxLevelChanged
from app.cloud.outbox import EnqueueResult, Outbox, OutboxDrainer, OutboxLimits, RecordKind
from app.cloud.storage import open_container
from app.controllers.ledger import verify
from app.controllers.messages import WriteOutcomeKind
from app.domain import Origin, Role, Setpoint
from tests.cloud.conftest import Azurite, azurite, container_name  # noqa: F401 - fixtures
from tests.reliability.conftest import P, PlcRig, wait_for

RigFactory = Callable[..., PlcRig]
WEEK_STEPS = 7 * 24 * 12  # one control step every 5 minutes for a week


def _pin_ledger_size(rig: PlcRig, full: bool) -> None:
    conn = rig.core.ledger._conn

    def pin() -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages if full else 2**30}")

    rig.core._call(pin)


@pytest.mark.slow
def test_ledger_disk_full_refuses_writes_raises_the_alarm_and_hands_back(
    plc_rig_factory: RigFactory,
) -> None:
    rig = plc_rig_factory("opcua")
    rig.enter_automatic()
    wait_for("the agent's first write", lambda: len(rig.spy.setpoint_writes()) > 0)
    before = rig.core.status().ledger_records
    _pin_ledger_size(rig, full=True)
    trail = rig.core.trail
    for pad in (4000, 1000, 300, 100, 30, 0):  # fill the last pages as a filling disk would

        def fill(pad: int = pad) -> bool:
            return trail.try_record("note", Origin.system("test"), "fill", {"p": "x" * pad})

        while rig.core._call(fill):
            pass
    full = time.monotonic()
    assert rig.core.plant is not None
    target = rig.plant.values()[P] + 0.2
    outcome = rig.core.plant.request_write(
        [Setpoint(P, round(target, 3))], Origin.operator("sup", Role.SUPERVISOR)
    ).result(10)
    assert outcome.kind is WriteOutcomeKind.AUDIT_FAILED, outcome
    assert "ledger failed" in outcome.reason
    wait_for("the audit alarm", lambda: "core.audit" in rig.core.status().alarms.ids)
    wait_for("unhealthy core", lambda: not rig.core.status().healthy)
    # No heartbeat from an unhealthy core: the PLC watchdog returns to base control.
    wait_for("the PLC watchdog", lambda: rig.plant.values()["watchdog_tripped"] == 1, timeout=15)
    assert rig.plant.values()["supervisory_active"] == 0
    assert rig.spy.setpoint_writes(full) == []  # nothing written without its audit record
    _pin_ledger_size(rig, full=False)
    wait_for("the ledger to recover", lambda: rig.core.status().healthy, timeout=15)
    rig.core.stop()
    report = verify(rig.ledger)
    assert report.ok, report.summary()
    assert report.rows >= before  # every acknowledged record is still there


@pytest.fixture
async def container(
    azurite: Azurite,  # noqa: F811
    container_name: str,  # noqa: F811
) -> AsyncIterator[ContainerClient]:
    client = open_container(
        azurite.connection_string, container_name, retry_total=0,
        connection_timeout_s=2, read_timeout_s=5,
    )  # fmt: skip
    await client.create_container()
    try:
        yield client
    finally:
        await client.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _wait(predicate: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_azurite_down_for_a_simulated_week_keeps_and_then_delivers_everything(
    azurite: Azurite,  # noqa: F811
    container: ContainerClient,
    tmp_path: Path,
) -> None:
    clock = Clock()
    events: list[object] = []
    # Sized like a console's outbox_max_mb, small enough that a week nearly fills it.
    limits = OutboxLimits(max_bytes=2 * 1024 * 1024)
    outbox = Outbox(tmp_path / "outbox.db", limits, clock=clock, on_event=events.append)
    drain = OutboxDrainer(outbox, container, site="rel", console="c1", max_delay_s=0.0,
                          poll_s=0.02, backoff_initial_s=0.05, backoff_cap_s=0.3)  # fmt: skip
    task = asyncio.create_task(drain.run())
    accepted: list[int] = []
    refused: list[int] = []
    try:
        azurite.stop()
        for seq in range(WEEK_STEPS):
            kind = RecordKind.TRANSITION if seq % 6 else RecordKind.DECISION
            result = outbox.enqueue(kind, {"seq": seq, "obs": [float(seq)] * 20})
            (accepted if result.accepted else refused).append(seq)
            clock.now += timedelta(minutes=5)
            if seq % 500 == 0:
                await asyncio.sleep(0.05)  # let the drainer fail and back off
        assert outbox.pending_records == len(accepted)
        azurite.start()
        await _wait(lambda: outbox.pending_records == 0, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()
    shipped: list[int] = []
    async for blob in container.list_blobs(name_starts_with="logs/rel/c1/"):
        data = await (await container.get_blob_client(blob.name).download_blob()).readall()
        shipped += [json.loads(line)["data"]["seq"] for line in data.splitlines()]
    assert sorted(shipped) == accepted  # every accepted record once, none lost
    assert refused == [], (
        f"{len(refused)} refused at {[e for e in events if isinstance(e, OutboxLevelChanged)][-1:]}"
    )
    print(f"\nweek outage: {len(accepted)} records kept and delivered, 0 refused")


def test_outbox_disk_nearly_full_refuses_low_priority_first_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    events: list[object] = []
    outbox = Outbox(tmp_path / "o.db", OutboxLimits.from_mb(0.05), on_event=events.append)
    results = {kind: [] for kind in (RecordKind.TRANSITION, RecordKind.DECISION)}  # type: ignore[var-annotated]
    for seq in range(400):
        kind = RecordKind.TRANSITION if seq % 4 else RecordKind.DECISION
        results[kind].append(outbox.enqueue(kind, {"seq": seq, "pad": "x" * 200}))
    transitions, decisions = results[RecordKind.TRANSITION], results[RecordKind.DECISION]
    levels = [e.new for e in events if isinstance(e, OutboxLevelChanged)]
    assert OutboxLevel.WARNING in levels and OutboxLevel.LOW_PRIORITY_REFUSED in levels
    assert EnqueueResult.REFUSED_LOW_PRIORITY in transitions
    first_low = transitions.index(EnqueueResult.REFUSED_LOW_PRIORITY)
    # Decisions (high priority) are still taken after low-priority records are refused.
    assert sum(r.accepted for r in decisions) > first_low // 3
    kept = sum(r.accepted for r in transitions + decisions)
    assert outbox.pending_records == kept  # what was accepted is all still there
    assert outbox.refused_records == 400 - kept  # and every refusal is counted
    outbox.close()
