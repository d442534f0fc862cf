"""Scores of a reconstruction against the ground-truth potential (DESIGN §12).

Recipe (:func:`score_object`):

1. crop each slice to the scanned field of view (FOV), remove its global phase (the
   angle of its mean phasor over the FOV), take the phase and unwrap it where it
   jumps by more than π between neighbouring pixels (one slice of a thick specimen),
   then phase / σ → potential per slice (:func:`potential_on_fov`); the projection is
   the sum of the per-slice potentials, never the angle of a product;
2. remove the gauge freedoms (constant offset and linear ramp) from both images;
3. register the *periodic* ground truth: the shift within the disc |s| ≤
   ``max_shift_px`` that minimises the scored error up to a gain, to < 1e-6 px; an
   optimum on the bound is recorded (``registration_on_bound``), never dropped;
4. take each pixel of the projection (and of each slice) at its representative modulo
   2π/σ nearest the registered truth (a phase is defined modulo 2π per pixel);
   steps 2–4 are :mod:`ptyopt.registration`;
5. score the registered pair:

- ``nrmse`` ‖r − t‖/‖t‖, the primary score. No gain is fitted: a gain rewards blur and
  the phase scale is physical. ``gain`` and ``nrmse_gain_fitted`` are diagnostics.
- ``ssim`` with the data range of the ground truth and a Gaussian window fixed in Å.
- the FRC curve (:mod:`ptyopt.frc`), with rings as wide as the crystal's
  reciprocal-lattice spacing: the resolution where it falls below 0.5 and where it
  falls below the half-bit curve, and ``frc_area``, its mean up to Nyquist. The FRC
  cannot see a pure low-pass blur: never report it alone.

Multislice: the summed potential is scored, and each slice against its ground-truth
slice with the same registration shift (the depth profile).

Everything that depends only on (truth, grid, FOV) is cached
(:func:`ptyopt.registration.place_truth`), so a score costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
from skimage.metrics import structural_similarity
from skimage.restoration import unwrap_phase

from ptyopt.data.dataset import GroundTruth
from ptyopt.depth import localise_dopants
from ptyopt.frc import (
    frc,
    frc_area,
    frc_resolution_A,
    frc_rings,
    halfbit_threshold,
    reciprocal_spacing_per_A,
)
from ptyopt.initial import Geometry
from ptyopt.registration import (
    PlacedTruth,
    nearest_representative,
    place_truth,
    registration_shift_px,
    remove_gauge,
)


def potential_on_fov(
    object_slices: np.ndarray, sigma_per_V_A: float, field_of_view: tuple[slice, slice]
) -> np.ndarray:
    """Projected potential per slice (S, h, w) [V·Å] of a complex object (S, H, W) over
    ``field_of_view``: each slice cropped, rotated by the conjugate of its mean phasor
    (its global phase, which no measurement fixes), its phase taken and unwrapped where
    neighbouring pixels differ by more than π (a thick specimen held in one slice), / σ
    [rad/(V·Å)]. Sum the slices for the projected potential."""
    crop = np.asarray(object_slices, dtype=np.complex128)[..., field_of_view[0], field_of_view[1]]
    mean = crop.mean(axis=(-2, -1), keepdims=True)
    phase = np.angle(crop * np.exp(-1j * np.angle(mean)))
    for index in np.ndindex(phase.shape[:-2]):
        if _wraps(phase[index]):
            phase[index] = unwrap_phase(phase[index])
    return phase / sigma_per_V_A


def _wraps(phase: np.ndarray) -> bool:
    """Whether a wrapped phase (h, w) [rad] jumps by more than π between neighbours."""
    return bool(
        (np.abs(np.diff(phase, axis=0)) > np.pi).any()
        or (np.abs(np.diff(phase, axis=1)) > np.pi).any()
    )


def ssim(recon: np.ndarray, target: np.ndarray, sampling_A: float, sigma_A: float = 0.5) -> float:
    """SSIM of ``recon`` against ``target`` (h, w): data range max − min of the target,
    Gaussian window σ = ``sigma_A`` [Å] (population covariances, as Wang et al.); the
    window's crop margin is shrunk to fit a small image."""
    sigma_px = sigma_A / sampling_A
    win_size = min(2 * int(3.5 * sigma_px + 0.5) + 1, (min(target.shape) - 1) | 1)
    return float(
        structural_similarity(
            recon,
            target,
            data_range=float(np.ptp(target)),
            gaussian_weights=True,
            sigma=sigma_px,
            use_sample_covariance=False,
            win_size=win_size,
        )
    )


