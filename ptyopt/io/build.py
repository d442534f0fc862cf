"""From a source and its metadata to a validated :class:`PtychoDataset`.

The file's own calibration fills what it knows; an explicit metadata value overrides
it, and every override is reported. Then: patterns checked (shape, finite, counts ≥ 0),
positions from the scan (:mod:`ptyopt.io.scan`), the detector oriented, centred,
cropped and binned (:mod:`ptyopt.io.detector`), the optics and sampling checked (the
detector must reach beyond the bright-field disc), the ground truth resampled
(:mod:`ptyopt.io.ground_truth`). Any problem raises one ConfigError naming the file and
the key; nothing is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt import physics
from ptyopt.data.dataset import Optics, PtychoDataset
from ptyopt.io import detector
from ptyopt.io.abtem_zarr import is_abtem_zarr, read_abtem_source
from ptyopt.io.arrays import hdf5_datasets, read_array, read_plain_source, split_inner_path
from ptyopt.io.ground_truth import read_ground_truth
from ptyopt.io.metadata import Metadata
from ptyopt.io.rsciio_files import read_rsciio_source, rsciio_reader
from ptyopt.io.scan import raster_A, specimen_positions_A
from ptyopt.io.source import SourceScan, import_error

DISC_RADIUS_TOLERANCE = 0.15
"""Relative mismatch between the bright-field disc's radius and semiangle_mrad above which
the import warns that a calibration may be wrong."""


@dataclass(frozen=True)
class Imported:
    """An imported dataset and the console lines describing how it was made (each
    override of the file's values, the centre found, warnings)."""

    dataset: PtychoDataset
    notes: list[str] = field(default_factory=list)


def read_source(text: str, metadata: Metadata) -> SourceScan:
    """Dispatch on the source: ``FILE:/inner`` or ``.npy`` → plain arrays; a zarr store
    → abTEM; an extension rosettasciio reads → rosettasciio."""
    path, inner = split_inner_path(text)
    if inner is not None or path.suffix == ".npy":
        return read_plain_source(text)
    if not path.exists():
        raise import_error(path, "source", "does not exist")
    if is_abtem_zarr(path):
        return read_abtem_source(text)
    if rsciio_reader(path) is not None:
        m = metadata.values
        energy = None if m.energy_kV is None else m.energy_kV * 1e3
        shape = None if m.scan_shape is None or len(m.scan_shape) != 2 else tuple(m.scan_shape)
        return read_rsciio_source(text, energy, shape)
    if path.suffix in (".h5", ".hdf"):
        listing = ", ".join(f"{name} {shape}" for name, shape in hdf5_datasets(path))
        raise import_error(
            path, "source", f"name the patterns' dataset as {path}:/path; the file holds: {listing}"
        )
    raise import_error(
        path,
        "source",
        "is not a .npy file, an HDF5 dataset (FILE.h5:/path), an abTEM zarr store or a "
        "format rosettasciio reads",
    )


class _Resolver:
    """Takes each value from the metadata or the file, checks it and records notes."""

    def __init__(self, scan: SourceScan, metadata: Metadata) -> None:
        self.label = scan.label
        self.metadata = metadata
        self.notes: list[str] = []

    def error(self, key: str, problem: str):
        return import_error(self.label, key, problem)

    def origin(self, key: str, from_file: bool) -> str:
        where = self.metadata.where(key)
        return where if where or not from_file else " (from the file)"

    def pick(self, key: str, known: Any, unit: str, required: str | None = None) -> Any:
        """The explicit value of ``key``, else the file's ``known`` one (in the key's own
        units); an explicit value that differs from the file's is reported; ``required``
        (a hint) makes a missing value an error."""
        explicit = getattr(self.metadata.values, key)
        if explicit is not None:
            if known is not None and not np.allclose(explicit, known, rtol=1e-6, atol=0):
                self.notes.append(
                    f"metadata.{key} = {_show(explicit)} {unit}{self.metadata.where(key)} "
                    f"overrides the file's {_show(known)} {unit}"
                )
            return explicit
        if known is None and required is not None:
            raise self.error(f"metadata.{key}", f"is missing: {required}")
        return known

    def number(self, key: str, value: Any, from_file: bool, positive: bool = True) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or (positive and value <= 0)
        ):
            expected = "a number > 0" if positive else "a finite number"
            raise self.error(
                f"metadata.{key}", f"is {value!r}{self.origin(key, from_file)}, expected {expected}"
            )
        return float(value)

    def pair(self, key: str, value: Any, from_file: bool, positive: bool) -> tuple[float, float]:
        """A (y, x) pair; a single number stands for both."""
        values = [value, value] if isinstance(value, (int, float)) else value
        if not isinstance(values, (list, tuple)) or len(values) != 2:
            raise self.error(
                f"metadata.{key}",
                f"is {value!r}{self.origin(key, from_file)}, expected a number or (y, x)",
            )
        return (
            self.number(key, values[0], from_file, positive),
            self.number(key, values[1], from_file, positive),
        )

    def integer(self, key: str, value: Any, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(
                f"metadata.{key}",
                f"is {value!r}{self.metadata.where(key)}, expected an integer >= {minimum}",
            )
        return int(value)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _checked_patterns(r: _Resolver, patterns: np.ndarray) -> np.ndarray:
    if patterns.ndim not in (3, 4) or min(patterns.shape) < 1:
        raise r.error(
            "patterns",
            f"have shape {patterns.shape}, expected (scan_y, scan_x, k_y, k_x) or "
            "(n_positions, k_y, k_x)",
        )
    if patterns.dtype.kind not in "iuf":
        raise r.error("patterns", f"have dtype {patterns.dtype}, expected real numbers")
    patterns = np.asarray(patterns)
    if patterns.dtype.kind == "f":
        n_bad = patterns.size - int(np.count_nonzero(np.isfinite(patterns)))
        if n_bad:
            raise r.error("patterns", f"contain {n_bad} non-finite values (NaN or inf)")
    n_negative = int(np.count_nonzero(patterns < 0))
    if n_negative:
        raise r.error(
            "patterns",
            f"contain {n_negative} negative counts (min {patterns.min():g}); patterns are "
            "counts: subtract a smaller background or clip at 0 before import",
        )
    return patterns


def _scan_positions(r: _Resolver, scan: SourceScan, patterns: np.ndarray) -> np.ndarray:
    """(n, 2) (y, x) positions [Å] in the specimen frame, row-major for a raster."""
    m, cal = r.metadata.values, scan.calibration
    if patterns.ndim == 4:
        shape = patterns.shape[:2]
        if m.scan_shape is not None and tuple(m.scan_shape) != shape:
            raise r.error(
                "metadata.scan_shape",
                f"is {m.scan_shape}{r.metadata.where('scan_shape')} but the file holds a "
                f"{shape[0]}×{shape[1]} scan",
            )
    else:
        shape = m.scan_shape
        if shape is not None:
            if len(shape) != 2 or min(shape) < 1:
                raise r.error(
                    "metadata.scan_shape",
                    f"is {shape}{r.metadata.where('scan_shape')}, expected (scan_y, scan_x) ≥ 1",
                )
            if shape[0] * shape[1] != len(patterns):
                raise r.error(
                    "metadata.scan_shape",
                    f"is {list(shape)}{r.metadata.where('scan_shape')}: "
                    f"{shape[0] * shape[1]} positions, but the file holds {len(patterns)} "
                    "patterns",
                )
            shape = (int(shape[0]), int(shape[1]))
    n = int(np.prod(patterns.shape[:-2]))
    rotation = r.number("scan_rotation_deg", m.scan_rotation_deg or 0.0, False, positive=False)
    origin_given = m.scan_origin_A is not None
    if m.positions_A is not None or cal.positions_A is not None:
        if m.scan_step_A is not None:
            raise r.error(
                "metadata.scan_step_A",
                f"is given{r.metadata.where('scan_step_A')} with explicit positions; give "
                "either positions_A or scan_step_A",
            )
        if m.positions_A is not None:
            positions = np.asarray(read_array(m.positions_A, "metadata.positions_A"))
            where, key = split_inner_path(m.positions_A)[0], "metadata.positions_A"
        else:
            positions, where, key = cal.positions_A, r.label, "positions"
        if positions.ndim != 2 or positions.shape[1] != 2 or positions.dtype.kind not in "iuf":
            raise import_error(
                where, key, f"has shape {positions.shape} {positions.dtype}, expected (n, 2) (y, x)"
            )
        if len(positions) != n:
            raise import_error(
                where, key, f"has {len(positions)} positions but the source holds {n} patterns"
            )
        if not np.isfinite(positions).all():
            raise import_error(where, key, "contains NaN or inf")
        scan_A = positions.astype(np.float64)
        origin = r.pair("scan_origin_A", m.scan_origin_A, False, False) if origin_given else (0, 0)
    else:
        if shape is None:
            raise r.error(
                "metadata.scan_shape",
                f"is missing: the file holds a stack of {n} patterns; give "
                "scan_shape=[scan_y, scan_x] or positions_A",
            )
        step = r.pick(
            "scan_step_A",
            cal.scan_step_A and list(cal.scan_step_A),
            "Å",
            "the file has no scan calibration; give scan_step_A [Å], a number or [y, x]",
        )
        step = r.pair("scan_step_A", step, m.scan_step_A is None, positive=True)
        known_origin = cal.scan_origin_A and list(cal.scan_origin_A)
        origin = r.pick("scan_origin_A", known_origin, "Å") or (0.0, 0.0)
        origin = r.pair("scan_origin_A", origin, not origin_given, positive=False)
        scan_A = raster_A(shape, step)
    return specimen_positions_A(scan_A, rotation, origin)


def _pattern_centre(
    r: _Resolver, scan: SourceScan, oriented: np.ndarray, raw_shape: tuple[int, int]
) -> tuple[tuple[float, float], detector.BrightFieldDisc]:
    """The pattern centre (y, x) on the oriented detector, and its bright-field disc."""
    m = r.metadata.values
    try:
        disc = detector.bright_field_disc(oriented.mean(axis=0))
    except ValueError as err:
        raise r.error("patterns", str(err)) from None
    known = scan.calibration.pattern_centre_px
    centre = r.pick("pattern_centre_px", known and list(known), "px")
    if centre is None:
        r.notes.append(
            f"pattern centre (y, x) = ({disc.centre_px[0]:.2f}, {disc.centre_px[1]:.2f}) px, "
            f"the bright-field disc's (radius {disc.radius_px:.1f} px)"
        )
        return disc.centre_px, disc
    y, x = r.pair("pattern_centre_px", centre, m.pattern_centre_px is None, positive=False)
    if not (-0.5 <= y <= raw_shape[0] - 0.5 and -0.5 <= x <= raw_shape[1] - 0.5):
        raise r.error(
            "metadata.pattern_centre_px",
            f"is ({y:g}, {x:g}){r.metadata.where('pattern_centre_px')}, outside the "
            f"{raw_shape[0]}×{raw_shape[1]} px detector",
        )
    centre = detector.oriented_point(
        (y, x), raw_shape, bool(m.transpose_detector), bool(m.flip_detector)
    )
    off = math.dist(centre, disc.centre_px)
    if off > 2:
        r.notes.append(
            f"warning: the pattern centre lies {off:.1f} px from the bright-field disc's "
            f"centre ({disc.centre_px[0]:.2f}, {disc.centre_px[1]:.2f}) px"
        )
    return centre, disc


def build_dataset(scan: SourceScan, metadata: Metadata) -> Imported:
    """The dataset of a source's patterns and calibration with the metadata."""
    r = _Resolver(scan, metadata)
    m, cal = metadata.values, scan.calibration
    r.notes.append(f"read as {scan.kind}: patterns {scan.patterns.shape} {scan.patterns.dtype}")
    patterns = _checked_patterns(r, scan.patterns)
    positions = _scan_positions(r, scan, patterns)
    patterns = patterns.reshape(-1, *patterns.shape[-2:])

    raw_shape = (int(patterns.shape[-2]), int(patterns.shape[-1]))
    patterns, shape = detector.oriented(patterns, bool(m.transpose_detector), bool(m.flip_detector))
    centre, disc = _pattern_centre(r, scan, patterns, raw_shape)
    if m.crop_px is None:
        if shape[0] != shape[1]:
            raise r.error(
                "metadata.crop_px",
                f"is missing: the detector is {shape[0]}×{shape[1]} px, not square; give "
                "crop_px=N to crop an N px square around the pattern centre",
            )
        crop, corner = shape[0], (0, 0)
    else:
        crop = r.integer("crop_px", m.crop_px)
        corner = tuple(detector.crop_corner(c, s, crop) for c, s in zip(centre, shape, strict=True))
        if None in corner:
            raise r.error(
                "metadata.crop_px",
                f"is {crop}{metadata.where('crop_px')}: a {crop} px square around the pattern "
                f"centre ({centre[0]:.2f}, {centre[1]:.2f}) leaves the {shape[0]}×{shape[1]} "
                "px detector",
            )
    bin_factor = r.integer("bin", 1 if m.bin is None else m.bin)
    if crop % bin_factor:
        raise r.error(
            "metadata.bin",
            f"is {bin_factor}{metadata.where('bin')}, which does not divide the {crop} px "
            "detector; crop to a multiple of it (crop_px)",
        )

    energy_kV = r.pick(
        "energy_kV",
        None if cal.energy_eV is None else cal.energy_eV / 1e3,
        "kV",
        "the file does not record the beam energy; give it [kV]",
    )
    energy_eV = 1e3 * r.number("energy_kV", energy_kV, m.energy_kV is None)
    semiangle = r.number(
        "semiangle_mrad",
        r.pick(
            "semiangle_mrad",
            cal.semiangle_mrad,
            "mrad",
            "give the probe's convergence semi-angle [mrad]",
        ),
        m.semiangle_mrad is None,
    )
    pitch = r.number(
        "detector_mrad_per_px",
        r.pick(
            "detector_mrad_per_px",
            cal.detector_mrad_per_px,
            "mrad",
            "the file carries no detector calibration; give the pitch [mrad per pixel]",
        ),
        m.detector_mrad_per_px is None,
    )
    if m.defocus_A is None:
        raise r.error(
            "metadata.defocus_A",
            "is missing: give abTEM's defocus [Å] (C10 = −defocus; positive: crossover "
            "below the entrance surface)",
        )
    defocus = r.number("defocus_A", m.defocus_A, False, positive=False)
    cs = r.number("Cs_A", 0.0 if m.Cs_A is None else m.Cs_A, False, positive=False)

    pixels, binned_pitch = crop // bin_factor, pitch * bin_factor
    reach = pixels / 2 * binned_pitch
    if reach <= semiangle:
        raise r.error(
            "metadata.detector_mrad_per_px",
            f"the detector ({pixels} px of {binned_pitch:g} mrad after crop and bin) reaches "
            f"{reach:.2f} mrad, not beyond the {semiangle:g} mrad bright-field disc",
        )
    disc_mrad = disc.radius_px * pitch
    if abs(disc_mrad - semiangle) > DISC_RADIUS_TOLERANCE * semiangle:
        r.notes.append(
            f"warning: the bright-field disc's radius ({disc.radius_px:.1f} px = "
            f"{disc_mrad:.1f} mrad) differs from semiangle_mrad = {semiangle:g} mrad by "
            f"{abs(disc_mrad / semiangle - 1):.0%}: check detector_mrad_per_px and semiangle_mrad"
        )
    patterns = detector.crop_and_bin(patterns, corner, crop, bin_factor)
    pixel_size = physics.reconstruction_pixel_size_A(energy_eV, pixels, binned_pitch)
    window = pixels * pixel_size
    probe = 2 * physics.probe_radius_A(energy_eV, semiangle, defocus)
    if probe >= window:
        r.notes.append(
            f"warning: the probe window ({window:.1f} Å) does not hold the probe "
            f"(diameter ~{probe:.1f} Å at {defocus:g} Å defocus)"
        )

    optional = {
        key: r.number(key, getattr(m, key), False)
        for key in ("thickness_A", "dose_e_per_A2")
        if getattr(m, key) is not None
    }
    dataset = PtychoDataset(
        name=m.name or Path(split_inner_path(scan.label)[0]).stem,
        patterns=patterns,
        positions_A=positions,
        optics=Optics(energy_eV, semiangle, {"C10": -defocus, "C30": cs}),
        angular_sampling_mrad=binned_pitch,
        pattern_centre_px=detector.centre_after(centre, corner, bin_factor),
        dose_e_per_A2=optional.get("dose_e_per_A2"),
        ground_truth=(
            None
            if m.ground_truth is None
            else read_ground_truth(m.ground_truth, pixel_size, energy_eV)
        ),
        nominal_thickness_A=optional.get("thickness_A"),
        nominal_slices=None if m.slices is None else r.integer("slices", m.slices),
    )
    return Imported(dataset, r.notes)


def import_dataset(source: str, metadata: Metadata) -> Imported:
    """Read ``source`` and build its dataset with ``metadata`` (nothing is written)."""
    return build_dataset(read_source(source, metadata), metadata)
