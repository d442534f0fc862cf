"""The PtyRAD adapter (PtyRAD 1.0.x, PyTorch on the CPU, float32): a ptyopt dataset and
a :class:`~ptyopt.peers.base.PeerPlan` run by PtyRAD's own machinery in its own
environment and process (:mod:`ptyopt.peers.ptyrad_worker`), the object returned on
ptyopt's grid.

Engine family. PtyRAD is an automatic-differentiation package: every variable is a
torch tensor stepped by a torch optimizer (Adam by default) on the gradient of its
loss over mini-batches. That is ptyopt's ``gradient`` family; PtyRAD has no ePIE and no
LSQML, so :data:`ENGINES` is ``("gradient",)`` and the others are refused.

Conventions (ptyopt → PtyRAD), all mapped in :func:`ptyrad_inputs` and tested by
``tests/test_peer_ptyrad.py`` (PtyRAD's forward model on the dataset's ground truth
reproduces its patterns as ptyopt's does):

- axis order: (…, y, x) in both, rows first, for patterns, positions, probe and
  object; no transpose or flip (``meas_flipT``, ``pos_scan_flipT``: none), no scan
  affine (``pos_scan_affine``: none) and no random displacement of the positions
  (``pos_scan_rand_std``: 0; PtyRAD's default jitters them by 0.15 px);
- object grid: PtyRAD's object is ptyopt's grid (:func:`ptyopt.initial.object_geometry`,
  same shape (S, H, W), same pixel), given as its initial object (``obj_source:
  custom``), so PtyRAD's pixel i is ptyopt's pixel i;
- positions: PtyRAD's ``pos`` [object px] is the corner of a probe window; it cuts the
  window at ``crop_pos`` = round(pos) and Fourier-shifts the probe by pos − crop_pos,
  and its probe is centred at pixel N/2 of the window, so a probe centre lies at
  pos + N/2. ptyopt's window for centre c starts at round(c) − N//2 and its probe is
  centred at N//2, so pos = c − N/2 (even N; no half pixel) gives the same windows
  and shifts; the centres PtyRAD reports are checked to be ptyopt's
  (:func:`ptyopt.peers.base.on_ptyopt_grid`);
- pixel: PtyRAD's ``meas_calibration`` ``{mode: dx, value: λ/(N·Δα)}`` [Å], ptyopt's;
- patterns: PtyRAD's far field is ``fftshift(|fft2(ψ, norm="ortho")|²)``, zero
  frequency at pixel N/2: the dataset's patterns go as recorded, whose centre must be
  pixel N/2 (PtyRAD has no detector-offset ramp); counts are kept as counts
  (``meas_normalization: divide_const 1``; PtyRAD's default divides by the mean
  pattern's maximum);
- probe: PtyRAD's ``make_stem_probe`` from the dataset's optics, χ in exp(−iχ) with
  abTEM's polar coefficients (C10 = −defocus, C10 > 0 overfocus, as ptyopt's), azimuths
  from +x (columns) towards +y (rows) as ptyopt's but in degrees (ptyopt: radians); a
  hard aperture (|k| ≤ α/λ) where ptyopt's edge is soft (one detector pixel); its
  intensity Σ|P|² = the patterns' mean total counts (``probe_normalization:
  mean_total_ints``), as ptyopt's initial probe; extra modes are PtyRAD's own
  (``probe_pmode_init_pows`` 2 %, orthogonalised);
- slices: S equal slices of ``thickness_A``/S (the dataset's nominal thickness by
  default), S − 1 propagations, none after the last, as ptyopt's. PtyRAD's propagator
  is the angular spectrum exp(iΔz·√(k² − k⊥²)), equal to ptyopt's Fresnel
  exp(−iπλΔz|q|²) to a constant phase and O((λq)⁴), and has no band limit (ptyopt's:
  2/3 of Nyquist) — a difference of the models, not a mapping;
- object: PtyRAD optimises amplitude and phase per slice (``obja``, ``objp``; one
  object mode); the result is obja·exp(i·objp), ptyopt's complex transmission per
  slice. Its initial object is PtyRAD's own choice, exp(i·10⁻⁸·U[0, 1)) (its
  ``simu`` object, seeded), on ptyopt's grid;
- noise model and loss: ``amplitude`` → PtyRAD's ``loss_single`` with ``dp_pow`` 0.5,
  √(mean((√I − √J)²)) / mean(√J) per batch: ptyopt's (√I − √J)² per pixel, but as a
  root mean square (its gradient is ptyopt's divided by 2·RMS·mean √J of the batch,
  a per-batch scale Adam is nearly, not exactly, invariant to). ``poisson`` → its
  ``loss_poissn`` with ``dp_pow`` 1, −mean(J·log(I + ε) − I) / mean(J): ptyopt's
  likelihood up to terms free of I and the per-batch 1/mean(J), with ε = the plan's
  ε [counts] (counts are kept as counts), or PtyRAD's default 10⁻⁶ where the plan's is 0;
- steps: Adam (``torch.optim.Adam``, its default β) on obja and objp at the plan's
  ``learning_rate`` (ptyopt's Adam steps the complex object's real and imaginary
  parts; near |O| = 1 a step δ in phase or amplitude is a step δ in O) and on the
  probe (real and imaginary parts, the same count scale as ptyopt's) at
  ``probe_learning_rate``, updated from the first iteration; positions, tilts and
  slice thickness fixed;
- groups: ``BATCH_SIZE.size`` = the group size (all positions at most), PtyRAD's
  ``sparse`` grouping (farthest-point sampled, seeded, fixed for the run; ptyopt's
  sparse groups are reshuffled every iteration), one optimizer step per batch;
- constraints: all off (PtyRAD's defaults would blur the object laterally and in depth,
  rescale the probe's intensity, orthogonalise probe modes and recentre the positions
  every iteration; ptyopt's gradient engine does none of it);
- no ``torch.compile`` (PtyRAD's default on the CPU); float32 and complex64.

``plan.native`` holds PtyRAD's own params by its names, as nested dicts under
``init_params``, ``model_params``, ``loss_params``, ``constraint_params`` and
``recon_params``, merged last (one level deep: a key's dict is updated, not replaced).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.data.dataset import PtychoDataset
from ptyopt.data.file import read_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import object_geometry
from ptyopt.peers.base import (
    PeerPlan,
    PeerResult,
    PeerUnavailableError,
    peer_version,
    run_worker,
    worker_path,
    worker_result,
)

PACKAGE = "ptyrad"
#: ptyopt's engine families PtyRAD offers: only the gradient family (autodiff + Adam).
ENGINES = ("gradient",)
#: PtyRAD 1.0's constraints, every one switched off (``start_iter: null``).
CONSTRAINTS = (
    "ortho_pmode",
    "probe_mask_k",
    "probe_mask_r",
    "fix_probe_int",
    "obj_rblur",
    "obj_zblur",
    "kr_filter",
    "kz_filter",
    "kr_thresh",
    "complex_ratio",
    "mirrored_amp",
    "obj_z_recenter",
    "obja_thresh",
    "objp_postiv",
    "pos_recenter",
    "tilt_smooth",
)
#: The ``native`` sections a plan may set (PtyRAD's params file sections).
SECTIONS = ("init_params", "model_params", "loss_params", "constraint_params", "recon_params")
#: PtyRAD's Poisson ε where the plan's is 0 [counts] (its ``loss_poissn.eps`` default).
POISSON_EPS = 1.0e-6


@lru_cache(maxsize=1)
def version() -> str:
    """PtyRAD's version in its environment (raises PeerUnavailableError without it)."""
    return peer_version(PACKAGE, "ptyrad", "ptyrad")


