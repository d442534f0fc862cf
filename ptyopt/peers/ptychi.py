"""The pty-chi adapter (pty-chi 2.x, torch on the CPU, float32): a ptyopt dataset and a
:class:`~ptyopt.peers.base.PeerPlan` run by pty-chi's ``PtychographyTask`` in its own
environment and process (:mod:`ptyopt.peers.ptychi_worker`), the object returned on
ptyopt's grid.

Engine families (pty-chi's reconstructors): ``epie`` → ``EPIEOptions`` (its ePIE),
``lsqml`` → ``LSQMLOptions``, ``gradient`` → ``AutodiffPtychographyOptions`` (its
autodiff engine with Adam on object and probe). pty-chi's PIE, rPIE, DM, RAAR and BH
have no ptyopt family; a study may still reach their settings only through the
families above (``native`` sets pty-chi's own option names of the chosen class).

Conventions (ptyopt → pty-chi), all mapped in :func:`ptychi_inputs` and
:func:`probe_centres_px` and tested by ``tests/test_peer_ptychi.py`` (pty-chi's far
field of the dataset's ground truth reproduces the dataset's patterns as ours does):

- axis order: (…, y, x) in both, for patterns, probe, object and positions (pty-chi's
  positions are stacked (y, x) from its ``probe_position_y_px``/``_x_px``);
- object grid: pty-chi's object is given ptyopt's grid
  (:func:`ptyopt.initial.object_geometry`: same shape, same pixel dx = λ/(N·Δα), as
  ``object_options.pixel_size_m`` = dx·1e-10 m, square pixels), so pty-chi's pixel i is
  ptyopt's pixel i;
- positions and the half pixel: pty-chi cuts a window whose first pixel is
  round(c − (N − 1)/2) at the patch centre c = position + ``pos_origin_coords`` [px] and
  shifts the probe by position − round(position) with the same Fourier ramp
  exp(−2πi k·s) as ours. Its centre c lies half a pixel before the probe array's pixel
  N/2 (even N), where ptyopt's probe centre is, so ptyopt's probe centre is c + 1/2
  (:func:`probe_centres_px`). The positions are the dataset's in object pixels,
  positions_A/dx, and the origin is given (``SPECIFIED``) as ptyopt's origin − 1/2:
  then c + 1/2 is ptyopt's probe centre, and both round the same remainder;
- patterns: pty-chi's model has zero frequency at index 0; the dataset's patterns are
  centred at ``pattern_centre_px``: ifftshifted here (``fft_shift`` off); pty-chi has no
  detector-offset ramp, so the centre must be pixel N/2;
- far field: pty-chi's FFT is unnormalised (Σ_k|FFT ψ|² = N²·Σ_r|ψ|², N×N window),
  ptyopt's orthonormal: ptyopt's initial probe (nominal optics, scaled to the mean
  counts) is handed over divided by N, so both predict the same counts;
- probe, defocus, aberrations: pty-chi builds no electron probe; it is given ptyopt's
  initial probe (:func:`ptyopt.initial.initial_state`: the dataset's nominal optics,
  abTEM's χ in exp(−iχ), C10 = −defocus; ``probe_modes`` modes as ours), so no sign is
  translated;
- slices: S equal slices of the plan's thickness (else the dataset's nominal), S − 1
  spacings ``slice_spacings_m`` = thickness/S·1e-10 m, propagation after every slice
  but the last, as ours. pty-chi's propagator is the angular spectrum
  exp(2πiΔz/λ·√(1 − λ²|k|²)) (= ours exp(−iπλΔz|k|²) to second order, up to a
  constant phase) and has no band limit (ours: 2/3 of Nyquist);
- groups: ``batch_size`` = group size (all positions at most), ``RANDOM`` batching (a
  random partition every epoch, as ptyopt's ``sparse`` grouping); one epoch = one
  iteration over all positions;
- steps: ePIE — pty-chi's object update is Σ_batch α_O·conj(ψ_n)·Δψ/max Σ_modes|ψ_n|²
  on every slice and its probe update mean_batch α_P·conj(O_0)·Δψ_0/max|O_0|² (SGD,
  step 1): ptyopt's ePIE shares β_O over the slices, so α_O = β_O/S and α_P = β_P.
  LSQML — pty-chi fits α per position like ours, divides the object's by S itself and
  multiplies it by ``optimal_step_size_scaler`` (PtychoShelves' β_LSQ): the scalers are
  β_O and β_P (SGD, step 1); its illumination preconditioner (the epoch's, damped by
  ``preconditioning_damping_factor`` 0.1 of its maximum) is not ours (the group's,
  ``illum_reg``): not mapped. Gradient — Adam on the complex object and probe in both,
  invariant to the scale of the loss (pty-chi rescales its gradients to ePIE's): the
  learning rates map 1:1 (``step_size``);
- noise model: amplitude — ePIE's modulus replacement; LSQML's ``GAUSSIAN`` with
  σ = 0.5 (√counts), whose far-field step 2·(1/(2σ)²)·0.5·(1 − √J/√I) is exactly the
  modulus replacement; autodiff's ``MSE_SQRT`` loss mean (√I − √J)² (ε 1e-7 counts
  inside the roots). Poisson — LSQML's ``POISSON`` (1 − J/(I + ε)) with pty-chi's own
  ε = 1e-6 counts (ptyopt's ε is recorded under ``unmapped``); pty-chi's ePIE has no
  Poisson update and its autodiff ``POISSON`` loss is torch's ``PoissonNLLLoss`` with
  ``log_input=True`` (exp(I) − J·I, not the likelihood of the intensities I): refused;
- constraints ptyopt does not apply are off: ``remove_object_probe_ambiguity`` (its
  default rescales object and probe every 10 epochs), LSQML's first-epoch probe-intensity
  rescaling (the probe is already scaled to the counts); probe-mode orthogonalisation
  (its default) stays on for mixed states only; positions are not refined.

Threads: torch's defaults (all cores, as XLA's for ours), from the environment the
worker inherits. On a shared 2-core machine under load, ``OMP_NUM_THREADS=1`` ran
pty-chi's ePIE 3–5 times faster (small dataset, groups of 16: 0.046 s/iteration against
0.12–0.24 s with the default).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt import physics
from ptyopt.data.dataset import PtychoDataset
from ptyopt.data.file import read_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import initial_state, measurements_from, object_geometry
from ptyopt.peers.base import (
    PeerPlan,
    PeerResult,
    PeerUnavailableError,
    peer_version,
    run_worker,
    worker_path,
    worker_result,
)

PACKAGE = "ptychi"
#: ptyopt's engine families pty-chi offers, by its task-options class.
OPTIONS_CLASSES = {
    "epie": "EPIEOptions",
    "lsqml": "LSQMLOptions",
    "gradient": "AutodiffPtychographyOptions",
}
ENGINES = tuple(OPTIONS_CLASSES)
#: Noise models each family maps to honestly (see the module docstring).
NOISE_MODELS = {
    "epie": ("amplitude",),
    "lsqml": ("amplitude", "poisson"),
    "gradient": ("amplitude",),
}
#: LSQML's Gaussian σ [√counts] that makes its far-field step the modulus replacement.
GAUSSIAN_SIGMA = 0.5
METRES_PER_A = 1e-10


@lru_cache(maxsize=1)
def version() -> str:
    """pty-chi's version in its environment (raises PeerUnavailableError without it)."""
    return peer_version(PACKAGE, "ptychi", "ptychi")


