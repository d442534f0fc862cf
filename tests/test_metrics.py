"""Ground-truth scores (DESIGN §12) on a synthetic periodic crystal: perfect for the
truth against itself, blind to the gauge, registering a sub-pixel shift, and degrading
monotonically with noise, blur and (unregistered) shift."""

from __future__ import annotations

import numpy as np
import pytest

from ptyopt import frc, metrics, registration
from ptyopt.data.dataset import GroundTruth
from ptyopt.initial import Geometry

SAMPLING_A = 0.2
CELL_PX = 32
SHAPE = (128, 128)
ORIGIN = (10.0, 10.0)
FOV = (slice(14, 114), slice(14, 114))  # 100 × 100 px, ~3 cells across


def crystal_cell(
    atoms=((0.0, 0.0, 3.0), (0.5, 0.5, 1.5), (0.25, 0.6, 1.0)), width_A=0.35, blur_A=0.0
):
    """(32, 32) periodic cell [V·Å]: Gaussians of ``width_A`` at fractional (y, x) with
    weights, built in Fourier space (exactly periodic); ``blur_A`` adds a Gaussian blur."""
    k = np.fft.fftfreq(CELL_PX, SAMPLING_A)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    envelope = np.exp(-2 * np.pi**2 * (width_A**2 + blur_A**2) * (ky**2 + kx**2))
    spectrum = sum(
        w
        * np.exp(
            -2j
            * np.pi
            * CELL_PX
            * (y * np.fft.fftfreq(CELL_PX)[:, None] + x * np.fft.fftfreq(CELL_PX)[None, :])
        )
        for y, x, w in atoms
    )
    return (
        100.0 * np.real(np.fft.ifft2(spectrum * envelope)) * 2 * np.pi * (width_A / SAMPLING_A) ** 2
    )


CELL = crystal_cell()
TRUTH = registration.tile_periodic(CELL, SHAPE, ORIGIN)
NOISE = np.random.default_rng(0).standard_normal(SHAPE) * TRUTH[FOV].std()


def score(potential, max_shift_px=3.0, **options):
    return metrics.score_projected_potential(
        potential, CELL, ORIGIN, FOV, max_shift_px, sampling_A=SAMPLING_A, **options
    )


def shifted(shift_px):
    return registration.tile_periodic(
        CELL, SHAPE, (ORIGIN[0] + shift_px[0], ORIGIN[1] + shift_px[1])
    )


def assert_degrade(scores):
    """NRMSE strictly up and SSIM strictly down along ``scores``."""
    assert all(
        b.nrmse > a.nrmse and b.ssim < a.ssim for a, b in zip(scores, scores[1:], strict=False)
    ), [(s.nrmse, s.ssim) for s in scores]


def test_truth_against_itself_is_perfect():
    s = score(TRUTH)
    np.testing.assert_allclose(s.shift_px, 0.0, atol=1e-9)
    assert not s.registration_on_bound
    assert s.nrmse < 1e-12 and s.mse < 1e-20 and s.nrmse_gain_fitted < 1e-6
    assert s.gain == pytest.approx(1.0) and s.ssim == pytest.approx(1.0)
    assert (
        s.frc_frequency_per_A[-1]
        <= 0.5 / SAMPLING_A
        < s.frc_frequency_per_A[-1] + s.frc_frequency_per_A[1]
    )
    np.testing.assert_allclose(s.frc, 1.0, atol=1e-9)  # every ring up to Nyquist
    assert s.frc_threshold == 0.5 and s.frc_resolution_A == pytest.approx(
        1 / s.frc_frequency_per_A[-1]
    )
    assert s.frc_halfbit_resolution_A == s.frc_resolution_A and s.frc_area == pytest.approx(1.0)


def test_fourier_shifted_copy_registers():
    s = score(shifted((0.37, -0.81)))
    np.testing.assert_allclose(s.shift_px, (0.37, -0.81), atol=1e-6)
    assert s.nrmse < 1e-6 and s.ssim > 0.999999 and min(s.frc) > 0.999999


