"""Scores on the shipped specimens at their shipped samplings, in fields of view and at
shifts nobody designed for: Si [110] at the `bench` sampling (lattice periods of 25.6
and 18.3 px, not whole numbers), SrTiO3 [001] at the `quickstart` sampling (21.3 px)
and at the `fine` one, odd FOVs, fractional origins, sub-pixel shifts up to and past
the registration bound, global phases, and a thick specimen held in one slice.

The truths are abTEM's static potentials of the shipped recipes (one probe position,
a few Å thick; the thick one 10 unit cells), simulated once per module with FFTW
plans estimated rather than measured (the plans change nothing but the time).
"""

from __future__ import annotations

import dataclasses

import abtem
import numpy as np
import pytest

from ptyopt import frc, metrics, registration
from ptyopt.data.dataset import GroundTruth
from ptyopt.data.recipe import load_recipe, recipe_from_mapping, recipe_to_dict
from ptyopt.data.simulate import simulate_dataset
from ptyopt.initial import Geometry

ORIGIN = (2.6, 5.3)  # object pixel of the cell origin (fractional on purpose)
FOVS = [(37, 37), (64, 64), (101, 83)]
GRID = np.linspace(-2.9, 2.9, 7)
SHIFTS = [(y, x) for y in GRID for x in GRID if np.hypot(y, x) <= 2.9 + 1e-9]


def static_truth(name: str, slices: int = 1, **structure) -> GroundTruth:
    """Static ground truth of the shipped recipe ``name`` (one position, one
    configuration) with ``slices`` reconstruction slices and structure overrides."""
    values = recipe_to_dict(load_recipe(name))
    values["scan"]["shape"] = [1, 1]
    values["simulation"].update(phonon_configs=1, ground_truth_configs=1)
    values["structure"].update(structure)
    values["reconstruction_slices"] = slices
    with abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
        return simulate_dataset(recipe_from_mapping(values), progress=False).ground_truth


@pytest.fixture(scope="module")
def truths() -> dict[str, GroundTruth]:
    """Si [110] at the bench sampling, SrTiO3 [001] at the quickstart and fine
    samplings (4 Å thick), and SrTiO3 [001] 39 Å thick in 6 slices (quickstart sampling)."""
    return {
        "Si_110_bench": static_truth("bench", thickness_A=4.0),
        "SrTiO3_001_quickstart": static_truth("quickstart", thickness_A=4.0),
        "SrTiO3_001_fine": static_truth("fine", thickness_A=4.0),
        "SrTiO3_001_thick": static_truth("thick", slices=6),
    }


def one_slice(truth: GroundTruth) -> GroundTruth:
    """The same specimen held in a single slice (its projected potential)."""
    return dataclasses.replace(
        truth,
        potential_V_A=truth.potential_V_A.sum(axis=0, keepdims=True),
        slice_thickness_A=truth.slice_thickness_A * len(truth.potential_V_A),
    )


def geometry_for(fov: tuple[int, int], margin_px: int = 2, pad_px: int = 4) -> Geometry:
    """A grid whose scan, shrunk by ``margin_px``, spans exactly ``fov`` (h, w) pixels."""
    h, w = fov
    last = (pad_px + h - 1 + 2 * margin_px, pad_px + w - 1 + 2 * margin_px)
    corners = np.array([[pad_px, pad_px], last], dtype=float)
    shape = (h + 2 * (margin_px + pad_px), w + 2 * (margin_px + pad_px))
    return Geometry(corners, np.asarray(ORIGIN), shape, (64, 64))


def copy_of(
    truth: GroundTruth,
    geometry: Geometry,
    shift_px: tuple[float, float],
    phases: float | np.ndarray = 0.0,
    gain: float = 1.0,
) -> np.ndarray:
    """The truth as a complex object (S, H, W): placed at the origin + ``shift_px``,
    each slice times e^{i·phase}, its potential times ``gain``."""
    potential = registration.tile_periodic(
        truth.potential_V_A.astype(np.float64), geometry.shape, np.add(ORIGIN, shift_px)
    )
    phase = gain * truth.sigma_per_V_A * potential + np.reshape(phases, (-1, 1, 1))
    return np.exp(1j * phase)


