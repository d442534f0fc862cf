"""py4DSTEM (0.14.x) as a peer: its iterative ptychography (``SingleslicePtychography``,
``MultislicePtychography``, ``MixedstatePtychography``,
``MixedstateMultislicePtychography``) run on a ptyopt dataset with a ptyopt plan, in
py4DSTEM's own environment (:func:`ptyopt.peers.base.peer_python`), by
:mod:`ptyopt.peers.py4dstem_worker`.

Engine family. py4DSTEM's ``gradient-descent`` update is a normalised steepest-descent
step of the amplitude loss over batches of positions: with ``normalization_min = 1``
the object step is ``step_size·Σ_batch conj(P)·Δψ / max Σ_batch |P|²`` and the probe
step ``step_size·Σ_batch conj(O)·Δψ / max Σ_batch |O|²``, Δψ the exit-wave change of
the modulus constraint (``plan.native.normalization_min`` < 1 mixes in the local
illumination, as ptyopt's ePIE's α does with its "group" normalisation; the
``scoreboard_thick_epie`` study tunes it). For one position per batch the object step
is ePIE's exactly and the probe step ePIE's but for the frame it is added in (below), so
ptyopt's ``epie`` family maps onto it (``group_size`` → ``max_batch_size``); ptyopt's
``gradient`` (optax solvers on the autodiff gradient) and ``lsqml`` (per-group optimal
steps) have no equivalent in py4DSTEM and are refused, as is the Poisson noise model
(py4DSTEM fits amplitudes only). Its projection methods (DM, RAAR, GS...) have no
ptyopt family; ``plan.native`` may still select them by py4DSTEM's names.

Conventions (py4DSTEM's → ptyopt's), all mapped in this module:

- axis order: py4DSTEM's "x" is the first array axis (rows), "y" the second, for
  patterns, positions and object alike, so (x, y) there is ptyopt's (y, x); no
  transpose (``force_com_transpose=False``), no scan rotation (``force_com_rotation=0``);
- aberration azimuths: py4DSTEM measures φ from its x (rows) towards y (columns),
  ptyopt from +x (columns) towards +y (rows), so φ_py4DSTEM = π/2 − φ_ptyopt;
  coefficients Cnm keep abTEM's names and signs (py4DSTEM's probe is abTEM's, χ in
  exp(−iχ), C10 = −defocus, defocus at the entrance surface, ``middle_focus`` off);
- aperture: ptyopt's (:func:`ptyopt.physics.soft_aperture`, a linear edge one
  detector pixel wide centred on the semi-angle) is given as py4DSTEM's
  ``vacuum_probe_intensity``, centred on pixel N/2 where py4DSTEM's centre-of-mass
  centring moves it to index 0 exactly; py4DSTEM's own aperture (a raised cosine of
  width ``rolloff`` ending at the cut-off) differs from it by 3 % (L2) even with the
  edge matched (cut-off α + Δα/2, rolloff Δα);
- detector: patterns go as recorded; their zero frequency (``pattern_centre_px``) is
  forced as every pattern's centre of mass (``force_com_shifts``), which py4DSTEM
  moves to index 0 with its cubic-spline shift (exact for whole pixels, interpolated
  for the half-pixel centres of binned detectors);
- pixel: py4DSTEM's sampling λ/(N·Δα) from ``force_angular_sampling`` is ptyopt's;
- scan: py4DSTEM puts a probe centre (its corner-centred probe's pixel 0, shifted by
  the sub-pixel remainder, as ptyopt's window centre N//2) at positions_Å/dx +
  padding (after subtracting a negative minimum). Positions are given as
  (ptyopt's probe centres − padding)·dx, with ``center_positions_in_fov=False`` and
  an initial object of ptyopt's grid shape, so py4DSTEM's object lies on ptyopt's
  grid; the centres it reports are checked to be a translation of ptyopt's
  (:func:`ptyopt.peers.base.on_ptyopt_grid`);
- slices: S equal slices of the thickness (the plan's, else the dataset's nominal),
  S − 1 propagations between them, no propagation after the last, as ptyopt's; its
  propagator exp(−iπλΔz|k|²) has ptyopt's sign but no band limit (ptyopt's: 2/3 of
  Nyquist);
- step normalisation: py4DSTEM takes the full ``step_size`` on every slice; ptyopt's
  ePIE shares β_O over the slices (β_O/S each), so ``step_size`` = β_O/S. py4DSTEM has
  one step for object and probe: β_P is not mapped (recorded under ``unmapped``);
- constraints ptyopt's ePIE does not apply are off (``fix_probe_com``,
  ``fix_potential_baseline`` — it removes the mean phase outside the field of view);
  py4DSTEM always caps a complex object's amplitude at 1, which cannot be switched
  off; mixed-state probes are orthogonalised each iteration (its default), and its
  extra modes start as sub-pixel-shifted copies of the first.

Not an equivalence but a difference of the algorithms: py4DSTEM adds each position's
probe update in the frame of the probe shifted by that position's sub-pixel remainder
(ptyopt's ePIE shifts it back first). With one position per batch and the full step it
does not converge where ptyopt's ePIE does (``thin``: NRMSE 0.99 against 0.12 after 30
iterations); batches of 16 or more average the error out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt import physics
from ptyopt.data.dataset import PtychoDataset
from ptyopt.data.file import read_dataset
from ptyopt.errors import ConfigError
from ptyopt.initial import Geometry, object_geometry
from ptyopt.peers.base import (
    PeerPlan,
    PeerResult,
    PeerRunError,
    PeerUnavailableError,
    peer_version,
    run_worker,
    worker_path,
    worker_result,
)

PACKAGE = "py4dstem"
#: ptyopt's engine families with an honest py4DSTEM equivalent (see the module docstring).
ENGINES = ("epie",)
#: Noise models py4DSTEM fits.
NOISE_MODELS = ("amplitude",)
#: The aberration coefficients py4DSTEM's probe knows (abTEM's polar symbols to 5th order).
POLAR_SYMBOLS = (
    "C10",
    "C12",
    "C21",
    "C23",
    "C30",
    "C32",
    "C34",
    "C41",
    "C43",
    "C45",
    "C50",
    "C52",
    "C54",
    "C56",
)


def version() -> str:
    """The installed py4DSTEM's version (raises :class:`PeerUnavailableError` without it)."""
    return peer_version(PACKAGE, "py4DSTEM", "py4DSTEM")


