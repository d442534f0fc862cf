"""Analytic cases of the forward model: vacuum, shifts, mode mixing, dtype, gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyopt import model, physics

N = 32
SAMPLING = 0.2
ENERGY = 300e3


def probe(dtype=jnp.complex64, defocus=50.0):
    return physics.probe_wave((N, N), SAMPLING, ENERGY, 25.0, {"C10": -defocus}, dtype=dtype)[None]


def test_vacuum_gives_the_aperture(x64):
    """Through vacuum the pattern is |A(k)|²: the bright-field disc, whatever the
    defocus, slices and position."""
    obj = jnp.ones((3, 2 * N, 2 * N), jnp.complex128)
    props = model.slice_propagators((N, N), SAMPLING, ENERGY, [2.0, 2.0, 2.0], dtype=jnp.complex128)
    positions = jnp.array([[N, N], [N + 3.3, N - 7.6]], jnp.float64)
    intensity = np.asarray(
        model.far_field_intensities(obj, probe(jnp.complex128), positions, props)
    )
    aperture = np.asarray(physics.soft_aperture((N, N), SAMPLING, ENERGY, 25.0, jnp.float64)) ** 2
    expected = aperture / aperture.sum()
    for pattern in intensity:
        np.testing.assert_allclose(pattern, expected, atol=1e-12)


def test_probe_is_normalised_and_centred():
    p = np.asarray(probe(defocus=0.0)[0])
    assert np.sum(np.abs(p) ** 2) == pytest.approx(1.0, rel=1e-5)
    assert np.unravel_index(np.argmax(np.abs(p)), p.shape) == (N // 2, N // 2)


def test_probe_shift_of_a_whole_pixel_equals_a_window_move(x64):
    """Moving the window by +1 px in x equals shifting the probe by +1 px with the
    Fourier ramp, up to a roll: E_ramp(r + 1) = E_window(r) away from the wrapped column."""
    rng = np.random.default_rng(0)
    obj = jnp.asarray(np.exp(1j * rng.uniform(0, 0.5, (1, 2 * N, 2 * N))))
    props = model.slice_propagators((N, N), SAMPLING, ENERGY, [1.0], dtype=jnp.complex128)
    p = probe(jnp.complex128)
    corners, _ = model.split_positions(jnp.array([[N + 0.0, N + 0.0]]), (N, N))
    moved_window = model.exit_waves(
        model.object_patches(obj, corners + jnp.array([[0, 1]]), (N, N)), p[None], props
    )
    shifted_probe = model.exit_waves(
        model.object_patches(obj, corners, (N, N)),
        model.shifted_probes(p, jnp.array([[0.0, 1.0]])),
        props,
    )
    np.testing.assert_allclose(
        np.asarray(shifted_probe)[..., 1:], np.asarray(moved_window)[..., :-1], atol=1e-12
    )


def test_unshifted_sum_is_the_weighted_adjoint_of_the_probe_shift(x64):
    """⟨shift(P, s_j), W_j⟩ summed with weights w_j equals ⟨P, Σ_j w_j·unshift(W_j, s_j)⟩
    for random modes, waves and sub-pixel shifts on an odd-sized window; a whole-pixel
    shift is undone exactly as a roll."""
    rng = np.random.default_rng(3)
    shape = (3, 2, 17, 17)  # G, M, N, N
    modes = jnp.asarray(rng.normal(size=shape[1:]) + 1j * rng.normal(size=shape[1:]))
    waves = jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))
    shifts = jnp.asarray(rng.uniform(-0.5, 0.5, (3, 2)))
    weights = jnp.array([1.0, 0.5, 0.0])
    shifted = model.shifted_probes(modes, shifts)
    left = jnp.sum(weights[:, None, None, None] * jnp.conj(shifted) * waves)
    right = jnp.sum(jnp.conj(modes) * model.unshifted_sum(waves, shifts, weights))
    np.testing.assert_allclose(complex(left), complex(right), rtol=1e-12)
    rolled = model.unshifted_sum(waves[:1], jnp.array([[0.0, 2.0]]), jnp.ones(1))
    np.testing.assert_allclose(
        np.asarray(rolled), np.roll(np.asarray(waves[0]), -2, axis=-1), atol=1e-12
    )


def test_probe_modes_add_incoherently():
    rng = np.random.default_rng(1)
    obj = jnp.asarray(np.exp(1j * rng.uniform(0, 1, (2, 2 * N, 2 * N))), jnp.complex64)
    props = model.slice_propagators((N, N), SAMPLING, ENERGY, [2.0, 2.0])
    modes = jnp.concatenate([probe(defocus=20.0), 0.5 * probe(defocus=-40.0)])
    positions = jnp.array([[N + 0.25, N - 0.4]])
    both = model.far_field_intensities(obj, modes, positions, props)
    each = sum(
        model.far_field_intensities(obj, modes[i : i + 1], positions, props) for i in range(2)
    )
    np.testing.assert_allclose(np.asarray(both), np.asarray(each), rtol=1e-5, atol=1e-9)


def test_float32_by_default_float64_selectable(x64):
    obj = jnp.ones((1, 2 * N, 2 * N), jnp.complex64)
    props = model.slice_propagators((N, N), SAMPLING, ENERGY, [1.0])
    far_field_intensities = jax.jit(model.far_field_intensities)
    out32 = far_field_intensities(obj, probe(), jnp.array([[N, N]], jnp.float32), props)
    assert out32.dtype == jnp.float32
    props64 = model.slice_propagators((N, N), SAMPLING, ENERGY, [1.0], dtype=jnp.complex128)
    out64 = far_field_intensities(
        obj.astype(jnp.complex128), probe(jnp.complex128), jnp.array([[N, N]], jnp.float64), props64
    )
    assert out64.dtype == jnp.float64


def test_gradient_matches_finite_differences(x64):
    """d/dε of an amplitude loss along a random complex direction of the object."""
    rng = np.random.default_rng(2)
    obj = jnp.asarray(np.exp(1j * rng.uniform(0, 1, (2, 2 * N, 2 * N))))
    props = model.slice_propagators((N, N), SAMPLING, ENERGY, [2.0, 2.0], dtype=jnp.complex128)
    p = probe(jnp.complex128)
    positions = jnp.array([[N + 0.3, N + 0.7], [N - 2.2, N + 4.1]])
    target = model.far_field_intensities(
        jnp.asarray(np.exp(1j * rng.uniform(0, 1, obj.shape))), p, positions, props
    )

    def loss(o):
        return jnp.sum(
            (
                jnp.sqrt(model.far_field_intensities(o, p, positions, props) + 1e-9)
                - jnp.sqrt(target + 1e-9)
            )
            ** 2
        )

    direction = jnp.asarray(rng.normal(size=obj.shape) + 1j * rng.normal(size=obj.shape))
    grad = jax.grad(loss)(obj)
    analytic = float(
        jnp.real(jnp.vdot(jnp.conj(grad), direction))
    )  # descent direction is conj(grad)
    h = 1e-6
    numeric = float((loss(obj + h * direction) - loss(obj - h * direction)) / (2 * h))
    assert analytic == pytest.approx(numeric, rel=1e-6)
