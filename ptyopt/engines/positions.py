"""Position correction for the conventional engines (the gradient engine optimises
positions with its own solver): a normalised gradient step of the noise-model loss
with respect to the group's probe positions, inside the compiled group step."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ptyopt import model
from ptyopt.engines.chunks import summed_group_loss


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
    hyper: dict[str, jnp.ndarray],
) -> jnp.ndarray:
    """Positions (P, 2) with the group's entries moved by −step·g/rms(g), each
    component clipped to ±max_step_px and every window kept inside the object; g is
    ∂loss/∂position (G, 2) and the rms is over the group's real entries, so the step is
    the typical move in pixels. ``hyper`` (the engine's array hyperparameters) gives
    ``epsilon`` (the noise model's), ``position_step`` [px], ``max_step_px`` [px] and
    ``positions_on``; skipped (no cost) while ``positions_on`` is 0."""
    epsilon, step_px = hyper["epsilon"], hyper["position_step"]
    max_step_px, active = hyper["max_step_px"], hyper["positions_on"]

    def group_loss(group_positions):
        return summed_group_loss(
            obj,
            probe,
            group_positions,
            weights,
            measured,
            propagators,
            detector_ramp,
            loss,
            epsilon,
        )

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
