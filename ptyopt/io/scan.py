"""Probe positions (y, x) [Å] of an imported scan, in the specimen frame: the frame of
the detector's axes, in which ptyopt builds the object (DESIGN §4).

A scan position p = (p_y, p_x) in the scan's own frame (for a raster, pattern (i, j),
row-major, lies at p = (i·step_y, j·step_x)) lands at

    r = origin + R(θ)·p,   r_y = origin_y + cos θ·p_y + sin θ·p_x,
                           r_x = origin_x − sin θ·p_y + cos θ·p_x,

θ = ``scan_rotation_deg``: the angle of the scan's fast axis (j) from the detector's x
axis, positive from +x towards +y (counter-clockwise with y up; clockwise as an image
with row 0 at the top is shown). The slow axis turns with it (a rotation, never a
mirror: a mirrored scan is a mirrored detector, ``flip_detector``).
"""

from __future__ import annotations

import numpy as np

from ptyopt.scan import rotate_yx


def raster_A(shape: tuple[int, int], step_A: tuple[float, float]) -> np.ndarray:
    """(ny·nx, 2) positions (i·step_y, j·step_x) [Å] of a raster, row-major."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.stack([i.ravel() * step_A[0], j.ravel() * step_A[1]], axis=-1).astype(np.float64)


def specimen_positions_A(
    scan_A: np.ndarray, rotation_deg: float, origin_A: tuple[float, float]
) -> np.ndarray:
    """Scan-frame positions (n, 2) (y, x) [Å] rotated by θ and moved to ``origin_A``."""
    return np.asarray(origin_A, np.float64) + rotate_yx(scan_A, rotation_deg)
