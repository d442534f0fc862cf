"""A group's positions split into chunks that run concurrently on a multi-core CPU.

XLA's CPU runtime runs each FFT of a batch on one core (at 64 px a chain of FFTs ran no
faster on 2 cores than pinned to 1, and in 0.6× the time split into two independent
halves) but runs independent operations side by side (its thunk executor starts every
operation whose inputs are ready). The per-position chain of an iteration — the
multislice forward pass, the far field, the wave updates and their back-propagation — is
independent between positions, so :func:`over_chunks` writes it out once per chunk of
positions: separate operations that the cores take up in parallel, joined only where the
engine sums over the group. The gradient engine chunks its data loss (autodiff then
chunks the backward pass too), ePIE its whole per-position update, every engine's
position correction its loss. On ``thick10`` (10 slices, groups of 64, 2 cores) an
iteration in one chunk per core took 0.65–0.83× (gradient, 6 interleaved pairs) and
0.71–0.88× (ePIE, 5 pairs) the time of one chunk (2026-12-03). Two chunks per core
(:data:`CHUNKS_PER_CORE`) took 0.81–0.84× (gradient) and 0.79–0.91× (ePIE) the time of
one per core (3 interleaved runs each), and at 128 px (16×16 positions, 6 slices)
0.63–0.93× and 0.47–0.72× (3 and 2 runs). Four per core was no better: 0.77–1.07× the
time of two per core for the gradient engine at 64 px, 0.96–1.8× in the other cases. On
quickstart's shape (1 slice, groups of 32) two per core and one per core were alike
(0.89–1.14×, 3 runs each engine).

LSQML chunks its forward pass, the back-propagation of its exit-wave updates, each
slice's window sums (each chunk adds its windows in its own loop, and the chunks' images
are summed), its step-fit terms and its probe direction; only what needs the whole group
is computed once: the normalised directions, the 2×2 fits from the positions' terms (G,)
and the group means. On ``thick10`` an iteration took 0.80–0.83× the time of one chunk
with one probe mode and 0.79–0.93× with two (3 interleaved runs each, 2026-12-08), and
compiles in about 10 s instead of 4. Unchunked, a trace showed its forward pass and probe
terms as one chain of FFTs, on one core at a time. Two earlier tries (2026-12-03) did
not pay: joining the chunks' waves for every slice's sums (1.1–1.2× slower), and keeping
the chunks' waves apart with only their window sums and fit terms summed (median 1.05×,
4 pairs); the present split also chunks the probe direction and its fit terms.
The results are the same up to the order of floating-point sums.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ptyopt import model

MIN_CHUNK = 4
"""The fewest positions a chunk is given (smaller ones cost more in overhead than the
parallelism gains)."""

CHUNKS_PER_CORE = 2
"""Chunks per usable core: with more independent chains than cores, a core whose chain
waits (on a join, a window scatter) takes up another chain's next operation."""


def chunk_count(positions: int) -> int:
    """Chunks for a group of ``positions``: :data:`CHUNKS_PER_CORE` per CPU core this
    process may use, each of at least :data:`MIN_CHUNK` positions; 1 on an accelerator,
    whose FFTs are parallel already, and for a group too small to split."""
    if jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0))
    return max(1, min(CHUNKS_PER_CORE * cores, positions // MIN_CHUNK))


def over_chunks(
    function: Callable[..., tuple],
    per_position: Sequence[jnp.ndarray],
    out_axes: Sequence[int | None],
) -> tuple:
    """``function(*per_position)`` computed chunk by chunk of the positions.

    per_position: arrays whose leading axis is the group's positions (G, …), split into
    :func:`chunk_count` (G) contiguous chunks; ``function`` takes one chunk of each and
    returns a tuple; out_axes: for each output, the axis its chunks are concatenated
    along, or ``None`` for an output summed over the chunks (a sum over positions)."""
    positions = per_position[0].shape[0]
    chunks = chunk_count(positions)
    if chunks == 1:
        return tuple(function(*per_position))
    bounds = [round(i * positions / chunks) for i in range(chunks + 1)]
    results = [
        function(*(x[start:stop] for x in per_position))
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return tuple(
        sum(parts[1:], parts[0]) if axis is None else jnp.concatenate(parts, axis=axis)
        for axis, parts in zip(out_axes, zip(*results, strict=True), strict=True)
    )


def summed_group_loss(
    obj: jnp.ndarray,
    probe: jnp.ndarray,
    group_positions: jnp.ndarray,
    weights: jnp.ndarray,
    measured: jnp.ndarray,
    propagators: jnp.ndarray,
    detector_ramp: jnp.ndarray,
    loss: Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray],
    epsilon: jnp.ndarray,
) -> jnp.ndarray:
    """Σ_j w_j·loss_j [counts] of a group's positions (G, 2) with weights (G,) and
    measured patterns (G, N, N), the model's far fields computed chunk by chunk;
    ``loss(intensity, measured, epsilon)`` is the noise model's per-position loss."""

    def chunk_loss(chunk_positions, chunk_weights, chunk_measured):
        intensity = model.far_field_intensities(
            obj, probe, chunk_positions, propagators, detector_ramp
        )
        return (jnp.sum(chunk_weights * loss(intensity, chunk_measured, epsilon)),)

    return over_chunks(chunk_loss, (group_positions, weights, measured), (None,))[0]