@pytest.mark.parametrize("fov", FOVS, ids=lambda f: f"{f[0]}x{f[1]}")
@pytest.mark.parametrize("name", ["Si_110_bench", "SrTiO3_001_quickstart"])
def test_exact_copies_score_perfectly_at_every_shift_in_the_bound(truths, name, fov):
    """An exact copy at any sub-pixel shift inside the 3-px disc scores as the truth,
    with the shift found: the registration neither stops at 1/20 px nor jumps to a
    neighbouring lattice vector (the global correlation peak did, NRMSE up to 0.9)."""
    truth, geometry = truths[name], geometry_for(fov)
    assert (geometry.field_of_view(2)[0].stop - geometry.field_of_view(2)[0].start) == fov[0]
    for shift in SHIFTS:
        s = metrics.score_object(copy_of(truth, geometry, shift), truth, geometry)
        assert s.nrmse <= 1e-3 and s.ssim >= 0.999, (shift, s.nrmse, s.ssim, s.shift_px)
        assert np.hypot(*np.subtract(s.shift_px, shift)) <= 1e-2, (shift, s.shift_px)
        assert not s.registration_on_bound


@pytest.mark.parametrize("name", ["Si_110_bench", "SrTiO3_001_quickstart"])
@pytest.mark.parametrize("direction", [(0.0, 1.0), (np.sqrt(0.5), -np.sqrt(0.5))])
def test_a_shift_past_the_bound_stops_on_it_and_degrades_smoothly(truths, name, direction):
    """Past the 3-px bound the registration stops on it (and says so): a copy shifted
    by 3.1 px scores like a 0.1 px misregistration, and the score grows smoothly with
    the excess (the old registration switched off there: NRMSE 0 at 2.9, 1.15 at 3.1)."""
    truth, geometry = truths[name], geometry_for((64, 64))
    distances = (2.9, 3.0, 3.1, 3.3, 4.0)
    scores = [
        metrics.score_object(copy_of(truth, geometry, np.multiply(d, direction)), truth, geometry)
        for d in distances
    ]
    assert [s.registration_on_bound for s in scores] == [False, True, True, True, True]
    assert scores[0].nrmse <= 1e-3 and scores[1].nrmse <= 1e-3
    assert all(b.nrmse > a.nrmse for a, b in zip(scores[1:], scores[2:], strict=False))
    assert all(np.hypot(*s.shift_px) == pytest.approx(3.0) for s in scores[1:])
    for excess, s in zip((0.1, 0.3), scores[2:4], strict=True):
        misregistered = metrics.score_object(
            copy_of(truth, geometry, np.multiply(excess, direction)),
            truth,
            geometry,
            max_shift_px=0.0,
        )
        assert s.nrmse == pytest.approx(misregistered.nrmse, rel=0.05), excess


def test_registration_ignores_the_gain(truths):
    """A copy at half the contrast registers to the exact shift (the registration fits
    a gain, the score does not): fitting none would move it to where the truth has the
    least energy in the FOV, by ~3e-4 px here."""
    truth, geometry = truths["SrTiO3_001_quickstart"], geometry_for((37, 37))
    s = metrics.score_object(copy_of(truth, geometry, (1.3, -0.4), gain=0.5), truth, geometry)
    np.testing.assert_allclose(s.shift_px, (1.3, -0.4), atol=1e-6)
    assert s.nrmse == pytest.approx(0.5, rel=1e-6) and s.gain == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("phase", [1.6, np.pi, -2.5])
def test_a_global_phase_does_not_change_the_score(truths, phase):
    """truth × e^{iφ} scores as the truth (the angle of the product wrapped: NRMSE 1.7)."""
    truth, geometry = truths["SrTiO3_001_quickstart"], geometry_for((37, 37))
    plain = metrics.score_object(copy_of(truth, geometry, (0.4, -1.1)), truth, geometry)
    rotated = metrics.score_object(copy_of(truth, geometry, (0.4, -1.1), phase), truth, geometry)
    assert rotated.nrmse <= 1e-3 and rotated.ssim >= 0.999
    assert rotated.nrmse == pytest.approx(plain.nrmse, abs=1e-9)
    np.testing.assert_allclose(rotated.shift_px, (0.4, -1.1), atol=1e-6)


@pytest.mark.parametrize("fov", FOVS, ids=lambda f: f"{f[0]}x{f[1]}")
def test_a_thick_specimen_in_one_slice_scores_as_the_truth(truths, fov):
    """SrTiO3 [001] 39 Å thick (static) held in one slice: its projected phase spans
    more than 2π and changes by up to 5 rad between neighbouring pixels on the columns,
    more than any spatial unwrapping can follow; the pixels it leaves a turn off are
    taken at the representative nearest the registered truth."""
    truth, geometry = one_slice(truths["SrTiO3_001_thick"]), geometry_for(fov)
    phase = truth.sigma_per_V_A * truth.projected_V_A
    assert np.ptp(phase) > 2 * np.pi
    for shift in [(0.0, 0.0), (0.0, 1.93), (-1.3, 0.8), (2.1, -1.9)]:
        for global_phase in (0.0, 1.6):
            s = metrics.score_object(copy_of(truth, geometry, shift, global_phase), truth, geometry)
            assert s.nrmse <= 1e-3 and s.ssim >= 0.999, (shift, global_phase, s.nrmse)
            assert np.hypot(*np.subtract(s.shift_px, shift)) <= 1e-2, (shift, s.shift_px)
            assert len(s.depth_nrmse) == 1 and s.depth_nrmse[0] <= 1e-3


