"""Partially coherent illumination in the simulated datasets: a focal spread (defocus
quadrature) and a finite source (quadrature of displaced probe positions) are
incoherent weighted averages of coherent abTEM simulations; zero spreads are the
coherent computation itself."""

from __future__ import annotations

import abtem
import numpy as np
import pytest
from conftest import tiny_recipe

from ptyopt.data import simulate
from ptyopt.data.recipe import (
    coherence_quadrature,
    derive_sampling,
    gauss_hermite,
    recipe_from_mapping,
)
from ptyopt.data.structures import build_specimen
from ptyopt.errors import ConfigError

THIN = {
    "name": "Si_110",
    "lateral_repeats": [2, 3],
    "thickness_A": 3.84,
}  # one unit cell along the beam


def thin_recipe(samples: int = 3, scan: dict | None = None, **optics):
    """A one-unit-cell Si [110] slab (a thin, weakly scattering specimen), 32 px detector."""
    return tiny_recipe(
        structure=THIN,
        optics={"energy_kV": 200, "semiangle_mrad": 20, "defocus_A": 20, **optics},
        scan=scan or {"shape": [3, 3], "step_A": 0.77, "jitter_A": 0.1, "seed": 3},
        simulation={
            "oversampling": 2,
            "phonon_configs": 1,
            "ground_truth_configs": 1,
            "coherence_samples": samples,
        },
        reconstruction_slices=1,
    )


def position_contrast(patterns: np.ndarray) -> float:
    """RMS over positions and pixels of the patterns' deviation from their mean."""
    return float(np.sqrt(np.mean((patterns - patterns.mean(axis=0)) ** 2)))


def centre_of_mass_px(patterns: np.ndarray) -> np.ndarray:
    """(n, 2) (y, x) centre of mass of each pattern [px]."""
    y, x = np.indices(patterns.shape[1:])
    total = patterns.sum(axis=(1, 2))
    return np.stack(
        [(patterns * y).sum(axis=(1, 2)) / total, (patterns * x).sum(axis=(1, 2)) / total], axis=-1
    )


def coherent_abtem_patterns(recipe) -> np.ndarray:
    """The coherent simulation written out for a static specimen: one abTEM call over
    all positions, |FFT|², cropped and binned, scaled to counts."""
    specimen = build_specimen(
        recipe.structure.name, tuple(recipe.structure.lateral_repeats), recipe.structure.thickness_A
    )
    sampling = derive_sampling(recipe, specimen.cell_edge_A)
    thicknesses, _ = simulate._slice_thicknesses(specimen, recipe)
    potential = abtem.Potential(
        specimen.atoms.copy(),
        gpts=sampling.simulation_gpts,
        slice_thickness=tuple(thicknesses),
        projection="infinite",
    ).build(lazy=False)
    o = recipe.optics
    probe = abtem.Probe(
        energy=o.energy_kV * 1e3, semiangle_cutoff=o.semiangle_mrad, defocus=o.defocus_A, Cs=o.Cs_A
    )
    probe.grid.match(potential)
    positions = simulate.scan_positions_A(recipe, specimen.cell_edge_A)
    waves = probe.multislice(potential, scan=abtem.CustomScan(positions[:, ::-1]), lazy=False)
    intensity = np.abs(np.fft.fft2(np.asarray(waves.array, dtype=np.complex64))) ** 2
    patterns = np.zeros((len(positions), recipe.detector.pixels, recipe.detector.pixels))
    patterns += simulate.bin_detector(intensity, recipe.detector.pixels, recipe.detector.bin)
    return (patterns * recipe.dose_e_per_A2 * recipe.scan.step_A**2).astype(np.float32)


def test_zero_spreads_are_the_coherent_computation():
    """Both spreads 0 (any coherence_samples): one node of weight 1, bit for bit the
    patterns of the recipe without the fields and of the coherent abTEM computation."""
    default = simulate.simulate_dataset(tiny_recipe(), progress=False)
    explicit = tiny_recipe(
        optics={
            "energy_kV": 200,
            "semiangle_mrad": 20,
            "defocus_A": 20,
            "focal_spread_A": 0.0,
            "source_size_A": 0.0,
        },
        simulation={
            "oversampling": 2,
            "phonon_configs": 1,
            "ground_truth_configs": 1,
            "coherence_samples": 7,
        },
    )
    zero = simulate.simulate_dataset(explicit, progress=False)
    np.testing.assert_array_equal(zero.patterns, default.patterns)
    np.testing.assert_array_equal(default.patterns, coherent_abtem_patterns(tiny_recipe()))
    record = zero.simulation["coherence"]
    assert record["defocus_A"] == [20.0] and record["defocus_weights"] == [1.0]
    assert record["source_offsets_A"] == [[0.0, 0.0]] and record["source_weights"] == [1.0]
    assert record["samples_per_position"] == 1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_gauss_hermite_reproduces_gaussian_moments(n):
    """E[1] = 1, E[X] = 0, E[X²] = 1, E[X⁴] = 3, each exact for n nodes once 2n exceeds its
    degree."""
    x, w = gauss_hermite(n)
    for degree, moment in [(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.0), (4, 3.0)]:
        if degree < 2 * n:
            assert np.sum(w * x**degree) == pytest.approx(moment, abs=1e-12)
    assert np.all(w > 0)


