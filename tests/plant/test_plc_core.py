"""PLC logic of the simulated plant without any network: handshake, watchdog, limits, ramps.

A manual clock drives the wall-clock side, so every check is deterministic.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from app.plant.base_control import RoBaseControl
from app.plant.catalog import RO_CATALOG
from app.plant.fault_commands import CommandError, split_command
from app.plant.faults import FaultTable
from app.plant.models.base import ConstantDisturbances
from app.plant.models.ro import RoModel
from app.plant.plc import PlcCore, PlcSettings, Refusal, WriteRefused
from app.plant.server import run_cli

TIMEOUT = 3.0


def make_core(speed: float = 1.0) -> PlcCore:
    rng = np.random.default_rng(0)
    model = RoModel(1)
    model.reset(rng)
    disturbances = ConstantDisturbances({"feed_tds_gl": 2.0, "feed_temperature_c": 20.0})
    disturbances.reset(1, rng)
    return PlcCore(
        model,
        RoBaseControl(RO_CATALOG),
        disturbances,
        PlcSettings(speed=speed, scan_s=1.0, watchdog_timeout_s=TIMEOUT),
        rng,
        now=0.0,
    )


def take_control(core: PlcCore, now: float) -> None:
    core.write("console_heartbeat", core.snapshot()["console_heartbeat"] + 1, now)
    core.write("agent_in_control", 1.0, now)


def test_control_needs_a_moving_heartbeat_and_remote_mode() -> None:
    core = make_core()
    core.write("agent_in_control", 1.0, 0.5)
    assert not core.supervisory_active  # no heartbeat yet
    core.write("console_heartbeat", 1.0, 0.6)
    assert core.supervisory_active
    core.set_remote(False, 0.7)
    assert not core.supervisory_active
    with pytest.raises(WriteRefused) as err:
        core.write("feed_pressure_sp_bar", 14.0, 0.8)
    assert err.value.reason is Refusal.LOCAL_MODE
    core.write("console_heartbeat", 2.0, 0.9)  # the heartbeat is always accepted
    core.write("agent_in_control", 0.0, 0.9)  # so is handing back


def test_watchdog_trips_after_the_timeout_and_clears_only_with_heartbeat_and_request() -> None:
    core = make_core()
    take_control(core, 1.0)
    core.write("feed_pressure_sp_bar", 15.0, 1.0)
    core.tick(1.0 + TIMEOUT - 0.1)
    assert core.supervisory_active and core.snapshot()["watchdog_tripped"] == 0.0
    core.tick(1.0 + TIMEOUT + 0.1)
    snap = core.snapshot()
    assert snap["watchdog_tripped"] == 1.0
    assert snap["supervisory_active"] == 0.0 and snap["agent_in_control"] == 0.0
    # Supervisory setpoint dropped: the register shows what the plant runs with, not 15 bar.
    assert snap["feed_pressure_sp_bar"] == core.model_setpoints()["feed_pressure_sp_bar"]
    assert snap["feed_pressure_sp_bar"] != 15.0
    core.write("agent_in_control", 1.0, 5.0)
    core.tick(5.1)
    assert core.snapshot()["watchdog_tripped"] == 1.0  # request alone does not clear it
    core.write("console_heartbeat", 50.0, 5.2)
    core.tick(5.3)
    assert core.snapshot()["watchdog_tripped"] == 0.0
    assert core.supervisory_active


def test_base_control_runs_the_plant_when_not_supervised() -> None:
    core = make_core(speed=60.0)
    core.tick(600 / 60.0)  # ten minutes of plant time
    assert core.scans == 600
    snap = core.snapshot()
    # Base control (RoBaseControl design point: 20 m3/h permeate) holds production.
    assert snap["permeate_flow_m3h"] == pytest.approx(20.0, rel=0.1)
    assert snap["feed_pressure_sp_bar"] == core.model_setpoints()["feed_pressure_sp_bar"]


def test_supervised_setpoints_are_ramped_at_the_plc_rate() -> None:
    core = make_core()
    take_control(core, 0.0)
    start = core.model_setpoints()["feed_pressure_sp_bar"]
    target = start + 3.0
    core.write("feed_pressure_sp_bar", target, 0.0)
    rate = RO_CATALOG.tag("feed_pressure_sp_bar").max_rate_per_s
    assert rate is not None
    for t in (1.0, 2.0):
        core.write("console_heartbeat", 10 + t, t)
        core.tick(t)
    assert core.model_setpoints()["feed_pressure_sp_bar"] == pytest.approx(start + 2 * rate)
    for t in (3.0, 4.0, 5.0, 6.0):
        core.write("console_heartbeat", 10 + t, t)
        core.tick(t)
    assert core.model_setpoints()["feed_pressure_sp_bar"] == pytest.approx(target)
    assert core.snapshot()["feed_pressure_bar"] > start


@pytest.mark.parametrize(
    ("tag", "value", "reason"),
    [
        ("feed_pressure_sp_bar", 40.5, Refusal.OUT_OF_RANGE),
        ("feed_flow_sp_m3h", 19.9, Refusal.OUT_OF_RANGE),
        ("feed_flow_sp_m3h", math.nan, Refusal.NOT_A_NUMBER),
        ("agent_in_control", 0.5, Refusal.OUT_OF_RANGE),
        ("feed_pressure_bar", 10.0, Refusal.READ_ONLY),
        ("no_such_tag", 1.0, Refusal.UNKNOWN_TAG),
    ],
)
def test_writes_outside_the_plc_limits_are_refused(tag: str, value: float, reason: Refusal) -> None:
    core = make_core()
    before = core.snapshot()
    with pytest.raises(WriteRefused) as err:
        core.write(tag, value, 0.0)
    assert err.value.reason is reason
    assert tag in str(err.value)
    assert core.snapshot() == before


def test_faults_change_what_is_served_not_the_plc() -> None:
    core = make_core()
    faults: FaultTable = core.faults
    faults.force("feed_ph", 99.0)
    faults.bad_status("feed_orp_mv", "BadSensorFailure")
    served = core.served()
    assert served["feed_ph"] == (99.0, None)
    assert served["feed_orp_mv"][1] == "BadSensorFailure"
    assert core.snapshot()["feed_ph"] != 99.0
    with pytest.raises(ValueError, match="GoodStuff"):
        faults.bad_status("feed_ph", "GoodStuff")
    with pytest.raises(KeyError, match="nope"):
        faults.force("nope", 1.0)


def test_fault_specs_split_like_commands() -> None:
    assert split_command("force:feed_ph=15") == ["force", "feed_ph", "15"]
    assert split_command(" delay 2 modbus ") == ["delay", "2", "modbus"]
    assert issubclass(CommandError, ValueError)


@pytest.mark.parametrize(
    ("options", "culprit"),
    [
        ({"security": "sign_encrypt"}, "pki"),
        ({"security": "tls"}, "security modes"),
        ({"scenario": "/nonexistent.csv"}, "--scenario"),
        ({"fault": ["explode:feed_ph"]}, "--fault"),
        ({"speed": 0.0}, "speed"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(
    options: dict[str, object], culprit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(process="ro", opcua=("127.0.0.1", 0), modbus=None, seed=0, speed=1.0)
    for key, value in options.items():
        setattr(args, key, value)
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("intelwatt plant: ") and "\n" not in err
    assert culprit in err
