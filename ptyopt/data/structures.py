"""Crystal specimens built with ASE, named the way a microscopist names them.

Each builder returns an orthorhombic slab whose lateral cell is square (so that the
reconstruction pixel is square, DESIGN §6), periodic laterally, with the beam along z.
A cell that is not square for the requested repeats is strained to the mean edge; the
strain is returned so that it is recorded with the simulation.

Substitutional dopants are placed the way a microscopist names them: an element on the
host atom nearest to a column position (y, x) and a depth below the entrance surface.
The slab is centred along the beam in its cell (``atoms.center(axis=2)``), and abTEM
slices the cell from z = 0, the entrance surface, so an atom's depth is its z.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal

from ptyopt.data.dataset import DopantSite
from ptyopt.errors import ConfigError

# Room-temperature rms displacements per Cartesian direction [Å] (Debye–Waller
# factors B = 8π²u²; SrTiO3: Sr 0.55, Ti 0.40, O 0.65 Å²; Si: 0.46 Å²). Dopants: B of
# the elemental crystal at 293 K from the parametrisation of H. X. Cao and L.-M. Peng,
# Acta Cryst. A55, 926 (1999): Sb 0.63, Hf 0.30, Bi 1.14 Å². A substituted atom's own
# vibration in the host lattice is not tabulated; its element's value stands in for it.
RMS_DISPLACEMENT_A = {
    "Sr": 0.0835,
    "Ti": 0.0712,
    "O": 0.0907,
    "Si": 0.0763,
    "Sb": 0.0894,
    "Hf": 0.0619,
    "Bi": 0.1203,
}
# A requested dopant position must lie this close to a host column laterally [Å].
COLUMN_TOLERANCE_A = 0.5


@dataclass(frozen=True)
class Specimen:
    """A slab: atoms [Å], lateral cell edge [Å], thickness [Å], strain applied to
    square the cell (relative, y minus x), (y, x) lateral period of the unit cell
    after squaring [Å], and the substituted sites (see :class:`DopantSite`)."""

    atoms: Atoms
    cell_edge_A: float
    thickness_A: float
    lateral_strain: float
    host_period_A: tuple[float, float]
    dopant_sites: tuple[DopantSite, ...] = ()


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


def build_specimen(
    name: str,
    lateral_repeats: tuple[int, int],
    thickness_A: float,
    dopants: Sequence[DopantSite] = (),
) -> Specimen:
    """Slab of structure ``name`` with (y, x) lateral repeats and the number of unit
    cells along the beam that comes closest to ``thickness_A``, with ``dopants``
    substituted (each given by the position it should be nearest to, see
    :func:`substitute`)."""
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
    specimen = Specimen(
        atoms,
        float(edge),
        period_z * n_z,
        float((edge_y - edge_x) / edge),
        (float(edge / lateral_repeats[0]), float(edge / lateral_repeats[1])),
    )
    return substitute(specimen, dopants, period_z) if dopants else specimen


def substitute(specimen: Specimen, dopants: Sequence[DopantSite], period_z_A: float) -> Specimen:
    """``specimen`` with each dopant on the atom of its host element nearest to its
    position: within :data:`COLUMN_TOLERANCE_A` of (y, x) laterally (periodic cell) and
    within half a unit cell (``period_z_A``/2) of its depth. The returned sites are the
    atoms actually replaced. One dopant per column (the depth score needs it); a bad
    position raises :class:`ConfigError` naming ``dataset.structure.dopants[i]``."""
    atoms = specimen.atoms.copy()
    edge = specimen.cell_edge_A
    symbols = np.array(atoms.get_chemical_symbols())
    yx = atoms.positions[:, [1, 0]] % edge
    depth = atoms.positions[:, 2]
    sites: list[DopantSite] = []
    for index, dopant in enumerate(dopants):
        key = f"dataset.structure.dopants[{index}]"
        request = f"(y, x) = ({dopant.y_A:.3f}, {dopant.x_A:.3f}) Å"
        lateral = _periodic_distance(yx, (dopant.y_A, dopant.x_A), edge)
        column = np.flatnonzero((symbols == dopant.host) & (lateral <= COLUMN_TOLERANCE_A))
        if column.size == 0:
            raise ConfigError(
                f"{key}: no {dopant.host} column within {COLUMN_TOLERANCE_A} Å of {request}"
            )
        atom = column[np.argmin(np.abs(depth[column] - dopant.depth_A))]
        if abs(depth[atom] - dopant.depth_A) > period_z_A / 2:
            raise ConfigError(
                f"{key}: no {dopant.host} atom within half a unit cell "
                f"({period_z_A / 2:.2f} Å) of depth {dopant.depth_A} Å in the column at "
                f"{request} (the slab is {specimen.thickness_A:.2f} Å thick)"
            )
        for other, site in enumerate(sites):
            if _periodic_distance(yx[atom][None], (site.y_A, site.x_A), edge)[0] < 0.1:
                raise ConfigError(
                    f"{key}: lies in the column of dopants[{other}]; place one dopant per column"
                )
        symbols[atom] = dopant.element
        sites.append(
            DopantSite(
                dopant.element,
                dopant.host,
                float(yx[atom, 0]),
                float(yx[atom, 1]),
                float(depth[atom]),
            )
        )
    atoms.set_chemical_symbols(symbols.tolist())
    return replace(specimen, atoms=atoms, dopant_sites=tuple(sites))


def _periodic_distance(yx_A: np.ndarray, point_A: tuple[float, float], edge_A: float) -> np.ndarray:
    """Lateral distances [Å] (n,) from positions (n, 2) to ``point_A`` in a periodic
    square cell of edge ``edge_A`` (minimum image)."""
    delta = (yx_A - np.asarray(point_A) + edge_A / 2) % edge_A - edge_A / 2
    return np.hypot(delta[:, 0], delta[:, 1])
