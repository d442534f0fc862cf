"""The phaser adapter (phaserEM 0.3.x, JAX backend): a ptyopt dataset and a
:class:`~ptyopt.peers.base.PeerPlan` run by phaser in its own environment and process
(:mod:`ptyopt.peers.phaser_worker`), the object returned on ptyopt's grid.

Every convention between ptyopt and phaser is mapped in :func:`phaser_inputs` and
:func:`probe_centres_px` (and tested by ``tests/test_peer_phaser.py``: phaser's far
field of the dataset's ground truth reproduces the dataset's patterns as ours does).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt import physics
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

PACKAGE = "phaser"
#: ptyopt's engine families phaser offers: its conventional engine's ePIE and LSQML
#: solvers and its gradient engine.
ENGINES = ("epie", "lsqml", "gradient")
#: phaser's propagator band limit (``bwlim_frac``): a fraction of its Nyquist frequency
#: 1/(2·pixel), ptyopt's ``bandlimit`` (2/3, abTEM's, in both).
BANDLIMIT = 2 / 3
#: phaser's amplitude-model guard ε in √(J)/(√I + ε) and in its loss [√counts]: not in
#: ptyopt's amplitude model (ε = 0), small enough not to matter at ≥ 1 count.
AMPLITUDE_GUARD = 1.0e-3
#: phaser's amplitude-model offset o in √(I + o) [counts]: phaser's default 0 makes its
#: gradient engine's first step NaN (its initial near-vacuum object leaves I = 0 outside
#: the aperture, where the derivative of √I is 0/0); ptyopt floors I at the smallest
#: float instead. 1e-6 counts keeps the derivative finite and changes nothing else.
AMPLITUDE_OFFSET = 1.0e-6


@lru_cache(maxsize=1)
def version() -> str:
    """phaserEM's version in its environment (raises PeerUnavailableError without it)."""
    return peer_version(PACKAGE, "phaser", "phaserEM")


def _noise_model(plan: PeerPlan) -> dict[str, Any]:
    """phaser's noise model for the plan's. Poisson: phaser's likelihood
    I − J·log(I + ε) (+ terms free of I) is ptyopt's with the same ε [counts]; its
    conventional engines have no Poisson wave update, only its gradient engine (autodiff)
    has. Amplitude: (√J − √I)² with phaser's guard ε, :data:`AMPLITUDE_OFFSET` and
    Gaussian variance 0 (phaser
    divides its loss by 1 + variance; Adam is invariant to it, and the conventional
    engines' update never sees it)."""
    if plan.noise_model == "poisson":
        if plan.engine != "gradient":
            raise PeerUnavailableError(
                f"peer 'phaser': its {plan.engine} solver has no Poisson noise model "
                "(only amplitude); set the plan's noise_model to 'amplitude'"
            )
        return {"type": "poisson", "eps": float(plan.epsilon)}
    return {
        "type": "amplitude",
        "eps": AMPLITUDE_GUARD,
        "offset": AMPLITUDE_OFFSET,
        "gaussian_variance": 0.0,
    }


def _solver(plan: PeerPlan, slices: int) -> dict[str, Any]:
    """phaser's solver settings for the plan's steps.

    ePIE: phaser shares its object step out over the slices (β_O/S) and averages the
    group's probe updates, as ptyopt does: β_O and β_P map 1:1. LSQML: phaser applies
    β_O to every slice's fitted step (no 1/S) and fits α with the group's summed
    denominator, ptyopt shares it out (β_O/S) and fits α per position: no exact map
    exists; ptyopt's β_O/S and β_P are given (the same step per slice, nominally) and
    a study of phaser sets its own ``beta_object`` through ``native``. Gradient: both
    take Adam steps on the complex object and probe, and Adam's step is invariant to the
    scale of the loss (phaser's gradients are divided by the group size and probe
    intensity, ptyopt's loss is a mean per position): learning rates map 1:1."""
    if plan.engine == "gradient":
        solvers = {"object": {"type": "adam", "learning_rate": plan.step_size("learning_rate")}}
        if plan.refine_probe:
            solvers["probe"] = {
                "type": "adam",
                "learning_rate": plan.step_size("probe_learning_rate"),
            }
        return {"solvers": solvers, "regularizers": []}
    beta_object = plan.step_size("beta_object")
    if plan.engine == "lsqml":
        beta_object /= slices
    return {
        "solver": {
            "type": plan.engine,
            "beta_object": beta_object,
            "beta_probe": plan.step_size("beta_probe"),
        }
    }