def _thickness(dataset: PtychoDataset, plan: PeerPlan) -> float | None:
    """Total thickness [Å] the plan's slices span (``None`` for one slice)."""
    if plan.slices == 1:
        return None
    thickness = plan.thickness_A if plan.thickness_A is not None else dataset.nominal_thickness_A
    if thickness is None:
        raise ConfigError(
            f"peer plan: {plan.slices} slices of dataset {dataset.name!r}, whose "
            "thickness is unknown: set thickness_A"
        )
    return float(thickness)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested dicts key by key."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _engine_options(plan: PeerPlan) -> dict[str, Any]:
    """The family's options (steps and noise model) by pty-chi's names."""
    if plan.engine not in ENGINES:
        raise PeerUnavailableError(
            f"peer 'ptychi': engine {plan.engine!r} has no pty-chi equivalent "
            f"(supported: {', '.join(ENGINES)})"
        )
    if plan.noise_model not in NOISE_MODELS[plan.engine]:
        raise PeerUnavailableError(
            f"peer 'ptychi': its {plan.engine} engine has no {plan.noise_model} noise model "
            f"(supported: {', '.join(NOISE_MODELS[plan.engine])})"
        )
    if plan.engine == "gradient":
        return {
            "reconstructor_options": {"loss_function": "mse_sqrt"},
            "object_options": {
                "optimizer": "adam",
                "step_size": plan.step_size("learning_rate"),
            },
            "probe_options": {
                "optimizer": "adam",
                "step_size": plan.step_size("probe_learning_rate") if plan.refine_probe else 1.0,
            },
        }
    beta_object = plan.step_size("beta_object")
    beta_probe = plan.step_size("beta_probe") if plan.refine_probe else 1.0
    if plan.engine == "epie":
        return {
            "object_options": {
                "optimizer": "sgd",
                "step_size": 1.0,
                "alpha": beta_object / plan.slices,
            },
            "probe_options": {"optimizer": "sgd", "step_size": 1.0, "alpha": beta_probe},
        }
    noise = "poisson" if plan.noise_model == "poisson" else "gaussian"
    return {
        "reconstructor_options": {
            "noise_model": noise,
            "gaussian_noise_std": GAUSSIAN_SIGMA,
            "rescale_probe_intensity_in_first_epoch": False,
        },
        "object_options": {
            "optimizer": "sgd",
            "step_size": 1.0,
            "optimal_step_size_scaler": beta_object,
        },
        "probe_options": {
            "optimizer": "sgd",
            "step_size": 1.0,
            "optimal_step_size_scaler": beta_probe,
        },
    }


