"""In-memory form of a ptychographic dataset: patterns, scan, optics and ground truth.

Conventions (DESIGN §4): lengths in Å, angles in mrad, energy in eV, arrays ordered
(..., y, x). Patterns are stored as a detector records them, zero frequency near the
centre; ``pattern_centre_px`` gives that centre exactly (fractional after binning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptyopt import physics


@dataclass(frozen=True)
class Optics:
    """Probe-forming optics.

    energy_eV: beam energy [eV]. semiangle_mrad: convergence semi-angle [mrad].
    aberrations: polar aberration coefficients in abTEM's naming (``C10``, ``C12``,
    ``phi12``, ``C30`` ...), lengths in Å and azimuths in rad. ``C10 = -defocus``:
    a positive defocus puts the crossover below the entrance surface (abTEM's sign).
    """

    energy_eV: float
    semiangle_mrad: float
    aberrations: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DopantSite:
    """A substitutional dopant: ``element`` on a site of ``host``, at lateral position
    (y_A, x_A) [Å] in the frame of the ground-truth cell (pixel j of the ground truth
    lies at j·sampling_A) and ``depth_A`` [Å] below the entrance surface (z = 0 of the
    potential's slicing; slice i spans [i, i + 1)·slice_thickness_A)."""

    element: str
    host: str
    y_A: float
    x_A: float
    depth_A: float


@dataclass(frozen=True)
class DopantTable:
    """The dopants of a specimen. sites: the substituted sites; host_period_A: (y, x)
    lateral period of the host crystal's unit cell [Å] (the simulated cell holds whole
    periods): a column translated by it is an equivalent column, undoped unless it is
    another dopant's."""

    sites: tuple[DopantSite, ...]
    host_period_A: tuple[float, float]


@dataclass(frozen=True)
class GroundTruth:
    """Thermally averaged (or static) potential of one periodic cell on the
    reconstruction grid.

    potential_V_A: (n_slices, ny, nx) float32, projected potential per
    reconstruction slice [V·Å]; the cell is periodic. slice_thickness_A: thickness of
    each slice [Å]. sampling_A: pixel size [Å], equal to the reconstruction pixel.
    sigma_per_V_A: interaction constant σ [rad/(V·Å)], so a slice's phase is σ·V.
    kind: ``"thermal_mean"`` (mean over ``n_configurations`` frozen-phonon
    configurations), ``"debye_waller"`` (the analytic thermal average: each atom's
    potential blurred by its Debye–Waller factor) or
    ``"static"``. dopants: the substituted sites of a doped
    specimen, ``None`` for a perfect crystal.
    """

    potential_V_A: np.ndarray
    slice_thickness_A: float
    sampling_A: float
    sigma_per_V_A: float
    kind: str
    n_configurations: int
    dopants: DopantTable | None = None

    @property
    def projected_V_A(self) -> np.ndarray:
        """(ny, nx) projected potential summed over slices [V·Å]."""
        return self.potential_V_A.sum(axis=0)


@dataclass(frozen=True)
class PtychoDataset:
    """A 4D-STEM ptychography dataset.

    patterns: (n_positions, ky, kx) float32 counts, zero frequency at
    ``pattern_centre_px`` (y, x), as a detector records them.
    positions_A: (n_positions, 2) float64 probe positions (y, x) [Å] in the frame of
    the simulation cell (origin at its corner).
    angular_sampling_mrad: detector pixel pitch [mrad] (square pixels).
    dose_e_per_A2: electron dose [e/Å²], ``None`` for noise-free expected counts.
    nominal_thickness_A: the specimen thickness as the experimenter knows it [Å]
    (``None``: unknown); nominal_slices: the slicing a reconstruction starts from by
    default (``None``: one slice). With ``optics`` (also nominal: what the microscope
    reported), these are all a reconstruction may know of the specimen and the beam;
    the ground truth is for scoring only.
    simulation: every simulation parameter (JSON-serialisable), ``None`` for
    measured data.
    """

    name: str
    patterns: np.ndarray
    positions_A: np.ndarray
    optics: Optics
    angular_sampling_mrad: float
    pattern_centre_px: tuple[float, float]
    dose_e_per_A2: float | None = None
    ground_truth: GroundTruth | None = None
    nominal_thickness_A: float | None = None
    nominal_slices: int | None = None
    simulation: dict[str, Any] | None = None

    @property
    def n_positions(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def detector_shape(self) -> tuple[int, int]:
        return (int(self.patterns.shape[1]), int(self.patterns.shape[2]))

    @property
    def pixel_size_A(self) -> float:
        """Reconstruction pixel dx = λ / (N·Δα) [Å] (square pixels)."""
        return physics.reconstruction_pixel_size_A(
            self.optics.energy_eV, self.detector_shape[0], self.angular_sampling_mrad
        )