def polar_parameters(aberrations: dict[str, float]) -> dict[str, float]:
    """ptyopt's aberrations (abTEM naming, Å and rad, φ from +x towards +y) as
    py4DSTEM's ``polar_parameters`` (φ from its x = ptyopt's y towards its y):
    coefficients unchanged, azimuths φ → π/2 − φ."""
    polar: dict[str, float] = {}
    for symbol, value in aberrations.items():
        if symbol.startswith("phi"):
            continue
        if symbol not in POLAR_SYMBOLS:
            raise PeerUnavailableError(
                f"peer {PACKAGE!r}: aberration {symbol} is not one py4DSTEM knows "
                f"({', '.join(POLAR_SYMBOLS)})"
            )
        polar[symbol] = float(value)
        order = int(symbol[2])
        if order > 0:
            angle = float(aberrations.get(f"phi{symbol[1:]}", 0.0))
            polar[f"phi{symbol[1:]}"] = math.pi / 2 - angle
    return polar


def _slicing(dataset: PtychoDataset, slices: int, thickness_A: float | None) -> float:
    """Thickness of each of ``slices`` equal slices [Å] (0 for one slice)."""
    if slices == 1:
        return 0.0
    total = thickness_A if thickness_A is not None else dataset.nominal_thickness_A
    if total is None:
        raise ConfigError(
            f"peer plan: thickness_A is needed for {slices} slices "
            f"(dataset {dataset.name!r} records no nominal thickness)"
        )
    return float(total) / slices


def _common_inputs(
    dataset: PtychoDataset, geometry: Geometry, slices: int, thickness_A: float | None
) -> dict[str, Any]:
    """What the worker needs for any run, in py4DSTEM's conventions."""
    n = dataset.detector_shape[0]
    padding = n // 2  # py4DSTEM's default padding, made whole
    dx = dataset.pixel_size_A
    optics = dataset.optics
    aperture = np.asarray(
        physics.soft_aperture((n, n), dx, optics.energy_eV, optics.semiangle_mrad), np.float64
    )
    return {
        "patterns": np.asarray(dataset.patterns, np.float32),
        "centre_px": np.asarray(dataset.pattern_centre_px, np.float64),
        "positions_A": (np.asarray(geometry.positions_px, np.float64) - padding) * dx,
        "padding_px": [padding, padding],
        "energy_eV": float(dataset.optics.energy_eV),
        "angular_sampling_mrad": float(dataset.angular_sampling_mrad),
        "semiangle_mrad": float(dataset.optics.semiangle_mrad),
        "vacuum_probe_intensity": np.fft.fftshift(aperture**2),
        "polar": polar_parameters(dict(dataset.optics.aberrations)),
        "slices": int(slices),
        "slice_thickness_A": _slicing(dataset, slices, thickness_A),
    }


