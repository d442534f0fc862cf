"""Scores of a reconstruction that need no ground truth: what a study of experimental
data can tune on. Each is recorded by every study trial; whether it tracks the quality
that the ground truth measures is for ``python -m ptyopt report`` to tell
(:mod:`ptyopt.study.report.truth_free`).

- ``validation_error``: the normalised amplitude error Σ(√I_model − √I_meas)² / Σ I_meas
  (dimensionless) of the held-out patterns, positions of the scan that no update sees
  (:func:`held_out_positions`), modelled with the current object and probe at their
  calibrated nominal positions (position correction never moved them). Its definition
  does not depend on the plan's noise model, so trials that tune the noise model stay
  comparable. ``training_error``: the same over the patterns the engines used, at their
  (corrected) positions.
- ``split_frc_resolution_A`` [Å], ``split_frc_area``: the FRC between the summed-phase
  images of two reconstructions with the trial's plan, each from one of two interleaved
  halves of the scan (:func:`interleaved_halves`), its half-bit resolution and its mean
  up to Nyquist (:mod:`ptyopt.frc`, rings 2 Fourier pixels wide). The half-bit criterion
  was derived for exactly this: two half-datasets with independent noise.
- ``phase_contrast``: std/mean of the summed phase over the field of view, measured
  from its 1st percentile (a gauge-free zero: a global phase shifts the percentile with
  the image), after removing the offset and linear ramp no measurement fixes; ``phase_tv``
  [rad/Å]: its total variation, the mean |∇φ| per pixel divided by the pixel size.

Images are those the scores against the ground truth use: every slice's phase over the
field of view shrunk by 2 px, global phase removed and unwrapped where it wraps
(:func:`ptyopt.metrics.potential_on_fov` with σ = 1), summed over slices [rad].
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ptyopt import model
from ptyopt.engines.common import DivergenceError, run_plan
from ptyopt.frc import frc, frc_area, frc_resolution_A, frc_rings, halfbit_threshold
from ptyopt.initial import Geometry, Measurements, ReconState, with_positions
from ptyopt.metrics import potential_on_fov
from ptyopt.plan import Plan
from ptyopt.registration import remove_gauge

#: Scores of this module that can be objectives, with their natural directions.
TRUTH_FREE_DIRECTIONS = {
    "validation_error": "minimize",
    "split_frc_resolution_A": "minimize",
    "split_frc_area": "maximize",
    "phase_contrast": "maximize",
    "phase_tv": "minimize",
}
#: The split-data scores: computed once per trial, at its end (two more reconstructions).
SPLIT_FRC_SCORES = ("split_frc_resolution_A", "split_frc_area")
#: Margin [px] by which the field of view is shrunk, as for the scores against the truth.
FOV_MARGIN_PX = 2
#: Positions per forward-model call of :func:`amplitude_error`.
CHUNK = 128


def held_out_positions(n_positions: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices (K,) of round(``fraction``·``n_positions``) positions (at least
    one for ``fraction`` > 0) drawn without replacement with ``seed``; empty for 0."""
    count = max(1, int(round(fraction * n_positions))) if fraction > 0 else 0
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_positions, size=count, replace=False)).astype(np.int64)


