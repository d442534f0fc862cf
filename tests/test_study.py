"""The study harness: Hydra composition, an in-process study with pruning and a failed
trial, resume, two worker processes on one journal, bad configurations, and objectives
scored on the final or on the best iterate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import optuna
import pytest
from conftest import EAGER_PRUNING, TINY_STUDY
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ptyopt.errors import ConfigError
from ptyopt.initial import measurements_from
from ptyopt.paths import conf_dir
from ptyopt.study.arms import arms_of
from ptyopt.study.artifacts import read_trial
from ptyopt.study.runner import dataset_for, run_study, score_metrics, study_dir
from ptyopt.study.settings import validate
from ptyopt.truth_free import image_scores

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
    for number, state, key in [(1, "PRUNED", "pruned_at"), (2, "FAIL", "fail_reason")]:
        unfinished = folder.parent / str(number)  # what is known of a pruned or failed trial
        assert {p.name for p in unfinished.iterdir()} == {"metrics.json", "config.yaml"}
        known = json.loads((unfinished / "metrics.json").read_text())
        assert known["state"] == state and known[key] == study.trials[number].user_attrs[key]
        assert known["curve"] == study.trials[number].user_attrs["curve"]
        resolved = OmegaConf.load(unfinished / "config.yaml")
        assert resolved.params == study.trials[number].params

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
        (
            ["objective.iterate=last"],
            r"^objective\.iterate: must be one of \['final', 'best'\], got 'last'$",
        ),
        (
            ["objective.metrics=[seconds]", "objective.iterate=best"],
            r"^objective\.iterate: best picks the iterate by the first metric",
        ),
    ],
)
def test_bad_configurations_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as raised:
        validate(composed(*overrides))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        (  # only the second and third choices are impossible
            {"plan.engines.0.group_size": {"type": "categorical", "choices": [32, 0, -5]}},
            r"^plan\.engines\[0\]\.group_size: must be >= 1, got 0 "
            r"\(study\.search_space\.plan\.engines\.0\.group_size: choice 0\)$",
        ),
        (  # only the high bound is impossible
            {"plan.engines.0.object_solver.b1": {"type": "float", "low": 0.5, "high": 1.0}},
            r"^plan\.engines\[0\]\.object_solver\.b1: must be in \[0, 1\), got 1\.0 .*high 1\.0",
        ),
        (  # the low bound of a range is 0
            {LR: {"type": "float", "low": 0.0, "high": 0.1}},
            r"^plan\.engines\[0\]\.object_solver\.learning_rate: must be > 0 .*low 0\.0",
        ),
        (  # the last point of a stepped grid, not the stated high, is what can be drawn
            {"plan.engines.0.iterations": {"type": "int", "low": -4, "high": 7, "step": 5}},
            r"^plan\.engines\[0\]\.iterations: must be >= 1, got -4 .*low -4",
        ),
    ],
)
def test_every_value_a_search_space_can_suggest_is_checked(parameter, message):
    cfg = composed()
    with open_dict(cfg):
        cfg.study.search_space = parameter
        cfg.study.baseline_trials = []
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_a_stepped_range_is_checked_at_its_last_grid_point():
    cfg = composed()
    with open_dict(cfg):  # 0.5 + 0.2 k reaches 0.9, never the stated 1.0
        cfg.study.search_space = {
            "plan.engines.0.object_solver.b1": {
                "type": "float",
                "low": 0.5,
                "high": 1.0,
                "step": 0.2,
            }
        }
        cfg.study.baseline_trials = []
    validate(cfg)


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
        "calibration",
        "calibration_sensitivity",
    } <= set(names)
    for name in names:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            config, _ = validate(compose("config", overrides=[f"study={name}"]))
        if "/" not in name:
            assert config.study.name == name and bool(config.study.search_space) != bool(
                config.study.arms
            )


CALIBRATION = ("plan.probe.defocus_A", "plan.thickness_A", "plan.scan.rotation_deg")


def recipe_truth_and_nominal(config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The recipe's true defocus, thickness and scan rotation (the turn of the true scan
    from the recorded one), and the plan values the file's nominal metadata give."""
    recipe = config.dataset
    truth = (
        recipe.optics.defocus_A,
        recipe.structure.thickness_A,
        recipe.nominal.scan_rotation_deg,
    )
    return truth, (recipe.nominal.defocus_A, recipe.nominal.thickness_A, 0.0)


