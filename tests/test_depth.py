"""Dopants at known depths (recipe, specimen, simulation, file) and the depth score
(ptyopt.depth) on analytic stacks and on the ground truth of a simulated crystal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tiny_recipe
from scipy.special import erf

from ptyopt import metrics
from ptyopt.data.dataset import DopantSite, DopantTable, Optics, PtychoDataset
from ptyopt.data.file import DatasetFileError, read_dataset, write_dataset
from ptyopt.data.recipe import derive_sampling, load_recipe, recipe_from_mapping, specimen_of
from ptyopt.data.simulate import displaced_configurations, scan_positions_A, simulate_dataset
from ptyopt.data.structures import RMS_DISPLACEMENT_A, build_specimen
from ptyopt.depth import half_maximum_depth, localise_dopants
from ptyopt.errors import ConfigError
from ptyopt.initial import Geometry, object_geometry
from ptyopt.metrics import score_object
from ptyopt.registration import tile_periodic

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))

# --- recipes -----------------------------------------------------------------------------

SI = {"name": "Si_110", "lateral_repeats": [2, 3], "thickness_A": 7.7}
BI = {"element": "Bi", "host": "Si", "y_A": 1.36, "x_A": 0.0, "depth_A": 5.0}


def doped(*dopants, structure=SI):
    return {"structure": {**structure, "dopants": list(dopants)}}


@pytest.mark.parametrize(
    "values, key, problem",
    [
        (doped(BI, {**BI, "depth": 1.0}), "dopants[1].depth", "not in 'DopantRecipe'"),
        (doped({**BI, "y_A": "centre"}), "dopants[0].y_A", "could not be converted"),
        (doped({k: v for k, v in BI.items() if k != "host"}), "dopants[0].host", "missing"),
        (doped({**BI, "x_A": float("nan")}), "dopants[0].x_A", "must be finite"),
        (doped({**BI, "element": "Xx"}), "dopants[0].element", "known thermal displacement"),
        (doped({**BI, "element": "Si"}), "dopants[0].element", "known thermal displacement"),
        (doped({**BI, "host": "Sr"}), "dopants[0].host", "has no 'Sr' sites"),
        (doped({**BI, "y_A": 2.1}), "dopants[0]", "no Si column within 0.5 Å"),
        (doped({**BI, "depth_A": 12.0}), "dopants[0]", "within half a unit cell"),
        (doped(BI, {**BI, "depth_A": 1.0}), "dopants[1]", "in the column of dopants[0]"),
        (doped("Bi"), "dopants[0]", "must be a mapping"),
        ({"structure": {**SI, "dopants": "Bi"}}, "dopants", "must be a list"),
    ],
)
def test_bad_dopants_name_the_key(values, key, problem):
    with pytest.raises(ConfigError) as info:
        recipe_from_mapping(values)
    message = str(info.value)
    assert message.startswith(f"dataset.structure.{key}: ") and problem in message
    assert "\n" not in message


def test_recipe_without_dopants_serialises_as_before():
    from ptyopt.data.recipe import recipe_to_dict

    assert "dopants" not in recipe_to_dict(load_recipe("quickstart"))["structure"]
    assert len(recipe_to_dict(recipe_from_mapping(doped(BI)))["structure"]["dopants"]) == 1


# --- the specimen ------------------------------------------------------------------------


def test_substitution_replaces_the_nearest_host_atom():
    """SrTiO3 [001], 3×3 cells: Hf on the Ti atom nearest to the requested point, Bi on
    Sr across the periodic edge; checked against the undoped slab's own atoms."""
    requests = [
        DopantSite("Hf", "Ti", 5.7, 2.1, 7.0),  # Ti columns at (½ + i)·a, Ti at (½ + k)·a deep
        DopantSite("Bi", "Sr", 11.6, 4.0, 6.2),
    ]
    plain = build_specimen("SrTiO3_001", (3, 3), 11.7)
    doped_slab = build_specimen("SrTiO3_001", (3, 3), 11.7, requests)
    symbols = np.array(doped_slab.atoms.get_chemical_symbols())
    assert sorted(symbols[symbols != np.array(plain.atoms.get_chemical_symbols())]) == ["Bi", "Hf"]
    edge = plain.cell_edge_A
    for request, site in zip(requests, doped_slab.dopant_sites, strict=True):
        hosts = plain.atoms.positions[np.array(plain.atoms.get_chemical_symbols()) == request.host]
        offset = (hosts[:, [1, 0]] - [request.y_A, request.x_A] + edge / 2) % edge - edge / 2
        lateral = np.hypot(*offset.T)
        in_column = hosts[lateral < 0.5]
        nearest = in_column[np.argmin(np.abs(in_column[:, 2] - request.depth_A))]
        assert (site.element, site.host) == (request.element, request.host)
        np.testing.assert_allclose(
            [site.y_A, site.x_A, site.depth_A],
            [nearest[1] % edge, nearest[0] % edge, nearest[2]],
            atol=1e-9,
        )
        atom = np.flatnonzero(symbols == request.element)[0]
        np.testing.assert_allclose(doped_slab.atoms.positions[atom], nearest, atol=1e-9)
    assert doped_slab.host_period_A == pytest.approx((edge / 3, edge / 3))


