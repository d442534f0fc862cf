"""The study configuration: a typed schema for the composed Hydra config and its
validation, before any compute. Every error is a :class:`ConfigError` naming the key.

Top-level keys: ``dataset`` (a dataset recipe), ``dataset_file`` (``null``, or the path of
an existing dataset HDF5 file to use instead of simulating; a study needs its ground
truth, ``reconstruct`` does not), ``plan`` (a reconstruction plan, from the ``engine``
config group), ``out`` (the folder ``reconstruct`` writes to; ``null``:
``reconstructions/<dataset name>/`` in the project), ``study``, ``objective``,
``sampler``, ``pruner``, ``storage``. Search-space entries address any plan value by a
dotted path, e.g. ``plan.engines.0.object_solver.learning_rate``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from ptyopt.data.recipe import (
    DatasetRecipe,
    nominal_optics,
    recipe_from_mapping,
    recipe_sampling,
)
from ptyopt.errors import ConfigError, UnknownKeyError
from ptyopt.peers.base import PeerPlan
from ptyopt.peers.study import check_study as check_peer_study
from ptyopt.peers.study import is_peer_plan, parse_peer_plan
from ptyopt.plan import Plan, check_bandlimit, parse_plan
from ptyopt.schema import to_dataclass
from ptyopt.truth_free import SPLIT_FRC_SCORES, TRUTH_FREE_DIRECTIONS

if TYPE_CHECKING:
    import optuna

METRIC_DIRECTIONS = {
    "nrmse": "minimize",
    "mse": "minimize",
    "ssim": "maximize",
    "frc_resolution_A": "minimize",
    "frc_halfbit_resolution_A": "minimize",
    "frc_area": "maximize",
    "depth_error_rms_A": "minimize",
    "depth_fwhm_mean_A": "minimize",
    "seconds": "minimize",
    **TRUTH_FREE_DIRECTIONS,
}
#: Metrics that need no ground truth (:mod:`ptyopt.truth_free`; ``seconds`` too).
TRUTH_FREE_METRICS = (*TRUTH_FREE_DIRECTIONS, "seconds")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2", "gp")
PRUNERS = ("median", "percentile", "hyperband", "none")
STORAGES = ("journal", "sqlite", "postgres")
PARAMETER_TYPES = ("float", "int", "categorical")
ITERATES = ("final", "best")
#: Study user attribute: the ``objective.iterate`` the study is run with.
OBJECTIVE_ITERATE = "objective_iterate"


@dataclass
class StudySettings:
    """name: study name (its folder ``studies/<name>/``). n_trials: global trial budget
    over all workers. seed: sampler seed. score_every: iterations between intermediate
    scores (pruning). search_space: dotted plan path → {type, low, high, log, step,
    choices}. baseline_trials: parameter sets (path → value) enqueued first.
    batch_trials: trials asked at once and run in lockstep, those of equal shapes as one
    vmapped compiled step (:mod:`ptyopt.engines.batched`); 1: one at a time."""

    name: str = "quickstart"
    n_trials: int = 8
    seed: int = 0
    score_every: int = 5
    batch_trials: int = 1
    search_space: dict[str, Any] = field(default_factory=dict)
    baseline_trials: list[Any] = field(default_factory=list)
    arms: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveSettings:
    """metrics: what each trial returns, one objective each (several: multi-objective);
    directions: ``minimize``/``maximize`` per metric (``null``: the metric's natural one);
    iterate: which scored iterate of a trial gives its values, ``final`` (the end of the
    plan) or ``best`` (the scored iterate best in the first metric; every metric is then
    taken from that iterate, ``seconds`` being the reconstruction time up to it).

    Scores without ground truth (:mod:`ptyopt.truth_free`): validation_fraction: the
    share 0 ≤ f < 0.5 of the scan's positions held out of every update, drawn with
    validation_seed, to score ``validation_error`` on (0: none, every position is used);
    split_frc: reconstruct each trial's plan also on two interleaved halves of the scan
    for ``split_frc_resolution_A`` and ``split_frc_area`` (two more reconstructions per
    trial, timed apart from its ``seconds``)."""

    metrics: list[str] = field(default_factory=lambda: ["nrmse"])
    directions: Any = None
    iterate: str = "final"
    validation_fraction: float = 0.0
    validation_seed: int = 0
    split_frc: bool = False


@dataclass
class SamplerSettings:
    """Optuna sampler by name; ``n_startup_trials`` random trials first (TPE, GP)."""

    name: str = "tpe"
    n_startup_trials: int = 5


@dataclass
class PrunerSettings:
    """Optuna pruner by name. median/percentile: ``n_startup_trials`` unpruned trials,
    no pruning before ``n_warmup_steps`` iterations, ``percentile``; hyperband:
    ``min_resource`` iterations and ``reduction_factor``."""

    name: str = "median"
    n_startup_trials: int = 2
    n_warmup_steps: int = 5
    percentile: float = 50.0
    min_resource: int = 5
    reduction_factor: int = 3


@dataclass
class StorageSettings:
    """journal: a file ``studies/<name>/journal.log`` (default, many processes on one
    machine); sqlite: ``url`` or ``studies/<name>/study.db``; postgres: ``url``
    (``postgresql://user@host:port/db``) with the password from ``password_env``.
    RDB storages use heartbeats (a dead worker's trial fails after ``grace_period_s``)
    and retry failed trials up to ``max_retry`` times."""

    kind: str = "journal"
    url: Any = None
    password_env: str = "PTYOPT_DB_PASSWORD"
    heartbeat_interval_s: int = 30
    grace_period_s: int = 90
    max_retry: int = 2


@dataclass
class StudyConfig:
    """The whole composed configuration (see module docstring)."""

    dataset: DatasetRecipe = field(default_factory=DatasetRecipe)
    dataset_file: Any = None
    plan: Any = None
    out: Any = None
    publish: bool = False
    study: StudySettings = field(default_factory=StudySettings)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    pruner: PrunerSettings = field(default_factory=PrunerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)


def _is_name(text: str) -> bool:
    """Letters, digits, '-' and '_' only (study and arm names become folder names)."""
    return str(text).replace("-", "").replace("_", "").isalnum()


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def set_path(tree: dict, path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path`` in nested dicts/lists (list items by index),
    creating missing mapping levels; ``path`` starts below the tree's root."""
    parts = path.split(".")
    node = tree
    for index, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) else part
        if isinstance(node, list):
            _require(
                0 <= key < len(node),
                "study.search_space",
                (
                    f"{path}: index {key} is out of range "
                    f"({len(node)} items at {'.'.join(parts[: index + 1])})"
                ),
            )
        elif key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
        _require(
            isinstance(node, (dict, list)),
            "study.search_space",
            f"{path}: {'.'.join(parts[: index + 1])} is a value, not a section",
        )
    last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
    node[last] = value


def with_params(plan_values: dict, params: dict[str, Any]) -> dict:
    """A copy of the plan values with each ``plan.…`` parameter set at its path."""
    tree = copy.deepcopy(plan_values)
    for path, value in params.items():
        set_path(tree, path.removeprefix("plan."), value)
    return tree


def plan_with(plan_values: dict, params: dict[str, Any]) -> Plan | PeerPlan:
    """The validated plan with each ``plan.…`` parameter set at its path: ours, or a
    peer package's (:mod:`ptyopt.peers.study`)."""
    values = with_params(plan_values, params)
    if is_peer_plan(values):
        return parse_peer_plan(values)[1]
    return parse_plan(values)


def _extremes(spec: dict) -> list[tuple[str, Any]]:
    """The values of a (checked) search-space parameter that the plan must accept for
    every suggestion to be valid: each choice, or the low and the highest reachable
    bound (with a step, the last point of the grid), named for error messages."""
    if spec["type"] == "categorical":
        return [(f"choice {choice!r}", choice) for choice in spec["choices"]]
    low, high, step = spec["low"], spec["high"], spec.get("step")
    if step:
        high = low + math.floor((high - low) / step + 1e-9) * step
    if spec["type"] == "int":
        low, high = int(low), int(high)
    return [(f"low {low!r}", low), (f"high {high!r}", high)]


def _check_parameter(path: str, spec: Any) -> None:
    key = f"study.search_space.{path}"
    _require(
        path.startswith("plan."),
        key,
        "search-space paths address plan values and start with 'plan.'",
    )
    _require(
        isinstance(spec, dict),
        key,
        f"must be a mapping {{type, low, high, log, step, choices}}, got {spec!r}",
    )
    kind = spec.get("type")
    _require(
        kind in PARAMETER_TYPES,
        f"{key}.type",
        f"must be one of {list(PARAMETER_TYPES)}, got {kind!r}",
    )
    allowed = (
        {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    )
    unknown = set(spec) - allowed
    _require(
        not unknown,
        key,
        f"unknown key(s) {sorted(unknown)} for a {kind} parameter; allowed: {sorted(allowed)}",
    )
    if kind == "categorical":
        _require(
            isinstance(spec.get("choices"), list) and len(spec["choices"]) >= 1,
            f"{key}.choices",
            "must be a non-empty list",
        )
        return
    for bound in ("low", "high"):
        _require(
            isinstance(spec.get(bound), (int, float))
            and not isinstance(spec.get(bound), bool)
            and math.isfinite(spec[bound]),
            f"{key}.{bound}",
            f"must be a finite number, got {spec.get(bound)!r}",
        )
    _require(
        spec["low"] < spec["high"], key, f"low ({spec['low']}) must be < high ({spec['high']})"
    )
    if spec.get("log"):
        _require(
            spec["low"] > 0,
            f"{key}.low",
            f"must be > 0 for a log-uniform parameter, got {spec['low']}",
        )
        _require(spec.get("step") is None, key, "log and step cannot be combined")
    if kind == "int":
        _require(
            all(float(spec[b]).is_integer() for b in ("low", "high")),
            key,
            "low and high of an int parameter must be integers",
        )


def _check_arms(s: StudySettings) -> None:
    for arm, overrides in s.arms.items():
        key = f"study.arms.{arm}"
        _require(_is_name(arm), key, "arm names use letters, digits, '-' and '_'")
        _require(
            isinstance(overrides, list)
            and overrides
            and all(isinstance(o, str) and "=" in o for o in overrides),
            key,
            (
                "must be a non-empty list of Hydra overrides such as 'study=tune/gradient', "
                f"got {overrides!r}"
            ),
        )
        _require(
            any(o.startswith("study=") for o in overrides),
            key,
            "must choose its member study with 'study=<name>'",
        )
    _require(
        not (s.arms and (s.search_space or s.baseline_trials)),
        "study.search_space",
        "a study with arms has no search space of its own; each arm's member study declares one",
    )


def validate(values: DictConfig, study: bool = True) -> tuple[StudyConfig, dict]:
    """Typed, validated configuration and the plan as a plain dict (base for trials).
    ``study=False`` (one reconstruction) checks the dataset, the plan and ``out`` only,
    not the study's search space, objective, sampler, pruner or storage."""
    config = to_dataclass(StudyConfig, values)
    config.dataset = recipe_from_mapping(OmegaConf.structured(config.dataset))
    _require(
        config.plan is not None, "plan", "no reconstruction plan: choose one with engine=<name>"
    )
    plan_values = (
        OmegaConf.to_container(OmegaConf.create(config.plan))
        if not isinstance(config.plan, dict)
        else dict(config.plan)
    )
    plan = plan_with(plan_values, {})
    if isinstance(plan, Plan) and config.dataset_file is None:  # a file's: once it is read
        sampling = recipe_sampling(config.dataset)
        semiangle = plan.probe.semiangle_mrad or nominal_optics(config.dataset).semiangle_mrad
        check_bandlimit(plan.bandlimit, sampling.max_angle_mrad, semiangle)
    _require(
        config.out is None or isinstance(config.out, str),
        "out",
        f"must be a folder path or null, got {config.out!r}",
    )
    _check_validation_fraction(config.objective)  # reconstruct holds out positions too
    if study:
        _validate_study(config, plan_values)
    return config, plan_values


def _validate_study(config: StudyConfig, plan_values: dict) -> None:
    """The study's own settings, its search space and baselines against the plan."""
    s = config.study
    _require(_is_name(s.name), "study.name", f"use letters, digits, '-' and '_', got {s.name!r}")
    _require(s.n_trials >= 1, "study.n_trials", f"must be >= 1, got {s.n_trials}")
    _require(s.score_every >= 1, "study.score_every", f"must be >= 1, got {s.score_every}")
    _require(s.batch_trials >= 1, "study.batch_trials", f"must be >= 1, got {s.batch_trials}")
    _check_arms(s)
    if is_peer_plan(plan_values):
        check_peer_study(config)
    for path, spec in s.search_space.items():
        _check_parameter(path, spec)
        for which, value in _extremes(spec):
            try:
                plan_with(plan_values, {path: value})
            except UnknownKeyError as err:
                raise ConfigError(
                    f"study.search_space.{path} does not fit the plan (engine): {err}"
                ) from None
            except ConfigError as err:  # the plan refuses a value the study may suggest
                raise ConfigError(f"{err} (study.search_space.{path}: {which})") from None
    for index, baseline in enumerate(s.baseline_trials):
        _require(
            isinstance(baseline, dict) and set(baseline) <= set(s.search_space),
            f"study.baseline_trials[{index}]",
            (
                "must map search-space paths to values; unknown: "
                f"{sorted(set(baseline or {}) - set(s.search_space))}"
            ),
        )
        plan_with(plan_values, baseline)
    o = config.objective
    _require(len(o.metrics) >= 1, "objective.metrics", "must name at least one metric")
    for metric in o.metrics:
        _require(
            metric in METRIC_DIRECTIONS,
            "objective.metrics",
            f"unknown metric {metric!r}; choose from {sorted(METRIC_DIRECTIONS)}",
        )
    _require(
        o.iterate in ITERATES,
        "objective.iterate",
        f"must be one of {list(ITERATES)}, got {o.iterate!r}",
    )
    _require(
        o.iterate == "final" or o.metrics[0] != "seconds",
        "objective.iterate",
        "best picks the iterate by the first metric, which must score the reconstruction, "
        "not seconds (they only grow along a run)",
    )
    _check_truth_free(o)
    if o.directions is not None:
        _require(
            list(o.directions)
            and len(o.directions) == len(o.metrics)
            and set(o.directions) <= {"minimize", "maximize"},
            "objective.directions",
            f"must list minimize/maximize for each of {list(o.metrics)}",
        )
    _require(
        config.sampler.name in SAMPLERS,
        "sampler.name",
        f"unknown sampler {config.sampler.name!r}; choose one of {list(SAMPLERS)}",
    )
    _require(
        config.pruner.name in PRUNERS,
        "pruner.name",
        f"unknown pruner {config.pruner.name!r}; choose one of {list(PRUNERS)}",
    )
    _require(
        len(o.metrics) == 1 or config.pruner.name == "none",
        "pruner.name",
        "Optuna cannot prune multi-objective studies; use pruner=none",
    )
    _require(
        config.storage.kind in STORAGES,
        "storage.kind",
        f"unknown storage {config.storage.kind!r}; choose one of {list(STORAGES)}",
    )
    _require(
        config.storage.kind != "postgres" or bool(config.storage.url),
        "storage.url",
        "postgres storage needs a URL such as postgresql://user@host:5432/db",
    )


def _check_validation_fraction(o: ObjectiveSettings) -> None:
    """``objective.validation_fraction``: a share of the positions in [0, 0.5)."""
    fraction = o.validation_fraction
    _require(
        isinstance(fraction, (int, float))
        and not isinstance(fraction, bool)
        and 0 <= fraction < 0.5,
        "objective.validation_fraction",
        f"must be a number with 0 <= f < 0.5 (the share of positions held out), got {fraction!r}",
    )


def _check_truth_free(o: ObjectiveSettings) -> None:
    """The settings of the scores without ground truth against the objective's metrics."""
    _check_validation_fraction(o)
    _require(
        "validation_error" not in o.metrics or o.validation_fraction > 0,
        "objective.validation_fraction",
        "objective validation_error needs held-out positions: set it > 0, e.g. 0.1",
    )
    split = [m for m in o.metrics if m in SPLIT_FRC_SCORES]
    _require(
        not split or o.split_frc is True,
        "objective.split_frc",
        f"objective {split[0] if split else ''} needs the split-data reconstructions: "
        "set objective.split_frc=true",
    )
    _require(
        not split or o.iterate == "final",
        "objective.iterate",
        f"{split[0] if split else ''} scores the end of the plan only; use objective.iterate=final",
    )


def directions(config: StudyConfig) -> list[str]:
    """The optimisation direction of each objective."""
    return list(
        config.objective.directions or [METRIC_DIRECTIONS[m] for m in config.objective.metrics]
    )


def objective_iterate(study: optuna.Study) -> str:
    """The ``objective.iterate`` that ``study`` was run with (``final`` for studies that
    predate the setting, when the final iterate was the only one)."""
    return study.user_attrs.get(OBJECTIVE_ITERATE, "final")
