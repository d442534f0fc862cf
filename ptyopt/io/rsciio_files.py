"""Detector and microscope files read through RosettaSciIO (``rsciio``): EMPAD
(``.xml`` header + ``.raw``), Quantum Detectors Merlin (``.mib``, with its ``.hdr``),
Berkeley EMD (``.emd``), and any other format rsciio reads by its extension
(HyperSpy ``.hspy``, Digital Micrograph, blockfile, MRC, …).

rsciio hands back each signal as a dict: ``data`` and, in array order, ``axes`` with
``size``, ``scale``, ``offset`` and ``units``. The last two axes are the detector
(k_y, k_x), the leading one or two the scan (HyperSpy's order: rows, then columns).
The orientation of the detector is rsciio's: e.g. its Merlin reader flips each frame's
rows (``np.flip(data, axis=-2)``), so a ``.mib`` imports as HyperSpy shows it.

Calibrations taken from the axes, converted to ptyopt's units:
- scan axes in m, mm, µm, nm, Å or pm → ``scan_step_A`` (the scale) and
  ``scan_origin_A`` (the offset);
- detector axes in mrad, µrad, rad → ``detector_mrad_per_px``; in reciprocal lengths
  (1/m, 1/nm, 1/Å) → mrad through the wavelength, α = λ·k (needs the energy).
  Pixel units ("", px, none) carry no calibration.
- HyperSpy metadata ``Acquisition_instrument.TEM.beam_energy`` [kV] and
  ``convergence_angle`` [mrad], where a reader fills them.
Where several plugins claim an extension, :data:`PREFERRED_READERS` decides (``.xml`` is
EMPAD); ``.h5`` is left to the plain HDF5 reader (``FILE.h5:/path``).
The detector axes' offsets are *not* taken as the pattern centre: readers fill them
with a nominal value (EMPAD: −64 px), not the beam's position; the importer finds the
centre from the bright-field disc unless ``pattern_centre_px`` is given.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt import physics
from ptyopt.io.source import FileCalibration, SourceScan, import_error

_LENGTH_A = {"m": 1e10, "mm": 1e7, "um": 1e4, "nm": 10.0, "a": 1.0, "angstrom": 1.0, "pm": 1e-2}
_ANGLE_MRAD = {"rad": 1e3, "mrad": 1.0, "urad": 1e-3}
_PIXEL_UNITS = {"", "px", "pixel", "pixels", "none", "<undefined>", "undefined", "a.u."}


def _normalised_unit(units: Any) -> str:
    """Unit text lower-cased, spaces dropped, µ/μ → u, Å → a, ⁻¹ and ^-1 → a leading 1/."""
    text = "" if units is None else str(units).strip().lower().replace(" ", "")
    text = text.replace("µ", "u").replace("μ", "u").replace("å", "a").replace("Å", "a")
    for inverse in ("⁻¹", "^-1", "**-1", "-1"):
        if text.endswith(inverse) and not text.startswith("1/"):
            text = "1/" + text[: -len(inverse)]
    return text


def length_in_A(value: float, units: Any) -> float | None:
    """A length [units] in Å; ``None`` for pixel units; ValueError for other units."""
    unit = _normalised_unit(units)
    if unit in _PIXEL_UNITS:
        return None
    if unit not in _LENGTH_A:
        raise ValueError(f"unit {units!r} is not a length (m, mm, µm, nm, Å, pm)")
    return float(value) * _LENGTH_A[unit]


def angle_in_mrad(value: float, units: Any, energy_eV: float | None) -> float | None:
    """A detector pitch [units] in mrad: angles directly, reciprocal lengths k through
    α = λ·k [rad] (``energy_eV`` needed); ``None`` for pixel units; ValueError else."""
    unit = _normalised_unit(units)
    if unit in _PIXEL_UNITS:
        return None
    if unit in _ANGLE_MRAD:
        return float(value) * _ANGLE_MRAD[unit]
    match = re.fullmatch(r"1/(.+)", unit)
    if match and match.group(1) in _LENGTH_A:
        if energy_eV is None:
            raise ValueError(f"unit {units!r} needs the energy (metadata.energy_kV) to give mrad")
        per_A = float(value) / _LENGTH_A[match.group(1)]
        return physics.wavelength_A(energy_eV) * per_A * 1e3
    raise ValueError(f"unit {units!r} is neither an angle (mrad) nor a reciprocal length (1/nm)")


PREFERRED_READERS = {"xml": "EMPAD", "mrc": "MRC", "hdf5": "HSPY", "img": "JEOL"}
"""The reader chosen where several rsciio plugins claim an extension (4D-STEM first)."""


def rsciio_reader(path: Path) -> tuple[str, Any] | None:
    """(format name, file_reader) of the rsciio plugin for this file's extension, or
    ``None`` if none reads it. ``.h5`` files are left to the plain HDF5 reader (several
    unrelated plugins claim the extension)."""
    from rsciio import IO_PLUGINS

    extension = path.suffix.lstrip(".").lower()
    if extension == "h5":
        return None
    names = [
        plugin["name"]
        for plugin in IO_PLUGINS
        if extension in (e.lower() for e in plugin["file_extensions"])
    ]
    if not names:
        return None
    name = PREFERRED_READERS.get(extension, names[0])
    plugin = next(p for p in IO_PLUGINS if p["name"] == name)
    module = importlib.import_module(plugin["api"])
    return (name, module.file_reader) if hasattr(module, "file_reader") else None


def _diffraction_signal(path: Path, signals: list[dict]) -> dict:
    """The one signal with a scan (1 or 2 axes) and a detector (2 axes)."""
    candidates = [s for s in signals if np.ndim(s["data"]) in (3, 4)]
    if not candidates:
        shapes = [tuple(np.shape(s["data"])) for s in signals]
        raise import_error(
            path, "source", f"holds no 3D or 4D signal (shapes {shapes}); expected 4D-STEM data"
        )
    if len(candidates) > 1:
        sizes = [np.size(s["data"]) for s in candidates]
        largest = [s for s, n in zip(candidates, sizes, strict=True) if n == max(sizes)]
        if len(largest) > 1:
            titles = [s.get("metadata", {}).get("General", {}).get("title") for s in largest]
            raise import_error(
                path, "source", f"holds several 4D-STEM signals of the same size: {titles}"
            )
        return largest[0]
    return candidates[0]


def _instrument(signal: dict) -> dict[str, float]:
    """Beam energy [eV] and convergence semi-angle [mrad] from HyperSpy metadata."""
    tem = signal.get("metadata", {}).get("Acquisition_instrument", {}).get("TEM", {})
    found = {}
    if isinstance(tem.get("beam_energy"), (int, float)):
        found["energy_eV"] = float(tem["beam_energy"]) * 1e3
    if isinstance(tem.get("convergence_angle"), (int, float)):
        found["semiangle_mrad"] = float(tem["convergence_angle"])
    return found


def calibration_from_signal(
    path: Path, signal: dict, energy_eV: float | None = None
) -> FileCalibration:
    """Calibrations of an rsciio signal dict (see the module docstring); a reciprocal
    detector calibration is converted with ``energy_eV`` if given, else the file's."""
    axes = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
    found: dict[str, Any] = _instrument(signal)
    energy = energy_eV if energy_eV is not None else found.get("energy_eV")
    scan, detector = axes[:-2], axes[-2:]
    try:
        steps = [length_in_A(a.get("scale", 1.0), a.get("units")) for a in scan]
        origins = [length_in_A(a.get("offset", 0.0), a.get("units")) for a in scan]
    except ValueError as err:
        raise import_error(path, "scan axes", str(err)) from None
    if len(scan) == 2 and None not in steps:
        found["scan_step_A"] = (steps[0], steps[1])
        found["scan_origin_A"] = (origins[0], origins[1])
    try:
        pitches = [angle_in_mrad(a.get("scale", 1.0), a.get("units"), energy) for a in detector]
    except ValueError as err:
        raise import_error(path, "detector axes", str(err)) from None
    if None not in pitches:
        if abs(pitches[0] - pitches[1]) > 1e-6 * abs(pitches[1]):
            raise import_error(
                path,
                "detector axes",
                f"have pitches {pitches[0]:.6g} (y) and {pitches[1]:.6g} (x) mrad; "
                "ptyopt needs square pixels",
            )
        found["detector_mrad_per_px"] = pitches[1]
    return FileCalibration(**found)


