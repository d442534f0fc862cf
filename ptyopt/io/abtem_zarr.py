"""abTEM's own saved diffraction patterns: a ``DiffractionPatterns`` measurement of a
``GridScan`` (or ``CustomScan``) written with ``.to_zarr(path)`` (abTEM 1.0.x).

What abTEM records is taken from it:
- energy [eV] and the probe's ``semiangle_cutoff`` [mrad] (its metadata);
- the detector pitch [mrad] (``angular_sampling``; square pixels required);
- the zero frequency: abTEM stores the patterns fftshifted (``fftshift`` of its
  reciprocal axes), so zero lies at pixel N//2 of each axis for even and odd N alike
  (the axis ``offset`` is −(N//2)·sampling; checked here, not assumed);
- the scan: a ``GridScan``'s two ``ScanAxis`` give step and start [Å], a
  ``CustomScan``'s ``PositionsAxis`` the positions themselves.

abTEM orders every array (x, y) (DESIGN §15): patterns (scan_x, scan_y, k_x, k_y),
positions (x, y). They are transposed here, once, to ptyopt's (y, x). Its aberrations
are not in the measurement's metadata: give ``defocus_A`` (abTEM's ``defocus``, which is
−C10) and ``Cs_A``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyopt.io.source import FileCalibration, SourceScan, import_error


def is_abtem_zarr(path: Path) -> bool:
    """A zarr store (a folder with zarr metadata) or a file ending in .zarr."""
    return path.suffix == ".zarr" or (path / ".zgroup").is_file() or (path / "zarr.json").is_file()


def _zero_frequency_px(path: Path, axis, size: int) -> float:
    """Pixel of zero frequency of a reciprocal-space axis of ``size`` pixels."""
    if not getattr(axis, "fftshift", False):
        raise import_error(
            path, f"axis {axis.label}", "is not fftshifted; save the patterns as abTEM makes them"
        )
    centre = -float(axis.offset) / float(axis.sampling)
    if abs(centre - size // 2) > 1e-6:
        raise import_error(
            path,
            f"axis {axis.label}",
            f"puts zero frequency at pixel {centre:g}, expected {size // 2} (fftshifted)",
        )
    return float(size // 2)


def read_abtem_source(text: str) -> SourceScan:
    """Patterns (scan_y, scan_x, k_y, k_x) or (n, k_y, k_x) and what abTEM knows of them."""
    import abtem
    from abtem.core.axes import PositionsAxis, ScanAxis
    from abtem.measurements import DiffractionPatterns

    path = Path(text)
    if not path.exists():
        raise import_error(path, "source", "does not exist")
    try:
        measurement = abtem.from_zarr(str(path))
    except Exception as err:  # abTEM raises anything from zarr, KeyError to ValueError
        raise import_error(path, "source", f"is not a readable abTEM zarr store ({err})") from None
    if not isinstance(measurement, DiffractionPatterns):
        raise import_error(
            path,
            "source",
            f"holds abTEM {type(measurement).__name__}, expected DiffractionPatterns "
            "(a PixelatedDetector's result)",
        )
    measurement = measurement.compute()
    ensemble = list(measurement.ensemble_axes_metadata)
    others = [a for a in ensemble if not isinstance(a, (ScanAxis, PositionsAxis))]
    if others:
        raise import_error(
            path,
            "source",
            f"has ensemble axes besides the scan ({', '.join(a.label for a in others)}); "
            "reduce or select them in abTEM before saving",
        )
    array = np.asarray(measurement.array)
    kx_axis, ky_axis = measurement.axes_metadata[-2:]
    n_kx, n_ky = array.shape[-2:]
    centre = (_zero_frequency_px(path, ky_axis, n_ky), _zero_frequency_px(path, kx_axis, n_kx))
    pitch_x, pitch_y = (float(v) for v in measurement.angular_sampling)
    if abs(pitch_x - pitch_y) > 1e-6 * pitch_x:
        raise import_error(
            path,
            "angular_sampling",
            f"is {pitch_x:.6g} mrad along x but {pitch_y:.6g} along y; simulate a square cell",
        )
    metadata = measurement.metadata
    calibration = dict(
        energy_eV=float(metadata["energy"]) if "energy" in metadata else None,
        semiangle_mrad=(
            float(metadata["semiangle_cutoff"]) if "semiangle_cutoff" in metadata else None
        ),
        detector_mrad_per_px=pitch_x,
        pattern_centre_px=centre,
    )
    scans = [a for a in ensemble if isinstance(a, ScanAxis)]
    if len(scans) == 2 and len(ensemble) == 2:
        x_axis, y_axis = scans
        patterns = array.transpose(1, 0, 3, 2)  # (x, y, kx, ky) → (y, x, ky, kx)
        calibration.update(
            scan_step_A=(float(y_axis.sampling), float(x_axis.sampling)),
            scan_origin_A=(float(y_axis.offset), float(x_axis.offset)),
        )
    elif len(ensemble) == 1 and isinstance(ensemble[0], PositionsAxis):
        patterns = array.transpose(0, 2, 1)
        calibration.update(positions_A=np.asarray(ensemble[0].values, np.float64)[:, ::-1])
    else:
        raise import_error(
            path,
            "source",
            f"has scan axes {[type(a).__name__ for a in ensemble]}; expected a GridScan's two "
            "ScanAxis or a CustomScan's PositionsAxis",
        )
    return SourceScan(
        patterns=patterns, calibration=FileCalibration(**calibration), kind="abtem", label=text
    )
