"""Versioned, self-describing HDF5 file for a :class:`PtychoDataset`.

Layout (version 1); units as in :mod:`ptyopt.data.dataset` (Å, mrad, eV):

- root attrs ``format`` (= :data:`FORMAT`), ``version`` (int), ``name`` (str),
  optional ``dose_e_per_A2`` (float > 0), ``nominal_thickness_A`` (float > 0),
  ``nominal_slices`` (int >= 1) and ``simulation`` (JSON string).
- ``/patterns``: (n_positions, k, k) float32 counts, one pattern per chunk, gzip 1.
- ``/positions_A``: (n_positions, 2) float64 probe positions (y, x) [Å].
- ``/optics`` attrs ``energy_eV``, ``semiangle_mrad`` (> 0); ``/optics/aberrations``
  attrs are the aberration coefficients (str -> float, possibly none).
- ``/detector`` attrs ``angular_sampling_mrad`` (> 0), ``pattern_centre_px`` (y, x).
- optional ``/ground_truth``: dataset ``potential_V_A`` (n_slices, ny, nx) float32
  (gzip 1), attrs ``slice_thickness_A``, ``sampling_A``, ``sigma_per_V_A`` (> 0),
  ``kind`` (one of :data:`GROUND_TRUTH_KINDS`), ``n_configurations`` (int >= 1).
- optional ``/ground_truth/dopant_sites``: a table (compound dataset, one row per
  dopant) with fields ``element``, ``host`` (chemical symbols) and ``y_A``, ``x_A``
  (in [0, cell edge)), ``depth_A`` (in [0, n_slices·slice_thickness_A]) [Å]; attr
  ``host_period_A`` (y, x) [Å], each in (0, cell edge]. Files without it (perfect
  crystals, or written before dopants existed) read as before.

Geometry is checked too (:func:`_check_geometry`), since a file that contradicts
itself gives silently wrong scores: the ground truth's ``sampling_A`` is the
reconstruction pixel λ/(N·Δα) (to :data:`SAMPLING_TOLERANCE`); where the file records
its simulation, the truth is one periodic cell of the simulated specimen (cell edges =
pixels × sampling = ``simulation.cell_edge_A``, holding whole host periods of its
dopants); ``pattern_centre_px`` lies on the detector; and the positions make a sane
scan. The truth is one periodic cell tiled over the field of view, so a position
cannot fall outside the specimen; what is refused is a position far from all others
(its nearest neighbour farther than both the probe window and :data:`OUTLIER_SPACING`
times the scan's median nearest-neighbour distance), and positions so spread that the
object around them would exceed :data:`MAX_OBJECT_PX` pixels along an axis.

Every problem with a file (or with a dataset about to be written) raises
:class:`DatasetFileError` naming the file and the offending key.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase.data import chemical_symbols
from scipy.spatial import cKDTree

from ptyopt.data.dataset import DopantSite, DopantTable, GroundTruth, Optics, PtychoDataset
from ptyopt.initial import object_geometry

FORMAT = "ptyopt-dataset"
VERSION = 1
GROUND_TRUTH_KINDS = ("thermal_mean", "static", "debye_waller")
SAMPLING_TOLERANCE = 1e-3
"""Largest relative difference between the ground truth's ``sampling_A`` (and its cell
edges) and the reconstruction pixel (the simulation's cell edge)."""
MAX_OBJECT_PX = 8192
"""Largest object [px along an axis] that the positions of a dataset may span."""
OUTLIER_SPACING = 20.0
"""A position whose nearest neighbour is farther than this many median
nearest-neighbour distances (and farther than the probe window) is refused."""
DOPANT_FIELDS = ("element", "host", "y_A", "x_A", "depth_A")
_DOPANT_DTYPE = np.dtype(
    [("element", "S3"), ("host", "S3"), ("y_A", "<f8"), ("x_A", "<f8"), ("depth_A", "<f8")]
)

_GZIP_LEVEL = 1


class DatasetFileError(ValueError):
    """A dataset file is missing, unreadable or invalid (the message names file and key)."""


def _error(path: Path, key: str, problem: str) -> DatasetFileError:
    return DatasetFileError(f"{path}: {key} {problem}")


def _attr_key(group: str, name: str) -> str:
    """Human-readable name of attribute ``name`` of HDF5 object ``group``."""
    return f"root attr {name}" if group == "/" else f"{group} attr {name}"


def _show(value: Any) -> str:
    """repr of a value as found, numpy scalars and arrays shown as Python values."""
    return repr(value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value)


# --- value checks, shared by reading and writing -------------------------------------


def _real(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _error(path, key, f"is {_show(value)}, expected a finite real number")
    return float(value)


def _count(path: Path, key: str, value: Any) -> int:
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise _error(path, key, f"is {_show(value)}, expected an integer >= 1")
    return int(value)


def _positive(path: Path, key: str, value: Any) -> float:
    number = _real(path, key, value)
    if number <= 0:
        raise _error(path, key, f"is {number}, expected a value > 0")
    return number


def _finite_array(
    path: Path,
    key: str,
    value: Any,
    dtype: type[np.generic],
    expected_shape: str,
    shape_ok: Callable[[tuple[int, ...]], bool],
) -> np.ndarray:
    """Check that ``value`` is an array of ``dtype`` (or a subtype), of an accepted
    shape and entirely finite."""
    if not isinstance(value, np.ndarray):
        raise _error(path, key, f"is a {type(value).__name__}, expected a numpy array")
    if not np.issubdtype(value.dtype, dtype):
        raise _error(path, key, f"has dtype {value.dtype}, expected {dtype.__name__}")
    if not shape_ok(value.shape):
        raise _error(path, key, f"has shape {value.shape}, expected {expected_shape}")
    n_bad = value.size - int(np.count_nonzero(np.isfinite(value)))
    if n_bad:
        raise _error(path, key, f"contains {n_bad} non-finite values (NaN or inf)")
    return value


def _validated_dopants(
    dopants: DopantTable, path: Path, cell_A: tuple[float, float], thickness_A: float
) -> DopantTable:
    """Check a dopant table against the ground truth's (y, x) cell edges and thickness [Å]."""
    key = "/ground_truth/dopant_sites"
    if not isinstance(dopants.sites, tuple) or not dopants.sites:
        raise _error(path, key, f"is {_show(dopants.sites)}, expected one row per dopant")
    sites = []
    for row, site in enumerate(dopants.sites):
        where = f"{key} row {row}"
        for name in ("element", "host"):
            value = getattr(site, name)
            if not isinstance(value, str) or value not in chemical_symbols[1:]:
                raise _error(
                    path, f"{where} {name}", f"is {_show(value)}, expected a chemical symbol"
                )
        y, x, depth = (
            _real(path, f"{where} {name}", getattr(site, name)) for name in DOPANT_FIELDS[2:]
        )
        for name, value, high in (("y_A", y, cell_A[0]), ("x_A", x, cell_A[1])):
            if not 0 <= value < high:
                raise _error(
                    path, f"{where} {name}", f"is {value}, expected a value in [0, {high:g}) Å"
                )
        if not 0 <= depth <= thickness_A:
            raise _error(
                path,
                f"{where} depth_A",
                f"is {depth}, expected a value in [0, {thickness_A:g}] Å (the thickness)",
            )
        sites.append(DopantSite(site.element, site.host, y, x, depth))
    period_key = _attr_key(key, "host_period_A")
    period = np.asarray(dopants.host_period_A)
    if (
        period.shape != (2,)
        or period.dtype.kind not in "iuf"
        or not np.isfinite(period).all()
        or not (0 < period).all()
        or not (period <= np.asarray(cell_A) * (1 + 1e-9)).all()
    ):
        raise _error(
            path,
            period_key,
            f"is {_show(dopants.host_period_A)}, expected 2 numbers (y, x) in (0, cell edge]",
        )
    return DopantTable(tuple(sites), (float(period[0]), float(period[1])))


def _validated_ground_truth(truth: GroundTruth, path: Path) -> GroundTruth:
    potential = _finite_array(
        path,
        "/ground_truth/potential_V_A",
        truth.potential_V_A,
        np.float32,
        "(n_slices, ny, nx) with no empty axis",
        lambda shape: len(shape) == 3 and min(shape) > 0,
    )
    kind_key = _attr_key("/ground_truth", "kind")
    if not isinstance(truth.kind, str) or truth.kind not in GROUND_TRUTH_KINDS:
        raise _error(
            path, kind_key, f"is {_show(truth.kind)}, expected one of {GROUND_TRUTH_KINDS}"
        )
    slice_thickness = _positive(
        path, _attr_key("/ground_truth", "slice_thickness_A"), truth.slice_thickness_A
    )
    sampling = _positive(path, _attr_key("/ground_truth", "sampling_A"), truth.sampling_A)
    cell = (potential.shape[1] * sampling, potential.shape[2] * sampling)
    return GroundTruth(
        potential_V_A=potential,
        slice_thickness_A=slice_thickness,
        sampling_A=sampling,
        sigma_per_V_A=_positive(
            path, _attr_key("/ground_truth", "sigma_per_V_A"), truth.sigma_per_V_A
        ),
        kind=str(truth.kind),
        n_configurations=_count(
            path, _attr_key("/ground_truth", "n_configurations"), truth.n_configurations
        ),
        dopants=(
            None
            if truth.dopants is None
            else _validated_dopants(truth.dopants, path, cell, potential.shape[0] * slice_thickness)
        ),
    )


def _check_positions(dataset: PtychoDataset, path: Path) -> None:
    """Positions (validated finite) that make one scan of a sane size: none far from
    all others, and an object around them of at most MAX_OBJECT_PX per axis."""
    positions = dataset.positions_A
    dx, n = dataset.pixel_size_A, dataset.detector_shape[0]
    if len(positions) > 2:
        spacing = cKDTree(positions).query(positions, k=2)[0][:, 1]
        typical = float(np.median(spacing))
        limit = max(OUTLIER_SPACING * typical, n * dx)
        far = int(np.argmax(spacing))
        if spacing[far] > limit:
            raise _error(
                path,
                "/positions_A",
                f"row {far} {positions[far].tolist()} Å is {spacing[far]:.4g} Å from its "
                f"nearest neighbour, far from the others (median spacing {typical:.4g} Å, "
                f"probe window {n * dx:.4g} Å)",
            )
    shape = object_geometry(dataset).shape
    if max(shape) > MAX_OBJECT_PX:
        span = np.ptp(positions, axis=0)
        raise _error(
            path,
            "/positions_A",
            f"spans {span[0]:.4g} × {span[1]:.4g} Å: the object around them would be "
            f"{shape[0]} × {shape[1]} px of {dx:.4g} Å, more than {MAX_OBJECT_PX} px",
        )


def _check_ground_truth_geometry(dataset: PtychoDataset, path: Path) -> None:
    """The truth on the reconstruction pixel and, for a simulation, one periodic cell
    of the simulated specimen."""
    truth, dx = dataset.ground_truth, dataset.pixel_size_A
    key = _attr_key("/ground_truth", "sampling_A")
    if abs(truth.sampling_A / dx - 1) > SAMPLING_TOLERANCE:
        raise _error(
            path,
            key,
            f"is {truth.sampling_A:.6g} Å, expected the reconstruction pixel "
            f"λ/(N·Δα) = {dx:.6g} Å of the optics and detector",
        )
    shape = truth.potential_V_A.shape[1:]
    cell = (shape[0] * truth.sampling_A, shape[1] * truth.sampling_A)
    stated = (dataset.simulation or {}).get("cell_edge_A")
    if isinstance(stated, numbers.Real) and any(
        abs(edge / stated - 1) > SAMPLING_TOLERANCE for edge in cell
    ):
        raise _error(
            path,
            "/ground_truth/potential_V_A",
            f"is {shape[0]} × {shape[1]} px of {truth.sampling_A:.6g} Å = {cell[0]:.6g} × "
            f"{cell[1]:.6g} Å, not one periodic cell of the simulated specimen "
            f"(root attr simulation cell_edge_A = {stated:.6g} Å)",
        )
    if truth.dopants is not None:
        for edge, period, axis in zip(cell, truth.dopants.host_period_A, "yx", strict=True):
            periods = edge / period
            if abs(periods - round(periods)) > SAMPLING_TOLERANCE * periods:
                raise _error(
                    path,
                    _attr_key("/ground_truth/dopant_sites", "host_period_A"),
                    f"{axis} is {period:.6g} Å, which the {edge:.6g} Å cell does not hold "
                    f"a whole number of times ({periods:.4g}): not a periodic cell",
                )


def _check_geometry(dataset: PtychoDataset, path: Path) -> None:
    """Check that the (otherwise validated) dataset agrees with itself: pattern
    centre, positions and the ground truth's sampling and cell (module docstring)."""
    n = dataset.detector_shape[0]
    centre = dataset.pattern_centre_px
    if not all(-0.5 <= c <= n - 0.5 for c in centre):
        raise _error(
            path,
            _attr_key("/detector", "pattern_centre_px"),
            f"is {_show(centre)}, expected a point on the {n} × {n} px detector "
            f"(each in [-0.5, {n - 0.5}])",
        )
    _check_positions(dataset, path)
    if dataset.ground_truth is not None:
        _check_ground_truth_geometry(dataset, path)


def _validated(dataset: PtychoDataset, path: Path) -> PtychoDataset:
    """Check every field of ``dataset`` (as stored at ``path``) and return it with
    normalised types: positions float64, scalars Python floats/ints."""
    if not isinstance(dataset.name, str):
        raise _error(path, _attr_key("/", "name"), f"is {_show(dataset.name)}, expected a string")

    patterns = _finite_array(
        path,
        "/patterns",
        dataset.patterns,
        np.float32,
        "(n_positions >= 1, k, k) with k >= 1",
        lambda shape: len(shape) == 3 and shape[0] > 0 and shape[1] == shape[2] > 0,
    )
    n_negative = int(np.count_nonzero(patterns < 0))
    if n_negative:
        raise _error(path, "/patterns", f"contains {n_negative} negative counts")
    positions = _finite_array(
        path,
        "/positions_A",
        dataset.positions_A,
        np.floating,
        "(n_positions, 2)",
        lambda shape: len(shape) == 2 and shape[1] == 2,
    )
    if len(positions) != len(patterns):
        raise _error(
            path,
            "/positions_A",
            f"has {len(positions)} positions but /patterns has {len(patterns)} patterns",
        )

    aberrations = dataset.optics.aberrations
    if not isinstance(aberrations, dict) or not all(isinstance(k, str) for k in aberrations):
        raise _error(
            path, "/optics/aberrations", f"is {_show(aberrations)}, expected a str -> float dict"
        )
    optics = Optics(
        energy_eV=_positive(path, _attr_key("/optics", "energy_eV"), dataset.optics.energy_eV),
        semiangle_mrad=_positive(
            path, _attr_key("/optics", "semiangle_mrad"), dataset.optics.semiangle_mrad
        ),
        aberrations={
            name: _real(path, _attr_key("/optics/aberrations", name), value)
            for name, value in aberrations.items()
        },
    )

    centre_key = _attr_key("/detector", "pattern_centre_px")
    centre = np.asarray(dataset.pattern_centre_px)
    if centre.shape != (2,) or centre.dtype.kind not in "iuf" or not np.isfinite(centre).all():
        raise _error(
            path,
            centre_key,
            f"is {_show(dataset.pattern_centre_px)}, expected 2 finite numbers (y, x)",
        )

    dose = dataset.dose_e_per_A2
    if dose is not None:
        dose = _positive(path, _attr_key("/", "dose_e_per_A2"), dose)
    thickness, slices = dataset.nominal_thickness_A, dataset.nominal_slices
    if thickness is not None:
        thickness = _positive(path, _attr_key("/", "nominal_thickness_A"), thickness)
    if slices is not None:
        slices = _count(path, _attr_key("/", "nominal_slices"), slices)
    simulation = dataset.simulation
    if simulation is not None:
        simulation_key = _attr_key("/", "simulation")
        if not isinstance(simulation, dict):
            raise _error(path, simulation_key, f"is a {type(simulation).__name__}, expected a dict")
        try:
            json.dumps(simulation)
        except (TypeError, ValueError) as err:
            raise _error(path, simulation_key, f"is not JSON-serialisable ({err})") from err

    checked = PtychoDataset(
        name=dataset.name,
        patterns=patterns,
        positions_A=positions.astype(np.float64, copy=False),
        optics=optics,
        angular_sampling_mrad=_positive(
            path, _attr_key("/detector", "angular_sampling_mrad"), dataset.angular_sampling_mrad
        ),
        pattern_centre_px=(float(centre[0]), float(centre[1])),
        dose_e_per_A2=dose,
        ground_truth=(
            None
            if dataset.ground_truth is None
            else _validated_ground_truth(dataset.ground_truth, path)
        ),
        nominal_thickness_A=thickness,
        nominal_slices=slices,
        simulation=simulation,
    )
    _check_geometry(checked, path)
    return checked


# --- writing ---------------------------------------------------------------------------


def _write_stack(group: h5py.Group, name: str, stack: np.ndarray) -> None:
    """Write a (n, ny, nx) stack one image per chunk, gzip-compressed."""
    group.create_dataset(
        name,
        data=stack,
        chunks=(1, *stack.shape[1:]),
        compression="gzip",
        compression_opts=_GZIP_LEVEL,
    )


def _write(file: h5py.File, dataset: PtychoDataset) -> None:
    file.attrs["format"] = FORMAT
    file.attrs["version"] = VERSION
    file.attrs["name"] = dataset.name
    for name in ("dose_e_per_A2", "nominal_thickness_A", "nominal_slices"):
        if getattr(dataset, name) is not None:
            file.attrs[name] = getattr(dataset, name)
    if dataset.simulation is not None:
        file.attrs["simulation"] = json.dumps(dataset.simulation)

    _write_stack(file, "patterns", dataset.patterns)
    file.create_dataset("positions_A", data=dataset.positions_A)

    optics = file.create_group("optics")
    optics.attrs["energy_eV"] = dataset.optics.energy_eV
    optics.attrs["semiangle_mrad"] = dataset.optics.semiangle_mrad
    optics.create_group("aberrations").attrs.update(dataset.optics.aberrations)

    detector = file.create_group("detector")
    detector.attrs["angular_sampling_mrad"] = dataset.angular_sampling_mrad
    detector.attrs["pattern_centre_px"] = np.array(dataset.pattern_centre_px, dtype=np.float64)

    truth = dataset.ground_truth
    if truth is not None:
        group = file.create_group("ground_truth")
        _write_stack(group, "potential_V_A", truth.potential_V_A)
        group.attrs["slice_thickness_A"] = truth.slice_thickness_A
        group.attrs["sampling_A"] = truth.sampling_A
        group.attrs["sigma_per_V_A"] = truth.sigma_per_V_A
        group.attrs["kind"] = truth.kind
        group.attrs["n_configurations"] = truth.n_configurations
        if truth.dopants is not None:
            table = np.array(
                [
                    (s.element.encode(), s.host.encode(), s.y_A, s.x_A, s.depth_A)
                    for s in truth.dopants.sites
                ],
                dtype=_DOPANT_DTYPE,
            )
            sites = group.create_dataset("dopant_sites", data=table)
            sites.attrs["host_period_A"] = np.array(truth.dopants.host_period_A, np.float64)


def write_dataset(path: str | Path, dataset: PtychoDataset) -> Path:
    """Validate ``dataset`` and write it to ``path`` atomically (temporary file in the
    same directory, then rename), creating parent directories. Returns the path.

    Raises DatasetFileError, before touching the file system, if the dataset is invalid.
    """
    path = Path(path)
    dataset = _validated(dataset, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp, "x") as file:
            _write(file, dataset)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- reading ---------------------------------------------------------------------------


class _Reader:
    """Reads one open file, turning every missing or unreadable key into a
    DatasetFileError that names it."""

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = path
        self.file = file

    @contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        # HDF5 may only notice truncation or corruption when the data are read.
        try:
            yield
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            raise DatasetFileError(
                f"{self.path}: is not a readable HDF5 file (truncated or corrupt?): "
                f"reading {key} failed"
            ) from err

    def node(self, key: str, kind: type[h5py.Group] | type[h5py.Dataset]) -> Any:
        """The group or dataset at ``key``, which must exist and be a ``kind``."""
        with self._reading(key):
            node = self.file.get(key)
        if node is None:
            raise _error(self.path, key, "is missing")
        if not isinstance(node, kind):
            raise _error(self.path, key, f"is a {type(node).__name__}, expected a {kind.__name__}")
        return node

    def array(self, key: str) -> Any:
        """Contents of dataset ``key`` (unchecked: validation happens afterwards)."""
        node = self.node(key, h5py.Dataset)
        with self._reading(key):
            return node[()]

    def attrs(self, group: str) -> dict[str, Any]:
        """All attributes of group ``group``."""
        node = self.node(group, h5py.Group)
        with self._reading(group):
            return dict(node.attrs.items())

    def attr(self, group: str, name: str, required: bool = True) -> Any:
        """Attribute ``name`` of group ``group``; ``None`` if absent and not required."""
        value = self.attrs(group).get(name)
        if value is None and required:
            raise _error(self.path, _attr_key(group, name), "is missing")
        return value

    def header(self) -> None:
        """Check the root attrs ``format`` and ``version``."""
        file_format = self.attr("/", "format")
        if not isinstance(file_format, str) or file_format != FORMAT:
            raise _error(
                self.path, _attr_key("/", "format"), f"is {_show(file_format)}, expected {FORMAT!r}"
            )
        version_key = _attr_key("/", "version")
        version = _count(self.path, version_key, self.attr("/", "version"))
        if version > VERSION:
            raise _error(
                self.path,
                version_key,
                f"is {version}, newer than the newest supported version {VERSION}",
            )

    def simulation(self) -> Any:
        text = self.attr("/", "simulation", required=False)
        if text is None:
            return None
        try:
            return json.loads(text)
        except (TypeError, ValueError) as err:
            raise _error(
                self.path, _attr_key("/", "simulation"), f"is not valid JSON ({err})"
            ) from err

    def ground_truth(self) -> GroundTruth | None:
        with self._reading("/ground_truth"):
            present = "ground_truth" in self.file
        if not present:
            return None
        return GroundTruth(
            potential_V_A=self.array("/ground_truth/potential_V_A"),
            slice_thickness_A=self.attr("/ground_truth", "slice_thickness_A"),
            sampling_A=self.attr("/ground_truth", "sampling_A"),
            sigma_per_V_A=self.attr("/ground_truth", "sigma_per_V_A"),
            kind=self.attr("/ground_truth", "kind"),
            n_configurations=self.attr("/ground_truth", "n_configurations"),
            dopants=self.dopants(),
        )

    def dopants(self) -> DopantTable | None:
        """The dopant-site table, ``None`` where the file has none; element and host
        decoded, values unchecked."""
        key = "/ground_truth/dopant_sites"
        with self._reading(key):
            present = "dopant_sites" in self.file["ground_truth"]
        if not present:
            return None
        table = self.array(key)
        if not isinstance(table, np.ndarray) or table.ndim != 1 or table.dtype.names is None:
            raise _error(self.path, key, f"is not a table with fields {DOPANT_FIELDS}")
        if set(table.dtype.names) != set(DOPANT_FIELDS):
            raise _error(
                self.path, key, f"has fields {table.dtype.names}, expected {DOPANT_FIELDS}"
            )
        sites = []
        for row in table:
            symbols = []
            for name in ("element", "host"):
                value = row[name]
                try:
                    symbols.append(value.decode() if isinstance(value, bytes) else value)
                except UnicodeDecodeError as err:
                    raise _error(self.path, f"{key} {name}", "is not valid text") from err
            values = [row[name].item() for name in DOPANT_FIELDS[2:]]
            sites.append(DopantSite(*symbols, *values))
        with self._reading(key):
            period = self.file[key].attrs.get("host_period_A")
        if period is None:
            raise _error(self.path, _attr_key(key, "host_period_A"), "is missing")
        return DopantTable(tuple(sites), period)

    def dataset(self) -> PtychoDataset:
        """The file's contents as an (unvalidated) dataset."""
        self.header()
        return PtychoDataset(
            name=self.attr("/", "name"),
            patterns=self.array("/patterns"),
            positions_A=self.array("/positions_A"),
            optics=Optics(
                energy_eV=self.attr("/optics", "energy_eV"),
                semiangle_mrad=self.attr("/optics", "semiangle_mrad"),
                aberrations=self.attrs("/optics/aberrations"),
            ),
            angular_sampling_mrad=self.attr("/detector", "angular_sampling_mrad"),
            pattern_centre_px=self.attr("/detector", "pattern_centre_px"),
            dose_e_per_A2=self.attr("/", "dose_e_per_A2", required=False),
            ground_truth=self.ground_truth(),
            nominal_thickness_A=self.attr("/", "nominal_thickness_A", required=False),
            nominal_slices=self.attr("/", "nominal_slices", required=False),
            simulation=self.simulation(),
        )


def read_dataset(path: str | Path) -> PtychoDataset:
    """Read and validate the dataset file at ``path``.

    Returns patterns as (n_positions, k, k) float32 counts, positions as
    (n_positions, 2) float64 [Å] and the ground truth potential as
    (n_slices, ny, nx) float32 [V·Å]. Raises DatasetFileError for any problem.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetFileError(f"{path}: does not exist")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise DatasetFileError(
            f"{path}: is not a readable HDF5 file (truncated or corrupt?)"
        ) from err
    with file:
        dataset = _Reader(path, file).dataset()
    return _validated(dataset, path)
