"""Render the console's main views to PNG files: ``python -m app.ui.screenshots OUTDIR``.

Run under Xvfb for a real X11 render (``make screenshots`` does: ``xvfb-run -a -s "-screen 0
1600x1000x24"``). The console runs in demo mode against the simulated plant; an operator approves
one recommendation and rejects another, a PLC link drop raises an alarm that is acknowledged, and a
candidate agent is put in shadow, so every view has something real to show. The shipped agent
(``resources/agents/ro``) is used when present; otherwise a stand-in package proposing fixed
setpoints, signed with a throwaway key, takes its place (needs the ``onnx`` package).

Files written: overview.png, trends.png, recommendation.png, agents.png, alarms.png, audit.png,
login.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QApplication, QWidget

from app.agent_runtime.keys import PublicKey, TrustStore, load_public_key
from app.config import default_site_path, load_site, resources_dir
from app.controllers.core import CoreOptions
from app.controllers.messages import (
    AgentAbstained,
    DecisionRecorded,
    ProposalRejected,
    StepSkipped,
)
from app.domain import Mode, RecommendationState, RejectReason
from app.plant.catalog import RO_CATALOG
from app.ui.app import Console, build_console
from app.ui.pyside_guard import guard_none_refcount
from app.ui.style import load_theme

log = logging.getLogger(__name__)

SHIPPED_AGENT = Path("agents") / "ro"
WINDOW = (1600, 1000)


def _spin(app: QApplication, done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screenshots: timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def _result(app: QApplication, future: Future[Any], what: str) -> Any:
    _spin(app, future.done, 60, what)
    return future.result()


def _stand_in_packages(folder: Path) -> tuple[Path, Path, PublicKey]:
    """Two signed packages proposing fixed setpoints (an active stand-in and a candidate), and
    the throwaway public key that signed them."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from onnx import TensorProto, helper, numpy_helper

    from app.agent_runtime.keys import public_key_of
    from app.agent_runtime.manifest import (
        ManifestFields,
        NormalisationStats,
        TagSpec,
        TrainingSummary,
    )
    from app.agent_runtime.package import write_package

    obs = RO_CATALOG.observations
    lo = np.array([t.low for t in obs])
    hi = np.array([t.high for t in obs])
    mean, std = (lo + hi) / 2, (hi - lo) / 4

    def graph(values: list[float]) -> bytes:
        inits = [
            numpy_helper.from_array(np.zeros((len(obs), 2), np.float32), "W"),
            numpy_helper.from_array(np.asarray([values], np.float32), "c"),
        ]
        g = helper.make_graph(
            [
                helper.make_node("MatMul", ["obs", "W"], ["zero"]),
                helper.make_node("Add", ["zero", "c"], ["action"]),
            ],
            "stand_in",
            [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, len(obs)])],
            [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 2])],
            inits,
        )
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        data: bytes = model.SerializeToString()
        return data

    key = Ed25519PrivateKey.generate()
    out = []
    for version, values in (("ro-demo.1", [13.2, 43.0]), ("ro-demo.2", [13.0, 44.0])):
        fields = ManifestFields(
            version=version,
            process="ro",
            created=datetime.now(UTC),
            parent_version="ro-demo.1" if version == "ro-demo.2" else None,
            observations=tuple(
                TagSpec(tag=t.name, unit=t.unit, low=t.low, high=t.high) for t in obs
            ),
            actions=(
                TagSpec(tag="feed_pressure_sp_bar", unit="bar", low=6.0, high=38.0),
                TagSpec(tag="feed_flow_sp_m3h", unit="m3/h", low=25.0, high=65.0),
            ),
            normalisation=NormalisationStats(
                mean=tuple(mean), std=tuple(std), train_low=tuple(lo), train_high=tuple(hi)
            ),
            training=TrainingSummary(
                algorithm="stand-in",
                env_steps=0,
                seed=None,
                source="screenshot stand-in: fixed setpoints (the shipped agent was absent)",
                details={"training_window": "n/a"},
            ),
            metrics={"note": "stand-in for screenshots only"},
            min_app="0.1",
        )
        path = folder / version
        write_package(path, fields, graph(values), key)
        out.append(path)
    return out[0], out[1], public_key_of(key, "screenshots")


def _save(widget: QWidget, out: Path, name: str) -> None:
    path = out / name
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    sys.stdout.write(f"wrote {path}\n")


def render(out: Path) -> list[Path]:
    """Drive the demo console through a short scenario and save the views into ``out``."""
    guard_none_refcount()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    load_theme(app)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="intelwatt-shots-") as tmp:
        site = load_site(default_site_path())
        options = CoreOptions(data_dir=Path(tmp) / "data")
        stand_in_active, candidate, key = _stand_in_packages(Path(tmp))
        shipped = resources_dir() / SHIPPED_AGENT
        keys = [load_public_key(p) for p in sorted(Path(site.agents.trust_store).glob("*.pub"))]
        if not shipped.exists():
            log.warning("no shipped agent at %s: using a stand-in package", shipped)
            site = site.model_copy(
                update={"agents": site.agents.model_copy(update={"package": stand_in_active})}
            )
        options = CoreOptions(data_dir=options.data_dir, trust_store=TrustStore([*keys, key]))
        console = build_console(site, demo=True, options=options, demo_first_step=False)
        try:
            _spin(app, console.started.done, 90, "core start")
            console.started.result()
            _scenario(app, console, candidate)
            return _shoot(app, console, out)
        finally:
            console.stop()


