"""``truth_free.csv`` / ``truth_free.md`` of a study report on simulated data: how well
each score that needs no ground truth (:mod:`ptyopt.truth_free`, and the plain training
``data_error`` as the baseline) ranks the completed trials as the ground truth does.

One row per truth-free score recorded by at least three completed trials that also have
``nrmse`` and ``ssim``, all from the final iterate's scores (user attribute
``metrics``; ``data_error``: its own user attribute, the last iteration's loss under the
trial's noise model):

- ``spearman_nrmse``, ``spearman_ssim``, ``p_nrmse``, ``p_ssim``: Spearman's ρ with
  NRMSE and SSIM and its two-sided p-value (:func:`scipy.stats.spearmanr`);
- ``agreement``: ρ with NRMSE signed so that +1 means the score's natural direction
  ranks the trials exactly as NRMSE does (ρ for a score to minimise, −ρ to maximise);
- ``nrmse_of_pick``, ``best_nrmse``: the NRMSE of the trial the score would have chosen,
  and the lowest NRMSE of all (what an oracle would have chosen);
- ``trials``: the trials compared (NaN scores are left out; an infinite one, e.g. a split
  FRC already below the half-bit curve at its first ring, ranks last).
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
from scipy.stats import spearmanr

from ptyopt.legend import DESCRIPTIONS
from ptyopt.study.report.scores import final_scores
from ptyopt.study.report.selection import completed
from ptyopt.study.report.tables import markdown_table, write_table
from ptyopt.truth_free import TRUTH_FREE_DIRECTIONS

#: The scores compared, with the direction each is optimised in: the training error
#: under the plan's noise model (``data_error``), the same amplitude error as the
#: held-out one but over the training positions (``training_error``), and the rest.
SCORES = {"data_error": "minimize", "training_error": "minimize", **TRUTH_FREE_DIRECTIONS}
#: The table's columns.
COLUMNS = (
    "objective",
    "direction",
    "spearman_nrmse",
    "spearman_ssim",
    "p_nrmse",
    "p_ssim",
    "agreement",
    "nrmse_of_pick",
    "best_nrmse",
    "trials",
)
#: Fewest trials a row needs.
MIN_TRIALS = 3


def _values(study: optuna.Study) -> pd.DataFrame:
    """One row per completed trial: ``nrmse``, ``ssim`` and every score of
    :data:`SCORES` it recorded (NaN where missing)."""
    rows = []
    for trial in completed(study):
        scores = final_scores(trial)
        row = {name: scores.get(name, math.nan) for name in ("nrmse", "ssim", *SCORES)}
        row["data_error"] = trial.user_attrs.get("data_error", math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=["nrmse", "ssim", *SCORES], dtype=float)


def correlation_table(study: optuna.Study) -> pd.DataFrame:
    """The table of the module docstring (empty without ground-truth scores)."""
    values = _values(study)
    rows = []
    for name, direction in SCORES.items():
        finite = values[values[[name, "nrmse", "ssim"]].notna().all(axis=1)]
        if len(finite) < MIN_TRIALS or finite[name].nunique() < 2:
            continue
        rho_nrmse, p_nrmse = spearmanr(finite[name], finite["nrmse"])
        rho_ssim, p_ssim = spearmanr(finite[name], finite["ssim"])
        pick = finite[name].idxmin() if direction == "minimize" else finite[name].idxmax()
        rows.append(
            {
                "objective": name,
                "direction": direction,
                "spearman_nrmse": float(rho_nrmse),
                "spearman_ssim": float(rho_ssim),
                "p_nrmse": float(p_nrmse),
                "p_ssim": float(p_ssim),
                "agreement": float(rho_nrmse if direction == "minimize" else -rho_nrmse),
                "nrmse_of_pick": float(finite.loc[pick, "nrmse"]),
                "best_nrmse": float(finite["nrmse"].min()),
                "trials": len(finite),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_truth_free(table: pd.DataFrame, study_name: str, out_dir: Path) -> list[Path]:
    """Write the :func:`correlation_table` of study ``study_name`` as ``truth_free.csv``
    and ``truth_free.md`` into ``out_dir`` unless it is empty; returns the paths."""
    if table.empty:
        return []
    written = write_table(table, out_dir, "truth_free", legend=False)
    md = out_dir / "truth_free.md"
    md.write_text(
        f"# Truth-free objectives of `{study_name}` against the ground truth\n\n"
        "Spearman ρ of each score with NRMSE and SSIM over the completed trials (final "
        "iterates). `agreement`: ρ with NRMSE signed so that +1 means optimising the score "
        "in its direction ranks the trials as NRMSE does; `nrmse_of_pick`: NRMSE of the "
        "trial the score would choose (`best_nrmse`: the oracle's). "
        f"NRMSE: {DESCRIPTIONS['nrmse'][1]}.\n\n" + markdown_table(table) + "\n"
    )
    return written


def summary_lines(table: pd.DataFrame) -> list[str]:
    """``## Objectives without ground truth`` for ``summary.md`` (nothing for an empty
    table): the score that agrees best with NRMSE and the training-error baseline."""
    if table.empty:
        return []
    best = table.loc[table["agreement"].idxmax()]
    lines = [
        "## Objectives without ground truth",
        "",
        f"- best agreement with NRMSE: `{best['objective']}` (Spearman ρ "
        f"{best['spearman_nrmse']:+.2f} with NRMSE, {best['spearman_ssim']:+.2f} with SSIM, "
        f"{int(best['trials'])} trials; its pick has NRMSE {best['nrmse_of_pick']:.4g}, "
        f"the best trial {best['best_nrmse']:.4g})",
    ]
    baseline = table[table["objective"] == "data_error"]
    if not baseline.empty:
        row = baseline.iloc[0]
        lines.append(
            f"- baseline `data_error` (training loss): ρ {row['spearman_nrmse']:+.2f} with "
            f"NRMSE; its pick has NRMSE {row['nrmse_of_pick']:.4g}"
        )
    lines += ["- every score: [truth_free.md](truth_free.md), [truth_free.csv](truth_free.csv)", ""]
    return lines
