"""Plans reject bad input before any compute; schedules follow their formulas;
grouping covers every position once per iteration, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from ptyopt.errors import ConfigError
from ptyopt.grouping import Grouper
from ptyopt.plan import EpieSettings, GradientSettings, parse_plan
from ptyopt.schedules import make_schedule


def test_plan_of_several_engines():
    plan = parse_plan(
        {
            "seed": 3,
            "probe_modes": 2,
            "engines": [{"kind": "epie", "iterations": 4}, {"kind": "gradient", "slices": 3}],
        }
    )
    assert isinstance(plan.engines[0], EpieSettings) and isinstance(
        plan.engines[1], GradientSettings
    )
    assert plan.engines[0].group_size == 1 and plan.engines[1].slices == 3 and plan.probe_modes == 2


@pytest.mark.parametrize(
    "plan, key",
    [
        (
            {"engines": [{"kind": "gradient", "learnin_rate": 1}]},
            r"plan\.engines\[0\]\.learnin_rate",
        ),
        ({"engines": [{"kind": "pie"}]}, r"plan\.engines\[0\]\.kind: unknown engine 'pie'"),
        (
            {"engines": [{"kind": "epie", "beta_object": {"kind": "cosine"}}]},
            r"plan\.engines\[0\]\.beta_object: a cosine schedule needs 'value'",
        ),
        (
            {"engines": [{"kind": "lsqml", "illum_reg_object": "lots"}]},
            r"plan\.engines\[0\]\.illum_reg_object",
        ),
        (
            {"engines": [{"kind": "gradient", "grouping": "clustered"}]},
            r"grouping: unknown grouping",
        ),
        ({"engines": [{"kind": "gradient", "iterations": 0}]}, r"iterations: must be >= 1"),
        (
            {"engines": [{"kind": "gradient", "noise": {"model": "laplace"}}]},
            r"noise\.model: unknown noise model",
        ),
        (
            {"engines": [{"kind": "gradient", "noise": {"epsilon": -1.0}}]},
            r"noise\.epsilon: must be >= 0",
        ),
        (
            {"engines": [{"kind": "gradient", "object_solver": {"name": "lbfgs"}}]},
            r"object_solver\.name: unknown solver",
        ),
        (
            {"engines": [{"kind": "gradient", "probe_modes": 0}]},
            r"probe_modes: must be an integer >= 1",
        ),
        ({"engines": []}, r"plan\.engines: must be a non-empty list"),
        ({"engines": [{}], "bandlimit": 0}, r"plan\.bandlimit: must be a fraction .* \(0, 1\]"),
        ({"engines": [{}], "bandlimit": 1.2}, r"plan\.bandlimit: must be a fraction"),
        ({"engines": [{}], "bandlimit": True}, r"plan\.bandlimit"),
        ({"engines": [{"kind": "gradient"}], "sead": 1}, r"plan\.sead"),
        (
            {"engines": [{"kind": "epie", "constraints": {"amplitude_clip": {}}}]},
            r"plan\.engines\[0\]\.constraints\.amplitude_clip: unknown constraint",
        ),
        (
            {"engines": [{"kind": "gradient", "regularizers": {"object_l3": {"weight": 1}}}]},
            r"plan\.engines\[0\]\.regularizers\.object_l3: unknown regularizer",
        ),
        (
            {
                "engines": [
                    {
                        "kind": "gradient",
                        "regularizers": {"object_l2": {"weight": 1, "start": 5, "stop": 2}},
                    }
                ]
            },
            r"object_l2\.stop: must be an integer > start",
        ),
        (
            {"engines": [{"kind": "gradient", "object_solver": {"learning_rate": 0}}]},
            r"object_solver\.learning_rate: must be > 0 \(at some iteration.*\), got 0",
        ),
        (
            {"engines": [{"kind": "gradient", "probe_solver": {"learning_rate": -1e-3}}]},
            r"probe_solver\.learning_rate: must be >= 0 at every iteration",
        ),
        (  # a schedule that ends below zero
            {
                "engines": [
                    {
                        "kind": "gradient",
                        "object_solver": {
                            "learning_rate": {
                                "kind": "piecewise",
                                "values": [0.01, -0.01],
                                "boundaries": [5],
                            }
                        },
                    }
                ]
            },
            r"object_solver\.learning_rate: must be >= 0 at every iteration, got -0\.01",
        ),
        (
            {"engines": [{"kind": "gradient", "object_solver": {"b2": 1.0}}]},
            r"object_solver\.b2: must be in \[0, 1\)",
        ),
        (
            {"engines": [{"kind": "gradient", "probe_solver": {"momentum": -0.5}}]},
            r"probe_solver\.momentum: must be in \[0, 1\)",
        ),
        ({"engines": [{"kind": "epie", "beta_object": 0}]}, r"beta_object: must be > 0 "),
        ({"engines": [{"kind": "epie", "beta_probe": -1}]}, r"beta_probe: must be >= 0"),
        (
            {"engines": [{"kind": "epie", "alpha_object": 1.5}]},
            r"engines\[0\]\.alpha_object: must be in \(0, 1\] at every iteration, got 1\.5",
        ),
        (
            {
                "engines": [
                    {"kind": "epie", "alpha_object": {"kind": "cosine", "value": 0.5, "steps": 5}}
                ]
            },
            r"alpha_object: must be in \(0, 1\] at every iteration, got 0 ",
        ),
        (
            {"engines": [{"kind": "epie", "object_normalization": "pixel"}]},
            r"object_normalization: unknown normalisation 'pixel'; choose one of "
            r"\['position', 'group'\]",
        ),
        ({"engines": [{"kind": "lsqml", "beta_object": -0.9}]}, r"beta_object: must be >= 0"),
        (
            {"engines": [{"kind": "lsqml", "illum_reg_probe": -1e-3}]},
            r"illum_reg_probe: must be >= 0",
        ),
        (
            {"engines": [{"kind": "epie", "position_correction": {"step": 0}}]},
            r"position_correction\.step: must be > 0 ",
        ),
        (
            {"engines": [{"kind": "lsqml", "position_correction": {"max_step_px": 0}}]},
            r"position_correction\.max_step_px: must be > 0",
        ),
        (
            {
                "engines": [
                    {
                        "kind": "gradient",
                        "regularizers": {
                            "object_l2": {"weight": {"kind": "cosine", "value": -1.0}}
                        },
                    }
                ]
            },
            r"object_l2\.weight: must be >= 0 at every iteration",
        ),
    ],
)
def test_bad_plans_name_the_key(plan, key):
    with pytest.raises(ConfigError, match=key):
        parse_plan(plan)


def test_schedules_follow_their_formulas():
    assert make_schedule(0.3, "x", 10)(7) == 0.3
    cosine = make_schedule({"kind": "cosine", "value": 1.0, "end": 0.1, "steps": 10}, "x", 10)
    assert (
        cosine(0) == pytest.approx(1.0)
        and cosine(5) == pytest.approx(0.55)
        and cosine(10) == pytest.approx(0.1)
    )
    warm = make_schedule({"kind": "warmup_cosine", "value": 2.0, "warmup": 4, "steps": 20}, "x", 20)
    assert (
        warm(0) == pytest.approx(0.0)
        and warm(2) == pytest.approx(1.0)
        and warm(4) == pytest.approx(2.0)
    )
    exponential = make_schedule(
        {"kind": "exponential", "value": 1.0, "rate": 0.5, "steps_per_decay": 2}, "x", 10
    )
    assert exponential(4) == pytest.approx(0.25)
    piecewise = make_schedule(
        {"kind": "piecewise", "values": [1.0, 0.5, 0.1], "boundaries": [3, 6]}, "x", 10
    )
    assert [piecewise(i) for i in (0, 2, 3, 5, 6, 9)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "cosin", "value": 1}, "unknown schedule"),
        ({"kind": "cosine", "value": 1, "lr": 2}, r"unknown key\(s\) \['lr'\]"),
        ("fast", "expected a number"),
        ({"kind": "piecewise", "values": [1, 2], "boundaries": [3, 4]}, "one more value"),
    ],
)
def test_bad_schedules_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=rf"engine\.lr.*{message}"):
        make_schedule(spec, "engine.lr", 10)


@pytest.mark.parametrize("kind", ["sparse", "compact"])
def test_groups_cover_every_position_once(kind):
    positions = np.random.default_rng(0).uniform(0, 30, (70, 2))
    grouper = Grouper(positions, 16, kind, seed=5)
    first, again, later = (
        grouper.groups(0),
        Grouper(positions, 16, kind, seed=5).groups(0),
        grouper.groups(1),
    )
    assert first.indices.shape == (5, 16)
    assert sorted(first.indices[first.weights > 0]) == list(range(70))
    np.testing.assert_array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, later.indices)


def test_compact_groups_are_compact():
    grid = np.stack(np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij"), -1).reshape(-1, 2)
    compact, sparse = (
        Grouper(grid, 16, "compact", 0).groups(0),
        Grouper(grid, 16, "sparse", 0).groups(0),
    )

    def mean_extent(groups):
        return np.mean([np.ptp(grid[row], axis=0).sum() for row in groups.indices])

    assert mean_extent(compact) <= 6 < mean_extent(sparse)


def test_shipped_plans_are_valid():
    from omegaconf import OmegaConf

    from ptyopt.paths import conf_dir

    plans = sorted((conf_dir() / "engine").glob("*.yaml"))
    assert {p.stem for p in plans} >= {"gradient", "epie", "lsqml", "multislice"}
    for path in plans:
        values = OmegaConf.to_container(OmegaConf.load(path))
        if "peer" in values:  # a peer package's plan: tests/test_peer_study.py
            continue
        assert parse_plan(values).engines
