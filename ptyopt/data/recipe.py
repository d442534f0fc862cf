"""Dataset recipes: the configuration that fully describes a simulated dataset.

A recipe is a tree of dataclasses (a Hydra/OmegaConf structured config), loaded from
``conf/dataset/<name>.yaml``; unknown keys and wrong types are rejected by OmegaConf,
impossible values by :func:`validate_recipe`, before any computation. Its hash, with
the abTEM version, names the cached HDF5 file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import MISSING, OmegaConf

from ptyopt import physics
from ptyopt.data.dataset import DopantSite, Optics
from ptyopt.data.structures import RMS_DISPLACEMENT_A, STRUCTURES, Specimen, build_specimen
from ptyopt.errors import ConfigError, warn
from ptyopt.paths import conf_dir
from ptyopt.schema import to_dataclass


@dataclass
class DopantRecipe:
    """A substitutional dopant: ``element`` replaces the ``host`` atom nearest to the
    column at (y_A, x_A) [Å] of the lateral cell (origin at its corner; the scan is
    centred on the cell) and to ``depth_A`` [Å] below the entrance surface."""

    element: str = MISSING
    host: str = MISSING
    y_A: float = MISSING
    x_A: float = MISSING
    depth_A: float = MISSING


@dataclass
class StructureRecipe:
    """Specimen: a named crystal, (y, x) lateral unit-cell repeats, thickness [Å],
    substitutional dopants (none: a perfect crystal)."""

    name: str = "SrTiO3_001"
    lateral_repeats: list[int] = field(default_factory=lambda: [3, 3])
    thickness_A: float = 20.0
    dopants: list[DopantRecipe] = field(default_factory=list)


@dataclass
class OpticsRecipe:
    """Probe: energy [kV], convergence semi-angle [mrad], defocus [Å] (abTEM's sign:
    positive puts the crossover below the entrance surface), spherical aberration Cs [Å].

    Partial coherence (both 0: fully coherent). ``focal_spread_A``: rms of a Gaussian
    defocus spread (temporal incoherence: chromatic spread × Cc); ``source_size_A``:
    rms per axis of a Gaussian effective source demagnified onto the specimen (spatial
    incoherence). The patterns are incoherent averages over Gauss–Hermite quadratures
    of either, with ``simulation.coherence_samples`` nodes (per axis)."""

    energy_kV: float = 300.0
    semiangle_mrad: float = 25.0
    defocus_A: float = 0.0
    Cs_A: float = 0.0
    focal_spread_A: float = 0.0
    source_size_A: float = 0.0


@dataclass
class ScanRecipe:
    """Raster scan centred on the cell: (y, x) positions, step [Å], optional seeded
    Gaussian jitter (rms per axis) [Å]."""

    shape: list[int] = field(default_factory=lambda: [16, 16])
    step_A: float = 0.5
    jitter_A: float = 0.0
    seed: int = 0


@dataclass
class DetectorRecipe:
    """Detector of ``pixels``² pixels, each ``bin``² pixels of the simulation's
    diffraction grid; the angular pitch follows from the cell: Δα = bin·λ/L."""

    pixels: int = 64
    bin: int = 1


@dataclass
class SimulationRecipe:
    """abTEM settings. ``oversampling``: simulation pixels per reconstruction pixel
    (≥ 2 keeps the detector inside abTEM's anti-aliased region). ``slice_thickness_A``:
    largest simulation slice [Å]. ``phonon_configs``: frozen-phonon configurations
    averaged in the patterns; ``ground_truth_configs``: configurations averaged into the
    thermal-mean potential (≥ phonon_configs; 1 with phonon_configs 1 gives the static
    potential). ``max_batch``: probe positions per abTEM call (displaced source
    positions included). ``coherence_samples``: Gauss–Hermite nodes of the partial-
    coherence quadratures (defocus; per axis of the source), used only where
    ``optics.focal_spread_A`` or ``optics.source_size_A`` is non-zero."""

    oversampling: int = 2
    slice_thickness_A: float = 1.0
    phonon_configs: int = 4
    ground_truth_configs: int = 16
    seed: int = 0
    max_batch: int = 32
    coherence_samples: int = 5


@dataclass
class NominalRecipe:
    """What the dataset file records where the microscopist's knowledge is off; each
    ``null`` records the true value. The simulation always uses the true ones.

    defocus_A, Cs_A [Å], semiangle_mrad [mrad]: the nominal optics written to the file
    (``optics``). thickness_A [Å]: the nominal specimen thickness
    (``nominal_thickness_A``; the true one is the slab's, whole unit cells).
    scan_rotation_deg [deg] and scan_step_scale: the scan calibration the recorded
    positions lack: the file holds the true positions p turned by −scan_rotation_deg
    (from +x towards +y) and divided by scan_step_scale about their centroid c,
    c + R(−θ)(p − c)/s, so that a plan with ``scan: {rotation_deg: θ, step_scale: s}``
    recovers the true positions (:func:`ptyopt.scan.calibrate_scan`)."""

    defocus_A: Any = None
    Cs_A: Any = None
    semiangle_mrad: Any = None
    thickness_A: Any = None
    scan_rotation_deg: Any = None
    scan_step_scale: Any = None


@dataclass
class DatasetRecipe:
    """A simulated dataset. ``reconstruction_slices``: slices of the ground truth
    (equal thickness). ``dose_e_per_A2``: electron dose [e/Å²]; it sets the count scale
    of the patterns (dose·step² electrons per position). ``poisson_noise``: sample the
    counts (seeded by ``noise_seed``), or keep the noise-free expected counts.
    ``nominal``: the nominal values the file records where they differ from the truth
    (:class:`NominalRecipe`)."""

    name: str = "quickstart"
    structure: StructureRecipe = field(default_factory=StructureRecipe)
    optics: OpticsRecipe = field(default_factory=OpticsRecipe)
    scan: ScanRecipe = field(default_factory=ScanRecipe)
    detector: DetectorRecipe = field(default_factory=DetectorRecipe)
    simulation: SimulationRecipe = field(default_factory=SimulationRecipe)
    reconstruction_slices: int = 1
    dose_e_per_A2: float = 1.0e5
    poisson_noise: bool = True
    noise_seed: int = 0
    nominal: NominalRecipe = field(default_factory=NominalRecipe)


#: Fewer electrons per pattern than this [e] leave most detector pixels empty: legal
#: (a low-dose study), usually a mistaken dose or step.
MIN_ELECTRONS_PER_PATTERN = 10.0
#: A scan wider than this many lateral cell edges (along y or x) is warned about. The
#: ground truth is one periodic cell, tiled: positions beyond one cell edge scan copies
#: of atoms already scanned (a dopant repeats in every copy), so a scan over several
#: cells of a small specimen is usually a ``lateral_repeats`` too small. Up to twice
#: the edge is left alone: a scan a little beyond one cell is common (``thick10``).
MAX_SCAN_CELLS = 2.0


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"dataset.{key}: {message}")


def validate_recipe(recipe: DatasetRecipe) -> DatasetRecipe:
    """Check every value's range; raise :class:`ConfigError` naming the key."""
    s, o, sc, d, sim = (
        recipe.structure,
        recipe.optics,
        recipe.scan,
        recipe.detector,
        recipe.simulation,
    )
    _require(
        s.name in STRUCTURES,
        "structure.name",
        f"unknown structure {s.name!r}; choose one of {sorted(STRUCTURES)}",
    )
    _require(
        len(s.lateral_repeats) == 2 and min(s.lateral_repeats) >= 1,
        "structure.lateral_repeats",
        "must be two integers >= 1 (y, x)",
    )
    _require(s.thickness_A > 0, "structure.thickness_A", f"must be > 0, got {s.thickness_A}")
    _validate_dopants(s)
    _require(o.energy_kV > 0, "optics.energy_kV", f"must be > 0, got {o.energy_kV}")
    _require(
        0 < o.semiangle_mrad < 200,
        "optics.semiangle_mrad",
        f"must be in (0, 200), got {o.semiangle_mrad}",
    )
    _require(
        o.focal_spread_A >= 0, "optics.focal_spread_A", f"must be >= 0, got {o.focal_spread_A}"
    )
    _require(o.source_size_A >= 0, "optics.source_size_A", f"must be >= 0, got {o.source_size_A}")
    _require(
        len(sc.shape) == 2 and min(sc.shape) >= 1, "scan.shape", "must be two integers >= 1 (y, x)"
    )
    _require(sc.step_A > 0, "scan.step_A", f"must be > 0, got {sc.step_A}")
    _require(sc.jitter_A >= 0, "scan.jitter_A", f"must be >= 0, got {sc.jitter_A}")
    _require(
        d.pixels >= 8 and d.pixels % 2 == 0,
        "detector.pixels",
        f"must be an even number >= 8, got {d.pixels}",
    )
    _require(d.bin >= 1, "detector.bin", f"must be >= 1, got {d.bin}")
    _require(
        sim.oversampling >= 2,
        "simulation.oversampling",
        f"must be >= 2 (detector inside the anti-aliased region), got {sim.oversampling}",
    )
    _require(
        sim.slice_thickness_A > 0,
        "simulation.slice_thickness_A",
        f"must be > 0, got {sim.slice_thickness_A}",
    )
    _require(
        sim.phonon_configs >= 1,
        "simulation.phonon_configs",
        f"must be >= 1, got {sim.phonon_configs}",
    )
    _require(
        sim.ground_truth_configs >= sim.phonon_configs,
        "simulation.ground_truth_configs",
        "must be >= simulation.phonon_configs",
    )
    _require(sim.max_batch >= 1, "simulation.max_batch", f"must be >= 1, got {sim.max_batch}")
    _require(
        sim.coherence_samples >= 1,
        "simulation.coherence_samples",
        f"must be >= 1, got {sim.coherence_samples}",
    )
    _require(
        recipe.reconstruction_slices >= 1,
        "reconstruction_slices",
        f"must be >= 1, got {recipe.reconstruction_slices}",
    )
    _require(recipe.dose_e_per_A2 > 0, "dose_e_per_A2", f"must be > 0, got {recipe.dose_e_per_A2}")
    _validate_nominal(recipe.nominal)
    _warn_unusual(recipe)
    return recipe


def electrons_per_pattern(recipe: DatasetRecipe) -> float:
    """Electrons in each pattern [e]: dose [e/Å²] × step² [Å²]."""
    return recipe.dose_e_per_A2 * recipe.scan.step_A**2


def _warn_unusual(recipe: DatasetRecipe) -> None:
    """Warn (:func:`ptyopt.errors.warn`) of a dose under
    :data:`MIN_ELECTRONS_PER_PATTERN` per pattern and of a scan wider than
    :data:`MAX_SCAN_CELLS` cell edges."""
    electrons = electrons_per_pattern(recipe)
    if electrons < MIN_ELECTRONS_PER_PATTERN:
        warn(
            f"dataset.dose_e_per_A2: {recipe.dose_e_per_A2:g} e/Å² at a {recipe.scan.step_A:g} Å "
            f"step leaves {electrons:.3g} electrons per pattern (under "
            f"{MIN_ELECTRONS_PER_PATTERN:g}): most detector pixels will count nothing"
        )
    edge = specimen_of(recipe.structure).cell_edge_A
    extent = max((n - 1) * recipe.scan.step_A for n in recipe.scan.shape)
    if extent > MAX_SCAN_CELLS * edge:
        warn(
            f"dataset.scan: the scan spans {extent:.1f} Å, {extent / edge:.1f} × the "
            f"{edge:.1f} Å lateral cell; the specimen is that cell repeated periodically, "
            "so the scan covers copies of the same atoms: raise "
            "dataset.structure.lateral_repeats for a larger specimen"
        )


def _validate_nominal(nominal: NominalRecipe) -> None:
    """Each nominal value ``null`` or a finite number in its range."""
    ranges = {
        "defocus_A": (None, None),
        "Cs_A": (None, None),
        "semiangle_mrad": (0, 200),
        "thickness_A": (0, None),
        "scan_rotation_deg": (None, None),
        "scan_step_scale": (0, None),
    }
    for name, (low, high) in ranges.items():
        value = getattr(nominal, name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        _require(
            number
            and bool(np.isfinite(value))
            and (low is None or value > low)
            and (high is None or value < high),
            f"nominal.{name}",
            "must be null or a finite number"
            + (f" > {low}" if low is not None else "")
            + (f" and < {high}" if high is not None else "")
            + f", got {value!r}",
        )


def _validate_dopants(structure: StructureRecipe) -> None:
    """Check each dopant's elements and numbers, then that its site exists (building
    the specimen, which takes milliseconds)."""
    hosts = sorted(set(STRUCTURES[structure.name]().get_chemical_symbols()))
    for index, dopant in enumerate(structure.dopants):
        key = f"structure.dopants[{index}]"
        _require(
            dopant.element in RMS_DISPLACEMENT_A and dopant.element not in hosts,
            f"{key}.element",
            f"{dopant.element!r} is not a dopant with a known thermal displacement; choose "
            f"one of {sorted(set(RMS_DISPLACEMENT_A) - set(hosts))}",
        )
        _require(
            dopant.host in hosts,
            f"{key}.host",
            f"{structure.name} has no {dopant.host!r} sites; choose one of {hosts}",
        )
        for name in ("y_A", "x_A", "depth_A"):
            value = getattr(dopant, name)
            _require(bool(np.isfinite(value)), f"{key}.{name}", f"must be finite, got {value}")
    if structure.dopants:
        specimen_of(structure)


def specimen_of(structure: StructureRecipe) -> Specimen:
    """The slab a structure recipe describes, dopants substituted."""
    return build_specimen(
        structure.name,
        (structure.lateral_repeats[0], structure.lateral_repeats[1]),
        structure.thickness_A,
        [DopantSite(d.element, d.host, d.y_A, d.x_A, d.depth_A) for d in structure.dopants],
    )


@dataclass(frozen=True)
class Sampling:
    """Grids implied by a recipe on a lateral cell L [Å]. pixel_size_A:
    reconstruction pixel dx = L/(pixels·bin); simulation_gpts: abTEM grid points per
    edge; angular_sampling_mrad: detector pitch; max_angle_mrad: detector half-width."""

    pixel_size_A: float
    simulation_gpts: int
    angular_sampling_mrad: float
    max_angle_mrad: float


@dataclass(frozen=True)
class CoherenceQuadrature:
    """Partial-coherence quadrature implied by a recipe: the patterns are
    Σ_k Σ_j a_k b_j I(defocus_A[k], position + source_offsets_A[j]).
    defocus_A: (K,) probe defoci [Å], Δf + σ_f·x_k; defocus_weights: (K,) a_k, sum 1;
    source_offsets_A: (J, 2) (y, x) probe displacements [Å], σ_s·(x_m, x_n);
    source_weights: (J,) b_j, sum 1. Nodes x and weights are the probabilists'
    Gauss–Hermite rule (weight exp(−x²/2)), exact for polynomial moments of degree
    < 2n; a zero spread is a single node at 0 with weight 1 (the coherent case)."""

    defocus_A: np.ndarray
    defocus_weights: np.ndarray
    source_offsets_A: np.ndarray
    source_weights: np.ndarray

    @property
    def samples_per_position(self) -> int:
        """Coherent simulations averaged into each pattern (K·J)."""
        return len(self.defocus_weights) * len(self.source_weights)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable record."""
        return {
            "rule": "gauss_hermite",
            "defocus_A": self.defocus_A.tolist(),
            "defocus_weights": self.defocus_weights.tolist(),
            "source_offsets_A": self.source_offsets_A.tolist(),
            "source_weights": self.source_weights.tolist(),
            "samples_per_position": self.samples_per_position,
        }


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n nodes and weights (sum 1) of the standard normal distribution: E[f(X)] ≈
    Σ w_i f(x_i), exact for polynomials of degree < 2n. Symmetrised so the rule is
    exactly even (the middle node of an odd rule is exactly 0)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    x, w = (x - x[::-1]) / 2, (w + w[::-1]) / 2
    return x, w / w.sum()


def coherence_quadrature(recipe: DatasetRecipe) -> CoherenceQuadrature:
    """The partial-coherence quadrature of ``recipe`` (see :class:`CoherenceQuadrature`);
    ``simulation.coherence_samples`` nodes for a non-zero focal spread, and per axis
    (a product rule, n² offsets) for a non-zero source size."""
    o, n = recipe.optics, recipe.simulation.coherence_samples
    one, zero = np.ones(1), np.zeros(1)
    if o.focal_spread_A > 0:
        x, w = gauss_hermite(n)
        defocus, defocus_weights = o.defocus_A + o.focal_spread_A * x, w
    else:
        defocus, defocus_weights = o.defocus_A + zero, one
    if o.source_size_A > 0:
        x, w = gauss_hermite(n)
        offsets = o.source_size_A * np.stack(np.meshgrid(x, x, indexing="ij"), axis=-1).reshape(
            -1, 2
        )
        source_weights = np.outer(w, w).reshape(-1)
    else:
        offsets, source_weights = np.zeros((1, 2)), one
    return CoherenceQuadrature(defocus, defocus_weights, offsets, source_weights)


def derive_sampling(recipe: DatasetRecipe, cell_edge_A: float) -> Sampling:
    """Sampling for a cell of edge L; checks that the window holds the probe (at every
    defocus of the focal-spread quadrature) and the detector holds the bright-field
    disc, raising :class:`ConfigError` otherwise."""
    d, o = recipe.detector, recipe.optics
    lam = physics.wavelength_A(o.energy_kV * 1e3)
    pixel = cell_edge_A / (d.pixels * d.bin)
    pitch = d.bin * lam / cell_edge_A * 1e3
    max_angle = 0.5 * d.pixels * pitch
    window = d.pixels * pixel
    widest = float(np.max(np.abs(coherence_quadrature(recipe).defocus_A)))
    radius = physics.probe_radius_A(o.energy_kV * 1e3, o.semiangle_mrad, widest)
    _require(
        max_angle > o.semiangle_mrad,
        "detector",
        (
            f"the detector reaches {max_angle:.1f} mrad, inside the {o.semiangle_mrad} mrad "
            "bright-field disc; use more pixels or a smaller cell"
        ),
    )
    _require(
        2 * radius < window,
        "detector",
        (
            f"the probe window ({window:.1f} Å = cell/bin) does not hold the probe "
            f"(diameter ~{2 * radius:.1f} Å); use a larger cell, smaller bin or less defocus "
            "(or focal spread)"
        ),
    )
    return Sampling(pixel, d.pixels * d.bin * recipe.simulation.oversampling, pitch, max_angle)


def true_or(nominal: float | None, true: float) -> float:
    """A ``nominal`` recipe value, or the true one where it is ``null``."""
    return float(true if nominal is None else nominal)


def nominal_optics(recipe: DatasetRecipe) -> Optics:
    """The optics a recipe's file records: ``nominal`` defocus, Cs and semi-angle where
    given, else the true ones (abTEM's sign: C10 = −defocus)."""
    o, nominal = recipe.optics, recipe.nominal
    return Optics(
        o.energy_kV * 1e3,
        true_or(nominal.semiangle_mrad, o.semiangle_mrad),
        {"C10": -true_or(nominal.defocus_A, o.defocus_A), "C30": true_or(nominal.Cs_A, o.Cs_A)},
    )


def recipe_sampling(recipe: DatasetRecipe) -> Sampling:
    """:func:`derive_sampling` of ``recipe`` on its specimen's lateral cell (the cell is
    built with ASE, in milliseconds; no simulation)."""
    return derive_sampling(recipe, specimen_of(recipe.structure).cell_edge_A)


#: Revision of what a simulation writes for a recipe, part of its hash: a revision
#: renames every cache file, so that files written before (2: the nominal thickness and
#: slicing recorded, the ``nominal`` section) are simulated again, never read.
SIMULATION_REVISION = 2


def recipe_to_dict(recipe: DatasetRecipe) -> dict[str, Any]:
    """Plain nested dict of a recipe (JSON-serialisable). Without dopants, or without
    any nominal value, it leaves that key out, as before they existed."""
    values = (
        dataclasses.asdict(recipe)
        if dataclasses.is_dataclass(recipe)
        else OmegaConf.to_container(recipe)
    )
    if not values["structure"].get("dopants"):
        values["structure"].pop("dopants", None)
    if all(value is None for value in (values.get("nominal") or {}).values()):
        values.pop("nominal", None)
    return values


def recipe_hash(recipe: DatasetRecipe, abtem_version: str) -> str:
    """12-hex-digit hash of the recipe, the abTEM version and
    :data:`SIMULATION_REVISION`, naming the cache file."""
    payload = json.dumps(
        {
            "recipe": recipe_to_dict(recipe),
            "abtem": abtem_version,
            "revision": SIMULATION_REVISION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def recipe_from_mapping(values: Any) -> DatasetRecipe:
    """Typed, validated recipe from a mapping (dict or DictConfig); unknown keys and
    wrong types raise :class:`ConfigError` naming the key. The dopants are typed one by
    one, so that an error names ``dataset.structure.dopants[i].key`` (OmegaConf loses
    the position of an item in a list)."""
    values = OmegaConf.to_container(OmegaConf.create(values), resolve=True)
    structure = values.get("structure")
    raw = structure.pop("dopants", []) if isinstance(structure, dict) else []
    _require(isinstance(raw, list), "structure.dopants", f"must be a list of dopants, got {raw!r}")
    dopants = []
    for index, item in enumerate(raw):
        key = f"structure.dopants[{index}]"
        _require(isinstance(item, dict), key, f"must be a mapping, got {item!r}")
        dopants.append(to_dataclass(DopantRecipe, item, f"dataset.{key}"))
    recipe = to_dataclass(DatasetRecipe, values, "dataset")
    recipe.structure.dopants = dopants
    return validate_recipe(recipe)


def available_recipes() -> list[str]:
    """Names of the dataset recipes shipped in ``conf/dataset``."""
    return sorted(p.stem for p in (conf_dir() / "dataset").glob("*.yaml"))


def load_recipe(name: str) -> DatasetRecipe:
    """The shipped recipe ``conf/dataset/<name>.yaml``."""
    names = available_recipes()
    if name not in names:
        raise ConfigError(f"dataset: unknown dataset {name!r}; choose one of {names}")
    return recipe_from_mapping(OmegaConf.load(conf_dir() / "dataset" / f"{name}.yaml"))