def test_quadrature_follows_the_recipe():
    """Defocus nodes Δf + σ_f·x_k; source offsets σ_s·(x_m, x_n), a product rule of n²
    points with covariance σ_s²·I per axis; the focal spread's widest defocus must fit
    the probe window."""
    q = coherence_quadrature(thin_recipe(samples=4, focal_spread_A=30.0, source_size_A=0.5))
    x, w = gauss_hermite(4)
    np.testing.assert_allclose(q.defocus_A, 20.0 + 30.0 * x)
    np.testing.assert_allclose(q.defocus_weights, w)
    assert q.source_offsets_A.shape == (16, 2) and q.samples_per_position == 64
    assert q.source_weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(q.source_weights @ q.source_offsets_A, 0.0, atol=1e-15)
    covariance = (q.source_offsets_A * q.source_weights[:, None]).T @ q.source_offsets_A
    np.testing.assert_allclose(covariance, 0.25 * np.eye(2), atol=1e-12)
    derive_sampling(recipe_from_mapping({}), 11.7)
    with pytest.raises(ConfigError, match="does not hold the probe"):
        derive_sampling(recipe_from_mapping({"optics": {"focal_spread_A": 100.0}}), 11.7)


def test_focal_spread_averages_coherent_defoci():
    """A 40 Å focal spread (3 nodes): the patterns are the weighted average of coherent
    simulations at the recorded defoci; each pattern's total (electrons on the
    detector) is unchanged, and the position-resolved contrast drops, below the
    weighted mean of the coherent contrasts (the variance is convex) and by > 10% from
    the coherent contrast at the nominal defocus (measured 15%)."""
    partial = simulate.simulate_dataset(thin_recipe(focal_spread_A=40.0), progress=False)
    record = partial.simulation["coherence"]
    assert record["samples_per_position"] == 3 and len(record["defocus_A"]) == 3
    coherent = [
        simulate.simulate_dataset(thin_recipe(defocus_A=d), progress=False).patterns.astype(
            np.float64
        )
        for d in record["defocus_A"]
    ]
    weights = np.asarray(record["defocus_weights"])
    reference = np.tensordot(weights, np.stack(coherent), axes=1)
    np.testing.assert_allclose(partial.patterns, reference, rtol=1e-5, atol=1e-5 * reference.max())
    nominal = coherent[1]  # the middle node of an odd rule is the nominal defocus
    assert record["defocus_A"][1] == 20.0
    np.testing.assert_allclose(
        partial.patterns.sum(axis=(1, 2)), nominal.sum(axis=(1, 2)), rtol=1e-3
    )
    contrast = position_contrast(partial.patterns.astype(np.float64))
    assert contrast**2 <= np.sum(
        weights * np.array([position_contrast(p) ** 2 for p in coherent])
    ) * (1 + 1e-6)
    assert contrast < 0.9 * position_contrast(nominal)


def test_source_size_averages_displaced_positions(monkeypatch):
    """A 0.6 Å rms source (3×3 nodes): the patterns are the weighted average of coherent
    simulations at the displaced positions, and the blur lowers the variance across
    positions of the pattern centre of mass (DPC signal) over a full period of the cell
    by > 2× (measured 4.7×)."""
    edge = build_specimen(
        THIN["name"], tuple(THIN["lateral_repeats"]), THIN["thickness_A"]
    ).cell_edge_A
    scan = {
        "shape": [6, 6],
        "step_A": edge / 6,
        "jitter_A": 0.0,
        "seed": 0,
    }  # one period, uniformly
    partial = simulate.simulate_dataset(thin_recipe(scan=scan, source_size_A=0.6), progress=False)
    record = partial.simulation["coherence"]
    assert record["samples_per_position"] == 9 and record["defocus_A"] == [20.0]
    raster = simulate.scan_positions_A
    reference = 0.0
    for offset, weight in zip(record["source_offsets_A"], record["source_weights"], strict=True):
        shift = np.asarray(offset)
        monkeypatch.setattr(
            simulate,
            "scan_positions_A",
            lambda recipe, cell, o=shift: raster(recipe, cell) + o,
        )
        reference = reference + weight * simulate.simulate_dataset(
            thin_recipe(scan=scan), progress=False
        ).patterns.astype(np.float64)
    monkeypatch.setattr(simulate, "scan_positions_A", raster)
    np.testing.assert_allclose(partial.patterns, reference, rtol=1e-5, atol=1e-5 * reference.max())
    coherent = simulate.simulate_dataset(thin_recipe(scan=scan), progress=False).patterns.astype(
        np.float64
    )
    np.testing.assert_allclose(
        partial.patterns.sum(axis=(1, 2)), coherent.sum(axis=(1, 2)), rtol=1e-3
    )
    blurred = centre_of_mass_px(partial.patterns.astype(np.float64)).var(axis=0).sum()
    sharp = centre_of_mass_px(coherent).var(axis=0).sum()
    assert blurred < 0.5 * sharp


@pytest.mark.parametrize(
    "values, key",
    [
        ({"optics": {"focal_spread_A": -1.0}}, "optics.focal_spread_A"),
        ({"optics": {"source_size_A": -0.1}}, "optics.source_size_A"),
        ({"simulation": {"coherence_samples": 0}}, "simulation.coherence_samples"),
    ],
)
def test_negative_spreads_are_rejected_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        recipe_from_mapping(values)
