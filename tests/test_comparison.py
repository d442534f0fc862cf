"""Comparison studies (``study.arms``): composing arms from the shipped configs, running
them shrunk to the tiny dataset, the convergence curves, the comparison report, and the
tests of the phaser paper's findings on sweeps with known answers."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_STUDY
from hydra import compose, initialize_config_dir

from ptyopt.errors import ConfigError
from ptyopt.paths import conf_dir
from ptyopt.study.arms import arms_of
from ptyopt.study.comparison import ArmResult, finding, write_comparison_report
from ptyopt.study.runner import run_study
from ptyopt.study.settings import validate


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    return tmp_path


def parent(study: str, *overrides: str):
    """The validated parent config and its arms, with ``overrides`` as the parent's
    command line (forwarded to every arm)."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cli = [f"study={study}", *overrides]
        config, _ = validate(compose("config", overrides=cli))
        return config, arms_of(config, cli)


@pytest.mark.parametrize(
    "study", ["engine_comparison", "schedule_comparison", "regularization_impact"]
)
def test_shipped_comparisons_compose(study):
    """Every arm of the shipped comparisons composes and validates; tuned arms share the
    parent's budget, names are <parent>-<arm>, and the arms' own overrides take effect."""
    config, arms = parent(study)
    assert len(arms) >= 4
    for arm in arms:
        assert arm.config.study.name == f"{study}-{arm.name}" and arm.config.study.search_space
        if arm.config.sampler.name == "tpe":
            assert arm.config.study.n_trials == config.study.n_trials
    if study == "engine_comparison":
        doses = {a.config.dataset.dose_e_per_A2 for a in arms if a.config.dataset.name == "thick"}
        assert doses == {1e4, 1e5, 1e6}
        assert {a.plan_values["engines"][0]["kind"] for a in arms} == {"gradient", "epie", "lsqml"}
    if study == "schedule_comparison":
        assert [
            a.plan_values["engines"][0]["object_solver"]["learning_rate"]["kind"] for a in arms
        ] == ["constant", "cosine", "warmup_cosine", "exponential"]
    if study == "regularization_impact":
        grid = next(a for a in arms if a.name == "l2_x_tikhonov")
        assert grid.config.study.n_trials == 25 and len(grid.config.study.search_space) == 2


def test_parent_command_line_reaches_every_arm():
    """The parent's overrides apply to each arm after the arm's own, except the study
    choice and name."""
    _, arms = parent(
        "schedule_comparison", "study.n_trials=3", "dataset.scan.shape=[4,4]", "study.name=mine"
    )
    assert all(
        a.config.study.n_trials == 3 and tuple(a.config.dataset.scan.shape) == (4, 4) for a in arms
    )
    assert [a.config.study.name for a in arms] == [f"mine-{a.name}" for a in arms]


@pytest.mark.parametrize(
    "arms, message",
    [
        ("{a: ['dataset=thick']}", "study.arms.a: must choose its member study"),
        ("{a: ['study=no_such_study']}", "study.arms.a: "),
        ("{a: ['study=schedule_comparison']}", "arms cannot nest"),
        ("{a: 3}", "study.arms.a: must be a non-empty list"),
    ],
)
def test_bad_arms_are_rejected_before_any_run(arms, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parent("schedule_comparison", f"++study.arms={arms}")


def test_arms_and_a_search_space_exclude_each_other():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config", overrides=["study=quickstart", "++study.arms={a: ['study=quickstart']}"]
        )
    with pytest.raises(
        ConfigError, match="study.search_space: a study with arms has no search space"
    ):
        validate(cfg)


