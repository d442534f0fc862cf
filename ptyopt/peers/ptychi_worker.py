"""pty-chi's side of :mod:`ptyopt.peers.ptychi`: runs inside pty-chi's own virtual
environment (``python ptychi_worker.py inputs.npz outputs.npz``) and imports only NumPy,
the standard library, torch, pty-chi and the sibling :mod:`exchange` module.

Every convention has already been mapped by :mod:`ptyopt.peers.ptychi` (the inputs are
in pty-chi's terms); this script only builds pty-chi's ``PtychographyTask`` from them on
the CPU in float32 and either runs it one epoch at a time (each epoch timed) or, in
forward mode, evaluates pty-chi's own forward model at every position.

Inputs: ``mode`` ("reconstruct" or "forward"); ``options_class``: the name of a
pty-chi task-options class in ``ptychi.api`` (``LSQMLOptions``, ``EPIEOptions``,
``AutodiffPtychographyOptions``); ``options``: values by pty-chi's own names, nested as
its options are (``{"object_options": {"optimal_step_size_scaler": 0.9, ...}, ...}``),
set on a fresh options object in order; ``patterns`` (P, N, N) float32 counts, zero
frequency at index 0 (pty-chi's model layout); ``positions_px`` (P, 2) probe positions
(y, x) [object px] relative to the object's position origin; ``object`` (S, H, W)
complex64 initial object; ``probe`` (1, M, N, N) complex64 initial probe (one OPR mode,
M incoherent modes), scaled for pty-chi's unnormalised FFT; ``snapshot_every`` (0: only
the last object).

Outputs: ``object`` (S, H, W) complex64 after the last epoch; ``centres_px`` (P, 2)
pty-chi's patch centres (y, x) [object px from the corner] of the final positions:
positions + the object's ``pos_origin_coords``; ``iteration_s`` wall time of each epoch
[s] (snapshot copies excluded); ``snapshot_iterations`` and ``snapshots`` (K, S, H, W);
``loss`` pty-chi's displayed loss per epoch; ``peak_rss_MB``; ``version``. Forward mode:
``intensities`` (P, N, N) float32 pty-chi's model intensities Σ_modes |FFT(ψ_exit)|²
(unnormalised FFT, zero frequency at index 0) and ``centres_px``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

# This folder holds ptyopt's adapter module ``ptychi.py`` too, and Python puts a script's
# folder first on the path: move it last, so that ``import ptychi`` finds the package
# and ``import exchange`` still finds the sibling module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import exchange  # noqa: E402
import numpy as np  # noqa: E402


def _set(target, values: dict, path: str) -> None:
    """Set ``values`` (nested dicts for nested options) on pty-chi's options ``target``;
    a name pty-chi's options do not have is an error naming its path."""
    for name, value in values.items():
        if not hasattr(target, name):
            raise KeyError(f"pty-chi options have no {path}{name}")
        if isinstance(value, dict) and not isinstance(getattr(target, name), dict):
            _set(getattr(target, name), value, f"{path}{name}.")
        else:
            setattr(target, name, value)


def _task(inputs: dict):
    """pty-chi's task for the inputs (built: data, object, probe, positions, engine)."""
    import ptychi.api as api
    import torch
    from ptychi.api.task import PtychographyTask

    options = getattr(api, str(inputs["options_class"]))()
    _set(options, inputs["options"], "")
    positions = np.asarray(inputs["positions_px"], np.float32)
    return PtychographyTask(
        options,
        diffraction_data=torch.as_tensor(np.asarray(inputs["patterns"], np.float32)),
        object_data=torch.as_tensor(np.asarray(inputs["object"], np.complex64)),
        probe_data=torch.as_tensor(np.asarray(inputs["probe"], np.complex64)),
        probe_position_y_px=torch.as_tensor(positions[:, 0]),
        probe_position_x_px=torch.as_tensor(positions[:, 1]),
    )


def _centres(task) -> np.ndarray:
    """pty-chi's patch centres (P, 2) [object px from the corner]: positions + origin."""
    positions = task.get_data_to_cpu("probe_positions", as_numpy=True).astype(np.float64)
    origin = task.object.pos_origin_coords.detach().cpu().numpy().astype(np.float64)
    return positions + origin


def forward(inputs: dict) -> dict:
    """pty-chi's model intensities of the given object and probe at every position."""
    import torch

    task = _task(inputs)
    model = task.reconstructor.forward_model
    with torch.no_grad():
        intensities = model.forward(torch.arange(len(inputs["positions_px"])))
    return {
        "intensities": intensities.detach().cpu().numpy().astype(np.float32),
        "centres_px": _centres(task),
    }


def reconstruct(inputs: dict) -> dict:
    """Run the task one epoch at a time, timing each and copying the object every
    ``snapshot_every`` epochs outside the timed span."""
    task = _task(inputs)
    epochs = int(inputs["options"]["reconstructor_options"]["num_epochs"])
    every = int(inputs.get("snapshot_every", 0))
    seconds, kept_at, kept = [], [], []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        task.run(n_epochs=1)
        seconds.append(time.perf_counter() - started)
        if every and epoch % every == 0 and epoch < epochs:
            kept_at.append(epoch)
            kept.append(task.get_data_to_cpu("object", as_numpy=True).astype(np.complex64))
    obj = task.get_data_to_cpu("object", as_numpy=True).astype(np.complex64)
    losses = task.reconstructor.loss_tracker.table
    return {
        "object": obj,
        "centres_px": _centres(task),
        "iteration_s": np.asarray(seconds, np.float64),
        "snapshot_iterations": np.asarray(kept_at, np.int64),
        "snapshots": np.stack(kept) if kept else np.zeros((0, 1, 1, 1), np.complex64),
        "loss": np.asarray(losses["loss"], np.float64),
    }


def main(inputs_path: str, outputs_path: str) -> None:
    from importlib.metadata import version

    logging.getLogger("ptychi").setLevel(logging.WARNING)
    inputs = exchange.load(inputs_path)
    outputs = forward(inputs) if inputs["mode"] == "forward" else reconstruct(inputs)
    outputs["version"] = version("ptychi")
    outputs["peak_rss_MB"] = exchange.peak_rss_MB()
    exchange.save(outputs_path, outputs)


if __name__ == "__main__":
    main(*sys.argv[1:3])
