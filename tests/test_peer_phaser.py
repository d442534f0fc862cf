"""The phaser adapter's conventions, checked by phaser's own forward pieces on the tiny
dataset (Si [110], 2 slices, 3×3 jittered positions, 32 px, abTEM, noise-free).

phaser's far field of the dataset's ground truth, exp(iσV) placed on the object grid
the adapter gives phaser, with ptyopt's probe (from the dataset's optics) must reproduce
the dataset's patterns as ptyopt's forward model does: this exercises the object grid
and probe-centre mapping (phaser's half pixel), axis order, pattern layout, slice
order, propagators and the object's phase sign together. Tolerance: ptyopt's model is
0.2 % (relative L2) from abTEM's patterns here (abTEM's finer slicing and aperture
edge, float32); phaser's must be within 0.5 % and at most 10 % above ours. Each wrong
mapping fails it: measured while writing the adapter, phaser's patterns are 2.6 % off
without the half pixel and 8.8 % off with the conjugate object. phaser's own initial
probe (its ``focused`` probe with the mapped defocus) must match ptyopt's: a hard
aperture edge against our soft one leaves the overlap at 0.99; with the defocus sign
flipped it drops to 0.85.

Those run phaser in its virtual environment (one worker process, ~5–30 s with JAX's
start) and are skipped where that environment is absent (CI); the mapping of the plan
(steps, noise model, slices, grid) is checked without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import model_patterns_from_ground_truth, nominal_probe, overlap, relative_l2

from ptyopt.initial import object_geometry
from ptyopt.peers import base
from ptyopt.peers.base import PeerPlan, PeerUnavailableError
from ptyopt.registration import tile_periodic

try:
    base.peer_python("phaser")
    needs_phaser = pytest.mark.skipif(False, reason="")
except PeerUnavailableError as missing:
    needs_phaser = pytest.mark.skip(reason=str(missing))


@pytest.fixture(scope="module")
def phaser_forward(tiny_dataset, tmp_path_factory):
    """phaser's grid, far field of the ground truth (with our probe) and its own
    initial probe, for the tiny dataset."""
    from ptyopt.peers import phaser

    truth = tiny_dataset.ground_truth
    geometry = object_geometry(tiny_dataset)
    potential = tile_periodic(
        truth.potential_V_A.astype(np.float64), geometry.shape, tuple(geometry.origin_px)
    )
    plan = PeerPlan(
        engine="epie",
        iterations=1,
        group_size=9,
        slices=len(truth.potential_V_A),
        thickness_A=truth.slice_thickness_A * len(truth.potential_V_A),
        noise_model="amplitude",
        step={"beta_object": 1.0, "beta_probe": 1.0},
    )
    grid, intensities, probe = phaser.far_field(
        tiny_dataset,
        plan,
        tmp_path_factory.mktemp("phaser"),
        np.exp(1j * truth.sigma_per_V_A * potential),
        nominal_probe(tiny_dataset, tiny_dataset.optics.aberrations),
    )
    return grid, intensities, probe


@needs_phaser
def test_phaser_grid_is_ours(tiny_dataset, phaser_forward):
    """phaser keeps the grid it is given, and its probe centres are ours."""
    grid, _, _ = phaser_forward
    geometry = object_geometry(tiny_dataset)
    assert grid.shape == geometry.shape
    np.testing.assert_allclose(grid.centres_px, geometry.positions_px, atol=1e-4)


@needs_phaser
def test_phaser_far_field_reproduces_the_patterns_as_ours(tiny_dataset, phaser_forward):
    _, intensities, _ = phaser_forward
    electrons = (
        tiny_dataset.dose_e_per_A2 * tiny_dataset.simulation["recipe"]["scan"]["step_A"] ** 2
    )
    ours = relative_l2(model_patterns_from_ground_truth(tiny_dataset), tiny_dataset.patterns)
    theirs = relative_l2(electrons * intensities, tiny_dataset.patterns)
    assert theirs < 5e-3
    assert theirs < 1.1 * ours


@needs_phaser
def test_phaser_probe_has_our_defocus(tiny_dataset, phaser_forward):
    _, _, probe = phaser_forward
    flipped = dict(tiny_dataset.optics.aberrations)
    flipped["C10"] = -flipped["C10"]
    assert overlap(probe, nominal_probe(tiny_dataset, tiny_dataset.optics.aberrations)) > 0.98
    assert overlap(probe, nominal_probe(tiny_dataset, flipped)) < 0.9


def _plan(**values) -> PeerPlan:
    settings = {
        "engine": "lsqml",
        "iterations": 3,
        "group_size": 4,
        "noise_model": "amplitude",
        "step": {"beta_object": 0.8, "beta_probe": 0.5},
    }
    return PeerPlan(**{**settings, **values})


def test_phaser_inputs_map_the_plan(tiny_dataset):
    from ptyopt.peers.phaser import phaser_inputs, probe_centres_px

    inputs = phaser_inputs(tiny_dataset, _plan(slices=2, native={"solver": {"gamma": 0.1}}))
    engine = inputs["plan"]["engines"][0]
    # LSQML: ptyopt's β_O is shared out over the slices, phaser's is per slice
    assert engine["solver"] == {
        "type": "lsqml",
        "beta_object": 0.4,
        "beta_probe": 0.5,
        "gamma": 0.1,
    }
    assert engine["slices"] == {"n": 2, "total_thickness": tiny_dataset.nominal_thickness_A}
    assert inputs["plan"]["init"]["probe"]["defocus"] == tiny_dataset.optics.aberrations["C10"]
    # the grid handed to phaser puts its probe centres on ours
    geometry = object_geometry(tiny_dataset)
    centres = probe_centres_px(inputs["scan_A"], inputs["object_corner_A"], inputs["pixel_A"])
    np.testing.assert_allclose(centres, geometry.positions_px, atol=1e-9)
    # patterns in phaser's layout: zero frequency at index 0
    np.testing.assert_array_equal(
        np.fft.fftshift(inputs["patterns"], axes=(-2, -1)), tiny_dataset.patterns
    )


def test_phaser_refuses_what_it_lacks(tiny_dataset):
    from ptyopt.errors import ConfigError
    from ptyopt.peers.phaser import phaser_inputs

    with pytest.raises(PeerUnavailableError, match="Poisson"):
        phaser_inputs(tiny_dataset, _plan(noise_model="poisson"))
    with pytest.raises(ConfigError, match="beta_probe"):
        phaser_inputs(tiny_dataset, _plan(step={"beta_object": 1.0}))
    gradient = phaser_inputs(
        tiny_dataset,
        _plan(
            engine="gradient",
            noise_model="poisson",
            epsilon=0.5,
            step={"learning_rate": 0.1},
            refine_probe=False,
        ),
    )["plan"]["engines"][0]
    assert gradient["noise_model"] == {"type": "poisson", "eps": 0.5}
    assert gradient["solvers"] == {"object": {"type": "adam", "learning_rate": 0.1}}
