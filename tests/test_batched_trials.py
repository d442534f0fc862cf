"""Batched trials (``study.batch_trials``): reconstructions run in lockstep with their
compiled steps vmapped together give each one what it gets alone; one that diverges
fails alone; lanes are grouped by the shapes and names of their steps; a study with
batch_trials = 3 gives each trial the state, scores and pruning it gets with 1."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from conftest import EAGER_PRUNING, TINY_STUDY
from hydra import compose, initialize_config_dir

from ptyopt.engines.batched import BatchStats, LaneClock, _vmapped, run_batched
from ptyopt.engines.common import plan_steps, run_plan
from ptyopt.errors import ConfigError
from ptyopt.initial import measurements_from
from ptyopt.paths import conf_dir
from ptyopt.plan import parse_plan
from ptyopt.study.runner import run_study
from ptyopt.study.settings import validate


def _gradient(lr: float, epsilon: float = 0.5, **more) -> dict:
    return {
        "kind": "gradient",
        "iterations": 3,
        "group_size": 16,
        "noise": {"model": "amplitude", "epsilon": epsilon},
        "object_solver": {"learning_rate": lr},
        "probe_solver": {"learning_rate": lr / 7},
        "probe_update_start": 2,
        **more,
    }


def _epie(beta: float, **more) -> dict:
    return {"kind": "epie", "iterations": 2, "group_size": 16, "beta_object": beta, **more}


PLANS = [
    {"engines": [_gradient(0.03), _epie(0.8)]},
    # ePIE moves positions from iteration 1: a switch that differs between the lanes
    {
        "engines": [
            _gradient(0.011, 1.7),
            _epie(0.3, position_correction={"start": 1, "step": 0.05}),
        ]
    },
    # other group size and noise models (other shapes and names): alone
    {
        "engines": [
            _gradient(0.02, group_size=8, noise={"model": "poisson", "epsilon": 1.0}),
            _epie(1.0, noise={"model": "anscombe"}),
        ]
    },
]


def _batched(plans, measurements, stats=None):
    clocks = [LaneClock() for _ in plans]
    lanes = [plan_steps(parse_plan(plan), measurements) for plan in plans]
    return run_batched(lanes, clocks, stats=stats), clocks


def test_batched_reconstructions_equal_those_alone(small_dataset):
    """Three plans in lockstep (gradient then ePIE): each final object, probe and
    positions equal the same plan's alone to float32 rounding; the two of equal shapes
    and names share calls, the third runs alone, and every lane's clock ran."""
    measurements = measurements_from(small_dataset)
    alone = [run_plan(parse_plan(plan), measurements) for plan in PLANS]
    stats = BatchStats()
    results, clocks = _batched(PLANS, measurements, stats)
    for single, result in zip(alone, results, strict=True):
        assert result.error is None
        batched = result.value
        assert batched.iterations_done == single.iterations_done == 5
        for name in ("object", "probe", "positions_px"):
            a, b = np.asarray(getattr(single, name)), np.asarray(getattr(batched, name))
            scale = np.max(np.abs(a))
            np.testing.assert_allclose(b, a, rtol=0, atol=2e-5 * scale, err_msg=name)
    assert stats.calls == {2: 5, 1: 5}
    assert all(clock() > 0 for clock in clocks)


def test_ctrl_c_in_a_batch_ends_every_lane(small_dataset):
    """KeyboardInterrupt in one lane's observer propagates at once, and every other
    lane is closed (its trial's bookkeeping runs, as a trial alone does on Ctrl-C)."""
    measurements = measurements_from(small_dataset)
    closed = []

    def lane(number, observers):
        try:
            return (yield from plan_steps(parse_plan(PLANS[0]), measurements, observers))
        finally:
            closed.append(number)

    def interrupt(report):
        if report.iteration == 1:
            raise KeyboardInterrupt

    lanes = [lane(0, []), lane(1, [interrupt]), lane(2, [])]
    with pytest.raises(KeyboardInterrupt):
        run_batched(lanes, [LaneClock() for _ in lanes])
    assert sorted(closed) == [0, 1, 2]