def _probe(dataset: PtychoDataset) -> dict[str, Any]:
    """phaser's focused probe from the dataset's nominal optics. phaser's defocus is
    "+ overfocus" with wavefront error χ = defocus·θ²/2 + C3·θ⁴/4 …, and its probe is
    the conjugate of F⁻¹[e^{+2πiχ/λ}·A] = F⁻¹[e^{−2πiχ/λ}·A] for an aperture A
    symmetric under k → −k: abTEM's e^{−iχ} with χ = 2π/λ·(C10·θ²/2 + C30·θ⁴/4). So
    phaser's defocus = C10 = −(ptyopt's defocus_A) and its C3 = C30. Other aberrations
    are not mapped (a dataset with them is refused)."""
    aberrations = dict(dataset.optics.aberrations)
    defocus = float(aberrations.pop("C10", 0.0))
    cs = float(aberrations.pop("C30", 0.0))
    unmapped = {key: value for key, value in aberrations.items() if value and key[:3] != "phi"}
    if unmapped:
        raise ConfigError(
            f"peer 'phaser': aberrations {sorted(unmapped)} of dataset {dataset.name!r} "
            "are not mapped to phaser (only C10 and C30)"
        )
    return {
        "type": "focused",
        "conv_angle": float(dataset.optics.semiangle_mrad),
        "defocus": defocus,
        "aberrations": [{"C3": cs}] if cs else [],
    }


