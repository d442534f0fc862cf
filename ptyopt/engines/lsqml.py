"""LSQML engine: least-squares maximum-likelihood ptychography (Odstrčil, Menzel &
Guizar-Sicairos, Opt. Express 26, 3108 (2018)), multislice after Tsai et al.,
Opt. Express 24, 29089 (2016).

Per group of positions j (padding entries have weight w_j = 0), with ψ_{n,j} the wave
incident on slice n (ψ_0 the probe modes shifted by the position's sub-pixel remainder
r_j), O_{n,j} the object window of slice n, F the orthonormal FFT and ramp the detector
offset ramp and K_n the propagator from slice n to n + 1, all as in :mod:`ptyopt.model`:

    Ψ_j = F[ψ_exit,j·ramp],  I_j = Σ_modes |Ψ_j|²                   [√counts], [counts]
    χ_j = F⁻¹[noise.wavefront_update(Ψ, I, J, ε)]·conj(ramp)     exit-wave update [√counts]

Then for slices n = S−1 … 0, χ being the update of slice n's exit wave:

    ΔÔ_n = Σ_j Σ_modes conj(ψ_{n,j})·χ_j  /  (Σ_j Σ_modes|ψ_{n,j}|² + δ_O·max Σ_j|ψ|²)   [1]
    χ    ← F⁻¹[conj(K_{n−1})·F[conj(O_{n,j})·χ_j]]     (n > 0: exit-wave update of slice n−1)
    ΔP̂   = Σ_j F⁻¹[e^{+2πik·r_j}·F[conj(O_{0,j})·χ_j]] / (Σ_j|O_{0,j}|² + δ_P·max Σ_j|O|²)
                                                             (n = 0, per mode) [√counts]

ΔÔ (scatter-added over the windows) and ΔP̂ are the illumination-normalised sums of the
steepest directions ΔO_j = χ_j·conj(ψ_j), ΔP_j = χ_j·conj(O_j) (δ: ``illum_reg_object``,
``illum_reg_probe``, relative to the group's maximum illumination). The step lengths
are fitted per position: with u_j = ΔÔ|_j·ψ_j and v_j = O_j·ΔP̂ shifted by r_j, the
least-squares fit χ_j ≈ α_O,j·u_j + α_P,j·v_j (summed over modes and pixels) gives the
2×2 normal equations

    [⟨u,u⟩ + λ·⟨u,u⟩‾   Re⟨u,v⟩          ] [α_O,j]   [Re⟨u,χ⟩]
    [Re⟨v,u⟩          ⟨v,v⟩ + λ·⟨v,v⟩‾ ] [α_P,j] = [Re⟨v,χ⟩]

(‾: mean over the group; λ = ``LSQ_TIKHONOV`` keeps a position with a nearly
degenerate system from taking a huge step), and negative steps are set to 0; the steps
are dimensionless. The group's updates, as in the paper's parallel (batch) variant:

    O_n ← O_n + (β_O/S) · [Σ_j α_O,j |ψ_{n,j}|² / Σ_j |ψ_{n,j}|²] · ΔÔ_n
        (illumination-weighted step)
    P   ← P   + β_P · mean_j(α_P,j) · ΔP̂
        (from probe_update_start)

Slices n > 0 fit α_O alone (their second unknown, the incident wave, is not a shared
variable); the first slice fits the object and probe steps jointly, so one slice is
exactly the paper's algorithm. Each slice's step is fitted as if it alone corrected χ,
so with S slices the sum would overshoot about S-fold (it diverges in two iterations
on 4 slices of SrTiO3): the object step is shared out as β_O/S, as PtychoShelves and
fold_slice do. Every slice's update uses the forward pass of the state before the
group's update. Mixed states: χ, u, v per mode, ΔÔ summed over modes, one
ΔP̂ per mode, one α_P for all modes. Position correction, when on, is the shared
normalised gradient step of :mod:`ptyopt.engines.positions` with the updated object
and probe.

The steps are fitted to the directions actually applied (u_j, v_j), so they are
dimensionless and a c-fold dose changes nothing (tests/test_engine_lsqml.py). phaser
0.3.1's LSQML fits its object step to the unnormalised direction conj(ψ)·χ and applies
it to the normalised one: its step is β_O·Σ|χ|²|ψ|²/Σ|χ|²|ψ|⁴ per slice, a step per
count of illumination [1/counts] that shrinks as 1/dose. On ``thick10`` (36,000
counts per pattern, 10 slices) its β_O = 2 is a per-slice step of 0.011–0.024 where
ours at β_O = 0.9 is 0.086, i.e. about our β_O = 0.2. On noisy data that matters: the
object fits the noise after some ten iterations at β_O = 0.9 (thick10, groups of 64:
NRMSE 0.086 at iteration 10, 0.101 at 40, with the probe refined or fixed), much less
at β_O = 0.3 (0.083 at 30, 0.085 at 40).

Every number (β, δ, ε, switches, position step) enters the compiled iteration as an
array (``lax.scan`` over groups), so a study compiles it once per shape. On a multi-core
CPU the per-position work runs in concurrent chunks of the group's positions
(:mod:`ptyopt.engines.chunks`): the forward pass, the back-propagation of χ, each
slice's window sums and fit terms and the probe direction; the normalised directions
and the step fits (from the positions' terms) are the group's.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ptyopt import model
from ptyopt.engines.chunks import over_chunks
from ptyopt.engines.common import ConventionalRunner, ConventionalStructure
from ptyopt.engines.positions import corrected_positions
from ptyopt.engines.windows import scatter_windows
from ptyopt.initial import Measurements, ReconState
from ptyopt.noise import NoiseModel, noise_model
from ptyopt.plan import LsqmlSettings

LSQ_TIKHONOV = 0.1
"""λ of the 2×2 step fit, relative to the group's mean diagonal (PtychoShelves uses 0.1–0.5)."""

