"""Peer packages as study engines: a plan that holds only ``peer`` (``engine=phaser_lsqml``
and the other ``conf/engine/<package>_<family>.yaml``) is run by that package's adapter,
one fresh process per trial, and scored, stored and reported like one of ours, so a
study tunes a peer's native parameters with the same sampler, budget and scoring.

A peer plan::

    peer:
      package: phaser          # an adapter module ptyopt.peers.<package>
      engine: lsqml            # the family, as PeerPlan (ptyopt.peers.base)
      iterations: 40
      group_size: 64
      step: {beta_object: 2.0, beta_probe: 1.0}
      native: {}               # the peer's own parameters, by its names

and a search space over ``plan.peer.…`` paths. A peer reports no iterate before its
last, so its trials are never pruned and are scored at their final iterate; times
are the worker's per-iteration times, the first iteration's excess over the others'
median counted as compilation (``compile_time_s``) and left out of ``seconds``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ptyopt.errors import ConfigError, UnknownKeyError, did_you_mean
from ptyopt.peers.base import PeerPlan, PeerResult, peer_python

if TYPE_CHECKING:  # the runner imports this module
    import optuna

    from ptyopt.study.runner import Workspace

#: Adapter modules ``ptyopt.peers.<name>`` a peer plan may name.
PACKAGES = ("phaser", "py4dstem", "ptyrad", "ptychi")
_FIELDS = {f.name for f in dataclasses.fields(PeerPlan)}


def is_peer_plan(plan_values: dict) -> bool:
    """Whether a plan (as plain values) is a peer's: it holds the key ``peer``."""
    return "peer" in plan_values


def adapter(package: str) -> ModuleType:
    """The adapter module of ``package`` (ConfigError naming ``plan.peer.package``)."""
    if package not in PACKAGES:
        raise ConfigError(
            f"plan.peer.package: unknown package {package!r}; choose from {list(PACKAGES)}"
            + did_you_mean(str(package), list(PACKAGES))
        )
    try:
        return importlib.import_module(f"ptyopt.peers.{package}")
    except ModuleNotFoundError as err:
        raise ConfigError(f"plan.peer.package: ptyopt has no adapter for {package!r}") from err


def parse_peer_plan(plan_values: dict) -> tuple[str, PeerPlan]:
    """The package and the validated :class:`PeerPlan` of a peer plan; a ConfigError
    names the ``plan.peer.…`` key at fault."""
    extra = sorted(set(plan_values) - {"peer"})
    if extra:
        raise ConfigError(f"plan: a peer plan holds only `peer`, not also {extra}")
    values = dict(plan_values["peer"] or {})
    package = values.pop("package", None)
    module = adapter(package)
    for key in values:
        if key not in _FIELDS:
            raise UnknownKeyError(
                f"plan.peer.{key}: unknown key" + did_you_mean(key, sorted(_FIELDS))
            )
    try:
        plan = PeerPlan(**values)
    except ConfigError as err:
        raise ConfigError(str(err).replace("peer plan: ", "plan.peer.", 1)) from None
    if plan.engine not in module.ENGINES:
        raise ConfigError(
            f"plan.peer.engine: {package} runs {list(module.ENGINES)}, not {plan.engine!r}"
        )
    return package, plan


def check_runnable(package: str) -> None:
    """Raise :class:`ptyopt.peers.base.PeerUnavailableError` (one line, naming the
    command that installs it) unless ``package``'s environment exists."""
    peer_python(package)


def check_study(config: Any) -> None:
    """The study settings a peer trial cannot honour, refused before any trial."""
    objective = config.objective
    if objective.validation_fraction or objective.split_frc:
        raise ConfigError(
            "objective.validation_fraction / objective.split_frc: held-out positions and "
            "split halves are not available for peer plans (the peer sees every position)"
        )
    if config.study.batch_trials != 1:
        raise ConfigError(
            "study.batch_trials: a peer runs one trial at a time in its own process; use 1"
        )
    if objective.iterate != "final":
        raise ConfigError("objective.iterate: a peer reports only its final iterate; use final")


def timings(result: PeerResult) -> dict[str, float]:
    """reconstruction_s (every iteration, compilation left out), compile_time_s (the
    first iteration's excess over the median of the others), seconds_per_iteration
    (that median) [s]."""
    times = np.asarray(result.iteration_s, float)
    typical = float(np.median(times[1:])) if len(times) > 1 else float(times[0])
    compile_s = max(0.0, float(times[0]) - typical)
    return {
        "reconstruction_s": float(times.sum()) - compile_s,
        "compile_time_s": compile_s,
        "seconds_per_iteration": typical,
    }


def write_peer_trial(
    folder: Path, result: PeerResult, work: Workspace, metrics: dict, config: dict
) -> None:
    """The artifacts of a finished peer trial in ``folder``, as
    :func:`ptyopt.study.artifacts.write_trial` writes ours (``reconstruction.h5`` holds
    the object on ptyopt's grid; the peer's probe and positions are its own)."""
    from ptyopt.study.artifacts import write_frame, write_metadata

    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "reconstruction.h5", "w") as file:
        file.create_dataset("object", data=result.object_slices, compression="gzip")
        write_frame(file, work.measurements, work.dataset_path)
        file.attrs["package"] = result.package
        file.attrs["version"] = result.version
        file.attrs["iterations_done"] = len(result.iteration_s)
    write_metadata(folder, metrics, config)


def run_peer_trial(trial: optuna.Trial, work: Workspace) -> list[float]:
    """Run one trial of a peer plan (module docstring); returns its objective values."""
    from ptyopt.engines.common import DivergenceError
    from ptyopt.study.artifacts import resolved_config, trial_dir
    from ptyopt.study.components import suggest
    from ptyopt.study.runner import score_metrics
    from ptyopt.study.settings import with_params
    from ptyopt.truth_free import image_scores

    params = suggest(trial, work.config.study.search_space)
    trial_plan = with_params(work.plan_values, params)
    package, plan = parse_peer_plan(trial_plan)
    folder = trial_dir(work.folder, trial.number)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("trial_dir", str(folder))
    trial.set_user_attr("plan", trial_plan)
    result: PeerResult = adapter(package).run(work.dataset_path, plan, folder / "peer")
    if not np.all(np.isfinite(result.object_slices)):
        raise DivergenceError(
            f"{package} {plan.engine}",
            len(result.iteration_s) - 1,
            "its final object holds NaN or inf (the peer ran to the end without noticing)",
        )
    times = timings(result)
    scores = score_metrics(result.object_slices, work.dataset, work.measurements)
    scores.update(image_scores(result.object_slices, work.measurements))
    scores["seconds"] = times["reconstruction_s"]
    iterations = len(result.iteration_s)
    trial.set_user_attr("peer", {"package": package, "version": result.version})
    trial.set_user_attr("peer_settings", result.settings)
    trial.set_user_attr("peak_rss_MB", result.peak_rss_MB)
    trial.set_user_attr("metrics", scores)
    trial.set_user_attr("best_iterate", {"iteration": iterations, "metrics": scores})
    trial.set_user_attr(
        "curve",
        {
            "iteration": [iterations],
            **{k: [scores[k]] for k in ("seconds", "nrmse") if k in scores},
        },
    )
    for name, value in times.items():
        trial.set_user_attr(name, value)
    resolved = resolved_config(work.config, trial_plan, params, None)
    write_peer_trial(folder, result, work, scores, resolved)
    return [scores[name] for name in work.config.objective.metrics]
