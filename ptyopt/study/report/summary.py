"""``summary.md`` of a study report: environment, the objectives and the iterate they
scored, the regenerating command, counts per state, throughput, time outside the
reconstruction, how far the final iterates fell behind the best ones, how the objectives
without ground truth agree with it (simulated data), the best trial
(single objective) or the Pareto front (several objectives), and the figures or why each
was skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from ptyopt.benchmarks.report import environment_lines
from ptyopt.legend import legend_section, unit
from ptyopt.study.report.figures import FIGURES
from ptyopt.study.report.scores import iterate_text
from ptyopt.study.report.selection import best_trial, pareto_front
from ptyopt.study.report.tables import BEST_ITERATION, Columns, markdown_table

#: Trial states that count as finished for the throughput.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: Metric (in the ``metrics`` user attribute) holding the reconstruction's own seconds.
RECONSTRUCTION_SECONDS = "seconds"


def _number(value: Any) -> str:
    """A value for prose: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def state_counts(study: optuna.Study) -> pd.DataFrame:
    """Number of trials in each Optuna state (all states, zeros included)."""
    trials = study.get_trials(deepcopy=False)
    return pd.DataFrame(
        [{"state": s.name, "trials": sum(t.state == s for t in trials)} for s in TrialState]
    )


def finished_span(study: optuna.Study) -> tuple[int, float]:
    """Finished (completed, pruned, failed) trials and the hours from the first one's
    start to the last one's completion (0 when none)."""
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.datetime_start and t.datetime_complete
    ]
    if not finished:
        return 0, 0.0
    return len(finished), (
        max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    ).total_seconds() / 3600


def throughput_line(study: optuna.Study) -> str:
    """Finished (completed, pruned, failed) trials per hour (:func:`finished_span`)."""
    finished, span_h = finished_span(study)
    if not finished:
        return "- throughput: n/a (no finished trial)"
    if span_h <= 0:
        return f"- throughput: n/a ({finished} finished trials, zero time span)"
    return (
        f"- throughput: {finished / span_h:.3g} trials/h "
        f"({finished} finished trials in {span_h:.3g} h)"
    )


def overhead_lines(table: pd.DataFrame, columns: Columns) -> list[str]:
    """Share of wall time outside the reconstruction (1 − Σ reconstruction seconds /
    Σ wall_time_s over trials that have both) and compilation's share of wall time."""
    wall = pd.to_numeric(table["wall_time_s"], errors="coerce")
    seconds_column = columns.metrics.get(RECONSTRUCTION_SECONDS)
    if seconds_column is None or not (wall > 0).any():
        return [
            "- time outside the reconstruction: n/a (needs `wall_time_s` and `metrics.seconds`)"
        ]
    seconds = pd.to_numeric(table[seconds_column], errors="coerce")
    both = wall.notna() & seconds.notna()
    if not both.any() or wall[both].sum() <= 0:
        return [
            "- time outside the reconstruction: n/a "
            "(no trial has both `wall_time_s` and `metrics.seconds`)"
        ]
    lines = [
        f"- time outside the reconstruction: {1 - seconds[both].sum() / wall[both].sum():.1%} of "
        f"{wall[both].sum():.4g} s wall time ({int(both.sum())} trials)"
    ]
    compile_s = pd.to_numeric(table["compile_time_s"], errors="coerce")
    timed = wall.notna() & compile_s.notna()
    if timed.any() and wall[timed].sum() > 0:
        lines.append(
            f"- compilation: {compile_s[timed].sum() / wall[timed].sum():.1%} of wall time "
            f"({int(timed.sum())} trials)"
        )
    return lines


def objectives_text(study: optuna.Study, columns: Columns) -> str:
    """The objectives with their directions, e.g. ``nrmse (minimize), seconds (minimize)``."""
    return ", ".join(
        f"{n} ({d.name.lower()})" for n, d in zip(columns.objectives, study.directions, strict=True)
    )


