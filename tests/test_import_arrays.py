"""Import from plain arrays (.npy, HDF5 datasets) against a simulated dataset as truth:
patterns, positions, sampling and centre come back as simulated; crop, bin, transpose
and flip do what they say; the bright-field disc's centre and the Fourier resampling of
a ground truth are checked against analytic cases; the command line writes the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import raster_recipe

from ptyopt.data.file import read_dataset, write_dataset
from ptyopt.data.simulate import pattern_centre, simulate_dataset
from ptyopt.fourier import fourier_resample
from ptyopt.io import cli
from ptyopt.io.build import import_dataset
from ptyopt.io.detector import bright_field_disc
from ptyopt.io.metadata import load_metadata


def known(dataset) -> dict:
    """The metadata a microscopist would give for a :func:`raster_recipe` dataset."""
    return {
        "energy_kV": 200.0,
        "semiangle_mrad": 20.0,
        "defocus_A": 20.0,
        "scan_step_A": 0.77,
        "detector_mrad_per_px": dataset.angular_sampling_mrad,
        "scan_origin_A": [float(v) for v in dataset.positions_A[0]],
    }


def imported(source, **values):
    return import_dataset(str(source), load_metadata(None, values))


def assert_same_acquisition(dataset, original, centre_tolerance=0.0):
    np.testing.assert_array_equal(dataset.patterns, original.patterns)
    np.testing.assert_allclose(dataset.positions_A, original.positions_A, atol=1e-12)
    assert dataset.angular_sampling_mrad == pytest.approx(original.angular_sampling_mrad, rel=1e-12)
    assert dataset.pixel_size_A == pytest.approx(original.pixel_size_A, rel=1e-12)
    assert dataset.optics.energy_eV == original.optics.energy_eV
    assert dataset.optics.semiangle_mrad == original.optics.semiangle_mrad
    assert dataset.optics.aberrations["C10"] == original.optics.aberrations["C10"]
    np.testing.assert_allclose(
        dataset.pattern_centre_px, original.pattern_centre_px, atol=centre_tolerance
    )


def test_npy_scan_imports_as_simulated(raster_dataset, tmp_path):
    """(3, 4, 32, 32) patterns and the nominal metadata: the dataset as simulated, the
    centre found from the bright-field disc to 0.02 px, the ground truth (from the
    simulation's own dataset file) unchanged."""
    np.save(tmp_path / "scan.npy", raster_dataset.patterns.reshape(3, 4, 32, 32))
    simulated = write_dataset(tmp_path / "simulated.h5", raster_dataset)
    result = imported(tmp_path / "scan.npy", ground_truth=str(simulated), **known(raster_dataset))
    dataset = result.dataset
    assert_same_acquisition(dataset, raster_dataset, centre_tolerance=0.02)
    assert dataset.name == "scan"
    assert any("bright-field disc" in note for note in result.notes)
    truth, original = dataset.ground_truth, raster_dataset.ground_truth
    np.testing.assert_array_equal(truth.potential_V_A, original.potential_V_A)
    assert truth.sigma_per_V_A == pytest.approx(original.sigma_per_V_A, rel=1e-12)
    assert (truth.sampling_A, truth.slice_thickness_A) == pytest.approx(
        (original.sampling_A, original.slice_thickness_A), rel=1e-9
    )


def test_hdf5_stack_with_explicit_positions(tiny_dataset, tmp_path):
    """A jittered scan as an (n, k, k) HDF5 dataset and its positions as another: the
    positions are taken as given (the scan's frame is the specimen's at 0°)."""
    path = tmp_path / "acquisition.h5"
    with h5py.File(path, "w") as file:
        file["data/frames"] = tiny_dataset.patterns
        file["data/positions"] = tiny_dataset.positions_A
    values = known(tiny_dataset)
    del values["scan_step_A"], values["scan_origin_A"]
    dataset = imported(
        f"{path}:/data/frames",
        positions_A=f"{path}:/data/positions",
        pattern_centre_px=[16, 16],
        **values,
    ).dataset
    assert_same_acquisition(dataset, tiny_dataset)


def test_transposed_and_flipped_detectors_are_undone(raster_dataset, tmp_path):
    """A detector that stores k_x first, or its rows reversed, imports as simulated with
    transpose_detector / flip_detector; a centre given in the file's pixels follows."""
    patterns = raster_dataset.patterns.reshape(3, 4, 32, 32)
    np.save(tmp_path / "transposed.npy", patterns.swapaxes(-2, -1))
    np.save(tmp_path / "flipped.npy", patterns[..., ::-1, :])
    values = known(raster_dataset)
    transposed = imported(
        tmp_path / "transposed.npy", transpose_detector=True, pattern_centre_px=[16, 16], **values
    ).dataset
    assert_same_acquisition(transposed, raster_dataset)
    flipped = imported(
        tmp_path / "flipped.npy", flip_detector=True, pattern_centre_px=[15, 16], **values
    ).dataset  # zero frequency: row 16 of 32 is row 31 − 16 = 15 of the reversed rows
    assert_same_acquisition(flipped, raster_dataset)
    wrong = imported(tmp_path / "flipped.npy", pattern_centre_px=[15, 16], **values).dataset
    assert not np.array_equal(wrong.patterns, raster_dataset.patterns)


def test_crop_and_bin_give_the_simulated_binned_detector(tmp_path):
    """On a 15.6 Å cell in focus (the binned window must hold the probe): 32 px patterns placed
    off-centre on a 40×46 px detector, cropped back to 32 px around the disc's centre,
    are the simulation exactly; binned by 2 they are the patterns, pitch and centre
    (N/2 − 1/4 = 7.75) of the same recipe simulated with a binned detector."""
    optics = {"energy_kV": 200, "semiangle_mrad": 20, "defocus_A": 0}
    structure = {"name": "SrTiO3_001", "lateral_repeats": [4, 4], "thickness_A": 3.9}
    original = simulate_dataset(raster_recipe(optics=optics, structure=structure), progress=False)
    binned_recipe = raster_recipe(
        optics=optics, structure=structure, detector={"pixels": 16, "bin": 2}
    )
    simulated = simulate_dataset(binned_recipe, progress=False)
    larger = np.zeros((3, 4, 40, 46), np.float32)
    larger[..., 3:35, 9:41] = original.patterns.reshape(3, 4, 32, 32)
    np.save(tmp_path / "larger.npy", larger)
    values = {**known(original), "defocus_A": 0.0}
    cropped = imported(tmp_path / "larger.npy", crop_px=32, **values).dataset
    assert_same_acquisition(cropped, original, centre_tolerance=0.02)

    binned = imported(
        tmp_path / "larger.npy", crop_px=32, bin=2, pattern_centre_px=[19, 25], **values
    ).dataset
    assert pattern_centre(binned_recipe) == (7.75, 7.75)
    assert binned.pattern_centre_px == simulated.pattern_centre_px
    np.testing.assert_allclose(binned.patterns, simulated.patterns, rtol=1e-5, atol=1e-3)
    assert binned.angular_sampling_mrad == pytest.approx(simulated.angular_sampling_mrad)
    np.testing.assert_allclose(binned.positions_A, simulated.positions_A, atol=1e-12)


def disc_image(shape, centre, radius, supersample=8):
    """An anti-aliased disc (each pixel's covered fraction) on a faint background."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    y = np.arange(shape[0])[:, None, None, None] + offsets[None, None, :, None]
    x = np.arange(shape[1])[None, :, None, None] + offsets[None, None, None, :]
    inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2
    return 100.0 * inside.mean(axis=(2, 3)) + 2.0


@pytest.mark.parametrize(
    ("centre", "radius"), [((20.37, 23.81), 9.3), ((31.5, 32.0), 15.0), ((12.9, 40.21), 6.4)]
)
def test_bright_field_disc_centre_is_sub_pixel(centre, radius):
    """Centre to 0.03 px and radius to 0.1 px on a 48×52 detector, a hot pixel of 50
    times the disc's level in a corner ignored."""
    image = disc_image((48, 52), centre, radius)
    image[2, 3] = 5000.0
    disc = bright_field_disc(image)
    np.testing.assert_allclose(disc.centre_px, centre, atol=0.03)
    assert disc.radius_px == pytest.approx(radius, abs=0.1)


@pytest.mark.parametrize(
    ("shape", "new_shape"), [((24, 30), (37, 20)), ((24, 30), (48, 64)), ((45, 45), (32, 32))]
)
def test_fourier_resampling_is_exact_for_band_limited_cells(shape, new_shape):
    """A periodic band-limited image sampled on one grid, resampled onto another of the
    same cell (crop or zero-pad of the spectrum, odd and even sizes): the analytic
    values on the new grid to 1e-12."""

    def cell(n):
        y = np.arange(n[0])[:, None] / n[0]
        x = np.arange(n[1])[None, :] / n[1]
        return 3.0 + np.cos(2 * np.pi * 2 * y) + 0.5 * np.sin(2 * np.pi * (3 * x + y))

    resampled = fourier_resample(np.stack([cell(shape), 2 * cell(shape)]), new_shape)
    np.testing.assert_allclose(
        resampled, np.stack([cell(new_shape), 2 * cell(new_shape)]), atol=1e-12
    )


def test_potential_file_on_a_finer_grid_is_resampled(raster_dataset, tmp_path):
    """The truth without its Nyquist row and column (band-limited), its Fourier series
    evaluated directly on 45² points of the cell (sampling 32·dx/45) and given as a
    potential file: resampled onto the reconstruction pixel it is that truth again."""
    truth = raster_dataset.ground_truth
    spectrum = np.fft.fft2(truth.potential_V_A.astype(np.float64))
    spectrum[:, 16, :] = spectrum[:, :, 16] = 0
    band_limited = np.real(np.fft.ifft2(spectrum))
    k = np.fft.fftfreq(32, 1 / 32)
    series = np.exp(2j * np.pi * np.outer(np.arange(45) / 45, k))  # (45, 32)
    finer = np.real(np.einsum("yk,skl,xl->syx", series, spectrum, series)) / 32**2
    path = tmp_path / "potential.h5"
    with h5py.File(path, "w") as file:
        file["potential_V_A"] = finer
        file.attrs["sampling_A"] = truth.sampling_A * 32 / 45
        file.attrs["slice_thickness_A"] = truth.slice_thickness_A
        file.attrs["kind"] = "static"
    np.save(tmp_path / "scan.npy", raster_dataset.patterns.reshape(3, 4, 32, 32))
    dataset = imported(tmp_path / "scan.npy", ground_truth=str(path), **known(raster_dataset))
    resampled = dataset.dataset.ground_truth
    np.testing.assert_allclose(resampled.potential_V_A, band_limited, atol=1e-5 * np.ptp(finer))
    assert resampled.sampling_A == pytest.approx(truth.sampling_A, rel=1e-9)
    assert resampled.potential_V_A.shape == truth.potential_V_A.shape


def test_yaml_metadata_with_overrides(raster_dataset, tmp_path):
    """Keys from a YAML file (paths in it relative to its folder), one of them overridden
    on the command line; nominal thickness, slices, dose and name recorded."""
    folder = tmp_path / "meta"
    folder.mkdir()
    np.save(folder / "positions.npy", raster_dataset.positions_A)
    np.save(tmp_path / "scan.npy", raster_dataset.patterns)
    values = known(raster_dataset)
    del values["scan_step_A"], values["scan_origin_A"]
    lines = [f"{key}: {value}" for key, value in values.items()]
    lines = [line for line in lines if not line.startswith("energy_kV")] + ["energy_kV: 300"]
    lines += ["positions_A: positions.npy", "thickness_A: 7.7", "slices: 2", "name: mine"]
    (folder / "meta.yaml").write_text("\n".join(lines) + "\n")
    metadata = load_metadata(str(folder / "meta.yaml"), {"energy_kV": 200.0, "dose_e_per_A2": 1e6})
    assert metadata.given_in["energy_kV"] == "command line"
    assert metadata.given_in["semiangle_mrad"] == str(folder / "meta.yaml")
    dataset = import_dataset(str(tmp_path / "scan.npy"), metadata).dataset
    assert_same_acquisition(dataset, raster_dataset, centre_tolerance=0.02)
    assert (dataset.name, dataset.nominal_thickness_A, dataset.nominal_slices) == ("mine", 7.7, 2)
    assert dataset.dose_e_per_A2 == 1e6


def test_command_writes_a_valid_dataset(raster_dataset, tmp_path, capsys):
    """In process: the file read back is the dataset, and the console names the centre."""
    np.save(tmp_path / "scan.npy", raster_dataset.patterns.reshape(3, 4, 32, 32))
    args = [f"metadata.{key}={value}" for key, value in known(raster_dataset).items()]
    out = tmp_path / "out" / "imported.h5"
    status = cli.main([f"source={tmp_path / 'scan.npy'}", f"out={out}", *args])
    assert status == 0, capsys.readouterr().err
    assert "bright-field disc" in capsys.readouterr().out
    assert_same_acquisition(read_dataset(out), raster_dataset, centre_tolerance=0.02)


def test_python_m_ptyopt_import_fails_in_one_line(tmp_path):
    """The command as a user runs it, with a misspelt key: exit status 2, one line
    ``ptyopt: error: …`` naming the key and the keys allowed, nothing written."""
    root = str(Path(__file__).resolve().parents[1])
    out = tmp_path / "bad.h5"
    bad = subprocess.run(
        [sys.executable, "-m", "ptyopt", "import", "source=scan.npy", f"out={out}"]
        + ["metadata.energy_keV=200"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("ptyopt: error: command line: metadata.energy_keV: ")
    assert "allowed keys: name, energy_kV" in bad.stderr
    assert not out.exists()


def test_help_lists_import(capsys):
    """``--help`` (Hydra's header) names the command; ``import --help`` lists every key."""
    from omegaconf import OmegaConf

    from ptyopt.io.metadata import METADATA_KEYS
    from ptyopt.paths import conf_dir

    header = OmegaConf.load(conf_dir() / "config.yaml").hydra.help.header
    assert "python -m ptyopt import source=PATH out=DATASET.h5" in header
    assert cli.main(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert all(key in shown for key in METADATA_KEYS)
