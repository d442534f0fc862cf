"""Scores without ground truth (ptyopt.truth_free): the held-out positions never reach an
update, the validation error of the true object vanishes, the image statistics ignore a
global phase, the split-data FRC of identical and of independent images, the Spearman
table's signs, the configuration errors, and a study on a file without ground truth."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import optuna
import pytest
from conftest import TINY_STUDY, model_patterns_from_ground_truth
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptyopt import physics
from ptyopt.data.file import write_dataset
from ptyopt.engines.common import run_plan
from ptyopt.errors import ConfigError
from ptyopt.initial import (
    ReconState,
    measurements_from,
    object_geometry,
    with_plan,
    with_positions,
)
from ptyopt.paths import conf_dir
from ptyopt.plan import parse_plan
from ptyopt.registration import tile_periodic
from ptyopt.study.report.truth_free import correlation_table, write_truth_free
from ptyopt.study.runner import dataset_for, run_study
from ptyopt.study.settings import validate
from ptyopt.truth_free import (
    held_out_positions,
    interleaved_halves,
    phase_contrast,
    phase_tv,
    split_frc,
    summed_phase,
    validation_error,
)


def gradient_plan(iterations: int = 3, scan: dict | None = None):
    """The gradient engine's plan, short, with small groups and ``scan`` settings."""
    values = OmegaConf.to_container(OmegaConf.load(conf_dir() / "engine" / "gradient.yaml"))
    values["engines"][0].update(iterations=iterations, group_size=8, probe_update_start=1)
    values["scan"].update(scan or {})
    return parse_plan(values)


def test_held_out_positions_never_reach_an_update(small_dataset):
    """NaN-ing the held-out patterns leaves the reconstruction bit for bit as it was and
    only the validation error changes; the subset keeps the grid, the field of view and
    the scan calibration (about the whole scan's centroid) of the whole scan."""
    full = measurements_from(small_dataset)
    held = held_out_positions(small_dataset.n_positions, 0.2, seed=5)
    used = np.setdiff1d(np.arange(small_dataset.n_positions), held)
    assert len(held) == 13 and len(np.intersect1d(held, used)) == 0
    plan = gradient_plan(scan={"rotation_deg": 1.5, "step_scale": 1.02, "margin_px": 4})
    planned = with_plan(full, plan)
    training = with_positions(planned, used)
    assert training.patterns.shape[0] == len(used)
    assert training.geometry.shape == planned.geometry.shape
    assert training.geometry.field_of_view(2) == planned.geometry.field_of_view(2)
    replanned = with_plan(training, plan)  # what run_plan does
    np.testing.assert_array_equal(
        replanned.geometry.positions_px, planned.geometry.positions_px[used]
    )

    scrambled_patterns = np.asarray(full.patterns).copy()
    scrambled_patterns[held] = np.nan
    scrambled = with_plan(dataclasses.replace(full, patterns=jnp.asarray(scrambled_patterns)), plan)
    state = run_plan(plan, training)
    again = run_plan(plan, with_positions(scrambled, used))
    np.testing.assert_array_equal(np.asarray(state.object), np.asarray(again.object))
    np.testing.assert_array_equal(np.asarray(state.probe), np.asarray(again.probe))
    assert math.isfinite(validation_error(state, planned, held))
    assert math.isnan(validation_error(state, scrambled, held))


def true_state(dataset, phase_scale: float = 1.0) -> ReconState:
    """The ground truth's transmission (its slices) and the true probe, on the grid."""
    geometry = object_geometry(dataset)
    gt = dataset.ground_truth
    potential = tile_periodic(gt.potential_V_A, geometry.shape, tuple(geometry.origin_px))
    n = dataset.detector_shape[0]
    probe = physics.probe_wave(
        (n, n),
        dataset.pixel_size_A,
        dataset.optics.energy_eV,
        dataset.optics.semiangle_mrad,
        dataset.optics.aberrations,
    )
    return ReconState(
        object=jnp.asarray(np.exp(1j * phase_scale * gt.sigma_per_V_A * potential), jnp.complex64),
        probe=probe[None],
        positions_px=jnp.asarray(geometry.positions_px, jnp.float32),
        slice_thicknesses_A=(gt.slice_thickness_A,) * len(gt.potential_V_A),
    )


