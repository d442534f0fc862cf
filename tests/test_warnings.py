"""Warnings users expect (one line each on stderr, ``ptyopt: warning:``, the run goes
on): a dose of a few electrons per pattern, a scan over many copies of the specimen's
periodic cell, a resumed study whose last trials all failed."""

from __future__ import annotations

import pytest
from conftest import tiny_recipe


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ptyopt: warning: ")]


@pytest.mark.parametrize(
    ("dose", "step", "warned"),
    [(40.0, 0.55, False), (30.0, 0.55, True), (3.0e6, 1.0e-3, True)],  # 12.1, 9.1, 3 e
)
def test_a_dose_of_few_electrons_per_pattern_is_warned_of(capsys, dose, step, warned):
    tiny_recipe(dose_e_per_A2=dose, scan={"shape": [3, 3], "step_A": step})
    lines = _warnings(capsys.readouterr().err)
    assert len(lines) == warned
    if warned:
        assert "dataset.dose_e_per_A2" in lines[0] and f"{dose * step**2:.3g} electrons" in lines[0]


def test_a_scan_over_many_cells_is_warned_of(capsys):
    """Si [110], 2×3 repeats (a non-square unit cell, squared by the builder): the
    warning fires for a scan just over twice the cell's edge along x, not just under."""
    from ptyopt.data.recipe import specimen_of

    recipe = tiny_recipe()
    edge = specimen_of(recipe.structure).cell_edge_A
    capsys.readouterr()
    for scale, warned in [(0.99, False), (1.01, True)]:
        shape, step = [5, 7], 2 * edge / 6 * scale  # 6 steps along x
        tiny_recipe(scan={"shape": shape, "step_A": step}, dose_e_per_A2=1.0e6)
        lines = _warnings(capsys.readouterr().err)
        assert len(lines) == warned, (shape, step, lines)
        if warned:
            assert "dataset.scan" in lines[0] and "lateral_repeats" in lines[0]


def test_a_dataset_file_of_few_counts_per_pattern_is_warned_of(capsys, tmp_path, tiny_dataset):
    """The tiny dataset's patterns scaled to a mean of 4 counts, and of 40."""
    import dataclasses

    import numpy as np
    from omegaconf import OmegaConf

    from ptyopt.data.file import write_dataset
    from ptyopt.study.runner import dataset_for

    patterns = tiny_dataset.patterns / tiny_dataset.patterns.sum(axis=(-2, -1)).mean()
    for mean, warned in [(40.0, False), (4.0, True)]:
        scaled = dataclasses.replace(tiny_dataset, patterns=(mean * patterns).astype(np.float32))
        path = write_dataset(tmp_path / f"{mean:g}.h5", scaled)
        capsys.readouterr()
        dataset_for(OmegaConf.create({"dataset_file": str(path)}))
        lines = _warnings(capsys.readouterr().err)
        assert len(lines) == warned
        if warned:
            assert "dataset_file" in lines[0] and "4 counts each" in lines[0]


def _study_of(states: list[str], reasons: dict[int, str]):
    import optuna

    study = optuna.create_study(study_name="streak")
    for number, state in enumerate(states):
        trial = study.ask()
        if number in reasons:
            trial.set_user_attr("fail_reason", reasons[number])
        if state == "C":
            study.tell(trial, 1.0)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study


def test_a_study_whose_last_trials_failed_is_warned_of_once_with_the_reasons(capsys):
    from ptyopt.study.runner import warn_of_failing_streak

    diverged = "object diverged at iteration 3"
    for states, warned in [("CFF", False), ("FFFC", False), ("CFFF", True), ("FFFFF", True)]:
        reasons = {n: (diverged if n % 2 else "worker process 7 died") for n in range(5)}
        warn_of_failing_streak(_study_of(list(states), reasons))
        lines = _warnings(capsys.readouterr().err)
        assert len(lines) == warned, (states, lines)
    assert "last 5 finished trials all failed" in lines[0]
    assert f"trials 1, 3: {diverged}" in lines[0]
    assert "trials 0, 2, 4: worker process 7 died" in lines[0]


def test_resuming_a_study_of_failed_trials_warns(tmp_path, monkeypatch, capsys):
    """Three diverging SGD steps fail; resuming the spent study warns before it ends."""
    from conftest import TINY_STUDY
    from hydra import compose, initialize_config_dir

    from ptyopt.paths import conf_dir
    from ptyopt.study.runner import run_study
    from ptyopt.study.settings import validate

    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    lr = "plan.engines.0.object_solver.learning_rate"
    overrides = [
        "study=quickstart",
        *TINY_STUDY,
        "study.name=failing",
        "study.n_trials=3",
        "pruner=none",
        "plan.engines.0.object_solver.name=sgd",
        f"study.baseline_trials=[{{{lr}: 1.0e12}}, {{{lr}: 2.0e12}}, {{{lr}: 3.0e12}}]",
        f"study.search_space={{{lr}: {{type: float, low: 1.0e11, high: 3.0e12, log: true}}}}",
    ]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_study(*validate(cfg), progress=False)
    assert not _warnings(capsys.readouterr().err)
    run_study(*validate(cfg), progress=False)
    (line,) = _warnings(capsys.readouterr().err)
    assert "'failing': its last 3 finished trials all failed" in line and "diverged" in line