def test_dopants_vibrate_with_their_own_rms():
    slab = build_specimen("Si_110", (2, 3), 7.7, [DopantSite("Bi", "Si", 1.36, 0.0, 5.0)])
    configs = displaced_configurations(slab, 400, seed=1)
    bi = slab.atoms.get_chemical_symbols().index("Bi")
    moves = np.array([c.positions[bi] for c in configs]) - slab.atoms.positions[bi]
    moves = (moves + slab.atoms.cell.lengths() / 2) % slab.atoms.cell.lengths()
    moves -= slab.atoms.cell.lengths() / 2  # undo the wrap into the cell
    assert np.std(moves) == pytest.approx(RMS_DISPLACEMENT_A["Bi"], rel=0.06)


# --- a tiny simulated doped crystal ------------------------------------------------------

TINY_DOPANTS = [
    {"element": "Bi", "host": "Si", "y_A": 1.36, "x_A": 0.0, "depth_A": 5.0},
    {"element": "Sb", "host": "Si", "y_A": 4.1, "x_A": 1.9, "depth_A": 1.5},
]
TINY_SLICES = 3  # slices of 2.56 Å: the Si atoms of a column lie 3.84 Å apart


def _tiny(dopants):
    return tiny_recipe(
        structure={**SI, "dopants": dopants},
        reconstruction_slices=TINY_SLICES,
        simulation={"oversampling": 2, "phonon_configs": 1, "ground_truth_configs": 1},
    )


@pytest.fixture(scope="module")
def doped_pair():
    """The tiny doped dataset and the same crystal undoped (static truth: the sites'
    potential lies exactly at the recorded positions)."""
    return (
        simulate_dataset(_tiny(TINY_DOPANTS), progress=False),
        simulate_dataset(_tiny([]), progress=False),
    )


