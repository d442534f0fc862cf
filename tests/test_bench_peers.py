"""The peer scoreboard's table: medians over repeats, scores of the full run, the time
ratio to ptyopt on the same dataset × engine; adapters that are missing are skipped."""

import numpy as np
import pytest

from ptyopt.benchmarks import peers
from ptyopt.peers.base import PeerPlan, PeerResult


def _run(package: str, engine: str, repeat: int, seconds: float, nrmse: float) -> peers.Run:
    plan = PeerPlan(engine=engine, iterations=5, group_size=8, step={"beta_object": 1.0})
    result = PeerResult(
        package,
        "1.0",
        engine,
        np.ones((1, 4, 4), complex),
        (9.0, 2.0, seconds, seconds),
        100.0 + repeat,
        {},
    )
    scores = {"nrmse": nrmse, "ssim": 0.9, "frc_resolution_A": 0.5} if repeat == 0 else {}
    return peers.Run(peers.Case("d", plan), package, repeat, result, scores, [])


def test_table_takes_medians_and_the_ratio_to_ptyopt():
    runs = [
        _run("ptyopt", "lsqml", 0, 1.0, 0.2),
        _run("phaser", "lsqml", 0, 3.0, 0.1),
        _run("ptyopt", "lsqml", 1, 2.0, 0.0),
        _run("phaser", "lsqml", 1, 5.0, 0.0),
        _run("ptyopt", "lsqml", 2, 4.0, 0.0),
        _run("phaser", "lsqml", 2, 4.0, 0.0),
    ]
    table = peers.table(runs)
    assert list(table.columns) == [*peers.COLUMNS, "repeats", "measured"]
    table = table.set_index("package")
    assert table.loc["ptyopt", "s_per_iter"] == 2.0
    assert table.loc["phaser", "s_per_iter"] == 4.0
    # the median of the ratios within each repeat (3, 2.5, 1), not of the medians (4 / 2)
    assert table.loc["phaser", "time_ratio_to_ptyopt"] == pytest.approx(2.5)
    assert table.loc["phaser", "first_iter_s"] == 9.0
    assert table.loc["phaser", "nrmse"] == 0.1  # the full (first) run's score
    assert table.loc["phaser", "peak_rss_MB"] == 101.0  # median over the repeats
    assert table.loc["phaser", "repeats"] == 3


def test_missing_adapters_are_skipped_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("PTYOPT_PEERS_DIR", str(tmp_path))
    adapters, skipped = peers.load_adapters(["ptyopt", "phaser", "nosuchpeer"])
    assert list(adapters) == ["ptyopt"]
    assert "not installed" in skipped["phaser"]
    assert "no adapter module" in skipped["nosuchpeer"]


def test_merge_keeps_earlier_rows_this_run_did_not_measure(tmp_path):
    earlier = peers.table(
        [_run("ptyopt", "lsqml", 0, 1.0, 0.2), _run("phaser", "lsqml", 0, 3.0, 0.1)]
    )
    earlier.drop(columns="measured").to_csv(tmp_path / "peers.csv", index=False)
    new = peers.table([_run("ptyopt", "lsqml", 0, 2.0, 0.3), _run("ptychi", "lsqml", 0, 8.0, 0.2)])
    rows = peers.merged(new, tmp_path / "peers.csv").set_index("package")
    assert sorted(rows.index) == ["phaser", "ptychi", "ptyopt"]
    assert rows.loc["ptyopt", "s_per_iter"] == 2.0  # this run's, not the earlier one
    assert rows.loc["phaser", "time_ratio_to_ptyopt"] == pytest.approx(3.0)  # its own run's
    assert rows.loc["ptychi", "time_ratio_to_ptyopt"] == pytest.approx(4.0)
    assert rows.loc["phaser", "measured"] == "earlier run"
    assert peers.merged(new, tmp_path / "absent.csv") is new


def test_curves_name_each_point_by_dataset_engine_and_package():
    run = _run("phaser", "lsqml", 0, 1.0, 0.2)
    run = peers.Run(run.case, run.package, 0, run.result, run.scores, [(1.0, 0.5), (2.0, 0.3)])
    points = peers.curves([run])
    assert points[["dataset", "engine", "package"]].drop_duplicates().values.tolist() == [
        ["d", "lsqml", "phaser"]
    ]
    assert points.seconds.tolist() == [1.0, 2.0] and points.nrmse.tolist() == [0.5, 0.3]


def test_merged_skip_reasons_drop_what_now_has_a_row(tmp_path):
    earlier = tmp_path / "skipped.json"
    earlier.write_text('{"phaser d lsqml": "NaN", "ptyrad epie": "no such engine"}')
    rows = peers.table([_run("ptyopt", "lsqml", 0, 1.0, 0.2), _run("phaser", "lsqml", 0, 3.0, 0.1)])
    reasons = peers.merged_reasons({"ptychi": "not installed"}, rows, earlier)
    assert reasons == {"ptyrad epie": "no such engine", "ptychi": "not installed"}
