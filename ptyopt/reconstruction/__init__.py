"""One reconstruction of a dataset by a plan, kept: what ``python -m ptyopt reconstruct``
runs, with or without a ground truth.

:class:`Reconstruction` resolves the plan against the dataset's nominal metadata (every
check before any compute), runs it, and keeps the final state, the data error of every
iteration and the resolved plan; :mod:`.file` writes it as ``reconstruction.h5`` and
:mod:`.figure` draws ``reconstruction.png``.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.data.dataset import PtychoDataset
from ptyopt.engines.common import IterationReport, Observer, run_plan
from ptyopt.initial import Measurements, ReconState, measurements_from, with_plan, with_positions
from ptyopt.paths import project_root
from ptyopt.plan import Plan, parse_plan


def resolved_plan(plan_values: Mapping, measurements: Measurements) -> dict[str, Any]:
    """The plan values with every microscope setting the measurements resolved (probe
    optics, thickness, slices, scan calibration) in place of its ``null``,
    ``slice_thickness_A`` turned into ``slices`` and the precision named: a plan that
    reproduces the reconstruction on this dataset whatever its nominal metadata."""
    values = copy.deepcopy(dict(plan_values))
    settings = measurements.microscope.plan_settings()
    for section in ("probe", "scan"):
        values[section] = {**(values.get(section) or {}), **settings[section]}
    values["thickness_A"] = settings["thickness_A"]
    values["slices"] = settings["slices"]
    values["slice_thickness_A"] = None
    values["precision"] = measurements.precision.name
    return values


class Reconstruction:
    """A plan about to run, then run, on one dataset. On creation it parses the plan
    and resolves its microscope (:func:`ptyopt.initial.with_plan`), raising
    :class:`~ptyopt.errors.ConfigError` for any problem before compute.

    ``held_out`` (K,): indices of the scan positions no update sees (empty: none; their
    patterns then score the reconstruction, :func:`ptyopt.truth_free.validation_error`).

    Attributes: ``plan``; ``measurements`` of the whole scan as the plan assumes them;
    ``used``, the positions the engines see (``None``: all); ``plan_values``,
    the resolved plan (:func:`resolved_plan`); after :meth:`run`: ``state``,
    ``losses`` (the data error, the noise model's mean loss per position, of every
    iteration over all engines) and ``engine_starts`` (the index in ``losses`` where
    each engine begins), ``seconds`` (wall time of the run)."""

    def __init__(
        self, dataset: PtychoDataset, plan_values: Mapping, held_out: np.ndarray | None = None
    ):
        self.dataset = dataset
        self.plan: Plan = parse_plan(plan_values)
        self.measurements = with_plan(measurements_from(dataset), self.plan)
        self.held_out = np.zeros(0, np.int64) if held_out is None else np.asarray(held_out)
        self.used = (
            np.setdiff1d(np.arange(dataset.n_positions), self.held_out)
            if self.held_out.size
            else None
        )
        self.plan_values = resolved_plan(plan_values, self.measurements)
        self.state: ReconState | None = None
        self.losses: list[float] = []
        self.engine_starts: list[int] = []
        self.seconds = 0.0

    def _record(self, report: IterationReport) -> None:
        if report.iteration == 0:
            self.engine_starts.append(len(self.losses))
        self.losses.append(report.loss)

    def truth_free_scores(self) -> dict[str, float]:
        """The run's scores without ground truth (:mod:`ptyopt.truth_free`): the image
        statistics and, with held-out positions, ``validation_error``."""
        from ptyopt.truth_free import image_scores, validation_error

        if self.state is None:
            raise ValueError("the reconstruction has not been run")
        scores = image_scores(self.state.object, self.measurements)
        if self.held_out.size:
            scores["validation_error"] = validation_error(
                self.state, self.measurements, self.held_out
            )
        return scores

    def run(self, observers: Iterable[Observer] = ()) -> ReconState:
        """Run the plan from its initial state; ``observers`` see every iteration."""
        self.losses, self.engine_starts = [], []
        started = time.perf_counter()
        seen = (
            self.measurements if self.used is None else with_positions(self.measurements, self.used)
        )
        self.state = run_plan(self.plan, seen, observers=[self._record, *observers])
        self.seconds = time.perf_counter() - started
        return self.state


def default_output(dataset_name: str) -> Path:
    """``reconstructions/<dataset name>/`` in the project folder (characters other than
    letters, digits, '.', '-' and '_' in the name become '_')."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", dataset_name).strip(".") or "dataset"
    return project_root() / "reconstructions" / safe
