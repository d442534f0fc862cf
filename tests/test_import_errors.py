"""Every bad input of ``python -m ptyopt import``: exit status 2, one line
``ptyopt: error: <file>: <key>: …`` naming the file and the key, and no file written.
Run in process on a synthetic 3×4 scan of 24 px disc patterns (milliseconds each)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ptyopt.io import cli

GOOD = {
    "energy_kV": 200,
    "semiangle_mrad": 20,
    "defocus_A": 10,
    "scan_step_A": 0.5,
    "detector_mrad_per_px": 3.4,  # disc radius 6 px = 20.4 mrad, detector to 40.8 mrad
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Synthetic sources, positions, ground truths and metadata files, good and bad."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    k = np.arange(24)
    disc = ((k[:, None] - 12.2) ** 2 + (k[None, :] - 11.7) ** 2 <= 36) * 100.0 + 1.0
    patterns = np.broadcast_to(disc, (3, 4, 24, 24)).astype(np.float32)
    np.save(folder / "good.npy", patterns)
    np.save(folder / "stack.npy", patterns.reshape(12, 24, 24))
    np.save(folder / "flat.npy", patterns[0, 0])
    np.save(folder / "wide.npy", np.pad(patterns, ((0, 0), (0, 0), (0, 0), (0, 4))))
    for name, value in (("nan", np.nan), ("inf", np.inf), ("negative", -3.0)):
        bad = patterns.copy()
        bad[1, 2, 5, 7] = value
        np.save(folder / f"{name}.npy", bad)
    np.save(folder / "positions13.npy", np.zeros((13, 2)))
    np.save(folder / "positions3.npy", np.zeros((12, 3)))
    np.save(folder / "positions.npy", np.zeros((12, 2)))
    with h5py.File(folder / "data.h5", "w") as file:
        file["patterns"] = patterns
    # reconstruction pixel: λ/(24·3.4 mrad) = 0.3074 Å; an 8.4 Å cell is 27.33 of them
    with h5py.File(folder / "bad_cell.h5", "w") as file:
        file["potential_V_A"] = np.zeros((1, 40, 40))
        file.attrs.update(sampling_A=0.21, slice_thickness_A=2.0)
    with h5py.File(folder / "no_thickness.h5", "w") as file:
        file["potential_V_A"] = np.zeros((1, 40, 40))
        file.attrs["sampling_A"] = 0.2
    (folder / "notes.xyz").write_text("not data\n")
    (folder / "unknown.yaml").write_text("energy_kV: 200\nfoo: 1\n")
    (folder / "broken.yaml").write_text("energy_kV: [200\n")
    return folder


def arguments(folder, source="good.npy", drop=(), **metadata):
    values = {k: v for k, v in {**GOOD, **metadata}.items() if k not in drop}
    return [f"source={folder / source}"] + [f"metadata.{k}={v}" for k, v in values.items()]


# (id, source, keys dropped, metadata set, extra arguments, expected text of the error)
CASES = [
    ("no energy", "good.npy", ["energy_kV"], {}, [], "good.npy: metadata.energy_kV: is missing"),
    (
        "no semi-angle",
        "good.npy",
        ["semiangle_mrad"],
        {},
        [],
        "metadata.semiangle_mrad: is missing",
    ),
    ("no pitch", "good.npy", ["detector_mrad_per_px"], {}, [], "detector_mrad_per_px: is missing"),
    ("no defocus", "good.npy", ["defocus_A"], {}, [], "good.npy: metadata.defocus_A: is missing"),
    ("no step", "good.npy", ["scan_step_A"], {}, [], "good.npy: metadata.scan_step_A: is missing"),
    ("stack, no shape", "stack.npy", [], {}, [], "stack.npy: metadata.scan_shape: is missing"),
    (
        "stack, wrong shape",
        "stack.npy",
        [],
        {"scan_shape": "[3,5]"},
        [],
        "stack.npy: metadata.scan_shape: is [3, 5] (from command line): 15 positions, but the "
        "file holds 12 patterns",
    ),
    (
        "scan, wrong shape",
        "good.npy",
        [],
        {"scan_shape": "[4,3]"},
        [],
        "good.npy: metadata.scan_shape: is [4, 3] (from command line) but the file holds a 3×4",
    ),
    (
        "positions, wrong length",
        "good.npy",
        ["scan_step_A"],
        {"positions_A": "{folder}/positions13.npy"},
        [],
        "positions13.npy: metadata.positions_A: has 13 positions but the source holds 12",
    ),
    (
        "positions, wrong shape",
        "good.npy",
        ["scan_step_A"],
        {"positions_A": "{folder}/positions3.npy"},
        [],
        "positions3.npy: metadata.positions_A: has shape (12, 3)",
    ),
    (
        "positions and step",
        "good.npy",
        [],
        {"positions_A": "{folder}/positions.npy"},
        [],
        "good.npy: metadata.scan_step_A: is given (from command line) with explicit positions",
    ),
    ("2D patterns", "flat.npy", [], {}, [], "flat.npy: patterns: have shape (24, 24)"),
    ("NaN", "nan.npy", [], {}, [], "nan.npy: patterns: contain 1 non-finite values"),
    ("inf", "inf.npy", [], {}, [], "inf.npy: patterns: contain 1 non-finite values"),
    ("negative", "negative.npy", [], {}, [], "negative.npy: patterns: contain 1 negative counts"),
    (
        "not square",
        "wide.npy",
        [],
        {},
        [],
        "wide.npy: metadata.crop_px: is missing: the detector is 24×28 px, not square",
    ),
    (
        "crop too big",
        "good.npy",
        [],
        {"crop_px": 30},
        [],
        "good.npy: metadata.crop_px: is 30 (from command line): a 30 px square around the pattern "
        "centre (",
    ),
    ("bin", "good.npy", [], {"bin": 5}, [], "metadata.bin: is 5 (from command line), which does"),
    ("bin 0", "good.npy", [], {"bin": 0}, [], "metadata.bin: is 0 (from command line), expected"),
    ("crop 0", "good.npy", [], {"crop_px": 0}, [], "metadata.crop_px: is 0 (from command line)"),
    (
        "detector inside the disc",
        "good.npy",
        [],
        {"detector_mrad_per_px": 1.5},
        [],
        "good.npy: metadata.detector_mrad_per_px: the detector (24 px of 1.5 mrad after crop and "
        "bin) reaches 18.00 mrad, not beyond the 20 mrad bright-field disc",
    ),
    (
        "cropped inside the disc",
        "good.npy",
        [],
        {"crop_px": 10},
        [],
        "metadata.detector_mrad_per_px: the detector (10 px of 3.4 mrad after crop and bin)",
    ),
    (
        "unknown key",
        "good.npy",
        [],
        {"energy_keV": 1},
        [],
        "command line: metadata.energy_keV: Key",
    ),
    (
        "not a number",
        "good.npy",
        [],
        {"energy_kV": "abc"},
        [],
        "command line: metadata.energy_kV: Value 'abc'",
    ),
    (
        "negative energy",
        "good.npy",
        [],
        {"energy_kV": -200},
        [],
        "good.npy: metadata.energy_kV: is -200.0 (from command line), expected a number > 0",
    ),
    ("NaN step", "good.npy", [], {"scan_step_A": "nan"}, [], "metadata.scan_step_A: is 'nan'"),
    ("NaN energy", "good.npy", [], {"energy_kV": "nan"}, [], "metadata.energy_kV: is nan (from"),
    ("negative step", "good.npy", [], {"scan_step_A": "[0.5,-1]"}, [], "scan_step_A: is -1"),
    ("no dose", "good.npy", [], {"dose_e_per_A2": 0}, [], "metadata.dose_e_per_A2: is 0.0"),
    ("thickness", "good.npy", [], {"thickness_A": -1}, [], "metadata.thickness_A: is -1.0"),
    ("slices", "good.npy", [], {"slices": 0}, [], "good.npy: metadata.slices: is 0"),
    (
        "centre outside",
        "good.npy",
        [],
        {"pattern_centre_px": "[40,12]"},
        [],
        "good.npy: metadata.pattern_centre_px: is (40, 12) (from command line), outside",
    ),
    (
        "centre of 3",
        "good.npy",
        [],
        {"pattern_centre_px": "[1,2,3]"},
        [],
        "metadata.pattern_centre_px: is [1.0, 2.0, 3.0] (from command line), expected a number",
    ),
    (
        "no truth file",
        "good.npy",
        [],
        {"ground_truth": "{folder}/nope.h5"},
        [],
        "nope.h5: metadata.ground_truth: does not exist",
    ),
    (
        "truth cell",
        "good.npy",
        [],
        {"ground_truth": "{folder}/bad_cell.h5"},
        [],
        "bad_cell.h5: metadata.ground_truth: its cell's y edge (8.4000 Å) is 27.33",
    ),
    (
        "truth attr",
        "good.npy",
        [],
        {"ground_truth": "{folder}/no_thickness.h5"},
        [],
        "no_thickness.h5: metadata.ground_truth /potential_V_A attr slice_thickness_A: is missing",
    ),
    ("no source", "missing.npy", [], {}, [], "missing.npy: source: does not exist"),
    (
        "HDF5 path",
        "data.h5:/nope",
        [],
        {},
        [],
        "data.h5: source /nope: is missing; the file holds: /patterns (3, 4, 24, 24)",
    ),
    (
        "HDF5 without path",
        "data.h5",
        [],
        {},
        [],
        "data.h5: source: name the patterns' dataset as",
    ),
    ("unknown format", "notes.xyz", [], {}, [], "notes.xyz: source: is not a .npy file"),
    (
        "YAML unknown key",
        "good.npy",
        [],
        {},
        ["metadata={folder}/unknown.yaml"],
        "unknown.yaml: metadata.foo: Key 'foo' not in 'ImportMetadata'; allowed keys: name,",
    ),
    (
        "YAML broken",
        "good.npy",
        [],
        {},
        ["metadata={folder}/broken.yaml"],
        "broken.yaml: metadata: is not a YAML mapping",
    ),
    (
        "YAML missing",
        "good.npy",
        [],
        {},
        ["metadata={folder}/nope.yaml"],
        "nope.yaml: metadata: does not exist",
    ),
    ("not key=value", "good.npy", [], {}, ["verbose"], "command line: 'verbose' is not key=value"),
    ("unknown argument", "good.npy", [], {}, ["output=x.h5"], "command line: output: Key 'output'"),
]


@pytest.mark.parametrize(
    ("source", "drop", "metadata", "extra", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_fails_in_one_line_and_writes_nothing(
    files, tmp_path, capsys, source, drop, metadata, extra, expected
):
    out = tmp_path / "out.h5"
    metadata = {k: str(v).format(folder=files) for k, v in metadata.items()}
    argv = arguments(files, source, drop, **metadata) + [e.format(folder=files) for e in extra]
    status = cli.main([*argv, f"out={out}"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("ptyopt: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_crop_leaving_the_detector_is_named_with_the_centre(files, tmp_path, capsys):
    argv = arguments(files, crop_px=30) + [f"out={tmp_path / 'out.h5'}"]
    assert cli.main(argv) == 2
    assert "leaves the 24×24 px detector" in capsys.readouterr().err


def test_missing_out_is_named(files, capsys):
    assert cli.main(arguments(files)) == 2
    assert "ptyopt: error: command line: out: " in capsys.readouterr().err


def test_the_good_case_is_good(files, tmp_path, capsys):
    """The arguments every case above spoils import cleanly."""
    assert cli.main([*arguments(files), f"out={tmp_path / 'out.h5'}"]) == 0, capsys.readouterr()
    assert (tmp_path / "out.h5").is_file()
