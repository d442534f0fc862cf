"""A ground truth to score an imported dataset against (``metadata.ground_truth``).

Accepted files:
- a ptyopt dataset file (root attr ``format = "ptyopt-dataset"``): its ground truth;
- any HDF5 file with a dataset ``potential_V_A`` (or ``FILE.h5:/path`` naming one) of
  shape (S, ny, nx): the projected potential of each slice [V·Å], rows y, with attrs (on
  the dataset or the file's root) ``sampling_A`` (a number, or (y, x)) [Å] and
  ``slice_thickness_A`` [Å]; optional ``kind`` (``static``, ``thermal_mean`` or
  ``debye_waller``, default ``static``) and ``n_configurations`` (default 1).

The potential is one periodic cell of the specimen in the frame of the positions (its
pixel (0, 0) at position (0, 0) Å); the scorer tiles it over the field of view. It is
Fourier-resampled (spectrum cropped or zero-padded, values preserved) onto the
reconstruction pixel dx = λ/(N·Δα); each cell edge must hold a whole number of dx,
to within :data:`CELL_TOLERANCE_PX`. σ comes from the beam energy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from ptyopt import physics
from ptyopt.data.dataset import GroundTruth
from ptyopt.data.file import FORMAT, GROUND_TRUTH_KINDS, DatasetFileError, read_dataset
from ptyopt.fourier import fourier_resample
from ptyopt.io.arrays import split_inner_path
from ptyopt.io.source import import_error

KEY = "metadata.ground_truth"
CELL_TOLERANCE_PX = 0.05
"""Largest difference [reconstruction pixels] between a cell edge and a whole number of
reconstruction pixels."""


def _attribute(path: Path, node: h5py.Dataset, root: h5py.File, name: str, default=None):
    value = node.attrs.get(name, root.attrs.get(name, default))
    if value is None:
        raise import_error(path, f"{KEY} {node.name} attr {name}", "is missing")
    return value


def _read_potential(path: Path, inner: str | None) -> tuple[GroundTruth, tuple[float, float]]:
    """The truth of a potential file as stored (σ not yet set) and its (y, x) cell
    edges [Å]."""
    inner = inner or "/potential_V_A"
    where = f"{KEY} {inner}"
    try:
        with h5py.File(path, "r") as root:
            node = root.get(inner)
            if not isinstance(node, h5py.Dataset):
                raise import_error(path, where, "is missing (expected (S, ny, nx) V·Å)")
            potential = np.asarray(node[()])
            sampling = np.atleast_1d(np.asarray(_attribute(path, node, root, "sampling_A"), float))
            thickness = float(_attribute(path, node, root, "slice_thickness_A"))
            kind = _attribute(path, node, root, "kind", "static")
            configurations = int(_attribute(path, node, root, "n_configurations", 1))
    except OSError as err:
        raise import_error(path, KEY, f"is not a readable HDF5 file ({err})") from None
    if potential.ndim != 3 or min(potential.shape) < 1 or potential.dtype.kind not in "iuf":
        raise import_error(
            path, where, f"has shape {potential.shape} {potential.dtype}, expected real (S, ny, nx)"
        )
    if not np.isfinite(potential).all():
        raise import_error(path, where, "contains NaN or inf")
    if sampling.shape not in ((1,), (2,)) or not (np.isfinite(sampling) & (sampling > 0)).all():
        raise import_error(
            path, f"{where} attr sampling_A", f"is {sampling.tolist()}, expected (y, x) > 0 Å"
        )
    if not (np.isfinite(thickness) and thickness > 0):
        raise import_error(path, f"{where} attr slice_thickness_A", f"is {thickness}, expected > 0")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in GROUND_TRUTH_KINDS:
        raise import_error(
            path, f"{where} attr kind", f"is {kind!r}, expected {GROUND_TRUTH_KINDS}"
        )
    if configurations < 1:
        raise import_error(path, f"{where} attr n_configurations", "must be >= 1")
    cell = (potential.shape[1] * sampling[0], potential.shape[2] * sampling[-1])
    truth = GroundTruth(
        potential_V_A=potential.astype(np.float32),
        slice_thickness_A=thickness,
        sampling_A=float(sampling[0]),
        sigma_per_V_A=1.0,
        kind=kind,
        n_configurations=configurations,
    )
    return truth, cell


def read_ground_truth(text: str, pixel_size_A: float, energy_eV: float) -> GroundTruth:
    """The ground truth in ``text`` on the reconstruction pixel ``pixel_size_A`` [Å],
    σ for ``energy_eV``. Raises ConfigError naming the file and key."""
    path, inner = split_inner_path(text)
    if not path.is_file():
        raise import_error(path, KEY, "does not exist")
    try:
        with h5py.File(path, "r") as file:
            is_dataset_file = file.attrs.get("format") == FORMAT
    except OSError as err:
        raise import_error(path, KEY, f"is not a readable HDF5 file ({err})") from None
    if is_dataset_file:
        try:
            truth = read_dataset(path).ground_truth
        except DatasetFileError as err:
            raise import_error(path, KEY, str(err)) from None
        if truth is None:
            raise import_error(path, KEY, "is a ptyopt dataset file without a ground truth")
        shape = truth.potential_V_A.shape[1:]
        cell = (shape[0] * truth.sampling_A, shape[1] * truth.sampling_A)
    else:
        truth, cell = _read_potential(path, inner)
    target = []
    for edge, axis in zip(cell, ("y", "x"), strict=True):
        pixels = edge / pixel_size_A
        if abs(pixels - round(pixels)) > CELL_TOLERANCE_PX or round(pixels) < 1:
            raise import_error(
                path,
                KEY,
                f"its cell's {axis} edge ({edge:.4f} Å) is {pixels:.3f} reconstruction pixels "
                f"of {pixel_size_A:.5f} Å, not a whole number (±{CELL_TOLERANCE_PX}): the "
                "scorer tiles the cell periodically",
            )
        target.append(round(pixels))
    potential = truth.potential_V_A
    if tuple(target) != potential.shape[1:]:
        potential = fourier_resample(potential.astype(np.float64), tuple(target))
    return replace(
        truth,
        potential_V_A=potential.astype(np.float32),
        sampling_A=float(pixel_size_A),
        sigma_per_V_A=physics.interaction_constant(energy_eV),
    )
