"""PtyRAD's side of :mod:`ptyopt.peers.ptyrad`: runs inside PtyRAD's own virtual
environment (``<python> ptyrad_worker.py inputs.npz outputs.npz``) and imports only
NumPy, the standard library, PtyRAD (and its torch) and the sibling :mod:`exchange`.

Every convention has already been mapped by :mod:`ptyopt.peers.ptyrad` (the inputs are
PtyRAD's params, less the arrays); this script hands the arrays to PtyRAD's own
machinery — its params schema (``PtyRADParams``, defaults filled and validated), its
``Initializer`` (measurements, calibration, probe simulation, positions, propagator),
``PtychoModel`` (forward model), ``CombinedLoss`` and ``CombinedConstraint`` — and either

- reconstructs: PtyRAD's iteration as its ``recon_step`` runs it for a first-order
  torch optimizer (per batch: forward, loss, backward, step; then the iteration-wise
  constraints), with its ``toggle_grad_requires`` and its ``sparse`` groups
  (``make_batches``), each iteration timed and the object copied every
  ``snapshot_every`` iterations outside the timed span. Those three are PtyRAD's
  ``ptyrad.solver`` code, re-stated here (the groups' sampler is loaded from its file):
  PtyRAD 1.0.0's ``ptyrad.solver`` package does not import on Python 3.11, its
  ``ptyrad.plotting.basic`` (imported by ``ptyrad.solver.__init__``) uses Python 3.12's
  f-string syntax (quotes nested inside an f-string), a SyntaxError before 3.12;
- or, in ``forward`` mode, evaluates PtyRAD's forward model (``PtychoModel.forward``:
  its object patches, sub-pixel probe shifts, multislice and far field) on a given
  object and probe at every position.

Inputs: ``mode`` ("reconstruct" or "forward"); ``params`` PtyRAD's params as data (its
``init_params``, ``model_params``, ``loss_params``, ``constraint_params``,
``recon_params``), without the arrays below; ``patterns`` (P, N, N) float32 counts,
zero frequency at pixel N/2 (PtyRAD's layout, as recorded); ``pos_px`` (P, 2) (y, x)
PtyRAD's positions [object px] (probe-window corners; the probe centre lies N/2 px
further); ``object`` (1, S, H, W) complex64 initial object (omode, Nz, Ny, Nx);
``seed``; ``snapshot_every`` (0: only the last). Forward mode: ``forward_object`` (S,
H, W) complex and ``forward_probe`` (N, N) complex centred at pixel N/2 (optional).

Outputs: ``object`` (S, H, W) complex64, obja·exp(i·objp) of the only object mode;
``centres_px`` (P, 2) the probe centres in PtyRAD's object pixels (crop_pos +
probe_pos_shifts + N/2); ``iteration_s`` [s] per iteration; ``loss`` per iteration;
``snapshot_iterations``, ``snapshots`` (K, S, H, W); ``peak_rss_MB``; ``version``.
Forward mode: ``intensities`` (P, N, N) float32, zero frequency at pixel N/2, and
``probe`` (N, N) PtyRAD's own initial probe (its ``make_stem_probe``, unit power).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
# This folder holds ptyopt's adapter module ``ptyrad.py`` too, and Python puts a script's
# folder first on the path: move it last, so that ``import ptyrad`` finds the package
# and ``import exchange`` still finds the sibling module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import exchange  # noqa: E402
import numpy as np  # noqa: E402


def _params(inputs: dict) -> dict:
    """PtyRAD's validated params (its pydantic schema fills the defaults) with the
    arrays put in: measurements, positions and the initial object as ``custom`` sources."""
    from ptyrad.params.parser import normalize_probe_params
    from ptyrad.params.ptyrad_params import PtyRADParams

    params = {key: dict(value) for key, value in inputs["params"].items()}
    init = params["init_params"]
    init.update(
        meas_source="custom",
        meas_params=np.asarray(inputs["patterns"], np.float32),
        pos_source="custom",
        pos_params=np.asarray(inputs["pos_px"], np.float64),
        obj_source="custom",
        obj_params=np.asarray(inputs["object"], np.complex64),
    )
    params["init_params"] = normalize_probe_params(init)
    return PtyRADParams(**params).model_dump()


def _built(inputs: dict):
    """PtyRAD's initializer, model, loss and constraints for ``inputs`` on the CPU."""
    import torch
    from ptyrad.core import CombinedConstraint, CombinedLoss, PtychoModel
    from ptyrad.init import Initializer

    torch.manual_seed(int(inputs["seed"]))
    params = _params(inputs)
    init = Initializer(params["init_params"], seed=int(inputs["seed"])).init_all()
    model = PtychoModel(init.init_variables, params["model_params"], device="cpu")
    loss_fn = CombinedLoss(params["loss_params"], device="cpu")
    constraint_fn = CombinedConstraint(params["constraint_params"], device="cpu")
    return params, init, model, loss_fn, constraint_fn


def _object(model) -> np.ndarray:
    """The model's object (S, H, W) complex64 (object mode 0)."""
    obja = model.opt_obja.detach().cpu().numpy()[0]
    objp = model.opt_objp.detach().cpu().numpy()[0]
    return (obja * np.exp(1j * objp)).astype(np.complex64)


