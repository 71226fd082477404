"""PlantController on ManualContext + FakeDriver: the write path, ramps, heartbeat and handshake."""

from __future__ import annotations

from app.controllers.ledger import LedgerError
from app.controllers.messages import WriteOutcomeKind
from app.controllers.safety import Layer
from app.domain import ConnectionChanged, ConnectionState, Origin, Role, Setpoint
from tests.controllers.conftest import F, P, Rig

OPERATOR = Origin.operator("op", Role.OPERATOR)


def test_write_is_checked_recorded_written_and_confirmed(rig: Rig) -> None:
    fut = rig.plant.request_write([Setpoint(F, 43.0)], OPERATOR)
    out = rig.run(fut)
    assert out.kind is WriteOutcomeKind.CONFIRMED and out.results[0].readback == 43.0
    assert rig.driver.values[F] == 43.0
    requested = rig.ledger_events("write_requested")[-1]
    assert requested.data["setpoints"][F] == {"old": 40.0, "new": 43.0}
    assert rig.ledger_events("write_result")[-1].data["outcome"] == "confirmed"
    assert rig.safety.last_change(F) == rig.ctx.monotonic()


def test_change_above_the_rate_limit_ramps_one_step_per_tick(rig: Rig) -> None:
    fut = rig.plant.request_write([Setpoint(P, 13.0)], OPERATOR)
    rig.settle()
    assert rig.driver.values[P] == 12.5 and not fut.done()
    rig.advance(1)
    assert rig.run(fut).ok and rig.driver.values[P] == 13.0
    assert [sp.value for sp in rig.driver.writes if sp.tag == P] == [12.5, 13.0]


def test_envelope_rejections_name_layer_and_reason_and_write_nothing(rig: Rig) -> None:
    cases = [
        (Setpoint(P, 15.5), OPERATOR, Layer.OPERATOR_LIMITS),
        (Setpoint(P, 17.0), Origin.operator("eng", Role.ENGINEER), Layer.ENGINEER_LIMITS),
        (Setpoint(F, 46.0), OPERATOR, Layer.MAX_MOVE),
        (Setpoint("feed_flow_m3h", 40.0), OPERATOR, Layer.REQUEST),
    ]
    for sp, origin, layer in cases:
        out = rig.run(rig.plant.request_write([sp], origin))
        assert out.kind is WriteOutcomeKind.REJECTED and out.rejected_layer is layer, out
        assert out.reason
    rig.driver.set_value("cip_active", 1.0)
    out = rig.run(rig.plant.request_write([Setpoint(F, 41.0)], OPERATOR))
    assert out.rejected_layer is Layer.INTERLOCK and "clean-in-place" in out.reason
    assert rig.driver.writes == []
    assert len(rig.ledger_events("write_rejected")) == 5


def test_a_ledger_failure_refuses_the_write(rig: Rig) -> None:
    def broken(event: object) -> object:
        raise LedgerError("disk full")

    rig.ledger.append = broken  # type: ignore[method-assign]
    out = rig.run(rig.plant.request_write([Setpoint(F, 41.0)], OPERATOR))
    assert out.kind is WriteOutcomeKind.AUDIT_FAILED and rig.driver.writes == []
    rig.advance(2)
    assert not rig.plant.healthy and "audit ledger failing" in rig.plant.health_reasons[0]


def test_heartbeat_only_while_healthy_and_handshake_follows_the_mode(rig: Rig) -> None:
    rig.advance(3)
    beats = rig.driver.values["console_heartbeat"]
    assert beats >= 2 and rig.plant.healthy
    rig.plant.request_supervision(True)
    rig.settle()
    assert rig.driver.values["agent_in_control"] == 1.0
    stuck = ["agent worker stuck"]
    rig.plant.add_health_check(lambda: stuck[0] if stuck else None)
    rig.advance(3)
    assert rig.driver.values["console_heartbeat"] == beats  # no beat while unhealthy
    assert not rig.plant.healthy
    stuck.clear()
    rig.advance(2)
    assert rig.driver.values["console_heartbeat"] == beats + 2
    rig.plant.request_supervision(False)
    rig.settle()
    assert rig.driver.values["agent_in_control"] == 0.0


def test_first_connection_is_retried_with_backoff(rig: Rig) -> None:
    from app.controllers.context import ManualContext
    from app.drivers.fake import FakeDriver
    from app.plant.catalog import RO_CATALOG

    states: list[ConnectionState] = []
    ctx = ManualContext()
    driver = FakeDriver(RO_CATALOG.tags, clock=ctx.monotonic)
    driver.faults.unreachable = True
    rig.plant.__init__(  # type: ignore[misc]
        ctx, driver, RO_CATALOG, rig.snapshot, rig.plant.trends, rig.safety, rig.trail, rig.bus,
        rig.alarms, {},
    )  # fmt: skip
    rig.bus.subscribe(ConnectionChanged, lambda e: states.append(e.state))
    rig.plant.start()
    ctx.run_pending()
    assert driver.state is ConnectionState.DISCONNECTED
    assert rig.alarms.point("plc.connection").active
    ctx.advance(0.6)  # first retry after 0.5 s
    ctx.advance(1.1)  # second after 1 s
    driver.faults.unreachable = False
    ctx.advance(2.1)  # third after 2 s succeeds
    assert driver.state is ConnectionState.CONNECTED and rig.plant._connect_attempts == 0
    assert states.count(ConnectionState.CONNECTING) == 4
    assert not rig.alarms.point("plc.connection").active
