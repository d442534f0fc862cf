"""Dataset files that contradict themselves are refused on write and on read, in one
line naming the file and the key: a ground truth off the reconstruction pixel, a ground
truth that is not one periodic cell of the simulated specimen, a pattern centre off the
detector, a position far from all others and a scan too spread for any object. The
analytic Debye–Waller thermal average is a ground-truth kind of its own."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyopt.data.dataset import DopantSite, DopantTable, PtychoDataset
from ptyopt.data.file import (
    MAX_OBJECT_PX,
    DatasetFileError,
    read_dataset,
    write_dataset,
)
from ptyopt.io.ground_truth import read_ground_truth


def with_truth(dataset: PtychoDataset, **changes) -> PtychoDataset:
    return dataclasses.replace(
        dataset, ground_truth=dataclasses.replace(dataset.ground_truth, **changes)
    )


def half_cell(dataset: PtychoDataset) -> PtychoDataset:
    """The truth cropped to its first half along x: not the simulated cell."""
    potential = dataset.ground_truth.potential_V_A
    half = potential.shape[2] // 2
    return with_truth(dataset, potential_V_A=np.ascontiguousarray(potential[..., :half]))


def outlier(dataset: PtychoDataset) -> PtychoDataset:
    positions = dataset.positions_A.copy()
    positions[4] += (1000.0, 0.0)  # 1000 Å beside the scan
    return dataclasses.replace(dataset, positions_A=positions)


def spread(dataset: PtychoDataset) -> PtychoDataset:
    """Every position moved away from the scan centre: spacings scale alike, so no
    position stands out, but the object would be huge."""
    positions = dataset.positions_A
    centre = positions.mean(axis=0)
    scale = 1.2 * MAX_OBJECT_PX * dataset.pixel_size_A / np.ptp(positions, axis=0).max()
    return dataclasses.replace(dataset, positions_A=centre + scale * (positions - centre))


def off_period_dopant(dataset: PtychoDataset) -> PtychoDataset:
    shape = dataset.ground_truth.potential_V_A.shape
    cell = (shape[1] * dataset.ground_truth.sampling_A, shape[2] * dataset.ground_truth.sampling_A)
    site = DopantSite("Ge", "Si", 0.5, 0.5, 1.0)
    return with_truth(dataset, dopants=DopantTable((site,), (cell[0] / 2.5, cell[1] / 3)))


CASES: dict[str, tuple[Callable[[PtychoDataset], PtychoDataset], str]] = {
    "truth at twice the pixel": (
        lambda d: with_truth(d, sampling_A=2 * d.ground_truth.sampling_A),
        r"/ground_truth attr sampling_A is [\d.]+ Å, expected the reconstruction pixel",
    ),
    "truth 0.2 % off the pixel": (
        lambda d: with_truth(d, sampling_A=1.002 * d.ground_truth.sampling_A),
        r"/ground_truth attr sampling_A is",
    ),
    "truth not the simulated cell": (
        half_cell,
        r"/ground_truth/potential_V_A is \d+ × \d+ px .* not one periodic cell of the "
        r"simulated specimen \(root attr simulation cell_edge_A",
    ),
    "dopant period not dividing the cell": (
        off_period_dopant,
        r"/ground_truth/dopant_sites attr host_period_A y is .* not a periodic cell",
    ),
    "pattern centre off the detector": (
        lambda d: dataclasses.replace(d, pattern_centre_px=(1000.0, -5.0)),
        r"/detector attr pattern_centre_px is \(1000.0, -5.0\), expected a point on the "
        r"32 × 32 px detector",
    ),
    "a position 1000 Å away": (
        outlier,
        r"/positions_A row 4 .* Å is [\d.]+ Å from its nearest neighbour, far from the others",
    ),
    "positions too spread": (
        spread,
        rf"/positions_A spans .* Å: the object around them would be \d+ × \d+ px .* "
        rf"more than {MAX_OBJECT_PX} px",
    ),
}


def refused(path: Path, action: Callable[[], object], match: str) -> None:
    with pytest.raises(DatasetFileError) as raised:
        action()
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert re.search(match, message), (match, message)


@pytest.mark.parametrize(("make", "match"), CASES.values(), ids=CASES.keys())
def test_inconsistent_dataset_is_not_written(tiny_dataset, tmp_path, make, match):
    path = tmp_path / "bad.h5"
    refused(path, lambda: write_dataset(path, make(tiny_dataset)), match)
    assert not list(tmp_path.iterdir())


def _rewrite(path: Path, bad: PtychoDataset) -> None:
    """Put ``bad``'s geometry into the (valid) file at ``path`` with h5py, past the
    writer's checks, as another program could."""
    with h5py.File(path, "r+") as file:
        truth = bad.ground_truth
        del file["ground_truth/potential_V_A"]
        file["ground_truth"].create_dataset("potential_V_A", data=truth.potential_V_A)
        file["ground_truth"].attrs["sampling_A"] = truth.sampling_A
        file["detector"].attrs["pattern_centre_px"] = np.array(bad.pattern_centre_px)
        file["positions_A"][...] = bad.positions_A
        if truth.dopants is not None:
            site = truth.dopants.sites[0]
            table = np.array(
                [(b"Ge", b"Si", site.y_A, site.x_A, site.depth_A)],
                dtype=[
                    ("element", "S3"),
                    ("host", "S3"),
                    ("y_A", "<f8"),
                    ("x_A", "<f8"),
                    ("depth_A", "<f8"),
                ],
            )
            sites = file["ground_truth"].create_dataset("dopant_sites", data=table)
            sites.attrs["host_period_A"] = np.array(truth.dopants.host_period_A)