def _scenario(app: QApplication, c: Console, candidate: Path) -> None:
    w, link, core = c.window, c.link, c.core
    w.resize(*WINDOW)
    w.show()
    _spin(app, lambda: w.banner.connection_labels["plc"].text() == "PLC: connected", 60, "PLC")
    _spin(app, lambda: core.host is not None and core.host.versions.active is not None, 30, "agent")
    engineer = _result(app, link.login("engineer", "engineer-demo"), "login")
    if core.agent is not None:
        verdict = _result(app, core.agent.load_candidate(candidate, engineer), "candidate")
        if not verdict.accepted:
            log.warning("candidate not loaded: %s", verdict.reason)
        link.add_package(candidate)
    operator = _result(app, link.login("operator", "operator-demo"), "login")
    w.set_session(operator)
    agent = core.agent
    assert agent is not None
    why: list[str] = []
    for kind in (StepSkipped, ProposalRejected, AgentAbstained, DecisionRecorded):
        core.bus.subscribe(kind, lambda event: why.append(repr(event)[:300]))

    def next_recommendation() -> str:
        for _ in range(20):
            _result(app, link.in_context(agent.step), "agent step")
            try:
                _spin(
                    app,
                    lambda: (
                        w.card.recommendation is not None
                        and w.card.recommendation.state is RecommendationState.PROPOSED
                    ),
                    4,
                    "recommendation",
                )
            except TimeoutError:
                continue
            assert w.card.recommendation is not None
            return w.card.recommendation.rec_id
        raise TimeoutError(f"screenshots: the agent made no recommendation: {why[-4:]}")

    _spin(app, lambda: len(core.trends) > 20, 60, "trend history")
    w.approve(next_recommendation())

    def confirmed() -> bool:
        rec = w.card.recommendation
        return rec is not None and rec.state is RecommendationState.CONFIRMED

    try:
        _spin(app, confirmed, 60, "write")
    except TimeoutError as exc:
        rec = w.card.recommendation
        state = rec.state.value if rec else None
        raise TimeoutError(f"{exc}: {state}, {w.card.status.text()}, {why[-3:]}") from None
    if c.plant is not None:  # a short PLC link drop: the banner, the mode and an alarm show it
        c.plant.stop_servers()
        _spin(app, lambda: w.banner.connection_labels["plc"].text() != "PLC: connected", 30, "drop")
        c.plant.start_servers()
    _spin(app, lambda: w.banner.connection_labels["plc"].text() == "PLC: connected", 60, "back")
    _result(
        app,
        link.ack_alarm("plc.connection", "network switch restarted", operator),
        "alarm ack",
    )
    resume = link.request_mode(Mode.ADVISORY, operator, confirm=False, reason="link restored")
    _result(app, resume, "advisory")
    _spin(app, lambda: len(core.trends) > 45, 60, "more history")
    w.reject(next_recommendation(), RejectReason.DISAGREE, "flow is at the pump's limit today")
    _spin(app, lambda: w.card.recommendation is not None
          and w.card.recommendation.state is RecommendationState.REJECTED, 30, "reject")  # fmt: skip
    _spin(app, lambda: len(core.trends) > 60, 60, "more history")
    next_recommendation()
    _spin(app, lambda: w.card.preview is not None, 30, "what-if preview")
    # The run lasts a few minutes: show all of it, not a mostly empty 10-minute window.
    w.trends.set_span(max(120.0, 1.1 * len(core.trends) * core.site.control.supervision_period_s))


def _shoot(app: QApplication, c: Console, out: Path) -> list[Path]:
    w = c.window
    names = []
    for index, name in ((0, "overview.png"), (1, "trends.png"), (2, "agents.png"),
                        (3, "alarms.png"), (4, "audit.png")):  # fmt: skip
        w.tabs.setCurrentIndex(index)
        if index == 1:
            w.trends.redraw()
        if index == 2:
            if c.core.host is not None and c.core.host.versions.candidate is not None:
                _spin(app, lambda: len(w.agents.duel.history) > 0, 60, "shadow duel steps")
            w.agents.refresh()
            _spin(app, lambda: not w.agents._refresher.in_flight, 30, "agents view")
        if index == 4:
            w.audit.reload()
            _spin(app, lambda: w.audit.page is not None, 30, "audit page")
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        _save(w, out, name)
        names.append(out / name)
    _save(w.card, out, "recommendation.png")
    names.append(out / "recommendation.png")
    w.logout()
    w.open_login()
    dialog = w.login_dialog
    assert dialog is not None
    dialog.user.setText("operator")
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    _save(dialog, out, "login.png")
    names.append(out / "login.png")
    dialog.reject()
    return names


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m app.ui.screenshots OUTDIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="folder for the PNG files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    render(args.outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