@jax.jit
def _amplitude_sums(
    obj: jnp.ndarray,
    probe: jnp.ndarray,
    positions_px: jnp.ndarray,
    propagators: jnp.ndarray,
    ramp: jnp.ndarray,
    patterns: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(Σ(√I_model − √I_meas)², Σ I_meas) over a chunk of patterns (G, N, N)."""
    intensity = model.far_field_intensities(obj, probe, positions_px, propagators, ramp)
    measured = jnp.maximum(patterns, 0.0)
    return jnp.sum((jnp.sqrt(intensity) - jnp.sqrt(measured)) ** 2), jnp.sum(measured)


def amplitude_error(
    state: ReconState, measurements: Measurements, positions_px: np.ndarray | None = None
) -> float:
    """Σ(√I_model − √I_meas)² / Σ I_meas (dimensionless; negative counts taken as 0)
    over every pattern of ``measurements``, modelled from ``state``'s object, probe and
    slices at ``positions_px`` (P, 2) [object px] (default: the measurements' own)."""
    positions = jnp.asarray(
        measurements.geometry.positions_px if positions_px is None else positions_px,
        measurements.precision.real,
    )
    propagators = state.propagators(measurements)
    error = total = 0.0
    for start in range(0, len(positions), CHUNK):
        part = slice(start, start + CHUNK)
        e, t = _amplitude_sums(
            state.object,
            state.probe,
            positions[part],
            propagators,
            measurements.detector_ramp,
            measurements.patterns[part],
        )
        error, total = error + float(e), total + float(t)
    return error / total if total > 0 else float("nan")


def validation_error(state: ReconState, measurements: Measurements, held: np.ndarray) -> float:
    """:func:`amplitude_error` of the held-out positions ``held`` (K,) of the whole
    scan's ``measurements`` (as the plan takes them), at their calibrated nominal
    positions."""
    return amplitude_error(state, with_positions(measurements, held))


def summed_phase(object_slices: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The summed phase (h, w) [rad] of an object (S, H, W) over the field of view
    shrunk by :data:`FOV_MARGIN_PX`, without its offset and linear ramp."""
    fov = geometry.field_of_view(FOV_MARGIN_PX)
    return remove_gauge(potential_on_fov(np.asarray(object_slices), 1.0, fov).sum(axis=0))


def phase_contrast(phase: np.ndarray) -> float:
    """std/mean of a phase image (h, w) [rad] measured from its 1st percentile
    (dimensionless; unchanged by a global phase)."""
    shifted = phase - np.percentile(phase, 1.0)
    mean = float(np.mean(shifted))
    return float(np.std(shifted) / mean) if mean > 0 else float("nan")


def phase_tv(phase: np.ndarray, pixel_size_A: float) -> float:
    """Total variation of a phase image (h, w) [rad]: the mean over pixels of
    |∇φ| = √((∂yφ)² + (∂xφ)²) by forward differences, per Å [rad/Å]."""
    dy = np.diff(phase, axis=0)[:, :-1]
    dx = np.diff(phase, axis=1)[:-1, :]
    return float(np.mean(np.hypot(dy, dx)) / pixel_size_A)


def image_scores(object_slices: np.ndarray, measurements: Measurements) -> dict[str, float]:
    """``phase_contrast`` and ``phase_tv`` [rad/Å] of an object (S, H, W)."""
    phase = summed_phase(object_slices, measurements.geometry)
    return {
        "phase_contrast": phase_contrast(phase),
        "phase_tv": phase_tv(phase, measurements.pixel_size_A),
    }


def _raster_columns(positions: np.ndarray) -> int | None:
    """Columns of a raster scan of ``positions`` (P, 2) in scan order (rows along y or
    x: each row's fast coordinate rises, then falls back by more than half its span at
    the next row; every row as long), else ``None``."""
    for fast in (1, 0):
        steps = np.diff(positions[:, fast])
        span = np.ptp(positions[:, fast])
        if span <= 0:
            continue
        starts = np.flatnonzero(steps < -0.5 * span) + 1
        rows = np.diff(np.concatenate([[0], starts, [len(positions)]]))
        if len(rows) > 1 and np.all(rows == rows[0]) and rows[0] > 1:
            return int(rows[0])
    return None


def interleaved_halves(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Two interleaved halves of a scan: indices (P₁,), (P₂,) into its positions (P, 2)
    in scan order, and how they were drawn: ``"checkerboard"`` of the scan grid for a
    raster scan (:func:`_raster_columns`), else ``"alternate"`` positions."""
    index = np.arange(len(positions))
    columns = _raster_columns(np.asarray(positions, np.float64))
    if columns is None:
        parity, kind = index % 2, "alternate"
    else:
        parity, kind = (index // columns + index % columns) % 2, "checkerboard"
    return index[parity == 0], index[parity == 1], kind


def split_frc(phase_a: np.ndarray, phase_b: np.ndarray, pixel_size_A: float) -> dict[str, float]:
    """FRC of two phase images (h, w) on rings 2 Fourier pixels wide:
    ``split_frc_resolution_A`` [Å] where it falls below the half-bit curve and
    ``split_frc_area``, its mean up to Nyquist (:mod:`ptyopt.frc`)."""
    frequency, correlation = frc(phase_a, phase_b, pixel_size_A)
    halfbit = halfbit_threshold(frc_rings(phase_a.shape, float(pixel_size_A))[2])
    return {
        "split_frc_resolution_A": frc_resolution_A(frequency, correlation, halfbit),
        "split_frc_area": frc_area(frequency, correlation, pixel_size_A),
    }


@dataclass(frozen=True)
class SplitResult:
    """The split-data scores of a plan (:data:`SPLIT_FRC_SCORES`), how the halves were
    drawn, their positions (P₁, P₂) and the two reconstructions' wall time [s]."""

    scores: dict[str, float]
    kind: str
    positions: tuple[int, int]
    seconds: float


def split_frc_scores(
    plan: Plan, measurements: Measurements, used: np.ndarray | None
) -> SplitResult:
    """Reconstruct ``plan`` on each interleaved half of
    the whole scan's ``measurements`` (:func:`interleaved_halves` of its nominal
    positions), keeping only the positions in ``used`` (K,) (``None``: all; the
    held-out ones are left out), and score the FRC of the two summed phases
    (:func:`split_frc`) over the whole scan's field of view. A half that diverges
    gives NaN scores (:class:`ptyopt.engines.common.DivergenceError`)."""
    started = time.perf_counter()
    first, second, kind = interleaved_halves(measurements.nominal_geometry.positions_px)
    if used is not None:
        first, second = np.intersect1d(first, used), np.intersect1d(second, used)
    phases = []
    try:
        for half in (first, second):
            state = run_plan(plan, with_positions(measurements, half))
            phases.append(summed_phase(state.object, measurements.geometry))
    except DivergenceError:
        scores = dict.fromkeys(SPLIT_FRC_SCORES, float("nan"))
    else:
        scores = split_frc(*phases, measurements.pixel_size_A)
    return SplitResult(scores, kind, (len(first), len(second)), time.perf_counter() - started)
