"""Import of abTEM's own saved diffraction patterns, checked against truth: ptyopt's
forward model on the very potential abTEM scanned must reproduce the imported patterns
(orientation, centre, positions, sampling), and every plausible mistake must not."""

from __future__ import annotations

import dataclasses

import abtem
import ase
import h5py
import numpy as np
import pytest
from conftest import model_patterns_from_ground_truth

from ptyopt.io.build import import_dataset
from ptyopt.io.metadata import load_metadata

ENERGY = 200e3
DEFOCUS = 25.0  # abTEM's defocus [Å]; C10 = −25 Å
CELL = 9.7  # Å, not a whole number of anything
GPTS = 64


@pytest.fixture(scope="module")
def specimen(tmp_path_factory):
    """A random, asymmetric 6 Å thick cell (no mirror or 90° symmetry), its potential in
    3 slices on 64² points and the ground-truth file of that potential ((S, y, x) V·Å)."""
    abtem.config.set({"device": "cpu", "precision": "float64", "diagnostics.progress_bar": False})
    rng = np.random.default_rng(1)
    positions = np.c_[rng.uniform(0, CELL, (8, 2)), rng.uniform(0.5, 5.5, 8)]
    atoms = ase.Atoms("SrTiO4AuPt", positions=positions, cell=(CELL, CELL, 6.0), pbc=True)
    potential = abtem.Potential(atoms, gpts=GPTS, slice_thickness=2.0, projection="infinite").build(
        lazy=False
    )
    folder = tmp_path_factory.mktemp("abtem")
    truth = folder / "truth.h5"
    with h5py.File(truth, "w") as file:
        node = file.create_dataset(
            "potential_V_A", data=np.asarray(potential.array).transpose(0, 2, 1)
        )
        node.attrs["sampling_A"] = CELL / GPTS
        node.attrs["slice_thickness_A"] = 2.0
    yield potential, truth, folder
    abtem.config.set({"precision": "float32"})


def scanned(potential, scan):
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=20.0, defocus=DEFOCUS)
    detector = abtem.PixelatedDetector(max_angle="valid")
    return probe.scan(potential, scan=scan, detectors=detector).compute()