def probe_aberrations(aberrations: dict[str, float]) -> dict[str, float]:
    """ptyopt's aberrations (abTEM's polar names, [Å] and azimuths [rad] from +x towards
    +y) as PtyRAD's ``probe_aberrations`` (Krivanek polar, the same names, signs and
    axes, azimuths [deg])."""
    return {
        key: math.degrees(float(value)) if key.startswith("phi") else float(value)
        for key, value in aberrations.items()
    }


def _slice_thickness(dataset: PtychoDataset, plan: PeerPlan) -> float:
    """Each slice's thickness [Å]; for one slice (no propagation) the thickness if
    known, else 1 Å (PtyRAD needs a positive number and never uses it then)."""
    total = plan.thickness_A if plan.thickness_A is not None else dataset.nominal_thickness_A
    if total is None:
        if plan.slices > 1:
            raise ConfigError(
                f"peer plan: {plan.slices} slices of dataset {dataset.name!r}, whose "
                "thickness is unknown: set thickness_A"
            )
        return 1.0
    return float(total) / plan.slices


def _loss(plan: PeerPlan) -> dict[str, Any]:
    """PtyRAD's ``loss_params`` for the plan's noise model (module docstring)."""
    single = plan.noise_model == "amplitude"
    return {
        "loss_single": {"state": single, "weight": 1.0, "dp_pow": 0.5},
        "loss_poissn": {
            "state": not single,
            "weight": 1.0,
            "dp_pow": 1.0,
            "eps": float(plan.epsilon) if plan.epsilon > 0 else POISSON_EPS,
        },
        "loss_pacbed": {"state": False},
        "loss_sparse": {"state": False},
        "loss_simlar": {"state": False},
    }


