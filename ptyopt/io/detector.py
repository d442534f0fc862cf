"""Detector preprocessing at import: orientation, the bright-field disc's centre, a
centred square crop and binning, with the zero frequency tracked exactly.

Pixel coordinates are (y, x) with pixel j's centre at coordinate j. Steps, in order:
1. orientation: ``transpose_detector`` swaps k_y and k_x; then ``flip_detector``
   reverses the rows (k_y → −k_y, an up–down mirror). The two generate all eight
   orientations of a square detector (a 90° turn is a transpose then a flip);
2. crop to N×N pixels starting at the integer corner that puts the pattern centre
   nearest to pixel N/2;
3. bin by b: binned pixel j covers pixels [b·j, b·j + b), so a coordinate c becomes
   (c − (b − 1)/2)/b (N·b/2 → N/2 − (b − 1)/(2b), as :func:`ptyopt.data.simulate.pattern_centre`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class BrightFieldDisc:
    """The bright-field disc of a mean pattern: centre (y, x) [px], radius [px] (from its
    area), in the pixels of the pattern it was found on."""

    centre_px: tuple[float, float]
    radius_px: float


def oriented(
    patterns: np.ndarray, transpose: bool, flip: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """Patterns (…, k_y, k_x) transposed and/or row-flipped (see the module docstring)."""
    if transpose:
        patterns = np.swapaxes(patterns, -2, -1)
    if flip:
        patterns = patterns[..., ::-1, :]
    return patterns, (int(patterns.shape[-2]), int(patterns.shape[-1]))


def oriented_point(
    point: tuple[float, float], shape: tuple[int, int], transpose: bool, flip: bool
) -> tuple[float, float]:
    """Coordinates (y, x) of a point on a detector of ``shape`` (before orientation)
    after the orientation of :func:`oriented`."""
    y, x = point
    if transpose:
        y, x = x, y
        shape = (shape[1], shape[0])
    if flip:
        y = shape[0] - 1 - y
    return (float(y), float(x))


def bright_field_disc(mean_pattern: np.ndarray) -> BrightFieldDisc:
    """Centre of mass of the thresholded bright-field disc of a mean pattern (k_y, k_x).

    The level is the maximum after a 3×3 median filter (isolated hot pixels ignored);
    the disc is the largest connected region above half of it; its centre is the
    centre of mass of the soft threshold clip((I − 0.25·level)/(0.5·level), 0, 1) over
    that region grown by 2 pixels, which weighs edge pixels by how far they lie
    inside the disc (sub-pixel: 0.01–0.02 px on a radius-10 px disc)."""
    image = np.asarray(mean_pattern, np.float64)
    level = float(ndimage.median_filter(image, size=3).max())
    if not level > 0:
        raise ValueError("the mean pattern has no bright-field disc (no positive counts)")
    labels, count = ndimage.label(image > 0.5 * level)
    sizes = ndimage.sum_labels(np.ones_like(image), labels, index=np.arange(1, count + 1))
    disc = labels == 1 + int(np.argmax(sizes))
    region = ndimage.binary_dilation(disc, iterations=2)
    weight = np.clip((image - 0.25 * level) / (0.5 * level), 0.0, 1.0) * region
    cy, cx = ndimage.center_of_mass(weight)
    return BrightFieldDisc((float(cy), float(cx)), float(np.sqrt(weight.sum() / np.pi)))


def crop_corner(centre: float, size: int, crop: int) -> int | None:
    """First pixel of a ``crop``-pixel window that puts ``centre`` nearest to pixel
    crop/2, or ``None`` if that window leaves the ``size`` pixels."""
    start = int(np.floor(centre - crop / 2 + 0.5))
    return start if 0 <= start and start + crop <= size else None


def crop_and_bin(
    patterns: np.ndarray, corner: tuple[int, int], crop: int, bin_factor: int
) -> np.ndarray:
    """Patterns (…, k_y, k_x) cut to ``crop``² pixels from ``corner`` and summed over
    ``bin_factor``² blocks → (…, crop/b, crop/b) float32 (crop divisible by b)."""
    cut = patterns[..., corner[0] : corner[0] + crop, corner[1] : corner[1] + crop]
    n = crop // bin_factor
    blocks = np.asarray(cut, np.float32).reshape(*cut.shape[:-2], n, bin_factor, n, bin_factor)
    return blocks.sum(axis=(-3, -1), dtype=np.float32)


def centre_after(
    centre: tuple[float, float], corner: tuple[int, int], bin_factor: int
) -> tuple[float, float]:
    """Pattern centre (y, x) [px] after cropping at ``corner`` and binning by b."""
    shift = (bin_factor - 1) / 2
    return (
        (centre[0] - corner[0] - shift) / bin_factor,
        (centre[1] - corner[1] - shift) / bin_factor,
    )
