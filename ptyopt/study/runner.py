"""The study runner: Optuna ask/tell driven by ptyopt itself.

Each trial suggests its parameters, builds its plan, reconstructs the dataset (with an
intermediate score every ``study.score_every`` iterations feeding the pruner and its
convergence curve), scores the result against the ground truth (where the dataset has
one) and without it (:mod:`ptyopt.truth_free`: image statistics always, the held-out
positions' error with ``objective.validation_fraction`` > 0, the split-data FRC with
``objective.split_frc``) and writes its artifacts. Held-out positions are removed from
what the engines see.
Its values come from the final iterate or, with ``objective.iterate=best``, from the
best scored iterate along its curve (kept while the trial runs, never scored again). A
diverged or failed trial is told FAIL with the reason in its user attributes and the
study goes on. The budget ``study.n_trials`` counts the trials in the storage (a failed
trial that was retried gives its place to the retry), so workers sharing one storage
share it; rerunning the same command resumes, and trials of dead workers are retried.
Trials of one process share the compiled engine steps (hyperparameters are array
arguments), and the persistent compilation cache serves other processes. With
``study.batch_trials`` K > 1 a worker asks K trials at once and runs them in lockstep
(:mod:`ptyopt.engines.batched`), telling each as it ends; Ctrl-C fails those still
running ("interrupted").
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import statistics
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optuna
from tqdm.auto import tqdm

from ptyopt import metrics
from ptyopt.data.dataset import PtychoDataset
from ptyopt.data.file import DatasetFileError, read_dataset
from ptyopt.data.recipe import MIN_ELECTRONS_PER_PATTERN
from ptyopt.engines.batched import LaneClock, LaneResult, run_batched
from ptyopt.engines.common import (
    DivergenceError,
    IterationReport,
    Steps,
    plan_steps,
    run_alone,
)
from ptyopt.errors import ConfigError, warn
from ptyopt.initial import (
    Measurements,
    ReconState,
    measurements_from,
    with_plan,
    with_positions,
)
from ptyopt.paths import compilation_cache, project_root
from ptyopt.peers.base import PeerPlan
from ptyopt.peers.study import check_runnable, is_peer_plan, run_peer_trial
from ptyopt.plan import check_bandlimit, parse_plan
from ptyopt.study.artifacts import (
    resolved_config,
    trial_dir,
    write_trial,
    write_unfinished_trial,
)
from ptyopt.study.components import (
    RetryTrial,
    grid_size,
    make_pruner,
    make_sampler,
    make_storage,
    suggest,
)
from ptyopt.study.identity import check_identity, study_identity
from ptyopt.study.publication import record_run
from ptyopt.study.settings import (
    OBJECTIVE_ITERATE,
    TRUTH_FREE_METRICS,
    StudyConfig,
    directions,
    objective_iterate,
    plan_with,
    with_params,
)
from ptyopt.truth_free import (
    amplitude_error,
    held_out_positions,
    image_scores,
    split_frc_scores,
    validation_error,
)

State = optuna.trial.TrialState


def study_dir(name: str) -> Path:
    """Where study ``name`` keeps its storage and trial artifacts."""
    return project_root() / "studies" / name


def check_writable(folder: Path) -> None:
    """A ConfigError naming the folder if ptyopt cannot create the study folder
    ``folder`` or write its storage and trial artifacts in it (checked before any
    compute; nothing is created)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    for where in (existing, folder / "trials"):
        if not where.exists():
            continue
        if not where.is_dir():
            raise ConfigError(f"study.name: {where} is a file; the study needs a folder there")
        if not os.access(where, os.W_OK | os.X_OK):
            what = "study folder" if where == folder else "folder"
            raise ConfigError(
                f"study.name: cannot write to the {what} {where} (permission denied); "
                "make it writable, or set PTYOPT_HOME to a project folder of your own"
            )


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, shared by all processes of a project."""
    jax.config.update("jax_compilation_cache_dir", str(compilation_cache()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def score_metrics(
    state_object: np.ndarray, dataset: PtychoDataset, measurements: Measurements
) -> dict[str, float]:
    """Every scalar score of :func:`metrics.score_object` by name."""
    return metrics.score_object(
        np.asarray(state_object), dataset.ground_truth, measurements.geometry
    ).scalars()


#: Scores kept in a trial's convergence curve (user attribute ``curve``) where the trial
#: records them: against a ground truth, its dopants' depth localisation, without truth.
CURVE_METRICS = (
    "nrmse",
    "ssim",
    "frc_resolution_A",
    "depth_error_rms_A",
    "depth_fwhm_mean_A",
    "validation_error",
    "phase_contrast",
    "phase_tv",
)


@dataclass
class ScoredIterate:
    """One scored iterate of a trial. iteration: iterations done over the whole plan;
    scores: every score of :meth:`Workspace.scores` and ``seconds``, the
    reconstruction time up to this iterate (scoring excluded) [s]; state: the
    reconstruction at this iterate (immutable JAX arrays: holding it copies nothing)."""

    iteration: int
    scores: dict[str, float]
    state: ReconState

    def as_user_attribute(self) -> dict:
        """The user attribute ``best_iterate``: ``{iteration, metrics}``."""
        return {"iteration": self.iteration, "metrics": self.scores}


def _better(value: float, than: float, minimize: bool) -> bool:
    """Whether ``value`` beats ``than`` in the direction; NaN never wins, and beats nothing."""
    if math.isnan(value):
        return False
    return math.isnan(than) or (value < than if minimize else value > than)


@dataclass
class ConvergenceReporter:
    """Observer: every ``every`` iterations (over the whole plan) scores the current
    state with ``score`` and records it (:meth:`record`): the convergence :attr:`curve`
    (``iteration``, reconstruction ``seconds`` so far, and those of
    :data:`CURVE_METRICS` that are scored), the :attr:`latest` and the :attr:`best`
    iterate in the objective's first ``metric`` (its ``direction``; the earliest on
    ties; the first iterate if the metric is not scored along the way). With ``prune``
    (single-objective studies) it also reports ``metric``, where it is scored along the
    way, as the trial's intermediate value and prunes if told to (``seconds`` is never
    an intermediate value). clock: the trial's clock [s] (a batched trial's
    :class:`~ptyopt.engines.batched.LaneClock`)."""

    trial: optuna.Trial
    metric: str
    direction: str
    prune: bool
    every: int
    score: Callable[[ReconState], dict[str, float]]
    clock: Callable[[], float] = time.perf_counter
    seconds: float = 0.0  # spent scoring, not reconstructing
    started: float | None = None  # the clock's reading at the start (None: now)
    curve: dict[str, list[float]] = field(default_factory=lambda: {"iteration": [], "seconds": []})
    latest: ScoredIterate | None = None
    best: ScoredIterate | None = None

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def record(self, scored: ScoredIterate) -> None:
        """Add a scored iterate to the curve; keep it if it is the best so far."""
        self.latest = scored
        self.curve["iteration"].append(scored.iteration)
        self.curve["seconds"].append(scored.scores["seconds"])
        for name in CURVE_METRICS:
            if name in scored.scores:
                self.curve.setdefault(name, []).append(scored.scores[name])
        if self.best is None or _better(
            scored.scores.get(self.metric, math.nan),
            self.best.scores.get(self.metric, math.nan),
            self.direction == "minimize",
        ):
            self.best = scored

    def __call__(self, report: IterationReport) -> None:
        step = report.state.iterations_done
        if step % self.every:
            return
        scoring_started = self.clock()
        scores = self.score(report.state)
        reconstructing = scoring_started - self.started - self.seconds
        self.record(ScoredIterate(step, {**scores, "seconds": reconstructing}, report.state))
        self.seconds += self.clock() - scoring_started
        if self.prune and self.metric in scores:
            self.trial.report(scores[self.metric], step)
            if self.trial.should_prune():
                self.trial.set_user_attr("pruned_at", step)
                raise optuna.TrialPruned(f"pruned at iteration {step}")


@dataclass
class IterationClock:
    """Observer: each iteration's wall time and data error, and the compilation hidden in
    each engine's first iteration (and in any other that compiled: a batched trial's,
    :mod:`ptyopt.engines.batched`), estimated as its excess over the median of that
    engine's other iterations (or of all others when it ran one). Compilation happens in
    a process's first trial of each shape; later trials find it compiled (≈ 0)."""

    losses: list[float] = field(default_factory=list)
    #: per engine: (iterations done after an iteration that may compile, its seconds)
    firsts: list[list[tuple[int, float]]] = field(default_factory=list)
    others: list[list[float]] = field(default_factory=list)

    def __call__(self, report: IterationReport) -> None:
        self.losses.append(report.loss)
        if report.iteration == 0:
            self.firsts.append([])
            self.others.append([])
        if report.compiled:
            self.firsts[-1].append((report.state.iterations_done, report.seconds))
        else:
            self.others[-1].append(report.seconds)

    @property
    def typical_s(self) -> float:
        """Median seconds per iteration of every engine's iterations after its first."""
        every = [s for engine in self.others for s in engine]
        return statistics.median(every) if every else 0.0

    def compile_s(self, up_to: int | None = None) -> float:
        """Compilation [s] in the first iterations of the engines that had started by
        iteration ``up_to`` (iterations done; ``None``: the whole plan)."""
        total = 0.0
        for firsts, others in zip(self.firsts, self.others, strict=True):
            typical = statistics.median(others) if others else self.typical_s
            for done, first in firsts:
                if up_to is None or done <= up_to:
                    total += max(0.0, first - typical)
        return total


