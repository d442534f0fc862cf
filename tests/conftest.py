"""Shared fixtures: tiny simulated datasets (seconds to make) and float64 JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyopt import model, physics
from ptyopt.data.recipe import recipe_from_mapping
from ptyopt.data.simulate import simulate_dataset
from ptyopt.initial import object_geometry
from ptyopt.registration import tile_periodic


@pytest.fixture
def x64():
    """Run a test with JAX in float64 (complex128)."""
    with jax.enable_x64(True):
        yield


# Hydra overrides that shrink the quickstart study for tests: 8×8 positions, 48 px
# patterns, 1 phonon configuration, 10 iterations, a score every 2.
TINY_STUDY = [
    "dataset.structure.thickness_A=7.8",
    "dataset.scan.shape=[8,8]",
    "dataset.detector.pixels=48",
    "dataset.simulation.phonon_configs=1",
    "dataset.simulation.ground_truth_configs=2",
    "plan.engines.0.iterations=10",
    "plan.engines.0.group_size=16",
    "study.score_every=2",
]
# ... with a pruner that may prune from the second trial on.
EAGER_PRUNING = ["pruner.n_startup_trials=1", "pruner.n_warmup_steps=0"]


def tiny_recipe(**overrides):
    """A 3×3-position Si [110] recipe, 32 px detector, 2 reconstruction slices,
    static, noise-free expected counts at 1e6 e/Å² unless overridden (top-level keys are
    replaced whole)."""
    values = {
        "name": "tiny",
        "structure": {"name": "Si_110", "lateral_repeats": [2, 3], "thickness_A": 7.7},
        "optics": {"energy_kV": 200, "semiangle_mrad": 20, "defocus_A": 20},
        "scan": {"shape": [3, 3], "step_A": 0.77, "jitter_A": 0.1, "seed": 3},
        "detector": {"pixels": 32, "bin": 1},
        "simulation": {"oversampling": 2, "phonon_configs": 1, "ground_truth_configs": 1},
        "reconstruction_slices": 2,
        "dose_e_per_A2": 1.0e6,
        "poisson_noise": False,
    }
    values.update(overrides)
    return recipe_from_mapping(values)


@pytest.fixture(scope="session")
def tiny_dataset():
    """Static, noise-free tiny dataset simulated with abTEM (about a second)."""
    return simulate_dataset(tiny_recipe(), progress=False)


def small_recipe(**overrides):
    """SrTiO3 [001], 2 cells thick, 8×8 scan, 48 px detector, 1 slice, Poisson at
    1e6 e/Å², 1 phonon configuration and a 4-configuration thermal ground truth."""
    values = {
        "structure": {"name": "SrTiO3_001", "lateral_repeats": [3, 3], "thickness_A": 7.8},
        "optics": {"energy_kV": 300, "semiangle_mrad": 25, "defocus_A": 40},
        "scan": {"shape": [8, 8], "step_A": 0.5},
        "detector": {"pixels": 48, "bin": 1},
        "simulation": {"oversampling": 2, "phonon_configs": 1, "ground_truth_configs": 4},
        "reconstruction_slices": 1,
        "dose_e_per_A2": 1.0e6,
        "poisson_noise": True,
    }
    values.update(overrides)
    return tiny_recipe(**values)


@pytest.fixture(scope="session")
def small_dataset():
    """The :func:`small_recipe` dataset (about a second to simulate)."""
    return simulate_dataset(small_recipe(), progress=False)


def thick_recipe():
    """SrTiO3 [001], 4 cells (15.6 Å) in 4 reconstruction slices, noise-free."""
    return small_recipe(
        structure={"name": "SrTiO3_001", "lateral_repeats": [3, 3], "thickness_A": 15.6},
        reconstruction_slices=4,
        poisson_noise=False,
    )


@pytest.fixture(scope="session")
def thick_dataset():
    """The :func:`thick_recipe` dataset."""
    return simulate_dataset(thick_recipe(), progress=False)


def model_patterns_from_ground_truth(
    dataset,
    shift_px=(0, 0),
    detector_offset_px=(0.0, 0.0),
    bandlimit=physics.DEFAULT_BANDLIMIT,
    electrons=None,
) -> np.ndarray:
    """Our forward model on exp(iσV) of the dataset's ground truth, centred (n, N, N),
    propagators band-limited to ``bandlimit`` of Nyquist, scaled to ``electrons`` per
    pattern (``None``: dose·step² of the dataset's simulation recipe)."""
    geometry = object_geometry(dataset)
    gt = dataset.ground_truth
    potential = tile_periodic(
        gt.potential_V_A.astype(np.float64), geometry.shape, tuple(geometry.origin_px)
    )
    n = dataset.detector_shape[0]
    optics = dataset.optics
    probe = physics.probe_wave(
        (n, n),
        dataset.pixel_size_A,
        optics.energy_eV,
        optics.semiangle_mrad,
        optics.aberrations,
        dtype=jnp.complex128,
    )
    props = model.slice_propagators(
        (n, n),
        dataset.pixel_size_A,
        optics.energy_eV,
        [gt.slice_thickness_A] * len(gt.potential_V_A),
        bandlimit,
        dtype=jnp.complex128,
    )
    positions = jnp.asarray(geometry.positions_px + np.asarray(shift_px))
    ramp = model.detector_offset_ramp((n, n), detector_offset_px, jnp.complex128)
    intensity = model.far_field_intensities(
        jnp.asarray(np.exp(1j * gt.sigma_per_V_A * potential)), probe[None], positions, props, ramp
    )
    if electrons is None:
        electrons = dataset.dose_e_per_A2 * dataset.simulation["recipe"]["scan"]["step_A"] ** 2
    return electrons * np.fft.fftshift(np.asarray(intensity), axes=(-2, -1))


def raster_recipe(**overrides):
    """:func:`tiny_recipe` on a 3×4 raster (0.77 Å steps, no jitter): what a detector
    file can describe by its scan axes."""
    return tiny_recipe(scan={"shape": [3, 4], "step_A": 0.77, "jitter_A": 0.0}, **overrides)


@pytest.fixture(scope="session")
def raster_dataset():
    """The :func:`raster_recipe` dataset (Si [110], 32 px, noise-free, about a second)."""
    return simulate_dataset(raster_recipe(), progress=False)


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖: how far a peer's array is from ours (the convention tests)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """|⟨a, b⟩| / (‖a‖‖b‖): 1 for waves equal up to a global phase and scale."""
    return float(abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def nominal_probe(dataset, aberrations) -> np.ndarray:
    """ptyopt's probe (N, N) for ``dataset``'s detector window and optics, with
    ``aberrations`` (abTEM's names and signs)."""
    n = dataset.detector_shape[0]
    return np.asarray(
        physics.probe_wave(
            (n, n),
            dataset.pixel_size_A,
            dataset.optics.energy_eV,
            dataset.optics.semiangle_mrad,
            aberrations,
        )
    )
