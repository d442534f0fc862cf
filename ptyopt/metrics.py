"""Scores of a reconstruction against the ground-truth potential (DESIGN §12).

Recipe: phase → potential via σ per slice; crop to the scanned field of view (FOV);
remove the gauge freedoms (constant offset and linear ramp) from both images; register
by sub-pixel cross-correlation within a bounded shift, moving the *periodic* ground
truth by an exact Fourier shift (the reconstruction is never interpolated); then score
the registered pair:

- ``nrmse`` ‖r − t‖/‖t‖, the primary score. No gain is fitted: a gain rewards blur and
  the phase scale is physical. ``gain`` and ``nrmse_gain_fitted`` are diagnostics.
- ``ssim`` with the data range of the ground truth and a Gaussian window fixed in Å.
- the FRC curve and its resolution at a stated threshold, with rings at least as wide
  as the crystal's reciprocal-lattice spacing. The FRC cannot see a pure low-pass blur
  (a smooth radial filter scales a whole ring, and a correlation ignores scale): never
  report it alone.

Multislice: the summed potential is scored, and each slice against its ground-truth
slice with the same registration shift (the depth profile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from skimage.metrics import structural_similarity
from skimage.registration import phase_cross_correlation

from ptyopt.data.dataset import GroundTruth
from ptyopt.initial import Geometry


def object_potential_V_A(object_slices: np.ndarray, sigma_per_V_A: float) -> np.ndarray:
    """Projected potential per slice (S, H, W) [V·Å] = phase / σ of a complex object."""
    return np.angle(np.asarray(object_slices)) / sigma_per_V_A


def tile_periodic(
    cell: np.ndarray, shape: tuple[int, int], origin_px: tuple[float, float]
) -> np.ndarray:
    """Periodic image ``cell`` (…, n, n) sampled on a grid of ``shape`` whose pixel j
    lies at cell pixel j − origin; fractional origins use an exact Fourier shift."""
    ny, nx = cell.shape[-2:]
    fy, fx = np.fft.fftfreq(ny), np.fft.fftfreq(nx)
    ramp = np.exp(-2j * np.pi * (origin_px[0] % ny * fy[:, None] + origin_px[1] % nx * fx[None, :]))
    shifted = np.real(np.fft.ifft2(np.fft.fft2(cell) * ramp))
    reps = (-(-shape[0] // ny), -(-shape[1] // nx))
    tiled = np.tile(shifted, (1,) * (cell.ndim - 2) + reps)
    return tiled[..., : shape[0], : shape[1]]


def remove_gauge(image: np.ndarray) -> np.ndarray:
    """``image`` (…, h, w) minus its least-squares plane a + b·y + c·x (one plane per
    leading index): the constant offset and linear ramp a reconstruction cannot fix."""
    h, w = image.shape[-2:]
    y, x = np.mgrid[:h, :w]
    basis = np.stack([np.ones(h * w), y.ravel() - (h - 1) / 2, x.ravel() - (w - 1) / 2], axis=1)
    flat = np.asarray(image, dtype=np.float64).reshape(-1, h * w).T
    residual = flat - basis @ np.linalg.lstsq(basis, flat, rcond=None)[0]
    return residual.T.reshape(image.shape)


def truth_on_fov(
    cell: np.ndarray,
    shape: tuple[int, int],
    origin_px: tuple[float, float],
    fov: tuple[slice, slice],
) -> np.ndarray:
    """Gauge-free ground truth (…, h, w) over the FOV ``fov`` of a grid of ``shape``,
    the periodic ``cell`` (…, n, n) placed at ``origin_px`` (see :func:`tile_periodic`)."""
    return remove_gauge(tile_periodic(cell, shape, origin_px)[..., fov[0], fov[1]])


def registration_shift_px(recon: np.ndarray, target: np.ndarray, max_shift_px: float) -> np.ndarray:
    """Shift (y, x) [px] to add to the ground truth's origin so that ``target`` (h, w)
    matches ``recon`` (h, w), to 1/20 px; zero if the cross-correlation peak lies beyond
    ``max_shift_px`` (a crystal correlates at every lattice vector; 0 disables)."""
    if np.ptp(recon) == 0:  # a flat image has nothing to register
        return np.zeros(2)
    found = np.asarray(
        phase_cross_correlation(target, recon, upsample_factor=20, normalization=None)[0],
        dtype=float,
    )
    return -found if np.hypot(*found) <= max_shift_px else np.zeros(2)


def reciprocal_spacing_per_A(
    cell: np.ndarray, sampling_A: float, power_fraction: float = 0.9
) -> float:
    """Reciprocal-lattice spacing [1/Å] of a periodic ``cell`` (…, ny, nx), the coarser
    of the two axes. A supercell of p repeats along an axis puts its spectral power on
    multiples of p there: the largest p holding ``power_fraction`` of the non-constant
    power gives the spacing p/(n·dx) (a thermal mean keeps ~97 % there, not 100 %)."""
    power = (np.abs(np.fft.fft2(cell)) ** 2).reshape(-1, *cell.shape[-2:]).sum(axis=0)
    power[0, 0] = 0.0
    spacings = []
    for axis, n in enumerate(cell.shape[-2:]):
        marginal, index = power.sum(axis=1 - axis), np.fft.fftfreq(n, 1.0 / n).round().astype(int)
        repeats = [
            p
            for p in range(1, n // 2 + 1)
            if marginal[index % p == 0].sum() >= power_fraction * marginal.sum()
        ]
        spacings.append(max(repeats, default=1) / (n * sampling_A))
    return max(spacings)


def frc(
    a: np.ndarray, b: np.ndarray, sampling_A: float, ring_width_per_A: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images (h, w) with pixel ``sampling_A`` [Å],
    each apodised by a Hann window. Ring i holds the frequencies |k| nearest to i·Δk,
    up to Nyquist 1/(2·dx); Δk = ``ring_width_per_A`` [1/Å] (for a crystal at least its
    reciprocal-lattice spacing), never below 2 Fourier pixels of the image (the window's
    resolution), which is also the default. Returns (frequency (R,) [1/Å], FRC (R,))."""
    h, w = a.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    fa, fb = np.fft.fft2(a * window), np.fft.fft2(b * window)
    k = np.hypot(
        *np.meshgrid(np.fft.fftfreq(h, sampling_A), np.fft.fftfreq(w, sampling_A), indexing="ij")
    )
    width = max(ring_width_per_A or 0.0, 2.0 / (min(h, w) * sampling_A))
    rings = int(0.5 / sampling_A / width) + 1
    ring = np.rint(k / width).astype(int).ravel()

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, values.ravel(), minlength=rings)[:rings]

    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = ring_sum(np.real(fa * np.conj(fb))) / np.sqrt(
            ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2)
        )
    return width * np.arange(rings), correlation