def test_validation_error_of_the_true_object_vanishes(thick_dataset):
    """Noise-free patterns of our forward model (4 slices, 1 electron per pattern): the
    true object and probe explain the held-out ones to float32 rounding; a 20 % stronger
    or a blurred object does not."""
    patterns = model_patterns_from_ground_truth(thick_dataset, electrons=1.0)
    dataset = dataclasses.replace(thick_dataset, patterns=patterns.astype(np.float32))
    measurements = measurements_from(dataset)
    held = held_out_positions(dataset.n_positions, 0.3, seed=1)
    exact = validation_error(true_state(dataset), measurements, held)
    stronger = validation_error(true_state(dataset, 1.2), measurements, held)
    assert exact < 1e-6
    assert stronger > 1e-3


def test_image_statistics_ignore_a_global_phase_and_scale_as_defined(small_dataset):
    """phase_contrast and phase_tv of a reconstruction-like object are unchanged by a
    global phase; the TV of a plane wave φ = a·x over pixels of d Å is a/d exactly, and
    doubling a phase image leaves its contrast and doubles its TV."""
    geometry = object_geometry(small_dataset)
    rng = np.random.default_rng(0)
    phase = 0.3 * rng.standard_normal((1, *geometry.shape))
    obj = np.exp(1j * phase)
    image = summed_phase(obj, geometry)
    shifted = summed_phase(obj * np.exp(1j * 2.5), geometry)
    assert phase_contrast(shifted) == pytest.approx(phase_contrast(image), rel=1e-9)
    assert phase_tv(shifted, 0.2) == pytest.approx(phase_tv(image, 0.2), rel=1e-9)
    assert phase_contrast(2 * image) == pytest.approx(phase_contrast(image), rel=1e-9)
    assert phase_tv(2 * image, 0.2) == pytest.approx(2 * phase_tv(image, 0.2), rel=1e-9)
    ramp = 0.07 * np.arange(23)[None, :] * np.ones((17, 1))
    assert phase_tv(ramp, 0.3) == pytest.approx(0.07 / 0.3, rel=1e-12)


def test_split_frc_of_identical_and_of_independent_images():
    """Identical images correlate at 1 in every ring: the resolution is the finest
    ring's bound, the area 1; independent noise images stay near 0."""
    rng = np.random.default_rng(2)
    image = rng.standard_normal((45, 51))
    same = split_frc(image, image, 0.25)
    assert same["split_frc_area"] == pytest.approx(1.0, abs=0.03)
    assert same["split_frc_resolution_A"] < 2 * 0.25 * 1.1
    independent = split_frc(image, rng.standard_normal((45, 51)), 0.25)
    assert abs(independent["split_frc_area"]) < 0.15
    assert independent["split_frc_resolution_A"] > 4 * 0.25


def test_interleaved_halves_of_a_raster_and_of_a_free_scan():
    """A 5 × 4 raster (rows along x) splits into a checkerboard: neighbours along and
    across rows lie in different halves; positions in no raster order alternate."""
    y, x = np.meshgrid(np.arange(5) * 0.7, np.arange(4) * 0.6, indexing="ij")
    raster = np.stack([y.ravel(), x.ravel()], axis=1)
    first, second, kind = interleaved_halves(raster)
    assert kind == "checkerboard" and len(first) == len(second) == 10
    half = np.zeros(20, int)
    half[second] = 1
    grid = half.reshape(5, 4)
    assert np.all(grid[:, 1:] != grid[:, :-1]) and np.all(grid[1:] != grid[:-1])
    free = np.random.default_rng(0).uniform(0, 5, size=(15, 2))
    first, second, kind = interleaved_halves(free)
    assert kind == "alternate" and list(first) == list(range(0, 15, 2))


