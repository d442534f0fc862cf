"""Report of one Optuna study: trials table, summary and figures in ``reports/<study>/``.

:func:`write_study_report` writes

- ``trials.csv`` / ``trials.md``: one row per trial, with its final and its best
  iterate's scores (:mod:`.tables`);
- ``summary.md``: environment, the objectives and which iterate they scored, the
  regenerating command, counts per state, throughput, time outside the reconstruction,
  how far final iterates fell behind the best ones, the best trial (single objective) or
  the Pareto front (several objectives), and the figures or why each was skipped
  (:mod:`.summary`);
- ``truth_free.csv`` / ``truth_free.md``: on simulated data, the Spearman ρ of every
  score without ground truth with NRMSE and SSIM over the trials (:mod:`.truth_free`);
- ``history.png``, ``importances.png``, ``pareto.png`` (two objectives) and
  ``best_reconstruction.png`` (:mod:`.figures`).

Which trials count as completed, Pareto-optimal or best is :mod:`.selection`'s; a
trial's recorded final and best-iterate scores are read by :mod:`.scores`.
Only the public Optuna API is used, and every user attribute may be missing: a figure
that cannot be drawn is skipped with a note in ``summary.md`` instead of an exception.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from ptyopt.study.report.figures import write_figures
from ptyopt.study.report.summary import summary_markdown
from ptyopt.study.report.tables import trials_table, write_table
from ptyopt.study.report.truth_free import correlation_table, summary_lines, write_truth_free


def write_study_report(study: optuna.Study, out_dir: Path, command: str) -> list[Path]:
    """Write the report of ``study`` into ``out_dir`` (``reports/<study>/``):
    ``trials.csv``, ``trials.md``, ``truth_free.csv`` and ``truth_free.md`` (where the
    trials have ground-truth scores), ``summary.md`` and the figures that can be drawn.
    ``command`` is the shell command that regenerates the report. Returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, columns = trials_table(study)
    written = write_table(table, out_dir, "trials")
    correlations = correlation_table(study)
    written += write_truth_free(correlations, study.study_name, out_dir)
    figures = write_figures(study, columns, out_dir)
    summary = out_dir / "summary.md"
    summary.write_text(
        summary_markdown(study, table, columns, command, figures, summary_lines(correlations))
    )
    return [*written, summary, *(p for p in figures.values() if isinstance(p, Path))]