def test_phase_handling_neither_adds_nor_hides_error(truths):
    """The thick one-slice object with noise scores exactly as its noisy potential
    (given as a potential, nothing wrapped): taking the nearest representative of a
    pixel never moves one that was not a whole turn off."""
    truth, geometry = one_slice(truths["SrTiO3_001_thick"]), geometry_for((64, 64))
    potential = registration.tile_periodic(truth.potential_V_A, geometry.shape, np.add(ORIGIN, 0.4))
    noise = np.random.default_rng(3).standard_normal(potential.shape) * potential.std()
    fov = geometry.field_of_view(2)
    previous = 0.0
    for level in (0.02, 0.05, 0.1, 0.3):
        noisy = potential + level * noise
        s = metrics.score_object(np.exp(1j * truth.sigma_per_V_A * noisy), truth, geometry)
        direct = metrics.score_projected_potential(
            noisy[0], truth.projected_V_A, ORIGIN, fov, sampling_A=truth.sampling_A
        )
        assert s.nrmse == pytest.approx(direct.nrmse, rel=1e-6) and s.nrmse > previous
        previous = s.nrmse


def test_slices_holding_more_than_pi_are_unwrapped_without_the_truth(truths):
    """Each half of the thick specimen (3 slices of 6.5 Å) spans more than π but changes
    by less than π between neighbours: :func:`potential_on_fov` recovers its potential
    up to a constant from the complex object alone, whatever its global phase."""
    six = truths["SrTiO3_001_thick"].potential_V_A
    halves = np.stack([six[:3].sum(axis=0), six[3:].sum(axis=0)]).astype(np.float64)
    sigma = truths["SrTiO3_001_thick"].sigma_per_V_A
    assert np.ptp(sigma * halves, axis=(1, 2)).min() > np.pi
    geometry = geometry_for((64, 64))
    fov = geometry.field_of_view(2)
    potential = registration.tile_periodic(halves, geometry.shape, ORIGIN)
    crop = np.exp(1j * sigma * potential[:, fov[0], fov[1]])
    centred = np.angle(crop * np.exp(-1j * np.angle(crop.mean(axis=(1, 2), keepdims=True))))
    assert (np.abs(np.diff(centred, axis=-1)) > np.pi).any(axis=(1, 2)).all()  # both wrap
    recovered = metrics.potential_on_fov(
        np.exp(1j * (sigma * potential + np.array([2.9, -1.7])[:, None, None])), sigma, fov
    )
    difference = recovered - potential[:, fov[0], fov[1]]
    assert np.ptp(difference, axis=(1, 2)).max() < 1e-6 * np.ptp(halves)


def test_multislice_with_a_global_phase_per_slice(truths):
    """Six slices, each with its own global phase: the projection and every slice of
    the depth profile score as the truth."""
    truth, geometry = truths["SrTiO3_001_thick"], geometry_for((64, 64))
    phases = np.random.default_rng(4).uniform(-np.pi, np.pi, len(truth.potential_V_A))
    s = metrics.score_object(copy_of(truth, geometry, (0.7, -0.4), phases), truth, geometry)
    assert s.nrmse <= 1e-3 and s.ssim >= 0.999
    assert len(s.depth_nrmse) == 6 and max(s.depth_nrmse) <= 1e-3


def blurred_cell(cell: np.ndarray, sampling_A: float, blur_A: float) -> np.ndarray:
    """A periodic cell (n, n) convolved with a Gaussian of rms ``blur_A`` [Å]."""
    k = np.fft.fftfreq(cell.shape[0], sampling_A)
    envelope = np.exp(-2 * np.pi**2 * blur_A**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(cell) * envelope))


