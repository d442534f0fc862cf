"""Multislice forward model for a group of scan positions with a mixed-state probe.

Shapes: object ``(n_slices, H, W)`` complex transmission; probe ``(n_modes, N, N)``
complex, real space, centred on pixel (N//2, N//2); positions ``(G, 2)`` probe centres
(y, x) in object pixels. Far-field intensities come back ``(G, N, N)``, unshifted
(zero frequency at index 0), with the orthonormal FFT so that Σ_k I = Σ_r |ψ|².

Sub-pixel positions shift the probe with a Fourier phase ramp; the object is cut at
integer pixels (DESIGN §6). The group step is vectorised, not looped. Slices are stepped
with ``lax.scan`` unrolled (:data:`UNROLL_SLICES`), here and in the engines' backward
passes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ptyopt import physics
from ptyopt.precision import SINGLE

UNROLL_SLICES = True
"""``unroll`` of every loop over slices. Unrolled, XLA keeps each slice's waves where
the next step reads them instead of writing them into a zero-filled stacked buffer and
slicing them out again: on ``thick10`` (10 slices, groups of 64, 2 CPU cores) ePIE's
iteration takes 0.84×, LSQML's 0.73× the time of the rolled loop (CPU time 0.78×,
0.71×), for 1–3 s more compile time per engine at 10–30 slices (measured interleaved,
2026-12-02). Compile time then grows with the number of slices (at 30: about 5 s)."""


def split_positions(
    positions_px: jnp.ndarray, window: tuple[int, int]
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Split probe centres (G, 2) [px] into integer window corners (G, 2) int32 and
    the sub-pixel remainders (G, 2) in [−0.5, 0.5] that the probe is shifted by."""
    nearest = jnp.round(positions_px)
    centre = jnp.array([window[0] // 2, window[1] // 2], dtype=jnp.int32)
    return nearest.astype(jnp.int32) - centre, positions_px - nearest


def keep_windows_inside(
    positions_px: jnp.ndarray, window: tuple[int, int], object_shape: tuple[int, int]
) -> jnp.ndarray:
    """Probe centres (P, 2) clipped so that every window lies inside the object (as
    :func:`split_positions` cuts it); position correction uses it so that a drifting
    position never makes ``lax.dynamic_slice`` clamp silently."""
    low = jnp.array([window[0] // 2, window[1] // 2], positions_px.dtype)
    high = (
        jnp.array(
            [
                object_shape[0] - window[0] + window[0] // 2,
                object_shape[1] - window[1] + window[1] // 2,
            ],
            positions_px.dtype,
        )
        - 0.51
    )
    return jnp.clip(positions_px, low, high)


def object_patches(
    object_slices: jnp.ndarray, corners: jnp.ndarray, window: tuple[int, int]
) -> jnp.ndarray:
    """Cut (G, n_slices, N, N) windows out of the object at integer ``corners`` (G, 2).

    Corners must keep the window inside the object (checked by callers on the host;
    ``lax.dynamic_slice`` would silently clamp)."""
    n_slices = object_slices.shape[0]

    def cut(corner):
        return jax.lax.dynamic_slice(
            object_slices, (jnp.zeros_like(corner[0]), corner[0], corner[1]), (n_slices, *window)
        )

    return jax.vmap(cut)(corners)


def shifted_probes(probe_modes: jnp.ndarray, shifts_px: jnp.ndarray) -> jnp.ndarray:
    """Probe modes (M, N, N) shifted by sub-pixel ``shifts_px`` (G, 2) → (G, M, N, N)."""
    ramps = physics.fourier_shift_ramp(shifts_px, probe_modes.shape[-2:]).astype(probe_modes.dtype)
    spectrum = jnp.fft.fft2(probe_modes)
    return jnp.fft.ifft2(spectrum[None] * ramps[:, None])


def unshifted_sum(waves: jnp.ndarray, shifts_px: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """Σ_j w_j·(wave_j shifted back by −shift_j) (M, N, N): the adjoint of
    :func:`shifted_probes`, weighted. waves (G, M, N, N), shifts_px (G, 2) [px], weights
    (G,). The sum is taken in Fourier space, so one inverse FFT per mode does (not one
    per position and mode)."""
    back = physics.fourier_shift_ramp(-shifts_px, waves.shape[-2:]).astype(waves.dtype)
    return jnp.fft.ifft2(
        jnp.einsum("g,gyx,gmyx->myx", weights.astype(waves.dtype), back, jnp.fft.fft2(waves))
    )


def multislice(
    slices_first: jnp.ndarray,
    incident: jnp.ndarray,
    propagators: jnp.ndarray,
    keep_incident: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
    """Multislice ψ_{n+1} = F⁻¹[P_n·F[O_n·ψ_n]] through all slices.

    slices_first (S, G, N, N) transmissions, incident waves (G, M, N, N), propagators
    (S − 1, N, N) between consecutive slices. Returns the exit wave (G, M, N, N) after the
    last slice's transmission (a final propagation would not change the intensity) and,
    with ``keep_incident``, the wave incident on every slice (S, G, M, N, N) that the
    conventional engines back-propagate through (else ``None``)."""

    def step(wave, slice_and_propagator):
        transmission, propagator = slice_and_propagator
        return jnp.fft.ifft2(jnp.fft.fft2(wave * transmission[:, None]) * propagator), (
            wave if keep_incident else None
        )

    last, earlier = jax.lax.scan(
        step, incident, (slices_first[:-1], propagators), unroll=UNROLL_SLICES
    )
    incidents = jnp.concatenate([earlier, last[None]]) if keep_incident else None
    return last * slices_first[-1][:, None], incidents


def exit_waves(
    patches: jnp.ndarray, incident: jnp.ndarray, propagators: jnp.ndarray
) -> jnp.ndarray:
    """Exit waves (G, M, N, N) of :func:`multislice` for patches (G, S, N, N)."""
    return multislice(jnp.moveaxis(patches, 1, 0), incident, propagators)[0]


def group_exit_waves(
    object_slices: jnp.ndarray,
    probe_modes: jnp.ndarray,
    positions_px: jnp.ndarray,
    propagators: jnp.ndarray,
) -> jnp.ndarray:
    """Exit waves (G, M, N, N) for every position of a group and every probe mode.

    object_slices (S, H, W) complex; probe_modes (M, N, N); positions_px (G, 2) probe
    centres (y, x) in object pixels; propagators (S − 1, N, N) from
    :func:`slice_propagators`."""
    return group_forward(
        object_slices, probe_modes, positions_px, propagators, far_field=False
    ).exit_wave


class GroupForward(NamedTuple):
    """One group through the model (see :func:`group_forward`): window corners (G, 2)
    int32 where the patches were cut, sub-pixel remainders (G, 2) the probe was shifted
    by, transmissions (S, G, N, N), the wave incident on every slice (S, G, M, N, N)
    (``None`` unless kept), the exit wave (G, M, N, N), and (unless not asked for) the
    far field Ψ (G, M, N, N) of the exit wave times the detector ramp and the intensity
    Σ_modes |Ψ|² (G, N, N)."""

    corners: jnp.ndarray
    remainders: jnp.ndarray
    transmissions: jnp.ndarray
    incidents: jnp.ndarray | None
    exit_wave: jnp.ndarray
    far_field: jnp.ndarray | None
    intensity: jnp.ndarray | None


def group_forward(
    object_slices: jnp.ndarray,
    probe_modes: jnp.ndarray,
    positions_px: jnp.ndarray,
    propagators: jnp.ndarray,
    detector_ramp: jnp.ndarray | None = None,
    keep_incident: bool = False,
    far_field: bool = True,
) -> GroupForward:
    """The whole forward pass of a group, keeping what the conventional engines update
    from; arguments as for :func:`group_exit_waves`. Corners are clamped as
    ``lax.dynamic_slice`` clamps them, so updates land where the patches were cut."""
    window = probe_modes.shape[-2:]
    corners, remainders = split_positions(positions_px, window)
    corners = jnp.clip(corners, 0, jnp.array(object_slices.shape[-2:]) - jnp.array(window))
    remainders = remainders.astype(jnp.finfo(probe_modes.dtype).dtype)
    transmissions = jnp.moveaxis(object_patches(object_slices, corners, window), 1, 0)
    exit_wave, incidents = multislice(
        transmissions, shifted_probes(probe_modes, remainders), propagators, keep_incident
    )
    if not far_field:
        return GroupForward(corners, remainders, transmissions, incidents, exit_wave, None, None)
    psi = jnp.fft.fft2(
        exit_wave if detector_ramp is None else exit_wave * detector_ramp, norm="ortho"
    )
    return GroupForward(
        corners,
        remainders,
        transmissions,
        incidents,
        exit_wave,
        psi,
        jnp.sum(jnp.abs(psi) ** 2, axis=1),
    )


def far_field_intensities(
    object_slices: jnp.ndarray,
    probe_modes: jnp.ndarray,
    positions_px: jnp.ndarray,
    propagators: jnp.ndarray,
    detector_ramp: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Model diffraction intensities Σ_modes |F[ψ_exit]|² (G, N, N), unshifted;
    arguments as for :func:`group_exit_waves`. ``detector_ramp`` (N, N) from
    :func:`detector_offset_ramp` samples the far field off the integer grid, as a
    binned detector does."""
    return group_forward(
        object_slices, probe_modes, positions_px, propagators, detector_ramp
    ).intensity


def detector_offset_ramp(
    window: tuple[int, int], offset_px: tuple[float, float], dtype=SINGLE.complex
) -> jnp.ndarray:
    """Exit-wave ramp exp(−2πi δ·r/N) (N, N) so that model pixel m holds the far field at
    frequency m + δ [detector pixels]: for patterns whose zero frequency lies at
    N/2 − δ (δ = (b − 1)/(2b) after binning by b), unshifted by N/2 at load."""
    real = jnp.finfo(dtype).dtype
    y = jnp.arange(window[0], dtype=real)[:, None] / window[0]
    x = jnp.arange(window[1], dtype=real)[None, :] / window[1]
    return jnp.exp(-2j * jnp.pi * (offset_px[0] * y + offset_px[1] * x)).astype(dtype)


def slice_propagators(
    window: tuple[int, int],
    sampling_A: float,
    energy_eV: float,
    slice_thicknesses_A,
    bandlimit: float | None = physics.DEFAULT_BANDLIMIT,
    dtype=SINGLE.complex,
) -> jnp.ndarray:
    """Propagators (S − 1, N, N) across the first S − 1 of S slices of the given
    thicknesses [Å] (the wave leaves the last slice without propagation)."""
    stack = [
        physics.fresnel_propagator(window, sampling_A, energy_eV, float(dz), bandlimit, dtype)
        for dz in list(slice_thicknesses_A)[:-1]
    ]
    if not stack:
        return jnp.zeros((0, *window), dtype)
    return jnp.stack(stack)
