"""Parity of ptyopt's engines with the peers', tuned against tuned: from the arms of the
scoreboard comparisons (``study=scoreboard``: thin, dose-limited; ``scoreboard_thick``:
the thick multislice case), whose arms ``<family>-<package>`` tune each package's
engine family with the same trial budget and score every trial the same way.

Run ``python -m ptyopt.benchmarks.parity`` after the comparisons' reports
(``python -m ptyopt report study=scoreboard_thick publish=true``); the peer benchmark
(:mod:`ptyopt.benchmarks.peers`) runs it too. Writes ``reports/peers/parity.md`` and
``parity.csv``: per comparison × engine family, ptyopt's tuned best and the best peer's
(by NRMSE), and whether ptyopt reaches at least the best peer's NRMSE and SSIM.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.report import regenerate_command, write_report

COMPARISONS = ("scoreboard", "scoreboard_thick")
COLUMNS = [
    "comparison",
    "dataset",
    "engine",
    "ptyopt_nrmse",
    "ptyopt_ssim",
    "best_peer",
    "peer_nrmse",
    "peer_ssim",
    "parity",
    "trials",
    "ptyopt_s_per_iter",
    "peer_s_per_iter",
]
DECIMALS = {
    "ptyopt_nrmse": 4,
    "ptyopt_ssim": 4,
    "peer_nrmse": 4,
    "peer_ssim": 4,
    "ptyopt_s_per_iter": 3,
    "peer_s_per_iter": 3,
}


def parity_rows(comparison: str, arms: pd.DataFrame) -> list[dict]:
    """One row per engine family of a comparison's arms table (``arms.csv``; arm names
    ``<family>-<package>``), for the families that hold ptyopt and at least one peer."""
    family, package = zip(*(name.split("-", 1) for name in arms["arm"]), strict=True)
    arms = arms.assign(family=family, package=package)
    rows = []
    for engine, group in arms.groupby("family", sort=False):
        ours = group[group.package == "ptyopt"]
        peers = group[group.package != "ptyopt"].sort_values("nrmse")
        if ours.empty or peers.empty:
            continue
        mine, best = ours.iloc[0], peers.iloc[0]
        rows.append(
            {
                "comparison": comparison,
                "dataset": mine.dataset,
                "engine": engine,
                "ptyopt_nrmse": mine.nrmse,
                "ptyopt_ssim": mine.ssim,
                "best_peer": best.package,
                "peer_nrmse": best.nrmse,
                "peer_ssim": best.ssim,
                "parity": bool(mine.nrmse <= best.nrmse and mine.ssim >= best.ssim),
                "trials": f"{int(mine.complete)} / {int(best.complete)}",
                "ptyopt_s_per_iter": mine.s_per_iteration,
                "peer_s_per_iter": best.s_per_iteration,
            }
        )
    return rows


def parity_table(reports: Path, comparisons: Sequence[str] = COMPARISONS) -> pd.DataFrame:
    """The parity rows of every comparison whose ``reports/<name>/arms.csv`` exists."""
    rows = []
    for name in comparisons:
        path = reports / name / "arms.csv"
        if path.exists():
            rows += parity_rows(name, pd.read_csv(path))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_parity(
    reports: Path, output: Path | None = None, argv: Sequence[str] | None = None
) -> pd.DataFrame:
    """Write ``parity.md`` and ``.csv`` into ``output`` (default ``reports/peers``) from
    the comparisons' arms under ``reports``."""
    table = parity_table(reports)
    missing = [name for name in COMPARISONS if not (reports / name / "arms.csv").exists()]
    lines = [
        f"- regenerate: `{regenerate_command(__spec__.name, argv)}` (from "
        + ", ".join(f"`reports/{name}/arms.csv`" for name in COMPARISONS)
        + ")",
        "",
        *(__doc__ or "").splitlines()[:5],
        "",
        "Columns: `ptyopt_*` ptyopt's tuned best arm of the family (its best trial's final",
        "iterate), `peer_*` the best peer's (lowest NRMSE); nrmse and ssim of the",
        "registered projected potential against the ground truth, as in every report;",
        "parity: ptyopt's NRMSE ≤ the peer's and its SSIM ≥ the peer's; trials: complete",
        "trials of the two arms (same budget; a failed trial counts against its arm);",
        "`*_s_per_iter` [s]: median time per iteration of the arms' trials, in the same",
        "study run (the arms ran one after another, not interleaved: see",
        "`reports/peers/peers.md` for times measured side by side).",
    ]
    if missing:
        lines += ["", "Not yet run: " + ", ".join(f"`study={name}`" for name in missing)]
    write_report(
        (output or reports / "peers") / "parity.md",
        "Parity, tuned against tuned",
        lines,
        table,
        DECIMALS,
    )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=paths.reports_dir())
    args = parser.parse_args(argv)
    write_parity(args.reports, argv=argv)


if __name__ == "__main__":
    main()
