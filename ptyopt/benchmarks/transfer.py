"""Tune on a twin, apply to your data: the whole transfer workflow of
``reports/transfer/``, run through the command line exactly as a user runs it.

1. ``python -m ptyopt simulate`` the twin (``transfer_twin``: the experiment simulated
   from its nominal metadata) and the stand-in experiment (``transfer_experiment``:
   other seeds, half the dose, defocus and thickness off the nominal ones); the
   experiment is copied without its ground truth to ``<work>/experiment.h5`` (what a
   microscopist has), the truth kept aside for scoring only;
2. ``python -m ptyopt study=transfer``: the gradient plan tuned on the twin by NRMSE
   (resumed if it has run), and ``python -m ptyopt study=transfer_blind
   dataset_file=<work>/experiment.h5``: the same search plus the defocus and the
   thickness, tuned on the experiment itself by the validation error of held-out
   positions, with no ground truth anywhere;
3. ``python -m ptyopt reconstruct dataset_file=<work>/experiment.h5 engine=gradient``
   (the default plan) and ``python -m ptyopt apply study=<each study>
   dataset_file=<work>/experiment.h5``, each with ``out=<work>/<data>/<plan>`` and the
   same 10 % of the positions held out (:data:`HOLD_OUT`); the default and twin-tuned
   plans on the twin's file for comparison;
4. every ``reconstruction.h5`` is scored afterwards against the hidden truth (NRMSE,
   SSIM, half-bit FRC resolution), next to its final data error and the ground-truth-free
   validation error it recorded itself.

Writes ``reports/transfer/transfer.md``, ``transfer.csv`` and ``transfer.png`` (the
summed phase of each reconstruction of the experiment). Run
``python -m ptyopt.benchmarks.transfer`` (``make transfer``); ``--work DIR`` (default
``reconstructions/transfer/``) holds the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ptyopt import paths
from ptyopt.benchmarks.report import regenerate_command, write_report
from ptyopt.data.cache import load_or_simulate
from ptyopt.data.dataset import PtychoDataset
from ptyopt.data.file import write_dataset
from ptyopt.data.recipe import load_recipe
from ptyopt.initial import Measurements
from ptyopt.metrics import potential_on_fov
from ptyopt.reconstruction import Reconstruction
from ptyopt.reconstruction.file import ReconstructionFile, read_reconstruction
from ptyopt.study.report.figures import save_figure
from ptyopt.study.runner import score_metrics

STUDY, BLIND_STUDY = "transfer", "transfer_blind"
TWIN, EXPERIMENT = "transfer_twin", "transfer_experiment"
SCORES = ("nrmse", "ssim", "frc_halfbit_resolution_A")
#: Every reconstruction of the workflow holds out the same positions for its validation error.
HOLD_OUT = "objective.validation_fraction=0.1"
#: (name, command) of each plan, and the data it runs on.
PLANS = {
    "default": ["reconstruct", "engine=gradient"],
    "tuned on the twin": ["apply", f"study={STUDY}"],
    "tuned on the data (validation error)": ["apply", f"study={BLIND_STUDY}"],
}
#: What the stand-in experiment's file gets wrong (conf/dataset/transfer_experiment.yaml).
EXPERIMENT_TRUTH = {"defocus_A": 55.0, "thickness_A": 27.34}


def _ptyopt(*arguments: str) -> str:
    """Run ``python -m ptyopt`` with ``arguments`` in the project; returns its output."""
    command = [sys.executable, "-m", "ptyopt", *arguments]
    print("$ " + " ".join(["python", "-m", "ptyopt", *arguments]), flush=True)
    result = subprocess.run(
        command, cwd=paths.project_root(), capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


def measured_as(reconstruction: ReconstructionFile, dataset: PtychoDataset) -> Measurements:
    """The measurements of ``dataset`` as the reconstruction file's resolved plan took
    them (its geometry, the one its object is scored on)."""
    return Reconstruction(dataset, reconstruction.plan).measurements


def run_workflow(work: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Steps 1–4 of the module docstring; returns one row per (data, plan) and the
    summed phase [rad] of each reconstruction of the experiment."""
    work.mkdir(parents=True, exist_ok=True)
    truths = {name: load_or_simulate(load_recipe(name)) for name in (TWIN, EXPERIMENT)}
    files = {}
    for name, dataset in truths.items():  # kept once written: a study resumes on its hash
        path = work / f"{name.removeprefix('transfer_')}.h5"
        if not path.is_file():
            write_dataset(path, dataclasses.replace(dataset, ground_truth=None))
        files[name] = path
    print(_ptyopt(f"study={STUDY}").strip().splitlines()[-2])
    blind = _ptyopt(f"study={BLIND_STUDY}", f"dataset_file={files[EXPERIMENT]}")
    print(blind.strip().splitlines()[-2])
    rows, phases = [], {}
    for name, dataset in truths.items():
        for plan, command in PLANS.items():
            if name == TWIN and BLIND_STUDY in command[-1]:
                continue  # tuned on the experiment: for the experiment only
            out = work / name / re.sub(r"[^a-z]+", "_", plan).strip("_")
            _ptyopt(*command, HOLD_OUT, f"dataset_file={files[name]}", f"out={out}")
            result = read_reconstruction(out / "reconstruction.h5")
            measurements = measured_as(result, dataset)
            scores = score_metrics(result.object, dataset, measurements)
            applied = json.loads(result.attrs.get("applied", "{}")).get("params", {})
            rows.append(
                {
                    "data": name,
                    "plan": plan,
                    "iterations": int(result.attrs["iterations_done"]),
                    "defocus_A": result.plan["probe"]["defocus_A"],
                    "thickness_A": result.plan["thickness_A"],
                    **{score: scores[score] for score in SCORES},
                    "validation_error": result.truth_free_scores["validation_error"],
                    "data_error": float(result.data_error[-1]),
                    "seconds": float(result.attrs["seconds"]),
                    "tuned": len(applied),
                }
            )
            if name == EXPERIMENT:
                fov = measurements.geometry.field_of_view()
                phases[plan] = potential_on_fov(result.object, 1.0, fov).sum(axis=0)
    return pd.DataFrame(rows), phases