def test_substituted_sites_show_in_the_ground_truth_where_recorded(doped_pair):
    dataset, undoped = doped_pair
    truth = dataset.ground_truth
    assert undoped.ground_truth.dopants is None
    assert dataset.simulation["dopant_sites"] == [
        dataclasses.asdict(s) for s in truth.dopants.sites
    ]
    excess = truth.potential_V_A - undoped.ground_truth.potential_V_A
    n = excess.shape[-1]
    for site in truth.dopants.sites:
        layer = int(site.depth_A // truth.slice_thickness_A)
        at = np.array([site.y_A, site.x_A]) / truth.sampling_A  # [px]
        py, px = np.round(at).astype(int)
        column = excess[:, py % n, px % n]
        assert np.argmax(column) == layer
        assert column[layer] > 50 * np.abs(np.delete(column, layer)).max()
        window = np.arange(-3, 4)
        local = excess[layer][(py + window) % n][:, (px + window) % n]
        weight = np.clip(local - 0.2 * local.max(), 0, None)  # the peak's core
        centroid = [np.sum(weight * window[:, None]), np.sum(weight * window[None, :])]
        np.testing.assert_allclose(
            np.add([py, px], np.divide(centroid, weight.sum())), at, atol=0.1
        )


def test_dopant_table_round_trip_and_older_files(doped_pair, tmp_path: Path):
    dataset, undoped = doped_pair
    path = write_dataset(tmp_path / "doped.h5", dataset)
    assert read_dataset(path).ground_truth.dopants == dataset.ground_truth.dopants
    older = write_dataset(tmp_path / "older.h5", undoped)  # the layout before dopants existed
    with h5py.File(older, "r") as file:
        assert sorted(file["ground_truth"]) == ["potential_V_A"]
    assert read_dataset(older).ground_truth.dopants is None


def _set_rows(column: str, value) -> callable:
    def edit(file: h5py.File) -> None:
        table = file["ground_truth/dopant_sites"][()]
        table[column][0] = value
        file["ground_truth/dopant_sites"][...] = table

    return edit


def _drop_attr(file: h5py.File) -> None:
    del file["ground_truth/dopant_sites"].attrs["host_period_A"]


def _wrong_fields(file: h5py.File) -> None:
    del file["ground_truth/dopant_sites"]
    file["ground_truth/dopant_sites"] = np.zeros(2, dtype=[("element", "S3"), ("z", "f8")])


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set_rows("element", b"Qq"), "row 0 element is 'Qq', expected a chemical symbol"),
        (_set_rows("y_A", -0.5), "row 0 y_A is -0.5, expected a value in"),
        (_set_rows("x_A", np.nan), "row 0 x_A is nan, expected a finite real number"),
        (_set_rows("depth_A", 99.0), "row 0 depth_A is 99.0, expected a value in"),
        (_drop_attr, "dopant_sites attr host_period_A is missing"),
        (_wrong_fields, "dopant_sites has fields"),
    ],
)
def test_bad_dopant_table_is_rejected_on_read(doped_pair, tmp_path: Path, edit, match):
    path = write_dataset(tmp_path / "doped.h5", doped_pair[0])
    with h5py.File(path, "r+") as file:
        edit(file)
    with pytest.raises(DatasetFileError, match=match):
        read_dataset(path)


def _full_cell_score(truth, potential=None, origin=(0.0, 0.0), shift=(0.0, 0.0)):
    """Depth score of a potential on a 3×3 tiling of the truth's cell (every dopant
    then has whole images away from the edges)."""
    n = truth.potential_V_A.shape[-1]
    stack = (
        tile_periodic(truth.potential_V_A, (3 * n, 3 * n), origin)
        if potential is None
        else potential
    )
    return localise_dopants(
        stack,
        truth.dopants,
        (n * truth.sampling_A, n * truth.sampling_A),
        truth.slice_thickness_A,
        truth.sampling_A,
        origin,
        (slice(None), slice(None)),
        shift,
    )