def test_noise_degrades_scores_and_frc_resolution():
    scores = [score(TRUTH + level * NOISE) for level in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert_degrade(scores)
    resolutions = [s.frc_resolution_A for s in scores]
    assert (
        all(b >= a for a, b in zip(resolutions, resolutions[1:], strict=False))
        and resolutions[-1] > 1.5 * resolutions[0]
    ), resolutions


def test_blur_degrades_scores():
    assert_degrade(
        [
            score(registration.tile_periodic(crystal_cell(blur_A=blur), SHAPE, ORIGIN))
            for blur in (0.0, 0.1, 0.2, 0.4)
        ]
    )


@pytest.mark.parametrize("max_shift_px", [0.0, 3.0])
def test_unregistered_shift_degrades_scores(max_shift_px):
    """Without registration (bound 0), or beyond the bound (4, 6 px > 3 px), a shift
    degrades the scores; within the bound it is registered away. Beyond the bound the
    registration stops on it, in the direction of the shift, and says so."""
    steps = (0.0, 0.25, 0.5, 1.0, 2.0) if max_shift_px == 0 else (0.0, 4.0, 6.0)
    scores = [score(shifted((step, 0.5 * step)), max_shift_px) for step in steps]
    if max_shift_px == 0:
        assert all(s.shift_px == (0.0, 0.0) and not s.registration_on_bound for s in scores)
    else:
        assert [s.registration_on_bound for s in scores] == [False, True, True]
        for s in scores[1:]:  # on the circle, towards the shift (not exactly: anisotropy)
            assert np.hypot(*s.shift_px) == pytest.approx(3.0)
            assert np.dot(s.shift_px, (2, 1)) / (3 * np.sqrt(5)) > 0.99
    assert_degrade(scores)
    assert score(shifted((2.0, 1.0))).nrmse < 1e-6


def test_offset_and_ramp_do_not_change_scores():
    noisy = TRUTH + 0.3 * NOISE
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]]
    plain, tilted = score(noisy), score(noisy + 7.0 + 0.3 * y - 0.2 * x)
    assert plain.scalars().keys() == tilted.scalars().keys()
    for name, value in plain.scalars().items():
        assert tilted.scalars()[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    np.testing.assert_allclose(tilted.frc, plain.frc, atol=1e-9)


def test_gain_is_not_fitted_in_the_primary_score():
    s = score(0.5 * TRUTH)
    assert s.nrmse == pytest.approx(0.5) and s.gain == pytest.approx(0.5)
    assert s.nrmse_gain_fitted < 1e-6


def test_frc_cannot_see_a_pure_blur_but_nrmse_and_ssim_do():
    sharp, blurred = (
        score(TRUTH),
        score(registration.tile_periodic(crystal_cell(blur_A=0.3), SHAPE, ORIGIN)),
    )
    low = np.asarray(sharp.frc_frequency_per_A) <= 1.0  # 1/Å
    np.testing.assert_allclose(np.asarray(blurred.frc)[low], np.asarray(sharp.frc)[low], atol=0.02)
    assert blurred.nrmse > 0.3 and blurred.ssim < 0.95


def test_frc_rings_are_as_wide_as_the_reciprocal_lattice():
    assert frc.reciprocal_spacing_per_A(CELL, SAMPLING_A) == pytest.approx(
        1 / (CELL_PX * SAMPLING_A)
    )
    supercell = np.tile(CELL, (3, 2))  # 3 × 2 repeats: the lattice is still the cell's
    assert frc.reciprocal_spacing_per_A(supercell, SAMPLING_A) == pytest.approx(
        1 / (CELL_PX * SAMPLING_A)
    )
    frequency, _ = frc.frc(TRUTH[FOV], TRUTH[FOV], SAMPLING_A, ring_width_per_A=0.3)
    assert np.diff(frequency) == pytest.approx(0.3)
    frequency, _ = frc.frc(TRUTH[FOV], TRUTH[FOV], SAMPLING_A)  # default: 2 Fourier pixels
    assert frequency[1] == pytest.approx(2 / (100 * SAMPLING_A))


def multislice_truth():
    """Three different slices [V·Å] of the same lattice, and a geometry whose scan spans the FOV."""
    atoms = [((0.0, 0.0, 3.0),), ((0.5, 0.5, 1.5),), ((0.25, 0.6, 1.0), (0.0, 0.0, 1.0))]
    truth = GroundTruth(
        np.stack([crystal_cell(a) for a in atoms]), 2.0, SAMPLING_A, 1.0e-3, "static", 1
    )
    scan = np.stack(
        np.meshgrid(np.linspace(12, 115, 8), np.linspace(12, 115, 8), indexing="ij"), axis=-1
    ).reshape(-1, 2)
    return truth, Geometry(scan, np.asarray(ORIGIN), SHAPE, (32, 32))


def test_depth_profile_of_a_perfect_multislice_reconstruction():
    truth, geometry = multislice_truth()
    slices = registration.tile_periodic(truth.potential_V_A, SHAPE, ORIGIN)
    s = metrics.score_object(np.exp(1j * truth.sigma_per_V_A * slices), truth, geometry)
    assert s.nrmse < 1e-9 and len(s.depth_nrmse) == 3 and max(s.depth_nrmse) < 1e-9
    swapped = metrics.score_object(
        np.exp(1j * truth.sigma_per_V_A * slices[[1, 2, 0]]), truth, geometry
    )
    assert swapped.nrmse < 1e-9 and min(swapped.depth_nrmse) > 0.5  # the projection cannot tell


def test_depth_profile_uses_the_projection_shift():
    truth, geometry = multislice_truth()
    slices = registration.tile_periodic(
        truth.potential_V_A, SHAPE, (ORIGIN[0] + 0.6, ORIGIN[1] - 0.3)
    )
    s = metrics.score_object(np.exp(1j * truth.sigma_per_V_A * slices), truth, geometry)
    np.testing.assert_allclose(s.shift_px, (0.6, -0.3), atol=0.05)
    assert s.nrmse < 0.03 and max(s.depth_nrmse) < 0.05
