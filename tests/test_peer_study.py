"""Peer plans in a study (ptyopt/peers/study.py): validated like ours, and a trial run
through a peer adapter is scored and stored exactly as ours. The "peer" here is ptyopt's
own LSQML behind the adapter interface, so the peer trial must score what the same
reconstruction scores as an ordinary trial."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import TINY_STUDY
from hydra import compose, initialize_config_dir

from ptyopt.engines.common import run_plan
from ptyopt.errors import ConfigError
from ptyopt.initial import measurements_from
from ptyopt.paths import conf_dir
from ptyopt.peers.base import PeerResult
from ptyopt.peers.study import PACKAGES, adapter, parse_peer_plan
from ptyopt.plan import parse_plan
from ptyopt.study import runner
from ptyopt.study.settings import validate

TINY_DATA = [o for o in TINY_STUDY if o.startswith("dataset.")]
BETA = "plan.peer.step.beta_object"


def composed(*overrides: str, search_space: str = "{}"):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "study=quickstart",
                "engine=phaser_lsqml",
                "study.baseline_trials=[]",
                "~study.search_space",
                f"+study.search_space={search_space}",
                *TINY_DATA,
                *overrides,
            ],
        )


def ours_composed():
    """Our LSQML as the quickstart study runs it: 4 iterations in groups of 16, β_O 0.7."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "study=quickstart",
                "engine=lsqml",
                *TINY_DATA,
                "study.name=ours",
                "study.n_trials=1",
                "~study.search_space",
                "+study.search_space={}",
                "study.baseline_trials=[]",
                "plan.engines.0.iterations=4",
                "plan.engines.0.group_size=16",
                "plan.engines.0.beta_object=0.7",
            ],
        )


@pytest.fixture
def ours_as_a_peer(monkeypatch, tmp_path):
    """phaser's adapter replaced by ptyopt's own LSQML run in this process."""
    from ptyopt.data.file import read_dataset

    def run(dataset_path, plan, workdir):
        measurements = measurements_from(read_dataset(dataset_path))
        _, values = validate(ours_composed())
        values["engines"][0]["beta_object"] = plan.step["beta_object"]
        values["engines"][0]["iterations"] = plan.iterations
        seconds = []
        state = run_plan(
            parse_plan(values), measurements, observers=[lambda r: seconds.append(r.seconds)]
        )
        return PeerResult(
            "phaser", "0-ours", plan.engine, np.asarray(state.object), tuple(seconds), 1.0, {}
        )

    fake = types.SimpleNamespace(ENGINES=("lsqml",), run=run)
    monkeypatch.setitem(sys.modules, "ptyopt.peers.phaser", fake)
    monkeypatch.setattr(runner, "check_runnable", lambda package: None)
    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))


def test_a_peer_trial_scores_what_the_same_reconstruction_scores_as_ours(ours_as_a_peer):
    peer_cfg = composed(
        "study.name=peer",
        "study.n_trials=1",
        "plan.peer.iterations=4",
        "plan.peer.group_size=16",
        search_space=f"{{{BETA}: {{type: categorical, choices: [0.7]}}}}",
    )
    config, plan_values = validate(peer_cfg)
    peer = runner.run_study(config, plan_values, progress=False).trials[0]
    ours_cfg = ours_composed()
    config, plan_values = validate(ours_cfg)
    ours = runner.run_study(config, plan_values, progress=False).trials[0]
    assert peer.state.name == ours.state.name == "COMPLETE"
    for name in ("nrmse", "ssim", "frc_resolution_A", "phase_contrast"):
        assert peer.user_attrs["metrics"][name] == pytest.approx(
            ours.user_attrs["metrics"][name], rel=1e-5
        ), name
    assert peer.value == pytest.approx(ours.value, rel=1e-5)
    assert peer.user_attrs["peer"] == {"package": "phaser", "version": "0-ours"}
    assert peer.user_attrs["compile_time_s"] >= 0
    assert peer.user_attrs["reconstruction_s"] <= sum(peer.user_attrs["curve"]["seconds"]) + 1e-9
    folder = runner.study_dir("peer") / "trials" / "0"
    assert {p.name for p in folder.iterdir()} >= {
        "reconstruction.h5",
        "metrics.json",
        "config.yaml",
    }


