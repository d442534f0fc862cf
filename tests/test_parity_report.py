"""The parity table: per engine family, ptyopt's tuned best against the best peer's
(lowest NRMSE), parity only when ptyopt is at least as good in NRMSE and SSIM."""

import pandas as pd

from ptyopt.benchmarks import parity


def _arms(rows):
    columns = ["arm", "dataset", "nrmse", "ssim", "complete", "s_per_iteration"]
    return pd.DataFrame(rows, columns=columns)


def test_best_peer_by_nrmse_and_the_verdict_needs_both_scores(tmp_path):
    arms = _arms(
        [
            ["lsqml-ptyopt", "thick10", 0.084, 0.992, 8, 0.6],
            ["lsqml-phaser", "thick10", 0.086, 0.993, 8, 2.1],  # better SSIM: no parity
            ["epie-ptyopt", "thick10", 0.100, 0.990, 8, 0.8],
            ["epie-phaser", "thick10", 0.110, 0.985, 8, 1.3],
            ["epie-py4dstem", "thick10", 0.101, 0.989, 6, 2.7],  # the best peer
            ["gradient-ptyopt", "thick10", 0.2, 0.95, 8, 0.7],  # no peer arm: no row
        ]
    )
    table = pd.DataFrame(parity.parity_rows("scoreboard_thick", arms))
    assert list(table.engine) == ["lsqml", "epie"]
    lsqml, epie = table.iloc[0], table.iloc[1]
    assert lsqml.best_peer_nrmse == "phaser" and not lsqml.parity
    assert epie.best_peer_nrmse == "py4dstem" and epie.best_peer_ssim == "py4dstem"
    assert epie.parity
    assert epie.trials == "ptyopt 8 / phaser 8 / py4dstem 6" and epie.peer_s_per_iter == 2.7


def test_the_best_ssim_may_come_from_another_peer_than_the_best_nrmse():
    arms = _arms(
        [
            ["epie-ptyopt", "thick10", 0.1037, 0.9885, 8, 0.8],
            ["epie-phaser", "thick10", 0.1118, 0.9888, 8, 2.3],  # worse NRMSE, better SSIM
            ["epie-py4dstem", "thick10", 0.1040, 0.9872, 8, 2.3],
        ]
    )
    (row,) = parity.parity_rows("scoreboard_thick", arms)
    assert (row["best_peer_nrmse"], row["best_peer_ssim"]) == ("py4dstem", "phaser")
    assert row["peer_ssim"] == 0.9888 and not row["parity"]


def test_report_names_the_comparisons_not_yet_run(tmp_path):
    folder = tmp_path / "scoreboard"
    folder.mkdir()
    _arms(
        [["epie-ptyopt", "thin", 0.5, 0.7, 4, 0.1], ["epie-phaser", "thin", 0.6, 0.6, 4, 0.2]]
    ).to_csv(folder / "arms.csv", index=False)
    table = parity.write_parity(tmp_path, argv=[])
    assert table.parity.tolist() == [True]
    text = (tmp_path / "peers" / "parity.md").read_text()
    assert "Not yet run: `study=scoreboard_thick`" in text
    assert (tmp_path / "peers" / "parity.csv").exists()
