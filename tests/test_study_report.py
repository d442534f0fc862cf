"""Study report on hand-made Optuna studies: tables, summary, figures, skipped artifacts."""

from __future__ import annotations

import datetime
import re
from types import SimpleNamespace

import h5py
import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from ptyopt import physics
from ptyopt.data.dataset import GroundTruth, Optics, PtychoDataset
from ptyopt.data.file import write_dataset
from ptyopt.legend import DESCRIPTIONS, legend_lines, with_unit
from ptyopt.registration import tile_periodic
from ptyopt.study.arms import Arm
from ptyopt.study.comparison import ArmResult, best_reconstructions_figure, convergence_figure
from ptyopt.study.report import write_study_report
from ptyopt.study.report.figures import best_images
from ptyopt.study.report.tables import parameters_text, short_names

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning"
)  # set_metric_names

LR0 = "plan.engines.0.object_solver.learning_rate"
LR1 = "plan.engines.1.object_solver.learning_rate"
EPS = "plan.engines.0.noise.epsilon"
DISTRIBUTIONS = {
    LR0: FloatDistribution(1e-4, 1.0, log=True),
    LR1: FloatDistribution(1e-4, 1.0, log=True),
    EPS: FloatDistribution(1e-6, 1e-2, log=True),
}
T0 = datetime.datetime(2025, 1, 1, 12, 0, 0)
SIGMA = 1e-3
ORIGIN = (4.0, 4.0)
FOV = (2, 22, 2, 22)
COMMAND = "python -m ptyopt.study report study=demo"


def add(study, state, *, values=None, params=None, attrs=None, minute=0, intermediate=None):
    """Add a finished (or running) trial starting ``minute`` after T0 and lasting 5 min."""
    params = params or {}
    trial = optuna.trial.create_trial(
        state=state,
        values=values,
        params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params},
        user_attrs=attrs or {},
        intermediate_values=intermediate,
    )
    trial.datetime_start = T0 + datetime.timedelta(minutes=minute)
    trial.datetime_complete = (
        None
        if state == TrialState.RUNNING
        else trial.datetime_start + datetime.timedelta(minutes=5)
    )
    study.add_trial(trial)


def timing(nrmse, seconds=80.0, wall=100.0, best=None):
    """User attributes of a completed trial; ``best``: (iteration, NRMSE) of its best
    iterate, recorded with its other scores."""
    metrics = {"nrmse": nrmse, "ssim": 0.9, "frc_resolution_A": 1.2, "seconds": seconds}
    attrs = {"wall_time_s": wall, "compile_time_s": 10.0, "host": "node1", "metrics": metrics}
    if best is not None:
        at_best = {"nrmse": best[1], "ssim": 0.95, "frc_resolution_A": 1.1, "seconds": 40.0}
        attrs["best_iterate"] = {"iteration": best[0], "metrics": at_best}
    return attrs


