"""Detector noise models (DESIGN §7): a loss for the gradient engine and a
detector-plane wavefront update χ for the conventional engines.

Intensities are in counts. With model intensity I and measured J per detector pixel:

- ``gaussian``: L = Σ (I − J)² / (2ε). ε > 0 is the noise variance [counts²]; it only
  scales the loss (Adam is invariant to it, for SGD it scales the step).
  χ = Ψ·(J − I) / (2(max I + ε)) with max I over the group: a uniform step that
  cannot overshoot at the brightest pixel.
- ``poisson``: L = Σ [I − J − (J + ε)·log((I + ε)/(J + ε))], the Poisson likelihood of
  a mean I + ε (zero and minimal at I = J). ε > 0 [counts] is the smallest signal the
  detector recognises: where I ≪ ε the loss turns quadratic and the large-angle weak
  signal is down-weighted. χ = ½Ψ·((J + ε)/(I + ε) − 1), the
  Poisson gradient step that matches the modulus constraint to first order.
- ``amplitude``: L = Σ (√(I + ε) − √(J + ε))², variance-stabilised Poisson. ε [counts]
  damps the relative weight of dark pixels. χ = Ψ·(√(J + ε)/√(I + ε) − 1), the
  modulus constraint (ePIE's for ε = 0).
- ``anscombe``: as amplitude with the offset 3/8 + ε.

Losses are summed over the pixels of each pattern, one value per position. Every square
root and quotient is guarded so that losses, gradients and χ stay finite where I = 0
exactly (as in dark-field pixels of a uniform starting object); for the amplitude
and Anscombe models even with ε = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp

Array = jnp.ndarray


def _floor(x: Array) -> Array:
    """x kept ≥ the smallest normal number, so √x and 1/x stay finite; the gradient
    through the floor is 0 where it is active."""
    return jnp.maximum(x, jnp.finfo(x.dtype).tiny)


def _per_position(per_pixel: Array) -> Array:
    return jnp.sum(per_pixel, axis=(-2, -1))


def _stabilised_loss(offset: float) -> Callable[[Array, Array, Array], Array]:
    def loss(intensity: Array, measured: Array, epsilon: Array) -> Array:
        c = offset + epsilon
        return _per_position(
            (jnp.sqrt(_floor(intensity + c)) - jnp.sqrt(_floor(measured + c))) ** 2
        )

    return loss


def _stabilised_update(offset: float) -> Callable[[Array, Array, Array, Array], Array]:
    def update(far_field: Array, intensity: Array, measured: Array, epsilon: Array) -> Array:
        c = offset + epsilon
        factor = jnp.sqrt(_floor(measured + c)) / jnp.sqrt(_floor(intensity + c)) - 1
        return far_field * factor[:, None]

    return update


def _gaussian_loss(intensity: Array, measured: Array, epsilon: Array) -> Array:
    return _per_position((intensity - measured) ** 2) / (2 * _floor(epsilon))


def _gaussian_update(far_field: Array, intensity: Array, measured: Array, epsilon: Array) -> Array:
    step = 1 / (2 * (jnp.max(intensity) + epsilon))
    return far_field * ((measured - intensity) * step)[:, None]


def _poisson_loss(intensity: Array, measured: Array, epsilon: Array) -> Array:
    log_ratio = jnp.log(_floor(intensity + epsilon)) - jnp.log(_floor(measured + epsilon))
    return _per_position(intensity - measured - (measured + epsilon) * log_ratio)


def _poisson_update(far_field: Array, intensity: Array, measured: Array, epsilon: Array) -> Array:
    factor = 0.5 * (_floor(measured + epsilon) / _floor(intensity + epsilon) - 1)
    return far_field * factor[:, None]


@dataclass(frozen=True)
class NoiseModel:
    """loss(I, J, ε) → (G,) per-position losses, I and J (G, N, N); wavefront_update(Ψ, I, J, ε) → χ
    (G, M, N, N) for far fields Ψ (G, M, N, N) of M probe modes. ε is an array so
    that it can change between trials and iterations without recompiling.
    ``needs_positive_epsilon``: ε = 0 is meaningless for the model (a zero variance,
    an unbounded logarithm); plans must give ε > 0."""

    name: str
    loss: Callable[[Array, Array, Array], Array]
    wavefront_update: Callable[[Array, Array, Array, Array], Array]
    needs_positive_epsilon: bool


NOISE_MODELS: dict[str, NoiseModel] = {
    "gaussian": NoiseModel("gaussian", _gaussian_loss, _gaussian_update, True),
    "poisson": NoiseModel("poisson", _poisson_loss, _poisson_update, True),
    "amplitude": NoiseModel("amplitude", _stabilised_loss(0.0), _stabilised_update(0.0), False),
    "anscombe": NoiseModel("anscombe", _stabilised_loss(3 / 8), _stabilised_update(3 / 8), False),
}


def noise_model(name: str) -> NoiseModel:
    """The noise model called ``name``; a ValueError lists the choices."""
    if name not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {name!r}; choose one of {sorted(NOISE_MODELS)}")
    return NOISE_MODELS[name]
