"""The forward model against abTEM, the independent truth (DESIGN §6).

abTEM and ptyopt get the same potential slices and optics. Tolerances, float64:
λ and σ to 1e-7 relative (the residual ~5e-9 is the CODATA release behind the
constants); the probe to 1e-6; diffraction patterns to 1e-6 relative L2 (measured
2–3e-8, the same constants' residual amplified by ~10 rad of phase). abTEM band-limits
the exit wave in its last propagation step (its propagator carries the anti-aliasing
aperture); ptyopt's model does not, because its detector spans the whole window, so
the comparison applies the same aperture to ptyopt's exit wave. In float32 the patterns
agree to 1e-3 relative L2.
"""

from __future__ import annotations

import abtem
import jax.numpy as jnp
import numpy as np
import pytest
from ase.spacegroup import crystal

from ptyopt import model, physics

ENERGY = 200e3
GPTS = 64
ABERRATIONS_ABTEM = {
    "defocus": 30.0,
    "Cs": 2.0e4,
    "C12": 5.0,
    "phi12": 0.4,
    "C21": 40.0,
    "phi21": 1.1,
}
ABERRATIONS = {"C10": -30.0, "C30": 2.0e4, "C12": 5.0, "phi12": 0.4, "C21": 40.0, "phi21": 1.1}
# (x, y) positions [Å], with sub-pixel parts (pixel 0.122 Å)
POSITIONS_XY = np.array([[0.0, 0.0], [1.3, 2.77], [3.91, 0.55], [5.123, 6.01], [7.7, 7.7]])


@pytest.fixture(scope="module")
def potential():
    """SrTiO3 [001] 2×2×5 cells (7.81 Å square, 19.5 Å thick) on 64² points; 10 slices."""
    abtem.config.set({"precision": "float64", "device": "cpu"})
    sto = crystal(
        ["Sr", "Ti", "O"],
        basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
        spacegroup=221,
        cellpar=[3.905] * 3 + [90] * 3,
    )
    yield abtem.Potential(
        sto * (2, 2, 5), gpts=GPTS, slice_thickness=3.905 / 2, projection="infinite"
    ).build(lazy=False)
    abtem.config.set({"precision": "float32"})


def abtem_patterns(potential, n_slices: int) -> np.ndarray:
    """abTEM's |F[exit wave]|² at POSITIONS_XY through the first n_slices, (n, y, x)."""
    sub = potential[:n_slices]
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=20.0, **ABERRATIONS_ABTEM)
    probe.grid.match(sub)
    waves = probe.multislice(sub, scan=abtem.CustomScan(POSITIONS_XY), lazy=False)
    return (np.abs(np.fft.fft2(np.asarray(waves.array))) ** 2).transpose(0, 2, 1)


def ptyopt_patterns(potential, n_slices: int, dtype) -> np.ndarray:
    """ptyopt's patterns for the same slices: transmission exp(iσV) band-limited as
    abTEM does, the cell tiled 3×3 so that every window is one period."""
    s = potential.sampling[0]
    cutoff = abtem.config.get("antialias.cutoff")
    real = jnp.finfo(dtype).dtype
    mask = np.asarray(physics.bandlimit_mask((GPTS, GPTS), s, cutoff, dtype=real))
    V = np.asarray(potential.array)[:n_slices].transpose(0, 2, 1)
    transmission = np.fft.ifft2(
        np.fft.fft2(np.exp(1j * physics.interaction_constant(ENERGY) * V)) * mask
    )
    obj = jnp.asarray(np.tile(transmission, (1, 3, 3)), dtype)
    probe = physics.probe_wave((GPTS, GPTS), s, ENERGY, 20.0, ABERRATIONS, dtype=dtype)[None]
    propagators = model.slice_propagators(
        (GPTS, GPTS), s, ENERGY, [3.905 / 2] * n_slices, cutoff, dtype
    )
    positions = jnp.asarray(POSITIONS_XY[:, ::-1] / s + GPTS, real)
    waves = model.group_exit_waves(obj, probe, positions, propagators)
    return np.asarray(jnp.sum(jnp.abs(jnp.fft.fft2(waves, norm="ortho") * mask) ** 2, axis=1))


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("energy", [60e3, 80e3, 200e3, 300e3])
def test_wavelength_and_interaction_constant(energy):
    assert physics.wavelength_A(energy) == pytest.approx(
        abtem.core.energy.energy2wavelength(energy), rel=1e-7
    )
    assert physics.interaction_constant(energy) == pytest.approx(
        abtem.core.energy.energy2sigma(energy), rel=1e-7
    )


def test_probe_matches_abtem(x64, potential):
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=20.0, **ABERRATIONS_ABTEM)
    probe.grid.match(potential)
    reference = np.asarray(probe.build(lazy=False).array).T * GPTS  # abTEM: Σ|ψ|² = 1/N², centred
    ours = np.asarray(
        physics.probe_wave(
            (GPTS, GPTS), potential.sampling[0], ENERGY, 20.0, ABERRATIONS, dtype=jnp.complex128
        )
    )
    assert relative_l2(ours, reference) < 1e-6


def test_defocus_sign_matches_abtem(x64):
    """Pure defocus: χ = −πλΔf k² with abTEM's C10 = −defocus."""
    k = np.fft.fftfreq(GPTS, 0.1)
    chi = np.asarray(
        physics.aberration_phase((GPTS, GPTS), 0.1, ENERGY, {"C10": -100.0}, jnp.float64)
    )
    expected = -np.pi * physics.wavelength_A(ENERGY) * 100.0 * (k[:, None] ** 2 + k[None, :] ** 2)
    np.testing.assert_allclose(chi, expected, atol=1e-9)


@pytest.mark.parametrize("n_slices", [1, 10])
def test_patterns_match_abtem_float64(x64, potential, n_slices):
    reference = abtem_patterns(potential, n_slices)
    ours = ptyopt_patterns(potential, n_slices, jnp.complex128)
    for i in range(len(POSITIONS_XY)):
        assert relative_l2(ours[i], reference[i]) < 1e-6, f"position {POSITIONS_XY[i]} Å"


def test_patterns_match_abtem_float32(potential):
    reference = abtem_patterns(potential, 10)
    ours = ptyopt_patterns(potential, 10, jnp.complex64)
    assert ours.dtype == np.float32
    assert relative_l2(ours, reference) < 1e-3
