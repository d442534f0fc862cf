"""How well a multislice potential localises substitutional dopants in depth.

A heavy dopant in a crystal column shows in a per-slice potential as an excess of
potential in that column at its depth. For each dopant of the ground truth's
:class:`~ptyopt.data.dataset.DopantTable`:

1. **Column depth profile** (S,) [V·Å]: per slice, the mean potential in a Gaussian-
   weighted disc around the column (σ = ``column_sigma_A``, cut at 3σ, centred at the
   column's sub-pixel position), averaged over the column's periodic images (the
   ground truth is periodic with its cell) whose whole disc lies inside the field of
   view.
2. **Excess over the host**: the profile minus the mean profile of the equivalent
   undoped columns, the column translated by whole host periods, inside the field of
   view. Subtracting them removes the host column's own depth profile: where the
   slicing is not commensurate with the crystal's period along the beam, a slice holds
   one or two host atoms of a column. It also removes each slice's constant offset
   (the phase gauge) and any depth artefact a reconstruction puts into every column
   alike, such as potential piled into the first and last slices. The median over
   slices would remove only the host level, and only for commensurate slicing.
3. **Depth and FWHM**: the two half-maximum crossings of the excess around its
   maximum, linearly interpolated between slice centres (a virtual empty slice on
   either side of the slab: a dopant cannot lie outside it). The depth is their
   midpoint and the FWHM their distance.

Slicing limit: the infinite projection puts a point-like dopant's whole excess into
the slice that holds it, so the ground truth reads depth = that slice's centre and
FWHM = Δz (the floor). The error on the truth is the atom's offset from its slice centre,
at most Δz/2; a dopant placed at a slice centre reads 0. An excess that straddles two
slices reads FWHM up to 2Δz. For a Gaussian excess (its slice integrals) of σ ≥ 0.5 Δz
the depth is recovered to 0.06 Δz wherever it lies in a slice; the FWHM reads high
by at most 15 % for σ ≥ Δz and 8 % for σ ≥ 1.5 Δz (linear interpolation, and the
slice's own width added in quadrature), tests/test_depth.py.

Geometry (as :class:`ptyopt.initial.Geometry` and :mod:`ptyopt.registration`): pixel j
of the potential lies at cell coordinate (j − origin_px − shift_px)·dx. ``shift_px`` is
the registration shift that :func:`ptyopt.registration.registration_shift_px` returns
(added to the ground truth's origin). Depth is measured from the entrance surface, the
top of slice 0. A linear ramp across a slice does not cancel exactly (the references
lie a host period away): score a reconstruction after
:func:`ptyopt.registration.remove_gauge` on the field of view. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptyopt.data.dataset import DopantSite, DopantTable


@dataclass(frozen=True)
class DopantDepth:
    """One dopant's depth localisation. element, host: the dopant and the host it
    replaces. true_depth_A, depth_A: its true and recovered depth below the entrance
    surface [Å]; error_A = depth_A − true_depth_A. fwhm_A: FWHM of the excess [Å].
    peak_excess_V_A: the maximum excess [V·Å]. n_images, n_references: the column's
    images and the equivalent undoped columns averaged. excess_V_A: (S,) excess per
    slice [V·Å]. Depth, error and FWHM are NaN where the excess is nowhere positive."""

    element: str
    host: str
    true_depth_A: float
    depth_A: float
    error_A: float
    fwhm_A: float
    peak_excess_V_A: float
    n_images: int
    n_references: int
    excess_V_A: tuple[float, ...]


@dataclass(frozen=True)
class DepthScore:
    """Depth localisation of every dopant, and summaries over dopants [Å]: rms and
    largest |error| of the depth, mean FWHM (NaN if any dopant is not localised)."""

    dopants: tuple[DopantDepth, ...]
    depth_error_rms_A: float
    depth_error_max_A: float
    depth_fwhm_mean_A: float


def half_maximum_depth(excess: np.ndarray, slice_thickness_A: float) -> tuple[float, float]:
    """(depth, FWHM) [Å] of a profile (S,) sampled at slice centres (i + ½)·Δz: the
    midpoint and distance of the half-maximum crossings around the maximum, linearly
    interpolated, with 0 in a virtual slice beyond each surface. (NaN, NaN) if the
    profile is nowhere positive."""
    values = np.concatenate([[0.0], np.asarray(excess, dtype=np.float64), [0.0]])
    centres = (np.arange(-1, len(values) - 1) + 0.5) * slice_thickness_A
    peak = int(np.argmax(values))
    half = values[peak] / 2
    if half <= 0:
        return float("nan"), float("nan")
    left = peak
    while values[left - 1] > half:
        left -= 1
    right = peak
    while values[right + 1] > half:
        right += 1
    step = slice_thickness_A
    z_left = (
        centres[left - 1] + (half - values[left - 1]) / (values[left] - values[left - 1]) * step
    )
    z_right = centres[right] + (values[right] - half) / (values[right] - values[right + 1]) * step
    return float((z_left + z_right) / 2), float(z_right - z_left)


def column_profile(
    potential_V_A: np.ndarray, centres_px: np.ndarray, sigma_px: float
) -> np.ndarray:
    """Mean over the columns at ``centres_px`` (n, 2) (y, x) [px] of the Gaussian-
    weighted (σ = ``sigma_px``, cut at 3σ) mean of each slice of ``potential_V_A``
    (S, H, W) around the column: (S,) [V·Å]. Every disc must lie inside the array."""
    reach = 3 * sigma_px
    profiles = []
    for cy, cx in centres_px:
        ys = np.arange(int(np.ceil(cy - reach)), int(np.floor(cy + reach)) + 1)
        xs = np.arange(int(np.ceil(cx - reach)), int(np.floor(cx + reach)) + 1)
        r2 = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2
        weights = np.where(r2 <= reach**2, np.exp(-r2 / (2 * sigma_px**2)), 0.0)
        window = potential_V_A[:, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        profiles.append(np.einsum("syx,yx->s", window, weights / weights.sum()))
    return np.mean(profiles, axis=0)


def _lattice_in_view(
    site_A: np.ndarray,
    period_A: np.ndarray,
    origin_px: np.ndarray,
    pixel_size_A: float,
    bounds_px: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The translates site + (m, n)·period whose pixel position (origin + cell
    coordinate / dx) lies within ``bounds_px`` ((lo_y, lo_x), (hi_y, hi_x)), as cell
    coordinates [Å] (k, 2) and pixel positions (k, 2)."""
    lo = np.ceil(((bounds_px[0] - origin_px) * pixel_size_A - site_A) / period_A - 1e-9)
    hi = np.floor(((bounds_px[1] - origin_px) * pixel_size_A - site_A) / period_A + 1e-9)
    m, n = (np.arange(a, b + 1) for a, b in zip(lo.astype(int), hi.astype(int), strict=True))
    steps = np.stack(np.meshgrid(m, n, indexing="ij"), axis=-1).reshape(-1, 2)
    cell = site_A + steps * period_A
    return cell, origin_px + cell / pixel_size_A


