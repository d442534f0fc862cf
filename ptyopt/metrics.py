"""Scores of a reconstruction against the ground-truth potential (DESIGN §12).

Recipe (:func:`score_object`):

1. crop each slice to the scanned field of view (FOV), remove its global phase (the
   angle of its mean phasor over the FOV), take the phase and unwrap it where it
   jumps by more than π between neighbouring pixels (one slice of a thick specimen),
   then phase / σ → potential per slice (:func:`potential_on_fov`); the projection is
   the sum of the per-slice potentials, never the angle of a product;
2. remove the gauge freedoms (constant offset and linear ramp) from both images;
3. register: the shift s of the *periodic* ground truth that minimises the scored
   error up to a gain, min_c ‖r − c·G·t_s‖² (G removes the gauge; the gain is fitted
   only here, so that a reconstruction of the wrong contrast is not moved to where
   the truth has least energy in the FOV), over the disc |s| ≤ ``max_shift_px`` —
   every integer shift at once by FFTs on the cell grid (never the global
   correlation peak: a crystal correlates at every lattice vector), then
   Gauss–Newton on the exact Fourier-shifted cell to < 1e-6 px. An optimum on the
   bound is recorded (``registration_on_bound``), never dropped: a shift just past
   the bound scores as the matching small misregistration;
4. a phase is defined modulo 2π per pixel: each pixel of the projection (and of each
   slice) is taken at its representative nearest the registered truth (a no-op
   unless a pixel differs from it by more than π/σ; spatial unwrapping cannot follow
   columns whose phase changes by more than π per pixel);
5. score the registered pair:

- ``nrmse`` ‖r − t‖/‖t‖, the primary score. No gain is fitted: a gain rewards blur and
  the phase scale is physical. ``gain`` and ``nrmse_gain_fitted`` are diagnostics.
- ``ssim`` with the data range of the ground truth and a Gaussian window fixed in Å.
- the FRC curve, with rings at least as wide as the crystal's reciprocal-lattice
  spacing: the resolution where it falls below 0.5 and where it falls below the
  half-bit curve (from ring 1 on: ring 0 holds the gauge-emptied zero frequency), and
  ``frc_area``, its mean up to Nyquist. The FRC cannot see a pure
  low-pass blur (a smooth radial filter scales a whole ring, and a correlation ignores
  scale): it tells blur only where the blurred signal sinks below the noise. Never
  report it alone. The resolutions saturate at 2 pixels when the information limit
  lies beyond Nyquist (the ``fine`` dataset samples finer than the shipped ones).

Multislice: the summed potential is scored, and each slice against its ground-truth
slice with the same registration shift (the depth profile).

Everything that depends only on (truth, grid, FOV) — the cell's spectrum, the FOV's
gauge basis, the shift-dependent terms of the registration error — is cached, so a
score costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property, lru_cache

import numpy as np
from scipy.optimize import brentq
from skimage.metrics import structural_similarity
from skimage.restoration import unwrap_phase

from ptyopt.data.dataset import GroundTruth
from ptyopt.depth import localise_dopants
from ptyopt.initial import Geometry


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


def _shift_ramp(cell_shape: tuple[int, int], origin_px: tuple[float, float]) -> np.ndarray:
    """Fourier factor (ny, nx) that moves a periodic cell's origin to ``origin_px``."""
    ny, nx = cell_shape
    ramp_y = np.exp(-2j * np.pi * (origin_px[0] % ny) * np.fft.fftfreq(ny))
    ramp_x = np.exp(-2j * np.pi * (origin_px[1] % nx) * np.fft.fftfreq(nx))
    return ramp_y[:, None] * ramp_x[None, :]