def synthetic_study() -> optuna.Study:
    """12 completed trials whose validation error follows NRMSE, whose phase contrast
    falls as NRMSE rises and whose data error rises as NRMSE falls."""
    study = optuna.create_study(study_name="synthetic")
    rng = np.random.default_rng(4)
    for nrmse in np.linspace(0.1, 0.9, 12):
        metrics = {
            "nrmse": nrmse,
            "ssim": 1 - nrmse,
            "validation_error": 0.01 * nrmse + 1e-4 * rng.random(),
            "phase_contrast": 2.0 - nrmse,
        }
        study.add_trial(
            optuna.trial.create_trial(
                value=nrmse, user_attrs={"metrics": metrics, "data_error": 1.0 / nrmse}
            )
        )
    return study


def test_spearman_table_gives_the_expected_signs(tmp_path):
    table = correlation_table(synthetic_study()).set_index("objective")
    assert set(table.index) == {"data_error", "validation_error", "phase_contrast"}
    assert table.loc["validation_error", "spearman_nrmse"] > 0.9
    assert table.loc["validation_error", "spearman_ssim"] < -0.9
    assert table.loc["phase_contrast", "spearman_nrmse"] == pytest.approx(-1.0)
    assert table.loc["phase_contrast", "agreement"] == pytest.approx(1.0)
    assert table.loc["data_error", "agreement"] == pytest.approx(-1.0)
    assert table.loc["data_error", "nrmse_of_pick"] == pytest.approx(0.9)
    assert (table["trials"] == 12).all()
    written = write_truth_free(table.reset_index(), "synthetic", tmp_path)
    assert {p.name for p in written} == {"truth_free.csv", "truth_free.md"}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["study=quickstart", *TINY_STUDY, *overrides])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["objective.validation_fraction=0.5"], "objective.validation_fraction"),
        (["objective.validation_fraction=-0.1"], "objective.validation_fraction"),
        (["objective.metrics=[validation_error]"], "objective.validation_fraction"),
        (["objective.metrics=[split_frc_area]"], "objective.split_frc"),
        (
            [
                "objective.metrics=[split_frc_area]",
                "objective.split_frc=true",
                "objective.iterate=best",
            ],
            "objective.iterate",
        ),
    ],
)
def test_bad_truth_free_settings(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}: ") as error:
        validate(composed(*overrides))
    assert "\n" not in str(error.value)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    return tmp_path


def test_study_on_a_file_without_ground_truth(home):
    """A study of validation_error on a dataset file without ground truth runs, records
    only truth-free scores (no NRMSE), prunes on the curve's validation error; an NRMSE
    objective on that file is a one-line ConfigError."""
    config, _ = validate(composed())
    dataset, _ = dataset_for(config, progress=False)
    path = write_dataset(home / "no_truth.h5", dataclasses.replace(dataset, ground_truth=None))
    base = [f"dataset_file={path}", "study.n_trials=2", "objective.validation_fraction=0.2"]
    with pytest.raises(ConfigError, match="^objective.metrics: nrmse needs a ground truth"):
        run_study(*validate(composed(*base, "study.name=needs_truth")), progress=False)
    config, plan_values = validate(
        composed(
            *base,
            "study.name=no_truth",
            "objective.metrics=[validation_error]",
            "objective.split_frc=true",
        )
    )
    study = run_study(config, plan_values, progress=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    trial = study.trials[0]
    metrics, curve = trial.user_attrs["metrics"], trial.user_attrs["curve"]
    assert "nrmse" not in metrics and "nrmse" not in curve
    assert trial.value == metrics["validation_error"] == curve["validation_error"][-1]
    assert {"phase_contrast", "phase_tv", "split_frc_area", "training_error"} <= set(metrics)
    assert trial.user_attrs["validation_positions"] == 13
    assert set(trial.intermediate_values) == set(curve["iteration"])
    assert correlation_table(study).empty