def misfit(dataset) -> float:
    """Relative L2 distance of the imported patterns from ptyopt's model on the truth
    (no scale fitted: both normalise the probe to one electron)."""
    n = dataset.detector_shape[0]
    offset = (n // 2 - dataset.pattern_centre_px[0], n // 2 - dataset.pattern_centre_px[1])
    modelled = model_patterns_from_ground_truth(
        dataset, detector_offset_px=offset, bandlimit=None, electrons=1.0
    )
    measured = dataset.patterns.astype(np.float64)
    return float(np.linalg.norm(modelled - measured) / np.linalg.norm(measured))


@pytest.mark.parametrize(
    ("gpts", "max_angle"), [(64, "valid"), (63, "valid"), (64, "cutoff"), (63, "full")]
)
def test_abtem_patterns_are_fftshifted_with_zero_at_half_the_size(gpts, max_angle):
    """A probe in vacuum: the bright-field disc's centre of mass (exactly zero frequency,
    the disc being symmetric about it) lies at pixel N//2 for even and odd N, as the
    axes' offsets say, and the importer takes that centre."""
    abtem.config.set({"device": "cpu", "diagnostics.progress_bar": False})
    vacuum = abtem.Potential(ase.Atoms(cell=(10.0, 10.0, 2.0)), gpts=gpts, slice_thickness=2.0)
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=20.0)
    patterns = probe.scan(
        vacuum, scan=abtem.CustomScan([(5.0, 5.0)]), detectors=abtem.PixelatedDetector(max_angle)
    ).compute()
    image = np.asarray(patterns.array, np.float64).reshape(patterns.shape[-2:])
    n = image.shape[0]
    com = [float((image.sum(axis=1 - a) * np.arange(n)).sum() / image.sum()) for a in (0, 1)]
    assert com == pytest.approx([n // 2, n // 2], abs=1e-6)
    for axis in patterns.axes_metadata[-2:]:
        assert axis.fftshift and -axis.offset / axis.sampling == pytest.approx(n // 2)


def test_grid_scan_import_is_reproduced_by_the_forward_model(x64, specimen, tmp_path):
    """A 5×4 GridScan (x from 2 Å in 0.8 Å steps, y from 3 Å in 0.6 Å steps) imported
    from abTEM's zarr: energy, semi-angle, pitch and centre from the file, positions
    (y, x) from its scan axes; the model reproduces the patterns to 2 % (measured
    0.75 %: the truth's transmission resampled from 64² to 30² points). A transposed or
    mirrored detector, transposed positions or the opposite defocus sign each miss by
    ten times more (measured 11–13 %), a half-pixel centre error too (27 %)."""
    potential, truth, _ = specimen
    store = tmp_path / "scan.zarr"
    scanned(potential, abtem.GridScan(start=(2.0, 3.0), end=(6.0, 5.4), gpts=(5, 4))).to_zarr(
        str(store)
    )

    def imported(**extra):
        values = {"defocus_A": DEFOCUS, "ground_truth": str(truth), **extra}
        return import_dataset(str(store), load_metadata(None, values)).dataset

    dataset = imported()
    assert dataset.patterns.shape == (20, 30, 30)
    assert dataset.optics.energy_eV == ENERGY and dataset.optics.semiangle_mrad == 20.0
    assert dataset.optics.aberrations["C10"] == -DEFOCUS
    assert dataset.pattern_centre_px == (15.0, 15.0)
    lam = abtem.core.energy.energy2wavelength(ENERGY)
    assert dataset.angular_sampling_mrad == pytest.approx(lam / CELL * 1e3, rel=1e-9)
    assert dataset.pixel_size_A == pytest.approx(CELL / 30, rel=1e-6)
    i, j = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")  # rows y, columns x
    expected = np.stack([3.0 + 0.6 * i.ravel(), 2.0 + 0.8 * j.ravel()], axis=-1)
    np.testing.assert_allclose(dataset.positions_A, expected, atol=1e-12)
    assert dataset.ground_truth.potential_V_A.shape == (3, 30, 30)

    right = misfit(dataset)
    assert right < 0.02
    wrong = {
        "transposed detector": misfit(imported(transpose_detector=True)),
        "mirrored detector": misfit(imported(flip_detector=True)),
        "positions (x, y)": misfit(
            dataclasses.replace(dataset, positions_A=dataset.positions_A[:, ::-1])
        ),
        "C10 = +defocus": misfit(
            dataclasses.replace(
                dataset, optics=dataclasses.replace(dataset.optics, aberrations={"C10": DEFOCUS})
            )
        ),
        "centre off by ½ px": misfit(dataclasses.replace(dataset, pattern_centre_px=(15.5, 15.5))),
    }
    for mistake, error in wrong.items():
        assert error > 10 * right, (mistake, error, right)


def test_rotated_scan_from_abtem_and_from_arrays(x64, specimen):
    """A 3×4 raster turned by 30° (its fast axis from +x towards +y), simulated by abTEM
    as a CustomScan: imported from the zarr (positions from the file) and from plain
    arrays with scan_rotation_deg=30, the positions agree with abTEM's and the model
    reproduces the patterns; scan_rotation_deg=−30 puts them elsewhere and misses."""
    potential, truth, folder = specimen
    theta, step, origin_xy = np.deg2rad(30.0), (0.7, 0.55), np.array([4.0, 2.5])  # step (y, x)
    fast, slow = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
    positions_xy = np.array(
        [origin_xy + j * step[1] * fast + i * step[0] * slow for i in range(3) for j in range(4)]
    )
    measurement = scanned(potential, abtem.CustomScan(positions_xy))
    measurement.to_zarr(str(folder / "rotated.zarr"))
    arrays = folder / "rotated.npy"
    np.save(arrays, np.asarray(measurement.array).transpose(0, 2, 1).reshape(3, 4, 30, 30))

    from_zarr = import_dataset(
        str(folder / "rotated.zarr"),
        load_metadata(None, {"defocus_A": DEFOCUS, "ground_truth": str(truth)}),
    ).dataset
    np.testing.assert_allclose(from_zarr.positions_A, positions_xy[:, ::-1], atol=1e-12)
    assert misfit(from_zarr) < 0.02

    def from_arrays(rotation):
        values = {
            "energy_kV": ENERGY / 1e3,
            "semiangle_mrad": 20.0,
            "defocus_A": DEFOCUS,
            "detector_mrad_per_px": from_zarr.angular_sampling_mrad,
            "pattern_centre_px": [15, 15],
            "scan_step_A": list(step),
            "scan_origin_A": [float(origin_xy[1]), float(origin_xy[0])],
            "scan_rotation_deg": rotation,
            "ground_truth": str(truth),
        }
        return import_dataset(str(arrays), load_metadata(None, values)).dataset

    dataset = from_arrays(30.0)
    np.testing.assert_allclose(dataset.positions_A, positions_xy[:, ::-1], atol=1e-12)
    right = misfit(dataset)
    assert right < 0.02
    assert misfit(from_arrays(-30.0)) > 10 * right