@dataclass
class Workspace:
    """What every trial of one process shares. held_out: the positions (K,) of the scan
    that no update sees (empty: none); used: the others (``None`` when none is held
    out)."""

    config: StudyConfig
    plan_values: dict
    dataset: PtychoDataset
    dataset_path: Path
    measurements: Measurements
    folder: Path
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def used(self) -> np.ndarray | None:
        if not self.held_out.size:
            return None
        return np.setdiff1d(np.arange(len(self.measurements.patterns)), self.held_out)

    def scores(self, state: ReconState, measurements: Measurements) -> dict[str, float]:
        """Every score of ``state`` along a trial: against the ground truth where there is
        one (:func:`score_metrics`), the image statistics and, with held-out positions,
        ``validation_error``; ``measurements``: the whole scan as the trial assumes it."""
        truth = self.dataset.ground_truth is not None
        scores = score_metrics(state.object, self.dataset, measurements) if truth else {}
        scores.update(image_scores(state.object, measurements))
        if self.held_out.size:
            scores["validation_error"] = validation_error(state, measurements, self.held_out)
        return scores


def run_trial(trial: optuna.Trial, work: Workspace) -> list[float]:
    """Reconstruct and score one trial; returns its objective values."""
    return run_alone(trial_steps(trial, work))