def frc_resolution_A(
    frequency_per_A: np.ndarray, correlation: np.ndarray, threshold: float = 0.5
) -> float:
    """Resolution [Å] = 1/k where the FRC first falls below ``threshold`` (linear
    between rings; an empty ring counts as below). inf if the first ring is already
    below; 1/(finest ring) — a bound — if it never falls below."""
    below = np.flatnonzero(~(correlation >= threshold))
    if below.size == 0:
        return float(1.0 / frequency_per_A[-1])
    i = below[0]
    if i == 0:
        return float("inf")
    drop = correlation[i - 1] - np.nan_to_num(correlation[i], nan=0.0)
    crossing = frequency_per_A[i - 1] + (correlation[i - 1] - threshold) / drop * (
        frequency_per_A[i] - frequency_per_A[i - 1]
    )
    return float(1.0 / crossing)


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
    """‖r − t‖/‖t‖ over the last two axes of gauge-free images (…, h, w) → (…)."""
    return np.linalg.norm(recon - target, axis=(-2, -1)) / np.linalg.norm(target, axis=(-2, -1))


@dataclass(frozen=True)
class Score:
    """Scores of a registered, gauge-free reconstruction r against the ground truth t.

    nrmse: ‖r − t‖/‖t‖ (0 is perfect, 1 is a flat image); the primary score.
    shift_px: registration shift (y, x) applied to the ground truth [px].
    mse: mean (r − t)² [(V·Å)²].
    gain: least-squares gain ⟨r, t⟩/‖t‖² of r relative to t (diagnostic).
    nrmse_gain_fitted: min over a scale c of ‖c·r − t‖/‖t‖ (diagnostic; rewards blur).
    ssim: structural similarity (1 is perfect).
    frc_frequency_per_A, frc: FRC curve, ring frequency [1/Å] and correlation.
    frc_threshold, frc_resolution_A: resolution [Å] where the FRC falls below the
    threshold (see :func:`frc_resolution_A`).
    depth_nrmse: NRMSE of each slice against its ground-truth slice (S,); empty when
    the slice counts differ or only a projection was scored.
    """

    nrmse: float
    shift_px: tuple[float, float]
    mse: float = float("nan")
    gain: float = float("nan")
    nrmse_gain_fitted: float = float("nan")
    ssim: float = float("nan")
    frc_frequency_per_A: tuple[float, ...] = ()
    frc: tuple[float, ...] = ()
    frc_threshold: float = 0.5
    frc_resolution_A: float = float("nan")
    depth_nrmse: tuple[float, ...] = ()

    def scalars(self) -> dict[str, float]:
        """The single-number scores by name (for ``metrics.json``)."""
        return {name: float(value) for name, value in asdict(self).items() if np.isscalar(value)}


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
) -> Score:
    """Scores of a projected potential (H, W) [V·Å] against the periodic ground-truth
    cell (n, n) [V·Å] placed at ``origin_px`` on the same grid, within
    ``field_of_view``, after gauge removal and registration within ``max_shift_px``
    (0: none). ``sampling_A``: pixel size [Å] (the default 1 leaves SSIM's σ and the
    FRC in pixel units). FRC rings default to the cell's reciprocal-lattice spacing."""
    recon = remove_gauge(potential[field_of_view])
    shift = registration_shift_px(
        recon, truth_on_fov(truth_cell, potential.shape, origin_px, field_of_view), max_shift_px
    )
    target = truth_on_fov(truth_cell, potential.shape, np.add(origin_px, shift), field_of_view)
    width = (
        reciprocal_spacing_per_A(truth_cell, sampling_A)
        if ring_width_per_A is None
        else ring_width_per_A
    )
    scores = compare(recon, target, sampling_A, ssim_sigma_A, width, frc_threshold)
    return Score(shift_px=(float(shift[0]), float(shift[1])), **scores)


def score_object(
    object_slices: np.ndarray, truth: GroundTruth, geometry: Geometry, margin_px: int = 2, **options
) -> Score:
    """Scores of a reconstruction (S, H, W) complex against the ground truth over the
    scanned FOV shrunk by ``margin_px``: the projected potential (phase summed over
    slices, / σ) as :func:`score_projected_potential` (``options`` go there), plus the
    depth profile, each slice scored with the projection's registration shift."""
    slices = object_potential_V_A(object_slices, truth.sigma_per_V_A)
    fov, origin = geometry.field_of_view(margin_px), tuple(geometry.origin_px)
    score = score_projected_potential(
        slices.sum(axis=0), truth.projected_V_A, origin, fov, sampling_A=truth.sampling_A, **options
    )
    if slices.shape[0] != truth.potential_V_A.shape[0]:
        return score
    target = truth_on_fov(
        truth.potential_V_A, slices.shape[-2:], np.add(origin, score.shift_px), fov
    )
    depth = nrmse(remove_gauge(slices[:, fov[0], fov[1]]), target)
    return replace(score, depth_nrmse=tuple(depth.tolist()))