def write_artifacts(tmp_path, *, with_dataset=True):
    """A trial folder in the artifacts layout whose object is the ground truth plus a
    little noise, and (optionally) the dataset file holding that ground truth."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:16, :16]
    cell = (50 * np.cos(2 * np.pi * y / 8) * np.cos(2 * np.pi * x / 8) + 60)[None].astype(
        np.float32
    )
    dataset_path = tmp_path / "data" / "tiny.h5"
    if with_dataset:
        truth = GroundTruth(
            cell,
            slice_thickness_A=2.0,
            sampling_A=0.2,
            sigma_per_V_A=SIGMA,
            kind="static",
            n_configurations=1,
        )
        dataset = PtychoDataset(
            name="tiny",
            patterns=rng.random((4, 8, 8), dtype=np.float32),
            positions_A=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float),
            optics=Optics(energy_eV=200e3, semiangle_mrad=20.0),
            # the detector pitch whose reconstruction pixel λ/(N·Δα) is the truth's 0.2 Å
            angular_sampling_mrad=1e3 * physics.wavelength_A(200e3) / (8 * 0.2),
            pattern_centre_px=(4.0, 4.0),
            ground_truth=truth,
        )
        write_dataset(dataset_path, dataset)
    potential = tile_periodic(cell[0], (24, 24), ORIGIN) + rng.normal(0, 2, (24, 24))
    folder = tmp_path / "studies" / "demo" / "trials" / "1"
    folder.mkdir(parents=True)
    with h5py.File(folder / "reconstruction.h5", "w") as file:
        file.create_dataset(
            "object", data=np.exp(1j * SIGMA * potential)[None].astype(np.complex64)
        )
        file.create_dataset("probe", data=np.ones((1, 8, 8), np.complex64))
        file.create_dataset("positions_px", data=np.zeros((4, 2), np.float32))
        file.attrs["origin_px"] = np.array(ORIGIN)
        file.attrs["field_of_view"] = np.array(FOV)
        file.attrs["pixel_size_A"] = 0.2
        file.attrs["slice_thicknesses_A"] = np.array([2.0])
        file.attrs["dataset_path"] = str(dataset_path)
    (folder / "metrics.json").write_text('{"nrmse": 0.2}')
    (folder / "config.yaml").write_text("plan: {}\n")
    return folder


def fill(study, trial_dir, objectives=1):
    """Five finished trials (three completed, one pruned, one failed) and one running."""

    def vals(v):
        return [v, 100 * v] if objectives == 2 else [v]

    params = [
        {LR0: 0.01, LR1: 0.1, EPS: 1e-4},
        {LR0: 0.05, LR1: 0.2, EPS: 1e-3},
        {LR0: 0.2, LR1: 0.3, EPS: 1e-5},
    ]
    add(
        study,
        TrialState.COMPLETE,
        values=[0.5, 10.0] if objectives == 2 else [0.5],
        params=params[0],
        attrs=timing(0.5, best=(30, 0.4)),
        minute=0,
    )
    add(
        study,
        TrialState.COMPLETE,
        values=vals(0.2),
        params=params[1],
        attrs={**timing(0.2, best=(50, 0.2)), "trial_dir": str(trial_dir)},
        minute=10,
    )
    add(
        study,
        TrialState.PRUNED,
        values=vals(0.9),
        params=params[2],
        attrs={"wall_time_s": 30.0, "pruned_at": 10},
        intermediate={10: 0.9},
        minute=20,
    )
    add(study, TrialState.FAIL, params=params[0], attrs={"fail_reason": "NaN in object"}, minute=30)
    add(
        study,
        TrialState.COMPLETE,
        values=vals(0.3),
        params=params[2],
        attrs=timing(0.3, best=(20, 0.25)),
        minute=40,
    )
    add(study, TrialState.RUNNING, params=params[1], minute=50)


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 5000
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0


def test_short_names_stay_unique():
    names = short_names([LR0, LR1, EPS, "seed"])
    assert names == {
        LR0: "0.object_solver.learning_rate",
        LR1: "1.object_solver.learning_rate",
        EPS: "noise.epsilon",
        "seed": "seed",
    }


def test_single_objective_report(tmp_path):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    )
    study = optuna.create_study(study_name="demo", storage=storage, direction="minimize")
    study.set_metric_names(["nrmse"])
    fill(study, write_artifacts(tmp_path))
    out = tmp_path / "reports" / "demo"

    written = write_study_report(study, out, COMMAND)

    names = {
        "trials.csv",
        "trials.md",
        "summary.md",
        "history.png",
        "importances.png",
        "best_reconstruction.png",
    }
    assert {p.name for p in written} == names and all(p.is_file() for p in written)
    assert not (out / "pareto.png").exists()
    table = pd.read_csv(out / "trials.csv")
    assert list(table["number"]) == [0, 1, 2, 3, 4, 5]
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE", "RUNNING"]
    expected = [
        "number",
        "state",
        "nrmse",
        "0.object_solver.learning_rate",
        "1.object_solver.learning_rate",
        "noise.epsilon",
        "metrics.nrmse",
        "ssim",
        "frc_resolution_A",
        "seconds",
        "best_iteration",
        "best_nrmse",
        "best_ssim",
        "best_frc_resolution_A",
        "best_seconds",
        "wall_time_s",
        "compile_time_s",
        "host",
        "fail_reason",
        "pruned_at",
    ]
    assert list(table.columns) == expected
    assert list(table["best_iteration"].iloc[[0, 1, 4]]) == [30, 50, 20]
    assert list(table["best_nrmse"].iloc[[0, 1, 4]]) == [0.4, 0.2, 0.25]
    assert table.loc[[2, 3, 5], ["best_iteration", "best_nrmse"]].isna().all(axis=None)
    assert table.loc[3, "fail_reason"] == "NaN in object" and table.loc[2, "pruned_at"] == 10
    assert table.loc[1, "nrmse"] == pytest.approx(0.2) and table.loc[
        1, "noise.epsilon"
    ] == pytest.approx(1e-3)
    trials_md = (out / "trials.md").read_text()
    assert sum(line.startswith("|") for line in trials_md.splitlines()) == 6 + 2
    assert "- `frc_resolution_A` [Å]: " in trials_md and "thermal-mean ground truth" in trials_md
    summary = (out / "summary.md").read_text()
    assert "# Study `demo`" in summary and f"`{COMMAND}`" in summary
    assert "Trial 1: nrmse = 0.2" in summary
    assert (
        "objectives: nrmse (minimize), scored on the final iterate of each trial "
        "(`objective.iterate=final`)" in summary
    )
    assert (
        "final vs best iterate in nrmse: the best scored iterate came before the end in 2 of 3 "
        "completed trials; the final nrmse is worse by a median 20.0% (at most 25.0%, trial 0)"
        in summary
    )
    best = summary.split("## Best trial")[1].split("##")[0]
    assert re.search(r"\| best_iteration +\| +50 +\| +\|", best) and "best_nrmse" in best
    assert re.search(r"\| frc_resolution_A +\| +1\.2 +\| Å +\|", best)
    assert re.search(r"\| seconds +\| +80 +\| s +\|", best) and "1.0 is the starting object" in best
    assert re.search(r"\| COMPLETE +\| +3 \|", summary) and re.search(r"\| FAIL +\| +1 \|", summary)
    assert "6.67 trials/h (5 finished trials in 0.75 h)" in summary  # 5 trials from 12:00 to 12:45
    assert "time outside the reconstruction: 20.0% of 300 s wall time (3 trials)" in summary
    for png in ("history.png", "importances.png", "best_reconstruction.png"):
        assert f"]({png})" in summary
        assert_png(out / png)
    assert "Skipped: only drawn for 2 objectives" in summary
    images = best_images(study.best_trial)  # ground truth tiled and registered onto the object grid
    assert images.reconstruction.shape == images.truth.shape == (FOV[1] - FOV[0], FOV[3] - FOV[2])
    assert images.nrmse < 0.1 and np.abs(images.difference).std() < 3


def test_two_objective_report_lists_pareto_front(tmp_path):
    study = optuna.create_study(study_name="pareto", directions=["minimize", "minimize"])
    study.set_metric_names(["nrmse", "seconds"])
    study.set_user_attr("objective_iterate", "best")  # as the runner records it
    fill(
        study, tmp_path / "no_such_trial", objectives=2
    )  # front: 0 (0.5, 10) and 1 (0.2, 20); 4 (0.3, 30) is dominated

    written = write_study_report(study, tmp_path / "out", COMMAND)

    assert {p.name for p in written} == {
        "trials.csv",
        "trials.md",
        "summary.md",
        "history.png",
        "importances.png",
        "pareto.png",
    }
    assert_png(tmp_path / "out" / "pareto.png")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert {"nrmse", "seconds", "metrics.nrmse", "metrics.seconds"} <= set(table.columns)
    summary = (tmp_path / "out" / "summary.md").read_text()
    front = summary.split("## Pareto front")[1].split("##")[0]
    assert "2 Pareto-optimal trials of nrmse (minimize), seconds (minimize): 0, 1." in front
    assert "best_iteration" in front and "best_nrmse" in front
    assert "scored on the best scored iterate of each trial (`objective.iterate=best`" in summary
    assert [line.split("|")[1].strip() for line in front.splitlines() if line.startswith("| ")][
        1:
    ] == ["0", "1"]
    assert "Skipped: artifacts of trial 1 unreadable" in summary


def test_missing_artifacts_and_sparse_studies_are_skipped_with_a_note(tmp_path):
    folder = write_artifacts(tmp_path, with_dataset=False)
    study = optuna.create_study(study_name="sparse")
    add(
        study,
        TrialState.COMPLETE,
        values=[0.4],
        params={EPS: 1e-4},
        attrs={"trial_dir": str(folder)},
    )
    add(study, TrialState.FAIL, minute=10)

    written = write_study_report(study, tmp_path / "out", COMMAND)

    assert {p.name for p in written} == {"trials.csv", "trials.md", "summary.md", "history.png"}
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Trial 0: value = 0.4" in summary
    assert (
        "Parameter importances\n\nSkipped: needs at least 2 completed trials, the study has 1."
        in summary
    )
    assert (
        "Best reconstruction\n\nSkipped: artifacts of trial 0 unreadable" in summary
        and "does not exist" in summary
    )
    assert "time outside the reconstruction: n/a" in summary

    empty = optuna.create_study(study_name="empty")
    add(empty, TrialState.FAIL)
    written = write_study_report(empty, tmp_path / "empty", COMMAND)
    assert {p.name for p in written} == {"trials.csv", "trials.md", "summary.md"}
    summary = (tmp_path / "empty" / "summary.md").read_text()
    assert (
        "No completed trial." in summary
        and "Optimisation history\n\nSkipped: no completed trial." in summary
    )
    assert len(pd.read_csv(tmp_path / "empty" / "trials.csv")) == 1


def test_legend_gives_units_and_meanings():
    """Every tabulated score has its unit, the NRMSE says what it compares, and the
    diagnostics are explained; a best_ column is described once through its score."""
    lines = legend_lines(["nrmse", "best_nrmse", "mse", "frc_resolution_A", "gain", "host"])
    text = "\n".join(lines)
    assert len(lines) == 4 and "`best_nrmse`" not in text and "host" not in text
    assert "thermal-mean ground truth" in text and "1.0 is the starting object" in text
    assert "- `mse` [(V·Å)²]" in text and "- `frc_resolution_A` [Å]" in text
    assert "⟨r, t⟩/‖t‖²" in text
    assert legend_lines(["best_mse"]) == [f"- `best_mse` [(V·Å)²]: {DESCRIPTIONS['mse'][1]}"]
    assert with_unit("mse", 1706.24) == "mse 1706 (V·Å)²" and with_unit("ssim", 0.95) == (
        "ssim 0.95"
    )


def test_tuned_parameters_get_short_names():
    """The config's places (plan, engines, an engine's index) and a schedule's `value`
    are left out of a parameter's name unless needed to tell two apart."""
    names = short_names(
        [
            "plan.engines.0.beta_object",
            "plan.engines.0.learning_rate.value",
            "plan.thickness_A",
            "plan.engines.0.regularizers.object_tikhonov.weight",
        ]
    )
    assert list(names.values()) == [
        "beta_object",
        "learning_rate",
        "thickness_A",
        "object_tikhonov.weight",
    ]
    assert short_names(["a.value", "a"]) == {"a.value": "a.value", "a": "a"}
    tuned = {
        "plan.engines.0.beta_object": 0.8522197613870396,
        "plan.engines.0.noise.model": "anscombe",
        "plan.engines.0.group_size": 16,
        "plan.engines.0.illum_reg_probe": 0.000261853,
    }
    assert parameters_text(tuned) == (
        "beta_object=0.8522, noise.model=anscombe, group_size=16, illum_reg_probe=0.0002619"
    )