def test_one_compilation_per_width(small_dataset):
    """Two batches of three gradient lanes with different hyperparameters: the first
    compiles the vmapped step (in its first call), the second finds it compiled."""
    measurements = measurements_from(small_dataset)
    _vmapped.cache_clear()
    for scale in (1.0, 0.5):
        plans = [{"engines": [_gradient(0.01 * scale * (k + 1), k)]} for k in range(3)]
        stats = BatchStats()
        results, _ = _batched(plans, measurements, stats)
        assert all(r.error is None for r in results) and stats.calls == {3: 3}
        assert stats.compiled == (1 if scale == 1.0 else 0)


LR = "plan.engines.0.object_solver.learning_rate"
#: sgd learning rates: three that converge, each better than the last (none pruned), then
#: a hopeless one (pruned at iteration 2 against the first three), a diverging one (FAIL)
#: and one more that converges
RATES = [1.0e-4, 2.0e-4, 3.0e-4, 1.0e-9, 1.0e12, 2.9e-4]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A project folder of its own (studies, simulation cache, compilation cache)."""
    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    return tmp_path


def _study(name: str, *overrides: str):
    fixed = "plan.engines.0.probe_solver.learning_rate: 0.005, plan.engines.0.noise.epsilon: 0.5"
    baselines = ", ".join(f"{{{LR}: {rate}, {fixed}}}" for rate in RATES)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "study=quickstart",
                *TINY_STUDY,
                *EAGER_PRUNING,
                f"study.name={name}",
                f"study.n_trials={len(RATES)}",
                f"study.baseline_trials=[{baselines}]",
                "plan.engines.0.object_solver.name=sgd",
                f"study.search_space={{{LR}: {{type: float, low: 1.0e-9, high: 1.0e12}}}}",
                *overrides,
            ],
        )
    return validate(cfg)


def test_a_batched_study_scores_prunes_and_fails_each_trial_as_alone(home):
    """The same six trials with study.batch_trials = 1 and = 3 (two batches): each
    trial ends in the same state with the same value, curve and pruning step; the
    diverging trial fails alone, its batch's others end as they do alone; a batched
    trial's recorded times agree with each other as a trial's alone do."""
    alone = run_study(*_study("alone"), progress=False)
    batched = run_study(*_study("batched", "study.batch_trials=3"), progress=False)
    states = [t.state for t in alone.trials]
    State = optuna.trial.TrialState
    assert states == [State.COMPLETE] * 3 + [State.PRUNED, State.FAIL, State.COMPLETE]
    assert [t.state for t in batched.trials] == states
    assert "diverged" in batched.trials[4].user_attrs["fail_reason"]
    assert batched.trials[3].user_attrs["pruned_at"] == alone.trials[3].user_attrs["pruned_at"]
    for single, lane in zip(alone.trials, batched.trials, strict=True):
        assert single.params == lane.params
        if single.state == State.COMPLETE:
            assert lane.value == pytest.approx(single.value, rel=1e-4)
            assert set(lane.user_attrs) == set(single.user_attrs)
            attrs = lane.user_attrs
            assert attrs["metrics"]["seconds"] == pytest.approx(attrs["reconstruction_s"])
            assert attrs["curve"]["seconds"][-1] == pytest.approx(attrs["reconstruction_s"])
            assert attrs["wall_time_s"] >= attrs["reconstruction_s"] + attrs["compile_time_s"]
        curves = single.user_attrs["curve"], lane.user_attrs["curve"]
        assert curves[0]["iteration"] == curves[1]["iteration"]
        nrmse = [curve.get("nrmse", []) for curve in curves]
        np.testing.assert_allclose(nrmse[1], nrmse[0], rtol=1e-4)


@pytest.mark.parametrize("value", [0, -2])
def test_a_bad_batch_size_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^study\.batch_trials: must be >= 1"):
        _study("bad", f"study.batch_trials={value}")
