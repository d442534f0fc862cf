"""Scan calibration: the rotation and step scale that take recorded probe positions onto
the true ones.

Convention: positions are (y, x); a rotation by θ turns +x towards +y (the azimuth
convention of :mod:`ptyopt.physics`; on an image shown with y downwards, clockwise).
Both act about the centroid of the positions, which they leave in place, so the inverse
of (θ, s) is exactly (−θ, 1/s).
"""

from __future__ import annotations

import numpy as np


def rotate_yx(vectors: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Vectors (…, 2) (y, x) turned by ``rotation_deg`` [deg] from +x towards +y about
    the origin: (y, x) → (y·cos θ + x·sin θ, −y·sin θ + x·cos θ). Returns float64."""
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    return np.asarray(vectors, np.float64) @ np.array([[cos, sin], [-sin, cos]]).T


def calibrate_scan(positions: np.ndarray, rotation_deg: float, step_scale: float) -> np.ndarray:
    """Positions (P, 2) (y, x), any length unit, rotated by ``rotation_deg`` [deg] from
    +x towards +y and scaled by ``step_scale`` about their centroid c:
    c + step_scale·R(θ)·(p − c). Returns float64 (P, 2)."""
    positions = np.asarray(positions, np.float64)
    centre = positions.mean(axis=0)
    return centre + step_scale * rotate_yx(positions - centre, rotation_deg)
