"""Crystal specimens built with ASE, named the way a microscopist names them.

Each builder returns an orthorhombic slab whose lateral cell is square (so that the
reconstruction pixel is square, DESIGN §6), periodic laterally, with the beam along z.
A cell that is not square for the requested repeats is strained to the mean edge; the
strain is returned so that it is recorded with the simulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal

# Room-temperature rms displacements per Cartesian direction [Å] (Debye–Waller
# factors B = 8π²u²; SrTiO3: Sr 0.55, Ti 0.40, O 0.65 Å²; Si: 0.46 Å²).
RMS_DISPLACEMENT_A = {"Sr": 0.0835, "Ti": 0.0712, "O": 0.0907, "Si": 0.0763}


@dataclass(frozen=True)
class Specimen:
    """A slab: atoms [Å], lateral cell edge [Å], thickness [Å], strain applied to
    square the cell (relative, y minus x)."""

    atoms: Atoms
    cell_edge_A: float
    thickness_A: float
    lateral_strain: float


def _srtio3_001() -> Atoms:
    return crystal(
        ["Sr", "Ti", "O"],
        basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
        spacegroup=221,
        cellpar=[3.905, 3.905, 3.905, 90, 90, 90],
    )


def _si_110() -> Atoms:
    """Orthogonal Si cell with [110] along the beam: x ∥ [1-10] (a/√2), y ∥ [001] (a),
    z ∥ [110] (a/√2); 4 atoms, found by rotating the cubic cell's lattice."""
    a = 5.431
    cubic = bulk("Si", "diamond", a=a, cubic=True) * (3, 3, 3)
    x, y, z = cubic.positions.T
    rotated = np.stack([(x - y) / np.sqrt(2), z, (x + y) / np.sqrt(2)], axis=1)
    edges = np.array([a / np.sqrt(2), a, a / np.sqrt(2)])
    fractional = np.round(rotated / edges, 6) % 1.0
    unique = np.unique(np.round(fractional, 4) % 1.0, axis=0)
    return Atoms("Si" * len(unique), scaled_positions=unique, cell=edges, pbc=True)


STRUCTURES: dict[str, Callable[[], Atoms]] = {"SrTiO3_001": _srtio3_001, "Si_110": _si_110}


def build_specimen(name: str, lateral_repeats: tuple[int, int], thickness_A: float) -> Specimen:
    """Slab of structure ``name`` with (y, x) lateral repeats and the number of unit
    cells along the beam that comes closest to ``thickness_A``."""
    if name not in STRUCTURES:
        raise ValueError(f"unknown structure {name!r}; choose one of {sorted(STRUCTURES)}")
    unit = STRUCTURES[name]()
    cell = (
        np.diag(unit.cell.array)
        if np.allclose(unit.cell.array, np.diag(np.diag(unit.cell.array)))
        else None
    )
    if cell is None:
        raise ValueError(f"structure {name!r} does not have an orthorhombic cell")
    period_z = float(cell[2])
    n_z = max(1, int(round(thickness_A / period_z)))
    atoms = unit * (int(lateral_repeats[1]), int(lateral_repeats[0]), n_z)
    edge_x, edge_y = cell[0] * lateral_repeats[1], cell[1] * lateral_repeats[0]
    edge = 0.5 * (edge_x + edge_y)
    atoms.set_cell([edge, edge, period_z * n_z], scale_atoms=True)
    atoms.center(axis=2)
    return Specimen(atoms, float(edge), period_z * n_z, float((edge_y - edge_x) / edge))
