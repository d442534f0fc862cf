"""Round trip and validation of the HDF5 dataset file (ptyopt.data.file)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyopt import physics
from ptyopt.data.dataset import GroundTruth, Optics, PtychoDataset
from ptyopt.data.file import FORMAT, VERSION, DatasetFileError, read_dataset, write_dataset

N_POSITIONS = 12
K = 16


def make_dataset(
    *,
    ground_truth: bool = True,
    dose: float | None = 1.0e4,
    simulation: bool = True,
    k: int = K,
) -> PtychoDataset:
    """A small synthetic dataset: Poisson patterns, a raster scan, an optional truth."""
    rng = np.random.default_rng(0)
    truth = None
    if ground_truth:
        truth = GroundTruth(
            potential_V_A=rng.normal(size=(3, 20, 20)).astype(np.float32),
            slice_thickness_A=2.0,
            sampling_A=physics.reconstruction_pixel_size_A(200e3, k, 1.5),  # the optics'
            sigma_per_V_A=7.3e-4,
            kind="thermal_mean",
            n_configurations=8,
        )
    y, x = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
    return PtychoDataset(
        name="synthetic",
        patterns=rng.poisson(50.0, size=(N_POSITIONS, k, k)).astype(np.float32),
        positions_A=np.stack([y.ravel(), x.ravel()], axis=1) * 0.5,
        optics=Optics(
            energy_eV=200e3, semiangle_mrad=25.0, aberrations={"C10": -50.0, "C30": 1.0e4}
        ),
        angular_sampling_mrad=1.5,
        pattern_centre_px=(8.0, 7.5),
        dose_e_per_A2=dose,
        ground_truth=truth,
        simulation=(
            {"code": "abtem", "cell": {"atoms": ["Si", "O"], "repeat": [3, 3, 1]}, "seed": 1}
            if simulation
            else None
        ),
    )


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "good.h5", make_dataset())


def assert_datasets_equal(actual: PtychoDataset, expected: PtychoDataset) -> None:
    assert actual.name == expected.name
    assert actual.patterns.dtype == np.float32
    np.testing.assert_array_equal(actual.patterns, expected.patterns)
    assert actual.positions_A.dtype == np.float64
    np.testing.assert_array_equal(actual.positions_A, expected.positions_A)
    assert actual.optics == expected.optics
    assert actual.angular_sampling_mrad == expected.angular_sampling_mrad
    assert actual.pattern_centre_px == expected.pattern_centre_px
    assert actual.dose_e_per_A2 == expected.dose_e_per_A2
    assert actual.nominal_thickness_A == expected.nominal_thickness_A
    assert actual.nominal_slices == expected.nominal_slices
    assert actual.simulation == expected.simulation
    if expected.ground_truth is None:
        assert actual.ground_truth is None
        return
    truth, expected_truth = actual.ground_truth, expected.ground_truth
    assert truth is not None
    assert truth.potential_V_A.dtype == np.float32
    np.testing.assert_array_equal(truth.potential_V_A, expected_truth.potential_V_A)
    for name in ("slice_thickness_A", "sampling_A", "sigma_per_V_A", "kind", "n_configurations"):
        assert getattr(truth, name) == getattr(expected_truth, name)


# --- round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("with_optional", [True, False], ids=["everything", "minimal"])
def test_round_trip(tmp_path: Path, with_optional: bool) -> None:
    dataset = make_dataset(
        ground_truth=with_optional, dose=1.0e4 if with_optional else None, simulation=with_optional
    )
    if with_optional:
        dataset = dataclasses.replace(dataset, nominal_thickness_A=6.5, nominal_slices=3)
    else:
        dataset = dataclasses.replace(dataset, optics=Optics(energy_eV=80e3, semiangle_mrad=20.0))
    path = tmp_path / "nested" / "dir" / "data.h5"

    assert write_dataset(path, dataset) == path
    assert_datasets_equal(read_dataset(path), dataset)
    assert [p.name for p in path.parent.iterdir()] == ["data.h5"]  # no temporary file left
    with h5py.File(path, "r") as file:
        assert file.attrs["format"] == FORMAT
        assert file.attrs["version"] == VERSION
        assert ("dose_e_per_A2" in file.attrs) == with_optional
        assert ("simulation" in file.attrs) == with_optional
        assert ("nominal_thickness_A" in file.attrs) == with_optional
        assert ("ground_truth" in file) == with_optional


def test_layout_chunking_and_compression(good_file: Path) -> None:
    with h5py.File(good_file, "r") as file:
        patterns = file["patterns"]
        assert patterns.chunks == (1, K, K)
        assert (patterns.compression, patterns.compression_opts) == ("gzip", 1)
        assert file["positions_A"].dtype == np.float64
        assert file["ground_truth/potential_V_A"].compression == "gzip"
        assert dict(file["optics/aberrations"].attrs) == {"C10": -50.0, "C30": 1.0e4}
        assert tuple(file["detector"].attrs["pattern_centre_px"]) == (8.0, 7.5)


def test_float32_positions_are_read_as_float64(tmp_path: Path) -> None:
    dataset = make_dataset()
    path = write_dataset(
        tmp_path / "f32.h5",
        dataclasses.replace(dataset, positions_A=dataset.positions_A.astype(np.float32)),
    )
    with h5py.File(path, "r+") as file:  # a file written by another tool, with float32
        del file["positions_A"]
        file["positions_A"] = dataset.positions_A.astype(np.float32)
    positions = read_dataset(path).positions_A
    assert positions.dtype == np.float64
    np.testing.assert_array_equal(positions, dataset.positions_A)


def test_overwrite_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    write_dataset(path, make_dataset())
    write_dataset(path, make_dataset(ground_truth=False))
    assert read_dataset(path).ground_truth is None
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]


# --- unreadable files --------------------------------------------------------------------


def assert_error(path: Path, match: str) -> DatasetFileError:
    with pytest.raises(DatasetFileError, match=match) as info:
        read_dataset(path)
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    assert_error(tmp_path / "absent.h5", "does not exist")


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"this is not an HDF5 file at all\n" * 100)
    assert_error(path, re.escape("is not a readable HDF5 file (truncated or corrupt?)"))


def test_truncated_file(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "big.h5", make_dataset(k=96))
    data = path.read_bytes()
    with h5py.File(path, "r") as file:  # the patterns really lie past the cut
        assert file["patterns"].id.get_chunk_info(N_POSITIONS - 1).byte_offset > len(data) // 2
    path.write_bytes(data[: len(data) // 2])
    error = assert_error(path, re.escape("is not a readable HDF5 file (truncated or corrupt?)"))
    assert isinstance(error.__cause__, OSError)


def test_corrupt_pattern_chunk_fails_on_read(tmp_path: Path) -> None:
    """The file opens fine; only decompressing a pattern reveals the damage."""
    path = write_dataset(tmp_path / "corrupt.h5", make_dataset())
    with h5py.File(path, "r") as file:
        chunk = file["patterns"].id.get_chunk_info(3)
    with path.open("r+b") as raw:
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    assert_error(path, re.escape("truncated or corrupt?): reading /patterns failed"))


# --- invalid contents --------------------------------------------------------------------


def set_attr(key: str, name: str, value: object) -> Callable[[h5py.File], None]:
    def edit(file: h5py.File) -> None:
        file[key].attrs[name] = value

    return edit


def del_attr(key: str, name: str) -> Callable[[h5py.File], None]:
    def edit(file: h5py.File) -> None:
        del file[key].attrs[name]

    return edit


def delete(key: str) -> Callable[[h5py.File], None]:
    def edit(file: h5py.File) -> None:
        del file[key]

    return edit


def replace(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    """Overwrite dataset ``key`` by ``change`` applied to its contents."""

    def edit(file: h5py.File) -> None:
        data = change(file[key][()])
        del file[key]
        file[key] = data

    return edit


def with_values(index: tuple, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(data: np.ndarray) -> np.ndarray:
        data[index] = value
        return data

    return change


BAD_FILES = {
    "wrong format": (
        set_attr("/", "format", "other-format"),
        "root attr format is 'other-format', expected 'ptyopt-dataset'",
    ),
    "missing format": (del_attr("/", "format"), "root attr format is missing"),
    "newer version": (
        set_attr("/", "version", VERSION + 1),
        f"root attr version is {VERSION + 1}, newer than the newest supported version {VERSION}",
    ),
    "missing version": (del_attr("/", "version"), "root attr version is missing"),
    "missing name": (del_attr("/", "name"), "root attr name is missing"),
    "missing patterns": (delete("patterns"), "/patterns is missing"),
    "missing positions": (delete("positions_A"), "/positions_A is missing"),
    "missing optics group": (delete("optics"), "/optics is missing"),
    "missing energy": (del_attr("optics", "energy_eV"), "/optics attr energy_eV is missing"),
    "missing aberrations": (delete("optics/aberrations"), "/optics/aberrations is missing"),
    "missing centre": (
        del_attr("detector", "pattern_centre_px"),
        "/detector attr pattern_centre_px is missing",
    ),
    "missing potential": (
        delete("ground_truth/potential_V_A"),
        "/ground_truth/potential_V_A is missing",
    ),
    "missing kind": (del_attr("ground_truth", "kind"), "/ground_truth attr kind is missing"),
    "patterns as group": (
        lambda file: delete("patterns")(file) or file.create_group("patterns"),
        "/patterns is a Group, expected a Dataset",
    ),
    "patterns 2-D": (
        replace("patterns", lambda d: d[0]),
        r"/patterns has shape \(16, 16\), expected \(n_positions >= 1, k, k\)",
    ),
    "patterns not square": (
        replace("patterns", lambda d: d[:, :, :15]),
        r"/patterns has shape \(12, 16, 15\), expected",
    ),
    "positions not (n, 2)": (
        replace("positions_A", lambda d: np.ones((N_POSITIONS, 3))),
        r"/positions_A has shape \(12, 3\), expected \(n_positions, 2\)",
    ),
    "ground truth 2-D": (
        replace("ground_truth/potential_V_A", lambda d: d[0]),
        r"/ground_truth/potential_V_A has shape \(20, 20\), expected \(n_slices, ny, nx\)",
    ),
    "integer patterns": (
        replace("patterns", lambda d: d.astype(np.int32)),
        "/patterns has dtype int32, expected float32",
    ),
    "complex patterns": (
        replace("patterns", lambda d: d.astype(np.complex64)),
        "/patterns has dtype complex64, expected float32",
    ),
    "float64 potential": (
        replace("ground_truth/potential_V_A", lambda d: d.astype(np.float64)),
        "/ground_truth/potential_V_A has dtype float64, expected float32",
    ),
    "integer positions": (
        replace("positions_A", lambda d: d.astype(np.int64)),
        "/positions_A has dtype int64, expected floating",
    ),
    "NaN patterns": (
        replace("patterns", with_values((slice(0, 3), 0, 0), np.nan)),
        r"/patterns contains 3 non-finite values \(NaN or inf\)",
    ),
    "inf positions": (
        replace("positions_A", with_values((5, 1), np.inf)),
        "/positions_A contains 1 non-finite values",
    ),
    "NaN ground truth": (
        replace("ground_truth/potential_V_A", with_values((1, slice(0, 2), 4), np.nan)),
        "/ground_truth/potential_V_A contains 2 non-finite values",
    ),
    "negative counts": (
        replace("patterns", with_values((2, slice(0, 4), 0), -1.0)),
        "/patterns contains 4 negative counts",
    ),
    "count mismatch": (
        replace("positions_A", lambda d: d[:-1]),
        "/positions_A has 11 positions but /patterns has 12 patterns",
    ),
    "zero energy": (
        set_attr("optics", "energy_eV", 0.0),
        r"/optics attr energy_eV is 0.0, expected a value > 0",
    ),
    "negative semiangle": (
        set_attr("optics", "semiangle_mrad", -3.0),
        "/optics attr semiangle_mrad is -3.0, expected a value > 0",
    ),
    "string energy": (
        set_attr("optics", "energy_eV", "200 keV"),
        "/optics attr energy_eV is '200 keV', expected a finite real number",
    ),
    "zero angular sampling": (
        set_attr("detector", "angular_sampling_mrad", 0.0),
        "/detector attr angular_sampling_mrad is 0.0, expected a value > 0",
    ),
    "bad centre": (
        set_attr("detector", "pattern_centre_px", [1.0, 2.0, 3.0]),
        r"/detector attr pattern_centre_px is \[1.0, 2.0, 3.0\], expected 2 finite numbers",
    ),
    "NaN aberration": (
        set_attr("optics/aberrations", "C12", np.nan),
        "/optics/aberrations attr C12 is nan, expected a finite real number",
    ),
    "negative dose": (
        set_attr("/", "dose_e_per_A2", -1.0),
        "root attr dose_e_per_A2 is -1.0, expected a value > 0",
    ),
    "negative nominal thickness": (
        set_attr("/", "nominal_thickness_A", -4.0),
        "root attr nominal_thickness_A is -4.0, expected a value > 0",
    ),
    "fractional nominal slices": (
        set_attr("/", "nominal_slices", 2.5),
        "root attr nominal_slices is 2.5, expected an integer >= 1",
    ),
    "zero slice thickness": (
        set_attr("ground_truth", "slice_thickness_A", 0.0),
        "/ground_truth attr slice_thickness_A is 0.0, expected a value > 0",
    ),
    "zero sampling": (
        set_attr("ground_truth", "sampling_A", 0.0),
        "/ground_truth attr sampling_A is 0.0, expected a value > 0",
    ),
    "negative sigma": (
        set_attr("ground_truth", "sigma_per_V_A", -1e-3),
        "/ground_truth attr sigma_per_V_A is -0.001, expected a value > 0",
    ),
    "zero configurations": (
        set_attr("ground_truth", "n_configurations", 0),
        "/ground_truth attr n_configurations is 0, expected an integer >= 1",
    ),
    "invalid kind": (
        set_attr("ground_truth", "kind", "dynamic"),
        r"/ground_truth attr kind is 'dynamic', expected one of "
        r"\('thermal_mean', 'static', 'debye_waller'\)",
    ),
    "unparseable simulation": (
        set_attr("/", "simulation", "{not json"),
        r"root attr simulation is not valid JSON \(",
    ),
    "simulation not an object": (
        set_attr("/", "simulation", "[1, 2]"),
        "root attr simulation is a list, expected a dict",
    ),
}


@pytest.mark.parametrize(("edit", "match"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_invalid_file(good_file: Path, edit: Callable[[h5py.File], None], match: str) -> None:
    with h5py.File(good_file, "r+") as file:
        edit(file)
    assert_error(good_file, match)


# --- invalid datasets are not written ----------------------------------------------------


def _nan_patterns(dataset: PtychoDataset) -> PtychoDataset:
    patterns = dataset.patterns.copy()
    patterns[0, 0, 0] = np.nan
    return dataclasses.replace(dataset, patterns=patterns)


BAD_DATASETS = {
    "NaN patterns": (_nan_patterns, "/patterns contains 1 non-finite values"),
    "integer patterns": (
        lambda d: dataclasses.replace(d, patterns=d.patterns.astype(np.int32)),
        "/patterns has dtype int32, expected float32",
    ),
    "invalid kind": (
        lambda d: dataclasses.replace(
            d, ground_truth=dataclasses.replace(d.ground_truth, kind="dynamic")
        ),
        "/ground_truth attr kind is 'dynamic'",
    ),
    "zero dose": (
        lambda d: dataclasses.replace(d, dose_e_per_A2=0.0),
        "root attr dose_e_per_A2 is 0.0, expected a value > 0",
    ),
    "simulation not JSON": (
        lambda d: dataclasses.replace(d, simulation={"array": np.zeros(3)}),
        "root attr simulation is not JSON-serialisable",
    ),
}


@pytest.mark.parametrize(("corrupt", "match"), BAD_DATASETS.values(), ids=BAD_DATASETS.keys())
def test_write_rejects_invalid_dataset(
    tmp_path: Path, corrupt: Callable[[PtychoDataset], PtychoDataset], match: str
) -> None:
    path = tmp_path / "out" / "bad.h5"
    with pytest.raises(DatasetFileError, match=match) as info:
        write_dataset(path, corrupt(make_dataset()))
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the directory
