"""Noise models: minimum at the data, finite at zero model intensity, χ consistent
with the loss gradient, ε validated per model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyopt.errors import ConfigError
from ptyopt.noise import NOISE_MODELS
from ptyopt.plan import parse_plan

RNG = np.random.default_rng(0)
MEASURED = jnp.asarray(RNG.poisson(5.0, (3, 8, 8)), jnp.float32)
FAR_FIELD = jnp.asarray(
    RNG.normal(size=(3, 2, 8, 8)) + 1j * RNG.normal(size=(3, 2, 8, 8)), jnp.complex64
)


def intensity(far_field):
    return jnp.sum(jnp.abs(far_field) ** 2, axis=1)


@pytest.mark.parametrize("name", sorted(NOISE_MODELS))
def test_loss_is_smallest_at_the_data(name):
    model, eps = NOISE_MODELS[name], jnp.float32(0.5)
    at_data = model.loss(MEASURED, MEASURED, eps)
    for scale in (0.5, 0.9, 1.1, 2.0):
        assert jnp.all(model.loss(MEASURED * scale + 0.1, MEASURED, eps) > at_data)
    assert model.loss(MEASURED, MEASURED, eps).shape == (3,)


@pytest.mark.parametrize("name", sorted(NOISE_MODELS))
def test_finite_at_zero_model_intensity(name):
    """Dark-field pixels of a uniform start are exactly 0 in float32: loss, gradient and
    χ stay finite (amplitude-type models even with ε = 0)."""
    model = NOISE_MODELS[name]
    eps = jnp.float32(0.5 if model.needs_positive_epsilon else 0.0)
    dark = FAR_FIELD.at[:, :, 2:5, 3:6].set(0)

    def loss(far_field):
        return jnp.sum(model.loss(intensity(far_field), MEASURED, eps))

    value, gradient = jax.value_and_grad(loss)(dark)
    chi = model.wavefront_update(dark, intensity(dark), MEASURED, eps)
    assert np.isfinite(float(value))
    assert bool(jnp.all(jnp.isfinite(gradient))) and bool(jnp.all(jnp.isfinite(chi)))


def test_amplitude_update_is_the_modulus_constraint():
    """ε = 0: Ψ + χ has the measured modulus √J (summed over modes) and Ψ's phase
    (where J > 0; where J = 0 the corrected wave is 0)."""
    chi = NOISE_MODELS["amplitude"].wavefront_update(
        FAR_FIELD, intensity(FAR_FIELD), MEASURED, jnp.float32(0)
    )
    corrected = FAR_FIELD + chi
    np.testing.assert_allclose(
        np.asarray(intensity(corrected)), np.asarray(MEASURED), rtol=1e-4, atol=1e-4
    )
    lit = np.broadcast_to(np.asarray(MEASURED)[:, None] > 0, corrected.shape)
    np.testing.assert_allclose(
        np.angle(np.asarray(corrected))[lit], np.angle(np.asarray(FAR_FIELD))[lit], atol=1e-4
    )


@pytest.mark.parametrize("name", sorted(NOISE_MODELS))
def test_update_points_down_the_loss(name):
    """χ is a descent direction: Re⟨χ, −∂L/∂Ψ*⟩ > 0 (JAX's grad is conj(∂L/∂Ψ*)·2)."""
    model, eps = NOISE_MODELS[name], jnp.float32(0.5)
    gradient = jax.grad(lambda f: jnp.sum(model.loss(intensity(f), MEASURED, eps)))(FAR_FIELD)
    chi = model.wavefront_update(FAR_FIELD, intensity(FAR_FIELD), MEASURED, eps)
    assert float(jnp.real(jnp.vdot(-jnp.conj(gradient), chi))) > 0


@pytest.mark.parametrize("name", ["gaussian", "poisson"])
def test_models_that_need_positive_epsilon_reject_zero(name):
    with pytest.raises(ConfigError, match=rf"noise\.epsilon: must be > 0 for the {name} model"):
        parse_plan({"engines": [{"kind": "gradient", "noise": {"model": name, "epsilon": 0.0}}]})