def trial_steps(
    trial: optuna.Trial, work: Workspace, clock: Callable[[], float] = time.perf_counter
) -> Steps:
    """:func:`run_trial` as :data:`~ptyopt.engines.common.Steps` (to run in a batch of
    trials), its times read from ``clock`` [s]; returns the objective values."""
    started = clock()
    params = suggest(trial, work.config.study.search_space)
    trial_plan = with_params(work.plan_values, params)
    plan = parse_plan(trial_plan)
    measurements = with_plan(work.measurements, plan)  # the whole scan, as the trial assumes it
    used = work.used
    training = measurements if used is None else with_positions(measurements, used)
    microscope = measurements.microscope.plan_settings()
    iterations = IterationClock()

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("trial_dir", str(trial_dir(work.folder, trial.number)))
    trial.set_user_attr("microscope", microscope)
    trial.set_user_attr("plan", trial_plan)  # what `apply` runs on other data
    trial.set_user_attr("bandlimit", plan.bandlimit)
    if plan.bandlimit is not None:
        nyquist = measurements.nyquist_angle_mrad
        trial.set_user_attr("bandlimit_mrad", plan.bandlimit * nyquist)
    objective = work.config.objective
    reporter = ConvergenceReporter(  # its clock starts the reconstruction's
        trial,
        objective.metrics[0],
        directions(work.config)[0],
        len(objective.metrics) == 1,
        work.config.study.score_every,
        lambda state: work.scores(state, measurements),
        clock,
    )
    try:
        state = yield from plan_steps(plan, training, observers=[iterations, reporter])
    except BaseException:  # pruned and diverged trials keep their curve and best so far
        trial.set_user_attr("curve", reporter.curve)
        if reporter.best is not None:
            trial.set_user_attr("best_iterate", reporter.best.as_user_attribute())
        raise
    reconstruction_s = clock() - reporter.started - reporter.seconds
    if reporter.latest is None or reporter.latest.iteration != state.iterations_done:
        scores = work.scores(state, measurements)
        reporter.record(
            ScoredIterate(state.iterations_done, {**scores, "seconds": reconstruction_s}, state)
        )
    final, best = reporter.latest, reporter.best  # the final iterate ends the curve
    # the final iterate's time is the whole reconstruction's, in its scores (which best
    # shares when it is the final iterate) and at the end of the curve; every time a
    # trial is scored on leaves out the compilation (recorded as compile_time_s)
    final.scores["seconds"] = reconstruction_s
    reporter.curve["seconds"][-1] = reconstruction_s
    curve = reporter.curve
    curve["seconds"] = [
        seconds - iterations.compile_s(done)
        for seconds, done in zip(curve["seconds"], curve["iteration"], strict=True)
    ]
    for scored in {id(final): final, id(best): best}.values():
        scored.scores["seconds"] -= iterations.compile_s(scored.iteration)
    for scored in {id(final): final, id(best): best}.values():  # one forward pass each
        scored.scores["training_error"] = amplitude_error(
            scored.state, training, scored.state.positions_px
        )
    if objective.split_frc:
        split = split_frc_scores(plan, measurements, used)
        final.scores.update(split.scores)
        trial.set_user_attr("split_frc_s", split.seconds)
        trial.set_user_attr("split_frc_halves", {"kind": split.kind, "positions": split.positions})
    trial.set_user_attr("curve", reporter.curve)
    compile_s = iterations.compile_s()
    resolved = resolved_config(work.config, trial_plan, params, microscope)
    if objective.iterate == "best":
        chosen = best
        recorded = {"final": final.scores, "best_iterate": best.as_user_attribute()}
    else:
        chosen, recorded = final, final.scores
    write_trial(
        trial_dir(work.folder, trial.number),
        chosen.state,
        measurements,
        work.dataset_path,
        recorded,
        resolved,
    )
    trial.set_user_attr("metrics", final.scores)
    trial.set_user_attr("best_iterate", best.as_user_attribute())
    trial.set_user_attr("data_error", iterations.losses[-1])
    trial.set_user_attr("validation_positions", int(work.held_out.size))
    trial.set_user_attr("reconstruction_s", reconstruction_s - compile_s)
    trial.set_user_attr("intermediate_scoring_s", reporter.seconds)
    trial.set_user_attr("compile_time_s", compile_s)
    trial.set_user_attr("seconds_per_iteration", iterations.typical_s)
    trial.set_user_attr("wall_time_s", clock() - started)
    return [chosen.scores[name] for name in objective.metrics]