def reconstruct_settings(plan: PeerPlan, n_positions: int) -> dict[str, Any]:
    """py4DSTEM's ``reconstruct`` arguments for ``plan`` (``plan.native`` last)."""
    if plan.engine not in ENGINES:
        raise PeerUnavailableError(
            f"peer {PACKAGE!r}: engine {plan.engine!r} has no py4DSTEM equivalent "
            f"(supported: {', '.join(ENGINES)})"
        )
    if plan.noise_model not in NOISE_MODELS:
        raise PeerUnavailableError(
            f"peer {PACKAGE!r}: noise_model {plan.noise_model!r} is not fitted by py4DSTEM "
            f"(supported: {', '.join(NOISE_MODELS)})"
        )
    unknown = set(plan.step) - {"beta_object", "beta_probe"}
    if unknown:
        raise ConfigError(f"peer plan: step {sorted(unknown)} are not ePIE steps")
    beta_object = float(plan.step.get("beta_object", 1.0))
    settings: dict[str, Any] = {
        "reconstruction_method": "gradient-descent",
        "step_size": beta_object / plan.slices,  # ptyopt's β_O/S per slice
        "normalization_min": 1.0,  # the batch's maximum illumination, as ePIE's max|P|²
        "max_batch_size": None if plan.group_size >= n_positions else int(plan.group_size),
        "fix_probe": not plan.refine_probe,
        "fix_probe_com": False,
        "fix_potential_baseline": False,
        "fix_positions": True,
    }
    settings.update(plan.native)
    return settings


def _unmapped(plan: PeerPlan, settings: dict[str, Any]) -> dict[str, Any]:
    """Plan values py4DSTEM cannot take as given (its one step drives the probe too)."""
    beta_probe = plan.step.get("beta_probe")
    if plan.refine_probe and beta_probe is not None and beta_probe != settings["step_size"]:
        return {"beta_probe": float(beta_probe), "probe_step_taken": settings["step_size"]}
    return {}


def run(dataset_path: str | Path, plan: PeerPlan, workdir: str | Path) -> PeerResult:
    """Reconstruct the dataset file at ``dataset_path`` with py4DSTEM's equivalent of
    ``plan`` in a fresh process (files in ``workdir``); the object (and every
    ``plan.snapshot_every``-th iteration's) comes back on ptyopt's object grid
    (:func:`ptyopt.initial.object_geometry`)."""
    dataset = read_dataset(dataset_path)
    settings = reconstruct_settings(plan, dataset.n_positions)
    geometry = object_geometry(dataset)
    inputs = _common_inputs(dataset, geometry, plan.slices, plan.thickness_A)
    seeds = np.random.default_rng(plan.seed).integers(0, 2**31 - 1, size=plan.iterations)
    inputs.update(
        object=np.ones((plan.slices, *geometry.shape), np.complex64),
        probe_modes=int(plan.probe_modes),
        native=settings,
        batch_seeds=seeds,
        seed=int(plan.seed),
        snapshot_every=int(plan.snapshot_every),
    )
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, Path(workdir))
    recorded = {
        **settings,
        "class": _class_name(plan.slices, plan.probe_modes),
        "slice_thicknesses": inputs["slice_thickness_A"],
        "vacuum_probe_intensity": "ptyopt.physics.soft_aperture² of the dataset's optics",
        "polar_parameters": inputs["polar"],
        "unmapped": _unmapped(plan, settings),
    }
    return worker_result(PACKAGE, plan, outputs, outputs["positions_px"], geometry, recorded)


def _class_name(slices: int, modes: int) -> str:
    """py4DSTEM's reconstruction class for (slices, modes) (as the worker picks it)."""
    mixed = "Mixedstate" if modes > 1 else ""
    if slices > 1:
        return f"{mixed}MultislicePtychography"
    return f"{mixed}Ptychography" if modes > 1 else "SingleslicePtychography"


def forward_intensities(
    dataset: PtychoDataset,
    object_slices: np.ndarray,
    workdir: str | Path,
    thickness_A: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """py4DSTEM's forward model on ``object_slices`` (S, H, W) complex on ptyopt's
    object grid of ``dataset``: its probe from the dataset's optics, its positions,
    shifts and multislice (S slices of ``thickness_A``, else the nominal thickness).
    Returns its model intensities and the patterns as it preprocessed them, both
    (n, N, N) with zero frequency at index 0; for testing the conventions."""
    geometry = object_geometry(dataset)
    slices = int(object_slices.shape[0])
    inputs = _common_inputs(dataset, geometry, slices, thickness_A)
    inputs.update(object=np.asarray(object_slices), probe_modes=1, forward_only=True)
    outputs = run_worker(PACKAGE, worker_path(PACKAGE), inputs, Path(workdir))
    offsets = np.asarray(geometry.positions_px) - np.asarray(outputs["positions_px"])
    if np.abs(offsets).max() > 0.01:
        raise PeerRunError(f"py4DSTEM's probe centres are not ptyopt's (offset {offsets[0]} px)")
    return outputs["intensities"], outputs["measured"]