def test_the_calibration_studies_search_between_the_nominal_values_and_the_truth():
    """study=calibration searches defocus, thickness and scan rotation on a range holding
    both the file's nominal value and the truth, with room past each, and starts from the
    nominal plan; study=calibration_sensitivity sweeps each through its truth with the
    other two true."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        config, _ = validate(compose("config", overrides=["study=calibration"]))
    truth, nominal = recipe_truth_and_nominal(config)
    assert truth != nominal and config.dataset.name == "miscalibrated"
    space = config.study.search_space
    assert tuple(space) == CALIBRATION
    for key, true, recorded in zip(CALIBRATION, truth, nominal, strict=True):
        low, high = space[key]["low"], space[key]["high"]
        room = 0.2 * abs(true - recorded)
        assert low + room < min(true, recorded) and max(true, recorded) < high - room, key
    assert [dict(t) for t in config.study.baseline_trials] == [
        dict(zip(CALIBRATION, nominal, strict=True))
    ]

    cli = ["study=calibration_sensitivity"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        parent, _ = validate(compose("config", overrides=cli))
        arms = arms_of(parent, cli)
    assert len(arms) == 3
    for arm, key in zip(arms, CALIBRATION, strict=True):
        assert arm.config.sampler.name == "grid" and tuple(arm.config.study.search_space) == (key,)
        assert truth[CALIBRATION.index(key)] in arm.config.study.search_space[key]["choices"]
        planned = (
            arm.plan_values["probe"]["defocus_A"],
            arm.plan_values["thickness_A"],
            arm.plan_values["scan"]["rotation_deg"],
        )
        assert planned == truth


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
    and the study ends when the grid is exhausted, even with a larger budget (Optuna
    calls ``study.stop()``, which raises outside ``optimize``, and would then repeat
    grid points)."""
    space = (
        f"+study.search_space={{{LR}: "
        "{type: categorical, choices: [0.003, 0.01, 0.03, 0.1, 0.3]}}"
    )
    cfg = composed(
        "study.name=grid",
        "study.n_trials=8",
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


#: 11 iterations scored every 2: the final iterate lies off the scoring grid.
ITERATIONS = 11


@pytest.fixture(scope="module")
def best_and_final(tmp_path_factory):
    """The tiny study (3 trials, no pruning) run with ``objective.iterate=best`` and with
    the default, in one project folder; the sampler's seed gives both the same
    parameters. Yields the two studies by iterate, the dataset, its measurements and
    the project folder."""
    home = tmp_path_factory.mktemp("iterates")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PTYOPT_HOME", str(home))
        common = ["study.n_trials=3", "pruner=none", f"plan.engines.0.iterations={ITERATIONS}"]
        studies = {}
        for iterate, extra in (("best", ["objective.iterate=best"]), ("final", [])):
            config, plan_values = validate(composed(f"study.name={iterate}", *common, *extra))
            assert config.objective.iterate == iterate
            studies[iterate] = run_study(config, plan_values, progress=False)
        dataset, _ = dataset_for(config, progress=False)
        yield studies, dataset, measurements_from(dataset), home


def _scored_again(trial, dataset, measurements) -> tuple[int, dict[str, float]]:
    """The iteration of the reconstruction a trial saved, and its scores computed afresh
    (against the ground truth, and its image statistics)."""
    saved = read_trial(Path(trial.user_attrs["trial_dir"]))
    scores = score_metrics(saved.object, dataset, measurements)
    return saved.iterations_done, scores | image_scores(saved.object, measurements)


def test_best_iterate_objective(best_and_final):
    """objective.iterate=best: each trial's value is the lowest NRMSE along its curve
    (which ends at the final iterate), at the curve's argmin, no worse than the final
    one; the saved reconstruction is that iterate (scored again, it gives the same
    scores); metrics.json carries both. Some trial must stop improving before the end."""
    studies, dataset, measurements, _ = best_and_final
    trials = studies["best"].trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert studies["best"].user_attrs["objective_iterate"] == "best"
    for trial in trials:
        curve, final = trial.user_attrs["curve"], trial.user_attrs["metrics"]
        best = trial.user_attrs["best_iterate"]
        at = int(np.argmin(curve["nrmse"]))
        assert curve["iteration"] == [2, 4, 6, 8, 10, ITERATIONS]
        assert curve["nrmse"][-1] == final["nrmse"] and curve["seconds"][-1] == final["seconds"]
        assert trial.value == best["metrics"]["nrmse"] == min(curve["nrmse"])
        assert best["iteration"] == curve["iteration"][at]
        assert best["metrics"]["seconds"] == curve["seconds"][at] <= final["seconds"]
        assert trial.value <= final["nrmse"] and set(best["metrics"]) == set(final)
        iteration, rescored = _scored_again(trial, dataset, measurements)
        assert iteration == best["iteration"]
        del best["metrics"]["seconds"], best["metrics"]["training_error"]  # need the state
        assert rescored == pytest.approx(best["metrics"], rel=1e-6, nan_ok=True)
        recorded = json.loads((Path(trial.user_attrs["trial_dir"]) / "metrics.json").read_text())
        assert recorded["final"] == final and recorded["best_iterate"]["iteration"] == iteration
    early = [t for t in trials if t.user_attrs["best_iterate"]["iteration"] < ITERATIONS]
    assert early and all(t.value < t.user_attrs["metrics"]["nrmse"] for t in early)


def test_final_iterate_objective_is_the_default(best_and_final):
    """By default a trial's value is its final score and its artifact the final iterate;
    the best iterate is still recorded. With the same parameters, the final scores are
    those of the best-iterate study (choosing the iterate does not change the run)."""
    studies, dataset, measurements, _ = best_and_final
    trials = studies["final"].trials
    assert "objective_iterate" in studies["final"].user_attrs
    for trial, twin in zip(trials, studies["best"].trials, strict=True):
        final, best = trial.user_attrs["metrics"], trial.user_attrs["best_iterate"]
        assert trial.values == [final["nrmse"]]
        assert best["metrics"]["nrmse"] == min(trial.user_attrs["curve"]["nrmse"]) <= trial.value
        iteration, rescored = _scored_again(trial, dataset, measurements)
        assert iteration == ITERATIONS and rescored["nrmse"] == pytest.approx(trial.value, 1e-6)
        recorded = json.loads((Path(trial.user_attrs["trial_dir"]) / "metrics.json").read_text())
        assert recorded == final
        assert trial.params == twin.params
        assert final["nrmse"] == pytest.approx(twin.user_attrs["metrics"]["nrmse"], rel=1e-6)


def test_resuming_with_another_iterate_fails(best_and_final, monkeypatch):
    """A study run on the best iterate cannot be resumed on the final one: one line,
    before any trial runs."""
    studies, *_, home = best_and_final
    monkeypatch.setenv("PTYOPT_HOME", str(home))
    config, plan_values = validate(
        composed("study.name=best", "study.n_trials=4", "pruner=none", "objective.iterate=final")
    )
    with pytest.raises(
        ConfigError,
        match=r"^objective\.iterate: study 'best' was run with objective\.iterate=best; ",
    ):
        run_study(config, plan_values, progress=False)
    assert len(studies["best"].trials) == 3


def test_a_study_tunes_the_microscope_and_records_it(home):
    """Defocus, total thickness (of 2 slices) and scan rotation searched as plan settings:
    each trial records the resolved microscope (the searched values, the nominal rest) in
    its user attributes and its config.yaml, reconstructs slices of the searched thickness,
    and records its final data error."""
    defocus, rotation = "plan.probe.defocus_A", "plan.scan.rotation_deg"
    thickness = "plan.thickness_A"
    space = (
        f"++study.search_space={{{defocus}: {{type: float, low: 0.0, high: 80.0}}, "
        f"{thickness}: {{type: float, low: 5.0, high: 11.0}}, "
        f"{rotation}: {{type: float, low: -2.0, high: 2.0}}}}"
    )
    config, plan_values = validate(
        composed("study.name=calibrate", "study.n_trials=2", "pruner=none", "plan.slices=2", space)
    )
    study = run_study(config, plan_values, progress=False)
    dataset, _ = dataset_for(config, progress=False)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        microscope = trial.user_attrs["microscope"]
        assert microscope["probe"]["defocus_A"] == pytest.approx(trial.params[defocus])
        assert microscope["scan"] == {"rotation_deg": trial.params[rotation], "step_scale": 1.0}
        assert microscope["probe"]["semiangle_mrad"] == dataset.optics.semiangle_mrad
        assert microscope["thickness_A"] == pytest.approx(trial.params[thickness])
        with h5py.File(Path(trial.user_attrs["trial_dir"]) / "reconstruction.h5") as file:
            slices = file.attrs["slice_thicknesses_A"]
        np.testing.assert_allclose(slices, [trial.params[thickness] / 2] * 2, rtol=1e-6)
        assert np.isfinite(trial.user_attrs["data_error"])
        recorded = OmegaConf.load(Path(trial.user_attrs["trial_dir"]) / "config.yaml")
        assert OmegaConf.to_container(recorded.microscope) == microscope


def test_a_resume_that_changes_the_dataset_plan_or_objective_is_refused(home):
    """The study's identity (dataset file hash, base plan, objective) is stored when it
    is created; a resume may raise the budget, but changing any of the three names what
    changed and runs no trial."""
    first = composed("study.name=same", "study.n_trials=1", "plan.engines.0.iterations=2")
    study = run_study(*validate(first), progress=False)
    assert study.user_attrs["identity"]["plan"]["engines"][0]["iterations"] == 2
    cases = {
        "dataset.scan.shape=[7,7]": r"the dataset \(created on .*sha256",
        "plan.engines.0.group_size=8": r"the plan \(plan\.engines\.0\.group_size: 16 → 8\)",
        "objective=ssim": r"the objective \(\{'metrics': \['nrmse'\]",
    }
    for override, message in cases.items():
        changed = composed(
            "study.name=same", "study.n_trials=2", "plan.engines.0.iterations=2", override
        )
        with pytest.raises(ConfigError, match=rf"study 'same' was created .*{message}"):
            run_study(*validate(changed), progress=False)
    assert len(optuna.load_study(study_name="same", storage=study._storage).trials) == 1
    more = composed("study.name=same", "study.n_trials=2", "plan.engines.0.iterations=2")
    assert len(run_study(*validate(more), progress=False).trials) == 2


def test_compilation_is_left_out_of_the_seconds_a_trial_is_scored_on():
    """Each engine's first iteration holds its compilation: its excess over the median of
    that engine's other iterations is counted apart, and left out of every time up to
    the iterations where it happened."""
    from types import SimpleNamespace

    from ptyopt.study.runner import IterationClock

    clock = IterationClock()
    done = 0
    for first, rest in ((5.0, [1.0, 1.2, 0.8]), (3.0, [0.5, 0.5])):  # two engines
        for index, seconds in enumerate([first, *rest]):
            done += 1
            state = SimpleNamespace(iterations_done=done)
            report = {"loss": 1.0, "iteration": index, "seconds": seconds, "state": state}
            clock(SimpleNamespace(**report, compiled=index == 0))
    assert clock.compile_s() == pytest.approx(4.0 + 2.5)
    assert clock.compile_s(up_to=4) == pytest.approx(4.0)  # the second engine starts at 5
    assert clock.compile_s(up_to=5) == pytest.approx(6.5)
    assert clock.typical_s == pytest.approx(0.8)  # median of 1, 1.2, 0.8, 0.5, 0.5
    assert len(clock.losses) == 7


def test_a_trials_recorded_times_agree(home):
    """The seconds a trial is scored on, its curve's last time and its reconstruction
    time are one number, compilation (recorded apart) excluded."""
    cfg = composed("study.name=clock", "study.n_trials=2", "plan.engines.0.iterations=4")
    study = run_study(*validate(cfg), progress=False)
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs["metrics"]["seconds"] == pytest.approx(attrs["reconstruction_s"])
        assert attrs["curve"]["seconds"][-1] == pytest.approx(attrs["reconstruction_s"])
        assert attrs["compile_time_s"] >= 0 and all(s >= 0 for s in attrs["curve"]["seconds"])
        assert attrs["wall_time_s"] >= attrs["reconstruction_s"] + attrs["compile_time_s"]