def nrmse(recon: np.ndarray, target: np.ndarray) -> np.ndarray:
    """‖r − t‖/‖t‖ over the last two axes of gauge-free images (…, h, w) → (…); NaN
    (undefined, without a warning) where the target is flat, e.g. a vacuum slice."""
    norm = np.linalg.norm(target, axis=(-2, -1))
    error = np.linalg.norm(recon - target, axis=(-2, -1))
    return np.divide(error, norm, out=np.full(np.shape(norm), np.nan), where=norm > 0)


DEPTH_SCALARS = ("depth_error_rms_A", "depth_error_max_A", "depth_fwhm_mean_A")
"""The scalar scores of :class:`Score` that exist only for a ground truth with dopants."""


@dataclass(frozen=True)
class Score:
    """Scores of a registered, gauge-free reconstruction r against the ground truth t.

    nrmse: ‖r − t‖/‖t‖ (0 is perfect, 1 is a flat image); the primary score.
    shift_px: registration shift (y, x) applied to the ground truth [px].
    registration_on_bound: whether that shift lies on the bound |s| = max_shift_px
    (the true offset may lie beyond it; the score is then that of the residual shift).
    mse: mean (r − t)² [(V·Å)²].
    gain: least-squares gain ⟨r, t⟩/‖t‖² of r relative to t (diagnostic).
    nrmse_gain_fitted: min over a scale c of ‖c·r − t‖/‖t‖ (diagnostic; rewards blur).
    ssim: structural similarity (1 is perfect).
    frc_frequency_per_A, frc: FRC curve, ring frequency [1/Å] and correlation.
    frc_threshold, frc_resolution_A: resolution [Å] where the FRC falls below the
    threshold (see :func:`ptyopt.frc.frc_resolution_A`).
    frc_halfbit, frc_halfbit_resolution_A: the half-bit threshold per ring
    (:func:`ptyopt.frc.halfbit_threshold`) and the resolution [Å] where the FRC falls
    below it.
    frc_area: mean of the FRC up to Nyquist (:func:`ptyopt.frc.frc_area`; 1 is perfect).
    depth_nrmse: NRMSE of each slice against its ground-truth slice (S,); empty when
    the slice counts differ or only a projection was scored (NaN for a vacuum slice).
    depth_error_rms_A, depth_error_max_A, depth_fwhm_mean_A: depth localisation of the
    ground truth's dopants (:func:`ptyopt.depth.localise_dopants`), rms and largest
    |error| of their recovered depths and mean FWHM [Å]; dopant_depth_A, dopant_fwhm_A:
    per dopant [Å]. NaN / empty without dopants or for a single-slice reconstruction.
    """

    nrmse: float
    shift_px: tuple[float, float]
    registration_on_bound: bool = False
    mse: float = float("nan")
    gain: float = float("nan")
    nrmse_gain_fitted: float = float("nan")
    ssim: float = float("nan")
    frc_frequency_per_A: tuple[float, ...] = ()
    frc: tuple[float, ...] = ()
    frc_threshold: float = 0.5
    frc_resolution_A: float = float("nan")
    frc_halfbit: tuple[float, ...] = ()
    frc_halfbit_resolution_A: float = float("nan")
    frc_area: float = float("nan")
    depth_nrmse: tuple[float, ...] = ()
    depth_error_rms_A: float = float("nan")
    depth_error_max_A: float = float("nan")
    depth_fwhm_mean_A: float = float("nan")
    dopant_depth_A: tuple[float, ...] = ()
    dopant_fwhm_A: tuple[float, ...] = ()

    def scalars(self) -> dict[str, float]:
        """The single-number scores by name (for ``metrics.json``); the depth
        localisation's only where dopants were localised."""
        skipped = () if self.dopant_depth_A else DEPTH_SCALARS
        return {
            name: float(value)
            for name, value in asdict(self).items()
            if np.isscalar(value) and name not in skipped
        }