LSQ_FLOOR = 1e-6
"""Diagonal floor of the (scale-normalised) step fit, so that it stays solvable when a
direction vanishes (probe update off, or χ = 0)."""


class Windows(NamedTuple):
    """Where a group's probe windows lie on the object grid: integer corners (G, 2),
    weights (G,) (0 for padding), window (N, N) and object shape (H, W)."""

    corners: jnp.ndarray
    weights: jnp.ndarray
    window: tuple[int, int]
    shape: tuple[int, int]

    def scatter(self, values: jnp.ndarray) -> jnp.ndarray:
        """Σ_j w_j·values[:, j] added at each window: values (L, G, N, N) → (L, H, W)
        (:func:`ptyopt.engines.windows.scatter_windows`). One pass over the G windows
        for all L images: on a GPU each window is a kernel launch, so the images a
        step needs are scattered together."""
        return scatter_windows(values, self.corners, self.weights, self.shape)

    def gather(self, image: jnp.ndarray) -> jnp.ndarray:
        """The windows (G, N, N) of an (H, W) image."""
        return model.object_patches(image[None], self.corners, self.window)[:, 0]

    def mean(self, values: jnp.ndarray) -> jnp.ndarray:
        """Weighted mean over the group's real entries of per-position values (G,)."""
        return jnp.sum(self.weights * values) / jnp.maximum(jnp.sum(self.weights), 1.0)

    def chunked(self, function, per_position, out_axes) -> tuple:
        """:func:`~ptyopt.engines.chunks.over_chunks` of ``function(windows, *arrays)``:
        each chunk gets these windows cut to its positions and its part of every array of
        ``per_position`` (G, …)."""

        def chunk(corners, weights, *arrays):
            return function(self._replace(corners=corners, weights=weights), *arrays)

        return over_chunks(chunk, (self.corners, self.weights, *per_position), out_axes)


