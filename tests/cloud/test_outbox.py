"""The store-and-forward outbox against Azurite: outage, exactly-once delivery, disk policy."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob.aio import ContainerClient

from app.cloud.events import (
    OutboxBacklogChanged,
    OutboxDeliveryFailed,
    OutboxLevel,
    OutboxLevelChanged,
)
from app.cloud.outbox import (
    EnqueueResult,
    Outbox,
    OutboxDrainer,
    OutboxLimits,
    RecordKind,
    dumps_payload,
)
from app.cloud.storage import open_container
from tests.cloud.conftest import Azurite

SITE, CONSOLE = "demo-ro", "console-1"
BIG = OutboxLimits(max_bytes=64 * 1024 * 1024)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
async def container(azurite: Azurite, container_name: str) -> AsyncIterator[ContainerClient]:
    client = open_container(
        azurite.connection_string,
        container_name,
        retry_total=0,
        connection_timeout_s=2,
        read_timeout_s=5,
    )
    await client.create_container()
    try:
        yield client
    finally:
        await client.close()


def drainer(
    outbox: Outbox, container: ContainerClient, events: list[object] | None = None, **kw: float
) -> OutboxDrainer:
    options: dict[str, float] = dict(
        max_delay_s=0.0, poll_s=0.02, backoff_initial_s=0.05, backoff_cap_s=0.3
    )
    options.update(kw)
    return OutboxDrainer(
        outbox,
        container,
        site=SITE,
        console=CONSOLE,
        on_event=None if events is None else events.append,
        **options,
    )


async def shipped_lines(container: ContainerClient) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    async for blob in container.list_blobs(name_starts_with=f"logs/{SITE}/{CONSOLE}/"):
        data = await (await container.get_blob_client(blob.name).download_blob()).readall()
        out[blob.name.rsplit("/", 1)[1]] = [json.loads(line) for line in data.splitlines()]
    return out


async def wait_until(predicate: object, limit_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_multi_day_outage_delivers_every_record_once_in_order(
    azurite: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    clock = Clock(datetime(2026, 11, 20, 22, 0, tzinfo=UTC))
    events: list[object] = []
    outbox = Outbox(tmp_path / "outbox.db", BIG, clock=clock)
    drain = drainer(outbox, container, events)
    task = asyncio.create_task(drain.run())
    expected: list[tuple[int, str]] = []

    def step(n: int) -> None:
        for _ in range(n):
            kind = RecordKind.TRANSITION if len(expected) % 5 else RecordKind.DECISION
            assert outbox.enqueue(kind, {"seq": len(expected), "obs": [1.5, float("nan")]}).accepted
            expected.append((len(expected), clock().date().isoformat()))
            clock.advance(minutes=7)

    try:
        step(10)  # online: shipped to the first day's blob
        await wait_until(lambda: outbox.pending_records == 0, 10)
        azurite.stop()
        for _ in range(3):  # three days offline, control steps every 7 minutes
            step(24 * 60 // 7)
            await asyncio.sleep(0.1)
        await wait_until(lambda: any(isinstance(e, OutboxDeliveryFailed) for e in events), 10)
        assert outbox.pending_records == len(expected) - 10
        assert not drain.connected
        azurite.start()  # same port, same data folder
        await wait_until(lambda: outbox.pending_records == 0, 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()

    blobs = await shipped_lines(container)
    assert sorted(blobs) == [f"2026-11-{d}.jsonl" for d in (20, 21, 22, 23)]
    lines = [line for name in sorted(blobs) for line in blobs[name]]
    assert [line["data"]["seq"] for line in lines] == list(range(len(expected)))
    assert [int(str(line["id"])) for line in lines] == sorted({int(str(x["id"])) for x in lines})
    for name, day_lines in blobs.items():
        assert {expected[int(str(x["data"]["seq"]))][1] for x in day_lines} == {name[:10]}
    assert all(line["schema"] == 1 and line["kind"] in ("transition", "decision") for line in lines)
    assert lines[1]["data"]["obs"] == [1.5, None]  # NaN shipped as JSON null
    assert isinstance(events[-1], OutboxBacklogChanged) and events[-1].connected


async def test_a_redelivery_after_an_unacknowledged_append_is_not_duplicated(
    container: ContainerClient, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "a.db", BIG)
    for i in range(100):
        outbox.enqueue(RecordKind.AUDIT, {"i": i})
    snapshot = tmp_path / "before-delivery.db"
    with sqlite3.connect(outbox.path) as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)  # the state a crash between append and delete would leave
    assert await drainer(outbox, container).drain() == 100
    outbox.close()

    restored = Outbox(snapshot, BIG)
    assert restored.pending_records == 100
    drain = drainer(restored, container, batch_records=30)
    for i in range(100, 110):
        restored.enqueue(RecordKind.AUDIT, {"i": i})
    await drain.drain()
    restored.close()
    assert drain.skipped_duplicates == 100 and drain.delivered == 10
    lines = [x for day in (await shipped_lines(container)).values() for x in day]
    assert [x["data"]["i"] for x in lines] == list(range(110))


async def test_a_recreated_outbox_does_not_skip_its_first_records(
    container: ContainerClient, tmp_path: Path
) -> None:
    first = Outbox(tmp_path / "one.db", BIG)
    for i in range(5):
        first.enqueue(RecordKind.ALARM, {"i": i})
    await drainer(first, container).drain()
    first.close()
    second = Outbox(tmp_path / "two.db", BIG)  # disk replaced: ids start again at 1
    for i in range(5, 8):
        second.enqueue(RecordKind.ALARM, {"i": i})
    await drainer(second, container).drain()
    second.close()
    lines = [x for day in (await shipped_lines(container)).values() for x in day]
    assert [x["data"]["i"] for x in lines] == list(range(8))
    assert len({x["ob"] for x in lines}) == 2


async def test_disk_limit_warns_then_refuses_low_priority_then_everything(
    container: ContainerClient, tmp_path: Path
) -> None:
    events: list[object] = []
    outbox = Outbox(tmp_path / "o.db", OutboxLimits(max_bytes=20_000), on_event=events.append)
    payload = {"x": "y" * 900}
    results = [outbox.enqueue(RecordKind.TRANSITION, payload) for _ in range(25)]
    first_refusal = results.index(EnqueueResult.REFUSED_LOW_PRIORITY)
    assert all(r.accepted for r in results[:first_refusal])
    assert set(results[first_refusal:]) == {EnqueueResult.REFUSED_LOW_PRIORITY}
    assert 0.85 < outbox.pending_bytes / 20_000 <= 0.9
    levels = [e.new for e in events if isinstance(e, OutboxLevelChanged)]
    assert levels == [OutboxLevel.WARNING, OutboxLevel.LOW_PRIORITY_REFUSED]
    assert "% full" in events[0].message and "20000" not in events[0].message  # type: ignore[attr-defined]

    audits = [outbox.enqueue(RecordKind.AUDIT, payload) for _ in range(5)]
    assert audits[0].accepted and EnqueueResult.REFUSED_FULL in audits
    assert outbox.level is OutboxLevel.FULL and outbox.pending_bytes <= 20_000
    kept = outbox.pending_records
    assert outbox.refused_records == 25 - first_refusal + audits.count(EnqueueResult.REFUSED_FULL)

    assert await drainer(outbox, container).drain() == kept  # nothing older was dropped
    assert outbox.level is OutboxLevel.NORMAL
    assert [e.new for e in events if isinstance(e, OutboxLevelChanged)][-1] is OutboxLevel.NORMAL
    assert outbox.enqueue(RecordKind.TRANSITION, payload).accepted
    outbox.close()


def test_levels_have_hysteresis() -> None:
    limits = OutboxLimits(max_bytes=1000)
    assert limits.level(790, OutboxLevel.NORMAL) is OutboxLevel.NORMAL
    assert limits.level(800, OutboxLevel.NORMAL) is OutboxLevel.WARNING
    assert limits.level(760, OutboxLevel.WARNING) is OutboxLevel.WARNING
    assert limits.level(740, OutboxLevel.WARNING) is OutboxLevel.NORMAL
    assert limits.level(870, OutboxLevel.LOW_PRIORITY_REFUSED) is OutboxLevel.LOW_PRIORITY_REFUSED
    assert limits.level(840, OutboxLevel.LOW_PRIORITY_REFUSED) is OutboxLevel.WARNING


def test_records_survive_reopening_and_bad_payloads_are_named(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", BIG)
    outbox.enqueue("decision", {"at": datetime(2026, 1, 1, tzinfo=UTC), "kind": RecordKind.ALARM})
    with pytest.raises(ValueError, match="telemetry"):
        outbox.enqueue("telemetry", {})
    with pytest.raises(TypeError, match="object"):
        outbox.enqueue(RecordKind.AUDIT, {"x": object()})
    uid = outbox.uid
    outbox.close()
    again = Outbox(tmp_path / "o.db", BIG)
    assert (again.pending_records, again.uid) == (1, uid)
    assert json.loads(again.peek(10, 10_000)[0].payload) == {
        "at": "2026-01-01T00:00:00+00:00",
        "kind": "alarm",
    }
    again.close()
    assert dumps_payload({"v": float("inf")}) == '{"v":null}'
