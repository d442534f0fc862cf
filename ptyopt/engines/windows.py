"""Adding per-position updates into the object at their probe windows."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def scatter_windows(
    values: jnp.ndarray, corners: jnp.ndarray, weights: jnp.ndarray, shape: tuple[int, int]
) -> jnp.ndarray:
    """Σ_j w_j·values[:, j] added at each window: values (S, G, N, N) (S slices or any
    leading axis, G positions), corners (G, 2) int window corners (y, x) on the object
    grid, weights (G,) (0 for padding) → (S, H, W) with (H, W) = ``shape``.

    A loop of dynamic-slice updates, one window at a time: on the CPU several times
    faster than XLA's scatter-add of all windows at once (``.at[...].add``), which
    serialises on its index computations."""
    window = values.shape[-2:]
    leading = values.shape[0]

    def add(j, image):
        corner = (0, corners[j, 0], corners[j, 1])
        patch = jax.lax.dynamic_slice(image, corner, (leading, *window))
        return jax.lax.dynamic_update_slice(image, patch + weights[j] * values[:, j], corner)

    return jax.lax.fori_loop(0, values.shape[1], add, jnp.zeros((leading, *shape), values.dtype))