def ptychi_options(dataset: PtychoDataset, plan: PeerPlan) -> dict[str, Any]:
    """pty-chi's options for ``plan`` on ``dataset`` by its own names, nested as its
    options classes are (module docstring), ``plan.native`` merged in last."""
    geometry = object_geometry(dataset)
    thickness = _thickness(dataset, plan)
    spacings = (
        None if thickness is None else [thickness / plan.slices * METRES_PER_A] * (plan.slices - 1)
    )
    common = {
        "data_options": {
            "wavelength_m": physics.wavelength_A(dataset.optics.energy_eV) * METRES_PER_A,
            "fft_shift": False,
        },
        "reconstructor_options": {
            "num_epochs": plan.iterations,
            "batch_size": min(plan.group_size, dataset.n_positions),
            "batching_mode": "random",
            "default_device": "cpu",
            "default_dtype": "float32",
            "random_seed": plan.seed,
        },
        "object_options": {
            "optimizable": True,
            "pixel_size_m": dataset.pixel_size_A * METRES_PER_A,
            "slice_spacings_m": spacings,
            "determine_position_origin_coords_by": "specified",
            "position_origin_coords": [float(v) - 0.5 for v in geometry.origin_px],
            "remove_object_probe_ambiguity": {"enabled": False},
        },
        "probe_options": {
            "optimizable": plan.refine_probe,
            "orthogonalize_incoherent_modes": {"enabled": plan.probe_modes > 1},
        },
        "probe_position_options": {"optimizable": False},
    }
    return _merge(_merge(common, _engine_options(plan)), dict(plan.native))


