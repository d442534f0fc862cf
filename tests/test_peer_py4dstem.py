"""The py4DSTEM adapter's conventions: py4DSTEM's own forward model (its probe from the
dataset's optics, its positions, sub-pixel shifts and multislice) on a known object must
reproduce the dataset's patterns as ptyopt's model does.

The dataset: ptyopt's forward model (tested against abTEM in test_forward_vs_abtem) of
an analytic band-limited phase object, a jittered 5×4 raster with unequal steps, a
40 px detector, and defocus, two-fold astigmatism, coma and Cs (the azimuths make an
axis swap or a sign visible). The propagators carry no band limit here, as py4DSTEM's
have none (with ptyopt's 2/3-Nyquist limit, on the ground truth of ``thick10``, the two
models differ by 3.3e-2; without it by 2.7e-5). The remaining difference is py4DSTEM's
single precision: measured 1.7e-5 (1 slice) and 3.3e-5 (3 slices) relative L2, so the
tolerance is 2e-4; the mapping mistakes the test must catch (azimuths unmapped, defocus
sign, axis order) give 1.7e-2, 5.7e-2 and 1.3e-1.

Needs py4DSTEM's environment (``$PTYOPT_PEERS_DIR/py4dstem``); skipped without it. Each
py4DSTEM case is one worker process (about 10 s, most of it importing py4DSTEM).
"""

from __future__ import annotations

import math
from dataclasses import replace

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import relative_l2

from ptyopt import model, physics
from ptyopt.data.dataset import Optics, PtychoDataset
from ptyopt.data.file import write_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import object_geometry
from ptyopt.peers import py4dstem
from ptyopt.peers.base import PeerPlan, PeerUnavailableError, peer_python

N = 40
ENERGY = 200e3
SEMIANGLE = 12.0
ABERRATIONS = {"C10": -40.0, "C12": 25.0, "phi12": 0.6, "C21": 400.0, "phi21": -1.0, "C30": 1e4}
THICKNESS = 12.0
TOLERANCE = 2e-4


def _model_intensities(dataset, object_slices, aberrations=ABERRATIONS, transpose=False):
    """ptyopt's intensities (n, N, N), zero frequency at index 0, without band limit."""
    dx = dataset.pixel_size_A
    geometry = object_geometry(dataset)
    probe = physics.probe_wave((N, N), dx, ENERGY, SEMIANGLE, aberrations, dtype=jnp.complex128)
    slices = object_slices.shape[0]
    props = model.slice_propagators(
        (N, N), dx, ENERGY, [THICKNESS / slices] * slices, None, jnp.complex128
    )
    positions = geometry.positions_px
    if transpose:
        positions = positions[:, ::-1] - positions[:, ::-1].min(0) + positions.min(0)
    return 1e5 * np.asarray(
        model.far_field_intensities(
            jnp.asarray(object_slices), probe[None], jnp.asarray(positions), props
        )
    )


def _dataset(slices: int) -> tuple[PtychoDataset, np.ndarray, np.ndarray]:
    """The dataset, its object on ptyopt's grid (S, H, W) and its intensities."""
    rng = np.random.default_rng(7)
    yy, xx = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
    positions = np.stack([yy.ravel() * 0.83 + 3.1, xx.ravel() * 0.91 + 2.7], -1)
    positions += rng.normal(0, 0.07, positions.shape)
    optics = Optics(ENERGY, SEMIANGLE, ABERRATIONS)
    empty = np.zeros((len(positions), N, N), np.float32)
    dataset = PtychoDataset(
        "conventions", empty, positions, optics, 1.05, (N / 2, N / 2), nominal_thickness_A=THICKNESS
    )
    shape = object_geometry(dataset).shape
    phases = []
    for _ in range(slices):
        spectrum = np.zeros(shape, complex)
        spectrum[:4, :4] = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
        phase = np.real(np.fft.ifft2(spectrum))
        phases.append(0.6 * phase / np.abs(phase).max())
    object_slices = np.exp(1j * np.array(phases))
    intensities = _model_intensities(dataset, object_slices)
    patterns = np.fft.fftshift(intensities, axes=(-2, -1)).astype(np.float32)
    return replace(dataset, patterns=patterns), object_slices, intensities


@pytest.fixture(scope="module")
def peer_available():
    try:
        peer_python(py4dstem.PACKAGE)
    except PeerUnavailableError as missing:
        pytest.skip(f"py4DSTEM's environment is absent: {missing}")