def compare(
    recon: np.ndarray,
    target: np.ndarray,
    sampling_A: float,
    ssim_sigma_A: float = 0.5,
    ring_width_per_A: float | None = None,
    frc_threshold: float = 0.5,
) -> dict:
    """Every score of a registered, gauge-free pair (h, w) [V·Å], as :class:`Score` fields."""
    inner, recon_sq, target_sq = (
        np.vdot(recon, target),
        np.vdot(recon, recon),
        np.vdot(target, target),
    )
    frequency, correlation = frc(recon, target, sampling_A, ring_width_per_A)
    halfbit = halfbit_threshold(frc_rings(recon.shape, float(sampling_A), ring_width_per_A)[2])
    return dict(
        nrmse=float(nrmse(recon, target)),
        mse=float(np.mean((recon - target) ** 2)),
        gain=float(inner / target_sq),
        nrmse_gain_fitted=float(np.sqrt(max(0.0, 1.0 - inner**2 / (recon_sq * target_sq))))
        if recon_sq > 0
        else 1.0,
        ssim=ssim(recon, target, sampling_A, ssim_sigma_A),
        frc_frequency_per_A=tuple(frequency.tolist()),
        frc=tuple(correlation.tolist()),
        frc_threshold=frc_threshold,
        frc_resolution_A=frc_resolution_A(frequency, correlation, frc_threshold),
        frc_halfbit=tuple(halfbit.tolist()),
        frc_halfbit_resolution_A=frc_resolution_A(frequency, correlation, halfbit),
        frc_area=frc_area(frequency, correlation, sampling_A),
    )


def score_projected_potential(
    potential: np.ndarray,
    truth_cell: np.ndarray,
    origin_px: tuple[float, float],
    field_of_view: tuple[slice, slice],
    max_shift_px: float = 3.0,
    *,
    sampling_A: float = 1.0,
    ssim_sigma_A: float = 0.5,
    ring_width_per_A: float | None = None,
    frc_threshold: float = 0.5,
    phase_period_V_A: float | None = None,
) -> Score:
    """Scores of a projected potential (H, W) [V·Å] against the periodic ground-truth
    cell (n, n) [V·Å] placed at ``origin_px`` on the same grid, within
    ``field_of_view``, after gauge removal and registration within ``max_shift_px``
    (0: none; see :func:`ptyopt.registration.registration_shift_px`). ``sampling_A``:
    pixel size [Å] (the default 1 leaves SSIM's σ and the FRC in pixel units). FRC
    rings default to the cell's reciprocal-lattice spacing
    (:func:`ptyopt.frc.reciprocal_spacing_per_A`). ``phase_period_V_A``: 2π/σ when the
    potential comes from phases, which fix it only modulo that period per pixel (see
    :func:`ptyopt.registration.nearest_representative`, applied during registration and
    after it)."""
    recon = remove_gauge(np.asarray(potential)[field_of_view])
    shift, on_bound = registration_shift_px(
        recon, truth_cell, potential.shape, origin_px, field_of_view, max_shift_px, phase_period_V_A
    )
    placed = place_truth(truth_cell, potential.shape, origin_px, field_of_view)
    target = placed.gauge_free(placed.on_fov(shift))[0].reshape(recon.shape)
    recon = nearest_representative(recon, target, phase_period_V_A)
    width = (
        _lattice_spacing_per_px(placed) / sampling_A
        if ring_width_per_A is None
        else ring_width_per_A
    )
    scores = compare(recon, target, sampling_A, ssim_sigma_A, width, frc_threshold)
    return Score(
        shift_px=(float(shift[0]), float(shift[1])), registration_on_bound=on_bound, **scores
    )