def test_ground_truth_localises_its_dopants_to_the_slicing_limit(doped_pair):
    """The truth puts each dopant into the slice that holds it: the recovered depth is
    that slice's centre (error = the atom's offset from it, ≤ Δz/2), FWHM = Δz."""
    truth = doped_pair[0].ground_truth
    dz = truth.slice_thickness_A
    score = _full_cell_score(truth)
    for row, site in zip(score.dopants, truth.dopants.sites, strict=True):
        centre = (site.depth_A // dz + 0.5) * dz
        assert row.depth_A == pytest.approx(centre, abs=0.01 * dz)
        assert abs(row.error_A) <= dz / 2
        assert row.fwhm_A == pytest.approx(dz, rel=0.02)
        assert row.n_images >= 4 and row.n_references >= 4
    assert score.depth_fwhm_mean_A == pytest.approx(dz, rel=0.02)


def test_shift_follows_the_registration_convention(doped_pair):
    """ptyopt.registration places the truth's cell at origin + shift (tile_periodic):
    a truth placed so, at a sub-pixel shift, scores as the unmoved one when passed that
    shift, and loses its excess without it."""
    truth = doped_pair[0].ground_truth
    n = truth.potential_V_A.shape[-1]
    shift = (0.6, -1.45)
    moved = tile_periodic(truth.potential_V_A, (3 * n, 3 * n), shift)
    reference = _full_cell_score(truth)
    registered = _full_cell_score(truth, moved, shift=shift)
    unregistered = _full_cell_score(truth, moved)
    for a, b, c in zip(registered.dopants, reference.dopants, unregistered.dopants, strict=True):
        assert a.depth_A == pytest.approx(b.depth_A, abs=0.01)
        assert a.peak_excess_V_A == pytest.approx(b.peak_excess_V_A, rel=0.02)
        assert c.peak_excess_V_A < 0.8 * b.peak_excess_V_A


def test_shipped_dopant_recipe_fits_the_scan():
    """dopants.yaml: ≥ 5 nm, 10–12 slices, every dopant at a slice centre and, with an
    equivalent undoped column, inside the field of view of the scan (2 px margin)."""
    recipe = load_recipe("dopants")
    slab = specimen_of(recipe.structure)
    assert slab.thickness_A >= 50 and 10 <= recipe.reconstruction_slices <= 12
    assert recipe.scan.shape == [16, 16] and recipe.detector.pixels == 64
    assert 3 <= len(slab.dopant_sites) <= 4
    dz = slab.thickness_A / recipe.reconstruction_slices
    for site in slab.dopant_sites:
        assert abs(site.depth_A - (site.depth_A // dz + 0.5) * dz) < 0.01
    sampling = derive_sampling(recipe, slab.cell_edge_A)
    n = recipe.detector.pixels
    stand_in = PtychoDataset(  # the scan geometry only: no simulation needed
        name="dopants",
        patterns=np.zeros((256, n, n), np.float32),
        positions_A=scan_positions_A(recipe, slab.cell_edge_A),
        optics=Optics(recipe.optics.energy_kV * 1e3, recipe.optics.semiangle_mrad),
        angular_sampling_mrad=sampling.angular_sampling_mrad,
        pattern_centre_px=(n / 2, n / 2),
    )
    geometry = object_geometry(stand_in)
    score = localise_dopants(  # raises unless each dopant has an image and a reference
        np.zeros((recipe.reconstruction_slices, *geometry.shape)),
        DopantTable(slab.dopant_sites, slab.host_period_A),
        (slab.cell_edge_A, slab.cell_edge_A),
        dz,
        sampling.pixel_size_A,
        tuple(geometry.origin_px),
        geometry.field_of_view(2),
    )
    assert all(row.n_images >= 1 and row.n_references >= 1 for row in score.dopants)


# --- the score on analytic stacks --------------------------------------------------------

PERIOD = (3.3, 2.9)  # host lattice (y, x) [Å]: not whole pixels
CELL_REPEATS = (4, 5)
DX = 0.23  # [Å]
DZ = 2.0  # [Å]
N_SLICES = 16
SITE = DopantSite("Bi", "Si", 2.0 * 3.3 + 0.4, 3 * 2.9 + 1.1, 0.0)  # depth set per test


def _binned_gaussian(mean_A: float, sigma_A: float) -> np.ndarray:
    """(S,) slice integrals of a unit-area Gaussian in depth."""
    edges = np.arange(N_SLICES + 1) * DZ
    return np.diff(0.5 * (1 + erf((edges - mean_A) / (np.sqrt(2) * sigma_A))))


def _stack(excess: np.ndarray, shift_px=(0.0, 0.0), seed: int = 0) -> tuple[np.ndarray, tuple]:
    """Per-slice potential (S, H, W) of a host lattice of Gaussian columns (σ 0.35 Å)
    whose level changes from slice to slice (1 or 2 atoms per slice, as with
    incommensurate slicing), a random offset per slice (the gauge), and the column at
    SITE (periodic with the cell) carrying ``excess`` (S,) on top. Returns the stack and
    the cell origin [px]."""
    rng = np.random.default_rng(seed)
    period = np.array(PERIOD)
    cell = period * CELL_REPEATS
    origin = np.array([7.0, 5.0])
    shape = (150, 160)
    level = rng.integers(1, 3, N_SLICES) * 30.0
    offset = rng.normal(0, 5.0, N_SLICES)
    y = (np.arange(shape[0]) - origin[0] - shift_px[0]) * DX  # cell coordinates [Å]
    x = (np.arange(shape[1]) - origin[1] - shift_px[1]) * DX
    site = np.array([SITE.y_A, SITE.x_A])

    def columns(at: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        dy = (y[:, None] - at[0] + spacing[0] / 2) % spacing[0] - spacing[0] / 2
        dx = (x[None, :] - at[1] + spacing[1] / 2) % spacing[1] - spacing[1] / 2
        return np.exp(-(dy**2 + dx**2) / (2 * 0.35**2))

    host, dopant = columns(site, period), columns(site, cell)
    stack = level[:, None, None] * host + excess[:, None, None] * dopant
    return stack + offset[:, None, None], tuple(origin)


def _score(stack, origin, depth_A, shift=(0.0, 0.0)):
    sites = DopantTable((dataclasses.replace(SITE, depth_A=depth_A),), PERIOD)
    cell = tuple(np.multiply(PERIOD, CELL_REPEATS))
    fov = (slice(4, 140), slice(9, 150))
    return localise_dopants(stack, sites, cell, DZ, DX, origin, fov, shift).dopants[0]


@pytest.mark.parametrize("within_slice", [0.0, 0.3, 0.5, 0.77])
def test_gaussian_excess_between_slice_centres_is_localised(within_slice):
    """σ = 0.7 Δz, centre anywhere in slice 6: depth within 0.06 Δz (module docstring)."""
    depth = (6 + within_slice) * DZ
    stack, origin = _stack(400 * _binned_gaussian(depth, 0.7 * DZ))
    row = _score(stack, origin, depth)
    assert abs(row.error_A) < 0.06 * DZ
    assert row.n_images == 4 and row.n_references > 20


@pytest.mark.parametrize("sigma_slices", [1.5, 2.5])
def test_fwhm_of_a_gaussian_excess_is_recovered(sigma_slices):
    """The FWHM reads high by ≤ 8 % for σ ≥ 1.5 Δz (module docstring)."""
    sigma = sigma_slices * DZ
    depth = 7.35 * DZ
    stack, origin = _stack(400 * _binned_gaussian(depth, sigma))
    row = _score(stack, origin, depth)
    assert 1.0 <= row.fwhm_A / (FWHM_PER_SIGMA * sigma) < 1.08
    assert abs(row.error_A) < 0.02 * DZ


def test_depth_blur_widens_the_profile_from_the_slice_floor():
    """A dopant in one slice reads FWHM = Δz (the floor) at its slice centre; the same
    stack blurred along the depth (every column) reads wider, at the same depth."""
    depth = 5.5 * DZ
    excess = np.zeros(N_SLICES)
    excess[5] = 300.0
    stack, origin = _stack(excess)
    sharp = _score(stack, origin, depth)
    assert sharp.fwhm_A == pytest.approx(DZ, rel=1e-3) and abs(sharp.error_A) < 1e-3
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.2) ** 2)
    blurred = np.apply_along_axis(lambda p: np.convolve(p, kernel / kernel.sum(), "same"), 0, stack)
    wide = _score(blurred, origin, depth)
    assert wide.fwhm_A > 2 * sharp.fwhm_A and abs(wide.error_A) < 0.05 * DZ
    assert wide.fwhm_A == pytest.approx(
        FWHM_PER_SIGMA * np.hypot(1.2, 1 / np.sqrt(12)) * DZ, rel=0.1
    )


def test_lateral_shift_is_compensated_by_the_shift_argument():
    """The lattice moved by (2.6, −1.7) px (0.6, −0.4 Å): scored with that shift it
    reads as unmoved; without, the discs miss the columns and the excess is lost."""
    depth = 9.3 * DZ
    excess = 400 * _binned_gaussian(depth, 1.0 * DZ)
    still = _score(*_stack(excess), depth)
    stack, origin = _stack(excess, shift_px=(2.6, -1.7))
    moved = _score(stack, origin, depth, shift=(2.6, -1.7))
    assert moved.depth_A == pytest.approx(still.depth_A, abs=1e-3 * DZ)
    assert moved.fwhm_A == pytest.approx(still.fwhm_A, rel=1e-3)
    assert moved.peak_excess_V_A == pytest.approx(still.peak_excess_V_A, rel=0.01)
    missed = _score(stack, origin, depth)
    assert missed.peak_excess_V_A < 0.5 * still.peak_excess_V_A


def test_no_excess_and_no_reference():
    assert all(np.isnan(half_maximum_depth(-np.ones(5), 1.0)))
    stack, origin = _stack(np.zeros(N_SLICES))
    assert np.isnan(_score(stack, origin, 3.0).depth_A)
    sites = DopantTable((dataclasses.replace(SITE, depth_A=3.0),), PERIOD)
    cell = tuple(np.multiply(PERIOD, CELL_REPEATS))
    tight = (slice(32, 44), slice(42, 54))  # holds the column's image, no other column
    with pytest.raises(ValueError, match="0 equivalent undoped columns"):
        localise_dopants(stack, sites, cell, DZ, DX, origin, tight)


def test_the_scorer_localises_dopants_of_a_registered_object(doped_pair):
    """score_object registers the projection, then localises the dopants per slice with
    that shift: the truth, sub-pixel shifted and with a global phase per slice, scores
    at the slicing limit; the same slices in reverse order put every dopant at the
    mirrored depth; an undoped truth has no depth scores at all."""
    dataset, undoped = doped_pair
    truth = dataset.ground_truth
    n = truth.potential_V_A.shape[-1]  # a field of view of two cells: the scan's is tiny
    corners = np.array([[0.5 * n, 0.5 * n], [2.5 * n, 2.5 * n]])
    geometry = Geometry(corners, np.array([3.0, 5.0]), (3 * n, 3 * n), (n, n))
    dz = truth.slice_thickness_A

    def object_of(potential, origin):
        phases = np.exp(1j * np.arange(len(potential)))[:, None, None]
        return np.exp(1j * truth.sigma_per_V_A * potential) * phases

    shifted = tile_periodic(truth.potential_V_A, geometry.shape, geometry.origin_px + (0.4, -0.7))
    exact = score_object(object_of(shifted, geometry.origin_px), truth, geometry)
    assert exact.shift_px == pytest.approx((0.4, -0.7), abs=1e-6)
    assert exact.depth_error_max_A <= dz / 2 + 1e-6
    assert exact.depth_fwhm_mean_A == pytest.approx(dz, rel=0.05)
    assert set(metrics.DEPTH_SCALARS) <= set(exact.scalars())

    mirrored = score_object(object_of(shifted[::-1], geometry.origin_px), truth, geometry)
    thickness = dz * len(truth.potential_V_A)
    expected = [thickness - d for d in exact.dopant_depth_A]
    assert mirrored.dopant_depth_A == pytest.approx(expected, abs=0.05 * dz)
    assert mirrored.depth_error_rms_A > exact.depth_error_rms_A + dz / 2

    plain = undoped.ground_truth
    placed = tile_periodic(plain.potential_V_A, geometry.shape, geometry.origin_px)
    undoped_score = score_object(np.exp(1j * plain.sigma_per_V_A * placed), plain, geometry)
    assert not set(metrics.DEPTH_SCALARS) & set(undoped_score.scalars())