@pytest.mark.parametrize(("make", "match"), CASES.values(), ids=CASES.keys())
def test_inconsistent_dataset_file_is_not_read(tiny_dataset, tmp_path, make, match):
    path = write_dataset(tmp_path / "edited.h5", tiny_dataset)
    _rewrite(path, make(tiny_dataset))
    refused(path, lambda: read_dataset(path), match)


def test_what_the_checks_accept(tiny_dataset, small_dataset, tmp_path):
    """Both fixtures as simulated; the truth 0.05 % off the pixel (rounding in a
    writer); a truth of any cell where no simulation states one (measured data, the
    truth from elsewhere); positions anywhere relative to the cell (the truth tiles)."""
    for dataset in (tiny_dataset, small_dataset):
        write_dataset(tmp_path / "as_simulated.h5", dataset)
        read_dataset(tmp_path / "as_simulated.h5")
    rounded = with_truth(tiny_dataset, sampling_A=1.0005 * tiny_dataset.ground_truth.sampling_A)
    write_dataset(tmp_path / "rounded.h5", rounded)
    measured = dataclasses.replace(half_cell(tiny_dataset), simulation=None)
    write_dataset(tmp_path / "measured.h5", measured)
    shifted = dataclasses.replace(tiny_dataset, positions_A=tiny_dataset.positions_A + 500.0)
    read_dataset(write_dataset(tmp_path / "shifted.h5", shifted))


def test_debye_waller_ground_truth(tiny_dataset, tmp_path):
    """The kind round-trips through the dataset file and the importer's ground truth."""
    dw = with_truth(tiny_dataset, kind="debye_waller", n_configurations=1)
    path = write_dataset(tmp_path / "dw.h5", dw)
    assert read_dataset(path).ground_truth.kind == "debye_waller"
    truth = dw.ground_truth
    potential_file = tmp_path / "potential.h5"
    with h5py.File(potential_file, "w") as file:
        node = file.create_dataset("potential_V_A", data=truth.potential_V_A)
        node.attrs.update(sampling_A=truth.sampling_A, slice_thickness_A=truth.slice_thickness_A)
        node.attrs["kind"] = "debye_waller"
    for source in (path, potential_file):
        imported = read_ground_truth(
            str(source), tiny_dataset.pixel_size_A, tiny_dataset.optics.energy_eV
        )
        assert imported.kind == "debye_waller"
        np.testing.assert_allclose(imported.potential_V_A, truth.potential_V_A, atol=1e-4)
