"""Position correction for the conventional engines (the gradient engine optimises
positions with its own solver): a normalised gradient step of the noise-model loss
with respect to the group's probe positions, inside the compiled group step."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ptyopt import model


def corrected_positions(
    obj: jnp.ndarray,
    probe: jnp.ndarray,
    positions: jnp.ndarray,
    indices: jnp.ndarray,
    weights: jnp.ndarray,
    measured: jnp.ndarray,
    propagators: jnp.ndarray,
    detector_ramp: jnp.ndarray,
    loss: Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray],
    epsilon: jnp.ndarray,
    step_px: jnp.ndarray,
    max_step_px: jnp.ndarray,
    active: jnp.ndarray,
) -> jnp.ndarray:
    """Positions (P, 2) with the group's entries moved by −step·g/rms(g), each
    component clipped to ±max_step_px and every window kept inside the object; g is
    ∂loss/∂position (G, 2) and the rms is over the group's real entries, so ``step_px``
    is the typical move in pixels. Skipped (no cost) while ``active`` is 0."""

    def group_loss(group_positions):
        intensity = model.far_field_intensities(
            obj, probe, group_positions, propagators, detector_ramp
        )
        return jnp.sum(weights * loss(intensity, measured, epsilon))

    def correct():
        gradient = jax.grad(group_loss)(positions[indices])
        rms = jnp.sqrt(
            jnp.sum(weights[:, None] * gradient**2) / (2 * jnp.maximum(jnp.sum(weights), 1.0))
        )
        delta = -step_px * gradient / (rms + jnp.finfo(rms.dtype).tiny)
        moved = positions.at[indices].add(
            jnp.clip(delta, -max_step_px, max_step_px) * weights[:, None]
        )
        return model.keep_windows_inside(moved, probe.shape[-2:], obj.shape[-2:])

    return jax.lax.cond(active > 0, correct, lambda: positions)