def final_vs_best_line(table: pd.DataFrame, columns: Columns) -> str:
    """Over the completed trials that recorded both: in how many the best scored iterate
    beat the final one in the first objective, and by how much (relative to the best)."""
    metric = columns.objectives[0]
    if metric not in columns.metrics or metric not in columns.best:
        return "- final vs best iterate: n/a (no trial recorded both)"
    done = table[table["state"] == TrialState.COMPLETE.name]
    final = pd.to_numeric(done[columns.metrics[metric]], errors="coerce")
    best = pd.to_numeric(done[columns.best[metric]], errors="coerce")
    both = final.notna() & best.notna() & (best != 0)
    if not both.any():
        return "- final vs best iterate: n/a (no completed trial recorded both)"
    loss = (final[both] - best[both]).abs() / best[both].abs()
    return (
        f"- final vs best iterate in {metric}: the best scored iterate came before the end "
        f"in {int((loss > 0).sum())} of {int(both.sum())} completed trials; the final "
        f"{metric} is worse by a median {loss.median():.1%} "
        f"(at most {loss.max():.1%}, trial {done.loc[loss.idxmax(), 'number']})"
    )


def _trial_fields(columns: Columns) -> list[str]:
    """Columns describing a trial's outcome: number, objectives, parameters, final and
    best-iterate scores."""
    best = [BEST_ITERATION, *columns.best.values()] if columns.best else []
    return [
        "number",
        *columns.objectives,
        *columns.params.values(),
        *columns.metrics.values(),
        *best,
    ]


def best_section(study: optuna.Study, table: pd.DataFrame, columns: Columns) -> list[str]:
    """``## Best trial`` (one objective) or ``## Pareto front`` (several) in markdown."""
    rows = table.set_index("number", drop=False)
    fields = _trial_fields(columns)
    if len(study.directions) == 1:
        trial = best_trial(study)
        if trial is None:
            return ["## Best trial", "", "No completed trial.", ""]
        row = rows.loc[trial.number, fields].dropna()
        detail = pd.DataFrame(
            {
                "field": row.index,
                "value": [_number(v) for v in row],
                "unit": [unit(name) for name in row.index],
            }
        )
        return [
            "## Best trial",
            "",
            f"Trial {trial.number}: {columns.objectives[0]} = {_number(trial.values[0])} "
            f"({study.directions[0].name.lower()}).",
            "",
            markdown_table(detail),
            "",
            *legend_section(row.index),
        ]
    front = [t.number for t in pareto_front(study)]
    if not front:
        return ["## Pareto front", "", "No completed trial.", ""]
    directions = objectives_text(study, columns)
    shown = rows.loc[front, fields].dropna(axis=1, how="all")
    return [
        "## Pareto front",
        "",
        f"{len(front)} Pareto-optimal trials of {directions}: {', '.join(map(str, front))}.",
        "",
        markdown_table(shown),
        "",
        *legend_section(shown.columns),
    ]


def figures_section(figures: dict[str, Path | str]) -> list[str]:
    """``## Figures``: each figure embedded and linked, or the reason it was skipped."""
    lines = ["## Figures", ""]
    for name, heading, _ in FIGURES:
        outcome = figures[name]
        body = (
            f"[{name}]({name})\n\n![{heading}]({name})"
            if isinstance(outcome, Path)
            else f"Skipped: {outcome}."
        )
        lines += [f"### {heading}", "", body, ""]
    return lines


def summary_markdown(
    study: optuna.Study,
    table: pd.DataFrame,
    columns: Columns,
    command: str,
    figures: dict[str, Path | str],
    truth_free: list[str] = (),
) -> str:
    """The whole ``summary.md``; ``truth_free``: its section on the objectives without
    ground truth (:func:`ptyopt.study.report.truth_free.summary_lines`), if any."""
    directions = objectives_text(study, columns)
    lines = [
        f"# Study `{study.study_name}`",
        "",
        *environment_lines(),
        f"- objectives: {directions}, scored on {iterate_text(study)}",
        f"- regenerate: `{command}`",
        "",
        "## Trials",
        "",
        markdown_table(state_counts(study)),
        "",
        throughput_line(study),
        *overhead_lines(table, columns),
        final_vs_best_line(table, columns),
        "- all trials: [trials.md](trials.md), [trials.csv](trials.csv)",
        "",
        *truth_free,
        *best_section(study, table, columns),
        *figures_section(figures),
    ]
    return "\n".join(lines)
