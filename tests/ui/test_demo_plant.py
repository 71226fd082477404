"""The demo's simulated PLC in its own process: ready handshake, link drop, and no orphans."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from asyncua import Client

from app.ui.demo import DemoPlantError, DemoPlantProcess, free_port

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _browse_ok(endpoint: str) -> bool:
    async def run() -> bool:
        client = Client(endpoint, timeout=3)
        try:
            await client.connect()
        except (OSError, TimeoutError):
            return False
        try:
            name = await client.nodes.objects.read_browse_name()
            return name.Name == "Objects"
        finally:
            await client.disconnect()

    return asyncio.run(run())


def test_plant_process_serves_drops_the_link_and_dies_with_the_console() -> None:
    port = free_port("127.0.0.1")
    plant = DemoPlantProcess(
        {"process": "ro", "opcua": ("127.0.0.1", port), "modbus": None, "speed": 10.0}
    )
    with pytest.raises(DemoPlantError, match="not serving"):
        plant.stop_servers()  # before the start
    plant.start().result(120)
    pid = plant.pid
    assert pid is not None and pid != os.getpid() and _alive(pid)
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    try:
        assert _browse_ok(endpoint)
        plant.stop_servers()
        assert not _browse_ok(endpoint)
        plant.start_servers()
        assert _browse_ok(endpoint)
        plant._conn.close()  # what the OS does when the console process dies
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            plant._process.join(0.1)
        assert not _alive(pid)
    finally:
        plant.stop()


def test_plant_process_reports_a_bad_config_and_exits() -> None:
    plant = DemoPlantProcess({"process": "no-such-process", "opcua": None, "modbus": None})
    ready = plant.start()
    with pytest.raises(DemoPlantError, match="no-such-process"):
        ready.result(120)
    plant.stop()
    assert plant.pid is not None and not _alive(plant.pid)


def test_frozen_builds_serve_the_demo_plant_from_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import default_site_path, load_site
    from app.ui.demo import InProcessPlant, demo_site, prepare_demo_plant

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    plant = prepare_demo_plant(demo_site(load_site(default_site_path())))
    assert isinstance(plant.process, InProcessPlant)
    assert plant.site.plant.opcua is not None
    endpoint = plant.site.plant.opcua.endpoint
    plant.start_in_background().result(120)
    try:
        assert _browse_ok(endpoint)
        plant.stop_servers()
        assert not _browse_ok(endpoint)
        plant.start_servers()
        assert _browse_ok(endpoint)
    finally:
        plant.stop()
    assert not _browse_ok(endpoint)