def _periodic_distance_A(points_A: np.ndarray, site: DopantSite, cell_A: np.ndarray) -> np.ndarray:
    """Distances [Å] (k,) from cell coordinates (k, 2) to ``site`` in the periodic cell."""
    delta = (points_A - np.array([site.y_A, site.x_A]) + cell_A / 2) % cell_A - cell_A / 2
    return np.hypot(delta[:, 0], delta[:, 1])


def localise_dopants(
    potential_V_A: np.ndarray,
    dopants: DopantTable,
    cell_A: tuple[float, float],
    slice_thickness_A: float,
    pixel_size_A: float,
    origin_px: tuple[float, float],
    field_of_view: tuple[slice, slice],
    shift_px: tuple[float, float] = (0.0, 0.0),
    column_sigma_A: float = 0.3,
) -> DepthScore:
    """Depth localisation (module docstring) of ``dopants`` in ``potential_V_A``
    (S, H, W) [V·Å], slices of ``slice_thickness_A`` [Å] from the entrance surface and
    pixels of ``pixel_size_A`` [Å]; the periodic ground-truth cell, of (y, x) edges
    ``cell_A`` [Å], has its origin at pixel ``origin_px`` + ``shift_px``. Only columns
    whose whole disc (3·``column_sigma_A``) lies inside ``field_of_view`` (a pair of
    slices) are used; a dopant without an image or an equivalent undoped column there
    raises ValueError."""
    potential = np.asarray(potential_V_A, dtype=np.float64)
    _, height, width = potential.shape
    rows = range(*field_of_view[0].indices(height))
    cols = range(*field_of_view[1].indices(width))
    sigma_px = column_sigma_A / pixel_size_A
    reach = 3 * sigma_px
    bounds = np.array(
        [[rows.start + reach, cols.start + reach], [rows[-1] - reach, cols[-1] - reach]]
    )
    origin = np.asarray(origin_px, dtype=np.float64) + np.asarray(shift_px, dtype=np.float64)
    period = np.asarray(dopants.host_period_A, dtype=np.float64)
    cell = np.asarray(cell_A, dtype=np.float64)
    tolerance = 0.25 * period.min()
    results = []
    for index, site in enumerate(dopants.sites):
        cell_yx, pixels = _lattice_in_view(
            np.array([site.y_A, site.x_A]), period, origin, pixel_size_A, bounds
        )
        near = np.stack([_periodic_distance_A(cell_yx, s, cell) < tolerance for s in dopants.sites])
        own, doped = near[index], near.any(axis=0)
        if not own.any() or doped.all():
            raise ValueError(
                f"dopant {index} ({site.element} at y, x = {site.y_A:.2f}, {site.x_A:.2f} Å) "
                f"has {int(own.sum())} images and {int((~doped).sum())} equivalent undoped "
                "columns inside the field of view; it needs at least one of each"
            )
        excess = column_profile(potential, pixels[own], sigma_px) - column_profile(
            potential, pixels[~doped], sigma_px
        )
        depth, fwhm = half_maximum_depth(excess, slice_thickness_A)
        results.append(
            DopantDepth(
                element=site.element,
                host=site.host,
                true_depth_A=site.depth_A,
                depth_A=depth,
                error_A=depth - site.depth_A,
                fwhm_A=fwhm,
                peak_excess_V_A=float(excess.max()),
                n_images=int(own.sum()),
                n_references=int((~doped).sum()),
                excess_V_A=tuple(excess.tolist()),
            )
        )
    errors = np.array([r.error_A for r in results])
    return DepthScore(
        dopants=tuple(results),
        depth_error_rms_A=float(np.sqrt(np.mean(errors**2))),
        depth_error_max_A=float(np.max(np.abs(errors))),
        depth_fwhm_mean_A=float(np.mean([r.fwhm_A for r in results])),
    )
