"""What every reader of a 4D-STEM source hands on: the patterns as the file presents
them and the calibrations the file itself knows, plus the error every import problem
raises.

Conventions (DESIGN §4): (y, x) order, lengths in Å, angles in mrad, energy in eV.
A reader returns the patterns with the detector's rows first, (scan_y, scan_x, k_y, k_x)
or (n_positions, k_y, k_x); sources stored otherwise (abTEM's (x, y) arrays) are
transposed by their reader, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptyopt.errors import ConfigError


def import_error(where: str | Path, key: str, problem: str) -> ConfigError:
    """The one-line error of an import: ``<file>: <key>: <problem>``."""
    return ConfigError(f"{where}: {key}: {problem}")


@dataclass(frozen=True)
class FileCalibration:
    """What a source file says about itself; ``None`` where it says nothing.

    energy_eV: beam energy [eV]; semiangle_mrad: convergence semi-angle [mrad];
    detector_mrad_per_px: detector pixel pitch [mrad] (square pixels);
    pattern_centre_px: (y, x) zero frequency in the file's detector pixels (a
    simulation knows it exactly; a detector file does not);
    scan_step_A: (y, x) raster step [Å]; scan_origin_A: (y, x) position of the first
    pattern [Å]; positions_A: (n, 2) (y, x) probe positions [Å] of a non-raster scan.
    """

    energy_eV: float | None = None
    semiangle_mrad: float | None = None
    detector_mrad_per_px: float | None = None
    pattern_centre_px: tuple[float, float] | None = None
    scan_step_A: tuple[float, float] | None = None
    scan_origin_A: tuple[float, float] | None = None
    positions_A: np.ndarray | None = None


@dataclass(frozen=True)
class SourceScan:
    """One source's patterns and calibration.

    patterns: (scan_y, scan_x, k_y, k_x) or (n_positions, k_y, k_x), any real dtype,
    unchecked (the importer validates); calibration: what the file knows; kind: a
    word for the console (``npy``, ``hdf5``, ``abtem``, ``rosettasciio:EMPAD`` …);
    label: the source as the user named it, for messages.
    """

    patterns: np.ndarray
    calibration: FileCalibration
    kind: str
    label: str