def _arm_result(tmp_path, name, trial_dir, nrmse, dose=1e4):
    """An arm of two completed trials (hand-made study), the best with ``trial_dir``
    and a convergence curve, on the dataset ``tiny`` at ``dose``."""
    study = optuna.create_study(study_name=name)
    curve = {"iteration": [5, 10, 15], "seconds": [0.4, 0.8, 1.2], "nrmse": [0.9, 0.5, nrmse]}
    attrs = {**timing(nrmse), "trial_dir": str(trial_dir), "curve": curve}
    add(study, TrialState.COMPLETE, values=[nrmse], params={EPS: 1e-4}, attrs=attrs)
    add(study, TrialState.COMPLETE, values=[0.9], params={EPS: 1e-3}, attrs=timing(0.9))
    dataset = SimpleNamespace(name="tiny", dose_e_per_A2=dose)
    config = SimpleNamespace(dataset=dataset, objective=SimpleNamespace(iterate="final"))
    return ArmResult(Arm(name, (), config, {"engines": [{"kind": "gradient"}]}), study)


def test_best_reconstruction_grid_has_truth_colour_bar_and_scale_bar(tmp_path):
    """Arms scored against one ground truth share a group that opens with that truth,
    a colour bar in V·Å and a scale bar in Å on every panel (the field of view is 20 px
    of 0.2 Å: the longest round length up to a fifth of its 4 Å is 0.5 Å)."""
    folder = write_artifacts(tmp_path)
    results = [_arm_result(tmp_path, name, folder, 0.05) for name in ("a", "b")]

    fig = best_reconstructions_figure(results)

    FigureCanvasAgg(fig).draw()
    axes = [ax for sub in fig.subfigs for ax in sub.axes]
    images = [ax for ax in axes if ax.images and ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in images] == ["ground truth (tiny)", "a", "b"]
    assert "registered to a" in images[0].get_title()
    colour_bars = [ax for ax in axes if not ax.get_title() and ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in colour_bars] == ["projected potential [V·Å]"]
    for ax in images:
        bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
        assert len(bars) == 1 and bars[0].txt_label.get_text() == "0.5 Å"