def read_rsciio_source(
    text: str, energy_eV: float | None, scan_shape: tuple[int, int] | None
) -> SourceScan:
    """Patterns and calibrations of a file rsciio reads. ``energy_eV`` (the user's,
    if given) converts a reciprocal-length detector calibration to mrad in place of the
    file's energy;
    ``scan_shape`` (y, x) tells a Merlin reader the raster when no ``.hdr`` does."""
    path = Path(text)
    if not path.is_file():
        raise import_error(path, "source", "does not exist")
    plugin = rsciio_reader(path)
    if plugin is None:
        raise import_error(path, "source", f"no reader for {path.suffix!r} files")
    name, reader = plugin
    options: dict[str, Any] = {}
    if name == "QuantumDetector" and scan_shape is not None:
        options["navigation_shape"] = (scan_shape[1], scan_shape[0])  # rsciio: (x, y)
    try:
        signals = reader(str(path), lazy=False, **options)
    except Exception as err:  # every reader raises its own kinds
        raise import_error(path, "source", f"rosettasciio ({name}) cannot read it: {err}") from None
    signal = _diffraction_signal(path, signals)
    return SourceScan(
        patterns=np.asarray(signal["data"]),
        calibration=calibration_from_signal(path, signal, energy_eV),
        kind=f"rosettasciio:{name}",
        label=text,
    )
