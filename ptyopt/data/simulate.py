"""Simulate a 4D-STEM ptychography dataset with abTEM, with its ground truth.

The lateral cell L is simulated on ``pixels·bin·oversampling`` grid points; the
diffraction patterns (mean over frozen-phonon configurations) are cropped to the
central ``pixels·bin`` pixels and binned by ``bin``, so the detector pitch is
bin·λ/L and the reconstruction pixel dx = L/(pixels·bin). The ground truth is the
mean potential over ``ground_truth_configs`` configurations, summed into the
reconstruction slices and Fourier-resampled onto the dx grid (periodic cell).

Partial coherence (``optics.focal_spread_A``, ``optics.source_size_A``): each
pattern is the weighted incoherent sum of coherent patterns over the quadrature of
:func:`~ptyopt.data.recipe.coherence_quadrature`: one probe per defocus node, and each
position expanded into its displaced source positions (position-major) before it is
batched; the coherent case is one node of weight 1, the same computation as without.

Nominal metadata (``nominal``): the file records the nominal optics, thickness and
scan positions (:func:`nominal_optics`, :func:`recorded_positions`) where the recipe
makes them differ from the true ones the simulation uses; the simulation record keeps
the whole recipe, truth included (for scoring and provenance, never for reconstructing).

Dopants (``structure.dopants``) are substituted before the frozen-phonon
configurations are drawn, each displaced with its own element's rms; the sites as
substituted go into the simulation record and the ground truth's dopant table.

Cost: dominated by abTEM's multislice, ~positions × samples_per_position ×
phonon_configs × slices FFT pairs of the simulation grid; the progress bar counts
abTEM calls (batches of ``max_batch`` displaced positions, per defocus and configuration).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import abtem
import numpy as np
from tqdm.auto import tqdm

from ptyopt import physics
from ptyopt.data.dataset import DopantTable, GroundTruth, PtychoDataset
from ptyopt.data.recipe import (
    CoherenceQuadrature,
    DatasetRecipe,
    Sampling,
    coherence_quadrature,
    derive_sampling,
    nominal_optics,
    recipe_to_dict,
    specimen_of,
    true_or,
)
from ptyopt.data.structures import RMS_DISPLACEMENT_A, Specimen
from ptyopt.fourier import fourier_resample
from ptyopt.scan import calibrate_scan


def scan_positions_A(recipe: DatasetRecipe, cell_edge_A: float) -> np.ndarray:
    """(n, 2) probe positions (y, x) [Å]: a raster centred on the cell, row-major, plus
    seeded Gaussian jitter of rms ``scan.jitter_A`` per axis."""
    ny, nx = recipe.scan.shape
    step = recipe.scan.step_A
    ys = (np.arange(ny) - (ny - 1) / 2) * step + cell_edge_A / 2
    xs = (np.arange(nx) - (nx - 1) / 2) * step + cell_edge_A / 2
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    jitter = np.random.default_rng(recipe.scan.seed).normal(0.0, recipe.scan.jitter_A, grid.shape)
    return grid + jitter


def displaced_configurations(specimen: Specimen, n_configs: int, seed: int) -> list:
    """Frozen-phonon configurations: Gaussian displacements with each element's
    room-temperature rms (per Cartesian axis), seeded; configuration 0 of a single
    configuration is the static structure."""
    if n_configs == 1:
        return [specimen.atoms.copy()]
    rng = np.random.default_rng(seed)
    rms = np.array([RMS_DISPLACEMENT_A[s] for s in specimen.atoms.get_chemical_symbols()])
    configs = []
    for _ in range(n_configs):
        atoms = specimen.atoms.copy()
        atoms.positions += rng.normal(size=atoms.positions.shape) * rms[:, None]
        atoms.wrap()
        configs.append(atoms)
    return configs


def _slice_thicknesses(specimen: Specimen, recipe: DatasetRecipe) -> tuple[list[float], int]:
    """Simulation slice thicknesses [Å] that tile each reconstruction slice evenly,
    and the number of simulation slices per reconstruction slice."""
    per_recon = specimen.thickness_A / recipe.reconstruction_slices
    sub = max(1, int(np.ceil(per_recon / recipe.simulation.slice_thickness_A - 1e-9)))
    return [per_recon / sub] * (sub * recipe.reconstruction_slices), sub


def bin_detector(intensity_xy: np.ndarray, pixels: int, bin_factor: int) -> np.ndarray:
    """|F|² on the simulation grid (n, gx, gy), unshifted and (x, y)-ordered → detector
    patterns (n, pixels, pixels) (y, x), zero frequency at the centre."""
    shifted = np.fft.fftshift(intensity_xy.transpose(0, 2, 1), axes=(-2, -1))
    g = shifted.shape[-1]
    half = pixels * bin_factor // 2
    crop = shifted[:, g // 2 - half : g // 2 + half, g // 2 - half : g // 2 + half]
    n = crop.shape[0]
    return crop.reshape(n, pixels, bin_factor, pixels, bin_factor).sum(axis=(2, 4))


def simulate_dataset(recipe: DatasetRecipe, progress: bool = True) -> PtychoDataset:
    """Run the abTEM simulation described by ``recipe`` (validated) and return the
    dataset with its ground truth and every simulation parameter."""
    started = time.perf_counter()
    # FFTW plans chosen by heuristics, not by timing them (FFTW_MEASURE): timed plans
    # pick codelets that round differently from process to process (2 of 16 differed),
    # and were no faster (thick10: 11.2-11.6 s against 12.1-12.4 s to simulate)
    abtem.config.set(
        {
            "device": "cpu",
            "precision": "float32",
            "fftw.threads": 2,
            "fftw.planning_effort": "FFTW_ESTIMATE",
            "diagnostics.progress_bar": False,
        }
    )
    specimen = specimen_of(recipe.structure)
    sampling = derive_sampling(recipe, specimen.cell_edge_A)
    energy = recipe.optics.energy_kV * 1e3
    thicknesses, sub = _slice_thicknesses(specimen, recipe)
    positions = scan_positions_A(recipe, specimen.cell_edge_A)
    quadrature = coherence_quadrature(recipe)
    probes = [
        abtem.Probe(
            energy=energy,
            semiangle_cutoff=recipe.optics.semiangle_mrad,
            defocus=float(defocus),
            Cs=recipe.optics.Cs_A,
        )
        for defocus in quadrature.defocus_A
    ]
    # every position expanded into its displaced source positions (position-major)
    n_source = len(quadrature.source_weights)
    samples = (positions[:, None, :] + quadrature.source_offsets_A[None]).reshape(-1, 2)
    owner = np.repeat(np.arange(len(positions)), n_source)
    sample_weights = np.tile(quadrature.source_weights, len(positions))
    sim = recipe.simulation
    configs = displaced_configurations(specimen, sim.ground_truth_configs, sim.seed)
    starts = range(0, len(samples), sim.max_batch)
    patterns = np.zeros((len(positions), recipe.detector.pixels, recipe.detector.pixels))
    potential_sum = 0.0
    bar = tqdm(
        total=sim.phonon_configs * len(probes) * len(starts),
        desc=f"simulating {recipe.name}",
        unit="batch",
        disable=not progress,
    )
    for index, atoms in enumerate(configs):
        potential = abtem.Potential(
            atoms,
            gpts=sampling.simulation_gpts,
            slice_thickness=tuple(thicknesses),
            projection="infinite",
        ).build(lazy=False)
        potential_sum = potential_sum + np.asarray(potential.array, dtype=np.float64)
        if index >= sim.phonon_configs:
            continue
        for probe, defocus_weight in zip(probes, quadrature.defocus_weights, strict=True):
            probe.grid.match(potential)
            for start in starts:
                batch = slice(start, start + sim.max_batch)
                waves = probe.multislice(
                    potential, scan=abtem.CustomScan(samples[batch, ::-1]), lazy=False
                )
                intensity = np.abs(np.fft.fft2(np.asarray(waves.array, dtype=np.complex64))) ** 2
                binned = bin_detector(intensity, recipe.detector.pixels, recipe.detector.bin)
                np.add.at(
                    patterns,
                    owner[batch],
                    (defocus_weight * sample_weights[batch])[:, None, None] * binned,
                )
                bar.update()
    bar.close()
    patterns /= sim.phonon_configs
    ground_truth = _ground_truth(
        recipe, specimen, sampling, potential_sum / len(configs), sub, thicknesses, energy
    )
    noisy = _apply_dose(recipe, patterns)
    nominal = recipe.nominal
    return PtychoDataset(
        name=recipe.name,
        patterns=noisy.astype(np.float32),
        positions_A=recorded_positions(recipe, positions),
        optics=nominal_optics(recipe),
        angular_sampling_mrad=sampling.angular_sampling_mrad,
        pattern_centre_px=pattern_centre(recipe),
        dose_e_per_A2=float(recipe.dose_e_per_A2),
        ground_truth=ground_truth,
        nominal_thickness_A=float(
            specimen.thickness_A if nominal.thickness_A is None else nominal.thickness_A
        ),
        nominal_slices=int(recipe.reconstruction_slices),
        simulation=_simulation_record(
            recipe, specimen, sampling, thicknesses, quadrature, time.perf_counter() - started
        ),
    )


def recorded_positions(recipe: DatasetRecipe, true_positions_A: np.ndarray) -> np.ndarray:
    """The positions (n, 2) [Å] a recipe's file records: the true ones with the
    ``nominal`` scan calibration undone, c + R(−θ)(p − c)/s about their centroid c, so
    that :func:`ptyopt.scan.calibrate_scan` by (θ, s) gives back the true ones."""
    nominal = recipe.nominal
    rotation = true_or(nominal.scan_rotation_deg, 0.0)
    step_scale = true_or(nominal.scan_step_scale, 1.0)
    if rotation == 0.0 and step_scale == 1.0:
        return true_positions_A
    return calibrate_scan(true_positions_A, -rotation, 1.0 / step_scale)


def pattern_centre(recipe: DatasetRecipe) -> tuple[float, float]:
    """Zero frequency on the detector [px]: after binning by b it lies (b − 1)/(2b)
    pixels before pixel N/2 (a quarter pixel for b = 2)."""
    b, n = recipe.detector.bin, recipe.detector.pixels
    centre = n / 2 - (b - 1) / (2 * b)
    return (centre, centre)


def _ground_truth(
    recipe: DatasetRecipe,
    specimen: Specimen,
    sampling: Sampling,
    mean_potential_xy: np.ndarray,
    sub: int,
    thicknesses: list[float],
    energy: float,
) -> GroundTruth:
    slices = mean_potential_xy.reshape(
        recipe.reconstruction_slices, sub, *mean_potential_xy.shape[-2:]
    ).sum(axis=1)
    cell_pixels = recipe.detector.pixels * recipe.detector.bin
    potential_yx = fourier_resample(slices.transpose(0, 2, 1), (cell_pixels, cell_pixels))
    return GroundTruth(
        potential_V_A=potential_yx.astype(np.float32),
        slice_thickness_A=float(sum(thicknesses[:sub])),
        sampling_A=sampling.pixel_size_A,
        sigma_per_V_A=physics.interaction_constant(energy),
        kind="static" if recipe.simulation.ground_truth_configs == 1 else "thermal_mean",
        n_configurations=recipe.simulation.ground_truth_configs,
        dopants=(
            DopantTable(specimen.dopant_sites, specimen.host_period_A)
            if specimen.dopant_sites
            else None
        ),
    )


def _apply_dose(recipe: DatasetRecipe, patterns: np.ndarray) -> np.ndarray:
    """Expected counts dose·step²·I (I sums to ≤ 1 per pattern), Poisson-sampled with
    ``noise_seed`` unless ``poisson_noise`` is off."""
    expected = patterns * recipe.dose_e_per_A2 * recipe.scan.step_A**2
    if not recipe.poisson_noise:
        return expected
    return np.random.default_rng(recipe.noise_seed).poisson(expected).astype(np.float64)


def _simulation_record(
    recipe: DatasetRecipe,
    specimen: Specimen,
    sampling: Sampling,
    thicknesses: list[float],
    quadrature: CoherenceQuadrature,
    seconds: float,
) -> dict[str, Any]:
    return {
        "recipe": recipe_to_dict(recipe),
        "abtem_version": abtem.__version__,
        "cell_edge_A": specimen.cell_edge_A,
        "thickness_A": specimen.thickness_A,
        "lateral_strain": specimen.lateral_strain,
        "n_atoms": len(specimen.atoms),
        "simulation_gpts": sampling.simulation_gpts,
        "simulation_sampling_A": specimen.cell_edge_A / sampling.simulation_gpts,
        "simulation_slices": len(thicknesses),
        "simulation_slice_thickness_A": thicknesses[0],
        "max_angle_mrad": sampling.max_angle_mrad,
        "rms_displacement_A": {
            s: RMS_DISPLACEMENT_A[s] for s in sorted(set(specimen.atoms.get_chemical_symbols()))
        },
        "host_period_A": list(specimen.host_period_A),
        "dopant_sites": [dataclasses.asdict(site) for site in specimen.dopant_sites],
        "potential": {"parametrization": "lobato", "projection": "infinite"},
        "coherence": quadrature.as_dict(),
        "seconds": seconds,
    }
