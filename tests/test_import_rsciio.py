"""Detector files through rosettasciio, written here in each format from a simulated
dataset (no downloads): EMPAD (.xml header + float32 .raw of 130-row frames), Merlin
(.mib frames with their ASCII headers, and the .hdr) and Berkeley EMD (rosettasciio's
own writer). Data, orientation, scan and calibrations must come back as simulated; the
EMD file is followed end to end, to ptyopt's forward model on the simulation's truth."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import model_patterns_from_ground_truth

from ptyopt import physics
from ptyopt.data.file import write_dataset
from ptyopt.io.build import import_dataset
from ptyopt.io.metadata import load_metadata
from ptyopt.io.rsciio_files import angle_in_mrad, calibration_from_signal, length_in_A

NOMINAL = {"energy_kV": 200.0, "semiangle_mrad": 20.0, "defocus_A": 20.0}


def imported(source, **values):
    return import_dataset(str(source), load_metadata(None, {**NOMINAL, **values}))


def write_empad(folder, patterns, step_A, pitch_mrad, energy_eV):
    """EMPAD 2D scan: ``scan_x{nx}_y{ny}.raw`` of (ny·nx, 130, 128) little-endian float32
    frames (the last two rows are the detector's metadata: junk here, NaN included) and
    the XML header rosettasciio reads: scan size, field of view [m] and the detector's
    ``calibrated_pixelsize``, which rosettasciio multiplies by 1e9 to get 1/nm."""
    ny, nx = patterns.shape[:2]
    frames = np.full((ny * nx, 130, 128), np.nan, "<f4")
    frames[:, 128, :] = 1e30
    frames[:, :128, :] = patterns.reshape(ny * nx, 128, 128)
    raw = f"scan_x{nx}_y{ny}.raw"
    frames.tofile(folder / raw)
    per_nm = pitch_mrad * 1e-3 / (physics.wavelength_A(energy_eV) / 10)
    fov = [ny * step_A * 1e-10, nx * step_A * 1e-10]
    xml = (
        f'<root><raw_file filename="{raw}"/><pix_x>{nx}</pix_x><pix_y>{ny}</pix_y>'
        "<timestamp><isoformat>2024-05-01T10:00:00.000000</isoformat></timestamp>"
        f"<iom_measurements><optics><get_full_scan_field_of_view>{fov}"
        "</get_full_scan_field_of_view></optics>"
        f"<calibrated_pixelsize>{per_nm * 1e-9!r}</calibrated_pixelsize></iom_measurements></root>"
    )
    (folder / "scan.xml").write_text(xml)
    return folder / "scan.xml"


def mib_header(index, rows, columns):
    """A Merlin single-chip 12-bit frame header: 384 ASCII bytes, comma-separated."""
    fields = [
        "MQ1", f"{index:06d}", "00384", "01", f"{columns:04d}", f"{rows:04d}", "U16", "   1x1",
        "01", "2024-05-01 10:00:00.000000", "0.001000", "0", "0", "0",
        "1.200000E+2", "5.110000E+2", "0.000000E+0", "0.000000E+0", "0.000000E+0",
        "0.000000E+0", "0.000000E+0", "0.000000E+0", "3RX", "175", "511", "000", "000", "000",
        "000", "000", "000", "100", "255", "100", "100", "0", "0", "0", "0", "0", "0", "0",
        "0", "MQ1A", "2024-05-01T10:00:00.000000000Z", "1000000.000000ns", "12", "",
    ]  # fmt: skip
    text = ",".join(fields)
    return (text + " " * (384 - len(text))).encode()


def write_mib(folder, name, counts, with_hdr):
    """(ny, nx, k, k) counts as a .mib: per frame a header, then big-endian uint16 rows
    in the order rosettasciio flips back (it reverses each frame's rows on reading).
    The .hdr gives the raster: frames per trigger (one line) and in the acquisition."""
    ny, nx, rows, columns = counts.shape
    with open(folder / f"{name}.mib", "wb") as file:
        for index, frame in enumerate(counts.reshape(-1, rows, columns)):
            file.write(mib_header(index + 1, rows, columns))
            file.write(frame[::-1].astype(">u2").tobytes())
    if with_hdr:
        (folder / f"{name}.hdr").write_text(
            "HDR\n"
            f"Frames in Acquisition (Number):\t{ny * nx}\n"
            f"Frames per Trigger (Number):\t{nx}\n"
            "Counter Depth (number):\t12\nEnd\t"
        )
    return folder / f"{name}.mib"


def test_units_of_calibrations():
    """Lengths to Å and detector pitches to mrad: 1/nm through α = λk (λ = 0.02508 Å at
    200 kV: 1 nm⁻¹ is 2.508 mrad), unit spellings as readers write them."""
    assert length_in_A(0.077, "nm") == pytest.approx(0.77)
    assert length_in_A(77, "pm") == pytest.approx(0.77)
    assert length_in_A(7.7e-5, "µm") == pytest.approx(0.77)
    assert length_in_A(0.77, "Å") == 0.77 and length_in_A(3, "px") is None
    lam = physics.wavelength_A(200e3)
    assert lam == pytest.approx(0.025079, rel=1e-4)
    for unit in ("1/nm", "nm^-1", "1 / nm", "nm⁻¹"):
        assert angle_in_mrad(1.0, unit, 200e3) == pytest.approx(lam / 10 * 1e3)
    assert angle_in_mrad(0.1, "1/Å", 200e3) == pytest.approx(lam * 0.1 * 1e3)
    assert angle_in_mrad(2e-3, "rad", None) == pytest.approx(2.0)
    assert angle_in_mrad(1.0, None, None) is None
    with pytest.raises(ValueError, match="needs the energy"):
        angle_in_mrad(1.0, "1/nm", None)
    with pytest.raises(ValueError, match="neither an angle"):
        angle_in_mrad(1.0, "eV", None)


def test_hyperspy_metadata_gives_energy_and_semiangle(tmp_path):
    """A signal dict as rosettasciio's HyperSpy-style readers fill it: beam energy [kV],
    convergence angle [mrad], scan axes in nm, detector in mrad."""
    axes = [
        {"index_in_array": 0, "size": 3, "scale": 0.05, "offset": 0.1, "units": "nm"},
        {"index_in_array": 1, "size": 4, "scale": 0.06, "offset": 0.2, "units": "nm"},
        {"index_in_array": 2, "size": 8, "scale": 1.5, "offset": -6, "units": "mrad"},
        {"index_in_array": 3, "size": 8, "scale": 1.5, "offset": -6, "units": "mrad"},
    ]
    tem = {"beam_energy": 300.0, "convergence_angle": 25.0}
    signal = {"axes": axes, "metadata": {"Acquisition_instrument": {"TEM": tem}}}
    calibration = calibration_from_signal(tmp_path, signal)
    assert calibration.energy_eV == 300e3 and calibration.semiangle_mrad == 25.0
    assert calibration.scan_step_A == pytest.approx((0.5, 0.6))
    assert calibration.scan_origin_A == pytest.approx((1.0, 2.0))
    assert calibration.detector_mrad_per_px == 1.5


def test_empad(raster_dataset, tmp_path):
    """The 32 px patterns placed off-centre in 128 px EMPAD frames, footer rows of junk
    and NaN: cropped back to 32 px they are the simulation; the 3×4 raster and its 0.77 Å
    step come from the XML, the pitch from its pixel size in 1/nm (to 1e-6)."""
    frames = np.zeros((3, 4, 128, 128), np.float32)
    frames[..., 40:72, 52:84] = raster_dataset.patterns.reshape(3, 4, 32, 32)
    xml = write_empad(tmp_path, frames, 0.77, raster_dataset.angular_sampling_mrad, 200e3)
    result = imported(xml, crop_px=32)
    dataset = result.dataset
    np.testing.assert_array_equal(dataset.patterns, raster_dataset.patterns)
    np.testing.assert_allclose(
        dataset.positions_A, raster_dataset.positions_A - raster_dataset.positions_A[0], atol=1e-9
    )
    assert dataset.angular_sampling_mrad == pytest.approx(
        raster_dataset.angular_sampling_mrad, rel=1e-6
    )
    np.testing.assert_allclose(dataset.pattern_centre_px, (16, 16), atol=0.02)
    assert result.notes[0] == "read as rosettasciio:EMPAD: patterns (3, 4, 128, 128) float32"
    assert not [n for n in result.notes if "overrides" in n or "warning" in n], result.notes


@pytest.mark.parametrize("with_hdr", [True, False])
def test_merlin_mib(raster_dataset, tmp_path, with_hdr):
    """Integer counts as 12-bit Merlin frames: the counts and their orientation as
    rosettasciio (and HyperSpy) show them (the file's rows reversed), the 3×4 raster
    from the .hdr or, without one, from scan_shape."""
    counts = np.round(raster_dataset.patterns.reshape(3, 4, 32, 32))
    assert counts.max() < 4096
    mib = write_mib(tmp_path, "scan", counts, with_hdr)
    values = {"scan_step_A": 0.77, "detector_mrad_per_px": raster_dataset.angular_sampling_mrad}
    if not with_hdr:
        values["scan_shape"] = [3, 4]
    dataset = imported(mib, **values).dataset
    np.testing.assert_array_equal(dataset.patterns, counts.reshape(12, 32, 32))
    np.testing.assert_allclose(
        dataset.positions_A, raster_dataset.positions_A - raster_dataset.positions_A[0], atol=1e-9
    )
    np.testing.assert_allclose(dataset.pattern_centre_px, (16, 16), atol=0.02)


def test_emd_end_to_end(x64, raster_dataset, tmp_path):
    """A Berkeley EMD file written by rosettasciio: scan axes in nm with the scan's origin
    as their offsets, detector axes in 1/nm. Imported with only the nominal optics and the
    simulation's dataset file as ground truth, it is the simulated dataset (positions,
    sampling, centre to 0.02 px), and ptyopt's forward model on the truth reproduces it
    to 1 % (measured 0.2 %, as for the simulation itself). An explicit pitch 1 % off the
    file's is used and reported."""
    from rsciio.emd import file_writer

    lam_nm = physics.wavelength_A(200e3) / 10
    per_nm = raster_dataset.angular_sampling_mrad * 1e-3 / lam_nm
    origin = raster_dataset.positions_A[0] / 10
    axes = [
        {"name": "y", "size": 3, "scale": 0.077, "offset": origin[0], "units": "nm"},
        {"name": "x", "size": 4, "scale": 0.077, "offset": origin[1], "units": "nm"},
        {"name": "ky", "size": 32, "scale": per_nm, "offset": -16 * per_nm, "units": "1/nm"},
        {"name": "kx", "size": 32, "scale": per_nm, "offset": -16 * per_nm, "units": "1/nm"},
    ]
    for index, axis in enumerate(axes):
        axis.update(index_in_array=index, navigate=index < 2)
    signal = {
        "data": raster_dataset.patterns.reshape(3, 4, 32, 32),
        "axes": axes,
        "metadata": {"General": {"title": "4D-STEM"}, "Signal": {}},
        "original_metadata": {},
    }
    file_writer(str(tmp_path / "scan.emd"), signal)
    truth = write_dataset(tmp_path / "simulated.h5", raster_dataset)

    dataset = imported(tmp_path / "scan.emd", ground_truth=str(truth)).dataset
    np.testing.assert_array_equal(dataset.patterns, raster_dataset.patterns)
    np.testing.assert_allclose(dataset.positions_A, raster_dataset.positions_A, atol=1e-9)
    assert dataset.angular_sampling_mrad == pytest.approx(
        raster_dataset.angular_sampling_mrad, rel=1e-9
    )
    np.testing.assert_allclose(dataset.pattern_centre_px, (16, 16), atol=0.02)
    offset = tuple(16 - c for c in dataset.pattern_centre_px)
    electrons = 1e6 * 0.77**2  # the recipe's dose times the step squared
    modelled = model_patterns_from_ground_truth(
        dataset, detector_offset_px=offset, electrons=electrons
    )
    misfit = np.linalg.norm(modelled - dataset.patterns) / np.linalg.norm(dataset.patterns)
    assert misfit < 0.01

    pitch = 1.01 * raster_dataset.angular_sampling_mrad
    result = imported(tmp_path / "scan.emd", detector_mrad_per_px=pitch)
    assert result.dataset.angular_sampling_mrad == pitch
    assert any("metadata.detector_mrad_per_px" in n and "overrides" in n for n in result.notes)
