"""Parity of ptyopt's engines with the peers', tuned against tuned: from the arms of the
scoreboard comparisons (``study=scoreboard``: thin, dose-limited; ``scoreboard_thick``:
the thick multislice case; ``scoreboard_thick_epie``: its ePIE family with twice the
trials), whose arms ``<family>-<package>`` tune each package's engine family with the
same trial budget and score every trial the same way.

Run ``python -m ptyopt.benchmarks.parity`` after the comparisons' reports
(``python -m ptyopt report study=scoreboard_thick publish=true``); the peer benchmark
(:mod:`ptyopt.benchmarks.peers`) runs it too. Writes ``reports/peers/parity.md`` and
``parity.csv``: per comparison × engine family, ptyopt's tuned best, the best peer NRMSE
and the best peer SSIM (each of whichever peer reached it), and whether ptyopt reaches
at least both.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ptyopt import paths
from ptyopt.benchmarks.report import regenerate_command, write_report

COMPARISONS = ("scoreboard", "scoreboard_thick", "scoreboard_thick_epie")
COLUMNS = [
    "comparison",
    "dataset",
    "engine",
    "ptyopt_nrmse",
    "ptyopt_ssim",
    "best_peer_nrmse",
    "peer_nrmse",
    "best_peer_ssim",
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
        peers = group[group.package != "ptyopt"]
        if ours.empty or peers.empty:
            continue
        mine = ours.iloc[0]
        by_nrmse = peers.loc[peers.nrmse.idxmin()]
        by_ssim = peers.loc[peers.ssim.idxmax()]
        rows.append(
            {
                "comparison": comparison,
                "dataset": mine.dataset,
                "engine": engine,
                "ptyopt_nrmse": mine.nrmse,
                "ptyopt_ssim": mine.ssim,
                "best_peer_nrmse": by_nrmse.package,
                "peer_nrmse": by_nrmse.nrmse,
                "best_peer_ssim": by_ssim.package,
                "peer_ssim": by_ssim.ssim,
                "parity": bool(mine.nrmse <= by_nrmse.nrmse and mine.ssim >= by_ssim.ssim),
                "trials": " / ".join(
                    f"{arm.package} {int(arm.complete)}" for arm in group.itertuples()
                ),
                "ptyopt_s_per_iter": mine.s_per_iteration,
                "peer_s_per_iter": by_nrmse.s_per_iteration,
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
        *(__doc__ or "").splitlines()[:6],
        "",
        "Columns: `ptyopt_*` ptyopt's tuned best arm of the family (its best trial's final",
        "iterate); `peer_nrmse` the lowest of the peers' tuned best arms (`best_peer_nrmse`",
        "reached it), `peer_ssim` the highest (`best_peer_ssim`); nrmse and ssim of the",
        "registered projected potential against the ground truth, as in every report;",
        "parity: ptyopt's NRMSE ≤ peer_nrmse and its SSIM ≥ peer_ssim; trials: complete",
        "trials of each arm (same budget; a failed trial counts against its arm);",
        "`*_s_per_iter` [s]: median time per iteration of the arms' trials (the peer's:",
        "the `best_peer_nrmse` arm's), in the same",
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