@pytest.mark.parametrize("slices", [1, 3])
def test_py4dstem_forward_model_reproduces_the_patterns(peer_available, slices, tmp_path, x64):
    dataset, object_slices, intensities = _dataset(slices)
    modelled, measured = py4dstem.forward_intensities(dataset, object_slices, tmp_path)
    # its preprocessing puts the recorded patterns' zero frequency at index 0 exactly
    assert relative_l2(measured, intensities) < 1e-6
    assert relative_l2(modelled, intensities) < TOLERANCE


def test_the_mapping_mistakes_are_visible_at_the_tolerance(x64):
    """What py4DSTEM would compute with a convention left unmapped differs from the
    patterns by far more than the tolerance (so the test above can fail)."""
    dataset, object_slices, intensities = _dataset(3)
    unmapped_azimuths = {
        **ABERRATIONS,
        "phi12": math.pi / 2 - ABERRATIONS["phi12"],
        "phi21": math.pi / 2 - ABERRATIONS["phi21"],
    }
    flipped_defocus = {**ABERRATIONS, "C10": -ABERRATIONS["C10"]}
    for wrong in (
        _model_intensities(dataset, object_slices, unmapped_azimuths),
        _model_intensities(dataset, object_slices, flipped_defocus),
        _model_intensities(dataset, object_slices, transpose=True),
    ):
        assert relative_l2(wrong, intensities) > 50 * TOLERANCE


def test_azimuths_are_measured_from_the_other_axis():
    polar = py4dstem.polar_parameters({"C10": -5.0, "C12": 3.0, "phi12": 0.25, "C30": 1.0})
    assert polar == {"C10": -5.0, "C12": 3.0, "phi12": math.pi / 2 - 0.25, "C30": 1.0}
    with pytest.raises(PeerUnavailableError, match="C61"):
        py4dstem.polar_parameters({"C61": 1.0})


def test_epie_maps_onto_gradient_descent_with_the_step_shared_over_slices():
    plan = PeerPlan("epie", 3, 16, slices=4, noise_model="amplitude", step={"beta_object": 0.8})
    settings = py4dstem.reconstruct_settings(plan, n_positions=100)
    assert settings["reconstruction_method"] == "gradient-descent"
    assert settings["step_size"] == pytest.approx(0.2)
    assert settings["max_batch_size"] == 16 and settings["normalization_min"] == 1.0
    assert not settings["fix_probe"]
    assert py4dstem.reconstruct_settings(plan, n_positions=10)["max_batch_size"] is None


@pytest.mark.parametrize(
    "changes, named",
    [({"engine": "lsqml"}, "supported: epie"), ({"noise_model": "poisson"}, "amplitude")],
)
def test_families_without_an_equivalent_are_refused(changes, named):
    plan = PeerPlan(**{"engine": "epie", "iterations": 1, "group_size": 4, **changes})
    with pytest.raises(ConfigError, match=named):
        py4dstem.reconstruct_settings(plan, n_positions=10)


def test_py4dstem_reconstruction_comes_back_on_ptyopt_grid(peer_available, tmp_path, x64):
    """20 fixed-probe iterations on the noise-free dataset: over the scanned field the
    phase correlates with the object best at zero shift (measured 0.999; one pixel
    off, 0.97–0.99), so a result misplaced by a pixel would peak elsewhere."""
    dataset, object_slices, _ = _dataset(1)
    path = write_dataset(tmp_path / "conventions.h5", dataset)
    plan = PeerPlan(
        "epie",
        20,
        5,
        noise_model="amplitude",
        refine_probe=False,
        step={"beta_object": 1.0},
        snapshot_every=8,
    )
    result = py4dstem.run(path, plan, tmp_path / "run")
    assert result.object_slices.shape == object_slices.shape
    assert len(result.iteration_s) == 20 and result.version.startswith("0.14")
    assert sorted(result.snapshots) == [8, 16, 20]  # every 8th, and the last
    assert result.snapshots[20] is result.object_slices
    assert not np.allclose(result.snapshots[8], result.object_slices)
    fov = object_geometry(dataset).field_of_view()
    recon = np.angle(result.object_slices[0])[fov]
    correlations = {
        (dy, dx): np.corrcoef(
            recon.ravel(), np.angle(np.roll(object_slices[0], (dy, dx), (0, 1)))[fov].ravel()
        )[0, 1]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    assert max(correlations, key=correlations.get) == (0, 0)
    assert correlations[(0, 0)] > 0.995