def test_convergence_plot_styles_legend_and_log_ticks(tmp_path):
    """Twelve arms over three engines and four doses get twelve distinct styles, the
    legend lies outside both plots, and the log axes are labelled with plain numbers."""
    folder = write_artifacts(tmp_path)
    results = []
    for engine in ("gradient", "epie", "lsqml"):
        for dose in (1e3, 1e4, 1e5, 1e6):
            result = _arm_result(tmp_path, f"{engine}-{dose:.0e}", folder, 0.2, dose)
            result.arm.plan_values["engines"][0]["kind"] = engine
            results.append(result)

    fig = convergence_figure(results)

    FigureCanvasAgg(fig).draw()
    by_iteration, by_seconds = fig.axes
    styles = {(str(line.get_color()), line.get_linestyle()) for line in by_iteration.lines}
    assert len(styles) == 12
    assert by_iteration.get_legend() is None and by_seconds.get_legend() is None
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 12
    legend_box = fig.legends[0].get_window_extent()
    for ax in (by_iteration, by_seconds):
        assert not legend_box.overlaps(ax.get_window_extent())
    labels = [t.get_text() for t in by_iteration.get_yticklabels() if t.get_text()]
    assert "0.2" in labels and "0.5" in labels and not any("$" in t for t in labels)
    seconds = [t.get_text() for t in by_seconds.get_xticklabels() if t.get_text()]
    assert "1" in seconds and not any("$" in t for t in seconds)
