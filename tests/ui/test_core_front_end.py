"""The control core's non-blocking commands for front ends, against the simulated plant."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.config import load_site
from app.controllers.auth import AuthError
from app.controllers.core import ControlCore, CoreError, CoreOptions
from app.controllers.messages import WriteCompleted, WriteRejected
from app.controllers.safety import Layer
from app.domain import Mode
from tests.ui.conftest import CHEAP, PASSWORD, Console, F, P, Packages

pytestmark = pytest.mark.slow


def test_login_and_status_answer_in_futures(c: Console) -> None:
    session = c.result(c.core.login_async("olga", PASSWORD))
    assert session.user == "olga"
    refused = c.core.login_async("olga", "wrong password!")
    c.wait(refused.done)
    assert isinstance(refused.exception(), AuthError)
    status = c.result(c.core.status_async())
    assert status.mode is Mode.ADVISORY and status.active is not None
    assert status.active.version == "ro-ui-a"


def test_check_setpoints_is_a_dry_run_through_the_envelope(c: Console) -> None:
    session = c.result(c.core.login_async("olga", PASSWORD))
    c.wait(lambda: {P, F} <= c.core.snapshot.snapshot().samples.keys())
    writes: list[object] = []
    for kind in (WriteCompleted, WriteRejected):
        c.core.bus.subscribe(kind, writes.append)
    inside = round(c.plc(P), 2)
    outside = c.core.site.limits[F].engineer_high + 5.0
    verdicts = c.result(c.core.check_setpoints({P: inside, F: outside}, session))
    assert [v.setpoint.tag for v in verdicts] == [P, F]
    assert verdicts[0].ok, verdicts[0].reason
    assert not verdicts[1].ok
    assert verdicts[1].layer in (Layer.PLC_LIMITS, Layer.ENGINEER_LIMITS), verdicts[1]
    assert F in verdicts[1].reason or "limit" in verdicts[1].reason
    c.qtbot.wait(500)
    assert writes == []  # a dry run: nothing was written or refused as a write


def test_model_cards_are_read_in_the_background(c: Console, packages: Packages) -> None:
    missing = packages.a.parent / "no-such-package"
    cards = c.result(c.core.read_manifests([packages.a, packages.b, missing]))
    digests = {
        hashlib.sha256((p / "manifest.json").read_bytes()).hexdigest(): p.name
        for p in (packages.a, packages.b)
    }
    assert set(cards) == set(digests)
    assert {cards[d].version for d in digests} == {"ro-ui-a", "ro-ui-b"}
    assert c.core.host is not None and c.core.host.versions.active is not None
    assert c.core.host.versions.active.sha256 in cards  # the card of the running agent


def test_before_the_start_status_answers_and_commands_refuse(
    tmp_path: Path, packages: Packages
) -> None:
    from app.config import default_site_path

    core = ControlCore(
        load_site(default_site_path()),
        CoreOptions(data_dir=tmp_path, scrypt=CHEAP, initial_user=("sup", PASSWORD)),
    )
    try:
        status = core.status_async().result(5)
        assert status.mode is Mode.OFF and status.health_reasons == ("not started",)
        with pytest.raises(CoreError, match="not running"):
            core.login_async("sup", PASSWORD).result(5)
        with pytest.raises(CoreError, match="not running"):
            core.check_setpoints({P: 10.0}, None).result(5)
        cards = core.read_manifests([packages.a]).result(30)
        assert [m.version for m in cards.values()] == ["ro-ui-a"]
    finally:
        core.stop()
