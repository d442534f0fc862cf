"""``python -m ptyopt apply``: a study's best plan reconstructs other data. The best
trial is chosen as Optuna ranks it (checked against the study's own values), its plan
is the one it ran, and ``objective.iterate=best`` stops it at the best iterate."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import h5py
import optuna
import pytest
from conftest import TINY_STUDY

from ptyopt.data.file import write_dataset
from ptyopt.errors import ConfigError
from ptyopt.reconstruction.apply import best_plan, stopped_at
from ptyopt.study.settings import OBJECTIVE_ITERATE

LR = "plan.engines.0.object_solver.learning_rate"
PLAN = {
    "engines": [
        {"kind": "gradient", "iterations": 6, "group_size": 4},
        {"kind": "lsqml", "iterations": 4},
    ]
}


def run(home, *arguments: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PTYOPT_CACHE", "PTYOPT_JAX_CACHE")}
    env["PTYOPT_HOME"] = str(home)
    command = [sys.executable, "-m", "ptyopt", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def in_memory_study(directions, trials, iterate="final") -> optuna.Study:
    """A study holding ``trials`` [(values, params, user attrs)] as COMPLETE trials."""
    study = optuna.create_study(directions=directions)
    study.set_user_attr(OBJECTIVE_ITERATE, iterate)
    distribution = optuna.distributions.FloatDistribution(1e-4, 100.0, log=True)
    for values, params, attrs in trials:
        study.add_trial(
            optuna.trial.create_trial(
                values=values,
                params=params,
                distributions={name: distribution for name in params},
                user_attrs=attrs,
            )
        )
    return study


def test_stopped_at_cuts_the_plan_across_engines():
    assert [e["iterations"] for e in stopped_at(PLAN, 8)["engines"]] == [6, 2]
    assert [e["kind"] for e in stopped_at(PLAN, 3)["engines"]] == ["gradient"]
    assert stopped_at(PLAN, 3)["engines"][0]["iterations"] == 3
    assert stopped_at(PLAN, 10) == PLAN and PLAN["engines"][1]["iterations"] == 4


def test_best_plan_takes_the_best_trials_own_plan_and_its_best_iterate():
    plans = [stopped_at(PLAN, n) for n in (10, 9, 8)]  # three different recorded plans
    trials = [
        ([0.3], {LR: 0.01}, {"plan": plans[0], "best_iterate": {"iteration": 4}}),
        ([0.1], {LR: 0.02}, {"plan": plans[1], "best_iterate": {"iteration": 7}}),
        ([0.2], {LR: 0.03}, {"plan": plans[2], "best_iterate": {"iteration": 8}}),
    ]
    final = best_plan(in_memory_study(["minimize"], trials), configured_plan=PLAN)
    assert (final.trial, final.params, final.iterations) == (1, {LR: 0.02}, 9)
    assert final.plan_values == plans[1] and final.values == {"objective 0": 0.1}
    best = best_plan(in_memory_study(["minimize"], trials, "best"), configured_plan=PLAN)
    assert best.iterations == 7
    assert [e["iterations"] for e in best.plan_values["engines"]] == [6, 1]
    # maximised, and a trial without a recorded plan: the configured plan + its params
    ssim = [([0.5], {LR: 0.04}, {}), ([0.9], {LR: 0.05}, {})]
    chosen = best_plan(in_memory_study(["maximize"], ssim), configured_plan=PLAN)
    assert chosen.trial == 1 and chosen.plan_values["engines"][0]["object_solver"] == {
        "learning_rate": 0.05
    }


def test_best_plan_of_several_objectives_is_the_fronts_best_in_the_first():
    trials = [
        ([0.2, 1.0], {LR: 0.01}, {"plan": PLAN}),
        ([0.1, 9.0], {LR: 0.02}, {"plan": PLAN}),
        ([0.3, 0.5], {LR: 0.03}, {"plan": PLAN}),
        ([0.4, 9.5], {LR: 0.04}, {"plan": PLAN}),  # dominated
    ]
    chosen = best_plan(in_memory_study(["minimize", "minimize"], trials), PLAN)
    assert chosen.trial == 1


def test_a_study_without_complete_trials_has_nothing_to_apply():
    study = optuna.create_study()
    with pytest.raises(ConfigError, match="no complete trial to apply"):
        best_plan(study, PLAN)


def test_apply_reconstructs_data_without_truth_with_the_studys_best_plan(tmp_path, small_dataset):
    """A 3-trial study on the small dataset, then apply to its truth-free copy: the file
    records the best trial (the lowest NRMSE), and the plan ran is that trial's."""
    truth = write_dataset(tmp_path / "twin.h5", small_dataset)
    data = write_dataset(
        tmp_path / "data.h5", dataclasses.replace(small_dataset, ground_truth=None)
    )
    common = ["study=quickstart", *TINY_STUDY, "study.name=twin", "plan.engines.0.iterations=4"]
    space = f"study.search_space={{{LR}: {{type: float, low: 0.001, high: 0.1, log: true}}}}"
    studied = run(
        tmp_path, *common, f"dataset_file={truth}", "study.n_trials=3", space, "pruner=none"
    )
    assert studied.returncode == 0, studied.stderr
    study = optuna.load_study(
        study_name="twin",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "studies/twin/journal.log"))
        ),
    )
    best = study.best_trial
    out = tmp_path / "applied"
    applied = run(tmp_path, "apply", *common, f"dataset_file={data}", f"out={out}")
    assert applied.returncode == 0, applied.stderr
    assert f"applying trial {best.number} of study twin (nrmse {best.value:.4g}" in applied.stdout
    assert "has no ground truth: no scores" in applied.stdout
    with h5py.File(out / "reconstruction.h5", "r") as file:
        record, plan = json.loads(file.attrs["applied"]), json.loads(file.attrs["plan"])
        assert file.attrs["iterations_done"] == 4 and file.attrs["dataset_path"] == str(data)
    assert record["trial"] == best.number and record["params"] == best.params
    learning_rate = plan["engines"][0]["object_solver"]["learning_rate"]
    assert learning_rate == pytest.approx(best.params[LR])


def test_apply_errors_name_the_key(tmp_path, small_dataset):
    data = write_dataset(tmp_path / "data.h5", small_dataset)
    missing_file = run(tmp_path, "apply", "study=quickstart")
    assert missing_file.returncode == 2
    assert missing_file.stderr.startswith("ptyopt: error: dataset_file: apply reconstructs")
    no_study = run(tmp_path, "apply", "study=quickstart", "study.name=none", f"dataset_file={data}")
    assert no_study.returncode == 2 and "study.name: no study 'none'" in no_study.stderr
    arms = run(tmp_path, "apply", "study=engine_comparison", f"dataset_file={data}")
    assert arms.returncode == 2 and "engine_comparison-" in arms.stderr
    assert "Traceback" not in missing_file.stderr + no_study.stderr + arms.stderr


def test_tuned_microscope_settings_are_named_as_carried_over():
    params = {LR: 0.01, "plan.probe.defocus_A": 50.0, "plan.thickness_A": 30.0}
    trials = [([0.1], params, {"plan": PLAN})]
    applied = best_plan(in_memory_study(["minimize"], trials), PLAN)
    assert applied.microscope_params == ["plan.probe.defocus_A", "plan.thickness_A"]