def tile_periodic(
    cell: np.ndarray, shape: tuple[int, int], origin_px: tuple[float, float]
) -> np.ndarray:
    """Periodic image ``cell`` (…, n, n) sampled on a grid of ``shape`` whose pixel j
    lies at cell pixel j − origin; fractional origins use an exact Fourier shift."""
    ny, nx = cell.shape[-2:]
    shifted = np.real(np.fft.ifft2(np.fft.fft2(cell) * _shift_ramp((ny, nx), origin_px)))
    reps = (-(-shape[0] // ny), -(-shape[1] // nx))
    tiled = np.tile(shifted, (1,) * (cell.ndim - 2) + reps)
    return tiled[..., : shape[0], : shape[1]]


@lru_cache(maxsize=16)
def _gauge_basis(h: int, w: int) -> np.ndarray:
    """Orthonormal basis (h·w, 3) of the planes a + b·y + c·x on an (h, w) image."""
    y, x = np.mgrid[:h, :w]
    basis = np.stack([np.ones(h * w), y.ravel() - (h - 1) / 2, x.ravel() - (w - 1) / 2], axis=1)
    q = np.linalg.qr(basis)[0]
    q.setflags(write=False)
    return q


def remove_gauge(image: np.ndarray) -> np.ndarray:
    """``image`` (…, h, w) minus its least-squares plane a + b·y + c·x (one plane per
    leading index): the constant offset and linear ramp a reconstruction cannot fix."""
    h, w = image.shape[-2:]
    flat = np.asarray(image, dtype=np.float64).reshape(-1, h * w)
    return _without_planes(flat, _gauge_basis(h, w)).reshape(image.shape)


def _without_planes(flat: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Images (…, h·w) minus their projections on the orthonormal ``basis`` (h·w, 3)."""
    return flat - (flat @ basis) @ basis.T


def truth_on_fov(
    cell: np.ndarray,
    shape: tuple[int, int],
    origin_px: tuple[float, float],
    fov: tuple[slice, slice],
) -> np.ndarray:
    """Gauge-free ground truth (…, h, w) over the FOV ``fov`` of a grid of ``shape``,
    the periodic ``cell`` (…, n, n) placed at ``origin_px`` (see :func:`tile_periodic`)."""
    return remove_gauge(tile_periodic(cell, shape, origin_px)[..., fov[0], fov[1]])


class _PlacedTruth:
    """A periodic cell (…, ny, nx) [V·Å] placed at ``origin`` (y, x) [px] on a grid,
    seen through a FOV (h, w) given as pixel bounds (y0, y1, x0, x1). FOV pixel p
    shows cell pixel (rows[p_y], cols[p_x]) of the cell moved to the origin, so for
    an integer shift s, ⟨A, t_s⟩ over the FOV is the circular correlation of A folded
    onto the cell grid with that cell. For a single cell (ny, nx), computed when first
    asked: ``gauge_free_energy`` (ny, nx), ‖G·t_s‖² for every integer shift s (index
    s mod n), G the removal of the gauge plane; ``lattice_spacing_per_px``,
    :func:`reciprocal_spacing_per_A` in pixel units."""

    def __init__(
        self, cell: np.ndarray, origin: tuple[float, float], fov: tuple[int, int, int, int]
    ) -> None:
        self.cell = cell
        self.cell_shape = ny, nx = cell.shape[-2:]
        self.origin = origin
        self.spectrum = np.fft.fft2(cell)
        self.rows, self.cols = np.arange(fov[0], fov[1]) % ny, np.arange(fov[2], fov[3]) % nx
        self.fold_index = (self.rows[:, None] * nx + self.cols[None, :]).ravel()
        self.basis = _gauge_basis(len(self.rows), len(self.cols))

    @cached_property
    def _placed(self) -> np.ndarray:
        return np.real(np.fft.ifft2(self.spectrum * _shift_ramp(self.cell_shape, self.origin)))

    @cached_property
    def placed_conj(self) -> np.ndarray:
        return np.conj(np.fft.fft2(self._placed))

    @cached_property
    def gauge_free_energy(self) -> np.ndarray:
        # ‖G t_s‖² = ‖t_s‖² − Σ_k ⟨q_k, t_s⟩², ‖t_s‖² the folded FOV correlated with t²
        ones = np.ones((1, self.fold_index.size))
        energy = np.real(
            np.fft.ifft2(np.fft.fft2(self.fold(ones)[0]) * np.conj(np.fft.fft2(self._placed**2)))
        )
        return energy - (self.correlate(self.basis.T) ** 2).sum(axis=0)

    @cached_property
    def lattice_spacing_per_px(self) -> float:
        return reciprocal_spacing_per_A(self.cell, 1.0)

    def fold(self, images: np.ndarray) -> np.ndarray:
        """FOV images (k, h·w) summed onto the cell grid → (k, ny, nx)."""
        size = self.cell_shape[0] * self.cell_shape[1]
        return np.stack(
            [np.bincount(self.fold_index, image, minlength=size) for image in images]
        ).reshape(-1, *self.cell_shape)

    def correlate(self, images: np.ndarray) -> np.ndarray:
        """⟨image, t_s⟩ for every integer shift s of FOV images (k, h·w) → (k, ny, nx)."""
        return np.real(np.fft.ifft2(np.fft.fft2(self.fold(images)) * self.placed_conj))

    def gauge_free(self, flat: np.ndarray) -> np.ndarray:
        """Images (…, h·w) minus their least-squares planes."""
        return _without_planes(flat, self.basis)

    def on_fov(self, shift_px: np.ndarray, derivatives: bool = False) -> np.ndarray:
        """The truth t_s over the FOV (S, h·w) (S = 1 for a single cell) with the origin
        moved by ``shift_px`` (y, x), exactly as :func:`tile_periodic`; for a single
        cell with ``derivatives``, also ∂t/∂s_y and ∂t/∂s_x (3, h·w)."""
        shifted = self.spectrum * _shift_ramp(self.cell_shape, np.add(self.origin, shift_px))
        if derivatives:
            fy = np.fft.fftfreq(self.cell_shape[0])[:, None]
            fx = np.fft.fftfreq(self.cell_shape[1])[None, :]
            shifted = np.stack([shifted, -2j * np.pi * fy * shifted, -2j * np.pi * fx * shifted])
        cells = np.real(np.fft.ifft2(shifted)).reshape(-1, *self.cell_shape)
        return cells[:, self.rows[:, None], self.cols[None, :]].reshape(len(cells), -1)


def _place_truth(
    cell: np.ndarray,
    shape: tuple[int, int],
    origin_px: tuple[float, float],
    fov: tuple[slice, slice],
) -> _PlacedTruth:
    """The (cached) :class:`_PlacedTruth` of a cell (…, ny, nx) on a grid of ``shape``."""
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    (y0, y1, _), (x0, x1, _) = (fov[i].indices(shape[i]) for i in range(2))
    return _cached_placement(
        cell.tobytes(),
        cell.shape,
        (float(origin_px[0]), float(origin_px[1])),
        (int(y0), int(y1), int(x0), int(x1)),
    )


@lru_cache(maxsize=16)
def _cached_placement(
    cell_bytes: bytes,
    cell_shape: tuple[int, ...],
    origin: tuple[float, float],
    fov: tuple[int, int, int, int],
) -> _PlacedTruth:
    cell = np.frombuffer(cell_bytes, dtype=np.float64).reshape(cell_shape)
    return _PlacedTruth(cell, origin, fov)


def registration_shift_px(
    recon: np.ndarray,
    truth_cell: np.ndarray,
    shape: tuple[int, int],
    origin_px: tuple[float, float],
    field_of_view: tuple[slice, slice],
    max_shift_px: float,
    period_V_A: float | None = None,
) -> tuple[np.ndarray, bool]:
    """Shift s (y, x) [px] to add to the ground truth's origin, and whether it lies on
    the bound |s| = ``max_shift_px`` (0 disables registration): over that disc, the
    minimiser of min_c≥0 ‖r − c·G·t_s‖² (the largest correlation of r with G·t_s), r =
    ``recon`` (h, w) over ``field_of_view`` of a grid of ``shape``, t_s the periodic
    ``truth_cell`` (ny, nx) placed at origin + s, G the removal of the gauge plane.

    The gain c is fitted here, not in the score: with c = 1 a reconstruction of the
    wrong contrast would be moved to wherever the truth has the least energy in the FOV.
    Every integer shift in the disc is evaluated at once (FFTs on the cell grid); the
    best is refined by Gauss–Newton on the exactly Fourier-shifted cell, each step the
    exact minimiser of the linearised error within the disc, until a step is below
    1e-6 px. ``period_V_A``: the period modulo which ``recon`` is defined per pixel
    (2π/σ for a phase): its pixels are taken at their representatives nearest the
    truth (see :func:`nearest_representative`) before each step and, if any moves at
    the best integer shift, when comparing the integer shifts."""
    if max_shift_px <= 0 or np.ptp(recon) == 0:  # disabled, or nothing to register
        return np.zeros(2), False
    placed = _place_truth(truth_cell, shape, origin_px, field_of_view)
    r = placed.gauge_free(np.asarray(recon, dtype=np.float64).reshape(1, -1))[0]
    ny, nx = placed.cell_shape
    with np.errstate(invalid="ignore", divide="ignore"):
        fit = placed.correlate(r[None])[0] / np.sqrt(placed.gauge_free_energy)
    reach = int(np.floor(max_shift_px))
    sy, sx = np.mgrid[-reach : reach + 1, -reach : reach + 1].reshape(2, -1)
    inside = np.hypot(sy, sx) <= max_shift_px
    candidates = np.stack([sy[inside], sx[inside]], axis=1)
    start = candidates[np.nanargmax(fit[candidates[:, 0] % ny, candidates[:, 1] % nx])]
    if period_V_A is not None and _error_nearest(r, placed, start, period_V_A)[1]:
        # pixels a period away (a column's phase unwrapped to the wrong turn) outweigh
        # the rest: compare the integer shifts after moving them
        errors = [_error_nearest(r, placed, s, period_V_A)[0] for s in candidates]
        start = candidates[np.argmin(errors)]
    shift = _refine_shift(r, placed, start.astype(float), max_shift_px, period_V_A)
    return shift, bool(np.hypot(*shift) >= max_shift_px * (1 - 1e-9))


def _fitted_error(r: np.ndarray, t: np.ndarray) -> float:
    """min_c≥0 ‖r − c·t‖² of images (h·w,)."""
    return float(r @ r - max(r @ t, 0.0) ** 2 / (t @ t))


def _error_nearest(
    r: np.ndarray, placed: _PlacedTruth, shift: np.ndarray, period: float
) -> tuple[float, bool]:
    """min_c≥0 ‖r′ − c·G·t_s‖² [(V·Å)²], r′ = r (h·w,) with its pixels moved to their
    representatives nearest G·t_s modulo ``period``, and whether any pixel moved."""
    fov_shape = (len(placed.rows), len(placed.cols))
    target = placed.gauge_free(placed.on_fov(shift))[0].reshape(fov_shape)
    image = r.reshape(fov_shape)
    moved = nearest_representative(image, target, period)
    return _fitted_error(moved.ravel(), target.ravel()), moved is not image


def _refine_shift(
    r: np.ndarray,
    placed: _PlacedTruth,
    shift: np.ndarray,
    bound: float,
    period_V_A: float | None,
    steps: int = 50,
) -> np.ndarray:
    """Gauss–Newton on min_c ‖r − c·G·t_s‖² (the gain projected out, Kaufman's
    Jacobian) from ``shift`` within |s| ≤ ``bound``, halving a step that raised the
    error, until a step is below 1e-6 px; r (h·w,) is moved to its representatives
    nearest G·t_s modulo ``period_V_A`` before each step. A start where r does not
    correlate positively with the truth is kept."""
    fov_shape = (len(placed.rows), len(placed.cols))
    previous, previous_error = shift, np.inf
    for _ in range(steps):
        t, *derivatives = placed.gauge_free(placed.on_fov(shift, derivatives=True))
        r = nearest_representative(r.reshape(fov_shape), t.reshape(fov_shape), period_V_A).ravel()
        gain = (r @ t) / (t @ t)
        if gain <= 0:
            return previous
        residual = r - gain * t
        error = residual @ residual
        if error > previous_error:
            shift = 0.5 * (previous + shift)
            if np.hypot(*(shift - previous)) < 1e-6:
                return previous
            continue
        previous, previous_error = shift, error
        d = np.stack(derivatives)  # ∂(G t_s)/∂s, (2, h·w)
        jacobian = gain * (d - np.outer(d @ t / (t @ t), t))
        step_to = _step_in_disc(shift, jacobian @ jacobian.T, jacobian @ residual, bound)
        if np.hypot(*(step_to - shift)) < 1e-6:
            return step_to
        shift = step_to
    return shift


def _step_in_disc(
    shift: np.ndarray, hessian: np.ndarray, gradient: np.ndarray, bound: float
) -> np.ndarray:
    """Minimiser x of the model (x − s)ᵀH(x − s) − 2gᵀ(x − s) over |x| ≤ ``bound``: the
    Gauss–Newton step, or on the circle the x with (H + λ)x = Hs + g, λ > 0."""
    unconstrained = shift + np.linalg.lstsq(hessian, gradient, rcond=None)[0]
    if np.hypot(*unconstrained) <= bound:
        return unconstrained
    eigenvalues, vectors = np.linalg.eigh(hessian)
    z = vectors.T @ (hessian @ shift + gradient)

    def excess(lam: float) -> float:
        return float(np.linalg.norm(z / (eigenvalues + lam)) - bound)

    low, high = 1e-12 * max(eigenvalues[-1], 1e-300), np.linalg.norm(z) / bound
    if not excess(low) > 0:  # a flat direction: fall back to the projection
        return unconstrained * bound / np.hypot(*unconstrained)
    lam = brentq(excess, low, high, xtol=1e-14 * high, rtol=1e-12)
    x = vectors @ (z / (eigenvalues + lam))
    return x * min(1.0, bound / np.hypot(*x))


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


@lru_cache(maxsize=16)
def frc_rings(
    shape: tuple[int, int], sampling_A: float, ring_width_per_A: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings of the FRC of (h, w) images with pixel ``sampling_A`` [Å]: ring i holds the
    frequencies |k| nearest to i·Δk up to Nyquist 1/(2·dx); Δk = ``ring_width_per_A``
    [1/Å], never below 2 Fourier pixels (the Hann window's resolution), also the
    default. Returns (frequency (R,) [1/Å], ring of each Fourier pixel (h·w,), with R
    for pixels beyond the last ring, pixels per ring (R,))."""
    h, w = shape
    k = np.hypot(
        *np.meshgrid(np.fft.fftfreq(h, sampling_A), np.fft.fftfreq(w, sampling_A), indexing="ij")
    )
    width = max(ring_width_per_A or 0.0, 2.0 / (min(h, w) * sampling_A))
    rings = int(0.5 / sampling_A / width) + 1
    ring = np.minimum(np.rint(k / width).astype(int).ravel(), rings)
    pixels = np.bincount(ring, minlength=rings + 1)[:rings]
    frequency = width * np.arange(rings)
    for array in (frequency, ring, pixels):
        array.setflags(write=False)
    return frequency, ring, pixels


def frc(
    a: np.ndarray, b: np.ndarray, sampling_A: float, ring_width_per_A: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images (h, w) with pixel ``sampling_A`` [Å],
    each apodised by a Hann window, on the rings of :func:`frc_rings`. Returns
    (frequency (R,) [1/Å], FRC (R,), NaN for an empty ring or one without power)."""
    h, w = a.shape
    frequency, ring, _ = frc_rings((h, w), float(sampling_A), ring_width_per_A)
    window = np.outer(np.hanning(h), np.hanning(w))
    fa, fb = np.fft.fft2(a * window).ravel(), np.fft.fft2(b * window).ravel()

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, values, minlength=len(frequency) + 1)[: len(frequency)]

    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = ring_sum(np.real(fa * np.conj(fb))) / np.sqrt(
            ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2)
        )
    return frequency, correlation


def halfbit_threshold(ring_pixels: np.ndarray) -> np.ndarray:
    """Half-bit threshold curve (van Heel & Schatz 2005) for rings of n pixels (R,):
    T = (0.2071 + 1.9102/√n)/(1.2071 + 0.9102/√n) (1 at n = 1, → 0.1716 for large n).

    It was derived for the FRC between two half-datasets with independent noise; ours
    correlates a reconstruction with the noise-free ground truth, whose FRC is about the
    square root of the half-dataset one where the noise is independent, so the crossing
    is a comparative figure (finer is better), not a claim of half a bit per pixel."""
    root = np.sqrt(np.asarray(ring_pixels, dtype=np.float64))
    return (0.2071 * root + 1.9102) / (1.2071 * root + 0.9102)


def frc_resolution_A(
    frequency_per_A: np.ndarray, correlation: np.ndarray, threshold: float | np.ndarray = 0.5
) -> float:
    """Resolution [Å] = 1/k where the FRC first falls below ``threshold`` (a number, or
    a curve (R,) per ring) from ring 1 on, linear between rings (an empty ring counts as
    0): ring 0 (|k| < Δk/2) holds the zero frequency, which the gauge removal empties
    and where a crystal has no lattice signal, so its noise does not decide. inf if
    ring 1 is already below; 1/(finest ring) — a bound — if the FRC never falls below."""
    margin = np.nan_to_num(correlation, nan=0.0) - np.broadcast_to(threshold, correlation.shape)
    below = np.flatnonzero(margin[1:] < 0) + 1
    if below.size == 0:
        return float(1.0 / frequency_per_A[-1])
    i = below[0]
    if i == 1:
        return float("inf")
    crossing = frequency_per_A[i - 1] + margin[i - 1] / (margin[i - 1] - margin[i]) * (
        frequency_per_A[i] - frequency_per_A[i - 1]
    )
    return float(1.0 / crossing)


def frc_area(frequency_per_A: np.ndarray, correlation: np.ndarray, sampling_A: float) -> float:
    """∫₀^{k_N} FRC dk / k_N, k_N = 1/(2·``sampling_A``) the Nyquist frequency [1/Å]:
    each ring's correlation held over the band of frequencies nearest to it (the last
    up to k_N), an empty ring counting 0. 1 for a perfect reconstruction, ~0 for noise."""
    nyquist = 0.5 / sampling_A
    width = frequency_per_A[1] - frequency_per_A[0] if len(frequency_per_A) > 1 else nyquist
    edges = np.clip(np.append(frequency_per_A - width / 2, nyquist), 0.0, nyquist)
    return float(np.nan_to_num(correlation, nan=0.0) @ np.diff(edges) / nyquist)


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
    threshold (see :func:`frc_resolution_A`).
    frc_halfbit, frc_halfbit_resolution_A: the half-bit threshold per ring
    (:func:`halfbit_threshold`) and the resolution [Å] where the FRC falls below it.
    frc_area: mean of the FRC up to Nyquist (:func:`frc_area`; 1 is perfect).
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


def nearest_representative(
    recon: np.ndarray, target: np.ndarray, period_V_A: float | None
) -> np.ndarray:
    """Gauge-free ``recon`` (…, h, w) [V·Å] with each pixel moved by a whole number of
    ``period_V_A`` (2π/σ: a phase is defined modulo 2π) to the value nearest the
    gauge-free ``target``, the gauge removed again (repeated while pixels move, at most
    4 times); ``recon`` itself when ``period_V_A`` is None or no pixel is off by half a
    period."""
    if period_V_A is None:
        return recon
    for _ in range(4):
        turns = np.rint((recon - target) / period_V_A)
        if not turns.any():
            break
        recon = remove_gauge(recon - turns * period_V_A)
    return recon


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
    (0: none; see :func:`registration_shift_px`). ``sampling_A``: pixel size [Å] (the
    default 1 leaves SSIM's σ and the FRC in pixel units). FRC rings default to the
    cell's reciprocal-lattice spacing. ``phase_period_V_A``: 2π/σ when the potential
    comes from phases, which fix it only modulo that period per pixel (see
    :func:`nearest_representative`, applied during registration and after it)."""
    recon = remove_gauge(np.asarray(potential)[field_of_view])
    shift, on_bound = registration_shift_px(
        recon, truth_cell, potential.shape, origin_px, field_of_view, max_shift_px, phase_period_V_A
    )
    placed = _place_truth(truth_cell, potential.shape, origin_px, field_of_view)
    target = placed.gauge_free(placed.on_fov(shift))[0].reshape(recon.shape)
    recon = nearest_representative(recon, target, phase_period_V_A)
    width = (
        placed.lattice_spacing_per_px / sampling_A if ring_width_per_A is None else ring_width_per_A
    )
    scores = compare(recon, target, sampling_A, ssim_sigma_A, width, frc_threshold)
    return Score(
        shift_px=(float(shift[0]), float(shift[1])), registration_on_bound=on_bound, **scores
    )


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
    placed = _place_truth(truth.potential_V_A, np.shape(object_slices)[-2:], origin, fov)
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