def phaser_inputs(dataset: PtychoDataset, plan: PeerPlan) -> dict[str, Any]:
    """The worker's inputs: the dataset and the plan in phaser's terms.

    Conventions (ptyopt → phaser):

    - arrays (…, y, x) in both; positions (y, x) [Å] in both: the dataset's positions
      go in as they are;
    - object grid: phaser's is set to ptyopt's (:func:`ptyopt.initial.object_geometry`,
      same shape and pixel) with its corner where :func:`probe_centres_px` puts every
      probe centre on ours, i.e. phaser's pixel i is ptyopt's pixel i (corner =
      (1/2 − origin_px)·pixel); phaser's padding beyond half a window, ``obj_pad_px``,
      is ptyopt's margin less one pixel, so that phaser never grows the grid (its pad
      is counted from the position, half a pixel short of the probe centre);
    - patterns: phaser's have zero frequency at index 0 (ptyopt's model layout, the
      dataset's are centred at ``pattern_centre_px``): ifftshifted; phaser has no
      detector-offset ramp, so the centre must be pixel N/2;
    - real-space pixel: the dataset's λ/(N·Δα) [Å], phaser's probe sampling;
    - probe: :func:`_probe` (defocus sign); its intensity: phaser rescales it to the
      patterns' mean counts before the first iteration, as ptyopt's initial state has;
    - slices: ptyopt's S equal slices spanning ``thickness_A`` (the dataset's nominal
      thickness by default) are phaser's ``{n: S, total_thickness}``; one slice: none;
    - groups: phaser's ``grouping`` = group size, sparse (random, reshuffled every
      iteration) groups as ptyopt's ``sparse`` grouping; ePIE with group size 1 is
      sequential in both;
    - band limit: :data:`BANDLIMIT`; probe refinement: from the first iteration;
    - noise model and steps: :func:`_noise_model`, :func:`_solver`; ``native`` (phaser's
      engine-plan keys, a solver's under ``solver``) last.
    """
    n = dataset.detector_shape[0]
    geometry = object_geometry(dataset)
    if tuple(dataset.pattern_centre_px) != (n // 2, n // 2):
        raise ConfigError(
            f"peer 'phaser': dataset {dataset.name!r} has its pattern centre at "
            f"{dataset.pattern_centre_px}, phaser needs pixel N/2 = {n // 2}"
        )
    if plan.slices > 1:
        thickness = plan.thickness_A or dataset.nominal_thickness_A
        if thickness is None:
            raise ConfigError(
                f"peer plan: {plan.slices} slices of dataset {dataset.name!r}, whose "
                "thickness is unknown: set thickness_A"
            )
        slices: dict[str, Any] | None = {"n": plan.slices, "total_thickness": float(thickness)}
    else:
        slices = None
    engine: dict[str, Any] = {
        "type": "gradient" if plan.engine == "gradient" else "conventional",
        "niter": plan.iterations,
        "grouping": plan.group_size,
        "compact": False,
        "probe_modes": plan.probe_modes,
        "slices": slices,
        "bwlim_frac": BANDLIMIT,
        "obj_pad_px": float(geometry.margin_px - 1),
        "update_probe": plan.refine_probe,
        "update_object": True,
        "noise_model": _noise_model(plan),
        "group_constraints": [],
        "iter_constraints": [],
        **_solver(plan, plan.slices),
    }
    native = dict(plan.native)
    if "solver" in native:
        engine["solver"] = {**engine["solver"], **native.pop("solver")}
    engine.update(native)
    return {
        "mode": "reconstruct",
        "patterns": np.fft.ifftshift(dataset.patterns, axes=(-2, -1)).astype(np.float32),
        "scan_A": np.asarray(dataset.positions_A, np.float64),
        "pixel_A": float(dataset.pixel_size_A),
        "object_shape": np.asarray(geometry.shape, np.int64),
        "object_corner_A": (0.5 - np.asarray(geometry.origin_px, np.float64))
        * dataset.pixel_size_A,
        "wavelength_A": float(physics.wavelength_A(dataset.optics.energy_eV)),
        "plan": {
            "name": "ptyopt",
            "backend": "jax",
            "dtype": "float32",
            "slices": slices,
            "init": {"probe": _probe(dataset)},
            "engines": [engine],
        },
        "seed": plan.seed,
        "snapshot_every": plan.snapshot_every,
    }


def probe_centres_px(
    scan_A: np.ndarray, corner_A: np.ndarray, sampling_A: np.ndarray
) -> np.ndarray:
    """Probe centres (n, 2) (y, x) in phaser's object pixels of positions ``scan_A``
    [Å]. phaser's object pixel i lies at corner + i·sampling; it cuts a probe's window
    at round(p) with p = (position − corner)/sampling − (N − 1)/2 and shifts the probe by
    the remainder, while its probe array is centred at pixel N/2 (its ``ifft2``
    fftshifts): the centre lies at p + N/2 = (position − corner)/sampling + 1/2, half a
    pixel from the position's own coordinate (ptyopt's probe centre is pixel N/2 of the
    window at the position, no half pixel)."""
    return (np.asarray(scan_A) - np.asarray(corner_A)) / np.asarray(sampling_A) + 0.5


@dataclass(frozen=True)
class PhaserGrid:
    """phaser's object grid for a dataset: pixel i at ``corner_A`` + i·``sampling_A``
    [Å], ``shape`` (h, w), and the probe centres (n, 2) in its object pixels."""

    corner_A: np.ndarray
    sampling_A: np.ndarray
    shape: tuple[int, int]
    centres_px: np.ndarray


def _grid(outputs: dict[str, Any]) -> PhaserGrid:
    return PhaserGrid(
        outputs["object_corner_A"],
        outputs["object_sampling_A"],
        tuple(int(v) for v in outputs["object_shape"]),
        probe_centres_px(
            outputs["scan_A"], outputs["object_corner_A"], outputs["object_sampling_A"]
        ),
    )


def far_field(
    dataset: PtychoDataset,
    plan: PeerPlan,
    workdir: Path,
    object_slices: np.ndarray | None = None,
    probe: np.ndarray | None = None,
) -> tuple[PhaserGrid, np.ndarray | None, np.ndarray | None]:
    """phaser's forward pieces: its object grid for ``dataset`` under ``plan`` (ptyopt's,
    :func:`phaser_inputs`) and, given ``object_slices`` (S, h, w) complex on that grid,
    its far-field intensities of
    it (P, N, N), centred like the dataset's patterns, with ``probe`` (N, N) centred at
    pixel N/2 or else phaser's initial probe, of unit power (a pure phase object gives
    patterns summing to 1); and phaser's initial probe (N, N) from the dataset's optics
    (:func:`_probe`), centred at pixel N/2, of unit power."""
    inputs = {**phaser_inputs(dataset, plan), "mode": "forward"}
    if object_slices is not None:
        inputs["object"] = np.asarray(object_slices, np.complex64)
    if probe is not None:
        inputs["probe"] = np.asarray(probe, np.complex64)
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, workdir)
    intensities = outputs.get("intensities")
    if intensities is not None:
        intensities = np.fft.fftshift(intensities, axes=(-2, -1))
    return _grid(outputs), intensities, outputs.get("probe")


def run(dataset_path: Path, plan: PeerPlan, workdir: Path) -> PeerResult:
    """Reconstruct the dataset at ``dataset_path`` with phaser by ``plan`` in a fresh
    process; the object (and every ``plan.snapshot_every``-th iteration's) on ptyopt's
    grid."""
    if plan.engine not in ENGINES:
        raise PeerUnavailableError(f"peer 'phaser' has no {plan.engine} engine")
    dataset = read_dataset(dataset_path)
    inputs = phaser_inputs(dataset, plan)
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, workdir)
    centres = _grid(outputs).centres_px
    settings = inputs["plan"]["engines"][0]
    return worker_result(PACKAGE, plan, outputs, centres, object_geometry(dataset), settings)
