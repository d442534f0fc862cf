"""Concatenate the per-study truth_free.csv tables of the four truth_free_* studies into
reports/truth_free/correlations.csv and .md. Run from the project root after
``python -m ptyopt report study=<study>`` for each:
``PYTHONPATH=. python reports/truth_free/combine.py``."""

import pandas as pd

from ptyopt.study.report.tables import markdown_table
from ptyopt.study.report.truth_free import COLUMNS

studies = {
    "truth_free_gradient": "gradient, quickstart (1 slice), 1e6",
    "truth_free_epie_lowdose": "ePIE, quickstart (1 slice), 1e4",
    "truth_free_lsqml_multislice": "LSQML, thick (6 slices), 1e5",
    "truth_free_gradient_thick_lowdose": "gradient, thick (6 slices), 1e4",
}
rows = []
for name, case in studies.items():
    t = pd.read_csv(f"reports/{name}/truth_free.csv")
    t.insert(0, "case", case)
    t.insert(0, "study", name)
    rows.append(t)
table = pd.concat(rows, ignore_index=True)
cols = ["study", "case", *COLUMNS]
table = table[cols]
table.to_csv("reports/truth_free/correlations.csv", index=False)
wide = table.pivot(index="objective", columns="study", values="agreement")[list(studies)]
wide = wide.loc[table["objective"].unique()]
wide.insert(len(studies), "mean", wide.mean(axis=1))
wide.insert(len(studies) + 1, "min", wide.iloc[:, : len(studies)].min(axis=1))
pick = (
    table.assign(excess=table.nrmse_of_pick / table.best_nrmse - 1)
    .pivot(index="objective", columns="study", values="excess")[list(studies)]
    .loc[wide.index]
)
md = [
    "# Objectives without ground truth, measured against it",
    "",
    "Four random-search studies of 30 trials each (no pruning; every trial complete), each with "
    "10 % of the positions held out (`objective.validation_fraction=0.1`, seed 0) and the "
    "split-data FRC on. Scores of the final iterate. Regenerate each study's table with "
    "`python -m ptyopt report study=<study>`; this file concatenates them "
    "(`reports/<study>/truth_free.csv`) with `reports/truth_free/combine.py`.",
    "",
    "## Agreement with NRMSE",
    "",
    "Spearman ρ with NRMSE, signed so that +1 means optimising the score in its direction "
    "ranks the trials as NRMSE does (−1: exactly backwards).",
    "",
    "| study | case |",
    "|---|---|",
    *[f"| `{k}` | {v} |" for k, v in studies.items()],
    "",
    markdown_table(wide.reset_index()),
    "",
    "## Cost of trusting it",
    "",
    "NRMSE of the trial each score would pick, relative to the best trial's "
    "(0 %: it picks the best).",
    "",
    markdown_table((pick * 100).round(1).reset_index()),
    "",
    "## Every row",
    "",
    markdown_table(table),
    "",
]
open("reports/truth_free/correlations.md", "w").write("\n".join(md))