def test_shrunk_regularization_study_runs_and_reports(home):
    """The shipped regularization study shrunk to the tiny dataset, 2 values per sweep:
    every trial keeps a convergence curve scored every 2 iterations whose last point is
    the trial's final score and whose lowest is its best iterate's, and the report has
    the arms (final and best-iterate scores), sweeps, findings and grid."""
    config, arms = parent("regularization_impact", *TINY_STUDY, "study.n_trials=2")
    results = [
        ArmResult(arm, run_study(arm.config, arm.plan_values, progress=False)) for arm in arms
    ]
    for result in results:
        for trial in result.trials:
            curve = trial.user_attrs["curve"]
            assert curve["iteration"] == [2, 4, 6, 8, 10]
            assert curve["nrmse"][-1] == pytest.approx(
                trial.user_attrs["metrics"]["nrmse"], rel=1e-6
            )
            assert curve["nrmse"] == [trial.intermediate_values[i] for i in curve["iteration"]]
            best = trial.user_attrs["best_iterate"]
            assert best["metrics"]["nrmse"] == min(curve["nrmse"])
            assert best["iteration"] == curve["iteration"][int(np.argmin(curve["nrmse"]))]
            assert np.all(np.diff(curve["seconds"]) > 0)
    out = home / "report"
    written = write_comparison_report(
        "regularization_impact", results, out, "python -m ptyopt report study=regularization_impact"
    )
    assert {p.name for p in written} >= {
        "arms.csv",
        "sweeps.csv",
        "summary.md",
        "convergence.png",
        "best_reconstructions.png",
        "sweep_epsilon.png",
        "grid_l2_x_tikhonov.png",
    }
    table = pd.read_csv(out / "arms.csv")
    assert list(table["arm"]) == [a.name for a in arms] and (table["complete"] == 2).all()
    assert (table["objective_iterate"] == "final").all() and (
        table["best_nrmse"] <= table["nrmse"]
    ).all()
    for result, row in zip(results, table.itertuples(), strict=True):
        best = result.best.user_attrs["best_iterate"]
        assert (row.best_iteration, row.best_nrmse) == (best["iteration"], best["metrics"]["nrmse"])
    sweeps = pd.read_csv(out / "sweeps.csv")
    assert {"final_nrmse", "best_iteration", "best_nrmse"} <= set(sweeps.columns)
    assert (sweeps["best_nrmse"] <= sweeps["final_nrmse"]).all()
    assert sweeps.groupby("arm").size().to_dict() == {
        "epsilon": 2,
        "epsilon_sgd": 2,
        "object_l2": 2,
        "object_tikhonov": 2,
        "layer_tikhonov": 2,
        "layer_tikhonov_sgd": 2,
    }
    summary = (out / "summary.md").read_text()
    assert "`objective_iterate`" in summary and "best_iteration" in summary
    assert "- `mse` [(V·Å)²]: " in summary and "- `frc_resolution_A` [Å]: " in summary
    assert "1.0 is the starting object" in summary and "- `best_params`: " in summary
    names = table["best_params"].str.findall(r"([\w.]+)=").sum()
    assert "object_l2.weight" in names and not [n for n in names if n[0].isdigit()]
    assert (
        "Findings of the phaser paper" in summary
        and "regenerate: `python -m ptyopt report study=regularization_impact`" in summary
    )


def sweep(values, iterations, finals):
    """Rows of one sweep as :func:`ptyopt.study.comparison.sweep_rows` makes them."""
    return pd.DataFrame(
        {
            "arm": "a",
            "parameter": "regularizers.layer_tikhonov.weight",
            "value": values,
            "final_nrmse": finals,
            "iterations_to_threshold": iterations,
        }
    )


def test_rate_finding_on_known_sweeps():
    """phaser's rate finding: moderate values fastest, the largest never converges."""
    values = [1.0, 10.0, 100.0, 1000.0, 1e4]
    holds = finding(sweep(values, [40, 20, 10, 30, math.nan], [0.30, 0.30, 0.29, 0.31, 0.9]))
    assert holds["verdict"] == "reproduced" and holds["fastest_value"] == "100"
    tie = finding(sweep(values, [40, 20, 10, 10, 10], [0.30, 0.30, 0.29, 0.31, 0.3]))
    assert tie["checks"]["moderate value fastest"] is False  # the largest value is as fast
    monotonic = finding(sweep(values, [50, 40, 30, 20, 10], [0.3] * 5))
    assert (
        monotonic["checks"]["moderate value fastest"] is False
        and monotonic["checks"]["largest value prevents convergence"] is False
    )
    assert monotonic["verdict"] == "partly"


def test_quality_finding_on_known_sweeps():
    """phaser's quality finding: same rate, interior optimum of the final error."""
    values = [1.0, 10.0, 100.0, 1000.0, 1e4]
    rows = sweep(values, [20, 20, 22, 20, 25], [0.40, 0.32, 0.25, 0.30, 0.45]).assign(
        parameter="regularizers.object_l2.weight"
    )
    assert finding(rows)["verdict"] == "reproduced" and finding(rows)["best_final_value"] == 100.0
    flat = rows.assign(final_nrmse=[0.30, 0.30, 0.30, 0.301, 0.30])
    assert finding(flat)["checks"]["interior optimum of the final error"] is False


def test_report_of_a_comparison_that_never_ran_says_so(home):
    """`report` on a comparison none of whose arms has run: one line, exit status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "ptyopt", "report", "study=schedule_comparison"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PTYOPT_HOME": str(home)},
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "ptyopt: error: study.name: no arm of 'schedule_comparison' has been run; "
        "run python -m ptyopt study=schedule_comparison first"
    )
