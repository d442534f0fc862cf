"""The study harness: Hydra composition, an in-process study with pruning and a failed
trial, resume, two worker processes on one journal, and bad configurations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import EAGER_PRUNING, TINY_STUDY
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ptyopt.errors import ConfigError
from ptyopt.paths import conf_dir
from ptyopt.study.runner import run_study, study_dir
from ptyopt.study.settings import validate

TINY = TINY_STUDY + EAGER_PRUNING
LR = "plan.engines.0.object_solver.learning_rate"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A project folder of its own (studies, simulation cache, compilation cache)."""
    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    return tmp_path


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["study=quickstart", *TINY, *overrides])


def test_in_process_study_prunes_fails_and_resumes(home):
    """Baselines: a good learning rate, a hopeless one (pruned against the first at
    iteration 2) and a diverging SGD step (FAIL, reason recorded); then TPE."""
    baselines = f"study.baseline_trials=[{{{LR}: 0.0002}}, {{{LR}: 1.0e-9}}, {{{LR}: 1.0e12}}]"
    cfg = composed(
        "study.name=tiny",
        "study.n_trials=4",
        baselines,
        "plan.engines.0.object_solver.name=sgd",
        f"study.search_space={{{LR}: {{type: float, low: 1.0e-9, high: 1.0e12, log: true}}}}",
    )
    config, plan_values = validate(cfg)
    study = run_study(config, plan_values, progress=False)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and states[0] == optuna.trial.TrialState.COMPLETE
    assert (
        states[1] == optuna.trial.TrialState.PRUNED and study.trials[1].user_attrs["pruned_at"] == 2
    )
    assert (
        states[2] == optuna.trial.TrialState.FAIL
        and "diverged" in study.trials[2].user_attrs["fail_reason"]
    )
    first = study.trials[0]
    assert 0 < first.value < 1 and set(first.user_attrs) >= {
        "metrics",
        "wall_time_s",
        "compile_time_s",
        "host",
        "trial_dir",
    }
    folder = Path(first.user_attrs["trial_dir"])
    assert {p.name for p in folder.iterdir()} == {
        "reconstruction.h5",
        "metrics.json",
        "config.yaml",
    }

    resumed = run_study(
        *validate(
            composed(
                "study.name=tiny",
                "study.n_trials=6",
                baselines,
                "plan.engines.0.object_solver.name=sgd",
                (
                    f"study.search_space={{{LR}: "
                    "{type: float, low: 1.0e-9, high: 1.0e12, log: true}}"
                ),
            )
        ),
        progress=False,
    )
    assert [t.number for t in resumed.trials] == list(range(6))
    assert [t.state for t in resumed.trials[:4]] == states


def test_two_workers_share_one_journal(home):
    """Two processes run the same command on one journal storage: together they run
    the budget exactly, with unique trial numbers and no two trials alike."""
    command = [
        sys.executable,
        "-m",
        "ptyopt",
        "study=quickstart",
        *TINY,
        "study.name=shared",
        "study.n_trials=6",
        "pruner=none",
    ]
    env = {**os.environ, "PTYOPT_HOME": str(home)}
    subprocess.run(
        [*command, "study.n_trials=1"], env=env, check=True, capture_output=True
    )  # simulate once
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir("shared") / "journal.log"))
    )
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["trial_dir"] for t in trials}) == 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["+study.n_trails=3"],
            r"study\.n_trails: Key 'n_trails' not in 'StudySettings'; allowed keys: name, n_trials",
        ),
        (["study.n_trials=0"], r"study\.n_trials: must be >= 1"),
        (["study.n_trials=many"], r"study\.n_trials: Value 'many'"),
        (
            [f"study.search_space={{{LR}: {{type: float, low: 2, high: 1}}}}"],
            r"low \(2\) must be < high \(1\)",
        ),
        (
            [f"study.search_space={{{LR}: {{type: normal, low: 0, high: 1}}}}"],
            r"type: must be one of",
        ),
        (
            ["engine=lsqml"],
            (
                r"study\.search_space\.plan\.engines\.0\.object_solver\.learning_rate"
                r" does not fit the plan"
            ),
        ),
        (["sampler.name=annealing"], r"sampler\.name: unknown sampler 'annealing'"),
        (["pruner.name=early"], r"pruner\.name: unknown pruner 'early'"),
        (
            ["objective.metrics=[nrmse,seconds]"],
            r"pruner\.name: Optuna cannot prune multi-objective studies",
        ),
        (["objective.metrics=[psnr]"], r"objective\.metrics: unknown metric 'psnr'"),
        (["dataset.optics.energy_kV=-3"], r"dataset\.optics\.energy_kV: must be > 0"),
        (["storage=postgres", "storage.url=null"], r"storage\.url: postgres storage needs a URL"),
    ],
)
def test_bad_configurations_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(composed(*overrides))


