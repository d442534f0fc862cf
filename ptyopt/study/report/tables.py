"""Columns and the trials table of a study report (``trials.csv`` / ``trials.md``): one
row per trial with its number, state, objective values, parameters under short unique
names, the final iterate's scores (``metrics`` user attribute), the best iterate's
iteration and scores (``best_iteration``, ``best_<metric>``), timings, host,
``fail_reason`` (failed trials only) / ``pruned_at``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from ptyopt.legend import legend_section
from ptyopt.study.report.scores import best_iterate, final_scores

#: Column of the best iterate's iteration (over the whole plan).
BEST_ITERATION = "best_iteration"
#: User attributes shown as columns after the metrics, in this order.
ATTR_COLUMNS = ("wall_time_s", "compile_time_s", "host", "fail_reason", "pruned_at")


# --- column names ----------------------------------------------------------------------


#: Components of a parameter path that say where it sits in the config, not what it is.
_PLACES = ("plan", "engines")


def _meaningful(part: str) -> bool:
    return not (part.isdigit() or part in _PLACES)


def _start_length(parts: list[str], min_parts: int) -> int:
    """Trailing components of ``parts`` that hold ``min_parts`` meaningful ones (all of
    them, if fewer)."""
    wanted = min(min_parts, sum(map(_meaningful, parts)))
    found = 0
    for length, part in enumerate(reversed(parts), start=1):
        found += _meaningful(part)
        if found >= max(wanted, 1):
            return length
    return len(parts)


def short_names(names: Iterable[str], min_parts: int = 2) -> dict[str, str]:
    """Map dotted names to their shortest unique suffixes of ``min_parts`` meaningful
    components (the config's places ``plan``, ``engines`` and an engine's index do not
    count; a schedule's trailing ``value`` is dropped), e.g.
    ``plan.engines.0.noise.epsilon`` → ``noise.epsilon``, ``plan.engines.0.beta_object``
    → ``beta_object``, growing to ``0.object_solver.learning_rate`` only where two names
    would otherwise collide."""
    names = list(dict.fromkeys(names))
    parts = {
        name: name.split(".")[:-1] if name.endswith(".value") else name.split(".") for name in names
    }
    if len({".".join(p) for p in parts.values()}) < len(names):  # a.value beside a
        parts = {name: name.split(".") for name in names}
    length = {name: _start_length(p, min_parts) for name, p in parts.items()}
    while True:
        suffix = {name: ".".join(parts[name][-length[name] :]) for name in parts}
        seen: dict[str, list[str]] = {}
        for name, short in suffix.items():
            seen.setdefault(short, []).append(name)
        growable = [
            n
            for group in seen.values()
            if len(group) > 1
            for n in group
            if length[n] < len(parts[n])
        ]
        if not growable:
            return suffix
        for name in growable:
            length[name] += 1


def parameters_text(params: dict[str, Any]) -> str:
    """Tuned parameters for reading: ``beta_object=0.8522, noise.model=anscombe``, short
    names (:func:`short_names`), floats to 4 significant digits."""
    names = short_names(params)
    return ", ".join(
        f"{names[k]}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in params.items()
    )


@dataclass(frozen=True)
class Columns:
    """Column names of the trials table.

    objectives: one name per objective (metric names when set, else ``value`` or
    ``value_<i>``). params: full parameter name → short unique name. metrics: key of
    the ``metrics`` user attribute (final scores) → column (prefixed ``metrics.`` only
    on a clash). best: score of the best iterate → column ``best_<score>`` (after
    :data:`BEST_ITERATION`).
    """

    objectives: list[str]
    params: dict[str, str]
    metrics: dict[str, str]
    best: dict[str, str]

    @property
    def all(self) -> list[str]:
        return [
            "number",
            "state",
            *self.objectives,
            *self.params.values(),
            *self.metrics.values(),
            *([BEST_ITERATION] if self.best else []),
            *self.best.values(),
            *ATTR_COLUMNS,
        ]


def objective_names(study: optuna.Study) -> list[str]:
    """Metric names of the objectives when set, else ``value`` / ``value_<i>``."""
    if study.metric_names:
        return list(study.metric_names)
    n = len(study.directions)
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def study_columns(study: optuna.Study, trials: Sequence[FrozenTrial]) -> Columns:
    """Column names for ``trials`` of ``study`` (parameters and scores in order of first
    appearance)."""
    objectives = objective_names(study)
    params = short_names(name for trial in trials for name in trial.params)
    taken = {"number", "state", *objectives, *params.values(), *ATTR_COLUMNS}
    keys = dict.fromkeys(key for trial in trials for key in final_scores(trial))
    metrics = {key: f"metrics.{key}" if key in taken else key for key in keys}
    best_keys = dict.fromkeys(key for trial in trials for key in best_iterate(trial)[1])
    return Columns(objectives, params, metrics, {key: f"best_{key}" for key in best_keys})


# --- trials table ----------------------------------------------------------------------


def _row(trial: FrozenTrial, columns: Columns) -> dict[str, Any]:
    """One trial as a table row; anything missing is ``None``."""
    values = trial.values or [None] * len(columns.objectives)
    metrics = final_scores(trial)
    best_iteration, best = best_iterate(trial)
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    row.update(zip(columns.objectives, values, strict=True))
    row.update({short: trial.params.get(name) for name, short in columns.params.items()})
    row.update({column: metrics.get(key) for key, column in columns.metrics.items()})
    if columns.best:
        row[BEST_ITERATION] = best_iteration
    row.update({column: best.get(key) for key, column in columns.best.items()})
    row.update({attr: trial.user_attrs.get(attr) for attr in ATTR_COLUMNS})
    if trial.state != optuna.trial.TrialState.FAIL:  # a retry recorded before retried_after
        row["fail_reason"] = None
    return row


def trials_table(study: optuna.Study) -> tuple[pd.DataFrame, Columns]:
    """All trials of ``study`` as a table, one row per trial ordered by number, and its columns."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    columns = study_columns(study, trials)
    return pd.DataFrame([_row(t, columns) for t in trials], columns=columns.all), columns


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a GitHub markdown table, numbers to 4 significant digits, blanks for missing."""
    cells = table.astype(object).where(table.notna(), None)
    return cells.to_markdown(index=False, floatfmt=".4g", missingval="")


def write_table(
    table: pd.DataFrame, out_dir: Path, stem: str, *, legend: bool = True
) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` into ``out_dir``, the markdown followed by
    the units and meanings of its columns (:func:`ptyopt.legend.legend_section`) when
    ``legend``; return their paths."""
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    table.to_csv(csv, index=False)
    below = legend_section(table.columns) if legend else []
    md.write_text("\n".join([markdown_table(table), "", *below]).rstrip("\n") + "\n")
    return [csv, md]