@lru_cache(maxsize=16)
def _lattice_spacing_per_px(placed: PlacedTruth) -> float:
    """:func:`ptyopt.frc.reciprocal_spacing_per_A` of the placed cell in pixel units
    [1/px], kept as long as the (cached) placement is reused."""
    return reciprocal_spacing_per_A(placed.cell, 1.0)


def score_object(
    object_slices: np.ndarray, truth: GroundTruth, geometry: Geometry, margin_px: int = 2, **options
) -> Score:
    """Scores of a reconstruction (S, H, W) complex against the ground truth over the
    scanned FOV of ``geometry`` shrunk by ``margin_px`` (:func:`score_on_field`)."""
    return score_on_field(
        object_slices,
        truth,
        tuple(geometry.origin_px),
        geometry.field_of_view(margin_px),
        **options,
    )


def score_on_field(
    object_slices: np.ndarray,
    truth: GroundTruth,
    origin_px: tuple[float, float],
    field_of_view: tuple[slice, slice],
    **options,
) -> Score:
    """Scores of a reconstruction (S, H, W) complex against the ground truth, whose
    cell origin lies at object pixel ``origin_px``, over ``field_of_view``: the
    projected potential (the sum of the slices of :func:`potential_on_fov`) as
    :func:`score_projected_potential` (``options`` go there); the depth profile, each
    slice scored with the projection's shift; and, for a ground truth with dopants and
    a multislice reconstruction, their depth localisation with that shift (slices taken
    as equal shares of the ground truth's thickness)."""
    fov, origin = field_of_view, tuple(origin_px)
    slices = potential_on_fov(object_slices, truth.sigma_per_V_A, fov)
    period = 2 * np.pi / truth.sigma_per_V_A
    projection = np.zeros(np.shape(object_slices)[-2:])  # on the object grid: only its FOV counts
    projection[fov] = slices.sum(axis=0)
    score = score_projected_potential(
        projection,
        truth.projected_V_A,
        origin,
        fov,
        sampling_A=truth.sampling_A,
        phase_period_V_A=period,
        **options,
    )
    if truth.dopants is not None and slices.shape[0] > 1:
        score = replace(score, **_dopant_scores(slices, truth, origin, fov, score.shift_px))
    if slices.shape[0] != truth.potential_V_A.shape[0]:
        return score
    placed = place_truth(truth.potential_V_A, np.shape(object_slices)[-2:], origin, fov)
    target = placed.gauge_free(placed.on_fov(score.shift_px)).reshape(slices.shape)
    depth = nrmse(nearest_representative(remove_gauge(slices), target, period), target)
    return replace(score, depth_nrmse=tuple(depth.tolist()))


def _dopant_scores(
    slices: np.ndarray,
    truth: GroundTruth,
    origin_px: tuple[float, float],
    field_of_view: tuple[slice, slice],
    shift_px: tuple[float, float],
) -> dict:
    """The depth-localisation fields of :class:`Score` for potentials (S, h, w) [V·Å]
    over ``field_of_view``, each slice gauge-free, the truth's cell placed at
    ``origin_px`` + ``shift_px``."""
    rows, cols = field_of_view
    height, width = slices.shape[-2:]
    cell_A = truth.sampling_A * np.asarray(truth.potential_V_A.shape[-2:], dtype=np.float64)
    found = localise_dopants(
        remove_gauge(slices),
        truth.dopants,
        (float(cell_A[0]), float(cell_A[1])),
        truth.slice_thickness_A * truth.potential_V_A.shape[0] / slices.shape[0],
        truth.sampling_A,
        (origin_px[0] - rows.start, origin_px[1] - cols.start),
        (slice(0, height), slice(0, width)),
        shift_px,
    )
    return dict(
        depth_error_rms_A=found.depth_error_rms_A,
        depth_error_max_A=found.depth_error_max_A,
        depth_fwhm_mean_A=found.depth_fwhm_mean_A,
        dopant_depth_A=tuple(d.depth_A for d in found.dopants),
        dopant_fwhm_A=tuple(d.fwhm_A for d in found.dopants),
    )
