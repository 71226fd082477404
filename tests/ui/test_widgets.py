"""Widget-level behaviour that needs no control core: formatting, gauges, staircases, the guard."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime

import numpy as np
import PySide6
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter
from pytestqt.qtbot import QtBot

from app.agent_runtime.shadow import GateCheck
from app.controllers.messages import ShadowStepped
from app.controllers.snapshot import TagState
from app.controllers.trend_buffer import TrendBuffer
from app.domain import AgentVersion, Quality, Sample
from app.plant.catalog import RO_CATALOG
from app.ui.overview_panel import describe, format_age, format_value
from app.ui.pyside_guard import affected
from app.ui.recommendation_card import GaugeWidget, short_name
from app.ui.shadow_duel import ShadowDuelView, gate_status_text
from app.ui.trends_panel import RO_PLOTS, TrendsPanel, default_plots, step_arrays


def _state(value: float, quality: Quality, age: float) -> TagState:
    sample = Sample("feed_pressure_bar", value, quality, datetime.now(UTC), 100.0)
    return TagState(sample, age, quality)


def test_values_show_unit_precision_quality_and_age() -> None:
    tdef = RO_CATALOG.tag("feed_pressure_bar")
    shown = describe(tdef, _state(12.345, Quality.GOOD, 0.42), "Feed pressure")
    assert (shown.text, shown.detail, shown.bad) == ("12.35 bar", "good · 0.4 s", False)
    stale = describe(tdef, _state(12.345, Quality.STALE, 75.0))
    assert stale.bad and stale.detail == "STALE · 1 min"
    assert describe(tdef, None).text == "----" and describe(tdef, None).bad
    assert format_value(math.nan, tdef) == "----"
    assert format_value(1.0, RO_CATALOG.tag("cip_active")) == "ON"
    assert format_value(4236.4, RO_CATALOG.tag("feed_conductivity_uscm")) == "4236 µS/cm"
    assert format_age(7200) == "2.0 h"


def test_staircase_holds_each_recommendation_until_the_next() -> None:
    xs, ys = step_arrays([(0.0, 1.0), (10.0, 2.0), (20.0, 3.0)], end=25.0)
    assert xs.tolist() == [0.0, 10.0, 10.0, 20.0, 20.0, 25.0]
    assert ys.tolist() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


def test_ro_trends_cover_12_tags_and_other_processes_get_few_plots() -> None:
    tags = [t for spec in RO_PLOTS for t in spec.tags]
    assert len(tags) == 12 == len(set(tags))
    assert default_plots(RO_CATALOG, [t.name for t in RO_CATALOG.tags]) == list(RO_PLOTS)
    from app.plant.catalog import CATALOGS

    uf = CATALOGS["uf"]
    plots = default_plots(uf, [t.name for t in uf.tags])
    assert 1 <= len(plots) <= len(uf.setpoints) + 4


def test_trend_panel_draws_nan_gaps_and_clips_to_the_visible_window(qtbot: QtBot) -> None:
    tags = [t for spec in RO_PLOTS for t in spec.tags]
    buf = TrendBuffer(tags, 1000)
    for i in range(600):
        value = math.nan if 200 <= i < 210 else float(i)
        buf.append(1000.0 + i, dict.fromkeys(tags, value))
    panel = TrendsPanel(buf, RO_CATALOG, clock_offset_s=1e9)
    qtbot.addWidget(panel)
    panel.stop()
    panel.load(1e9 + 1400.0, 1e9 + 1500.0)  # 100 s visible, 100 s margin each side
    xs, ys = panel.curves[(0, RO_PLOTS[0].tags[0])].getData()
    assert xs[0] == pytest.approx(1e9 + 1300.0) and xs[-1] == pytest.approx(1e9 + 1599.0)
    assert np.isnan(ys).sum() == 0
    panel.load(1e9 + 1150.0, 1e9 + 1250.0)
    _, ys = panel.curves[(0, RO_PLOTS[0].tags[0])].getData()
    assert np.isnan(ys).sum() == 10  # the gap stays a gap


def test_gauge_is_coloured_only_above_its_limit(qtbot: QtBot) -> None:
    gauge = GaugeWidget("Uncertainty")
    qtbot.addWidget(gauge)
    gauge.set_value(0.1, 0.25)
    assert not gauge.exceeded and gauge.value_label.property("alarm") == ""
    gauge.set_value(0.4, 0.25)
    assert gauge.exceeded and gauge.value_label.property("alarm") == "medium"
    gauge.set_value(math.nan, 0.25)
    assert gauge.bar.text() == "n/a"
    assert short_name("Supervisory feed pressure setpoint") == "Feed pressure SP"


def test_affected_builds_are_recognised() -> None:
    assert affected("6.12.0", (3, 11))
    assert not affected("6.11.3", (3, 11))
    assert not affected("6.12.0", (3, 12))


def test_installed_pyside_keeps_references_to_none_or_is_flagged(qtbot: QtBot) -> None:
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    before = sys.getrefcount(None)
    for _ in range(500):
        painter.drawLine(0, 0, 5, 5)
    lost = before - sys.getrefcount(None)
    painter.end()
    if sys.version_info >= (3, 12):
        pytest.skip("None is immortal on Python 3.12+")
    assert lost < 100 or affected(), f"PySide6 {PySide6.__version__} lost {lost} refs to None"


def test_levels_of_detail_keep_every_peak_and_the_newest_rows() -> None:
    from app.ui.trend_lod import TrendLod

    buf = TrendBuffer(["a", "b"], 10_000)
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (5000, 2)).astype(np.float32).astype(np.float64)  # as stored
    values[1234, 0] = 50.0  # a spike
    values[2000:2200, 1] = np.nan  # a gap spanning whole level-2 buckets
    lod = TrendLod(buf, ["a", "b"], factor=8, levels=3)
    for start in range(0, 5000, 777):  # arrive in uneven batches, as timer ticks see them
        for i in range(start, min(5000, start + 777)):
            buf.append(float(i), {"a": values[i, 0], "b": values[i, 1]})
        lod.update()
    times, view, per = lod.view(0.0, 4999.0, max_buckets=200)
    assert per == 64  # 5000 rows / 64 = 79 buckets <= 200 < 5000 / 8
    assert view[:, 0].max() == 50.0 and np.nanmin(view[:, 0]) == values[:, 0].min()
    first = values[:64, 0]
    assert (view[0, 0], view[1, 0]) == (first.min(), first.max())
    assert times[-1] == 4999.0  # rows not yet in a whole bucket come from the buffer
    gap = (times >= 2048) & (times < 2176)
    assert np.isnan(view[gap, 1]).all()
    raw_t, raw_v, per = lod.view(100.0, 150.0, max_buckets=200)
    assert raw_v.shape == (51, 2)
    assert per == 1 and raw_t.tolist() == [float(i) for i in range(100, 151)]


def test_demo_accounts_log_in_with_the_passwords_the_dialog_shows(tmp_path) -> None:
    from app.controllers.auth import AuthService, UserStore, verify_password
    from app.controllers.core import USERS_FILE
    from app.ui.demo import DEMO_USERS, demo_hint, ensure_demo_users

    assert ensure_demo_users(tmp_path)
    assert not ensure_demo_users(tmp_path)  # an existing users file is never touched
    users = UserStore(tmp_path / USERS_FILE).load()
    for name, role, password in DEMO_USERS:
        assert users[name].role is role and verify_password(password, users[name].password_hash)
        assert f"{name} / {password}" in demo_hint()
    AuthService(UserStore(tmp_path / USERS_FILE)).login("operator", "operator-demo")


def _shadow_step(
    n: int, candidate: str, cand_p: float | None, passed: bool, active_p: float = 12.0
) -> ShadowStepped:
    a = AgentVersion("ro", "ro-a", "a" * 64)
    c = AgentVersion("ro", candidate, "c" * 64)
    span = 45.0
    cand_action = None if cand_p is None else {"feed_pressure_sp_bar": cand_p}
    div = {} if cand_p is None else {"feed_pressure_sp_bar": abs(cand_p - active_p) / span}
    gate = GateCheck("shadow_steps", passed, float(n), 3.0, f"{n} shadow steps, 3 required")
    return ShadowStepped(
        step=n,
        step_at=datetime(2026, 1, 1, 12, n, tzinfo=UTC),
        active=a,
        candidate=c,
        active_action={"feed_pressure_sp_bar": active_p},
        candidate_action=cand_action,
        divergence=div,
        divergence_max=max(div.values(), default=0.0),
        active_uncertainty=None,
        candidate_uncertainty=None,
        candidate_error=None if cand_p is not None else "runtime error",
        shadow_steps=n,
        gates_passed=passed,
        gates=(gate,),
    )


def test_shadow_duel_overlays_steps_marks_gates_and_restarts_for_a_new_pair(
    qtbot: QtBot,
) -> None:
    view = ShadowDuelView()
    qtbot.addWidget(view)
    view.add_step(_shadow_step(1, "ro-b", 12.9, False))
    view.add_step(_shadow_step(2, "ro-b", None, False))  # the candidate failed this step
    view.add_step(_shadow_step(3, "ro-b", 12.45, True))
    _, active = view.curves[("feed_pressure_sp_bar", "active")].getData()
    _, cand = view.curves[("feed_pressure_sp_bar", "candidate")].getData()
    _, div = view.divergence_curve.getData()
    assert list(active) == [12.0, 12.0, 12.0]
    assert cand[0] == 12.9 and math.isnan(cand[1]) and cand[2] == 12.45
    assert div[0] == pytest.approx(0.9 / 45) and math.isnan(div[1])
    assert div[2] == pytest.approx(0.45 / 45)
    # One marker per answered step; filled only once the gates pass.
    spots = view.gate_markers.points()
    assert len(spots) == 2
    assert spots[0].brush().style() == Qt.BrushStyle.NoBrush
    assert spots[1].brush().style() != Qt.BrushStyle.NoBrush
    assert "gates PASSED" in view.status.text()
    failed = gate_status_text(_shadow_step(2, "ro-b", None, False))
    assert "CANDIDATE FAILED (runtime error)" in failed and "not passed (shadow_steps)" in failed
    view.add_step(_shadow_step(4, "ro-c", 12.0, False))  # a new candidate: a new duel
    assert [e.candidate.version for e in view.history] == ["ro-c"]
    assert len(view.curves[("feed_pressure_sp_bar", "active")].getData()[0]) == 1
    view.clear()
    assert not view.history and view.status.text() == "No candidate in shadow."


def test_work_rows_show_fractions_busy_and_refuse_unknown_kinds(qtbot: QtBot) -> None:
    from concurrent.futures import Future

    from app.ui.agents_panel import AgentsPanel
    from app.ui.bridge import UiBridge

    bridge = UiBridge()
    panel = AgentsPanel(lambda: Future(), bridge)
    qtbot.addWidget(panel)
    panel.set_work("training job j1: rollouts", 0.42, 1.0, kind="training")
    bar = panel.work_bars["training"]
    assert (bar.maximum(), bar.value()) == (1000, 420)
    panel.set_work("training job j1: evaluating", kind="training", busy=True)
    assert bar.maximum() == 0
    panel.set_work("training job j1 succeeded", kind="training")
    assert not bar.isVisibleTo(panel) and "succeeded" in panel.work_labels["training"].text()
    assert panel.work_labels["candidate"].text() == "No candidate download."
    with pytest.raises(KeyError, match="'upload'"):
        panel.set_work("x", kind="upload")


def test_rollback_watch_text_names_the_agent_the_triggers_and_the_outcome() -> None:
    from app.controllers.messages import RollbackWatchStepped
    from app.domain import AgentVersion
    from app.ui.agents_panel import watch_text

    agent = AgentVersion(process="ro", version="ro-b", sha256="0" * 64)
    event = RollbackWatchStepped(
        agent=agent, state="watching", steps=7, watch_steps=96, threshold=5.0, sec_cusum=None,
        paired_cusum=1.25, paired_mean_loss_eur_h=0.31, paired_samples=7,
        constraint_hit_rate=0.0, abstention_rate=1 / 7,
    )  # fmt: skip
    text = watch_text(event)
    assert text.startswith("Rollback watch on ro-b: step 7 of 96.")
    assert "vs previous agent -0.31 €/h per step (CUSUM 1.2 of 5)" in text
    assert "SEC" not in text and "abstained 14%" in text
    from dataclasses import replace

    assert "was rolled back after 7 steps" in watch_text(replace(event, state="rolled_back"))
    assert "passed its 96-step watch" in watch_text(replace(event, state="passed", steps=96))
    assert "SEC CUSUM 2.0 of 5" in watch_text(replace(event, sec_cusum=2.0))