def test_frc_area_and_halfbit_resolution_rank_blur_and_noise(truths):
    """At the `fine` sampling (Nyquist 5.5 1/Å), the FRC scores rank a clean, a blurred
    and a noisy reconstruction. A pure low-pass blur is invisible to a correlation (it
    scales each ring, and a normalised correlation ignores scale), so every image gets
    the same small noise floor (2 % of the truth's rms): "clean" is truth + floor,
    "blurred" is a Gaussian blur of the truth + floor (its high rings sink into the
    floor), "noisy" is truth + more of the same noise. Both scores worsen with either
    strictly (area) or never improve and end worse (half-bit resolution)."""
    truth = truths["SrTiO3_001_fine"]
    cell, dx = truth.projected_V_A.astype(np.float64), truth.sampling_A
    shape, fov = (138, 138), (slice(5, 133), slice(5, 133))
    clean = registration.tile_periodic(cell, shape, ORIGIN)
    floor = 0.02 * clean.std() * np.random.default_rng(5).standard_normal(shape)

    def score(image):
        return metrics.score_projected_potential(image, cell, ORIGIN, fov, sampling_A=dx)

    blurred = [
        score(registration.tile_periodic(blurred_cell(cell, dx, b), shape, ORIGIN) + floor)
        for b in (0.0, 0.1, 0.15, 0.2)
    ]
    noisy = [score(clean + level * floor) for level in (1, 10, 20, 30, 40)]
    for series in (blurred, noisy):
        areas = [s.frc_area for s in series]
        resolutions = [s.frc_halfbit_resolution_A for s in series]
        assert all(b < a for a, b in zip(areas, areas[1:], strict=False)), areas
        assert all(b >= a for a, b in zip(resolutions, resolutions[1:], strict=False))
        assert resolutions[-1] > 1.2 * resolutions[0] and np.isfinite(resolutions[-1])
    nyquist_bound = 1 / blurred[0].frc_frequency_per_A[-1]
    assert blurred[0].frc_halfbit_resolution_A == pytest.approx(nyquist_bound)
    assert blurred[0].frc_area > 0.99


def test_halfbit_curve_is_van_heel_and_schatz():
    """T(n) = (0.2071 + 1.9102/√n)/(1.2071 + 0.9102/√n), values worked by hand."""
    n = np.array([1, 4, 100, 10_000])
    expected = [
        (0.2071 + 1.9102) / (1.2071 + 0.9102),  # 1: a single pixel always correlates
        (0.2071 + 0.9551) / (1.2071 + 0.4551),
        (0.2071 + 0.19102) / (1.2071 + 0.09102),
        (0.2071 + 0.019102) / (1.2071 + 0.009102),
    ]
    np.testing.assert_allclose(frc.halfbit_threshold(n), expected, rtol=1e-12)
    assert frc.halfbit_threshold(np.array([1]))[0] == pytest.approx(1.0)


def test_score_carries_the_halfbit_curve_of_its_rings(truths):
    truth, geometry = truths["SrTiO3_001_quickstart"], geometry_for((37, 37))
    s = metrics.score_object(copy_of(truth, geometry, (0.2, 0.3)), truth, geometry)
    _, _, pixels = frc.frc_rings(
        (37, 37), truth.sampling_A, frc.reciprocal_spacing_per_A(truth.projected_V_A, 1.0)
    )
    assert len(s.frc_halfbit) == len(s.frc) == len(pixels)
    # rings as wide as the lattice spacing 1/(3.9 Å), but at least 2 Fourier pixels
    width = max(1 / 3.905, 2 / (37 * truth.sampling_A))
    assert s.frc_frequency_per_A[1] == pytest.approx(width, rel=0.01)
    np.testing.assert_allclose(s.frc_halfbit, frc.halfbit_threshold(pixels))
    assert min(s.frc) > 0.999 and s.frc_area == pytest.approx(1.0, abs=1e-3)


def test_frc_area_weights_each_ring_by_its_band():
    """Rings at 0, 1, 2, 3 (1/Å) with Nyquist 3.2: bands [0, .5], [.5, 1.5], [1.5, 2.5],
    [2.5, 3.2]; an empty (NaN) ring counts 0."""
    frequency = np.arange(4.0)
    assert frc.frc_area(frequency, np.ones(4), 1 / 6.4) == pytest.approx(1.0)
    area = frc.frc_area(frequency, np.array([1.0, 1.0, np.nan, 0.0]), 1 / 6.4)
    assert area == pytest.approx(1.5 / 3.2)


def test_resolution_is_not_decided_by_the_zero_frequency_ring():
    """Ring 0 below the threshold (noise at |k| < Δk/2, where a crystal has no lattice
    signal) does not make the resolution infinite; ring 1 below does."""
    frequency = np.arange(5.0)
    assert frc.frc_resolution_A(frequency, np.array([0.2, 0.9, 0.7, 0.3, 0.1])) == (
        pytest.approx(1 / 2.5)
    )
    assert frc.frc_resolution_A(frequency, np.array([0.9, 0.2, 0.9, 0.9, 0.9])) == np.inf
