"""``reconstruction.h5``: a reconstruction as ``python -m ptyopt reconstruct`` keeps it.

Layout (version 1):

- root attrs ``format`` (= :data:`FORMAT`), ``version``, ``dataset`` (its name),
  ``dataset_path``, ``pixel_size_A`` [Å] (object pixel, square), ``slice_thickness_A``
  [Å] (every slice's; NaN: one slice of unknown thickness), ``origin_A`` (y, x) [Å]
  (where the origin of the dataset's positions lies in the object's frame: a dataset
  position p lies at p + origin_A), ``iterations_done``, ``seconds``, and ``plan``
  (JSON: the resolved plan, every microscope setting filled in, which reproduces this
  reconstruction on the dataset); from ``apply`` also ``applied`` (JSON: study, trial,
  its objective values and tuned parameters, iterations); ``truth_free_scores`` (JSON:
  the scores without ground truth, :mod:`ptyopt.truth_free`);
- ``/object``: (S, H, W) complex64 transmission (complex128 for a plan of ``precision:
  double``, as computed), slice 0 at the entrance surface;
- ``/probe``: (M, N, N) complex64 (double: complex128) probe modes in the window,
  centred on pixel (N//2, N//2), Σ|ψ|² in counts;
- ``/positions_A``: (P, 2) float64 probe centres (y, x) [Å] in the object's frame:
  object pixel (j, i) lies at (j, i)·pixel_size_A, so pixel (0, 0) at (0, 0) Å (held-out
  positions at their calibrated nominal place);
- ``/held_out``: (K,) int64, only with held-out positions: the indices of the dataset's
  positions no update saw (``objective.validation_fraction``);
- ``/data_error``: (iterations,) float64, the noise model's mean loss per position at
  every iteration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyopt.reconstruction import Reconstruction

FORMAT = "ptyopt-reconstruction"
VERSION = 1


def write_reconstruction(
    path: Path,
    reconstruction: Reconstruction,
    dataset_path: Path,
    applied: dict[str, Any] | None = None,
    truth_free: dict[str, float] | None = None,
) -> Path:
    """Write a run ``reconstruction`` of the dataset file ``dataset_path`` to ``path``
    (parents created, an existing file replaced); ``applied``: the study trial whose plan
    it ran (:meth:`ptyopt.reconstruction.apply.AppliedPlan.provenance`); ``truth_free``:
    its scores without ground truth (:meth:`Reconstruction.truth_free_scores`). Returns
    the path."""
    state, measurements = reconstruction.state, reconstruction.measurements
    if state is None:
        raise ValueError("the reconstruction has not been run")
    pixel = measurements.pixel_size_A
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        file.attrs["format"] = FORMAT
        file.attrs["version"] = VERSION
        file.attrs["dataset"] = reconstruction.dataset.name
        file.attrs["dataset_path"] = str(dataset_path)
        file.attrs["pixel_size_A"] = pixel
        file.attrs["slice_thickness_A"] = float(state.slice_thicknesses_A[0])
        file.attrs["origin_A"] = np.asarray(measurements.geometry.origin_px, np.float64) * pixel
        file.attrs["iterations_done"] = state.iterations_done
        file.attrs["seconds"] = reconstruction.seconds
        file.attrs["plan"] = json.dumps(reconstruction.plan_values, sort_keys=True)
        if applied is not None:
            file.attrs["applied"] = json.dumps(applied, sort_keys=True)
        if truth_free is not None:
            file.attrs["truth_free_scores"] = json.dumps(truth_free, sort_keys=True)
        file.create_dataset(
            "object", data=np.asarray(state.object), compression="gzip", compression_opts=1
        )
        file.create_dataset("probe", data=np.asarray(state.probe))
        positions = np.array(measurements.geometry.positions_px, np.float64)
        if reconstruction.used is None:
            positions = np.asarray(state.positions_px, np.float64)
        else:
            positions[reconstruction.used] = np.asarray(state.positions_px, np.float64)
            file.create_dataset("held_out", data=reconstruction.held_out.astype(np.int64))
        file.create_dataset("positions_A", data=positions * pixel)
        file.create_dataset("data_error", data=np.asarray(reconstruction.losses, np.float64))
    return path


@dataclass(frozen=True)
class ReconstructionFile:
    """``reconstruction.h5`` as read back (see the module docstring for the fields)."""

    object: np.ndarray
    probe: np.ndarray
    positions_A: np.ndarray
    data_error: np.ndarray
    pixel_size_A: float
    slice_thickness_A: float
    origin_A: tuple[float, float]
    plan: dict[str, Any]
    truth_free_scores: dict[str, float]
    attrs: dict[str, Any]


def read_reconstruction(path: Path) -> ReconstructionFile:
    """Read a ``reconstruction.h5``."""
    with h5py.File(path, "r") as file:
        attrs = dict(file.attrs.items())
        return ReconstructionFile(
            object=file["object"][()],
            probe=file["probe"][()],
            positions_A=file["positions_A"][()],
            data_error=file["data_error"][()],
            pixel_size_A=float(attrs["pixel_size_A"]),
            slice_thickness_A=float(attrs["slice_thickness_A"]),
            origin_A=tuple(float(v) for v in attrs["origin_A"]),
            plan=json.loads(attrs["plan"]),
            truth_free_scores=json.loads(attrs.get("truth_free_scores", "{}")),
            attrs=attrs,
        )
