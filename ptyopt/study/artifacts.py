"""Per-trial artifacts under ``studies/<study>/trials/<number>/``:

- ``reconstruction.h5``: datasets ``object`` (S, H, W) complex64, ``probe`` (M, N, N)
  complex64, ``positions_px`` (P, 2) float32 (complex128 and float64 for a plan of
  ``precision: double``: the state as computed); attrs ``origin_px`` (2,) (object pixel of
  the ground-truth cell origin), ``field_of_view`` (y0, y1, x0, x1) [px],
  ``pixel_size_A``, ``slice_thicknesses_A`` (S,), ``dataset_path`` (the cached dataset
  file whose ground truth scores it), ``iterations_done`` (the iterate it holds: the
  final one, or the best one with ``objective.iterate=best``);
- ``metrics.json``: the final iterate's scores (name → number); with
  ``objective.iterate=best``, ``{"final": scores, "best_iterate": {"iteration": n,
  "metrics": scores}}``;
- ``config.yaml``: the resolved configuration of the trial (plan with its parameters).

A pruned or failed trial's folder holds ``config.yaml`` and a ``metrics.json`` of what
is known (:func:`write_unfinished_trial`): ``state``, ``pruned_at`` or ``fail_reason``,
the ``curve`` so far and the ``best_iterate`` so far, where recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from omegaconf import OmegaConf

from ptyopt.initial import Measurements, ReconState


def trial_dir(study_dir: Path, number: int) -> Path:
    """The folder of trial ``number`` of the study kept in ``study_dir``."""
    return Path(study_dir) / "trials" / str(number)


def resolved_config(
    config: Any, plan: Any, params: dict[str, Any], microscope: Any
) -> dict[str, Any]:
    """The resolved configuration of a trial: the study's ``config`` with the trial's
    ``plan`` (its parameters applied), ``params`` and ``microscope`` settings."""
    return {
        **OmegaConf.to_container(OmegaConf.structured(config)),
        "plan": plan,
        "params": params,
        "microscope": microscope,
    }


#: User attributes of an unfinished trial that its ``metrics.json`` records.
UNFINISHED_ATTRS = ("pruned_at", "fail_reason", "curve", "best_iterate")


def write_unfinished_trial(
    folder: Path, config: Any, state: str, params: dict[str, Any], user_attrs: dict[str, Any]
) -> None:
    """Write what is known of a pruned or failed trial (``state`` ``PRUNED`` or ``FAIL``)
    into ``folder``: ``config.yaml`` (the study's ``config`` with the trial's plan,
    ``params`` and microscope settings from ``user_attrs``, where recorded) and
    ``metrics.json`` (``state`` and the :data:`UNFINISHED_ATTRS` recorded)."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = user_attrs.get("plan")
    resolved = resolved_config(config, plan, params, user_attrs.get("microscope"))
    if plan is None:  # failed before its plan was made: the study's plan
        resolved.pop("plan")
    known = {"state": state, **{k: user_attrs[k] for k in UNFINISHED_ATTRS if k in user_attrs}}
    (folder / "metrics.json").write_text(json.dumps(known, indent=2, sort_keys=True))
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))


def write_trial(
    folder: Path,
    state: ReconState,
    measurements: Measurements,
    dataset_path: Path,
    metrics: dict[str, Any],
    config: Any,
) -> None:
    """Write the three artifacts of a finished trial into ``folder``: ``state`` (the
    iterate the trial's values come from) and ``metrics`` as they go into the files."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "reconstruction.h5", "w") as file:
        file.create_dataset(
            "object", data=np.asarray(state.object), compression="gzip", compression_opts=1
        )
        file.create_dataset("probe", data=np.asarray(state.probe))
        file.create_dataset("positions_px", data=np.asarray(state.positions_px))
        write_frame(file, measurements, dataset_path)
        file.attrs["slice_thicknesses_A"] = np.asarray(state.slice_thicknesses_A)
        file.attrs["iterations_done"] = state.iterations_done
    write_metadata(folder, metrics, config)


def write_frame(file: h5py.File, measurements: Measurements, dataset_path: Path) -> None:
    """The attributes that place a trial's object on the dataset: ``origin_px``,
    ``field_of_view`` (the scored pixels: y0, y1, x0, x1), ``pixel_size_A`` [Å] and
    ``dataset_path``."""
    fov = measurements.geometry.field_of_view(2)
    file.attrs["origin_px"] = np.asarray(measurements.geometry.origin_px, np.float64)
    file.attrs["field_of_view"] = np.array([fov[0].start, fov[0].stop, fov[1].start, fov[1].stop])
    file.attrs["pixel_size_A"] = measurements.pixel_size_A
    file.attrs["dataset_path"] = str(dataset_path)


def write_metadata(folder: Path, metrics: dict[str, Any], config: Any) -> None:
    """A finished trial's ``metrics.json`` and ``config.yaml`` (its resolved config)."""
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))


@dataclass(frozen=True)
class TrialReconstruction:
    """A trial's reconstruction as read back (see module docstring for the fields)."""

    object: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    origin_px: tuple[float, float]
    field_of_view: tuple[slice, slice]
    pixel_size_A: float
    dataset_path: Path
    iterations_done: int | None  # None in files written before it was recorded


def read_trial(folder: Path) -> TrialReconstruction:
    """Read ``reconstruction.h5`` of a trial folder."""
    with h5py.File(Path(folder) / "reconstruction.h5", "r") as file:
        y0, y1, x0, x1 = (int(v) for v in file.attrs["field_of_view"])
        return TrialReconstruction(
            object=file["object"][()],
            probe=file["probe"][()],
            positions_px=file["positions_px"][()],
            origin_px=tuple(float(v) for v in file.attrs["origin_px"]),
            field_of_view=(slice(y0, y1), slice(x0, x1)),
            pixel_size_A=float(file.attrs["pixel_size_A"]),
            dataset_path=Path(str(file.attrs["dataset_path"])),
            iterations_done=int(file.attrs["iterations_done"])
            if "iterations_done" in file.attrs
            else None,
        )