def open_study(
    config: StudyConfig,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    folder: Path,
    identity: dict[str, Any],
) -> optuna.Study:
    """Create or load the study in its storage; a new study gets its metric names, its
    ``objective_iterate`` (user attribute), its ``identity``
    (:mod:`ptyopt.study.identity`) and its baseline trials enqueued. Resuming a study
    with another ``objective.iterate`` or identity than it was created with is a
    ConfigError."""
    study = optuna.create_study(
        storage=make_storage(config.storage, folder),
        sampler=sampler,
        pruner=pruner,
        study_name=config.study.name,
        directions=directions(config),
        load_if_exists=True,
    )
    if not study.trials:
        with warnings.catch_warnings():  # metric names are "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.objective.metrics))
        study.set_user_attr(OBJECTIVE_ITERATE, config.objective.iterate)
        for baseline in config.study.baseline_trials:
            study.enqueue_trial(dict(baseline), skip_if_exists=True)
    if (used := objective_iterate(study)) != config.objective.iterate:
        raise ConfigError(
            f"objective.iterate: study {config.study.name!r} was run with "
            f"objective.iterate={used}; resume it with that, or choose another study.name"
        )
    check_identity(study, identity)
    return study


#: A resumed study whose last this many finished trials all failed is warned about.
FAIL_STREAK = 3