def _updates(plan: PeerPlan) -> dict[str, Any]:
    """PtyRAD's ``update_params``: Adam learning rates and first iterations."""
    rate = plan.step_size("learning_rate")
    fixed = {"start_iter": None, "lr": 0.0}
    return {
        "obja": {"start_iter": 1, "lr": rate},
        "objp": {"start_iter": 1, "lr": rate},
        "probe": {"start_iter": 1, "lr": plan.step_size("probe_learning_rate")}
        if plan.refine_probe
        else fixed,
        "obj_tilts": fixed,
        "slice_thickness": fixed,
        "probe_pos_shifts": fixed,
    }


def _with_native(params: dict[str, Any], native: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``native``'s sections merged in, one level deep."""
    unknown = sorted(set(native) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"peer 'ptyrad': native keys {unknown} are not PtyRAD params sections {SECTIONS}"
        )
    merged = {section: dict(values) for section, values in params.items()}
    for section, values in native.items():
        for key, value in dict(values).items():
            current = merged[section].get(key)
            if isinstance(current, dict) and isinstance(value, dict):
                merged[section][key] = {**current, **value}
            else:
                merged[section][key] = value
    return merged


def _check_loop(params: dict[str, Any]) -> None:
    """Refuse native settings the worker's iteration (PtyRAD's ``recon_step`` for a
    first-order optimizer, :mod:`ptyopt.peers.ptyrad_worker`) does not run."""
    recon = params["recon_params"]
    optimizer = params["model_params"]["optimizer_params"]["name"]
    if recon["GROUP_MODE"] != "sparse" or recon["BATCH_SIZE"].get("grad_accumulation", 1) != 1:
        raise ConfigError(
            "peer 'ptyrad': only PtyRAD's sparse groups without gradient accumulation are "
            f"run (native recon_params GROUP_MODE {recon['GROUP_MODE']!r}, BATCH_SIZE "
            f"{recon['BATCH_SIZE']})"
        )
    if optimizer == "LBFGS":
        raise ConfigError("peer 'ptyrad': LBFGS (a closure-driven optimizer) is not run")


def ptyrad_inputs(dataset: PtychoDataset, plan: PeerPlan) -> dict[str, Any]:
    """The worker's inputs: the dataset and the plan as PtyRAD's params and arrays
    (every convention in the module docstring)."""
    if plan.engine not in ENGINES:
        raise PeerUnavailableError(
            f"peer 'ptyrad' has no {plan.engine} engine (PtyRAD runs {list(ENGINES)} only)"
        )
    n = dataset.detector_shape[0]
    if dataset.detector_shape != (n, n) or n % 2:
        raise ConfigError(
            f"peer 'ptyrad': dataset {dataset.name!r} has a {dataset.detector_shape} detector; "
            "PtyRAD needs a square one of even size"
        )
    if tuple(dataset.pattern_centre_px) != (n // 2, n // 2):
        raise ConfigError(
            f"peer 'ptyrad': dataset {dataset.name!r} has its pattern centre at "
            f"{dataset.pattern_centre_px}, PtyRAD needs pixel N/2 = {n // 2}"
        )
    geometry = object_geometry(dataset)
    optics = dataset.optics
    n_positions = dataset.n_positions
    init_params = {
        "random_seed": int(plan.seed),
        "probe_illum_type": "electron",
        "probe_kv": optics.energy_eV / 1e3,
        "probe_conv_angle": float(optics.semiangle_mrad),
        "probe_aberrations": probe_aberrations(dict(optics.aberrations)),
        "meas_Npix": n,
        "pos_N_scans": n_positions,
        "pos_N_scan_slow": 1,  # the positions are given as a list, never a raster
        "pos_N_scan_fast": n_positions,
        "pos_scan_step_size": float(dataset.pixel_size_A),  # unused with given positions
        "meas_calibration": {"mode": "dx", "value": float(dataset.pixel_size_A)},
        "probe_pmode_max": int(plan.probe_modes),
        "obj_omode_max": 1,
        "obj_Nlayer": int(plan.slices),
        "obj_slice_thickness": _slice_thickness(dataset, plan),
        "meas_normalization": {"mode": "divide_const", "value": 1.0},
        "probe_normalization": {"mode": "mean_total_ints"},
        "pos_scan_rand_std": 0.0,
        "probe_source": "simu",
        "tilt_source": "simu",
    }
    params = {
        "init_params": init_params,
        "model_params": {
            "optimizer_params": {"name": "Adam", "configs": {}},
            "update_params": _updates(plan),
        },
        "loss_params": _loss(plan),
        "constraint_params": {name: {"start_iter": None} for name in CONSTRAINTS},
        "recon_params": {
            "NITER": int(plan.iterations),
            "BATCH_SIZE": {"size": min(int(plan.group_size), n_positions), "grad_accumulation": 1},
            "GROUP_MODE": "sparse",
            "SAVE_ITERS": None,
            "copy_params": False,
            "compiler_configs": {"enable": False},
        },
    }
    params = _with_native(params, plan.native)
    _check_loop(params)
    rng = np.random.default_rng(plan.seed)
    initial = np.exp(1j * 1e-8 * rng.random((1, plan.slices, *geometry.shape)))
    return {
        "mode": "reconstruct",
        "params": params,
        "patterns": np.asarray(dataset.patterns, np.float32),
        "pos_px": np.asarray(geometry.positions_px, np.float64) - n / 2,
        "object": initial.astype(np.complex64),
        "seed": int(plan.seed),
        "snapshot_every": int(plan.snapshot_every),
    }


def forward_intensities(
    dataset: PtychoDataset,
    object_slices: np.ndarray,
    workdir: Path,
    probe: np.ndarray | None = None,
    thickness_A: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PtyRAD's forward model on ``object_slices`` (S, H, W) complex on ptyopt's object
    grid of ``dataset``: S slices of ``thickness_A``/S (else the nominal thickness),
    ``probe`` (N, N) centred at pixel N/2 (else PtyRAD's initial probe at the patterns'
    counts). Returns its intensities (P, N, N) centred like the dataset's patterns, its
    own initial probe (N, N) of unit power centred at N/2, and the probe centres (P, 2)
    in its object pixels; for testing the conventions."""
    slices = int(object_slices.shape[0])
    plan = PeerPlan(
        "gradient",
        1,
        dataset.n_positions,
        slices=slices,
        thickness_A=thickness_A,
        noise_model="amplitude",
        step={"learning_rate": 1e-3, "probe_learning_rate": 1e-3},
    )
    inputs = {**ptyrad_inputs(dataset, plan), "mode": "forward"}
    inputs["forward_object"] = np.asarray(object_slices, np.complex64)
    if probe is not None:
        inputs["forward_probe"] = np.asarray(probe, np.complex64)
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, Path(workdir))
    return outputs["intensities"], outputs["probe"], outputs["centres_px"]


def run(dataset_path: str | Path, plan: PeerPlan, workdir: str | Path) -> PeerResult:
    """Reconstruct the dataset at ``dataset_path`` with PtyRAD by ``plan`` in a fresh
    process (files in ``workdir``); the object (and every ``plan.snapshot_every``-th
    iteration's) on ptyopt's grid."""
    dataset = read_dataset(dataset_path)
    inputs = ptyrad_inputs(dataset, plan)
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, Path(workdir))
    geometry = object_geometry(dataset)
    return worker_result(PACKAGE, plan, outputs, outputs["centres_px"], geometry, inputs["params"])