def _centres(model) -> np.ndarray:
    """Probe centres (P, 2) (y, x) in PtyRAD's object pixels: its window corner
    ``crop_pos`` plus the sub-pixel ``probe_pos_shifts`` plus N/2 (its probe is centred
    at pixel N/2 of the window, ``fftshift(ifft2(ifftshift(...)))``)."""
    n = np.asarray(model.get_complex_probe_view().shape[-2:], np.float64)
    pos = model.crop_pos.cpu().numpy() + model.opt_probe_pos_shifts.detach().cpu().numpy()
    return pos.astype(np.float64) + n // 2


def forward(inputs: dict) -> dict:
    """PtyRAD's model intensities of the given object and probe at every position."""
    import torch

    _, init, model, _, _ = _built(inputs)
    outputs = {
        "probe": np.asarray(init.init_variables["probe"][0], np.complex64),
        "centres_px": _centres(model),
    }
    outputs["probe"] /= np.linalg.norm(outputs["probe"])
    with torch.no_grad():
        obj = np.asarray(inputs["forward_object"], np.complex64)[None]
        model.opt_obja.data = torch.from_numpy(np.abs(obj).astype(np.float32))
        model.opt_objp.data = torch.from_numpy(np.angle(obj).astype(np.float32))
        if "forward_probe" in inputs:
            probe = np.asarray(inputs["forward_probe"], np.complex64)[None]
            model.opt_probe.data = torch.view_as_real(torch.from_numpy(probe)).contiguous()
        indices = torch.arange(len(inputs["pos_px"]))
        outputs["intensities"] = model(indices).cpu().numpy().astype(np.float32)
    return outputs


def _sparse_groups(positions: np.ndarray, size: int, seed: int) -> list[np.ndarray]:
    """PtyRAD's ``sparse`` grouping (its ``make_batches``: farthest-point sampling into
    len // size groups, seeded), from its ``solver/grouping.py`` loaded as a file: the
    ``ptyrad.solver`` package does not import on Python 3.11 (module docstring)."""
    import importlib.util

    import ptyrad

    path = Path(ptyrad.__file__).parent / "solver" / "grouping.py"
    spec = importlib.util.spec_from_file_location("ptyrad_grouping", path)
    grouping = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grouping)
    return grouping.sparse_sampler_fps(positions, max(1, len(positions) // size), seed=seed)


def _toggle_gradients(model, niter: int) -> None:
    """PtyRAD's ``toggle_grad_requires``: a tensor has gradients from its ``start_iter``
    up to (not including) its ``end_iter``."""
    for name, tensor in model.optimizable_tensors.items():
        start, end = model.start_iter.get(name), model.end_iter.get(name)
        tensor.requires_grad = (start is not None and niter >= start) and not (
            end is not None and niter + 1 > end
        )


def _iteration(model, optimizer, loss_fn, constraint_fn, batches, niter: int) -> float:
    """One iteration as PtyRAD's ``recon_step`` runs it for a first-order optimizer
    without gradient accumulation: per batch, its forward model, its combined loss,
    backward and one optimizer step; then its iteration-wise constraints. Returns the
    mean total loss over the batches."""
    total = 0.0
    optimizer.zero_grad()
    for batch in batches:
        model_dp = model(batch)
        obja_patches, objp_patches = model._current_object_patches
        loss, _ = loss_fn(
            model_dp, model.get_measurements(batch), obja_patches, objp_patches, model.omode_occu
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.clear_cache()
        total += float(loss.detach())
    constraint_fn(model, niter)
    return total / len(batches)


def reconstruct(inputs: dict) -> dict:
    """PtyRAD's reconstruction, timed per iteration."""
    import torch

    params, _, model, loss_fn, constraint_fn = _built(inputs)
    recon = params["recon_params"]
    optimizer_params = model.optimizer_params
    optimizer = getattr(torch.optim, optimizer_params["name"])(
        model.optimizable_params, **(optimizer_params.get("configs") or {})
    )
    positions = (model.crop_pos + model.opt_probe_pos_shifts).detach().cpu().numpy()
    groups = _sparse_groups(positions, recon["BATCH_SIZE"]["size"], int(inputs["seed"]))
    batches = [torch.from_numpy(np.asarray(group, np.int64)) for group in groups]
    every = int(inputs.get("snapshot_every", 0))
    niters = int(recon["NITER"])
    seconds, losses, snapshot_iterations, snapshots = [], [], [], []
    for niter in range(1, niters + 1):
        start = time.perf_counter()
        _toggle_gradients(model, niter)
        losses.append(_iteration(model, optimizer, loss_fn, constraint_fn, batches, niter))
        seconds.append(time.perf_counter() - start)
        if every and niter % every == 0 and niter < niters:
            snapshot_iterations.append(niter)
            snapshots.append(_object(model))
    return {
        "object": _object(model),
        "centres_px": _centres(model),
        "iteration_s": np.asarray(seconds, np.float64),
        "loss": np.asarray(losses, np.float64),
        "snapshot_iterations": np.asarray(snapshot_iterations, np.int64),
        "snapshots": np.stack(snapshots) if snapshots else np.zeros((0, 1, 1, 1), np.complex64),
    }


def main(inputs_path: str, outputs_path: str) -> None:
    import torch
    from ptyrad import __version__

    logging.getLogger("ptyrad").setLevel(logging.WARNING)
    torch.set_default_dtype(torch.float32)
    inputs = exchange.load(inputs_path)
    outputs = forward(inputs) if inputs["mode"] == "forward" else reconstruct(inputs)
    outputs["version"] = __version__
    outputs["peak_rss_MB"] = exchange.peak_rss_MB()
    exchange.save(outputs_path, outputs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