def warn_of_failing_streak(study: optuna.Study) -> None:
    """Warn, once, where the study's last :data:`FAIL_STREAK` or more finished trials
    (in the order they finished) all failed, with their fail reasons: a resumed study
    that would go on spending its budget on the same failure."""
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number),
    )
    streak = []
    for trial in reversed(finished):
        if trial.state != State.FAIL:
            break
        streak.append(trial)
    if len(streak) < FAIL_STREAK:
        return
    reasons: dict[str, list[int]] = {}
    for trial in reversed(streak):
        reason = trial.user_attrs.get("fail_reason", "no reason recorded")
        reasons.setdefault(" ".join(str(reason).split()), []).append(trial.number)
    warn(
        f"study {study.study_name!r}: its last {len(streak)} finished trials all failed ("
        + "; ".join(
            f"trial{'s' if len(n) > 1 else ''} {', '.join(map(str, n))}: {reason}"
            for reason, n in reasons.items()
        )
        + "); check the plan and search space before it spends more of its budget"
    )


def _counted(study: optuna.Study) -> int:
    """Trials that use up the budget: running, complete, pruned, and failed ones that
    were not retried (a retried failure's place goes to its retry)."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    return sum(
        t.state in (State.RUNNING, State.COMPLETE, State.PRUNED)
        or (t.state == State.FAIL and t.number not in retried)
        for t in trials
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_workers(study: optuna.Study, max_retry: int) -> list[int]:
    """Journal storage has no heartbeats: a RUNNING trial of this host whose worker
    process is gone is told FAIL ("worker died") and retried with the same parameters.
    RDB storages do the same through heartbeats (:func:`optuna.storages.fail_stale_trials`).
    Returns the numbers of the recovered trials."""
    if isinstance(study._storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return []
    host, recovered = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or _process_alive(pid):
            continue
        study._storage.set_trial_user_attr(
            trial._trial_id, "fail_reason", f"worker process {pid} died during the trial"
        )
        study.tell(trial.number, state=State.FAIL)
        RetryTrial(max_retry)(study, study._storage.get_trial(trial._trial_id))
        recovered.append(trial.number)
    return recovered


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial):
    """Records the trial's heartbeat in a background thread while it runs (RDB
    storages with a heartbeat interval; nothing otherwise)."""
    storage = study._storage
    interval = (
        storage.get_heartbeat_interval()
        if isinstance(storage, optuna.storages.RDBStorage)
        else None
    )
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial._trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _budget_lock(folder: Path):
    """Serialises count-then-ask between processes on this machine, so that workers
    sharing a journal storage never exceed the budget. (Across machines, on an RDB
    storage, two workers may each start one trial past it.)"""
    with open(folder / "budget.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def trial_budget(config: StudyConfig) -> int:
    """The study's trial budget: ``study.n_trials``, capped at the grid's size for a grid
    sampler (once every point has run, a further trial would repeat one)."""
    if config.sampler.name == "grid":
        return min(config.study.n_trials, grid_size(config.study.search_space))
    return config.study.n_trials


def _ask_within_budget(
    study: optuna.Study, config: StudyConfig, folder: Path
) -> optuna.Trial | None:
    """Recover dead workers' trials, then ask for a trial if the budget allows. The
    sampler is reseeded from (study seed, trials so far): one worker is reproducible,
    and workers sharing a storage draw different points instead of the same ones."""
    with _budget_lock(folder):
        recover_dead_workers(study, config.storage.max_retry)
        if _counted(study) >= trial_budget(config):
            return None
        seed = int(
            np.random.SeedSequence(
                [config.study.seed, len(study.get_trials(deepcopy=False))]
            ).generate_state(1)[0]
        )
        study.sampler = make_sampler(
            config.sampler, config.study.search_space, seed, config.study.seed
        )
        with warnings.catch_warnings():  # ptyopt records heartbeats itself under ask/tell
            warnings.filterwarnings(
                "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
            )
            return study.ask()


def dataset_for(config: StudyConfig, progress: bool = True) -> tuple[PtychoDataset, Path]:
    """The configured dataset and its file: ``dataset_file`` if given (validated on
    read; it may lack a ground truth), else the recipe's cached simulation (simulated
    when missing)."""
    if config.dataset_file is None:
        from ptyopt.data.cache import cached_dataset_path, load_or_simulate  # imports abTEM

        return load_or_simulate(config.dataset, progress=progress), cached_dataset_path(
            config.dataset
        )
    path = Path(config.dataset_file).expanduser().resolve()
    try:
        dataset = read_dataset(path)
    except DatasetFileError as err:
        raise DatasetFileError(f"dataset_file: {err}") from None
    counts = float(np.mean(np.sum(dataset.patterns, axis=(-2, -1), dtype=np.float64)))
    if counts < MIN_ELECTRONS_PER_PATTERN:
        warn(
            f"dataset_file: the patterns of {path} hold {counts:.3g} counts each on average "
            f"(under {MIN_ELECTRONS_PER_PATTERN:g} electrons): most detector pixels count "
            "nothing (are the patterns in electron counts?)"
        )
    return dataset, path


def run_study(
    config: StudyConfig,
    plan_values: dict,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> optuna.Study:
    """Run trials until the study's global budget is spent; returns the study.
    ``overrides``: the command line's, recorded with the study
    (:func:`ptyopt.study.publication.record_run`)."""
    folder = study_dir(config.study.name)
    check_writable(folder)
    enable_compilation_cache()
    plan = plan_with(plan_values, {})
    peer = isinstance(plan, PeerPlan)
    if peer:
        check_runnable(plan_values["peer"]["package"])
    max_iterations = plan.iterations if peer else sum(e.iterations for e in plan.engines)
    sampler = make_sampler(
        config.sampler, config.study.search_space, config.study.seed, config.study.seed
    )
    pruner = make_pruner(config.pruner, max(max_iterations, config.pruner.min_resource + 1))
    dataset, dataset_path = dataset_for(config, progress)
    needs_truth = [m for m in config.objective.metrics if m not in TRUTH_FREE_METRICS]
    if dataset.ground_truth is None and needs_truth:
        raise ConfigError(
            f"objective.metrics: {needs_truth[0]} needs a ground truth and {dataset_path} "
            f"has none; choose metrics from {list(TRUTH_FREE_METRICS)}"
        )
    measurements = measurements_from(dataset)
    if not peer:
        planned = with_plan(measurements, plan)  # thickness and scan checked before any trial
        check_bandlimit(plan.bandlimit, planned.nyquist_angle_mrad, planned.semiangle_mrad)
    depth = [m for m in config.objective.metrics if m in metrics.DEPTH_SCALARS]
    if depth and dataset.ground_truth.dopants is None:
        raise ConfigError(
            f"objective.metrics: {depth[0]} scores the depth of dopants, and the ground "
            f"truth of dataset {dataset.name!r} has none (use dataset=dopants)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _budget_lock(folder):  # one worker at a time creates the study and its baselines
        identity = study_identity(
            dataset_path,
            plan_values,
            list(config.objective.metrics),
            directions(config),
            {
                "validation_fraction": config.objective.validation_fraction,
                "validation_seed": config.objective.validation_seed,
            },
        )
        study = open_study(config, sampler, pruner, folder, identity)
        record_run(study, overrides)
    warn_of_failing_streak(study)
    held_out = held_out_positions(
        dataset.n_positions,
        config.objective.validation_fraction,
        config.objective.validation_seed,
    )
    work = Workspace(config, plan_values, dataset, dataset_path, measurements, folder, held_out)
    budget = trial_budget(config)
    bar = tqdm(
        total=budget,
        initial=min(_counted(study), budget),
        unit="trial",
        desc=config.study.name,
        disable=not progress,
    )
    running: dict[int, optuna.Trial] = {}  # the batch's trials not yet told, by lane

    def ended(lane: int, result: LaneResult) -> None:
        _conclude(work, study, running.pop(lane), result)
        bar.n = min(_counted(study), budget)
        bar.set_postfix(_best_so_far(study), refresh=False)
        bar.update(0)

    while trials := _ask_batch(study, config, folder):
        running.update(enumerate(trials))
        try:
            with contextlib.ExitStack() as beating:
                for trial in trials:
                    beating.enter_context(heartbeat(study, trial))
                _run_batch(trials, work, ended)
        except KeyboardInterrupt:  # Ctrl-C: the trials are over, not left RUNNING
            for trial in running.values():
                _fail(work, study, trial, "interrupted")
            raise
    bar.close()
    return study


def _ask_batch(study: optuna.Study, config: StudyConfig, folder: Path) -> list[optuna.Trial]:
    """Up to ``study.batch_trials`` trials, as many as the budget allows (none: spent)."""
    trials = []
    while len(trials) < config.study.batch_trials:
        if (trial := _ask_within_budget(study, config, folder)) is None:
            break
        trials.append(trial)
    return trials


def _run_batch(
    trials: list[optuna.Trial], work: Workspace, ended: Callable[[int, LaneResult], None]
) -> None:
    """Run ``trials`` (one: :func:`run_trial`; several in lockstep,
    :func:`~ptyopt.engines.batched.run_batched`), calling ``ended(index, result)`` as
    each ends."""
    if len(trials) == 1:
        run = run_peer_trial if is_peer_plan(work.plan_values) else run_trial
        try:
            result = LaneResult(value=run(trials[0], work))
        except Exception as err:  # a trial's failure must not end the study
            result = LaneResult(error=err)
        ended(0, result)
        return
    clocks = [LaneClock() for _ in trials]
    lanes = [trial_steps(trial, work, clock) for trial, clock in zip(trials, clocks, strict=True)]
    run_batched(lanes, clocks, ended)


def _conclude(work: Workspace, study: optuna.Study, trial: optuna.Trial, result: LaneResult):
    """Tell the study how ``trial`` ended: its values, PRUNED, or FAIL with the reason."""
    err = result.error
    if err is None:
        study.tell(trial, result.value)
    elif isinstance(err, optuna.TrialPruned):
        study.tell(trial, state=State.PRUNED)
        _write_unfinished(work, trial, State.PRUNED)
    elif isinstance(err, DivergenceError):
        _fail(work, study, trial, str(err))
    else:
        details = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=3))
        _fail(work, study, trial, f"{type(err).__name__}: {err}", details)


def _fail(
    work: Workspace,
    study: optuna.Study,
    trial: optuna.Trial,
    reason: str,
    details: str | None = None,
) -> None:
    trial.set_user_attr("fail_reason", reason)
    if details:
        trial.set_user_attr("fail_traceback", details[-2000:])
    study.tell(trial, state=State.FAIL)
    _write_unfinished(work, trial, State.FAIL)


def _write_unfinished(work: Workspace, trial: optuna.Trial, state: State) -> None:
    """The folder of a pruned or failed trial: what is known of it."""
    write_unfinished_trial(
        trial_dir(work.folder, trial.number),
        work.config,
        state.name,
        trial.params,
        trial.user_attrs,
    )


def _best_so_far(study: optuna.Study) -> dict[str, Any]:
    complete = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
    if not complete:
        return {}
    if len(study.directions) > 1:
        return {"pareto": len(study.best_trials)}
    return {"best": f"{study.best_value:.4g}"}
