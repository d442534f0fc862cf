"""py4DSTEM's side of :mod:`ptyopt.peers.py4dstem`: runs inside py4DSTEM's own virtual
environment (``<python> py4dstem_worker.py inputs.npz outputs.npz``) and imports only
NumPy, the standard library, py4DSTEM and its sibling :mod:`exchange`.

Every convention is mapped by :mod:`ptyopt.peers.py4dstem` before the inputs are
written; this script only hands py4DSTEM what it was given, with every preprocessing
step that would re-estimate known geometry switched off (no CoM fit, rotation 0, no
transpose, no re-centring of the positions, no plots), and either

- reconstructs, one ``reconstruct(num_iter=1, reset=False)`` call per iteration so that
  each is timed (the batch order is re-seeded per call from ``batch_seeds``, since
  py4DSTEM seeds its shuffle at every call), or
- with ``forward_only``, evaluates py4DSTEM's own forward model (its probe, its
  sub-pixel shift, its multislice) on the given initial object at every position.

Inputs (units as py4DSTEM takes them): ``patterns`` (n, N, N) float32 counts, rows
py4DSTEM's "x"; ``centre_px`` (2,) where their zero frequency lies; ``positions_A``
(n, 2); ``energy_eV``, ``angular_sampling_mrad``, ``semiangle_mrad``;
``vacuum_probe_intensity`` (N, N) the aperture's intensity, zero frequency at N/2;
``polar`` py4DSTEM's aberration dict; ``padding_px``; ``object`` (S, H, W) complex
initial object; ``slices``, ``slice_thickness_A``, ``probe_modes``; ``native`` the
``reconstruct`` keyword arguments; ``batch_seeds`` one per iteration; ``seed`` of
NumPy's global generator, from which py4DSTEM draws its extra probe modes;
``snapshot_every`` k: keep the object every k iterations before the last (0: none).
Outputs: ``object`` (S, H, W) complex64, ``positions_px`` (n, 2) probe centres in its
object pixels, ``iteration_s``, ``error``, ``snapshot_iterations`` and ``snapshots``
(K, S, H, W), ``peak_rss_MB``, ``version``; or with
``forward_only`` ``intensities`` (n, N, N) float64, zero frequency at index 0, and
``measured`` (n, N, N) the intensities as py4DSTEM preprocessed them.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import exchange  # noqa: E402
import numpy as np  # noqa: E402


def _reconstruction_class(slices: int, modes: int):
    """py4DSTEM's class for (slices, modes): single slice or multislice, one probe or
    a mixed state."""
    from py4DSTEM.process import phase

    if slices > 1:
        return phase.MixedstateMultislicePtychography if modes > 1 else phase.MultislicePtychography
    return phase.MixedstatePtychography if modes > 1 else phase.SingleslicePtychography


def _build(inputs: dict):
    """The preprocessed py4DSTEM reconstruction of ``inputs``."""
    import py4DSTEM

    patterns = np.asarray(inputs["patterns"], np.float32)
    n, ny, nx = patterns.shape
    slices, modes = int(inputs["slices"]), int(inputs["probe_modes"])
    # one scan row of n positions: the positions are given, never a raster
    datacube = py4DSTEM.DataCube(data=patterns.reshape(1, n, ny, nx))
    kwargs = dict(
        energy=float(inputs["energy_eV"]),
        datacube=datacube,
        semiangle_cutoff=float(inputs["semiangle_mrad"]),
        vacuum_probe_intensity=np.asarray(inputs["vacuum_probe_intensity"], np.float32),
        polar_parameters=dict(inputs["polar"]),
        object_padding_px=tuple(int(p) for p in inputs["padding_px"]),
        initial_object_guess=np.asarray(inputs["object"], np.complex64)
        if slices > 1
        else np.asarray(inputs["object"], np.complex64)[0],
        initial_scan_positions=np.asarray(inputs["positions_A"], np.float64),
        object_type="complex",
        verbose=False,
        device="cpu",
    )
    if slices > 1:
        kwargs.update(num_slices=slices, slice_thicknesses=float(inputs["slice_thickness_A"]))
    if modes > 1:
        kwargs.update(num_probes=modes)
    recon = _reconstruction_class(slices, modes)(**kwargs)
    centre = np.asarray(inputs["centre_px"], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        recon.preprocess(
            force_com_shifts=(np.full((1, n), centre[0]), np.full((1, n), centre[1])),
            force_com_rotation=0.0,
            force_com_transpose=False,
            force_scan_sampling=1.0,  # unused: the positions are given in Å
            force_angular_sampling=float(inputs["angular_sampling_mrad"]),
            center_positions_in_fov=False,
            plot_center_of_mass=False,
            plot_rotation=False,
            plot_probe_overlaps=False,
            object_fov_mask=True,
        )
    return recon


def _forward_intensities(recon) -> np.ndarray:
    """py4DSTEM's model intensities Σ_modes |FFT[exit wave]|² (n, N, N), zero frequency
    at index 0, from its current object and probe at its positions."""
    positions = recon._positions_px
    fractional = positions - np.round(positions)
    rows, cols = recon._extract_vectorized_patch_indices(positions)
    shifted = recon._return_shifted_probes(recon._probe, fractional)
    _, _, exit_wave = recon._overlap_projection(recon._object, rows, cols, shifted)
    intensity = np.abs(np.fft.fft2(np.asarray(exit_wave, np.complex128))) ** 2
    return intensity.sum(axis=1) if intensity.ndim == 4 else intensity


def _slices_first(obj) -> np.ndarray:
    """py4DSTEM's object as (S, H, W) complex64 (a single slice gains its axis)."""
    obj = np.asarray(obj, np.complex64)
    return obj if obj.ndim == 3 else obj[None]


def main(inputs_path: str, outputs_path: str) -> None:
    import py4DSTEM

    inputs = exchange.load(inputs_path)
    np.random.seed(int(inputs.get("seed", 0)))  # py4DSTEM draws its extra probe modes from it
    recon = _build(inputs)
    outputs = {"version": py4DSTEM.__version__, "positions_px": np.asarray(recon._positions_px)}
    if inputs.get("forward_only", False):
        outputs["intensities"] = _forward_intensities(recon)
        outputs["measured"] = np.asarray(recon._amplitudes, np.float64) ** 2
    else:
        native = dict(inputs["native"])
        every = int(inputs.get("snapshot_every", 0))
        times, snapshot_iterations, snapshots = [], [], []
        for iteration, seed in enumerate(inputs["batch_seeds"], start=1):
            start = time.perf_counter()
            recon.reconstruct(
                num_iter=1, reset=False, progress_bar=False, seed_random=int(seed), **native
            )
            times.append(time.perf_counter() - start)
            if every and iteration % every == 0 and iteration < len(inputs["batch_seeds"]):
                snapshot_iterations.append(iteration)  # the copy is not timed
                snapshots.append(_slices_first(recon._object))
        outputs.update(
            object=_slices_first(recon._object),
            iteration_s=np.asarray(times),
            error=np.asarray(recon.error_iterations),
            snapshot_iterations=np.asarray(snapshot_iterations, np.int64),
            snapshots=np.stack(snapshots) if snapshots else np.zeros((0, 1, 1, 1), np.complex64),
        )
    outputs["peak_rss_MB"] = exchange.peak_rss_MB()
    exchange.save(outputs_path, outputs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
