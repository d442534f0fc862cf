"""Optuna pieces built from the validated settings: sampler, pruner, storage, and the
parameters a trial suggests from the search space."""

from __future__ import annotations

import copy
import importlib.util
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalStorage

from ptyopt.errors import ConfigError
from ptyopt.study.journal import InterruptSafeJournalFile, repair_journal
from ptyopt.study.settings import PrunerSettings, SamplerSettings, StorageSettings


def suggest(trial: optuna.trial.BaseTrial, search_space: dict[str, dict]) -> dict[str, Any]:
    """Parameter values for ``trial``, named by their dotted plan paths."""
    params: dict[str, Any] = {}
    for path, spec in search_space.items():
        if spec["type"] == "categorical":
            params[path] = trial.suggest_categorical(path, list(spec["choices"]))
        elif spec["type"] == "int":
            params[path] = trial.suggest_int(
                path,
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step") or 1),
                log=bool(spec.get("log")),
            )
        else:
            params[path] = trial.suggest_float(
                path,
                float(spec["low"]),
                float(spec["high"]),
                step=spec.get("step"),
                log=bool(spec.get("log")),
            )
    return params


def _grid(search_space: dict[str, dict]) -> dict[str, list]:
    grid = {}
    for path, spec in search_space.items():
        if spec["type"] == "categorical":
            grid[path] = list(spec["choices"])
        elif spec.get("step") is not None or spec["type"] == "int":
            step = spec.get("step") or 1
            values = np.arange(spec["low"], spec["high"] + step / 2, step)
            grid[path] = (
                [int(v) for v in values] if spec["type"] == "int" else [float(v) for v in values]
            )
        else:
            raise ConfigError(
                "sampler.name: the grid sampler needs a step or choices for every parameter; "
                f"study.search_space.{path} has neither"
            )
    return grid


class BudgetedGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is exhausted:
    that call raises outside ``study.optimize``, and ptyopt's trial budget ends the
    study instead."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Any,
    ) -> None:
        return None


def grid_size(search_space: dict[str, dict]) -> int:
    """The number of points of the grid a grid sampler walks over ``search_space``."""
    return int(np.prod([len(values) for values in _grid(search_space).values()]))


def make_sampler(
    settings: SamplerSettings, search_space: dict[str, dict], seed: int, study_seed: int
) -> optuna.samplers.BaseSampler:
    """The sampler called ``settings.name``, seeded with ``seed`` (the runner draws one
    per ask); the grid sampler takes ``study_seed``, since its seed fixes the order of
    the grid points, which every ask of a study must share."""
    name = settings.name
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=settings.n_startup_trials, multivariate=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return BudgetedGridSampler(_grid(search_space), seed=study_seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError(
                "sampler.name: the cmaes sampler needs the 'cmaes' package (pip install cmaes)"
            )
        return optuna.samplers.CmaEsSampler(seed=seed)
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(
            "sampler.name: the gp sampler needs PyTorch, which is not installed "
            "(pip install torch), or choose tpe"
        )
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=settings.n_startup_trials)


def make_pruner(settings: PrunerSettings, max_iterations: int) -> optuna.pruners.BasePruner:
    """The pruner called ``settings.name``; steps are reconstruction iterations."""
    if settings.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_warmup_steps
        )
    if settings.name == "percentile":
        return optuna.pruners.PercentilePruner(
            settings.percentile,
            n_startup_trials=settings.n_startup_trials,
            n_warmup_steps=settings.n_warmup_steps,
        )
    if settings.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=settings.min_resource,
            max_resource=max_iterations,
            reduction_factor=settings.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _with_password(url: str, variable: str) -> str:
    """``url`` with the password from the environment variable ``variable`` inserted."""
    parts = urlsplit(url)
    password = os.environ.get(variable)
    if password is None or parts.password is not None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


#: Optuna's retry of a failed trial (renamed in Optuna 4.9, the old name deprecated).
_OPTUNA_RETRY = getattr(
    optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback
)


class RetryTrial:
    """Retry a failed trial: Optuna's retry (a WAITING copy with the same parameters and
    user attributes), the failure's ``fail_reason`` kept as ``retried_after`` (and its
    ``fail_traceback`` left out), so that a retry that completes shows no failure."""

    def __init__(self, max_retry: int) -> None:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8
            warnings.filterwarnings(
                "ignore",
                message="RetryHeartbeatStaleTrialCallback is experimental",
                category=optuna.exceptions.ExperimentalWarning,
            )
            self._retry = _OPTUNA_RETRY(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_traceback"}
        if "fail_reason" in attrs:
            attrs["retried_after"] = attrs.pop("fail_reason")
        failed = copy.deepcopy(trial)
        failed.user_attrs = attrs
        self._retry(study, failed)


def make_storage(settings: StorageSettings, study_dir: Path) -> optuna.storages.BaseStorage:
    """Journal file (default), SQLite or PostgreSQL storage; RDB storages get heartbeats
    and retry failed trials. A journal's damaged last record is repaired first
    (:func:`ptyopt.study.journal.repair_journal`), and its appends are never cut short by
    a Ctrl-C (:class:`~ptyopt.study.journal.InterruptSafeJournalFile`)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    if settings.kind == "journal":
        journal = study_dir / "journal.log"
        repair_journal(journal)
        return JournalStorage(InterruptSafeJournalFile(str(journal)))
    url = settings.url or f"sqlite:///{study_dir / 'study.db'}"
    if settings.kind == "postgres":
        url = _with_password(url, settings.password_env)
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
                warnings.filterwarnings(
                    "ignore",
                    message="Argument ``heartbeat_interval`` is an experimental feature",
                    category=optuna.exceptions.ExperimentalWarning,
                )
                return RDBStorage(
                    url,
                    heartbeat_interval=settings.heartbeat_interval_s,
                    grace_period=settings.grace_period_s,
                    heartbeat_stale_trial_callback=RetryTrial(settings.max_retry),
                )
        except ImportError:
            raise ConfigError(
                f"storage.kind: {settings.kind} storage needs its database driver; "
                "install it with pip install 'ptyopt[postgres]'"
            ) from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            # Workers opening a fresh database together race to create Optuna's tables
            # (optuna/optuna#1092): the losers retry once the winner has made them.
            if attempt == _OPEN_ATTEMPTS - 1:
                raise _storage_error(url, err, settings) from None
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))
        except sqlalchemy.exc.SQLAlchemyError as err:
            raise _storage_error(url, err, settings) from None
    raise AssertionError("unreachable")


_OPEN_ATTEMPTS = 6


def _storage_error(url: str, err: Exception, settings: StorageSettings) -> ConfigError:
    """One line naming storage.url, the reason, and (for a refused login) where the
    password comes from; the password itself is not shown."""
    reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
    shown = urlsplit(url)._replace(netloc=urlsplit(url).netloc.split("@")[-1]).geturl()
    hint = (
        f"; the password comes from ${settings.password_env}"
        if "password" in reason or "authentication" in reason
        else ""
    )
    return ConfigError(f"storage.url: cannot open the study storage at {shown} ({reason}){hint}")
