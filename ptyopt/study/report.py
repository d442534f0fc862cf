"""Report of one Optuna study: trials table, summary and figures in ``reports/<study>/``.

:func:`write_study_report` writes

- ``trials.csv`` / ``trials.md``: one row per trial (number, state, objective values,
  parameters under short unique names, the ``metrics`` user attribute, timings, host,
  ``fail_reason`` / ``pruned_at``);
- ``summary.md``: environment, the regenerating command, counts per state, throughput,
  time outside the reconstruction, the best trial (single objective) or the Pareto
  front (several objectives), and the figures or why each was skipped;
- ``history.png``, ``importances.png``, ``pareto.png`` (two objectives) and
  ``best_reconstruction.png`` (the best trial's projected potential beside the ground
  truth and their difference).

Only the public Optuna API is used, and every user attribute may be missing: a figure
that cannot be drawn is skipped with a note in ``summary.md`` instead of an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ptyopt.benchmarks.report import environment_lines
from ptyopt.data.file import DatasetFileError, read_dataset
from ptyopt.metrics import (
    object_potential_V_A,
    remove_gauge,
    score_projected_potential,
    truth_on_fov,
)
from ptyopt.study.artifacts import read_trial

#: Trial states that count as finished for the throughput.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: User attributes shown as columns after the metrics, in this order.
ATTR_COLUMNS = ("wall_time_s", "compile_time_s", "host", "fail_reason", "pruned_at")
#: Metric (in the ``metrics`` user attribute) holding the reconstruction's own seconds.
RECONSTRUCTION_SECONDS = "seconds"
_DPI = 110


class FigureSkipped(Exception):
    """A figure cannot be drawn for this study; the message says why."""


# --- column names ----------------------------------------------------------------------


def short_names(names: Iterable[str], min_parts: int = 2) -> dict[str, str]:
    """Map dotted names to their shortest unique suffixes of at least ``min_parts``
    components, e.g. ``plan.engines.0.noise.epsilon`` → ``noise.epsilon``, growing to
    ``0.noise.epsilon`` only where two names would otherwise collide."""
    parts = {name: name.split(".") for name in dict.fromkeys(names)}
    length = {name: min(min_parts, len(p)) for name, p in parts.items()}
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


@dataclass(frozen=True)
class Columns:
    """Column names of the trials table.

    objectives: one name per objective (metric names when set, else ``value`` or
    ``value_<i>``). params: full parameter name → short unique name. metrics: key of
    the ``metrics`` user attribute → column (prefixed ``metrics.`` only on a clash).
    """

    objectives: list[str]
    params: dict[str, str]
    metrics: dict[str, str]

    @property
    def all(self) -> list[str]:
        return [
            "number",
            "state",
            *self.objectives,
            *self.params.values(),
            *self.metrics.values(),
            *ATTR_COLUMNS,
        ]


def objective_names(study: optuna.Study) -> list[str]:
    """Metric names of the objectives when set, else ``value`` / ``value_<i>``."""
    if study.metric_names:
        return list(study.metric_names)
    n = len(study.directions)
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def _metrics(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's ``metrics`` user attribute, ``{}`` when absent or not a mapping."""
    metrics = trial.user_attrs.get("metrics")
    return dict(metrics) if isinstance(metrics, dict) else {}


def study_columns(study: optuna.Study, trials: Sequence[FrozenTrial]) -> Columns:
    """Column names for ``trials`` of ``study`` (parameters and metrics in order of first
    appearance)."""
    objectives = objective_names(study)
    params = short_names(name for trial in trials for name in trial.params)
    taken = {"number", "state", *objectives, *params.values(), *ATTR_COLUMNS}
    keys = dict.fromkeys(key for trial in trials for key in _metrics(trial))
    metrics = {key: f"metrics.{key}" if key in taken else key for key in keys}
    return Columns(objectives, params, metrics)


# --- trials table ----------------------------------------------------------------------


def _row(trial: FrozenTrial, columns: Columns) -> dict[str, Any]:
    """One trial as a table row; anything missing is ``None``."""
    values = trial.values or [None] * len(columns.objectives)
    metrics = _metrics(trial)
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    row.update(zip(columns.objectives, values, strict=True))
    row.update({short: trial.params.get(name) for name, short in columns.params.items()})
    row.update({column: metrics.get(key) for key, column in columns.metrics.items()})
    row.update({attr: trial.user_attrs.get(attr) for attr in ATTR_COLUMNS})
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