def plot_phases(phases: dict[str, np.ndarray], table: pd.DataFrame, path: Path) -> Path:
    """The summed phase of each plan's reconstruction of the experiment, side by side."""
    fig = Figure(figsize=(4.6 * len(phases), 4.2), layout="constrained")
    experiment = table[table["data"] == EXPERIMENT].set_index("plan")
    for ax, (plan, phase) in zip(fig.subplots(1, len(phases)), phases.items(), strict=True):
        shown = ax.imshow(phase, cmap="magma")
        fig.colorbar(shown, ax=ax, label="phase [rad]", shrink=0.85)
        ax.set_title(f"{plan}: NRMSE {experiment.loc[plan, 'nrmse']:.3f}")
        ax.set_axis_off()
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", type=Path, default=paths.project_root() / "reconstructions" / "transfer"
    )
    args = parser.parse_args(argv)
    table, phases = run_workflow(args.work)
    out = paths.reports_dir() / "transfer"
    lines = [
        f"- regenerate: `{regenerate_command('ptyopt.benchmarks.transfer', argv)}`",
        f"- twin `{TWIN}`, stand-in experiment `{EXPERIMENT}` (conf/dataset/), study "
        f"`{STUDY}` (tuned on the twin by NRMSE) and `{BLIND_STUDY}` (tuned on the "
        "experiment's truthless file by the validation error) in conf/study/; every "
        "reconstruction ran on a file without ground truth, holding out the same 10 % of "
        "the positions, and was scored afterwards against the hidden truth",
        f"- the experiment's truth: defocus {EXPERIMENT_TRUTH['defocus_A']} Å, thickness "
        f"{EXPERIMENT_TRUTH['thickness_A']} Å; its file says 40 Å and 23.43 Å",
    ]
    write_report(out / "transfer.md", "Tune on a twin, apply to your data", lines, table, {})
    plot_phases(phases, table, out / "transfer.png")


if __name__ == "__main__":
    main()
