"""intelwatt eval (app.training.evaluate) and its statistics (app.training.stats)."""

from __future__ import annotations

import argparse
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.training.evaluate import METRICS, resolve_policy, run_cli
from app.training.stats import mean_ci, t_quantile

REPO = Path(__file__).resolve().parents[2]


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "process": "ro",
        "policy": ["baseline:fixed_pi", "baseline:hold"],
        "scenarios": None,
        "episodes": 2,
        "json": False,
        "seed": 0,
        "days": 0.5,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def _cli(**kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_cli(_args(**kw), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_t_quantiles_match_tables() -> None:
    for df, expected in ((1, 12.7062), (4, 2.7764), (9, 2.2622), (29, 2.0452), (10_000, 1.9602)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, 5) == pytest.approx(-t_quantile(0.975, 5))


def test_ci_against_a_hand_computed_example() -> None:
    # values 2, 4, 4, 6: mean 4, s = sqrt(8/3) = 1.63299, t(0.975, 3) = 3.18245,
    # half-width = 3.18245 · 1.63299 / 2 = 2.59846
    iv = mean_ci([2.0, 4.0, 4.0, 6.0])
    assert iv.mean == 4.0
    assert iv.half_width == pytest.approx(2.59846, abs=1e-5)
    assert iv.n == 4
    single = mean_ci([3.0, float("nan")])
    assert single.mean == 3.0 and math.isnan(single.half_width) and single.n == 1


def test_table_has_a_row_per_metric_and_a_column_per_policy() -> None:
    rc, out, err = _cli()
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert "2 episodes" in lines[0]
    assert "baseline:fixed_pi" in lines[1] and "baseline:hold" in lines[1]
    body = lines[3:]
    assert [ln.split("  ")[0].strip() for ln in body] == [m.label for m in METRICS]
    assert all("±" in ln for ln in body if "n/a" not in ln)


def test_json_shape_and_same_scenarios_for_every_policy() -> None:
    rc, out, _ = _cli(json=True)
    assert rc == 0
    data = json.loads(out)
    assert data["process"] == "ro" and data["episodes"] == 2
    assert set(data["policies"]) == {"baseline:fixed_pi", "baseline:hold"}
    for pol in data["policies"].values():
        assert set(pol["summary"]) == {m.key for m in METRICS}
        assert [e["scenario"] for e in pol["episodes"]] == data["scenarios"]
        for stats in pol["summary"].values():
            assert set(stats) == {"mean", "ci95", "n"}
        product = [e["product_m3"] for e in pol["episodes"]]
        assert all(p > 0 for p in product)
    # Half a day at the design point: about 12 h x 20 m³/h of permeate per episode.
    fixed = data["policies"]["baseline:fixed_pi"]["summary"]["product_m3"]["mean"]
    assert 150.0 < fixed < 260.0


def test_same_seed_same_numbers() -> None:
    a = json.loads(_cli(json=True)[1])
    b = json.loads(_cli(json=True)[1])
    assert a == b


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"process": "xx"}, "unknown process 'xx'"),
        ({"policy": ["baseline:nope"]}, "unknown baseline 'nope'"),
        ({"policy": []}, "no policy given"),
        ({"policy": ["somewhere/else"]}, "neither baseline:NAME nor an agent package"),
        ({"episodes": 0}, "--episodes must be at least 1"),
        ({"days": -1.0}, "--days must be a positive number"),
        ({"scenarios": Path("/nonexistent/folder")}, "scenario folder does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(kw: dict[str, object], message: str) -> None:
    rc, out, err = _cli(**kw)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err


def test_a_folder_that_is_no_signed_package_is_refused(tmp_path: Path) -> None:
    rc, _, err = _cli(policy=[str(tmp_path)])
    assert rc == 2 and "agent package refused" in err and "manifest.json" in err
    with pytest.raises(ValueError, match="agent package refused"):
        resolve_policy(str(tmp_path), "ro")


def test_bad_scenario_file_is_named(tmp_path: Path) -> None:
    src = sorted((REPO / "resources/scenarios/ro").glob("*.csv"))[0]
    shutil.copy(src, tmp_path / "a.csv")
    text = src.read_text().replace("t_s,feed_tds_gl", "t_s,feed_salt")
    (tmp_path / "b.csv").write_text(text)
    rc, _, err = _cli(scenarios=tmp_path)
    assert rc == 2 and "b.csv: missing column(s) ['feed_tds_gl']" in err


def test_episodes_cycle_over_the_files() -> None:
    data = json.loads(_cli(json=True, episodes=3, days=0.1, policy=["baseline:hold"])[1])
    assert len(data["scenarios"]) == 3
    names = sorted(p.stem for p in (REPO / "resources/scenarios/ro").glob("*.csv"))
    assert data["scenarios"] == names[:3]
    assert np.isfinite(data["policies"]["baseline:hold"]["summary"]["sec_kwh_m3"]["mean"])
