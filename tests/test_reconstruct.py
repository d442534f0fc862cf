"""Reconstruction without ground truth, kept: nothing a reconstruction uses comes from
the ground truth; ``python -m ptyopt reconstruct`` writes ``reconstruction.h5`` and
``reconstruction.png`` with or without one and prints scores only with one."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest

from ptyopt.data.dataset import GroundTruth
from ptyopt.data.file import read_dataset, write_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import measurements_from
from ptyopt.reconstruction import Reconstruction
from ptyopt.study.runner import score_metrics

# 3 iterations on the tiny dataset's 9 positions, probe and positions refined
PLAN = {
    "engines": [
        {
            "kind": "gradient",
            "iterations": 3,
            "group_size": 4,
            "probe_update_start": 1,
            "position_correction": {"start": 1, "step": 0.05},
        }
    ]
}


def scrambled(truth: GroundTruth) -> GroundTruth:
    """Another ground truth: slices reversed and rolled, a third slice, thinner slices
    (a different thickness and slicing than the dataset's nominal ones)."""
    potential = np.roll(truth.potential_V_A[::-1], (3, 5), axis=(1, 2))
    return dataclasses.replace(
        truth,
        potential_V_A=np.concatenate([potential, potential[:1] * 0.5]).astype(np.float32),
        slice_thickness_A=truth.slice_thickness_A * 0.6,
    )


@pytest.fixture(scope="module")
def files(tiny_dataset, small_dataset, tmp_path_factory) -> dict[str, Path]:
    """Files of the tiny dataset (2 slices, 3×3 positions) with its truth and without,
    and of the small one (1 slice, 8×8 positions) with its truth and a scrambled one."""
    folder = tmp_path_factory.mktemp("reconstruct")
    versions = {
        "truth": tiny_dataset,
        "none": dataclasses.replace(tiny_dataset, ground_truth=None),
        "small": small_dataset,
        "scrambled": dataclasses.replace(
            small_dataset, ground_truth=scrambled(small_dataset.ground_truth)
        ),
    }
    return {name: write_dataset(folder / f"{name}.h5", data) for name, data in versions.items()}


def test_scrambling_the_ground_truth_changes_the_scores_and_nothing_else(files):
    runs = {}
    for name in ("small", "scrambled"):
        dataset = read_dataset(files[name])
        reconstruction = Reconstruction(dataset, PLAN)
        state = reconstruction.run()
        runs[name] = (
            reconstruction,
            state,
            score_metrics(state.object, dataset, reconstruction.measurements),
        )
    (a, state_a, scores_a), (b, state_b, scores_b) = runs["small"], runs["scrambled"]
    for field in ("object", "probe", "positions_px"):
        np.testing.assert_array_equal(
            np.asarray(getattr(state_a, field)), np.asarray(getattr(state_b, field))
        )
    assert state_a.slice_thicknesses_A == state_b.slice_thicknesses_A
    assert a.losses == b.losses and len(a.losses) == 3
    assert a.plan_values == b.plan_values
    assert abs(scores_a["nrmse"] - scores_b["nrmse"]) > 0.05, (scores_a, scores_b)


def test_a_multislice_plan_needs_a_thickness(tiny_dataset):
    """Without a nominal thickness, a plan of more than one slice (here from the
    dataset's nominal slicing, or from a later engine) fails naming both sources; one
    slice runs and its thickness is recorded as unknown."""
    unknown = dataclasses.replace(tiny_dataset, ground_truth=None, nominal_thickness_A=None)
    engine = PLAN["engines"][0]
    for plan in (
        PLAN,
        {"slices": 1, "engines": [{**engine, "iterations": 1}, {**engine, "slices": 3}]},
        {"slice_thickness_A": 2.0, "engines": [engine]},
    ):
        with pytest.raises(ConfigError, match="nominal_thickness_A.*plan.thickness_A"):
            Reconstruction(unknown, plan)
    one = Reconstruction(unknown, {"slices": 1, "engines": [{**engine, "iterations": 1}]})
    assert np.isnan(one.run().slice_thicknesses_A).all()
    assert one.plan_values["thickness_A"] is None and one.plan_values["slices"] == 1
    given = Reconstruction(unknown, {**PLAN, "thickness_A": 9.0})
    assert given.measurements.microscope.slices == 2  # the nominal slicing
    assert measurements_from(unknown).thickness_A is None


def cli(home: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PTYOPT_CACHE", "PTYOPT_JAX_CACHE")}
    env["PTYOPT_HOME"] = str(home)
    command = [sys.executable, "-m", "ptyopt", "reconstruct", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_reconstruct_without_ground_truth_writes_the_result(files, tiny_dataset, tmp_path):
    out = tmp_path / "out"
    result = cli(
        tmp_path,
        f"dataset_file={files['none']}",
        "engine=gradient",
        "plan.engines.0.iterations=3",
        "plan.engines.0.group_size=4",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:4] for line in lines[:3]] == [
        [f"{i}/3", "gradient", "data", "error"] for i in (1, 2, 3)
    ]
    assert not any(word in result.stdout.lower() for word in ("nrmse", "ssim", "frc"))
    assert "has no ground truth: no scores" in result.stdout
    n = tiny_dataset.detector_shape[0]
    pixel = tiny_dataset.pixel_size_A
    with h5py.File(out / "reconstruction.h5", "r") as file:
        obj, probe, positions = (file[k][()] for k in ("object", "probe", "positions_A"))
        attrs = dict(file.attrs)
    assert obj.dtype == np.complex64 and obj.ndim == 3 and obj.shape[0] == 2
    assert probe.dtype == np.complex64 and probe.shape == (1, n, n)
    assert positions.shape == (9, 2) and positions.dtype == np.float64
    assert attrs["pixel_size_A"] == pytest.approx(pixel)
    assert attrs["slice_thickness_A"] == pytest.approx(tiny_dataset.nominal_thickness_A / 2)
    # object frame: pixel (j, i) at (j, i)·pixel; no position correction in this plan, so
    # the positions are the dataset's, moved by the origin, every window inside the object
    np.testing.assert_allclose(positions - attrs["origin_A"], tiny_dataset.positions_A, atol=1e-5)
    assert (positions / pixel >= n // 2).all()
    assert (positions / pixel <= np.array(obj.shape[1:]) - n // 2).all()
    plan = json.loads(attrs["plan"])
    assert plan["probe"]["defocus_A"] == pytest.approx(20.0)  # the nominal optics
    assert plan["thickness_A"] == pytest.approx(tiny_dataset.nominal_thickness_A)
    assert plan["slices"] == 2 and plan["engines"][0]["iterations"] == 3
    png = out / "reconstruction.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0.05


def test_reconstruct_with_ground_truth_prints_scores_and_ignores_the_study(files, tmp_path):
    """``engine=lsqml`` under the default study, whose search space names gradient-solver
    paths the lsqml plan lacks: reconstruct neither validates nor needs it."""
    result = cli(
        tmp_path,
        f"dataset_file={files['truth']}",
        "engine=lsqml",
        "plan.engines.0.iterations=2",
        "study.score_every=1",
        f"out={tmp_path / 'lsqml'}",
    )
    assert result.returncode == 0, result.stderr
    assert "1/2 lsqml" in result.stdout and "NRMSE" in result.stdout
    assert "final: nrmse" in result.stdout
    assert (tmp_path / "lsqml" / "reconstruction.h5").is_file()
    assert (tmp_path / "lsqml" / "reconstruction.png").is_file()


def test_reconstruct_holds_out_positions_and_scores_them(files, tiny_dataset, tmp_path):
    """objective.validation_fraction: the held-out positions are named in the file, sit
    at their nominal place, and their validation error is printed and kept; an
    impossible fraction is one line."""
    out = tmp_path / "held"
    common = [f"dataset_file={files['none']}", "engine=gradient", "plan.engines.0.group_size=4"]
    result = cli(
        tmp_path,
        *common,
        "plan.engines.0.iterations=2",
        "objective.validation_fraction=0.3",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr
    with h5py.File(out / "reconstruction.h5", "r") as file:
        held, positions = file["held_out"][()], file["positions_A"][()]
        free = json.loads(file.attrs["truth_free_scores"])
        origin = file.attrs["origin_A"]
    assert len(held) == 3 and positions.shape == (9, 2)  # round(0.3 · 9) of the 9
    np.testing.assert_allclose(positions[held] - origin, tiny_dataset.positions_A[held], atol=1e-5)
    assert 0 < free["validation_error"] < 1 and "phase_contrast" in free
    assert f"validation_error {free['validation_error']:.4g}" in result.stdout
    bad = cli(tmp_path, *common, "objective.validation_fraction=0.7")
    assert bad.returncode == 2
    assert bad.stderr.startswith("ptyopt: error: objective.validation_fraction: must be")