def test_search_space_path_must_name_a_plan_value():
    cfg = composed()
    with open_dict(cfg):
        cfg.study.search_space = {
            "plan.engines.0.learnin_rate": {"type": "float", "low": 0.0, "high": 1.0}
        }
    with pytest.raises(
        ConfigError,
        match=(
            r"study\.search_space\.plan\.engines\.0\.learnin_rate"
            r" does not fit the plan.*learnin_rate"
        ),
    ):
        validate(cfg)


def test_command_line_errors_are_one_paragraph(home):
    """Through the CLI: exit status 2, the key named, no traceback, nothing simulated."""
    result = subprocess.run(
        [sys.executable, "-m", "ptyopt", "study=quickstart", "sampler=gp"],
        env={**os.environ, "PTYOPT_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "ptyopt: error: sampler.name: the gp sampler needs PyTorch"
    )
    assert "Traceback" not in result.stderr and not (home / "simulations").exists()


def test_shipped_studies_are_valid():
    """Every study config validates; a top-level one is named after its file and has a
    search space or arms; member studies (sub-folders) are chosen by arms."""
    folder = conf_dir() / "study"
    names = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
    assert {
        "quickstart",
        "epie_quickstart",
        "lsqml_bench",
        "gradient_bench",
        "regularization_impact",
        "engine_comparison",
        "schedule_comparison",
        "tune/gradient",
    } <= set(names)
    for name in names:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            config, _ = validate(compose("config", overrides=[f"study={name}"]))
        if "/" not in name:
            assert config.study.name == name and bool(config.study.search_space) != bool(
                config.study.arms
            )


def test_multi_objective_study_on_sqlite(home):
    """Error and wall time as two objectives (Pareto front), on SQLite storage."""
    cfg = composed(
        "study.name=pareto",
        "study.n_trials=3",
        "study.baseline_trials=[]",
        "objective=nrmse_time",
        "pruner=none",
        "storage=sqlite",
    )
    study = run_study(*validate(cfg), progress=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert (
        len(study.directions) == 2
        and study.metric_names == ["nrmse", "seconds"]
        and study.best_trials
    )
    assert (study_dir("pareto") / "study.db").exists()
    resolved = (Path(study.trials[0].user_attrs["trial_dir"]) / "config.yaml").read_text()
    assert "dataset:" in resolved and "params:" in resolved and "storage:" in resolved


def test_help_and_cfg_job_from_any_directory(tmp_path):
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120}
    shown = subprocess.run(
        [sys.executable, "-m", "ptyopt", "--cfg", "job", "engine=lsqml", "study.n_trials=50"], **run
    )
    assert (
        shown.returncode == 0 and "kind: lsqml" in shown.stdout and "n_trials: 50" in shown.stdout
    )
    helped = subprocess.run([sys.executable, "-m", "ptyopt", "--help"], **run)
    assert (
        helped.returncode == 0
        and "regularization_impact" in helped.stdout
        and "study/tune: epie, gradient, lsqml" in helped.stdout
        and "report" in helped.stdout
    )


def test_grid_study_runs_its_whole_grid(home):
    """Every grid point runs once (the per-ask reseeding must not reshuffle the grid),
    and the study ends when the grid is exhausted (Optuna calls ``study.stop()``,
    which raises outside ``optimize``)."""
    space = (
        f"+study.search_space={{{LR}: "
        "{type: categorical, choices: [0.003, 0.01, 0.03, 0.1, 0.3]}}"
    )
    cfg = composed(
        "study.name=grid",
        "study.n_trials=5",
        "sampler=grid",
        "pruner=none",
        "~study.baseline_trials",
        "~study.search_space",
        space,
        "plan.engines.0.iterations=2",
    )
    study = run_study(*validate(cfg), progress=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert sorted(t.params[LR] for t in study.trials) == [
        0.003,
        0.01,
        0.03,
        0.1,
        0.3,
    ]  # each point once