def test_a_peer_that_returns_nan_fails_its_trial_naming_the_divergence(monkeypatch, tmp_path):
    """A peer that runs to the end on a diverged object (py4DSTEM at large steps does) fails
    its trial with a DivergenceError's message, not numpy's "All-NaN slice" from the
    scoring; the next trial still runs."""
    from ptyopt.data.file import read_dataset
    from ptyopt.initial import object_geometry

    def run(dataset_path, plan, workdir):
        shape = object_geometry(read_dataset(dataset_path)).shape
        value = np.nan if plan.step["beta_object"] > 1 else 1.0
        return PeerResult(
            "phaser",
            "0-nan",
            plan.engine,
            np.full((1, *shape), value, np.complex64),
            (0.1,) * plan.iterations,
            1.0,
            {},
        )

    fake = types.SimpleNamespace(ENGINES=("lsqml",), run=run)
    monkeypatch.setitem(sys.modules, "ptyopt.peers.phaser", fake)
    monkeypatch.setattr(runner, "check_runnable", lambda package: None)
    monkeypatch.setenv("PTYOPT_HOME", str(tmp_path))
    config, plan_values = validate(
        composed(
            "study.name=diverging",
            "study.n_trials=2",
            "plan.peer.iterations=3",
            "sampler=grid",
            search_space=f"{{{BETA}: {{type: categorical, choices: [2.0, 0.5]}}}}",
        )
    )
    trials = runner.run_study(config, plan_values, progress=False).trials
    by_beta = {trial.params[BETA]: trial for trial in trials}
    failed = by_beta[2.0]
    assert failed.state.name == "FAIL"
    assert failed.user_attrs["fail_reason"] == (
        "phaser lsqml engine diverged at iteration 2: its final object holds NaN or inf "
        "(the peer ran to the end without noticing)"
    )
    assert by_beta[0.5].state.name == "COMPLETE"


@pytest.mark.parametrize(
    "override, message",
    [
        ("plan.peer.package=phasr", "plan.peer.package: unknown package 'phasr'"),
        ("+plan.peer.betta=1", "plan.peer.betta: unknown key"),
        ("plan.peer.engine=dm", "plan.peer.engine"),
        ("plan.peer.iterations=0", "plan.peer.iterations"),
        ("objective.validation_fraction=0.1", "objective.validation_fraction"),
        ("study.batch_trials=2", "study.batch_trials: a peer runs one trial at a time"),
    ],
)
def test_impossible_peer_plans_are_refused_naming_the_key(ours_as_a_peer, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(composed(override))


def test_every_value_of_a_peer_search_space_is_checked_against_the_plan(ours_as_a_peer):
    space = f"{{{BETA}: {{type: float, low: 0.5, high: 2.0, log: true}}}}"
    validate(composed(search_space=space))  # every value it may suggest fits
    space = f"{{{BETA}: {{type: categorical, choices: [1.0, -0.5]}}}}"
    with pytest.raises(ConfigError, match=r"beta_object must be > 0.*choice -0.5"):
        validate(composed(search_space=space))


def test_a_peer_plan_takes_no_keys_of_ours(ours_as_a_peer):
    with pytest.raises(ConfigError, match="holds only `peer`"):
        validate(composed("+plan.engines=[]"))


@pytest.mark.parametrize(
    "engine",
    sorted(
        path.stem
        for path in (conf_dir() / "engine").glob("*.yaml")
        if path.stem.split("_")[0] in PACKAGES
    ),
)
def test_every_shipped_peer_engine_is_a_valid_plan_of_a_family_its_package_runs(engine):
    config, plan_values = validate(composed(f"engine={engine}"))
    package, plan = parse_peer_plan(plan_values)
    assert package == plan_values["peer"]["package"] and plan.engine in adapter(package).ENGINES


@pytest.mark.parametrize(
    "comparison, dataset, iterations",
    [
        ("scoreboard", "thin_lowdose", 30),
        ("scoreboard_thick", "thick10", 40),
        ("scoreboard_thick_epie", "thick10", 40),
    ],
)
def test_the_scoreboard_arms_are_valid_and_share_one_budget(comparison, dataset, iterations):
    from ptyopt.study.arms import arms_of

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        parent, _ = validate(compose("config", overrides=[f"study={comparison}"]))
        arms = arms_of(parent)
    assert {a.config.study.n_trials for a in arms} == {parent.study.n_trials}
    assert {a.config.dataset.name for a in arms} == {dataset}
    plans = [a.plan_values.get("peer") or a.plan_values["engines"][0] for a in arms]
    assert {plan["iterations"] for plan in plans} == {iterations}
    assert len({plan["group_size"] for plan in plans}) == 1