def ptychi_inputs(dataset: PtychoDataset, plan: PeerPlan) -> dict[str, Any]:
    """The worker's inputs: the dataset, ptyopt's initial state and the plan in
    pty-chi's terms (module docstring)."""
    n = dataset.detector_shape[0]
    if tuple(dataset.pattern_centre_px) != (n // 2, n // 2):
        raise ConfigError(
            f"peer 'ptychi': dataset {dataset.name!r} has its pattern centre at "
            f"{dataset.pattern_centre_px}, pty-chi needs pixel N/2 = {n // 2}"
        )
    options = ptychi_options(dataset, plan)
    measurements = measurements_from(dataset)
    state = initial_state(measurements, 1, plan.probe_modes, plan.seed)
    geometry = object_geometry(dataset)
    return {
        "mode": "reconstruct",
        "options_class": OPTIONS_CLASSES[plan.engine],
        "options": options,
        "patterns": np.fft.ifftshift(dataset.patterns, axes=(-2, -1)).astype(np.float32),
        "positions_px": np.asarray(dataset.positions_A, np.float64) / dataset.pixel_size_A,
        "object": np.ones((plan.slices, *geometry.shape), np.complex64),
        "probe": (np.asarray(state.probe, np.complex64) / n)[None],
        "snapshot_every": plan.snapshot_every,
    }


def probe_centres_px(centres_px: np.ndarray) -> np.ndarray:
    """ptyopt's probe centres (P, 2) (y, x) [object px] of pty-chi's patch centres: half
    a pixel further along both axes (its centre lies between the probe array's pixels
    N/2 − 1 and N/2, ours on pixel N/2)."""
    return np.asarray(centres_px, np.float64) + 0.5


def _unmapped(plan: PeerPlan) -> dict[str, Any]:
    """Plan values pty-chi cannot take as given."""
    if plan.epsilon:
        return {
            "epsilon": float(plan.epsilon),
            "epsilon_taken": 1e-6 if plan.engine == "lsqml" else 0,
        }
    return {}


def forward_intensities(
    dataset: PtychoDataset,
    object_slices: np.ndarray,
    probe: np.ndarray,
    workdir: Path,
    thickness_A: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """pty-chi's forward model on ``object_slices`` (S, H, W) complex on ptyopt's object
    grid of ``dataset`` with ``probe`` (N, N) complex centred on pixel N/2, in ptyopt's
    normalisation (orthonormal FFT: a unit-power probe and a pure-phase object give
    patterns summing to 1), S slices of ``thickness_A`` (else the nominal thickness).
    Returns pty-chi's intensities (P, N, N) centred like the dataset's patterns, in
    ptyopt's normalisation, and ptyopt's probe centres of pty-chi's positions (P, 2)."""
    slices = int(object_slices.shape[0])
    plan = PeerPlan(
        "epie",
        1,
        dataset.n_positions,
        slices=slices,
        thickness_A=thickness_A,
        noise_model="amplitude",
        step={"beta_object": 1.0, "beta_probe": 1.0},
    )
    n = dataset.detector_shape[0]
    inputs = {
        **ptychi_inputs(dataset, plan),
        "mode": "forward",
        "object": np.asarray(object_slices, np.complex64),
        "probe": (np.asarray(probe, np.complex64) / n)[None, None],
    }
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, Path(workdir))
    intensities = np.fft.fftshift(outputs["intensities"], axes=(-2, -1))
    return intensities, probe_centres_px(outputs["centres_px"])


def run(dataset_path: str | Path, plan: PeerPlan, workdir: str | Path) -> PeerResult:
    """Reconstruct the dataset at ``dataset_path`` with pty-chi by ``plan`` in a fresh
    process (files in ``workdir``); the object (and every ``plan.snapshot_every``-th
    iteration's) on ptyopt's grid."""
    dataset = read_dataset(dataset_path)
    inputs = ptychi_inputs(dataset, plan)
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, Path(workdir))
    geometry = object_geometry(dataset)
    centres = probe_centres_px(outputs["centres_px"])
    settings = {
        "options_class": inputs["options_class"],
        **inputs["options"],
        "unmapped": _unmapped(plan),
    }
    return worker_result(PACKAGE, plan, outputs, centres, geometry, settings)