def _tiny(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.finfo(x.dtype).tiny


def _normalised(total: jnp.ndarray, illumination: jnp.ndarray, reg: jnp.ndarray) -> jnp.ndarray:
    """total / (illumination + reg·max illumination): a direction divided by its
    illumination, regularised where the illumination is weak (0 where both are 0)."""
    return total / (illumination + reg * jnp.max(illumination) + _tiny(illumination))


class FitTerms(NamedTuple):
    """The per-position terms (G,) of the 2×2 step fit: ⟨u,u⟩, Re⟨u,χ⟩ and, with a
    probe term, ⟨v,v⟩, Re⟨u,v⟩, Re⟨v,χ⟩ (``None`` without: v = 0)."""

    uu: jnp.ndarray
    u_chi: jnp.ndarray
    vv: jnp.ndarray | None = None
    uv: jnp.ndarray | None = None
    v_chi: jnp.ndarray | None = None


def _dot(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Re⟨a, b⟩ per position (G,) of (G, M, N, N) waves."""
    return jnp.sum(jnp.real(jnp.conj(a) * b), axis=(1, 2, 3))


def fit_terms(chi: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray | None = None) -> FitTerms:
    """The :class:`FitTerms` of χ ≈ α_O·u + α_P·v, all arrays (G, M, N, N)."""
    if v is None:
        return FitTerms(_dot(u, u), _dot(u, chi))
    return FitTerms(_dot(u, u), _dot(u, chi), _dot(v, v), _dot(u, v), _dot(v, chi))


def _lsq_steps(terms: FitTerms, windows: Windows) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-position steps (α_O, α_P) (G,), each ≥ 0, of the regularised least-squares
    fit χ_j ≈ α_O·u_j + α_P·v_j from its :class:`FitTerms` (no probe term: α_P = 0)."""
    a11, b1 = terms.uu, terms.u_chi
    if terms.vv is None:
        a22 = a12 = b2 = jnp.zeros_like(a11)
    else:
        a22, a12, b2 = terms.vv, terms.uv, terms.v_chi
    # Normalise by the group's scale first: counts² can be large, and the floor is relative.
    scale = windows.mean(a11) + windows.mean(a22) + _tiny(a11)
    a11 = (a11 + LSQ_TIKHONOV * windows.mean(a11)) / scale + LSQ_FLOOR
    a22 = (a22 + LSQ_TIKHONOV * windows.mean(a22)) / scale + LSQ_FLOOR
    a12, b1, b2 = a12 / scale, b1 / scale, b2 / scale
    det = a11 * a22 - a12**2  # > 0: the Tikhonov terms make the matrix positive definite
    alpha_object = (a22 * b1 - a12 * b2) / det
    alpha_probe = (a11 * b2 - a12 * b1) / det
    return jnp.maximum(alpha_object, 0.0), jnp.maximum(alpha_probe, 0.0)


class ObjectDirection(NamedTuple):
    """ΔÔ (H, W) of one slice, the per-position illumination Σ_modes|ψ_j|² (G, N, N)
    and its group sum on the object grid (H, W); each with a leading slice axis (S, …)
    once the slices are stacked."""

    direction: jnp.ndarray
    illumination_per_position: jnp.ndarray
    illumination: jnp.ndarray


def _object_direction(
    chi: jnp.ndarray, incident: jnp.ndarray, windows: Windows, reg: jnp.ndarray
) -> ObjectDirection:
    """Illumination-normalised object direction of one slice from its exit-wave update
    χ and incident wave ψ (G, M, N, N)."""

    def chunk_sums(chunk: Windows, c, psi):
        illumination_per_position = jnp.sum(jnp.abs(psi) ** 2, axis=1)
        total = jnp.sum(c * jnp.conj(psi), axis=1)
        # both sums in one pass over the windows (the complex one as real and imaginary)
        stacked = jnp.stack([illumination_per_position, total.real, total.imag])
        return chunk.scatter(stacked), illumination_per_position

    sums, illumination_per_position = windows.chunked(chunk_sums, (chi, incident), (None, 0))
    illumination, total = sums[0], jax.lax.complex(sums[1], sums[2])
    return ObjectDirection(
        _normalised(total, illumination, reg), illumination_per_position, illumination
    )


def _object_updates(found: ObjectDirection, alpha: jnp.ndarray, windows: Windows) -> jnp.ndarray:
    """[Σ_j α_j |ψ_j|² / Σ_j |ψ_j|²]·ΔÔ (S, H, W) of every slice at once (found stacked
    over slices, α (S, G)): each pixel takes the steps of the positions that illuminate
    it, weighted by their illumination."""
    per_position = jnp.moveaxis(alpha[:, :, None, None] * found.illumination_per_position, 1, 0)
    (weighted,) = windows.chunked(
        lambda chunk, values: (chunk.scatter(jnp.moveaxis(values, 0, 1)),),
        (per_position,),
        (None,),
    )
    return weighted / (found.illumination + _tiny(found.illumination)) * found.direction


def _object_wave(direction: jnp.ndarray, incident: jnp.ndarray, windows: Windows) -> jnp.ndarray:
    """u_j = ΔÔ|_j·ψ_j (G, M, N, N): the change of the exit wave along ΔÔ (H, W)."""
    return windows.gather(direction)[:, None] * incident


def _object_fit_terms(chi, incident, direction, windows: Windows) -> FitTerms:
    """The object-only :class:`FitTerms` of one slice, chunk by chunk."""
    terms = windows.chunked(
        lambda chunk, c, psi: fit_terms(c, _object_wave(direction, psi, chunk))[:2],
        (chi, incident),
        (0, 0),
    )
    return FitTerms(*terms)


def _probe_direction(
    chi: jnp.ndarray,
    transmission: jnp.ndarray,
    remainders: jnp.ndarray,
    windows: Windows,
    reg: jnp.ndarray,
) -> jnp.ndarray:
    """Illumination-normalised probe direction ΔP̂ (M, N, N) from the first slice's
    exit-wave update χ (G, M, N, N) and transmission (G, N, N)."""

    # The incident probe was shifted by +r_j (model.shifted_probes): shift each position's
    # direction back by −r_j.
    def chunk_total(chunk: Windows, c, t, r):
        return (model.unshifted_sum(c * jnp.conj(t)[:, None], r, chunk.weights),)

    (total,) = windows.chunked(chunk_total, (chi, transmission, remainders), (None,))
    # Σ|O_j|² is left unshifted: a sub-pixel shift of a smooth weight changes little.
    illumination = jnp.einsum("g,gyx->yx", windows.weights, jnp.abs(transmission) ** 2)
    return _normalised(total, illumination, reg)


def _first_slice_terms(chi, transmission, incident, remainders, direction, windows, hyper):
    """ΔP̂ (M, N, N) and the first slice's :class:`FitTerms`, with v_j = O_j·ΔP̂ shifted
    by r_j; while the probe is not updated ΔP̂ = 0 and the terms are the object's alone
    (a branch, so that object-only iterations skip the probe's work)."""

    def on():
        d_probe = _probe_direction(chi, transmission, remainders, windows, hyper["illum_reg_probe"])

        def chunk_terms(chunk: Windows, c, t, psi, r):
            v = t[:, None] * model.shifted_probes(d_probe, r)
            return fit_terms(c, _object_wave(direction, psi, chunk), v)

        terms = windows.chunked(chunk_terms, (chi, transmission, incident, remainders), (0,) * 5)
        return d_probe, FitTerms(*terms)

    def off():
        terms = _object_fit_terms(chi, incident, direction, windows)
        zero = jnp.zeros_like(terms.uu)
        return jnp.zeros(chi.shape[1:], chi.dtype), terms._replace(vv=zero, uv=zero, v_chi=zero)

    return jax.lax.cond(hyper["probe_on"] > 0, on, off)


def _upper_slice_step(chi, slice_inputs, windows: Windows, hyper):
    """One backward step through slice n > 0: the exit-wave update of slice n − 1
    (G, M, N, N), and slice n's object direction and fitted steps α (G,) (applied after
    the scan, all slices together: :func:`_object_updates`)."""
    transmission, incident, propagator = slice_inputs
    found = _object_direction(chi, incident, windows, hyper["illum_reg_object"])
    alpha, _ = _lsq_steps(_object_fit_terms(chi, incident, found.direction, windows), windows)

    def back(c, t):
        return (jnp.fft.ifft2(jnp.fft.fft2(c * jnp.conj(t)[:, None]) * jnp.conj(propagator)),)

    (previous,) = over_chunks(back, (chi, transmission), (0,))
    return previous, (found, alpha)


def _first_slice_step(chi, transmission, incident, remainders, windows: Windows, hyper):
    """The first slice's object direction and step α_O (G,), and the probe update
    (M, N, N), with the jointly fitted steps."""
    found = _object_direction(chi, incident, windows, hyper["illum_reg_object"])
    d_probe, terms = _first_slice_terms(
        chi, transmission, incident, remainders, found.direction, windows, hyper
    )
    alpha_object, alpha_probe = _lsq_steps(terms, windows)
    return found, alpha_object, hyper["beta_probe"] * windows.mean(alpha_probe) * d_probe


def _group_update(
    obj,
    probe,
    group_positions,
    weights,
    measured,
    propagators,
    detector_ramp,
    hyper,
    noise: NoiseModel,
):
    """New object and probe after one group's LSQML step, and the group's per-position
    losses (G,) before it."""

    def chunk_forward(chunk_positions, chunk_measured):
        forward = model.group_forward(
            obj, probe, chunk_positions, propagators, detector_ramp, keep_incident=True
        )
        chi = noise.wavefront_update(
            forward.far_field, forward.intensity, chunk_measured, hyper["epsilon"]
        )
        chi = jnp.fft.ifft2(chi, norm="ortho") * jnp.conj(detector_ramp)  # to the exit plane
        return (
            forward.corners,
            forward.remainders,
            forward.transmissions,
            forward.incidents,
            forward.intensity,
            chi,
        )

    corners, remainders, transmissions, incidents, intensity, chi = over_chunks(
        chunk_forward, (group_positions, measured), (0, 0, 1, 1, 0, 0)
    )
    windows = Windows(corners, weights, probe.shape[-2:], obj.shape[-2:])

    first_chi, (upper_found, upper_alpha) = jax.lax.scan(
        lambda c, xs: _upper_slice_step(c, xs, windows, hyper),
        chi,
        (transmissions[1:], incidents[1:], propagators),
        reverse=True,
        unroll=model.UNROLL_SLICES,
    )
    first_found, first_alpha, probe_update = _first_slice_step(
        first_chi, transmissions[0], incidents[0], remainders, windows, hyper
    )
    found = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first_found, upper_found)
    alpha = jnp.concatenate([first_alpha[None], upper_alpha])
    # β_O/S: every slice's step was fitted to the whole χ (see the module docstring).
    object_update = hyper["beta_object"] * _object_updates(found, alpha, windows) / obj.shape[0]
    obj = obj + object_update.astype(obj.dtype)
    return (
        obj,
        probe + probe_update.astype(probe.dtype),
        noise.loss(intensity, measured, hyper["epsilon"]),
    )


@partial(jax.jit, static_argnames=("structure",))
def lsqml_iteration(
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
    beta_probe, illum_reg_object, illum_reg_probe, epsilon, probe_on, position_step,
    positions_on, max_step_px. Returns the new variables and the mean data loss per position
    (before each group's update)."""
    noise = noise_model(structure.noise)

    def group_step(carry, group):
        obj, probe, positions = carry
        idx, w = group
        measured = patterns[idx]
        obj, probe, losses = _group_update(
            obj, probe, positions[idx], w, measured, propagators, detector_ramp, hyper, noise
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
        return (obj, probe, positions), jnp.sum(w * losses) / jnp.maximum(jnp.sum(w), 1.0)

    variables, losses = jax.lax.scan(group_step, variables, (indices, weights))
    return variables, jnp.mean(losses)


def make_runner(
    settings: LsqmlSettings, measurements: Measurements, state: ReconState
) -> ConventionalRunner:
    """Runner for ``settings`` on ``measurements`` starting from ``state``."""
    return ConventionalRunner(lsqml_iteration, settings.SCHEDULED, settings, measurements, state)
