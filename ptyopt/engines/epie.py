"""ePIE / 3PIE engine (Maiden & Rodenburg 2009; Maiden, Humphry & Rodenburg 2012).

For each group of positions (group size 1: classic sequential ePIE; larger: the
grouped variant, all updates of a group computed from the same state), with ψ_n the
wave incident on slice n [√counts] (ψ_0: the probe shifted by the position's sub-pixel
remainder r; ψ_{n+1} = F⁻¹[H_n·F[O_n·ψ_n]], H_n the band-limited Fresnel propagator),
O_n the object window at the position [1], ramp the detector-offset ramp and F the
orthonormal FFT (all as in :mod:`ptyopt.model`):

    Ψ = F[ψ_exit·ramp],  I = Σ_modes |Ψ|²                       [√counts], [counts]
    χ = noise.wavefront_update(Ψ, I, J, ε)   (amplitude, ε = 0: the modulus constraint)
    Δ_{S−1} = F⁻¹[χ]·conj(ramp)                   exit-wave update of the last slice
    for n = S−1 … 0:
        c_n     = Σ_modes conj(ψ_n)·Δ_n,  I_n = Σ_modes|ψ_n|²       [counts]
        Δψ_n    = conj(O_n)·Δ_n / max|O_n|²      (per mode; pre-update O_n)
        Δ_{n−1} = F⁻¹[conj(H_{n−1})·F[Δψ_n]]     (back through the adjoint propagator)
    object_normalization: position (textbook, the default)
        O_n ← O_n + (β_O/S)·Σ_group c_n / ((1−α)·I_n + α·max I_n)   (each position's own)
    object_normalization: group
        O_n ← O_n + (β_O/S)·Σ_group c_n / ((1−α)·Σ_group I_n + α·max Σ_group I_n)
    P   ← P + β_P·F⁻¹[mean_group F[Δψ_0]·e^{+2πik·r}]   (from probe_update_start on)

The sums over the group are scatter-added at each window (padding weight 0) and the
maxima taken over the window (position) or over the object slice (group). α
(``alpha_object``, in (0, 1]) is rPIE's (Maiden, Johnson & Li, Optica 4, 736 (2017)):
α = 1 divides by the maximum illumination (ePIE), a smaller α by the local illumination,
regularised, which takes larger steps where the probe is dim. The two normalisations
agree for one position per group; for a group, "position" sums the positions' updates, so
overlapping positions add up (the textbook grouped ePIE), and "group" divides the summed
update by the summed illumination, so β_O means the same for any group size and overlap
(py4DSTEM's batched gradient descent at ``normalization_min = 1`` is "group" at α = 1).

χ, Δ and Δψ are per probe mode, so each mode of a mixed state is updated from its own
far field; the object update sums over modes. Intermediate waves take the full step
(Δψ_n is the new exit-wave target of slice n−1, as χ is of the last slice), so each
slice's ΔO_n alone would correct the whole exit-wave error at the probe's maximum (to
first order), and S of them together can overshoot up to S-fold. The object step is
therefore shared out over the slices as β_O/S, as in LSQML (:mod:`ptyopt.engines.lsqml`)
and phaser: the slices' summed step is bounded by one full correction, as one slice's
is, so β_O means the same on any number of slices, one slice (S = 1) takes the textbook
ePIE step, and the textbook β_O = β_P = 1 converge on multislice data too (groups of 64
on the 10-slice ``thick10`` dataset: NRMSE 1 → 5.5 without the 1/S, → 0.11 with it).
Sequential ePIE (group size 1) tolerates the full per-slice step (β_O = S): on 4
noise-free slices it converges faster with it; on ``thick10`` it leads early (NRMSE 0.12
against 0.20 at iteration 5) but drifts to 0.14 by iteration 20, where β_O = 1 reaches
0.11. With the "position" normalisation the summed updates of the overlapping positions
of one group are not normalised: on one slice they are stable at β_O = 1 (groups of 64
on ``quickstart``: NRMSE 0.17 in 30 iterations), on many they compound with the slices'
overshoot (groups of 64 on ``thick10``: best β_O ≈ 0.23); "group" removes that
(``thick10``, 40 iterations, β_O 1.2, β_P 0.48: NRMSE 0.0989 / SSIM 0.9890 at α = 1,
0.1000 / 0.9904 at α = 0.5, against 0.1015 / 0.9879 for "position" at its tuned β). β_P
damps the probe step, which is not shared out (one variable). For one position and a
pure-phase object these are the exact adjoint (steepest-descent) directions of the loss,
normalised. Position correction, when on, is the shared normalised gradient step of
:mod:`ptyopt.engines.positions`, taken per group from the state before the group's
update. Every number (β_O, β_P, α, ε, switches, the normalisation, position step and
clip) is an array argument of one compiled iteration (``lax.scan`` over groups); only
the noise-model name is static.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ptyopt import model
from ptyopt.engines.chunks import over_chunks
from ptyopt.engines.common import ConventionalRunner, ConventionalStructure
from ptyopt.engines.positions import corrected_positions
from ptyopt.engines.windows import scatter_windows
from ptyopt.initial import Measurements, ReconState
from ptyopt.noise import noise_model
from ptyopt.plan import EpieSettings


def _max_per_position(x: jnp.ndarray) -> jnp.ndarray:
    """max over the window (G, N, N) → (G, 1, 1), kept ≥ the smallest normal number."""
    return jnp.maximum(jnp.max(x, axis=(-2, -1), keepdims=True), jnp.finfo(x.dtype).tiny)


def _slice_updates(exit_update, transmission, incident, hyper):
    """Object update ΔO (G, N, N), illumination I = Σ_modes|ψ|² (G, N, N) [counts] and
    incident-wave update Δψ (G, M, N, N) of one slice from its exit-wave update
    (G, M, N, N); transmission (G, N, N), incident (G, M, N, N). ΔO is c = Σ_modes
    conj(ψ)·Δ divided by each position's rPIE denominator ("position" normalisation) or
    c itself ("group": the group step divides the sums, :func:`_object_step`)."""
    illumination = jnp.sum(jnp.abs(incident) ** 2, axis=1)
    alpha = hyper["alpha_object"]
    own = (1 - alpha) * illumination + alpha * _max_per_position(illumination)
    denominator = jnp.where(hyper["group_normalised"] > 0, 1.0, own)
    d_object = jnp.sum(jnp.conj(incident) * exit_update, axis=1) / denominator
    d_wave = (jnp.conj(transmission) / _max_per_position(jnp.abs(transmission) ** 2))[
        :, None
    ] * exit_update
    return d_object, illumination, d_wave


def _group_update(
    obj, probe, group_positions, weights, measured, propagators, detector_ramp, noise, hyper
):
    """Updates of one group (or of a chunk of its positions, :func:`over_chunks`): the
    window corners (G, 2) the per-position ΔO and illuminations (S, G, N, N) belong at,
    the weighted sum of Δprobe (M, N, N) (each position's shifted back by its sub-pixel
    remainder, weights (G,) 0 for padding), and per-position losses (G,)."""
    forward = model.group_forward(
        obj, probe, group_positions, propagators, detector_ramp, keep_incident=True
    )
    slices_first, incidents, intensity = forward.transmissions, forward.incidents, forward.intensity
    chi = noise.wavefront_update(forward.far_field, intensity, measured, hyper["epsilon"])
    exit_update = jnp.fft.ifft2(chi, norm="ortho") * jnp.conj(detector_ramp)

    # Backward: slices S−1 … 1 pass their wave update through the adjoint propagator.
    def backward(update, slice_incident_propagator):
        transmission, wave, propagator = slice_incident_propagator
        d_object, illumination, d_wave = _slice_updates(update, transmission, wave, hyper)
        back = jnp.fft.ifft2(jnp.fft.fft2(d_wave) * jnp.conj(propagator))
        return back, (d_object, illumination)

    first_update, (d_objects, illuminations) = jax.lax.scan(
        backward,
        exit_update,
        (slices_first[1:], incidents[1:], propagators),
        reverse=True,
        unroll=model.UNROLL_SLICES,
    )
    d_object_0, illumination_0, d_probe = _slice_updates(
        first_update, slices_first[0], incidents[0], hyper
    )
    d_objects = jnp.concatenate([d_object_0[None], d_objects])
    illuminations = jnp.concatenate([illumination_0[None], illuminations])
    # The incident probe was shifted by +r: shift its update back by −r onto the probe grid.
    summed_d_probe = model.unshifted_sum(d_probe, forward.remainders, weights)
    losses = noise.loss(intensity, measured, hyper["epsilon"])
    return forward.corners, d_objects, illuminations, summed_d_probe, losses


def _object_step(d_objects, illuminations, corners, weights, hyper, shape):
    """The group's object update (S, H, W) (before β_O/S): the per-position ΔO
    (S, G, N, N) summed at their windows (corners (G, 2), weights (G,)); with the "group"
    normalisation divided by the summed illumination (S, G, N, N) as rPIE's α weighs it
    (the module docstring). The illumination is only summed when it is used."""
    total = scatter_windows(d_objects, corners, weights, shape)

    def by_group(total):
        illumination = scatter_windows(illuminations, corners, weights, shape)
        alpha = hyper["alpha_object"]
        brightest = jnp.max(illumination, axis=(-2, -1), keepdims=True)
        denominator = (1 - alpha) * illumination + alpha * brightest
        return total / jnp.maximum(denominator, jnp.finfo(denominator.dtype).tiny)

    return jax.lax.cond(hyper["group_normalised"] > 0, by_group, lambda total: total, total)


@partial(jax.jit, static_argnames=("structure",))
def epie_iteration(
    variables,
    patterns,
    indices,
    weights,
    propagators,
    detector_ramp,
    hyper,
    structure: ConventionalStructure,
):
    """One pass over all groups. variables (object (S, H, W), probe (M, N, N), positions
    (P, 2)); indices/weights (n_groups, G); hyper: dict of scalar arrays beta_object,
    beta_probe, alpha_object, group_normalised (1: "group", 0: "position"), epsilon,
    probe_on, position_step, positions_on, max_step_px. Returns the
    new variables and the mean data loss per position (before each group's update)."""
    noise = noise_model(structure.noise)

    def group_step(carry, group):
        obj, probe, positions = carry
        idx, w = group
        measured = patterns[idx]

        def chunk_update(chunk_positions, chunk_weights, chunk_measured):
            return _group_update(
                obj,
                probe,
                chunk_positions,
                chunk_weights,
                chunk_measured,
                propagators,
                detector_ramp,
                noise,
                hyper,
            )

        corners, d_objects, illuminations, summed_d_probe, losses = over_chunks(
            chunk_update, (positions[idx], w, measured), (0, 1, 1, None, 0)
        )

        positions = corrected_positions(
            obj,
            probe,
            positions,
            idx,
            w,
            measured,
            propagators,
            detector_ramp,
            noise.loss,
            hyper,
        )

        step = hyper["beta_object"] / obj.shape[0]  # β_O/S: see the module docstring
        obj = obj + step * _object_step(d_objects, illuminations, corners, w, hyper, obj.shape[-2:])
        count = jnp.maximum(jnp.sum(w), 1.0)  # positions in the group (padding weighs 0)
        probe = probe + hyper["beta_probe"] * hyper["probe_on"] * summed_d_probe / count
        return (obj, probe, positions), jnp.sum(w * losses) / count

    variables, losses = jax.lax.scan(group_step, variables, (indices, weights))
    return variables, jnp.mean(losses)


def make_runner(
    settings: EpieSettings, measurements: Measurements, state: ReconState
) -> ConventionalRunner:
    """Runner for ``settings`` on ``measurements`` starting from ``state``."""
    constants = {"group_normalised": float(settings.object_normalization == "group")}
    return ConventionalRunner(
        epie_iteration, settings.SCHEDULED, settings, measurements, state, constants
    )
