"""The PtyRAD adapter's conventions, checked by PtyRAD's own forward model on the tiny
dataset (Si [110], 2 slices, 3×3 jittered positions, 32 px, abTEM, noise-free), and a
short reconstruction on the small one (SrTiO3 [001], 1 slice, 8×8 positions, 48 px).

PtyRAD's far field of the dataset's ground truth, exp(iσV) on the object grid the
adapter gives PtyRAD, with ptyopt's probe, must be ptyopt's model's: this exercises the
object grid and probe-centre mapping (PtyRAD's window corners, pos = centre − N/2), axis
order, pattern layout (PtyRAD's fftshifted far field), slice order and thickness,
the propagator's sign and the object's phase sign together. PtyRAD's propagator has no
band limit, so the reference is ptyopt's model without one (float64): measured 4.8e-7
(relative L2, PtyRAD's float32), tolerance 1e-5; the half-pixel mistake (probe centre at
pos + N/2 − ½) gives 2.6e-2 here. Against the dataset's patterns PtyRAD is 2.31e-3 off, ptyopt
2.01e-3 (with its 2/3-Nyquist band limit; 2.31e-3 without). PtyRAD's own initial probe
(``make_stem_probe`` with the mapped aberrations) overlaps ptyopt's by 0.990 (its hard
aperture edge against our soft one); with the defocus sign flipped by 0.847.

Those run PtyRAD in its virtual environment (``$PTYOPT_PEERS_DIR/ptyrad``; one worker
process each, ~10–20 s with torch's start) and are skipped where it is absent; the
mapping of the plan (steps, loss, constraints, positions) is checked without it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import model_patterns_from_ground_truth, nominal_probe, overlap, relative_l2

from ptyopt.data.file import write_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import object_geometry
from ptyopt.metrics import score_object
from ptyopt.peers import base
from ptyopt.peers import ptyrad as adapter
from ptyopt.peers.base import PeerPlan, PeerUnavailableError
from ptyopt.registration import tile_periodic

try:
    base.peer_python(adapter.PACKAGE)
    needs_ptyrad = pytest.mark.skipif(False, reason="")
except PeerUnavailableError as missing:
    needs_ptyrad = pytest.mark.skip(reason=str(missing))

#: PtyRAD's far field against ptyopt's without band limit (relative L2; measured 4.8e-7).
TOLERANCE = 1e-5


def _electrons(dataset) -> float:
    return dataset.dose_e_per_A2 * dataset.simulation["recipe"]["scan"]["step_A"] ** 2


@pytest.fixture(scope="module")
def ptyrad_forward(tiny_dataset, tmp_path_factory):
    """PtyRAD's intensities of the ground truth (with our probe), its own initial probe
    and its probe centres, for the tiny dataset."""
    truth = tiny_dataset.ground_truth
    geometry = object_geometry(tiny_dataset)
    potential = tile_periodic(
        truth.potential_V_A.astype(np.float64), geometry.shape, tuple(geometry.origin_px)
    )
    return adapter.forward_intensities(
        tiny_dataset,
        np.exp(1j * truth.sigma_per_V_A * potential),
        tmp_path_factory.mktemp("ptyrad"),
        probe=nominal_probe(tiny_dataset, tiny_dataset.optics.aberrations),
        thickness_A=truth.slice_thickness_A * len(truth.potential_V_A),
    )


@needs_ptyrad
def test_ptyrad_probe_centres_are_ours(tiny_dataset, ptyrad_forward):
    _, _, centres = ptyrad_forward
    np.testing.assert_allclose(centres, object_geometry(tiny_dataset).positions_px, atol=1e-4)


@needs_ptyrad
def test_ptyrad_far_field_is_ours(tiny_dataset, ptyrad_forward, x64):
    intensities, _, _ = ptyrad_forward
    theirs = _electrons(tiny_dataset) * intensities
    unlimited = model_patterns_from_ground_truth(tiny_dataset, bandlimit=None)
    assert relative_l2(theirs, unlimited) < TOLERANCE
    # and against the simulated patterns, about as close as ours
    ours = relative_l2(model_patterns_from_ground_truth(tiny_dataset), tiny_dataset.patterns)
    assert relative_l2(theirs, tiny_dataset.patterns) < 1.25 * ours


def test_the_half_pixel_mistake_is_visible_at_the_tolerance(tiny_dataset):
    """Probe centres half a pixel off (PtyRAD's pos taken as the centre − (N − 1)/2)
    change ptyopt's own model by far more than the tolerance."""
    unlimited = model_patterns_from_ground_truth(tiny_dataset, bandlimit=None)
    shifted = model_patterns_from_ground_truth(tiny_dataset, (0.5, 0.5), bandlimit=None)
    assert relative_l2(shifted, unlimited) > 100 * TOLERANCE


@needs_ptyrad
def test_ptyrad_probe_has_our_defocus(tiny_dataset, ptyrad_forward):
    _, probe, _ = ptyrad_forward
    flipped = dict(tiny_dataset.optics.aberrations)
    flipped["C10"] = -flipped["C10"]
    assert overlap(probe, nominal_probe(tiny_dataset, tiny_dataset.optics.aberrations)) > 0.98
    assert overlap(probe, nominal_probe(tiny_dataset, flipped)) < 0.9


@needs_ptyrad
def test_a_short_ptyrad_reconstruction_improves_the_score(small_dataset, tmp_path):
    path = tmp_path / "small.h5"
    write_dataset(path, small_dataset)
    plan = _plan(iterations=6, group_size=16, snapshot_every=2)
    result = adapter.run(path, plan, tmp_path / "run")
    geometry = object_geometry(small_dataset)
    first = score_object(result.snapshots[2], small_dataset.ground_truth, geometry)
    last = score_object(result.object_slices, small_dataset.ground_truth, geometry)
    assert sorted(result.snapshots) == [2, 4, 6]
    assert result.object_slices.shape == (1, *geometry.shape)
    assert len(result.iteration_s) == 6 and result.peak_rss_MB > 0
    assert result.version.startswith("1.")
    assert last.nrmse < 0.5 and last.nrmse < first.nrmse


def _plan(**values) -> PeerPlan:
    settings = {
        "engine": "gradient",
        "iterations": 3,
        "group_size": 4,
        "noise_model": "amplitude",
        "step": {"learning_rate": 0.03, "probe_learning_rate": 0.005},
    }
    return PeerPlan(**{**settings, **values})


def test_ptyrad_inputs_map_the_plan(tiny_dataset):
    inputs = adapter.ptyrad_inputs(
        tiny_dataset,
        _plan(slices=2, native={"recon_params": {"GROUP_MODE": "sparse"}}),
    )
    params = inputs["params"]
    updates = params["model_params"]["update_params"]
    assert updates["obja"] == updates["objp"] == {"start_iter": 1, "lr": 0.03}
    assert updates["probe"] == {"start_iter": 1, "lr": 0.005}
    assert updates["probe_pos_shifts"] == {"start_iter": None, "lr": 0.0}
    assert params["loss_params"]["loss_single"]["state"]
    assert not params["loss_params"]["loss_poissn"]["state"]
    assert all(c["start_iter"] is None for c in params["constraint_params"].values())
    init = params["init_params"]
    assert init["obj_slice_thickness"] == pytest.approx(tiny_dataset.nominal_thickness_A / 2)
    assert init["meas_calibration"] == {"mode": "dx", "value": tiny_dataset.pixel_size_A}
    assert init["pos_scan_rand_std"] == 0.0
    assert init["probe_aberrations"]["C10"] == tiny_dataset.optics.aberrations["C10"]
    assert params["recon_params"]["BATCH_SIZE"]["size"] == 4
    # window corners: the probe centres less N/2, on ptyopt's object grid
    geometry = object_geometry(tiny_dataset)
    n = tiny_dataset.detector_shape[0]
    np.testing.assert_allclose(inputs["pos_px"] + n / 2, geometry.positions_px)
    assert inputs["object"].shape == (1, 2, *geometry.shape)
    np.testing.assert_array_equal(inputs["patterns"], tiny_dataset.patterns)


def test_azimuths_go_in_degrees():
    mapped = adapter.probe_aberrations({"C10": -5.0, "C12": 3.0, "phi12": math.pi / 6})
    assert mapped == pytest.approx({"C10": -5.0, "C12": 3.0, "phi12": 30.0})


def test_the_poisson_model_takes_the_plans_epsilon(tiny_dataset):
    inputs = adapter.ptyrad_inputs(tiny_dataset, _plan(noise_model="poisson", epsilon=0.5))
    loss = inputs["params"]["loss_params"]
    assert loss["loss_poissn"] == {"state": True, "weight": 1.0, "dp_pow": 1.0, "eps": 0.5}
    assert not loss["loss_single"]["state"]


def test_ptyrad_refuses_what_it_lacks(tiny_dataset):
    with pytest.raises(PeerUnavailableError, match="no epie engine"):
        adapter.ptyrad_inputs(
            tiny_dataset, _plan(engine="epie", step={"beta_object": 1.0, "beta_probe": 1.0})
        )
    with pytest.raises(ConfigError, match="probe_learning_rate"):
        adapter.ptyrad_inputs(tiny_dataset, _plan(step={"learning_rate": 0.1}))
    with pytest.raises(ConfigError, match="sparse groups"):
        adapter.ptyrad_inputs(
            tiny_dataset, _plan(native={"recon_params": {"GROUP_MODE": "compact"}})
        )
    with pytest.raises(ConfigError, match="LBFGS"):
        adapter.ptyrad_inputs(
            tiny_dataset, _plan(native={"model_params": {"optimizer_params": {"name": "LBFGS"}}})
        )
    with pytest.raises(ConfigError, match="params sections"):
        adapter.ptyrad_inputs(tiny_dataset, _plan(native={"solver": {}}))
    fixed = adapter.ptyrad_inputs(
        tiny_dataset, _plan(refine_probe=False, step={"learning_rate": 0.1})
    )["params"]["model_params"]["update_params"]["probe"]
    assert fixed == {"start_iter": None, "lr": 0.0}
