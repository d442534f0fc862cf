"""Putting the periodic ground truth where the reconstruction is (DESIGN §12): its
placement on the object grid, the removal of the gauge, the registration shift and
the representative of a phase nearest the truth.

A ground-truth cell (…, ny, nx) [V·Å] is periodic; placed at ``origin_px`` (y, x) [px]
on a grid of ``shape`` (H, W), grid pixel j shows cell pixel j − origin
(:func:`tile_periodic`). A field of view (FOV) is a pair of slices of that grid, (h, w)
pixels. A registration shift s (y, x) [px] is added to the origin.

- Gauge (:func:`remove_gauge`): the constant offset and linear ramp that a
  reconstruction cannot fix, removed from both images by least squares over the FOV.
- Registration (:func:`registration_shift_px`): the shift s of the *periodic* ground
  truth that minimises the scored error up to a gain, min_c ‖r − c·G·t_s‖² (G removes
  the gauge; the gain is fitted only here, so that a reconstruction of the wrong
  contrast is not moved to where the truth has least energy in the FOV), over the disc
  |s| ≤ ``max_shift_px`` — every integer shift at once by FFTs on the cell grid (never
  the global correlation peak: a crystal correlates at every lattice vector), then
  Gauss–Newton on the exact Fourier-shifted cell to < 1e-6 px. An optimum on the bound
  is flagged, never dropped: a shift just past the bound scores as the matching small
  misregistration.
- Nearest representative (:func:`nearest_representative`): a phase is defined modulo
  2π per pixel, so each pixel of a potential is taken at its representative modulo
  2π/σ nearest the registered truth (a no-op unless a pixel differs from it by more
  than π/σ; spatial unwrapping cannot follow columns whose phase changes by more than
  π per pixel).

Everything that depends only on (truth, grid, FOV) — the cell's spectrum, the FOV's
gauge basis, the shift-dependent terms of the registration error — is cached
(:func:`place_truth`), so a registration costs a few milliseconds. Pure numpy.
"""

from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np
from scipy.optimize import brentq


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


class PlacedTruth:
    """A periodic cell (…, ny, nx) [V·Å] placed at ``origin`` (y, x) [px] on a grid,
    seen through a FOV (h, w) given as pixel bounds (y0, y1, x0, x1). FOV pixel p
    shows cell pixel (rows[p_y], cols[p_x]) of the cell moved to the origin, so for
    an integer shift s, ⟨A, t_s⟩ over the FOV is the circular correlation of A folded
    onto the cell grid with that cell. For a single cell (ny, nx), computed when first
    asked: ``placed_conj`` (ny, nx), the conjugate spectrum of the cell moved to the
    origin; ``gauge_free_energy`` (ny, nx), ‖G·t_s‖² for every integer shift s (index
    s mod n), G the removal of the gauge plane. Make one with :func:`place_truth`."""

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


def place_truth(
    cell: np.ndarray,
    shape: tuple[int, int],
    origin_px: tuple[float, float],
    fov: tuple[slice, slice],
) -> PlacedTruth:
    """The :class:`PlacedTruth` of a cell (…, ny, nx) [V·Å] placed at ``origin_px``
    (y, x) [px] on a grid of ``shape``, seen through ``fov``; the last 16 placements
    are cached (keyed on the cell's values)."""
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
) -> PlacedTruth:
    cell = np.frombuffer(cell_bytes, dtype=np.float64).reshape(cell_shape)
    return PlacedTruth(cell, origin, fov)


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
    placed = place_truth(truth_cell, shape, origin_px, field_of_view)
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
    r: np.ndarray, placed: PlacedTruth, shift: np.ndarray, period: float
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
    placed: PlacedTruth,
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
