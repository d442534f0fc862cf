"""Comparison studies: a study whose ``study.arms`` maps arm names to Hydra overrides.

Each arm is composed like a command line of its own: the arm's overrides (which choose
a member study, ``study=tune/epie``, and may change the dataset or the plan), then the
overrides given to the parent on its command line, then the arm's study name
``<parent>-<arm>``. Every arm gets the parent's ``n_trials`` unless its overrides set
``study.n_trials`` (a grid sweep: its grid size), so tuned arms share one budget. Each
arm is an ordinary study with its own folder and storage entry; the parent only runs
them in order and reports them side by side (:mod:`ptyopt.study.comparison`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from ptyopt.errors import ConfigError, hydra_message
from ptyopt.paths import conf_dir
from ptyopt.study.components import make_sampler
from ptyopt.study.settings import StudyConfig, validate


@dataclass(frozen=True)
class Arm:
    """One arm: its name, its overrides and its validated configuration."""

    name: str
    overrides: tuple[str, ...]
    config: StudyConfig
    plan_values: dict


def arm_study_name(parent: str, arm: str) -> str:
    """The study name of ``arm`` of the comparison ``parent``."""
    return f"{parent}-{arm}"


def _forwarded(cli_overrides: Sequence[str]) -> list[str]:
    """The parent's command-line overrides that apply to every arm (not the choice of
    study or its name)."""
    return [
        o
        for o in cli_overrides
        if not o.lstrip("+~").startswith(("study=", "study.name=", "study.arms"))
    ]


def _compose(overrides: list[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def arms_of(config: StudyConfig, cli_overrides: Sequence[str] = ()) -> list[Arm]:
    """Compose and validate every arm of the comparison ``config`` (in config order);
    ``cli_overrides`` are the parent's own command-line overrides. A bad arm raises a
    ConfigError naming it before anything runs."""
    arms = []
    for name, own in config.study.arms.items():
        overrides = [
            f"study.n_trials={config.study.n_trials}",
            *own,
            *_forwarded(cli_overrides),
            f"study.name={arm_study_name(config.study.name, name)}",
        ]
        try:
            arm_config, plan_values = validate(_compose(overrides))
            make_sampler(
                arm_config.sampler,
                arm_config.study.search_space,
                arm_config.study.seed,
                arm_config.study.seed,
            )  # a grid needs steps; cmaes/gp their packages
        except ConfigError as err:
            raise ConfigError(f"study.arms.{name}: {err}") from None
        except Exception as err:  # Hydra's own errors: unknown option, bad override syntax
            raise ConfigError(f"study.arms.{name}: {hydra_message(err)}") from None
        if arm_config.study.arms:
            raise ConfigError(
                f"study.arms.{name}: its member study has arms of its own; arms cannot nest"
            )
        arms.append(Arm(name, tuple(own), arm_config, plan_values))
    return arms