def write_table(table: pd.DataFrame, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` into ``out_dir``; return their paths."""
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    table.to_csv(csv, index=False)
    md.write_text(markdown_table(table) + "\n")
    return [csv, md]


# --- selecting trials ------------------------------------------------------------------


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with finite values, ordered by number."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    good = [t for t in trials if t.values and all(math.isfinite(v) for v in t.values)]
    return sorted(good, key=lambda t: t.number)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal completed trials (``study.best_trials``), ordered by number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial; for several objectives, the Pareto-front trial best in
    the first objective. ``None`` when no trial has completed."""
    if len(study.directions) == 1:
        return study.best_trial if completed(study) else None
    front = pareto_front(study)
    if not front:
        return None
    sign = 1.0 if study.directions[0] == StudyDirection.MINIMIZE else -1.0
    return min(front, key=lambda t: sign * t.values[0])


# --- figures ---------------------------------------------------------------------------


def save_figure(fig: Figure, path: Path) -> Path:
    """Render ``fig`` with the Agg backend (no display) to ``path``."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def _running_best(values: np.ndarray, direction: StudyDirection) -> np.ndarray:
    """Best value so far along ``values`` for ``direction``."""
    accumulate = (
        np.minimum.accumulate if direction == StudyDirection.MINIMIZE else np.maximum.accumulate
    )
    return accumulate(values)


def plot_history(study: optuna.Study, columns: Columns, path: Path) -> Path:
    """Objective value per trial number (completed trials; pruned ones with their last
    reported value in grey) and the running best, one panel per objective."""
    done = completed(study)
    if not done:
        raise FigureSkipped("no completed trial")
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.values]
    fig = Figure(figsize=(6.4, 2.8 * len(columns.objectives)), layout="constrained")
    axes = fig.subplots(len(columns.objectives), 1, squeeze=False, sharex=True)[:, 0]
    numbers = np.array([t.number for t in done])
    for i, (ax, name, direction) in enumerate(
        zip(axes, columns.objectives, study.directions, strict=True)
    ):
        values = np.array([t.values[i] for t in done])
        if pruned:
            ax.plot(
                [t.number for t in pruned],
                [t.values[i] for t in pruned],
                "x",
                color="0.6",
                label="pruned (last value)",
            )
        ax.plot(numbers, values, "o", ms=4, label="completed")
        ax.step(
            numbers,
            _running_best(values, direction),
            where="post",
            color="C3",
            label=f"running best ({direction.name.lower()})",
        )
        ax.set_ylabel(name)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("trial number")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"history of {study.study_name}")
    return save_figure(fig, path)


def varied_params(trials: Sequence[FrozenTrial]) -> list[str]:
    """Parameters present in every trial of ``trials`` that take more than one value."""
    if not trials:
        return []
    common = set.intersection(*(set(t.params) for t in trials))
    return sorted(name for name in common if len({repr(t.params[name]) for t in trials}) > 1)


def param_importances(study: optuna.Study) -> list[dict[str, float]]:
    """Importances (Optuna's default evaluator, PED-ANOVA, which reads lower as better)
    of the varied parameters, one mapping per objective; raises FigureSkipped when they
    cannot be computed."""
    done = completed(study)
    if len(done) < 2:
        raise FigureSkipped(f"needs at least 2 completed trials, the study has {len(done)}")
    params = varied_params(done)
    if not params:
        raise FigureSkipped("no parameter varies across the completed trials")
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    try:
        with warnings.catch_warnings():  # the targets are already "lower is better"
            warnings.filterwarnings(
                "ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning
            )
            return [
                optuna.importance.get_param_importances(
                    study, params=params, target=lambda t, i=i, s=s: s * t.values[i]
                )
                for i, s in enumerate(signs)
            ]
    except (ValueError, RuntimeError, ImportError) as err:
        raise FigureSkipped(f"importance evaluation failed: {err}") from err


def plot_importances(study: optuna.Study, columns: Columns, path: Path) -> Path:
    """Horizontal bars of parameter importance, one panel per objective."""
    importances = param_importances(study)
    n_params = len(importances[0])
    fig = Figure(figsize=(6.4 * len(importances), 0.45 * n_params + 1.2), layout="constrained")
    axes = fig.subplots(1, len(importances), squeeze=False)[0]
    for ax, name, values in zip(axes, columns.objectives, importances, strict=True):
        ordered = sorted(values.items(), key=lambda item: item[1])
        ax.barh([columns.params[p] for p, _ in ordered], [v for _, v in ordered])
        ax.set_xlabel(f"importance for {name}")
    return save_figure(fig, path)


def plot_pareto(study: optuna.Study, columns: Columns, path: Path) -> Path:
    """Both objectives of every completed trial, the Pareto front highlighted and labelled."""
    if len(study.directions) != 2:
        raise FigureSkipped(f"only drawn for 2 objectives, the study has {len(study.directions)}")
    done, front = completed(study), pareto_front(study)
    if not done:
        raise FigureSkipped("no completed trial")
    fig = Figure(figsize=(5.6, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(
        [t.values[0] for t in done],
        [t.values[1] for t in done],
        "o",
        color="0.7",
        ms=4,
        label="completed",
    )
    front_xy = sorted((t.values[0], t.values[1], t.number) for t in front)
    ax.plot(
        [x for x, _, _ in front_xy],
        [y for _, y, _ in front_xy],
        "o-",
        color="C3",
        label="Pareto front",
    )
    for x, y, number in front_xy:
        ax.annotate(
            str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small"
        )
    ax.set_xlabel(f"{columns.objectives[0]} ({study.directions[0].name.lower()})")
    ax.set_ylabel(f"{columns.objectives[1]} ({study.directions[1].name.lower()})")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


@dataclass(frozen=True)
class BestImages:
    """The best trial's projected potential, the registered ground truth and their
    difference over the field of view [V·Å], each with its gauge (offset and linear
    ramp, as in the scoring) removed."""

    number: int
    reconstruction: np.ndarray
    truth: np.ndarray
    pixel_size_A: float
    nrmse: float

    @property
    def difference(self) -> np.ndarray:
        return self.reconstruction - self.truth


def best_images(trial: FrozenTrial) -> BestImages:
    """Read the trial folder and its dataset; the ground truth is tiled onto the object
    grid and moved by the registration shift used for scoring. Raises FigureSkipped
    when the folder, the dataset or its ground truth is missing."""
    folder = trial.user_attrs.get("trial_dir")
    if not folder:
        raise FigureSkipped(f"trial {trial.number} has no `trial_dir` user attribute")
    try:
        recon = read_trial(Path(folder))
        dataset = read_dataset(recon.dataset_path)
    except (OSError, KeyError, DatasetFileError) as err:
        raise FigureSkipped(f"artifacts of trial {trial.number} unreadable: {err}") from err
    truth = dataset.ground_truth
    if truth is None:
        raise FigureSkipped(f"dataset {recon.dataset_path} has no ground truth")
    potential = object_potential_V_A(recon.object, truth.sigma_per_V_A).sum(axis=0)
    score = score_projected_potential(
        potential, truth.projected_V_A, recon.origin_px, recon.field_of_view
    )
    target = truth_on_fov(
        truth.projected_V_A,
        potential.shape,
        np.add(recon.origin_px, score.shift_px),
        recon.field_of_view,
    )
    return BestImages(
        trial.number,
        remove_gauge(potential[recon.field_of_view]),
        target,
        recon.pixel_size_A,
        score.nrmse,
    )


def plot_best_reconstruction(study: optuna.Study, columns: Columns, path: Path) -> Path:
    """Best trial's projected potential, the ground truth on the same grid and their
    difference, cropped to the field of view, with colour bars in V·Å."""
    trial = best_trial(study)
    if trial is None:
        raise FigureSkipped("no completed trial")
    images = best_images(trial)
    h, w = images.reconstruction.shape
    extent = (0.0, w * images.pixel_size_A, h * images.pixel_size_A, 0.0)
    limit = max(np.abs(images.reconstruction).max(), np.abs(images.truth).max())
    diff_limit = float(np.abs(images.difference).max()) or 1.0
    panels = [
        ("reconstruction", images.reconstruction, "magma", -limit, limit),
        ("ground truth (registered)", images.truth, "magma", -limit, limit),
        ("difference", images.difference, "RdBu_r", -diff_limit, diff_limit),
    ]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    for ax, (title, image, cmap, vmin, vmax) in zip(fig.subplots(1, 3), panels, strict=True):
        shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent)
        fig.colorbar(shown, ax=ax, label="projected potential [V·Å]", shrink=0.85)
        ax.set_title(title)
        ax.set_xlabel("x [Å]")
        ax.set_ylabel("y [Å]")
    fig.suptitle(
        f"trial {images.number}: field of view, offset and ramp removed, NRMSE {images.nrmse:.4g}"
    )
    return save_figure(fig, path)


#: File name, heading and drawing function of every figure, in report order.
FIGURES: tuple[tuple[str, str, Callable[[optuna.Study, Columns, Path], Path]], ...] = (
    ("history.png", "Optimisation history", plot_history),
    ("importances.png", "Parameter importances", plot_importances),
    ("pareto.png", "Pareto front", plot_pareto),
    ("best_reconstruction.png", "Best reconstruction", plot_best_reconstruction),
)


def write_figures(study: optuna.Study, columns: Columns, out_dir: Path) -> dict[str, Path | str]:
    """Draw every figure of :data:`FIGURES` into ``out_dir``: file name → written path,
    or the reason it was skipped (a stale file from an earlier report is removed)."""
    outcome: dict[str, Path | str] = {}
    for name, _, draw in FIGURES:
        path = out_dir / name
        path.unlink(missing_ok=True)
        try:
            outcome[name] = draw(study, columns, path)
        except FigureSkipped as skipped:
            outcome[name] = str(skipped)
    return outcome


# --- summary ---------------------------------------------------------------------------


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


def _trial_fields(columns: Columns) -> list[str]:
    """Columns describing a trial's outcome: number, objectives, parameters, metrics."""
    return ["number", *columns.objectives, *columns.params.values(), *columns.metrics.values()]


def best_section(study: optuna.Study, table: pd.DataFrame, columns: Columns) -> list[str]:
    """``## Best trial`` (one objective) or ``## Pareto front`` (several) in markdown."""
    rows = table.set_index("number", drop=False)
    fields = _trial_fields(columns)
    if len(study.directions) == 1:
        trial = best_trial(study)
        if trial is None:
            return ["## Best trial", "", "No completed trial.", ""]
        row = rows.loc[trial.number, fields].dropna()
        detail = pd.DataFrame({"field": row.index, "value": [_number(v) for v in row]})
        return [
            "## Best trial",
            "",
            f"Trial {trial.number}: {columns.objectives[0]} = {_number(trial.values[0])} "
            f"({study.directions[0].name.lower()}).",
            "",
            markdown_table(detail),
            "",
        ]
    front = [t.number for t in pareto_front(study)]
    if not front:
        return ["## Pareto front", "", "No completed trial.", ""]
    directions = objectives_text(study, columns)
    return [
        "## Pareto front",
        "",
        f"{len(front)} Pareto-optimal trials of {directions}: {', '.join(map(str, front))}.",
        "",
        markdown_table(rows.loc[front, fields].dropna(axis=1, how="all")),
        "",
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
) -> str:
    """The whole ``summary.md``."""
    directions = objectives_text(study, columns)
    lines = [
        f"# Study `{study.study_name}`",
        "",
        *environment_lines(),
        f"- objectives: {directions}",
        f"- regenerate: `{command}`",
        "",
        "## Trials",
        "",
        markdown_table(state_counts(study)),
        "",
        throughput_line(study),
        *overhead_lines(table, columns),
        "- all trials: [trials.md](trials.md), [trials.csv](trials.csv)",
        "",
        *best_section(study, table, columns),
        *figures_section(figures),
    ]
    return "\n".join(lines)


def write_study_report(study: optuna.Study, out_dir: Path, command: str) -> list[Path]:
    """Write the report of ``study`` into ``out_dir`` (``reports/<study>/``):
    ``trials.csv``, ``trials.md``, ``summary.md`` and the figures that can be drawn.
    ``command`` is the shell command that regenerates the report. Returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, columns = trials_table(study)
    written = write_table(table, out_dir, "trials")
    figures = write_figures(study, columns, out_dir)
    summary = out_dir / "summary.md"
    summary.write_text(summary_markdown(study, table, columns, command, figures))
    return [*written, summary, *(p for p in figures.values() if isinstance(p, Path))]
