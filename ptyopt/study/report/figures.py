"""Figures of a study report: ``history.png``, ``importances.png``, ``pareto.png`` (two
objectives) and ``best_reconstruction.png`` (the best trial's projected potential beside
the ground truth and their difference). A figure that cannot be drawn raises
:class:`FigureSkipped` with the reason instead of an exception from deep inside."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ptyopt.data.dataset import GroundTruth
from ptyopt.data.file import DatasetFileError, read_dataset
from ptyopt.legend import unit
from ptyopt.metrics import Score, potential_on_fov, score_on_field
from ptyopt.registration import remove_gauge, truth_on_fov
from ptyopt.study.artifacts import TrialReconstruction, read_trial
from ptyopt.study.report.scores import best_iterate, final_scores
from ptyopt.study.report.selection import best_trial, completed, pareto_front
from ptyopt.study.report.tables import Columns
from ptyopt.study.settings import objective_iterate

_DPI = 110


class FigureSkipped(Exception):
    """A figure cannot be drawn for this study; the message says why."""


def save_figure(fig: Figure, path: Path) -> Path:
    """Render ``fig`` with the Agg backend (no display) to ``path``."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def readable_log_axis(axis: Axis, values: Iterable[float]) -> None:
    """Label a logarithmic ``axis`` with plain numbers (0.15, 0.2, 0.3, …), as many per
    decade as the span of ``values`` (the plotted data) needs to be read: 1-1.5-2-3-4-5-7
    within one decade, 1-2-5 within two and a half, the decades beyond."""
    data = np.asarray(list(values), float)
    data = data[np.isfinite(data) & (data > 0)]
    span = float(np.log10(data.max() / data.min())) if data.size else 3.0
    subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if span <= 1 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs if span <= 2.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def add_scale_bar(ax: Axes, width_A: float, color: str = "w") -> float:
    """Draw a scale bar in the lower left of an image shown with its extent in Å: the
    longest 1, 2 or 5 × 10ⁿ Å up to a fifth of ``width_A``, labelled; returns its length."""
    target = width_A / 5
    decade = 10 ** np.floor(np.log10(target))
    length = float(max(m * decade for m in (1, 2, 5) if m * decade <= target))
    ax.add_artist(
        AnchoredSizeBar(
            ax.transData,
            length,
            f"{length:g} Å",
            "lower left",
            pad=0.3,
            color=color,
            frameon=False,
            size_vertical=width_A / 80,
            fontproperties={"size": "small"},
        )
    )
    return length


def _label(score: str) -> str:
    """An axis label: the score's name and its unit, e.g. ``seconds [s]``."""
    return f"{score} [{unit(score)}]" if unit(score) else score


def _running_best(values: np.ndarray, direction: StudyDirection) -> np.ndarray:
    """Best value so far along ``values`` for ``direction``."""
    accumulate = (
        np.minimum.accumulate if direction == StudyDirection.MINIMIZE else np.maximum.accumulate
    )
    return accumulate(values)


def _other_iterate(study: optuna.Study) -> tuple[str, str, Callable[[FrozenTrial], dict]]:
    """(the iterate the objective scored, the other one, the other one's scores of a trial)."""
    if objective_iterate(study) == "best":
        return "best", "final", final_scores
    return "final", "best", lambda trial: best_iterate(trial)[1]


def plot_history(study: optuna.Study, columns: Columns, path: Path) -> Path:
    """Objective value per trial number (completed trials; pruned ones with their last
    reported value in grey), the same metric at the other iterate (best or final) where
    recorded, and the running best, one panel per objective, the legends beside them."""
    done = completed(study)
    if not done:
        raise FigureSkipped("no completed trial")
    scored, other, other_scores = _other_iterate(study)
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.values]
    fig = Figure(figsize=(8.4, 2.8 * len(columns.objectives)), layout="constrained")
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
        ax.plot(numbers, values, "o", ms=4, label=f"completed ({scored} iterate)")
        at_other = [(t.number, s[name]) for t in done if name in (s := other_scores(t))]
        if at_other:
            ax.plot(*zip(*at_other, strict=True), "_", ms=9, color="C2", label=f"{other} iterate")
        ax.step(
            numbers,
            _running_best(values, direction),
            where="post",
            color="C3",
            label=f"running best ({direction.name.lower()})",
        )
        ax.set_ylabel(_label(name))
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
    ax.set_xlabel(f"{_label(columns.objectives[0])} ({study.directions[0].name.lower()})")
    ax.set_ylabel(f"{_label(columns.objectives[1])} ({study.directions[1].name.lower()})")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


@dataclass(frozen=True)
class BestImages:
    """The best trial's projected potential, the registered ground truth and their
    difference over the field of view [V·Å], each with its gauge (offset and linear
    ramp, as in the scoring) removed; ``iteration``: the iterate the trial saved (its
    final or best one), ``None`` when its file does not say; ``truth_digest``: a digest
    of the dataset's ground-truth cell, equal for trials scored against the same truth."""

    number: int
    reconstruction: np.ndarray
    truth: np.ndarray
    pixel_size_A: float
    nrmse: float
    iteration: int | None
    truth_digest: str = ""

    @property
    def extent_A(self) -> tuple[float, float, float, float]:
        """``imshow`` extent (left, right, bottom, top) [Å] of the field of view."""
        h, w = self.reconstruction.shape
        return (0.0, w * self.pixel_size_A, h * self.pixel_size_A, 0.0)

    @property
    def difference(self) -> np.ndarray:
        return self.reconstruction - self.truth


def scored_artifacts(trial: FrozenTrial) -> tuple[TrialReconstruction, GroundTruth, Score]:
    """The trial's saved reconstruction, its dataset's ground truth and the reconstruction
    scored again against it (:func:`ptyopt.metrics.score_on_field`). Raises FigureSkipped
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
    return recon, truth, score_on_field(recon.object, truth, recon.origin_px, recon.field_of_view)


def best_images(trial: FrozenTrial) -> BestImages:
    """The trial's projected potential and the ground truth tiled onto the object grid,
    moved by the registration shift used for scoring (see :func:`scored_artifacts`)."""
    recon, truth, score = scored_artifacts(trial)
    potential = potential_on_fov(recon.object, truth.sigma_per_V_A, recon.field_of_view)
    target = truth_on_fov(
        truth.projected_V_A,
        recon.object.shape[-2:],
        np.add(recon.origin_px, score.shift_px),
        recon.field_of_view,
    )
    return BestImages(
        trial.number,
        remove_gauge(potential.sum(axis=0)),
        target,
        recon.pixel_size_A,
        score.nrmse,
        recon.iterations_done,
        hashlib.sha1(np.ascontiguousarray(truth.projected_V_A).tobytes()).hexdigest(),
    )


def plot_best_reconstruction(study: optuna.Study, columns: Columns, path: Path) -> Path:
    """Best trial's projected potential, the ground truth on the same grid and their
    difference, cropped to the field of view, with colour bars in V·Å and scale bars."""
    trial = best_trial(study)
    if trial is None:
        raise FigureSkipped("no completed trial")
    images = best_images(trial)
    extent = images.extent_A
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
        add_scale_bar(ax, extent[1], "k" if cmap == "RdBu_r" else "w")
    at = "" if images.iteration is None else f", iteration {images.iteration}"
    fig.suptitle(
        f"trial {images.number}{at}: field of view, offset and ramp removed, "
        f"NRMSE {images.nrmse:.4g}"
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
